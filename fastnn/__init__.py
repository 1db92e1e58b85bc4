"""fastnn: readable multilayer-perceptron training with Numba-compiled kernels."""

__version__ = "0.1.0"
