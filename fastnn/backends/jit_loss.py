"""The loss kernels: stable ``log_softmax`` and the fused log-softmax + NLL + gradient ``softmax_nll``
(and ``softmax_nll_weighted``, its per-row weighted twin).

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
    return _softmax_nll(logits, y, np.zeros(0, np.float32), smoothing, dlogits)  # (0,): unweighted


@njit(cache=True, error_model="numpy")
def softmax_nll_weighted(logits, y, weights, smoothing, dlogits):
    """``softmax_nll`` with row weights (n,) float32 >= 0; see numpy_ref: loss =
    sum_r weights[r] * loss_r / n, dlogits[r] = (softmax - target) * weights[r] / n."""
    return _softmax_nll(logits, y, weights, smoothing, dlogits)



@njit(cache=True, error_model="numpy")
def _softmax_nll(logits, y, weights, smoothing, dlogits):
    # weights of length 0: unweighted, with exactly the arithmetic of the unweighted kernel
    n, k = logits.shape
    weighted = weights.shape[0] > 0
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
        row = np.log(np.float64(s)) - (1.0 - smoothing) * picked - (smoothing / k) * zsum
        w = weights[r] if weighted else np.float32(1)
        total += np.float64(w) * row if weighted else row
        for j in range(k):
            p = dlogits[r, j] / s
            if j == y[r]:
                p -= on
            if smoothing != 0:
                p -= off
            if weighted:
                p = p * w
            dlogits[r, j] = p / nf
    return total / n, correct
