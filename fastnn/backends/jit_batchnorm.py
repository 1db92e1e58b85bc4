"""Batch normalisation kernels (PyTorch semantics): training forward, inference forward, backward.

Must not hold anything the default dense network needs.
"""

import numpy as np
from numba import njit

@njit(cache=True, error_model="numpy")
def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps, out, xhat, inv_std):
    """Training-mode batch norm (PyTorch semantics); see numpy_ref. x, out, xhat (n, d); vectors (d,)."""
    n, d = x.shape
    nf = np.float32(n)
    keep = np.float32(1.0 - momentum)
    mom = np.float32(momentum)
    unbias = np.float32(n / max(n - 1, 1))
    eps32 = np.float32(eps)
    # inv_std doubles as scratch: first the mean, then the variance.
    for j in range(d):
        inv_std[j] = 0
    for r in range(n):
        for j in range(d):
            inv_std[j] += x[r, j]
    for j in range(d):
        mean = inv_std[j] / nf
        inv_std[j] = mean
        running_mean[j] = running_mean[j] * keep
        running_mean[j] += mom * mean
    for r in range(n):
        for j in range(d):
            xhat[r, j] = x[r, j] - inv_std[j]
    for j in range(d):
        inv_std[j] = 0
    for r in range(n):
        for j in range(d):
            inv_std[j] += xhat[r, j] * xhat[r, j]
    for j in range(d):
        var = inv_std[j] / nf
        running_var[j] = running_var[j] * keep
        running_var[j] += mom * (var * unbias)
        inv_std[j] = np.float32(1) / np.sqrt(var + eps32)
    for r in range(n):
        for j in range(d):
            xh = xhat[r, j] * inv_std[j]
            xhat[r, j] = xh
            out[r, j] = xh * gamma[j] + beta[j]


@njit(cache=True, error_model="numpy")
def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, out):
    """Inference-mode batch norm with the running statistics; overwrites out (n, d)."""
    n, d = x.shape
    eps32 = np.float32(eps)
    for r in range(n):
        for j in range(d):
            scale = gamma[j] / np.sqrt(running_var[j] + eps32)
            out[r, j] = (x[r, j] - running_mean[j]) * scale + beta[j]


@njit(cache=True, error_model="numpy")
def batchnorm_backward(dy, xhat, inv_std, gamma, dx, dgamma, dbeta):
    """Backward of training-mode batch norm; see numpy_ref. dx skipped when empty."""
    n, d = dy.shape
    nf = np.float32(n)
    for j in range(d):
        dgamma[j] = 0
        dbeta[j] = 0
    for r in range(n):
        for j in range(d):
            dbeta[j] += dy[r, j]
            dgamma[j] += dy[r, j] * xhat[r, j]
    if dx.shape[0] > 0:
        for r in range(n):
            for j in range(d):
                t = xhat[r, j] * dgamma[j] + dbeta[j]
                dx[r, j] = (nf * dy[r, j] - t) * (gamma[j] * inv_std[j] / nf)
