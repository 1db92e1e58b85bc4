"""A counter-based random generator that both backends compute bit for bit.

``uniform(seed, stream, index)`` hashes three integers (SplitMix64 finaliser)
into a float in [0, 1) with 24 random bits, so it is exact in float32. There is
no hidden state: the value for a given (seed, stream, index) is the same in
NumPy and in compiled code, in any order and on any number of threads. That is
what makes dropout masks and augmentations reproducible and identical across
backends. Callers choose ``stream`` to separate uses (e.g. global step * 64 +
layer index) and ``index`` to separate elements.

The functions use only operators on uint64 values, so the same source runs on
NumPy uint64 arrays and, wrapped with ``numba.njit``, on scalars.
"""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)
_INV_2_24 = np.float32(1.0 / (1 << 24))


def mix(z):
    """SplitMix64 finaliser of uint64 ``z`` (scalar or array); wraps modulo 2**64."""
    z = z + _GOLDEN
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def key(seed, stream):
    """uint64 key of one (seed, stream) pair; combine with an element index via ``uniform``.

    Python-level helper (NumPy warns on scalar wrap-around; the wrap is intended).
    Compiled code uses ``mix(mix(uint64(seed)) ^ uint64(stream))`` directly.
    """
    with np.errstate(over="ignore"):
        return mix(mix(np.uint64(seed)) ^ np.uint64(stream))


def uniform(k, index):
    """float32 in [0, 1) for uint64 key ``k`` and uint64 ``index`` (scalar or array)."""
    return np.float32((mix(k + index) >> _S40)) * _INV_2_24
