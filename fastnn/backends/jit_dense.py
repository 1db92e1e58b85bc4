"""Dense-layer kernels: ``dense_forward`` (x @ W + b fused with the activation), ``dense_backward``
and ``dense_backward_sgd`` (the first layer's backward fused with a plain SGD step).

For a sparse x (density <= SPARSE_MAX_DENSITY, MNIST-like pixels) x @ W and x.T @ dz run
over the batch's non-zero lists (``numba_sparse``: one AXPY of a W row per non-zero, sums
contracted into fused multiply-adds in a fixed order); these standalone kernels build the
lists in scratch (the compiled loop reuses its own buffers). Dense x (hidden ReLU
activations, ~50% non-zero) goes to BLAS; dz @ W.T always goes to BLAS. BLAS is called through
``jit_gemm`` (one BLAS thread, large products in blocks fixed by the shape), so no result
depends on the thread count.
Must not hold the training loop or optimizer state.
"""

import numpy as np
from numba import njit

from .jit_activations import _act
from .jit_base import _prefer_sparse, _sparse_count
from .jit_gemm import gemm_nn, gemm_nt, gemm_tn
from .numba_sparse import GROUP, LIST_CHUNK, bucket_dw, csr_alloc, csr_build, csr_forward, csr_rows

@njit(cache=True, error_model="numpy")
def _bias_act_rows(out, b, act):
    n, m = out.shape
    for r in range(n):
        for j in range(m):
            out[r, j] = _act(act, out[r, j] + b[j])


@njit(cache=True, error_model="numpy")
def dense_forward(x, W, b, act, out, lists=True):
    """out = act(x @ W + b). x (n, d_in), W (d_in, d_out), b (d_out,), out (n, d_out).
    ``lists`` False: BLAS whatever x's density, as the inference loop computes it."""
    _dense_forward(x, W, b, act, out, lists, np.bool_(True))


@njit(cache=True, error_model="numpy", inline="always")
def _dense_forward(x, W, b, act, out, lists, split):
    """``dense_forward``, with ``split`` None when the caller runs on one thread.

    Sparse x (density <= SPARSE_MAX_DENSITY) lists its non-zeros by groups of rows
    (``numba_sparse.csr_rows``, scratch sized to them; the compiled loop reuses a
    workspace instead) and adds one row of W per listed feature; dense x takes BLAS.
    ``lists`` None (inference: no listing code is then compiled) or False: BLAS whatever the density.
    ``split`` None: never split across threads (the parallel code is then not compiled).
    """
    n = x.shape[0]
    if lists is not None:
        nnz = _sparse_count(x) if lists else -1  # the count sizes the lists
        if nnz >= 0:
            # the forward needs only the row-group lists, sized to the non-zeros (their union
            # has at most as many entries)
            gp = np.empty(-(-n // GROUP) + 1, np.int64)
            gi, gv = np.empty(nnz + LIST_CHUNK, np.int32), np.empty(GROUP * (nnz + LIST_CHUNK), np.float32)
            csr_rows(x, gp, n, np.bool_(False), gp, gi, gv)
            csr_forward(gp, gi, gv, W, out, n, split)
            _bias_act_rows(out, b, act)
            return
    gemm_nn(x, W, out, split)
    _bias_act_rows(out, b, act)


@njit(cache=True, error_model="numpy")
def _colsum(dz, db):
    n, m = dz.shape
    for j in range(m):
        db[j] = 0
    for r in range(n):
        for j in range(m):
            db[j] += dz[r, j]


@njit(cache=True, error_model="numpy")
def dense_backward(x, W, dz, dx, dW, db):
    """dW = x.T @ dz, db = dz.sum(0), dx = dz @ W.T (skipped when dx is (0, 0))."""
    _dense_backward(x, W, dz, dx, dW, db, np.bool_(True))


@njit(cache=True, error_model="numpy", inline="always")
def _dense_backward(x, W, dz, dx, dW, db, split):
    """``dense_backward``; ``split`` as in ``_dense_forward``.

    x (n, d_in), W (d_in, d_out), dz (n, d_out); overwrites dW, db and dx. For a sparse
    x, dW sums each feature's non-zero rows (``numba_sparse.bucket_dw``), else BLAS.
    """
    _colsum(dz, db)
    if _prefer_sparse(x):
        n, d = x.shape
        gp, gi, gv, blen, brow, bval = csr_alloc(n, d)
        nnz = csr_build(x, gp, n, np.bool_(False), gp, gi, gv, blen, brow, bval)
        bucket_dw(blen, brow, bval, dz, dW, dW, np.float32(0), None, nnz, gp, gi, gv, split)
    elif x.shape[0] == 1:
        _outer(x, dz, dW)
    else:
        gemm_tn(x, dz, dW, split)
    if dx.shape[0] > 0:
        gemm_nt(dz, W, dx, split)


@njit(cache=True, error_model="numpy")
def _outer(x, dz, dW):
    # dW = x.T @ dz for a one-row batch: each element is one product, so the same
    # numbers as BLAS, without its call overhead (~0.4 us for 128 x 64; ~3x faster).
    kd, m = dW.shape
    for k in range(kd):
        v = x[0, k]
        for j in range(m):
            dW[k, j] = v * dz[0, j]


@njit(cache=True, error_model="numpy")
def dense_backward_sgd(x, W, dz, dW, db, lr, split=True):
    """First-layer backward fused with a plain SGD step on W (no momentum, no decay).

    Computes db = dz.sum(0) and W -= float32(lr) * (x.T @ dz), with the same bits as
    ``dense_backward`` followed by ``sgd_update``, but for sparse x it touches only the
    rows of W whose input is non-zero in this batch and skips the full dW pass. dW is
    scratch afterwards (rows of all-zero inputs keep stale values). b is NOT updated.
    """
    _colsum(dz, db)
    lr32 = np.float32(lr)
    if _prefer_sparse(x):
        n, d = x.shape
        gp, gi, gv, blen, brow, bval = csr_alloc(n, d)
        nnz = csr_build(x, gp, n, np.bool_(False), gp, gi, gv, blen, brow, bval)
        bucket_dw(blen, brow, bval, dz, dW, W, lr32, True, nnz, gp, gi, gv, split)
    else:
        gemm_tn(x, dz, dW, split)
        kd, m = W.shape
        for k in range(kd):
            for j in range(m):
                W[k, j] = W[k, j] - lr32 * dW[k, j]
