"""Inverted dropout and the counter-based generator (``rng_key``/``rng_uniform``, bit for bit ``rng.py``)
that draws its masks. Must not hold anything the default dense network needs.
"""

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_INV_2_24 = np.float32(1.0 / (1 << 24))


@njit(cache=True, error_model="numpy", inline="always")
def _mix(z):
    # SplitMix64 finaliser, bit for bit the one in rng.py.
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, error_model="numpy")
def rng_key(seed, stream):
    """rng.key(seed, stream) in compiled code."""
    return _mix(_mix(np.uint64(seed)) ^ np.uint64(stream))


@njit(cache=True, error_model="numpy", inline="always")
def rng_uniform(key, index):
    """rng.uniform(key, index) in compiled code: float32 in [0, 1)."""
    return np.float32(_mix(key + np.uint64(index)) >> np.uint64(40)) * _INV_2_24


@njit(cache=True, error_model="numpy")
def dropout_forward(x, rate, seed, stream, out, mask):
    """Inverted dropout with rng masks; see numpy_ref.dropout_forward. x, out, mask (n, d)."""
    n, d = x.shape
    key = rng_key(seed, stream)
    thr = np.float32(rate)
    scale = np.float32(1.0 / (1.0 - rate)) if rate < 1.0 else np.float32(0.0)
    zero = np.float32(0)
    for r in range(n):
        for j in range(d):
            mk = scale if rng_uniform(key, r * d + j) >= thr else zero
            mask[r, j] = mk
            out[r, j] = x[r, j] * mk


@njit(cache=True, error_model="numpy")
def dropout_backward(dy, mask, dx):
    """dx = dy * mask; all (n, d)."""
    n, d = dy.shape
    for r in range(n):
        for j in range(d):
            dx[r, j] = dy[r, j] * mask[r, j]
