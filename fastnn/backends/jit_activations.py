"""Activation kernels (ReLU, sigmoid, tanh, linear) and the scalar ``_act``/``_act_grad`` the
dense kernels fuse after their product.

To add an activation: a code in ``spec.py``, a branch in ``_act`` and ``_act_grad`` here, and
its NumPy twin in ``numpy_ref``. Must not hold matrix products or layer dispatch.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .spec import ACT_RELU, ACT_SIGMOID, ACT_TANH

# tanh for float32 as a rational function that LLVM vectorises (Eigen's fast tanh: an odd
# degree-13 numerator over an even degree-6 denominator, inputs clamped to +-7.9053 where
# float32 tanh is +-1, and tanh(x) = x below 4e-4). Numba calls the scalar libm tanhf per
# element, 16 ns each: 8.4 ms for 512 x 1024 values against 0.17 ms for this (NumPy's
# SIMD tanh: 0.19 ms). Error against float64 tanh: at most 6.9 ulp, 0.96 on average
# (20M points in [-10, 10]); NaN, +-inf, +-0 come out as tanh gives them.
_TANH_CLAMP = np.float32(7.90531110763549805)
_TANH_P = tuple(np.float32(c) for c in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                                       5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                                       4.89352455891786e-03))
_TANH_Q = tuple(np.float32(c) for c in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                                       4.89352518554385e-03))


def _tanh(v):
    """tanh(v); float32 v takes the vectorisable rational form (overload below)."""
    return np.tanh(v)


@overload(_tanh)
def _tanh_compiled(v):
    if v != types.float32:
        return lambda v: np.tanh(v)
    p13, p11, p9, p7, p5, p3, p1 = _TANH_P
    q6, q4, q2, q0 = _TANH_Q
    clamp, tiny = _TANH_CLAMP, np.float32(0.0004)

    def rational(v):
        x = clamp if v > clamp else v  # NaN passes both comparisons unchanged
        x = -clamp if x < -clamp else x
        x2 = x * x
        p = x * (((((((p13 * x2 + p11) * x2 + p9) * x2 + p7) * x2 + p5) * x2 + p3) * x2) + p1)
        q = ((q6 * x2 + q4) * x2 + q2) * x2 + q0
        return v if abs(v) < tiny else p / q

    return rational


@njit(cache=True, error_model="numpy", inline="always")
def _act(act, v):
    if act == ACT_RELU:
        # written so that NaN passes through, as np.maximum(x, 0) does
        return np.float32(0) if v <= 0 else v
    if act == ACT_SIGMOID:
        return _tanh(v * np.float32(0.5)) * np.float32(0.5) + np.float32(0.5)
    if act == ACT_TANH:
        return _tanh(v)
    return v


@njit(cache=True, error_model="numpy", inline="always")
def _act_grad(act, y, dy):
    if act == ACT_RELU:
        return dy if y > 0 else np.float32(0) * dy
    if act == ACT_SIGMOID:
        return dy * y * (np.float32(1) - y)
    if act == ACT_TANH:
        return dy * (np.float32(1) - y * y)
    return dy


@njit(cache=True, error_model="numpy")
def activation_forward(act, x, out):
    """out = act(x) elementwise, (n, d); x and out may be the same array."""
    n, d = x.shape
    for r in range(n):
        for j in range(d):
            out[r, j] = _act(act, x[r, j])


@njit(cache=True, error_model="numpy")
def activation_backward(act, y, dy, dx):
    """dx = dy * act'(.) via the output y; all (n, d); dx may be dy."""
    n, d = y.shape
    if dx.ctypes.data == dy.ctypes.data:
        # In place (the training loop's case), written through dy alone: with dx and dy as two
        # arrays LLVM's run-time overlap check sends the loop to its scalar version, which took
        # 3.7% of a MNIST batch-128 step (perf, one thread); now vectorised.
        for r in range(n):
            for j in range(d):
                dy[r, j] = _act_grad(act, y[r, j], dy[r, j])
        return
    for r in range(n):
        for j in range(d):
            dx[r, j] = _act_grad(act, y[r, j], dy[r, j])
