"""The Numba backend: compiled float32 kernels plus a compiled many-steps training loop.

Same kernel names and signatures as ``numpy_ref`` (see ``fastnn.backends``). Each
kernel is a module-level ``@njit(cache=True, error_model="numpy")`` function; ``kernel.py_func`` runs its
Python body. Hyperparameters are cast to float32 once per call and every elementwise
operation is done in float32, in the same order as the NumPy twin, so the two
backends differ only by summation order and libm rounding.

Matrix products
---------------
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

``dense_forward`` / ``dense_backward`` / ``dense_backward_sgd``: for a sparse x
(density <= SPARSE_MAX_DENSITY, MNIST-like pixels) x @ W and x.T @ dz run over the
batch's non-zero lists (``numba_sparse``: one AXPY of a W row per non-zero, sums
contracted into fused multiply-adds in a fixed order); the compiled loop builds the
lists once per batch straight from the data set rows (or from the augmented batch) and
shares them between forward and backward; the standalone kernels build them in scratch.
Dense x (hidden ReLU activations, ~50% non-zero) goes to BLAS; dz @ W.T always goes to BLAS.
``dense_backward_sgd`` fuses the first layer's plain-SGD update into its backward pass
and, for sparse inputs, touches only weight rows whose input is non-zero in the batch.
The 4 x 4 tile kernels above remain for ``matmul`` and as exported variants.

Threads: ``prange`` splits only independent rows (or weight rows), each computed by one
thread in a fixed order, so results do not depend on the thread count (BLAS aside)
and a single-threaded run is bit-reproducible. Small problems stay serial, because
a parallel region with sleeping waits (fastnn's default) costs ~44 us. No ``fastmath``: reordering
would break equality with the step-by-step path. ``error_model="numpy"``: a float
division by zero gives inf/nan as in NumPy instead of raising, and, more to the point,
without the per-division check LLVM can vectorise the loops.

With two Numba threads and a small network, ``train_steps`` instead runs the kernels on one
thread while a second lists the next batch's non-zeros (``_list_ahead``): no parallel region.

Whole network: ``train_steps`` runs a compiled loop (``_train_loop``) over many batches,
built from these same kernels; ``train_steps_stepwise`` is the plain-Python driver of
``stepwise.py`` over these kernels, which must give the same numbers.
"""

import contextlib
import mmap
import sys
import threading
from typing import NamedTuple

import numba
import numpy as np
from numba import config, njit, prange, types
from numba.extending import overload
from numba.np.ufunc import parallel as _numba_parallel

# Start Numba's thread pool now: a cached kernel that calls a parallel one can be loaded
# from disk before any parallel function is compiled, and then needs the pool's symbols
# (else "LLVM ERROR: Symbol not found: allocate_sched").
_numba_parallel._launch_threads()

from . import blas, stepwise
from .atomics import atomic_claim, atomic_load, atomic_store, spin_pause
from .augment import augment_rows, image_shape
from .numba_sparse import (LANES, MAX_CHUNKS, PARALLEL_MIN_TERMS, SPARSE_MAX_DENSITY, bucket_dw, byte_row_length,
                           csr_alloc, csr_build, csr_build_bytes, csr_forward, csr_rows, encode_bytes,
                           parallel_chunks, sparse_enough)
from .stepwise import AUG_STREAM
from .spec import (ACT, ACT_NONE, ACT_RELU, ACT_SIGMOID, ACT_TANH, BATCHNORM, DENSE, DROPOUT, KIND, N_IN, N_OUT,
                   OPT_ADAM, OPT_RMSPROP, OPT_SGD, P_OFF, P_OFF2, S_OFF, S_OFF2, ACTIVATION)

NAME = "numba"

# Multiply-adds below which a kernel stays serial: ~100 us of work or more, so that splitting
# it pays for a parallel region with sleeping waits (measured 44 us on a 2-vCPU VM; 1.2 us
# with spinning waits). numba_sparse.PARALLEL_MIN_TERMS is the same rule for list kernels.
PARALLEL_MIN_WORK = 1 << 22
# Elements below which an elementwise pass (optimizer update) stays serial.
PARALLEL_MIN_ELEMENTS = 1 << 18

# ----------------------------------------------------------------------------- helpers


@njit(cache=True, error_model="numpy")
def _count_nonzero(a):
    # branch-free count: a branch per element mispredicts on ReLU outputs (~50% zeros)
    # and made this scan cost as much as a 128-row BLAS product
    n, m = a.shape
    nnz = 0
    for r in range(n):
        for k in range(m):
            nnz += a[r, k] != 0
    return nnz


@njit(cache=True, error_model="numpy")
def density(a):
    """Fraction of non-zero entries of a 2-D array (0.0 for an empty one)."""
    n, m = a.shape
    if n * m == 0:
        return 0.0
    return _count_nonzero(a) / (n * m)


@njit(cache=True, error_model="numpy")
def _prefer_sparse(a):
    return sparse_enough(_count_nonzero(a), a.shape[0], a.shape[1])


# ----------------------------------------------------------------------------- matmul


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
    """out = a @ b: zero skipping for sparse ``a``, BLAS otherwise. a (n, k), b (k, m), out (n, m)."""
    if _prefer_sparse(a):
        matmul_sparse_rows(a, b, out)
    else:
        np.dot(a, b, out)


@njit(cache=True, error_model="numpy")
def _lists_products(a, b, out, xt, lists):
    rp, ci, cv, blen, brow, bval = lists
    n = a.shape[0]
    nnz = csr_build(a, rp, n, False, rp, ci, cv, blen, brow, bval)
    if xt:
        bucket_dw(blen, brow, bval, b, out, out, np.float32(0), False, nnz, rp, ci, cv)
    else:
        csr_forward(rp, ci, cv, b, out, n)


def matmul_lists(a, b, out):
    """out = a @ b over the non-zero lists of a: the compiled loop's first-layer kernels
    (``numba_sparse``), lists built on every call into cached buffers. For timing them."""
    _lists_products(a, b, out, False, _lists(*a.shape))


def matmul_xt_lists(x, dz, dW):
    """dW = x.T @ dz over the non-zero lists of x (the first-layer weight gradient), as ``matmul_lists``."""
    _lists_products(x, dz, dW, True, _lists(*x.shape))


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


# ------------------------------------------------------------------------- activations


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
    for r in range(n):
        for j in range(d):
            dx[r, j] = _act_grad(act, y[r, j], dy[r, j])


# ------------------------------------------------------------------------------ dense


@njit(cache=True, error_model="numpy")
def _bias_act_rows(out, b, act):
    n, m = out.shape
    for r in range(n):
        for j in range(m):
            out[r, j] = _act(act, out[r, j] + b[j])


@njit(cache=True, error_model="numpy")
def dense_forward(x, W, b, act, out):
    """out = act(x @ W + b). x (n, d_in), W (d_in, d_out), b (d_out,), out (n, d_out).

    Sparse x (density <= SPARSE_MAX_DENSITY) lists its non-zeros row by row
    (``numba_sparse.csr_rows``, scratch sized to them; the compiled loop reuses a
    workspace instead) and adds one row of W per non-zero; dense x takes BLAS.
    """
    n, d = x.shape
    nnz = _count_nonzero(x)
    if sparse_enough(nnz, n, d):  # _prefer_sparse, keeping the count for the list sizes
        # the forward needs only the row lists, sized to the non-zeros
        rp, ci, cv = np.empty(n + 1, np.int64), np.empty(nnz + LANES, np.int32), np.empty(nnz + LANES, np.float32)
        csr_rows(x, n, rp, ci, cv)
        csr_forward(rp, ci, cv, W, out, n)
    else:
        np.dot(x, W, out)
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
    """dW = x.T @ dz, db = dz.sum(0), dx = dz @ W.T (skipped when dx is (0, 0)).

    x (n, d_in), W (d_in, d_out), dz (n, d_out); overwrites dW, db and dx. For a sparse
    x, dW sums each feature's non-zero rows (``numba_sparse.bucket_dw``), else BLAS.
    """
    _colsum(dz, db)
    if _prefer_sparse(x):
        n, d = x.shape
        rp, ci, cv, blen, brow, bval = csr_alloc(n, d)
        nnz = csr_build(x, rp, n, False, rp, ci, cv, blen, brow, bval)
        bucket_dw(blen, brow, bval, dz, dW, dW, np.float32(0), False, nnz, rp, ci, cv)
    elif x.shape[0] == 1:
        _outer(x, dz, dW)
    else:
        np.dot(x.T, dz, dW)
    if dx.shape[0] > 0:
        np.dot(dz, W.T, dx)


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
def dense_backward_sgd(x, W, dz, dW, db, lr):
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
        rp, ci, cv, blen, brow, bval = csr_alloc(n, d)
        nnz = csr_build(x, rp, n, False, rp, ci, cv, blen, brow, bval)
        bucket_dw(blen, brow, bval, dz, dW, W, lr32, True, nnz, rp, ci, cv)
    else:
        np.dot(x.T, dz, dW)
        kd, m = W.shape
        for k in range(kd):
            for j in range(m):
                W[k, j] = W[k, j] - lr32 * dW[k, j]


# ------------------------------------------------------------------------------- loss


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


# ---------------------------------------------------------------------------- dropout

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


# ------------------------------------------------------------------------- batch norm


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


# ------------------------------------------------------------------------- optimizers


# The update loops compute g = grad + weight_decay * p unconditionally (adding 0 * p
# changes nothing for finite p) and test momentum/nesterov outside the loops: a branch
# inside would keep LLVM from vectorising them.


@njit(cache=True, error_model="numpy")
def _sgd_range(params, grads, velocity, lr, momentum, nesterov, weight_decay, i0, i1):
    # Loops run over slices from 0: an index that might be negative would need
    # wrap-around handling, which keeps LLVM from vectorising.
    p, gr = params[i0:i1], grads[i0:i1]
    if momentum == 0:
        for i in range(p.shape[0]):
            p[i] = p[i] - lr * (gr[i] + weight_decay * p[i])
        return
    vel = velocity[i0:i1]
    if nesterov:
        for i in range(p.shape[0]):
            g = gr[i] + weight_decay * p[i]
            v = vel[i] * momentum + g
            vel[i] = v
            p[i] = p[i] - lr * (g + momentum * v)
    else:
        for i in range(p.shape[0]):
            g = gr[i] + weight_decay * p[i]
            v = vel[i] * momentum + g
            vel[i] = v
            p[i] = p[i] - lr * v


@njit(cache=True, error_model="numpy", parallel=True)
def _sgd_par(params, grads, velocity, lr, momentum, nesterov, weight_decay, chunks):
    p = params.shape[0]
    for c in prange(chunks):
        _sgd_range(params, grads, velocity, lr, momentum, nesterov, weight_decay, c * p // chunks,
                   (c + 1) * p // chunks)


@njit(cache=True, error_model="numpy")
def _elem_chunks(p):
    if p < PARALLEL_MIN_ELEMENTS:
        return 1
    return MAX_CHUNKS


@njit(cache=True, error_model="numpy")
def sgd_update(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """PyTorch SGD step in place (params, velocity (P,)); see numpy_ref.sgd_update."""
    lr32, mom, wd = np.float32(lr), np.float32(momentum), np.float32(weight_decay)
    chunks = _elem_chunks(params.shape[0])
    if chunks == 1:
        _sgd_range(params, grads, velocity, lr32, mom, nesterov, wd, 0, params.shape[0])
    else:
        _sgd_par(params, grads, velocity, lr32, mom, nesterov, wd, chunks)


@njit(cache=True, error_model="numpy")
def _rmsprop_range(params, grads, square_avg, momentum_buf, lr, alpha, one_m_alpha, eps, weight_decay, momentum, i0,
                   i1):
    p, gr, sq = params[i0:i1], grads[i0:i1], square_avg[i0:i1]
    if momentum != 0:
        buf = momentum_buf[i0:i1]
        for i in range(p.shape[0]):
            g = gr[i] + weight_decay * p[i]
            s = sq[i] * alpha + one_m_alpha * (g * g)
            sq[i] = s
            b = buf[i] * momentum + g / (np.sqrt(s) + eps)
            buf[i] = b
            p[i] = p[i] - lr * b
    else:
        for i in range(p.shape[0]):
            g = gr[i] + weight_decay * p[i]
            s = sq[i] * alpha + one_m_alpha * (g * g)
            sq[i] = s
            p[i] = p[i] - lr * (g / (np.sqrt(s) + eps))


@njit(cache=True, error_model="numpy", parallel=True)
def _rmsprop_par(params, grads, sq, buf, lr, alpha, one_m_alpha, eps, weight_decay, momentum, chunks):
    p = params.shape[0]
    for c in prange(chunks):
        _rmsprop_range(params, grads, sq, buf, lr, alpha, one_m_alpha, eps, weight_decay, momentum,
                       c * p // chunks, (c + 1) * p // chunks)


@njit(cache=True, error_model="numpy")
def rmsprop_update(params, grads, square_avg, momentum_buf, lr, alpha, eps, weight_decay, momentum):
    """PyTorch RMSprop step in place; see numpy_ref.rmsprop_update."""
    a = (np.float32(lr), np.float32(alpha), np.float32(1.0 - alpha), np.float32(eps), np.float32(weight_decay),
         np.float32(momentum))
    chunks = _elem_chunks(params.shape[0])
    if chunks == 1:
        _rmsprop_range(params, grads, square_avg, momentum_buf, a[0], a[1], a[2], a[3], a[4], a[5], 0,
                       params.shape[0])
    else:
        _rmsprop_par(params, grads, square_avg, momentum_buf, a[0], a[1], a[2], a[3], a[4], a[5], chunks)


@njit(cache=True, error_model="numpy")
def _adam_range(params, grads, m, v, step_size, b1, one_m_b1, b2, one_m_b2, bc2_sqrt, eps, weight_decay, i0, i1):
    p, gr, ms, vs = params[i0:i1], grads[i0:i1], m[i0:i1], v[i0:i1]
    for i in range(p.shape[0]):
        g = gr[i] + weight_decay * p[i]
        mi = ms[i] * b1 + one_m_b1 * g
        vi = vs[i] * b2 + one_m_b2 * (g * g)
        ms[i] = mi
        vs[i] = vi
        p[i] = p[i] - step_size * (mi / (np.sqrt(vi) / bc2_sqrt + eps))


@njit(cache=True, error_model="numpy", parallel=True)
def _adam_par(params, grads, m, v, step_size, b1, one_m_b1, b2, one_m_b2, bc2_sqrt, eps, weight_decay, chunks):
    p = params.shape[0]
    for c in prange(chunks):
        _adam_range(params, grads, m, v, step_size, b1, one_m_b1, b2, one_m_b2, bc2_sqrt, eps, weight_decay,
                    c * p // chunks, (c + 1) * p // chunks)


@njit(cache=True, error_model="numpy")
def adam_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """PyTorch Adam step number ``step`` (1-based) in place; see numpy_ref.adam_update."""
    step_size = np.float32(lr / (1.0 - beta1**step))
    bc2_sqrt = np.float32(np.sqrt(1.0 - beta2**step))
    b1, omb1 = np.float32(beta1), np.float32(1.0 - beta1)
    b2, omb2 = np.float32(beta2), np.float32(1.0 - beta2)
    eps32, wd = np.float32(eps), np.float32(weight_decay)
    chunks = _elem_chunks(params.shape[0])
    if chunks == 1:
        _adam_range(params, grads, m, v, step_size, b1, omb1, b2, omb2, bc2_sqrt, eps32, wd, 0, params.shape[0])
    else:
        _adam_par(params, grads, m, v, step_size, b1, omb1, b2, omb2, bc2_sqrt, eps32, wd, chunks)


# ------------------------------------------------------------------ compiled network


@njit(cache=True, error_model="numpy")
def _view(buf, off, n, w):
    if off < 0:
        return buf[0:0].reshape((0, w))
    return buf[off:off + n * w].reshape((n, w))


@njit(cache=True, error_model="numpy")
def _layer_forward(spec, fconf, params, state, i, x, out, aux, vec, training, seed, step):
    # Compiled twin of stepwise.layer_forward.
    kind = spec[i, KIND]
    n_in, n_out, p, p2, s, s2 = spec[i, N_IN], spec[i, N_OUT], spec[i, P_OFF], spec[i, P_OFF2], spec[i, S_OFF], \
        spec[i, S_OFF2]
    if kind == DENSE:
        dense_forward(x, params[p:p + n_in * n_out].reshape((n_in, n_out)), params[p2:p2 + n_out], spec[i, ACT],
                      out)
    elif kind == ACTIVATION:
        activation_forward(spec[i, ACT], x, out)
    elif kind == DROPOUT:
        rate = fconf[i, 0]
        if training and rate > 0:
            dropout_forward(x, rate, seed, step * 64 + i, out, aux)
        else:
            out[:, :] = x
    elif kind == BATCHNORM:
        if training:
            batchnorm_forward_train(x, params[p:p + n_in], params[p2:p2 + n_in], state[s:s + n_in],
                                    state[s2:s2 + n_in], fconf[i, 0], fconf[i, 1], out, aux, vec)
        else:
            batchnorm_forward_eval(x, params[p:p + n_in], params[p2:p2 + n_in], state[s:s + n_in],
                                   state[s2:s2 + n_in], fconf[i, 1], out)


@njit(cache=True, error_model="numpy")
def _layer_backward(spec, fconf, params, grads, i, x, y, dy, dx, aux, vec):
    # Compiled twin of stepwise.layer_backward.
    kind = spec[i, KIND]
    n_in, n_out, p, p2 = spec[i, N_IN], spec[i, N_OUT], spec[i, P_OFF], spec[i, P_OFF2]
    if kind == DENSE:
        if spec[i, ACT] != ACT_NONE:
            activation_backward(spec[i, ACT], y, dy, dy)
        dense_backward(x, params[p:p + n_in * n_out].reshape((n_in, n_out)), dy, dx,
                       grads[p:p + n_in * n_out].reshape((n_in, n_out)), grads[p2:p2 + n_out])
    elif dx.shape[0] == 0 and kind != BATCHNORM:
        return
    elif kind == ACTIVATION:
        activation_backward(spec[i, ACT], y, dy, dx)
    elif kind == DROPOUT:
        if fconf[i, 0] > 0:
            dropout_backward(dy, aux, dx)
        else:
            dx[:, :] = dy
    elif kind == BATCHNORM:
        batchnorm_backward(dy, aux, vec, params[p:p + n_in], dx, grads[p:p + n_in], grads[p2:p2 + n_in])


@njit(cache=True, error_model="numpy")
def _update(opt_code, hp, params, grads, slots, lr, t):
    if opt_code == OPT_SGD:
        sgd_update(params, grads, slots[0], lr, hp[0], hp[1] != 0, hp[2])
    elif opt_code == OPT_RMSPROP:
        rmsprop_update(params, grads, slots[0], slots[1], lr, hp[0], hp[1], hp[2], hp[3])
    else:
        adam_update(params, grads, slots[0], slots[1], lr, hp[0], hp[1], hp[2], hp[3], t)


# Listing ahead: while the compiled loop runs step s, a second thread lists the non-zeros of
# batch s + 1 (``_list_ahead``), into the other of two list buffers. The int64 array the two
# threads share holds, one 64-byte line apart: the next step nobody has claimed, the number
# of steps the loop has finished, a stop flag, and per buffer the step whose lists it holds
# (plus one, once written) followed by their count.
_CLAIMED, _FINISHED, _STOP, _READY = 0, 8, 16, 24
SYNC_SIZE = 40


@njit(cache=True, error_model="numpy")
def _list_batch(x, codes, d0, rows, n, lists):
    # the lists of the batch x[rows[:n]] (from its byte codes when there are any); their count
    rp, ci, cv, blen, brow, bval = lists
    if codes.shape[0] > 0:
        return csr_build_bytes(codes, d0, rows, n, rp, ci, cv, blen, brow, bval)
    return csr_build(x, rows, n, True, rp, ci, cv, blen, brow, bval)


@njit(cache=True, error_model="numpy")
def _lists_of_step(s, lists, lists2):
    return lists2 if s % 2 else lists


@njit(cache=True, error_model="numpy")
def _ready_flag(s):
    # where step s's buffer records the step it holds (the count follows)
    return _READY + 8 * (s % 2)


@njit(cache=True, error_model="numpy")
def _take_lists(x, codes, d0, rows, n, s, lists, lists2, sync):
    # The loop's side of listing ahead: step s's list count, its lists listed here unless
    # the other thread claimed them first (then wait for it to finish them).
    if atomic_claim(sync, _CLAIMED, s):
        return _list_batch(x, codes, d0, rows, n, _lists_of_step(s, lists, lists2))
    ready = _ready_flag(s)
    while atomic_load(sync, ready) != s + 1:
        spin_pause()
    return sync[ready + 1]


@njit(cache=True, error_model="numpy", nogil=True)
def _list_ahead(x, codes, d0, order, start, batch_size, n_steps, lists, lists2, sync):
    """The second thread of listing ahead: lists the steps' batches in order, each once the
    loop has finished with its buffer (step s - 2), until every step is listed or the stop
    flag is set. Busy-waits: the loop and this thread each have a core of their own.

    Deadlock-free whatever the scheduling: a step is listed by whichever thread claims it
    first, and the loop waits only on a step this thread has claimed, which it is listing.
    """
    n_total = order.shape[0]
    while atomic_load(sync, _STOP) == 0:
        s = atomic_load(sync, _CLAIMED)
        pos = start + s * batch_size
        if s >= n_steps or pos >= n_total:
            return
        if atomic_load(sync, _FINISHED) < s - 1 or not atomic_claim(sync, _CLAIMED, s):
            spin_pause()
            continue
        n = min(batch_size, n_total - pos)
        ready = _ready_flag(s)
        sync[ready + 1] = _list_batch(x, codes, d0, order[pos:pos + n], n, _lists_of_step(s, lists, lists2))
        atomic_store(sync, ready, s + 1)


@njit(cache=True, error_model="numpy", nogil=True)
def _train_loop(x, y, order, start, n_steps, batch_size, spec, fconf, params, grads, state, opt_code, hp, slots,
                step, lr_steps, seed, smoothing, aug, img_h, img_w, step_loss, step_correct, act, grad, aux, vec, offs,
                labels, backup, empty, lists, codes, lists2, sync):
    # lists2: a second set of list buffers for odd steps and sync the shared flags when a
    # second thread lists ahead (``_list_ahead``), else lists itself and an empty array
    listing_ahead = sync.shape[0] > 0
    n_layers = spec.shape[0]
    n_total = order.shape[0]
    d0 = spec[0, N_IN]
    first_dense = spec[0, KIND] == DENSE
    # Plain SGD on a dense first layer: fuse its weight update into the backward pass.
    fuse = opt_code == OPT_SGD and hp[0] == 0 and hp[2] == 0 and first_dense
    n0 = spec[0, N_OUT] if first_dense else 0
    w0_end = d0 * n0
    W0 = params[:w0_end].reshape((d0, n0))
    dW0 = grads[:w0_end].reshape((d0, n0))
    b0 = params[w0_end:w0_end + n0]
    db0 = grads[w0_end:w0_end + n0]
    for s in range(n_steps):
        pos = start + s * batch_size
        if pos >= n_total:
            return s
        n = min(batch_size, n_total - pos)
        a0 = _view(act, offs[0, 0], n, d0)
        g = step[0]
        rows = order[pos:pos + n]
        rp, ci, cv, blen, brow, bval = _lists_of_step(s, lists, lists2)
        for r in range(n):
            labels[r] = y[rows[r]]
        # The first dense layer works from the batch's non-zero lists, built straight from
        # the data set rows (the dense batch is then never written) or from the augmented batch.
        sparse0 = False
        nnz = 0
        if aug[0] != 0:
            augment_rows(x, rows, img_h, img_w, aug, seed, g * 64 + AUG_STREAM, a0)
            if first_dense and _prefer_sparse(a0):  # the lists only when they will be used
                nnz = csr_build(a0, rows, n, False, rp, ci, cv, blen, brow, bval)
                sparse0 = True
        else:
            if first_dense:
                if listing_ahead:
                    nnz = _take_lists(x, codes, d0, rows, n, s, lists, lists2, sync)
                else:
                    nnz = _list_batch(x, codes, d0, rows, n, lists)
                sparse0 = sparse_enough(nnz, n, d0)
            if not sparse0:
                for r in range(n):
                    a0[r, :] = x[rows[r]]
        if backup.shape[0] > 0:
            backup[:] = state
        for i in range(n_layers):
            w_in, w_out = spec[i, N_IN], spec[i, N_OUT]
            if i == 0 and sparse0:
                a1 = _view(act, offs[1, 0], n, w_out)
                csr_forward(rp, ci, cv, W0, a1, n)
                _bias_act_rows(a1, b0, spec[0, ACT])
            else:
                _layer_forward(spec, fconf, params, state, i, _view(act, offs[i, 0], n, w_in),
                               _view(act, offs[i + 1, 0], n, w_out), _view(aux, offs[i, 1], n, w_out),
                               vec[max(offs[i, 2], 0):max(offs[i, 2], 0) + w_out], True, seed, g)
        w_last = spec[n_layers - 1, N_OUT]
        loss, correct = softmax_nll(_view(act, offs[n_layers, 0], n, w_last), labels[:n], smoothing,
                                    _view(grad, offs[n_layers, 0], n, w_last))
        step_loss[s] = loss
        step_correct[s] = correct
        if not np.isfinite(loss):
            if backup.shape[0] > 0:
                state[:] = backup
            return s
        lr = lr_steps[s]
        for i in range(n_layers - 1, -1, -1):
            w_in, w_out = spec[i, N_IN], spec[i, N_OUT]
            xi = _view(act, offs[i, 0], n, w_in)
            yi = _view(act, offs[i + 1, 0], n, w_out)
            dy = _view(grad, offs[i + 1, 0], n, w_out)
            if i == 0 and sparse0:
                # dense_backward(_sgd) on the lists built above: same kernels, same bits
                if spec[0, ACT] != ACT_NONE:
                    activation_backward(spec[0, ACT], yi, dy, dy)
                _colsum(dy, db0)
                bucket_dw(blen, brow, bval, dy, dW0, W0, np.float32(lr), fuse, nnz, rp, ci, cv)
            elif i == 0 and fuse:
                if spec[0, ACT] != ACT_NONE:
                    activation_backward(spec[0, ACT], yi, dy, dy)
                dense_backward_sgd(xi, W0, dy, dW0, db0, lr)
            else:
                dx = _view(grad, offs[i, 0], n, w_in) if i > 0 else empty
                _layer_backward(spec, fconf, params, grads, i, xi, yi, dy, dx, _view(aux, offs[i, 1], n, w_out),
                                vec[max(offs[i, 2], 0):max(offs[i, 2], 0) + w_out])
        if fuse:
            sgd_update(params[w0_end:], grads[w0_end:], slots[0, w0_end:], lr, 0.0, False, 0.0)
        else:
            _update(opt_code, hp, params, grads, slots, lr, g + 1)
        step[0] = g + 1
        if listing_ahead:
            atomic_store(sync, _FINISHED, s + 1)  # this step's list buffer is free again
    return n_steps


@njit(cache=True, error_model="numpy")
def _forward_loop(x, spec, fconf, params, state, out, batch_size, act, offs, empty):
    n_layers = spec.shape[0]
    n_total = x.shape[0]
    d0 = spec[0, N_IN]
    k = spec[n_layers - 1, N_OUT]
    vec0 = act[0:0]
    for pos in range(0, n_total, batch_size):
        n = min(batch_size, n_total - pos)
        a0 = _view(act, offs[0, 0], n, d0)
        a0[:, :] = x[pos:pos + n]
        for i in range(n_layers):
            _layer_forward(spec, fconf, params, state, i, _view(act, offs[i, 0], n, spec[i, N_IN]),
                           _view(act, offs[i + 1, 0], n, spec[i, N_OUT]), empty, vec0, False, 0, 0)
        out[pos:pos + n] = _view(act, offs[n_layers, 0], n, k)


# ------------------------------------------------------------------------- wrappers

make_workspace = stepwise.make_workspace


class ByteInputs(NamedTuple):
    """``prepare_inputs``' result: one-byte codes of x and the fraction of its values that are non-zero."""

    codes: np.ndarray  # uint8 (N, byte_row_length(d))
    density: float


def prepare_inputs(x):
    """Once per data set: the one-byte codes of x (float32 (N, d)) for ``train_steps(inputs=...)``.

    Returns ``ByteInputs`` when every value of x is k / 255 for an integer k (8-bit images
    scaled as ``load_dataset`` scales them), else None. The compiled loop then lists each
    batch's non-zeros from 1 byte per pixel instead of 4 (same lists, same results). One
    pass over x (about 15 ms for MNIST's 60,000 x 784, plus the first touch of the 47 MB
    of codes: 45 ms in all), stopping at the first row with a value that is not such a fraction.
    """
    shape = (x.shape[0], byte_row_length(x.shape[1]))
    # An anonymous mapping rather than np.empty: NumPy asks for transparent huge pages on
    # large arrays, and where the kernel then compacts memory on first touch (THP defrag
    # "madvise") that took 105 ms for MNIST's 47 MB against 45 ms with plain pages; listing
    # random rows from plain pages measured no slower (96-98 against 95-96 us per batch).
    codes = np.frombuffer(mmap.mmap(-1, max(shape[0] * shape[1], 1)), np.uint8)[:shape[0] * shape[1]].reshape(shape)
    nnz = encode_bytes(x, codes)
    return ByteInputs(codes, nnz / max(x.size, 1)) if nnz >= 0 else None


_NO_CODES = np.zeros((0, 8), np.uint8)
# Hidden-layer products below this many multiply-adds per batch run OpenBLAS on one thread
# during train_steps when the first layer takes the zero-skipping lists: waking a second
# BLAS thread for every 128x128x64 product cost 784-128-64-10 at batch 128 on 2 threads
# 12% (274k against 308k samples/s); at batch 512 (4.2M) one thread gained nothing, and
# 1024x1024 products need both (batch 512: 21.6k against 12.5k samples/s).
BLAS_SERIAL_MAX_MACS = 1 << 22


def _blas_threads_limit(net, batch_size, aug, inputs):
    """1 when every BLAS product of a train step is small (see BLAS_SERIAL_MAX_MACS), else None."""
    spec = net.spec
    hidden = [int(spec[i, N_IN] * spec[i, N_OUT]) for i in range(1, len(spec)) if spec[i, KIND] == DENSE]
    lists_first = (spec[0, KIND] == DENSE and aug[0] == 0 and inputs is not None
                   and inputs.density <= SPARSE_MAX_DENSITY)
    return 1 if lists_first and batch_size * max(hidden, default=0) < BLAS_SERIAL_MAX_MACS else None


# With two or more Numba threads, a train_steps call whose first layer takes the lists and
# whose BLAS products are small (BLAS_SERIAL_MAX_MACS) runs its kernels on one thread and
# lists the next batch on a second, when the first layer has fewer multiply-adds per batch
# than this: below it, splitting the list kernels across threads (PARALLEL_MIN_TERMS) saves
# less than listing ahead. 784-128-64-10 at batch 128, 2 threads: KMNIST 245k -> 322k samples/s
# (a parallel region costs ~44 us against a 460 us step). Near the limit, split / ahead:
# 784-512-10 MNIST batch 128 (9.8M) 98.6k / 137.6k; 784-1024-10 KMNIST batch 32 (8.7M) 54.8k / 42.8k.
LIST_AHEAD_MAX_TERMS = 2 * PARALLEL_MIN_TERMS
_NO_SYNC = np.zeros(0, np.int64)


def _should_list_ahead(net, batch_size, n_steps, inputs, blas_limit):
    """Whether train_steps lists the next batch on a second thread (see LIST_AHEAD_MAX_TERMS)."""
    if config.DISABLE_JIT or blas_limit != 1 or n_steps < 2 or numba.get_num_threads() < 2:
        return False
    terms = batch_size * net.spec[0, N_IN] * net.spec[0, N_OUT] * inputs.density
    return terms < LIST_AHEAD_MAX_TERMS


@contextlib.contextmanager
def _listing_ahead(*args):
    """Runs ``_list_ahead(*args)`` on a second thread, and the caller's compiled code on one Numba
    thread (its core is the other's), until the block ends: then sets the stop flag in
    ``sync`` (the last argument) and joins it."""
    sync = args[-1]
    helper = threading.Thread(target=_list_ahead, args=args, name="fastnn-list-ahead", daemon=True)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    helper.start()
    try:
        yield
    finally:
        sync[_STOP] = 1
        helper.join()
        numba.set_num_threads(threads)


def train_steps(x, y, order, start, n_steps, batch_size, net, opt, lr_steps, seed, smoothing, aug,
                step_loss, step_correct, workspace=None, inputs=None):
    """The contract's ``train_steps`` (see ``fastnn.backends``) as one compiled loop.

    Arguments are not validated (the model does that); ``workspace`` (from
    ``make_workspace(net, batch_size)``) is optional: by default a cached one is used.
    ``inputs``: ``prepare_inputs(x)`` of this same x (faster; None: work from x alone).
    With plain SGD (momentum 0, weight decay 0) ``net.grads`` of the first dense layer's
    W is left as scratch. With two or more Numba threads and a small network (see
    ``LIST_AHEAD_MAX_TERMS``) a second thread lists each next batch's non-zeros meanwhile.
    """
    ws = workspace if workspace is not None else stepwise.get_workspace(net, batch_size)
    img_h, img_w = image_shape(aug, x.shape[1]) if aug[0] != 0 else (0, 0)
    codes = _NO_CODES if inputs is None else inputs.codes
    if codes.shape[0] and codes.shape != (x.shape[0], byte_row_length(x.shape[1])):
        raise ValueError(f"inputs of shape {codes.shape} were not prepared from this x {x.shape}: "
                         f"pass inputs=prepare_inputs(x)")
    limit = _blas_threads_limit(net, batch_size, aug, inputs)
    d0 = int(net.spec[0, N_IN])
    lists = _lists(batch_size, d0)
    ahead = _should_list_ahead(net, batch_size, n_steps, inputs, limit)
    lists2, sync = (_lists(batch_size, d0, 1), np.zeros(SYNC_SIZE, np.int64)) if ahead else (lists, _NO_SYNC)
    with contextlib.ExitStack() as stack:
        if limit:
            stack.enter_context(blas.at_most_threads("scipy", limit))
        if ahead:
            stack.enter_context(_listing_ahead(x, codes, d0, order, start, batch_size, n_steps, lists, lists2, sync))
        return _train_loop(x, y, order, start, n_steps, batch_size, net.spec, net.fconf, net.params, net.grads,
                           net.state, opt.code, opt.hparams, opt.slots, opt.step, lr_steps, seed, smoothing, aug,
                           img_h, img_w, step_loss, step_correct, ws.act, ws.grad, ws.aux, ws.vec, ws.offsets,
                           ws.labels, ws.backup, ws.empty, lists, codes, lists2, sync)


_LISTS = {}


def _lists(batch_size, d, copy=0):
    """Non-zero list buffers (``numba_sparse.csr_alloc``) for batches of up to batch_size rows of d features.

    Cached per shape and ``copy`` (listing ahead uses copies 0 and 1; a few kept). Like the
    cached workspaces, not safe for two train_steps calls at once.
    """
    return stepwise.cached(_LISTS, (int(batch_size), int(d), copy), lambda: csr_alloc(batch_size, d), limit=4)


def forward(x, net, out, batch_size, workspace=None):
    """The contract's ``forward``: inference-mode logits of all rows of x into out, compiled."""
    ws = workspace if workspace is not None else stepwise.get_workspace(net, batch_size)
    _forward_loop(x, net.spec, net.fconf, net.params, net.state, out, batch_size, ws.act, ws.offsets, ws.empty)


def train_steps_stepwise(x, y, order, start, n_steps, batch_size, net, opt, lr_steps, seed, smoothing, aug,
                         step_loss, step_correct, workspace=None, inputs=None):
    """``train_steps`` by the plain-Python step-by-step driver over these kernels (for tests/debugging)."""
    return stepwise.train_steps(sys.modules[__name__], x, y, order, start, n_steps, batch_size, net, opt,
                                lr_steps, seed, smoothing, aug, step_loss, step_correct, workspace)


def forward_stepwise(x, net, out, batch_size, workspace=None):
    """``forward`` by the plain-Python driver over these kernels."""
    stepwise.forward(sys.modules[__name__], x, net, out, batch_size, workspace)


def warmup():
    """Compile (or load from Numba's cache) the float32 specialisations training uses.

    Runs a few steps of a tiny network with every layer kind and optimizer through the
    compiled loop, the step-by-step path and ``forward``. Call it once before starting
    several processes that share the on-disk cache, so they only read it.
    """
    from .spec import NetBuffers, OptBuffers, allocate

    layers = [("dense", 12, 8, ACT_RELU), ("batchnorm", 8, 0.1, 1e-5), ("dropout", 8, 0.5),
              ("activation", 8, ACT_TANH), ("dense", 8, 3, ACT_SIGMOID), ("dense", 3, 3, ACT_NONE)]
    x = np.zeros((10, 12), np.float32)
    x[:, :3] = 1.0
    y = np.arange(10, dtype=np.int64) % 3
    hps = {OPT_SGD: [(0.0, 0, 0.0, 0), (0.9, 1, 1e-4, 0)], OPT_RMSPROP: [(0.99, 1e-8, 0.0, 0.5)],
           OPT_ADAM: [(0.9, 0.999, 1e-8, 0.0)]}
    for code, settings in hps.items():
        for hp in settings:
            for run in (train_steps, train_steps_stepwise):
                net = allocate(layers)
                net = NetBuffers(net.spec, net.fconf, net.params + np.float32(0.1), net.grads, net.state)
                opt = OptBuffers(code, np.array(hp, np.float64), np.zeros((2, len(net.params)), np.float32),
                                 np.zeros(1, np.int64))
                run(x, y, np.arange(10), 0, 3, 4, net, opt, np.full(3, 0.01), 0, 0.0, np.zeros(8), np.zeros(3),
                    np.zeros(3, np.int64))
    inputs = prepare_inputs(x)
    stopped = np.zeros(SYNC_SIZE, np.int64)
    stopped[_STOP] = 1
    lists = _lists(4, x.shape[1])
    _list_ahead(x, inputs.codes, x.shape[1], np.arange(10), 0, 4, 3, lists, lists, stopped)
    out = np.zeros((10, 3), np.float32)
    forward(x, net, out, 4)
    forward_stepwise(x, net, out, 4)
