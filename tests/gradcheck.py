"""Central finite differences shared by the gradient-check tests."""

import numpy as np

EPS = 1e-6


def numeric(f, arr, eps=EPS):
    """Central differences of scalar f() with respect to every entry of arr (perturbed in place)."""
    grad = np.zeros_like(arr)
    flat, g = arr.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        g[i] = (up - down) / (2 * eps)
    return grad
