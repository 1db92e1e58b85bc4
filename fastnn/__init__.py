"""fastnn: readable multilayer-perceptron training with Numba-compiled kernels."""

__version__ = "0.1.0"

from . import callbacks, layers, optimizers  # noqa: E402
from .callbacks import EarlyStopping, History, ModelCheckpoint, ProgressBar  # noqa: E402
from .datasets import DatasetError, load_dataset  # noqa: E402
from .estimator import MLPClassifier  # noqa: E402
from .io import load  # noqa: E402
from .layers import BatchNorm, Dense, Dropout, ReLU, Sigmoid, Tanh  # noqa: E402
from .model import MLP, NotFittedError, Sequential  # noqa: E402
from .optimizers import SGD, Adam, RMSprop  # noqa: E402

__all__ = [
    "MLP", "Sequential", "MLPClassifier", "load", "load_dataset", "DatasetError", "NotFittedError",
    "Dense", "ReLU", "Sigmoid", "Tanh", "Dropout", "BatchNorm", "SGD", "Adam", "RMSprop",
    "History", "EarlyStopping", "ModelCheckpoint", "ProgressBar", "layers", "optimizers", "callbacks",
]
