"""Exact zero-skipping first-layer kernels over per-batch non-zero lists (Numba).

MNIST-like inputs are ~81% zeros (KMNIST ~68%). Instead of scanning the dense batch
inside every matmul, the batch's non-zeros are listed once per batch and both the
forward product and the weight gradient run over those lists. Both work on groups of
GROUP = 3 (``simd.gather_group``): rows of W (forward) and of dz (weight gradient) are
loaded once for three outputs instead of once each.

``csr_rows``      the row-group lists (``gp``, ``gi``, ``gv``): for each group of 3 batch rows,
                  the features where any of them is non-zero, increasing, and each row's value
                  there (0 where it has none): one pass of vector compresses over the rows,
                  16 features at a time, without a branch per feature.
``csr_build``     those, then the feature-group buckets (``blen``, ``brow``, ``bval``): for each
                  group of 3 neighbouring features, the rows where any of them is non-zero,
                  increasing, and their 3 values; scattered into a dense block 63 features at
                  a time (it stays in L1) and compressed 16 rows at a time.
``csr_build_bytes`` the same lists from one-byte pixel codes (``encode_bytes``): when every
                  input is k / 255 (8-bit images, as ``load_dataset`` returns them), a
                  random row is 784 bytes instead of 3136, and the next rows are prefetched.
``csr_forward``   out[r] = sum over non-zero t (increasing) of x[r, t] * W[t]: per row group,
                  BLOCK_GROUP columns of its 3 rows in registers across the group's list
                  (``simd.gather_group``); out is stored once.
``bucket_dw``     dW[t] = sum over rows r of feature t (increasing) of x[r, t] * dz[r]
                  (the same over each feature group's bucket, 3 features at a time);
                  optionally fused with plain SGD: W[t] -= lr * dW[t] only for the feature
                  groups present in the batch (W - lr * 0 == W), without touching the others.
                  A batch of up to 3 rows has no buckets: ``simd.scatter_group``.

Exactness: every output element is a sum started at +0 with its terms added one at a
time (``simd.muladd``: fused on FMA targets, else product then sum) in a fixed order
(increasing t for the forward, increasing r for dW), whatever the number of threads, the
chunking or the grouping, so a run is reproducible and the compiled training loop equals the
step-by-step path bit for bit. Only zero terms are dropped or added (a row of a group where
another row is non-zero), and adding 0 * w to such a sum changes nothing while w is finite.

Threads: the forward splits row groups, the weight gradient splits feature groups, each chunk
written by one thread; small problems stay serial (a parallel region with sleeping waits
costs ~44 us, see jit_base.PARALLEL_MIN_WORK).
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .simd import (BLOCK_GROUP, BLOCK_HALF, BLOCK_LONG, BLOCK_ONE, BLOCK_WIDE, GROUP, LIST_CHUNK, gather_axpy_half,
                   gather_axpy_half_sgd, gather_axpy_long, gather_axpy_masked, gather_axpy_one, gather_axpy_one_sgd,
                   gather_axpy_wide, gather_axpy_wide_sgd, gather_group, gather_group_sgd, gather_pair, list_group_rows,
                   list_row_group, prefetch_row, scatter_groups, scatter_groups_sgd, thread_count)
from .target import TARGET

assert GROUP == 3  # _dw_one_group spells out the scatter kernels of 1, 2 and 3 rows
_scatter1, _scatter2, _scatter3 = scatter_groups
_scatter1_sgd, _scatter2_sgd, _scatter3_sgd = scatter_groups_sgd

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
# Inputs of fewer features take BLAS however sparse: the lists pay where W's rows come from
# L2, not for a hidden layer's W of 128 x 64 (32 KB, in L1), whose ReLU output took the lists
# whenever a small batch was sparse enough. MLP.fit, MNIST 784-128-64-10, one thread, old and
# new code alternating in one process: batch 1 1.37x faster with the hidden layers on BLAS.
SPARSE_MIN_FEATURES = 256
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
    """Whether a batch with ``nnz`` non-zeros out of n * d takes the zero-skipping kernels:
    at most SPARSE_MAX_DENSITY non-zero, and at least SPARSE_MIN_FEATURES features."""
    if n * d == 0:
        return True
    if d < SPARSE_MIN_FEATURES:
        return False
    return nnz / (n * d) <= SPARSE_MAX_DENSITY


@njit(cache=True, error_model="numpy")
def csr_alloc(n, d):
    """Fresh list buffers for a batch of up to n rows of d features.

    Returns the lists of the q = ceil(n / GROUP) row groups: gp (q + 1,) int64, gi (L,) int32,
    gv (GROUP * L,) float32 with L = q * d + 16 (16 spare entries for ``list_row_group``'s
    full-width stores); and the buckets of the g = ceil(d / GROUP) feature groups: blen (g,)
    int64, brow (g, c) int32, bval (GROUP * g, c) float32, c = n rounded up to a multiple of 16
    (``list_group_rows`` stores 16 entries at a time).
    """
    q, g, cap = -(-n // GROUP), -(-d // GROUP), -(-n // LIST_CHUNK) * LIST_CHUNK
    length = q * d + LIST_CHUNK
    return (np.empty(q + 1, np.int64), np.empty(length, np.int32), np.empty(GROUP * length, np.float32),
            np.empty(g, np.int64), np.empty((g, cap), np.int32), np.empty((GROUP * g, cap), np.float32))


# Features whose buckets one pass of _fill_buckets fills (a multiple of GROUP, so that no group
# spans two passes): their values are scattered into a dense (features x rows) block that stays
# in L1 (63 x 128 float32: 32 KB at batch 128), then listed group by group.
BUCKET_PASS_FEATURES = 21 * GROUP


@njit(cache=True, error_model="numpy")
def _fill_buckets(gp, gi, gv, n, d, blen, brow, bval):
    # The buckets of the feature groups from the row-group lists gp, gi, gv of n rows: group f
    # holds features GROUP * f + s, s < GROUP; brow[f, :blen[f]] are the rows having any of
    # them, increasing, and bval[s * g + f, b] row brow[f, b]'s value of feature GROUP * f + s
    # (0 where that row lacks it; g = blen.shape[0]).
    # Each pass scatters its features' values into a zeroed dense block, then lists each
    # group 16 rows at a time without a branch per row (``list_group_rows``: a vector compress,
    # which also zeroes the block again). Appending entry by entry to the groups instead
    # branched at random on whether the row's entry in the group already existed: 1.6x slower
    # in fit. Unsigned flat indices: with signed ones Numba adds negative-index wrap-around to
    # each access (the scatter ran 1.6x slower).
    cap = brow.shape[1]
    bucket_plane = blen.shape[0] * cap
    dense = np.zeros((BUCKET_PASS_FEATURES, -(-n // LIST_CHUNK) * LIST_CHUNK + GROUP), np.float32)
    block = dense.reshape(dense.size)
    width, plane, one = np.uint64(dense.shape[1]), np.uint64(gi.shape[0]), np.uint64(1)
    groups = -(-n // GROUP)
    cursor = gp[:groups].copy()  # each row group's first entry not yet scattered
    listed = np.zeros(BUCKET_PASS_FEATURES, np.uint8)  # the pass's features with a value
    rows, vals = brow.reshape(brow.size), bval.reshape(bval.size)
    for t0 in range(0, d, BUCKET_PASS_FEATURES):
        t1 = min(d, t0 + BUCKET_PASS_FEATURES)
        first, end = np.uint64(t0), np.uint64(t1)
        for q in range(groups):
            k, k_end = np.uint64(cursor[q]), np.uint64(gp[q + 1])
            column = np.uint64(q * GROUP)
            while k < k_end:
                t = np.uint64(gi[k])
                if t >= end:
                    break
                at = (t - first) * width + column
                for g in range(GROUP):  # rows past n: 0, into the block's spare columns
                    block[at + np.uint64(g)] = gv[np.uint64(g) * plane + k]
                listed[t - first] = 1
                k += one
            cursor[q] = k
        for f in range(t0 // GROUP, (t1 + GROUP - 1) // GROUP):
            s0 = f * GROUP - t0
            pos = f * cap
            if listed[s0] | listed[s0 + 1] | listed[s0 + 2]:  # else nothing to list (small batches)
                listed[s0], listed[s0 + 1], listed[s0 + 2] = 0, 0, 0
                for r0 in range(0, n, LIST_CHUNK):
                    pos = list_group_rows(dense, s0, r0, rows, vals, bucket_plane, pos)
            blen[f] = pos - f * cap


@njit(cache=True, error_model="numpy")
def _list_group_from(x, src, count, t0, gi, gv, pos, counted):
    # the features t >= t0 where any of the rows x[src[:count]] is non-zero, appended one at a
    # time from position pos with each row's value (+0 for a zero, -0.0 included); the new pos
    plane = gi.shape[0]
    zero = np.float32(0)
    for t in range(t0, x.shape[1]):
        listed = 0
        for g in range(count):
            listed += x[src[g], t] != 0
        if listed:
            gi[pos] = t
            for g in range(GROUP):
                v = zero
                if g < count:
                    v = x[src[g], t]
                gv[g * plane + pos] = v if v != 0 else zero
            pos += 1
            counted[0] += listed
    return pos


def _list_group(x, src, count, gi, gv, pos, counted):
    """Append the union of the non-zeros of the rows x[src[:count]] (count <= GROUP) to gi/gv
    from position pos; returns the new pos and adds their non-zeros to counted[0].
    (The interpreter's version; compiled code takes the overload below.)"""
    return _list_group_from(x, src, count, 0, gi, gv, pos, counted)


@overload(_list_group)
def _list_group_compiled(x, src, count, gi, gv, pos, counted):
    if not (isinstance(x, types.Array) and x.layout == "C" and x.dtype in (types.float32, types.uint8)):
        return _list_group  # strided or other dtypes: one entry at a time

    def vector_compress(x, src, count, gi, gv, pos, counted):  # 16 at a time, then the last d % 16
        pos = list_row_group(x, src, count, gi, gv, gi.shape[0], pos, counted)
        return _list_group_from(x, src, count, x.shape[1] - x.shape[1] % LIST_CHUNK, gi, gv, pos, counted)

    return vector_compress


@njit(cache=True, error_model="numpy")
def csr_rows(x, rows, n, use_rows, gp, gi, gv):
    """The row-group lists of a batch; returns its number of non-zeros.

    The batch is x[rows[:n]] when ``use_rows`` (gathering straight from the data set, so the
    dense batch need not be written), else x[:n]. x (N, d) float32, or uint8 byte codes
    (``encode_bytes``, listed as the values k / 255; their padding is 0). Row group q holds
    rows GROUP * q .. GROUP * q + GROUP - 1 (fewer in the last); gi[gp[q]:gp[q + 1]] are the
    features t, increasing, where any of its rows is non-zero, and gv[g * L + k] (L = len(gi))
    row GROUP * q + g's value at gi[k] (+0 where it is zero). gi and gv need 16 spare entries.
    """
    src = np.empty(GROUP, np.int64)
    counted = np.zeros(1, np.int64)
    pos = 0
    for q in range(-(-n // GROUP)):
        count = min(GROUP, n - q * GROUP)
        for g in range(count):
            r = q * GROUP + g
            src[g] = rows[r] if use_rows else r
        gp[q] = pos
        pos = _list_group(x, src, count, gi, gv, pos, counted)
    gp[-(-n // GROUP)] = pos
    return counted[0]


@njit(cache=True, error_model="numpy")
def csr_build(x, rows, n, use_rows, gp, gi, gv, blen, brow, bval):
    """List the non-zeros of a batch; returns their count.

    The row-group lists gp, gi, gv (``csr_rows``) and the feature-group buckets blen, brow,
    bval (``_fill_buckets``) of x[rows[:n]] (``use_rows``) or x[:n]; buffers from ``csr_alloc``.
    """
    nnz = csr_rows(x, rows, n, use_rows, gp, gi, gv)
    if n > GROUP:  # else bucket_dw needs no buckets
        _fill_buckets(gp, gi, gv, n, x.shape[1], blen, brow, bval)
    return nnz


#: float32 value of each byte code: k / 255 correctly rounded (as load_dataset divides)
BYTE_VALUES = np.arange(256, dtype=np.float32) / np.float32(255)
# Row groups of csr_build_bytes prefetched ahead of the one being listed.
_PREFETCH_GROUPS = 1


def byte_row_length(d):
    """Bytes per row of the codes for d features: d rounded up to whole 16-byte chunks
    (``list_row_group`` reads 16 at a time)."""
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
def csr_build_bytes(codes, d, rows, n, gp, gi, gv, blen, brow, bval):
    """``csr_build`` of the batch x[rows[:n]] from its byte codes (``encode_bytes``); same lists, same count.

    codes (N, byte_row_length(d)) uint8; d the number of features. Each row group is listed
    16 pixels at a time (``simd.list_row_group``) while the next group's rows are prefetched.
    """
    for r in range(min(GROUP * _PREFETCH_GROUPS, n)):
        prefetch_row(codes, rows[r])
    src = np.empty(GROUP, np.int64)
    counted = np.zeros(1, np.int64)
    pos = 0
    groups = -(-n // GROUP)
    for q in range(groups):
        for r in range(GROUP * (q + _PREFETCH_GROUPS), min(n, GROUP * (q + _PREFETCH_GROUPS + 1))):
            prefetch_row(codes, rows[r])
        count = min(GROUP, n - q * GROUP)
        for g in range(count):
            src[g] = rows[q * GROUP + g]
        gp[q] = pos
        pos = list_row_group(codes, src, count, gi, gv, gi.shape[0], pos, counted)
    gp[groups] = pos
    if n > GROUP:  # else bucket_dw needs no buckets
        _fill_buckets(gp, gi, gv, n, d, blen, brow, bval)
    return counted[0]


@njit(cache=True, error_model="numpy")
def _forward_row(gi, gv, W, out, r, g, k0, k1, j, j1):
    # out[r, j:j1] from row g of its row group's list (entries k0:k1; a zero value adds
    # nothing): the widest blocks first, one row at a time (the columns past the last
    # BLOCK_GROUP block, or a last group of fewer than GROUP rows).
    vals = gv[g * gi.shape[0]:]
    while j1 - j >= BLOCK_LONG:
        gather_axpy_long(out, r, gi, vals, k0, k1, W, j)
        j += BLOCK_LONG
    while j1 - j >= BLOCK_WIDE:
        gather_axpy_wide(out, r, gi, vals, k0, k1, W, j)
        j += BLOCK_WIDE
    if j1 - j >= BLOCK_HALF:
        gather_axpy_half(out, r, gi, vals, k0, k1, W, j)
        j += BLOCK_HALF
    while j1 - j >= BLOCK_ONE:
        gather_axpy_one(out, r, gi, vals, k0, k1, W, j)
        j += BLOCK_ONE
    if j < j1:  # the last j1 - j < LANES columns (a layer of 10 or 100 units), under a lane mask
        gather_axpy_masked(out, r, gi, vals, k0, k1, W, j, j1 - j)


@njit(cache=True, error_model="numpy")
def _forward_range(gp, gi, gv, W, out, n, q0, q1, j0, j1):
    # out[rows of row groups q0:q1 (< n), j0:j1] (j0 a multiple of BLOCK_GROUP). Column blocks
    # outside, row groups inside: a block of W stays in L2 while every group runs over its
    # list, its GROUP rows sharing each load of a row of W (``gather_group``).
    # A last group of two rows takes ``gather_pair``; of one, ``_forward_row``.
    plane = gi.shape[0]
    whole = min(q1, n // GROUP)  # row groups of GROUP rows
    pair = q1 - 1 if q1 > whole and n - (q1 - 1) * GROUP == 2 else -1
    j = j0
    while j1 - j >= BLOCK_GROUP:
        for q in range(q0, whole):
            gather_group(out, q * GROUP, gi, gv, plane, gp[q], gp[q + 1], W, j)
        if pair >= 0:
            gather_pair(out, pair * GROUP, gi, gv, plane, gp[pair], gp[pair + 1], W, j)
        j += BLOCK_GROUP
    for q in range(q0, q1):
        first = j if q < whole or q == pair else j0
        if first < j1:
            for g in range(min(GROUP, n - q * GROUP)):
                _forward_row(gi, gv, W, out, q * GROUP + g, g, gp[q], gp[q + 1], first, j1)


@njit(cache=True, error_model="numpy", parallel=True)
def _forward_par_rows(gp, gi, gv, W, out, n, chunks):
    groups = -(-n // GROUP)
    for c in prange(chunks):
        _forward_range(gp, gi, gv, W, out, n, c * groups // chunks, (c + 1) * groups // chunks, np.int64(0),
                       W.shape[1])


@njit(cache=True, error_model="numpy", parallel=True)
def _forward_par_columns(gp, gi, gv, W, out, n, blocks):
    # One chunk per BLOCK_GROUP-column block (the last takes the remaining columns): each thread
    # streams only its own blocks of W, once, instead of all of W once per row chunk.
    m = W.shape[1]
    groups = -(-n // GROUP)
    for c in prange(blocks):
        _forward_range(gp, gi, gv, W, out, n, np.int64(0), groups, c * BLOCK_GROUP,
                       m if c == blocks - 1 else (c + 1) * BLOCK_GROUP)


@njit(cache=True, error_model="numpy")
def csr_forward(gp, gi, gv, W, out, n, split=True):
    """out[:n] = x @ W from the row-group lists of x (n rows, ``csr_rows``). W (d, m), out (>= n, m)
    float32. ``split``: None never splits across threads (the parallel code is then not compiled)."""
    m = W.shape[1]
    groups = -(-n // GROUP)
    chunks = parallel_chunks(groups, (gp[groups] - gp[0]) * m, PARALLEL_MIN_TERMS)
    if split is None or chunks == 1:
        _forward_range(gp, gi, gv, W, out, n, np.int64(0), groups, np.int64(0), m)
    elif m >= 2 * BLOCK_GROUP:  # wide layers: split W's columns (its blocks stay in one core's L2)
        _forward_par_columns(gp, gi, gv, W, out, n, m // BLOCK_GROUP)
    else:
        _forward_par_rows(gp, gi, gv, W, out, n, chunks)


@njit(cache=True, error_model="numpy", inline="always")
def _dw_feature(dW, W, t, idx, vals, k0, k1, dz, j, lr, fused):
    # Columns j: of feature t's row: dW[t] = g_t = sum over k in [k0, k1) of vals[k] * dz[idx[k]]
    # or, ``fused``, W[t] -= lr * g_t (g_t stored in dW only for a masked column tail). The
    # widest blocks first.
    m = dz.shape[1]
    out = W if fused else dW
    while m - j >= BLOCK_WIDE:
        if fused:
            gather_axpy_wide_sgd(out, t, idx, vals, k0, k1, dz, j, lr)
        else:
            gather_axpy_wide(out, t, idx, vals, k0, k1, dz, j)
        j += BLOCK_WIDE
    if m - j >= BLOCK_HALF:
        if fused:
            gather_axpy_half_sgd(out, t, idx, vals, k0, k1, dz, j, lr)
        else:
            gather_axpy_half(out, t, idx, vals, k0, k1, dz, j)
        j += BLOCK_HALF
    while m - j >= BLOCK_ONE:
        if fused:
            gather_axpy_one_sgd(out, t, idx, vals, k0, k1, dz, j, lr)
        else:
            gather_axpy_one(out, t, idx, vals, k0, k1, dz, j)
        j += BLOCK_ONE
    if j < m:
        gather_axpy_masked(dW, t, idx, vals, k0, k1, dz, j, m - j)
        if fused:
            for c in range(j, m):
                W[t, c] = W[t, c] - lr * dW[t, c]


@njit(cache=True, error_model="numpy", inline="always")
def _dw_block(blen, bf, vf, cap, dz, dW, W, lr, fused, f, j):
    # Feature group f (see _fill_buckets), columns j:j + BLOCK_GROUP: dW[t] = g_t, or ``fused``
    # W[t] -= lr * g_t, for its three features t, g_t = sum over the group's rows r
    # (increasing) of x[r, t] * dz[r], sharing each load of dz[r] (``gather_group``). A row
    # that lacks feature t adds 0 * dz[r] to g_t, which changes no bit of a sum started at +0
    # while dz is finite: g_t is the sum over t's own rows.
    # bf, vf: brow and bval flattened, cap = brow.shape[1].
    plane = blen.shape[0] * cap
    k0 = f * cap
    if fused:
        gather_group_sgd(W, f * GROUP, bf, vf, plane, k0, k0 + blen[f], dz, j, lr)
    else:
        gather_group(dW, f * GROUP, bf, vf, plane, k0, k0 + blen[f], dz, j)


@njit(cache=True, error_model="numpy")
def _dw_tail(blen, bf, vf, cap, dz, dW, W, lr, fused, f, j):
    # The same for columns j: of each feature of group f that exists (t < d = dW.shape[0]),
    # one feature at a time: the columns past the last whole block, or a last group that
    # extends past d.
    d = dW.shape[0]
    plane = blen.shape[0] * cap
    k0 = f * cap
    for t in range(f * GROUP, min(d, f * GROUP + GROUP)):
        _dw_feature(dW, W, t, bf, vf[(t - f * GROUP) * plane:], k0, k0 + blen[f], dz, j, lr, fused)


@njit(cache=True, error_model="numpy")
def _dw_range(blen, brow, bval, dz, dW, W, lr, fused, f0, f1):
    # dW[t] = g_t for the features of groups f0:f1 (zero for features no batch row has), or,
    # ``fused``, W[t] -= lr * g_t instead, g_t never stored (dW is scratch) and groups absent
    # from the batch untouched (W - lr * 0 == W). That is the rounding of sgd_update's
    # w - lr * (g + 0 * w), so the fused first layer equals backward-then-update bit for bit.
    # Column blocks outside, groups inside (as _forward_range): a call per group that did its
    # blocks and tail ran MNIST batch 128 40% slower.
    d, m = dW.shape[0], dz.shape[1]
    cap = brow.shape[1]
    bf, vf = brow.reshape(brow.size), bval.reshape(bval.size)
    whole = min(f1, d // GROUP)  # groups past it extend past d
    j = 0
    while m - j >= BLOCK_GROUP:
        for f in range(f0, whole):
            if blen[f] > 0:
                _dw_block(blen, bf, vf, cap, dz, dW, W, lr, fused, f, j)
        j += BLOCK_GROUP
    zero = np.float32(0)
    for f in range(f0, f1):
        if blen[f] > 0:
            first = j if f < whole else 0
            if first < m:
                _dw_tail(blen, bf, vf, cap, dz, dW, W, lr, fused, f, first)
        elif not fused:
            for t in range(f * GROUP, min(d, f * GROUP + GROUP)):
                for c in range(m):
                    dW[t, c] = zero


@njit(cache=True, error_model="numpy")
def _dw_one_group(gp, gi, gv, n, dz, dW, W, lr, fused):
    # dW = x.T @ dz (or, ``fused``, W[t] -= lr * dW[t] for the features t present) for a batch
    # of n <= GROUP rows, without buckets: its one row group lists each feature once, and
    # dW[t] = sum over its rows (increasing) of x[r, t] * dz[r], started at +0, the rows of
    # dz held in registers (``scatter_group``): the buckets' sums, bit for bit.
    d, m = dW.shape
    plane = gi.shape[0]
    k0, k1 = gp[0], gp[1]
    zero = np.float32(0)
    if not fused:  # the rows of the features absent: those between the listed ones (increasing)
        absent = 0
        for k in range(k0, k1 + 1):
            end = gi[k] if k < k1 else d
            for t in range(absent, end):
                for c in range(m):
                    dW[t, c] = zero
            absent = end + 1
    j = 0
    while m - j >= BLOCK_GROUP:
        if fused:
            if n == 3:
                _scatter3_sgd(W, 0, gi, gv, plane, k0, k1, dz, j, lr)
            elif n == 2:
                _scatter2_sgd(W, 0, gi, gv, plane, k0, k1, dz, j, lr)
            else:
                _scatter1_sgd(W, 0, gi, gv, plane, k0, k1, dz, j, lr)
        elif n == 3:
            _scatter3(dW, 0, gi, gv, plane, k0, k1, dz, j)
        elif n == 2:
            _scatter2(dW, 0, gi, gv, plane, k0, k1, dz, j)
        else:
            _scatter1(dW, 0, gi, gv, plane, k0, k1, dz, j)
        j += BLOCK_GROUP
    if j < m:  # the columns past the last block (a layer narrower than BLOCK_GROUP), feature by feature
        rows, vals = np.arange(GROUP).astype(np.int32), np.empty(GROUP, np.float32)
        for k in range(k0, k1):
            for g in range(n):
                vals[g] = gv[g * plane + k]
            _dw_feature(dW, W, gi[k], rows, vals, 0, n, dz, j, lr, fused)


@njit(cache=True, error_model="numpy", parallel=True)
def _dw_par(blen, brow, bval, dz, dW, W, lr, fused, chunks):
    g = blen.shape[0]
    for c in prange(chunks):
        _dw_range(blen, brow, bval, dz, dW, W, lr, fused, c * g // chunks, (c + 1) * g // chunks)


@njit(cache=True, error_model="numpy")
def bucket_dw(blen, brow, bval, dz, dW, W, lr, fused, nnz, gp, gi, gv, split=True):
    """dW = x.T @ dz from the feature-group buckets of x; with ``fused`` also W -= lr * dW.

    blen (g,), brow (g, >= n), bval (GROUP * g, >= n) (``csr_alloc``), dz (n, m), dW and W
    (d, m) float32, lr float32, nnz = number of non-zeros (sizes the parallel split),
    gp/gi/gv the row-group lists of the same batch (``csr_build``). Fused: rows of W of groups
    absent from the batch are left untouched (dW is scratch). A batch of up to GROUP rows has
    no buckets (``csr_build`` leaves them unfilled): it runs on gp/gi/gv (``_dw_one_group``).
    ``fused`` None is False known at compile time (the training loop's switch: then the
    fused-only code is not compiled).
    ``split``: None never splits across threads (the parallel code is then not compiled).
    """
    n = dz.shape[0]
    update = np.bool_(False) if fused is None else np.bool_(fused)
    if n <= GROUP:
        if n > 0:
            _dw_one_group(gp, gi, gv, n, dz, dW, W, lr, update)
        return
    g = blen.shape[0]
    chunks = parallel_chunks(g, nnz * dz.shape[1], PARALLEL_MIN_TERMS)
    if split is None or chunks == 1:
        _dw_range(blen, brow, bval, dz, dW, W, lr, update, np.int64(0), g)
    else:
        _dw_par(blen, brow, bval, dz, dW, W, lr, update, chunks)
