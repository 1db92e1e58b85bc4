"""Matrix products for dense 2-D float32 arrays (not the training loop's non-zero lists).

``matmul_blas``         np.dot inside @njit: the same BLAS NumPy uses.
``matmul_blocked``      hand-written: 4 x 4 register tiles (four rows of out take four
                        terms per pass), rows split across threads. ~60% of BLAS speed.
``matmul_sparse_rows``  the same tiles with exact zero skipping: a term t is skipped when
                        a[r, t] is zero in all four rows of the tile (MNIST: ~81% zeros).
``matmul_xt_sparse``    x.T @ dz with zero skipping (the first layer's weight gradient):
                        feature by feature for batches <= 16, else tiles of four features.
``matmul``              the contract's entry: zero skipping when ``a`` is sparse
                        (density <= SPARSE_MAX_DENSITY, counted in one cheap pass), else BLAS.

All hand-written variants add the terms one at a time in index order starting from
zero, so they return the same bits whatever the tiling, skipping or thread count
(adding a skipped 0 * b term to such a sum changes nothing while b is finite).
Must not hold layer, loss or optimizer logic; the list kernels live in ``numba_sparse``.
"""

import numpy as np
from numba import njit, prange

from .jit_base import PARALLEL_MIN_WORK, _prefer_sparse
from .jit_gemm import gemm_nn
from .numba_sparse import parallel_chunks

@njit(cache=True, error_model="numpy")
def matmul_blas(a, b, out):
    """out = a @ b through BLAS (np.dot). a (n, k), b (k, m), out (n, m) float32."""
    np.dot(a, b, out)


# The hand-written kernels below compute out rows in register-friendly 4 x 4 tiles:
# four rows of ``out`` take four terms a[i, t] * b[t] per pass over j, so each b[t] load
# serves four rows and each out load/store serves four terms. Terms are always added
# one at a time in increasing t, starting from zero, so every variant (dense, zero
# skipping, any tiling or thread count) returns the same bits: a skipped term is
# 0 * b[t], and adding it cannot change a sum that started at +0 (for finite b).


@njit(cache=True, error_model="numpy", inline="always")
def _has_term(a, i, rows, t):
    # whether term t contributes to rows i:i+rows (1 or 4) of a @ b
    if rows == 1:
        return a[i, t] != 0
    return a[i, t] != 0 or a[i + 1, t] != 0 or a[i + 2, t] != 0 or a[i + 3, t] != 0


@njit(cache=True, error_model="numpy", inline="always")
def _next_terms(a, i, rows, t, skip):
    """Up to four term indices from t on (all, or those with a non-zero in rows i:i+rows when
    ``skip``). Returns (next t, count, t0, t1, t2, t3)."""
    kd = a.shape[1]
    t0 = t1 = t2 = t3 = 0
    cnt = 0
    while t < kd and cnt < 4:
        if not skip or _has_term(a, i, rows, t):
            if cnt == 0:
                t0 = t
            elif cnt == 1:
                t1 = t
            elif cnt == 2:
                t2 = t
            else:
                t3 = t
            cnt += 1
        t += 1
    return t, cnt, t0, t1, t2, t3


@njit(cache=True, error_model="numpy")
def _zero_rows(out, i, rows):
    m = out.shape[1]
    for r in range(i, i + rows):
        for j in range(m):
            out[r, j] = 0


@njit(cache=True, error_model="numpy")
def _tile4(a, b, out, i, skip):
    """out[i:i+4] = a[i:i+4] @ b, terms t with a[i:i+4, t] all zero skipped when ``skip``."""
    m = b.shape[1]
    _zero_rows(out, i, 4)
    t, cnt = 0, 4
    while cnt == 4:
        t, cnt, t0, t1, t2, t3 = _next_terms(a, i, 4, t, skip)
        if cnt == 4:
            a00, a01, a02, a03 = a[i, t0], a[i, t1], a[i, t2], a[i, t3]
            a10, a11, a12, a13 = a[i + 1, t0], a[i + 1, t1], a[i + 1, t2], a[i + 1, t3]
            a20, a21, a22, a23 = a[i + 2, t0], a[i + 2, t1], a[i + 2, t2], a[i + 2, t3]
            a30, a31, a32, a33 = a[i + 3, t0], a[i + 3, t1], a[i + 3, t2], a[i + 3, t3]
            for j in range(m):
                b0, b1, b2, b3 = b[t0, j], b[t1, j], b[t2, j], b[t3, j]
                out[i, j] = (((out[i, j] + a00 * b0) + a01 * b1) + a02 * b2) + a03 * b3
                out[i + 1, j] = (((out[i + 1, j] + a10 * b0) + a11 * b1) + a12 * b2) + a13 * b3
                out[i + 2, j] = (((out[i + 2, j] + a20 * b0) + a21 * b1) + a22 * b2) + a23 * b3
                out[i + 3, j] = (((out[i + 3, j] + a30 * b0) + a31 * b1) + a32 * b2) + a33 * b3
        else:
            for c in range(cnt):
                tc = t0 if c == 0 else (t1 if c == 1 else t2)
                v0, v1, v2, v3 = a[i, tc], a[i + 1, tc], a[i + 2, tc], a[i + 3, tc]
                for j in range(m):
                    bj = b[tc, j]
                    out[i, j] += v0 * bj
                    out[i + 1, j] += v1 * bj
                    out[i + 2, j] += v2 * bj
                    out[i + 3, j] += v3 * bj


@njit(cache=True, error_model="numpy")
def _row1(a, b, out, i, skip):
    """One-row version of _tile4: out[i] = a[i] @ b, four terms per pass over j."""
    m = b.shape[1]
    _zero_rows(out, i, 1)
    t, cnt = 0, 4
    while cnt == 4:
        t, cnt, t0, t1, t2, t3 = _next_terms(a, i, 1, t, skip)
        if cnt == 4:
            v0, v1, v2, v3 = a[i, t0], a[i, t1], a[i, t2], a[i, t3]
            for j in range(m):
                out[i, j] = (((out[i, j] + v0 * b[t0, j]) + v1 * b[t1, j]) + v2 * b[t2, j]) + v3 * b[t3, j]
        else:
            for c in range(cnt):
                tc = t0 if c == 0 else (t1 if c == 1 else t2)
                v = a[i, tc]
                for j in range(m):
                    out[i, j] += v * b[tc, j]


@njit(cache=True, error_model="numpy")
def _rows_range(a, b, out, r0, r1, skip, tile):
    # ``tile``: four rows at a time. With zero skipping a term is then skipped only
    # where all four rows are zero (the union of four MNIST rows has ~2x the non-zeros
    # of one), but the tile's better reuse of loads still wins slightly; rows of x.T
    # (neighbouring pixels) share their zeros far more (~1.5x).
    i = r0
    while tile and i + 4 <= r1:
        _tile4(a, b, out, i, skip)
        i += 4
    while i < r1:
        _row1(a, b, out, i, skip)
        i += 1


@njit(cache=True, error_model="numpy", parallel=True)
def _rows_par(a, b, out, skip, tile, chunks):
    # chunk boundaries on multiples of 4 keep every chunk's tiles full
    n = a.shape[0]
    n4 = (n + 3) // 4
    for c in prange(chunks):
        _rows_range(a, b, out, min(n, 4 * (c * n4 // chunks)), min(n, 4 * ((c + 1) * n4 // chunks)), skip, tile)


@njit(cache=True, error_model="numpy")
def _rows(a, b, out, skip, tile):
    n = a.shape[0]
    work = n * b.shape[0] * b.shape[1]
    chunks = parallel_chunks((n + 3) // 4, work // 4 if skip else work, PARALLEL_MIN_WORK)
    if chunks == 1:
        _rows_range(a, b, out, 0, n, skip, tile)
    else:
        _rows_par(a, b, out, skip, tile, chunks)


@njit(cache=True, error_model="numpy")
def matmul_blocked(a, b, out):
    """out = a @ b with the hand-written 4 x 4-tiled kernel, no zero skipping; rows split across threads.

    a (n, k), b (k, m), out (n, m) float32; exact float32 terms summed in k order.
    """
    _rows(a, b, out, False, True)


@njit(cache=True, error_model="numpy")
def matmul_sparse_rows(a, b, out):
    """out = a @ b skipping zero entries of ``a`` exactly (same bits as ``matmul_blocked``).

    In tiles of four rows, terms t where all four a[r, t] are zero are skipped (MNIST
    pixels: ~81% zeros; the union of four images ~61%). Same bits as
    ``matmul_blocked``. a (n, k), b (k, m), out (n, m); rows split across threads.
    """
    _rows(a, b, out, True, True)


@njit(cache=True, error_model="numpy")
def matmul(a, b, out):
    """out = a @ b: zero skipping for sparse ``a``, else BLAS through ``jit_gemm`` (the same bits
    on any thread count). a (n, k), b (k, m), out (n, m)."""
    if _prefer_sparse(a):
        matmul_sparse_rows(a, b, out)
    else:
        gemm_nn(a, b, out)


# Batches up to this many rows take the column-by-column x.T @ dz kernel below.
_SMALL_BATCH = 16


@njit(cache=True, error_model="numpy")
def _xt_small_range(x, dz, dW, W, lr, k0, k1, fused):
    # x.T @ dz for small batches, one input feature (row k of dW) at a time: find its
    # non-zero rows; none: dW[k] = 0; one: dW[k] = v * dz[r] (== 0 + v * dz[r]); more:
    # the sum in r order. ``fused``: also W[k] -= lr * dW[k], skipping features with
    # no non-zero input (W - lr * 0 == W) and, with one, not storing dW[k] at all.
    n = x.shape[0]
    m = dz.shape[1]
    for k in range(k0, k1):
        r = 0
        while r < n and x[r, k] == 0:
            r += 1
        if r == n:
            if not fused:
                for j in range(m):
                    dW[k, j] = 0
            continue
        v = x[r, k]
        r2 = r + 1
        while r2 < n and x[r2, k] == 0:
            r2 += 1
        if r2 == n:
            if fused:
                for j in range(m):
                    W[k, j] = W[k, j] - lr * (v * dz[r, j])
            else:
                for j in range(m):
                    dW[k, j] = v * dz[r, j]
            continue
        v2 = x[r2, k]
        for j in range(m):
            dW[k, j] = v * dz[r, j] + v2 * dz[r2, j]
        for rr in range(r2 + 1, n):
            v = x[rr, k]
            if v != 0:
                for j in range(m):
                    dW[k, j] += v * dz[rr, j]
        if fused:
            for j in range(m):
                W[k, j] = W[k, j] - lr * dW[k, j]


@njit(cache=True, error_model="numpy", parallel=True)
def _xt_small_par(x, dz, dW, W, lr, fused, chunks):
    kd = x.shape[1]
    for c in prange(chunks):
        _xt_small_range(x, dz, dW, W, lr, c * kd // chunks, (c + 1) * kd // chunks, fused)


@njit(cache=True, error_model="numpy")
def _xt_small(x, dz, dW, W, lr, fused):
    kd = x.shape[1]
    chunks = parallel_chunks(kd, x.shape[0] * kd * dz.shape[1] // 4, PARALLEL_MIN_WORK)
    if chunks == 1:
        _xt_small_range(x, dz, dW, W, lr, 0, kd, fused)
    else:
        _xt_small_par(x, dz, dW, W, lr, fused, chunks)


@njit(cache=True, error_model="numpy")
def matmul_xt_sparse(x, dz, dW):
    """dW = x.T @ dz skipping zero entries of x exactly; rows of dW split across threads.

    x (n, k), dz (n, m), dW (k, m); dW[k] sums x[r, k] * dz[r] in r order, in tiles of
    four dW rows (four neighbouring input features share their non-zero rows), or
    feature by feature for batches of up to 16 rows.
    """
    if x.shape[0] <= _SMALL_BATCH:
        _xt_small(x, dz, dW, dW, np.float32(0), False)
    else:
        _rows(x.T, dz, dW, True, True)
