"""Exact zero-skipping first-layer kernels over per-batch non-zero lists (Numba).

MNIST-like inputs are ~81% zeros (KMNIST ~68%). Instead of scanning the dense batch
inside every matmul, the batch's non-zeros are listed once per batch and both the
forward product and the weight gradient run over those lists:

``csr_build``     one pass over the batch rows: row lists (CSR: ``rp``, ``ci``, ``cv``);
                  then, from those, per-feature buckets (``blen``, ``brow``, ``bval``: for
                  feature t, the rows r with x[r, t] != 0 in increasing r, and their values),
                  64 features per pass so that the bucket lines being written stay in L1.
``csr_build_bytes`` the same lists from one-byte pixel codes (``encode_bytes``): when every
                  input is k / 255 (8-bit images, as ``load_dataset`` returns them), a
                  random row is 784 bytes instead of 3136, listed 16 pixels per vector
                  compress without a branch per pixel, and the next rows are prefetched.
``csr_forward``   out[r] = sum over non-zero t (increasing) of x[r, t] * W[t], BLOCK_LONG
                  columns (128 with AVX-512 and AVX2, 64 with SSE and NEON) at a time held in
                  vector registers across the whole list (``simd.gather_axpy_long``): per
                  non-zero, 8 (AVX-512) or 16 vector loads of W's row and as many multiply-adds,
                  and out is stored once.
``bucket_dw``     dW[t] = sum over rows r of feature t (increasing) of x[r, t] * dz[r]
                  (the same register-blocked gather over dz's rows);
                  optionally fused with plain SGD: W[t] -= lr * dW[t] only for features
                  present in the batch (W - lr * 0 == W), without touching the others.

Exactness: every output element is a sum started at +0 with its terms added one at a
time (``simd.muladd``: fused on FMA targets, else product then sum) in a fixed order (increasing t for the forward, increasing r for dW), whatever the
number of threads or the chunking, so a run is reproducible and the compiled training
loop equals the step-by-step path bit for bit. Only zero terms are dropped, and adding
0 * w to such a sum changes nothing while w is finite.

Threads: the forward splits rows, the weight gradient splits features, each chunk
written by one thread; small problems stay serial (a parallel region with sleeping waits
costs ~44 us, see jit_base.PARALLEL_MIN_WORK).
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .simd import (BLOCK_HALF, BLOCK_LONG, BLOCK_ONE, BLOCK_WIDE, LIST_CHUNK, gather_axpy_half, gather_axpy_half_sgd,
                   gather_axpy_long, gather_axpy_masked, gather_axpy_one, gather_axpy_one_sgd, gather_axpy_wide,
                   gather_axpy_wide_sgd, list_nonzero, prefetch_row, thread_count)
from .target import TARGET

# Inputs at or below this fraction of non-zeros take the zero-skipping kernels. A term
# of the list kernels costs more than a BLAS multiply-add (they load W's rows from L2),
# but the training loop lists a batch once for both of its products and fuses the weight
# gradient with the SGD step. Augmented KMNIST batches (0.41 non-zero), one thread:
# forward + weight gradient 454 us on the lists against 582 on BLAS (784x128, BLAS
# without its SGD pass); a lone 128x784x128 product 280 against 274 us (even). Two
# threads, 784x1600: 2698 against 3442 us. Raw MNIST is 0.19 non-zero, KMNIST 0.34,
# ReLU activations ~0.5.
# On a target whose first layer is BLAS (narrow vectors, see target.py) no input takes them.
SPARSE_MAX_DENSITY = 0.45 if TARGET.first_layer == "lists" else -1.0
# Multiply-adds below which a list kernel stays serial: ~150 us of work at ~36 ps a term.
# Splitting pays once half the work saves more than the 44 us parallel region, i.e. from
# ~2.4M terms; at 2**21, MNIST's batch of 128 (2.5M) was split and ran no faster.
PARALLEL_MIN_TERMS = 1 << 22
# Parallel loops split into this many independent chunks; the runtime deals them to however
# many threads NUMBA_NUM_THREADS allows. A fixed count keeps results independent of the
# thread count (each output element is computed whole by one chunk).
MAX_CHUNKS = 32


@njit(cache=True, error_model="numpy")
def parallel_chunks(n_items, work, min_work):
    """How many parallel chunks to split n_items into: 1 (serial) below ``min_work``, or
    when Numba runs one thread (no parallel region to enter for nothing)."""
    if work < min_work or thread_count() == 1:
        return 1
    return max(1, min(MAX_CHUNKS, n_items))


@njit(cache=True, error_model="numpy")
def sparse_enough(nnz, n, d):
    """Whether a batch with ``nnz`` non-zeros out of n * d takes the zero-skipping kernels."""
    if n * d == 0:
        return True
    return nnz / (n * d) <= SPARSE_MAX_DENSITY


@njit(cache=True, error_model="numpy")
def csr_alloc(n, d):
    """Fresh list buffers for a batch of up to n rows of d features.

    Returns rp (n + 1,) int64, ci (n * d + 16,) int32, cv (n * d + 16,) float32 (16 spare
    entries for ``list_nonzero``'s full-width stores), blen (d,) int64,
    brow (d, n) int32, bval (d, n) float32.
    """
    return (np.empty(n + 1, np.int64), np.empty(n * d + LIST_CHUNK, np.int32), np.empty(n * d + LIST_CHUNK, np.float32),
            np.empty(d, np.int64), np.empty((d, n), np.int32), np.empty((d, n), np.float32))


# Features whose buckets one pass of _fill_buckets fills. The row lists are read once in all,
# a row's entries of these features at a time; the bucket lines written by a pass (64
# features x the rows having each) stay in L1. Filled in one pass over the rows, a batch's
# stores scatter over all of brow and bval (2 x 401 KB at MNIST batch 128) and nearly
# every one missed L1: one thread, Xeon (Ice Lake), filling alone, MNIST batch 128
# 85 -> 48 us, batch 512 514 -> 240 us, KMNIST batch 128 157 -> 74 us. Batches under
# BUCKET_PASS_MIN_ROWS rows fill in one pass (batch 8: as fast, without a pass's per-row cost).
BUCKET_PASS_FEATURES = 64
BUCKET_PASS_MIN_ROWS = 32


@njit(cache=True, error_model="numpy")
def _fill_buckets(rp, ci, cv, n, d, blen, brow, bval):
    # blen[:d], brow/bval[t, :blen[t]] from the row lists rp[:n + 1], ci, cv: for each feature
    # t the rows having it, in increasing row order, and their values. Unsigned flat indices:
    # with signed ones Numba adds negative-index wrap-around to each of the four accesses per
    # entry, and the loop ran 2.4x slower (KMNIST, batch 128).
    blen[:d] = 0
    passes = n >= BUCKET_PASS_MIN_ROWS
    step = BUCKET_PASS_FEATURES if passes else max(d, 1)
    # each row's first entry not yet in a bucket (one pass: rp itself, read only; no allocation)
    cursor = rp[:n].copy() if passes else rp[:n]
    cap = np.uint64(brow.shape[1])
    rows, vals = brow.reshape(brow.size), bval.reshape(bval.size)
    one = np.uint64(1)
    for t_end in range(step, d + step, step):
        for r in range(n):
            k, k_end = np.uint64(cursor[r]), np.uint64(rp[r + 1])
            while k < k_end:
                t = np.uint64(ci[k])
                if t >= t_end:
                    break
                b = np.uint64(blen[t])
                rows[t * cap + b] = r
                vals[t * cap + b] = cv[k]
                blen[t] = b + one
                k += one
            if passes:
                cursor[r] = k


@njit(cache=True, error_model="numpy")
def _list_from(x, src, t0, ci, cv, nnz):
    # the non-zeros of x[src, t0:] one at a time, appended from position nnz; the new count
    for t in range(t0, x.shape[1]):
        v = x[src, t]
        if v != 0:
            ci[nnz] = t
            cv[nnz] = v
            nnz += 1
    return nnz


def _list_row(x, src, ci, cv, nnz):
    """Append the non-zeros of x[src] to ci/cv from position nnz; returns the new count.
    (The interpreter's version; compiled code takes the overload below.)"""
    return _list_from(x, src, 0, ci, cv, nnz)


@overload(_list_row)
def _list_row_compiled(x, src, ci, cv, nnz):
    if not (isinstance(x, types.Array) and x.layout == "C" and x.dtype == types.float32):
        return _list_row  # strided or other dtypes: one entry at a time

    def vector_compress(x, src, ci, cv, nnz):  # 16 at a time, then the last d % 16
        nnz = list_nonzero(x, src, ci, cv, nnz)
        return _list_from(x, src, x.shape[1] - x.shape[1] % LIST_CHUNK, ci, cv, nnz)

    return vector_compress


@njit(cache=True, error_model="numpy")
def csr_build(x, rows, n, use_rows, rp, ci, cv, blen, brow, bval):
    """List the non-zeros of a batch; returns their count.

    The batch is x[rows[:n]] when ``use_rows`` (gathering straight from the data set,
    so the dense batch need not be written), else x[:n]. x (N, d) float32.
    Writes rp[:n + 1], ci/cv[:nnz] (row lists, features increasing) and
    blen[:d], brow/bval[t, :blen[t]] (feature buckets, rows increasing).
    """
    nnz = 0
    for r in range(n):
        rp[r] = nnz
        nnz = _list_row(x, rows[r] if use_rows else r, ci, cv, nnz)
    rp[n] = nnz
    _fill_buckets(rp, ci, cv, n, x.shape[1], blen, brow, bval)
    return nnz


@njit(cache=True, error_model="numpy")
def csr_rows(x, n, rp, ci, cv):
    """The row lists of x[:n] only (``csr_build`` without the buckets); returns their count.

    x (>= n, d) float32; writes rp[:n + 1] and ci/cv[:count], which need 16 spare entries.
    """
    nnz = 0
    for r in range(n):
        rp[r] = nnz
        nnz = _list_row(x, r, ci, cv, nnz)
    rp[n] = nnz
    return nnz


#: float32 value of each byte code: k / 255 correctly rounded (as load_dataset divides)
BYTE_VALUES = np.arange(256, dtype=np.float32) / np.float32(255)
# Rows of csr_build_bytes prefetched ahead of the one being listed.
_PREFETCH_ROWS = 3


def byte_row_length(d):
    """Bytes per row of the codes for d features: d rounded up to whole 16-byte chunks
    (``list_nonzero`` reads 16 at a time)."""
    return -(-d // LIST_CHUNK) * LIST_CHUNK


@njit(cache=True, error_model="numpy")
def encode_bytes(x, codes):
    """codes[i, :d] = k where x[i, t] == BYTE_VALUES[k]; returns the number of non-zero
    values, or -1 as soon as a row has a value that is none of them.

    x (N, d) float32; codes (N, byte_row_length(d)) uint8, its padding bytes set to 0.
    A -1 result leaves codes partly written (the caller drops it).
    """
    n, d = x.shape
    zero, one, scale, half = np.float32(0), np.float32(1), np.float32(255), np.float32(0.5)
    nnz = 0
    for i in range(n):
        mismatch = False
        for t in range(d):  # branch-free, so that it vectorises
            v = x[i, t]
            c = v if v > zero else zero  # clamped to [0, 1], NaN to 0: the conversion stays defined
            k = np.int32((c if c < one else one) * scale + half)
            codes[i, t] = k
            nnz += k != 0
            mismatch |= np.float32(k) / scale != v  # also NaN: != is true
        if mismatch:
            return -1
        for t in range(d, codes.shape[1]):
            codes[i, t] = 0
    return nnz


@njit(cache=True, error_model="numpy")
def csr_build_bytes(codes, d, rows, n, rp, ci, cv, blen, brow, bval):
    """``csr_build`` of the batch x[rows[:n]] from its byte codes (``encode_bytes``); same lists, same count.

    codes (N, byte_row_length(d)) uint8; d the number of features. Each row is listed
    16 pixels at a time (``simd.list_nonzero``) while the next rows are prefetched.
    """
    for r in range(min(_PREFETCH_ROWS, n)):
        prefetch_row(codes, rows[r])
    nnz = 0
    for r in range(n):
        if r + _PREFETCH_ROWS < n:
            prefetch_row(codes, rows[r + _PREFETCH_ROWS])
        rp[r] = nnz
        nnz = list_nonzero(codes, rows[r], ci, cv, nnz)
    rp[n] = nnz
    _fill_buckets(rp, ci, cv, n, d, blen, brow, bval)
    return nnz


@njit(cache=True, error_model="numpy", inline="always")
def _dw_row(dW, t, idx, vals, k0, k1, dz):
    # dW[t] = sum over k in [k0, k1) of vals[k] * dz[idx[k]], all columns (one feature).
    m = dz.shape[1]
    j = 0
    while m - j >= BLOCK_WIDE:
        gather_axpy_wide(dW, t, idx, vals, k0, k1, dz, j)
        j += BLOCK_WIDE
    if m - j >= BLOCK_HALF:
        gather_axpy_half(dW, t, idx, vals, k0, k1, dz, j)
        j += BLOCK_HALF
    while m - j >= BLOCK_ONE:
        gather_axpy_one(dW, t, idx, vals, k0, k1, dz, j)
        j += BLOCK_ONE
    if j < m:
        gather_axpy_masked(dW, t, idx, vals, k0, k1, dz, j, m - j)


@njit(cache=True, error_model="numpy")
def _forward_range(rp, ci, cv, W, out, r0, r1, j0, j1):
    # out[r0:r1, j0:j1] (j0 a multiple of BLOCK_LONG). Column blocks outside, rows inside: a
    # block of W (784 x 128 floats) stays in L2 while every row runs over its non-zero
    # list. One loop per block width, each with one intrinsic: a loop over all of them
    # measured 2x slower. On AVX2 the 128-column block (16 accumulators, 2 of them on the
    # stack) ran the forward 12-20% faster than two 64-column ones (haswell emulated on Zen 5,
    # batch 8 / 128), though it loads as much of W: the list is read once instead of twice.
    j = j0
    while j1 - j >= BLOCK_LONG:
        for r in range(r0, r1):
            gather_axpy_long(out, r, ci, cv, rp[r], rp[r + 1], W, j)
        j += BLOCK_LONG
    while j1 - j >= BLOCK_WIDE:  # at most once, where BLOCK_LONG > BLOCK_WIDE
        for r in range(r0, r1):
            gather_axpy_wide(out, r, ci, cv, rp[r], rp[r + 1], W, j)
        j += BLOCK_WIDE
    if j1 - j >= BLOCK_HALF:
        for r in range(r0, r1):
            gather_axpy_half(out, r, ci, cv, rp[r], rp[r + 1], W, j)
        j += BLOCK_HALF
    while j1 - j >= BLOCK_ONE:
        for r in range(r0, r1):
            gather_axpy_one(out, r, ci, cv, rp[r], rp[r + 1], W, j)
        j += BLOCK_ONE
    if j < j1:  # the last j1 - j < LANES columns (a layer of 10 or 100 units), under a lane mask
        for r in range(r0, r1):
            gather_axpy_masked(out, r, ci, cv, rp[r], rp[r + 1], W, j, j1 - j)


@njit(cache=True, error_model="numpy", parallel=True)
def _forward_par_rows(rp, ci, cv, W, out, n, chunks):
    for c in prange(chunks):
        _forward_range(rp, ci, cv, W, out, c * n // chunks, (c + 1) * n // chunks, np.int64(0), W.shape[1])


@njit(cache=True, error_model="numpy", parallel=True)
def _forward_par_columns(rp, ci, cv, W, out, n, blocks):
    # One chunk per BLOCK_LONG-column block (the last takes the remaining columns): each thread
    # streams only its own blocks of W, once, instead of all of W once per row chunk.
    m = W.shape[1]
    for c in prange(blocks):
        _forward_range(rp, ci, cv, W, out, np.int64(0), n, c * BLOCK_LONG, m if c == blocks - 1 else (c + 1) * BLOCK_LONG)


@njit(cache=True, error_model="numpy")
def csr_forward(rp, ci, cv, W, out, n, split=True):
    """out[:n] = x @ W from the row lists of x (n rows). W (d, m), out (>= n, m) float32.
    ``split``: None never splits across threads (the parallel code is then not compiled)."""
    m = W.shape[1]
    chunks = parallel_chunks(n, (rp[n] - rp[0]) * m, PARALLEL_MIN_TERMS)
    if split is None or chunks == 1:
        _forward_range(rp, ci, cv, W, out, np.int64(0), n, np.int64(0), m)
    elif m >= 2 * BLOCK_LONG:  # wide layers: split W's columns (its blocks stay in one core's L2)
        _forward_par_columns(rp, ci, cv, W, out, n, m // BLOCK_LONG)
    else:
        _forward_par_rows(rp, ci, cv, W, out, n, chunks)


@njit(cache=True, error_model="numpy")
def _dw_range(blen, brow, bval, dz, dW, W, lr, fused, t0, t1):
    # dW[t] = g_t = sum over k < blen[t] of bval[t, k] * dz[brow[t, k]] (in k order) for
    # features t0:t1, zero for absent ones. With ``fused``: W[t] -= lr * g_t instead, g_t
    # never stored (dW is scratch), absent features untouched (W - lr * 0 == W). That is
    # the rounding of sgd_update's w - lr * (g + 0 * w), so the fused first layer equals
    # backward-then-update bit for bit. Column blocks outside, features inside, one loop
    # per block width (as _forward_range): 2.2x faster at batch size 8 than one loop over
    # features dispatching on the width.
    m = dz.shape[1]
    cap = brow.shape[1]
    bf, vf = brow.reshape(brow.size), bval.reshape(bval.size)
    j = 0
    while m - j >= BLOCK_WIDE:
        for t in range(t0, t1):
            k0, k1 = t * cap, t * cap + blen[t]
            if k1 > k0:
                if fused:
                    gather_axpy_wide_sgd(W, t, bf, vf, k0, k1, dz, j, lr)
                else:
                    gather_axpy_wide(dW, t, bf, vf, k0, k1, dz, j)
        j += BLOCK_WIDE
    if m - j >= BLOCK_HALF:
        for t in range(t0, t1):
            k0, k1 = t * cap, t * cap + blen[t]
            if k1 > k0:
                if fused:
                    gather_axpy_half_sgd(W, t, bf, vf, k0, k1, dz, j, lr)
                else:
                    gather_axpy_half(dW, t, bf, vf, k0, k1, dz, j)
        j += BLOCK_HALF
    while m - j >= BLOCK_ONE:
        for t in range(t0, t1):
            k0, k1 = t * cap, t * cap + blen[t]
            if k1 > k0:
                if fused:
                    gather_axpy_one_sgd(W, t, bf, vf, k0, k1, dz, j, lr)
                else:
                    gather_axpy_one(dW, t, bf, vf, k0, k1, dz, j)
        j += BLOCK_ONE
    if j < m:
        for t in range(t0, t1):
            k0, k1 = t * cap, t * cap + blen[t]
            if k1 > k0:
                gather_axpy_masked(dW, t, bf, vf, k0, k1, dz, j, m - j)
                if fused:
                    for c in range(j, m):
                        W[t, c] = W[t, c] - lr * dW[t, c]
    if not fused:
        zero = np.float32(0)
        for t in range(t0, t1):
            if blen[t] == 0:
                for c in range(m):
                    dW[t, c] = zero


@njit(cache=True, error_model="numpy")
def _dw_listed(rp, ci, n, brow, bval, blen, dz, dW):
    # dW rows of the features present in the batch, visited in order of first appearance
    # in the row lists (feature t first appears in row brow[t, 0]) rather than by a scan
    # of all d features, whose unpredictable branch costs more than a small batch's
    # arithmetic. Each row's sum is the same whatever the order rows are visited in.
    m = dz.shape[1]
    cap = brow.shape[1]
    brow_flat, bval_flat = brow.reshape(brow.size), bval.reshape(bval.size)
    for r in range(n):
        for k in range(rp[r], rp[r + 1]):
            t = ci[k]
            e = blen[t]
            if brow[t, 0] == r and e > 1:
                _dw_row(dW, t, brow_flat, bval_flat, t * cap, t * cap + e, dz)


@njit(cache=True, error_model="numpy")
def _sgd_listed(rp, ci, cv, n, brow, blen, dz, dW, W, lr):
    # The SGD step of the rows _dw_listed wrote (see _dw_range). A feature present in
    # one row only (all of them at batch size 1) has the one-term sum muladd(v, dz[r], 0),
    # the rounded product whether fused or not, as computed here (0 + v * dz[r]), so its
    # gradient row is never stored: one pass instead of two.
    m = W.shape[1]
    zero = np.float32(0)
    for r in range(n):
        for k in range(rp[r], rp[r + 1]):
            t = ci[k]
            if brow[t, 0] == r:
                if blen[t] == 1:
                    v = cv[k]
                    for j in range(m):
                        W[t, j] = W[t, j] - lr * (zero + v * dz[r, j])
                else:
                    for j in range(m):
                        W[t, j] = W[t, j] - lr * dW[t, j]


@njit(cache=True, error_model="numpy", parallel=True)
def _dw_par(blen, brow, bval, dz, dW, W, lr, fused, chunks):
    d = blen.shape[0]
    for c in prange(chunks):
        _dw_range(blen, brow, bval, dz, dW, W, lr, fused, c * d // chunks, (c + 1) * d // chunks)


@njit(cache=True, error_model="numpy")
def bucket_dw(blen, brow, bval, dz, dW, W, lr, fused, nnz, rp, ci, cv, split=True):
    """dW = x.T @ dz from the feature buckets of x; with ``fused`` also W -= lr * dW.

    blen (d,), brow/bval (d, >= n), dz (n, m), dW and W (d, m) float32, lr float32,
    nnz = number of non-zeros (sizes the parallel split), rp/ci/cv the row lists of the
    same batch (``csr_build``). Fused: rows of dW and W of features absent from the
    batch are left untouched (dW is scratch), and a batch with few non-zeros (fewer
    than a quarter of the features) visits its features through the row lists.
    ``fused`` None is False known at compile time (the training loop's switch: then the
    fused-only code is not compiled).
    ``split``: None never splits across threads (the parallel code is then not compiled).
    """
    d = blen.shape[0]
    n = dz.shape[0]
    if fused is not None:
        if fused and 4 * nnz < d:
            if n > 1:  # one row: every feature has one term, done by _sgd_listed alone
                _dw_listed(rp, ci, n, brow, bval, blen, dz, dW)
            _sgd_listed(rp, ci, cv, n, brow, blen, dz, dW, W, lr)
            return
    update = np.bool_(False) if fused is None else np.bool_(fused)
    chunks = parallel_chunks(d, nnz * dz.shape[1], PARALLEL_MIN_TERMS)
    if split is None or chunks == 1:
        _dw_range(blen, brow, bval, dz, dW, W, lr, update, np.int64(0), d)
    else:
        _dw_par(blen, brow, bval, dz, dW, W, lr, update, chunks)
