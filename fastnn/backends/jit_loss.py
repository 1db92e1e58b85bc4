"""The loss kernels: stable ``log_softmax`` and the fused log-softmax + NLL + gradient ``softmax_nll``.

Must not hold anything but the loss (the loop calls ``softmax_nll`` once per step).
"""

import numpy as np
from numba import njit

@njit(cache=True, error_model="numpy")
def log_softmax(logits, out):
    """out = log_softmax(logits) along axis 1, stable. (n, k) float32 each."""
    n, k = logits.shape
    for r in range(n):
        mx = logits[r, 0]
        for j in range(1, k):
            if logits[r, j] > mx:
                mx = logits[r, j]
        s = np.float32(0)
        for j in range(k):
            z = logits[r, j] - mx
            out[r, j] = z
            s += np.exp(z)
        ls = np.float32(np.log(s))
        for j in range(k):
            out[r, j] -= ls


@njit(cache=True, error_model="numpy")
def softmax_nll(logits, y, smoothing, dlogits):
    """Fused stable log-softmax + mean NLL (label smoothing) + gradient; see numpy_ref.

    logits (n, k), y (n,) int64, dlogits (n, k) overwritten with (softmax - target) / n.
    Returns (mean loss as float64, number of rows whose first arg-max equals y).
    """
    n, k = logits.shape
    on = np.float32(1.0 - smoothing)
    off = np.float32(smoothing / k)
    nf = np.float32(n)
    total = 0.0
    correct = 0
    for r in range(n):
        mx = logits[r, 0]
        am = 0
        for j in range(1, k):
            if logits[r, j] > mx:
                mx = logits[r, j]
                am = j
        if am == y[r]:
            correct += 1
        zsum = 0.0
        s = np.float32(0)
        for j in range(k):
            z = logits[r, j] - mx
            zsum += z
            e = np.exp(z)
            dlogits[r, j] = e
            s += e
        picked = np.float64(logits[r, y[r]] - mx)
        total += np.log(np.float64(s)) - (1.0 - smoothing) * picked - (smoothing / k) * zsum
        for j in range(k):
            p = dlogits[r, j] / s
            if j == y[r]:
                p -= on
            if smoothing != 0:
                p -= off
            dlogits[r, j] = p / nf
    return total / n, correct
