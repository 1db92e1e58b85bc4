"""Kernel contract tests: every Numba kernel equals its NumPy twin, and gradients are right.

Tolerances (float32 kernels; the backends differ only in summation order and libm):
  matmul-like results       rtol 1e-5, atol 1e-5 * scale of the operands
  elementwise kernels       rtol 2e-6, atol 1e-6 (sigmoid/tanh: libm ulps)
  loss values               rtol 1e-6 (float64 accumulation of float32 terms)
  dropout masks             exactly equal (same counter-based generator)
  finite differences        float64 NumPy kernels, central differences, rel. error < 1e-6
"""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from fastnn.backends import get_backend, rng, spec as S, stepwise
from fastnn.backends import numba_jit as nb
from fastnn.backends import numpy_ref as npr
from fastnn.backends import simd
from gradcheck import numeric

ACTS = [S.ACT_NONE, S.ACT_RELU, S.ACT_SIGMOID, S.ACT_TANH]
# (n, d_in, d_out): batch size 1, odd sizes, a row count that is not a multiple of anything.
SHAPES = [(1, 7, 3), (5, 13, 9), (33, 50, 17), (70, 31, 129)]
CONTRACT = ["matmul", "dense_forward", "dense_backward", "activation_forward", "activation_backward",
            "softmax_nll", "softmax_nll_weighted", "log_softmax", "dropout_forward", "dropout_backward", "batchnorm_forward_train",
            "batchnorm_forward_eval", "batchnorm_backward", "sgd_update", "rmsprop_update", "adam_update",
            "train_steps", "forward", "make_workspace"]


def data(n, d, seed=0, sparsity=0.0, zero_rows=()):
    """float32 (n, d) standard normal data with a fraction of zeros and some all-zero rows."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, d)).astype(np.float32)
    if sparsity:
        x[r.random((n, d)) < sparsity] = 0
    for i in zero_rows:
        if i < n:
            x[i] = 0
    return x


def close(a, b, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- contract


def test_registry_and_same_signatures():
    assert get_backend() is nb and get_backend("numpy") is npr
    with pytest.raises(ValueError, match="backend must be one of"):
        get_backend("torch")
    for name in CONTRACT:
        f_np, f_nb = getattr(npr, name), getattr(nb, name)
        py = getattr(f_nb, "py_func", f_nb)
        assert list(inspect.signature(f_np).parameters) == list(inspect.signature(py).parameters), name


def test_rng_compiled_matches_python():
    idx = np.arange(5000, dtype=np.uint64)
    for seed, stream in [(0, 0), (7, 3 * 64 + 2), (2**40 + 5, 12345)]:
        key = rng.key(seed, stream)
        assert nb.rng_key(seed, stream) == key
        expected = rng.uniform(key, idx)
        got = np.array([nb.rng_uniform.py_func(np.uint64(key), int(i)) for i in idx[:50]])
        np.testing.assert_array_equal(got, expected[:50])
        mask = np.zeros((50, 100), np.float32)
        nb.dropout_forward(np.ones((50, 100), np.float32), 0.0, seed, stream, np.zeros_like(mask), mask)
        assert (mask == 1).all()


# ------------------------------------------------------------------------------ matmul


@pytest.mark.parametrize("n,k,m", SHAPES + [(128, 784, 128)])
@pytest.mark.parametrize("sparsity", [0.0, 0.8])
def test_matmul_variants(n, k, m, sparsity):
    a = data(n, k, 1, sparsity, zero_rows=(0, n - 1))
    b = data(k, m, 2)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-5 * np.sqrt(k)
    for f in (nb.matmul, nb.matmul_lists, nb.matmul_blas, nb.matmul_blocked, nb.matmul_sparse_rows, npr.matmul):
        out = np.full((n, m), np.nan, np.float32)
        f(a, b, out)
        close(out, ref, 1e-5, tol)
        assert (out[0] == 0).all()
    dz = data(n, m, 3)
    for f in (nb.matmul_xt_sparse, nb.matmul_xt_lists):
        dW = np.full((k, m), np.nan, np.float32)
        f(a, dz, dW)
        close(dW, a.T.astype(np.float64) @ dz, 1e-5, tol)


def test_sparse_kernels_are_exact_sequential_sums():
    """Zero skipping drops only zero terms: equal bits to the dense k-ordered loop on the same data."""
    a = data(9, 40, 4, 0.7, zero_rows=(3,))
    b = data(40, 33, 5)
    out = np.zeros((9, 33), np.float32)
    nb.matmul_sparse_rows(a, b, out)
    ref = np.zeros((9, 33), np.float32)
    for k in range(40):
        ref += a[:, k:k + 1] * b[k]  # one float32 term at a time, in k order
    np.testing.assert_array_equal(out, ref)
    dz = data(9, 33, 6)
    dW = np.zeros((40, 33), np.float32)
    nb.matmul_xt_sparse(a, dz, dW)
    ref = np.zeros((40, 33), np.float32)
    for r in range(9):
        ref += a[r][:, None] * dz[r]
    np.testing.assert_array_equal(dW, ref)


@njit
def _muladd_chain(out, r, idx, vals, k0, k1, M, j, width):
    """out[r, j:j+width] = the scalar k-ordered chain of simd.muladd from +0, column by column."""
    for c in range(j, j + width):
        s = np.float32(0)
        for k in range(k0, k1):
            s = simd.muladd(vals[k], M[idx[k], c], s)
        out[r, c] = s


GATHER_BLOCKS = [("long", False)] + [(b, s) for s in (False, True) for b in ("wide", "half", "one")] + [
    ("masked", False)]


@pytest.mark.parametrize("block,sgd", GATHER_BLOCKS,
                         ids=lambda v: {False: "sum", True: "sgd"}.get(v, v) if isinstance(v, bool) else v)
def test_gather_axpy_is_the_muladd_chain(block, sgd):
    """The vector intrinsics equal the scalar k-ordered muladd chain bit for bit (and the float64
    sum to rounding); the SGD variants apply w - lr * sum with that rounding. The first-layer
    kernels' exactness rests on this, on every target (fused on FMA CPUs, else not); ``long``
    (the forward's block) keeps some of its sums in stack slots on AVX2, with the same bits;
    ``masked`` sums the first 1 .. LANES - 1 columns, the rest of its vector left alone."""
    for count in range(1, simd.LANES) if block == "masked" else [None]:
        _check_gather_block(simd, block, sgd, count)


def _check_gather_block(simd, block, sgd, count):
    width = count or getattr(simd, f"BLOCK_{block.upper()}")
    m, j = width + 21, 5  # an unaligned column offset, columns on both sides left alone
    r = np.random.default_rng(width)
    M = data(50, m, 13)
    idx = r.integers(0, 50, 300).astype(np.int32)  # repeats, any order
    vals = data(1, 300, 14)[0]
    kernel = getattr(simd, f"gather_axpy_{block}" + ("_sgd" if sgd else ""))
    lr = np.float32(0.37)
    for k0, k1 in [(0, 300), (17, 18), (40, 40), (5, 261)]:
        start = data(3, m, 15)
        out, ref = start.copy(), np.full((3, m), np.nan, np.float32)
        _call_gather(kernel, out, 2, idx, vals, k0, k1, M, j, *((lr,) if sgd else (count,) if count else ()))
        _muladd_chain(ref, 2, idx, vals, k0, k1, M, j, width)
        cols = slice(j, j + width)
        expected = start[2, cols] - lr * ref[2, cols] if sgd else ref[2, cols]
        np.testing.assert_array_equal(out[2, cols], expected)
        np.testing.assert_array_equal(out[:2], start[:2])
        np.testing.assert_array_equal(out[2, :j], start[2, :j])
        np.testing.assert_array_equal(out[2, j + width:], start[2, j + width:])
        exact = vals[k0:k1].astype(np.float64) @ M[idx[k0:k1], cols].astype(np.float64)
        close(ref[2, cols], exact, 1e-5, 1e-4)
    if count:  # the columns at the very end of M and of out: the masked lanes lie past both arrays
        M, out, ref = M[:, -count:].copy(), np.zeros((3, count), np.float32), np.zeros((3, count), np.float32)
        _call_gather(kernel, out, 2, idx, vals, 0, 300, M, 0, count)
        _muladd_chain(ref, 2, idx, vals, 0, 300, M, 0, count)
        np.testing.assert_array_equal(out, ref)


@njit
def _chain_product(a, b):
    """a @ b as each element's k-ordered chain of simd.muladd from +0 (float32)."""
    n, k = a.shape
    out = np.zeros((n, b.shape[1]), np.float32)
    for r in range(n):
        for c in range(b.shape[1]):
            s = np.float32(0)
            for t in range(k):
                s = simd.muladd(a[r, t], b[t, c], s)
            out[r, c] = s
    return out


# (n, k, m) between OWN_MIN_MACS and SPLIT_MIN_MACS with whole BLOCK_HALF column blocks on
# every target: a hidden layer at batch 128, a row count that leaves every remainder of
# DENSE_ROWS, a wide output, few terms
OWN_SHAPES = [(128, 128, 64), (131, 128, 64), (133, 64, 128), (40, 256, 128), (512, 10, 256)]


@pytest.mark.parametrize("shape", OWN_SHAPES, ids=str)
def test_small_dense_products_are_the_muladd_chain(shape):
    """x @ W, x.T @ dz and dz @ W.T of a hidden layer's size run on simd.dense_rows (not BLAS):
    each element the k-ordered muladd chain from +0, on every target, whatever the rows left
    over after the groups of DENSE_ROWS."""
    from fastnn.backends import jit_gemm

    n, k, m = shape
    x, W, dz = data(n, k, 1, 0.5), data(k, m, 2), data(n, m, 3)
    for form, rows, width in ((0, n, m), (1, k, m), (2, n, k)):
        assert jit_gemm._own_kernel(form, rows, width, n * k * m) == (width % simd.BLOCK_HALF == 0)
    out, dW, dx = np.empty((n, m), np.float32), np.empty((k, m), np.float32), np.empty((n, k), np.float32)
    nb.gemm_nn(x, W, out)
    nb.gemm_tn(x, dz, dW)
    nb.gemm_nt(dz, W, dx)
    np.testing.assert_array_equal(out, _chain_product(x, W))
    np.testing.assert_array_equal(dW, _chain_product(np.ascontiguousarray(x.T), dz))
    if k % simd.BLOCK_HALF == 0:
        np.testing.assert_array_equal(dx, _chain_product(dz, np.ascontiguousarray(W.T)))
    close(out, x.astype(np.float64) @ W, 1e-5, 1e-5 * np.sqrt(k))


def test_muladd_is_fused_exactly_where_the_target_has_fma():
    """muladd's rounding is the target's: one rounding with FMA, two without (never libm's fmaf)."""
    from fastnn.backends.target import TARGET

    a = b = np.float32(1 + 2.0 ** -12)
    c = np.float32(-(1 + 2.0 ** -11))
    got = njit(lambda a, b, c: simd.muladd(a, b, c))(a, b, c)
    fused = np.float32(float(a) * float(b) + float(c))  # exact in float64: 2**-24
    unfused = np.float32(a * b) + c  # the product 1 + 2**-11 + 2**-24 rounds to 1 + 2**-11: 0
    assert fused != unfused
    assert got == (fused if TARGET.fma else unfused)


_GATHER_CALLERS = {}


def _call_gather(kernel, *args):
    if kernel not in _GATHER_CALLERS:
        _GATHER_CALLERS[kernel] = njit(lambda *a: kernel(*a))
    _GATHER_CALLERS[kernel](*args)


def _byte_images(n, d, seed, sparsity=0.7):
    r = np.random.default_rng(seed)
    k = r.integers(1, 256, (n, d)).astype(np.uint8)
    k[r.random((n, d)) < sparsity] = 0
    k[::5] = 0  # all-zero rows
    return k, (k / np.float32(255)).astype(np.float32)  # the scaling load_dataset uses


@pytest.mark.parametrize("d", [784, 13, 8, 1])
def test_encode_bytes_finds_the_codes_or_refuses(d):
    from fastnn.backends import numba_sparse as sp

    k, x = _byte_images(40, d, d)
    x[3, 0] = -0.0
    codes = np.full((40, sp.byte_row_length(d)), 7, np.uint8)
    k[3, 0] = 0
    assert sp.encode_bytes(x, codes) == np.count_nonzero(k)
    np.testing.assert_array_equal(codes[:, :d], k)
    assert (codes[:, d:] == 0).all() and codes.shape[1] % 8 == 0
    np.testing.assert_array_equal(sp.BYTE_VALUES[codes[:, :d]], x)
    for bad in (0.5, 1.5, -0.25, np.nan, np.inf, np.float32(3 / 255) + np.float32(1e-6)):
        y = x.copy()
        y[39, d - 1] = bad
        assert sp.encode_bytes(y, codes) == -1, bad
        assert nb.prepare_inputs(y) is None
    prepared = nb.prepare_inputs(x)
    np.testing.assert_array_equal(prepared.codes[:, :d], k)
    assert prepared.density == pytest.approx(np.count_nonzero(k) / k.size)


@pytest.mark.parametrize("n,d", [(1, 784), (7, 13), (64, 784), (50, 17)])
def test_csr_build_bytes_lists_exactly_what_csr_build_lists(n, d):
    from fastnn.backends import numba_sparse as sp

    _, x = _byte_images(300, d, n + d)
    codes = nb.prepare_inputs(x).codes
    rows = np.random.default_rng(n).choice(300, n).astype(np.int64)  # random order, repeats allowed
    a, b = sp.csr_alloc(n, d), sp.csr_alloc(n, d)
    for lists in (a, b):
        for buf in lists:
            buf[...] = 99
    nnz = sp.csr_build(x, rows, n, True, *a)
    assert sp.csr_build_bytes(codes, d, rows, n, *b) == nnz
    gp, gi, gv, blen, brow, bval = a
    groups = -(-n // sp.GROUP)
    np.testing.assert_array_equal(b[0][:groups + 1], gp[:groups + 1])
    listed, plane = gp[groups], len(gi)
    np.testing.assert_array_equal(b[1][:listed], gi[:listed])
    for g in range(sp.GROUP):
        np.testing.assert_array_equal(b[2][g * plane:g * plane + listed], gv[g * plane:g * plane + listed])
    np.testing.assert_array_equal(b[3], blen)
    for f in range(len(blen)):
        np.testing.assert_array_equal(b[4][f, :blen[f]], brow[f, :blen[f]])
        np.testing.assert_array_equal(b[5][f::len(blen), :blen[f]], bval[f::len(blen), :blen[f]])
    assert nnz == np.count_nonzero(x[rows])


@pytest.mark.parametrize("row_length", [16, 48, 784 + 16 - 784 % 16])
@pytest.mark.parametrize("count", [1, 2, 3])
def test_list_row_group_compresses_the_union_of_rows_of_codes(row_length, count):
    """The vector compress lists the pixels where any of a group's rows is non-zero, in
    order, each row's value with the bits of BYTE_VALUES (0 where it is zero), appends after
    ``pos``, counts the non-zeros, and writes nothing beyond the 16 spare entries of each plane."""
    from fastnn.backends import numba_sparse as sp

    list_group = njit(lambda codes, src, count, ci, cv, plane, pos, counted:
                      simd.list_row_group(codes, src, count, ci, cv, plane, pos, counted))
    r = np.random.default_rng(row_length + count)
    codes = r.integers(0, 256, (6, row_length)).astype(np.uint8)
    codes[r.random(codes.shape) < 0.6] = 0
    codes[1] = 0  # nothing to list
    codes[2] = 255  # every pixel
    codes[3, :], codes[3, 0], codes[3, -1] = 0, 1, 254  # the first and the last pixel
    for src in ([0, 1, 2], [1, 3, 5], [4, 4, 1], [2, 0, 0], [1, 1, 1]):
        src = np.array(src, np.int64)
        for pos in (0, 5):
            plane = pos + row_length + 40
            ci, cv = np.full(plane, -7, np.int32), np.full(sp.GROUP * plane, -7.0, np.float32)
            counted = np.array([3], np.int64)
            end = list_group(codes, src, count, ci, cv, plane, pos, counted)
            rows = codes[src[:count]]
            t = np.flatnonzero(rows.any(0))
            assert end == pos + len(t) and counted[0] == 3 + np.count_nonzero(rows)
            np.testing.assert_array_equal(ci[pos:end], t)
            for g in range(sp.GROUP):
                want = sp.BYTE_VALUES[rows[g, t]] if g < count else np.zeros(len(t), np.float32)
                got = cv[g * plane:(g + 1) * plane]
                np.testing.assert_array_equal(got[pos:end].view(np.int32), want.view(np.int32))
                assert (got[:pos] == -7).all() and (got[end + 16:] == -7).all()
            assert (ci[:pos] == -7).all() and (ci[end + 16:] == -7).all()


def test_list_row_group_gives_every_code_the_bits_of_byte_values():
    """All 255 non-zero codes, listed by the vector compress, carry the float32 k / 255 that
    load_dataset's division gives. (Tried: k * (1 / 255) in float64, the same bits for every
    code, listed MNIST batch 128 20% slower on Ice Lake than the 16-lane division.)"""
    from fastnn.backends import numba_sparse as sp

    list_group = njit(lambda codes, src, count, ci, cv, plane, pos, counted:
                      simd.list_row_group(codes, src, count, ci, cv, plane, pos, counted))
    codes = np.arange(256, dtype=np.uint8)[None, :]
    ci, cv = np.zeros(256 + 16, np.int32), np.zeros(sp.GROUP * (256 + 16), np.float32)
    assert list_group(codes, np.zeros(3, np.int64), 1, ci, cv, 256 + 16, 0, np.zeros(1, np.int64)) == 255
    expected = np.arange(1, 256, dtype=np.float32) / np.float32(255)
    np.testing.assert_array_equal(ci[:255], np.arange(1, 256))
    np.testing.assert_array_equal(cv[:255].view(np.int32), expected.view(np.int32))
    np.testing.assert_array_equal(sp.BYTE_VALUES[1:].view(np.int32), expected.view(np.int32))


@pytest.mark.parametrize("d", [37, 784, 128, 5])
def test_csr_build_lists_float_rows_in_order(d):
    """csr_build (vector compress for C-contiguous float32 rows, one by one otherwise) lists,
    for each group of GROUP rows, exactly the features where one of them has x != 0, NaN and
    inf included, -0.0 and +0.0 not (0 stored for the rows that have none); and the buckets
    of each group of GROUP features (filled in passes of BUCKET_PASS_FEATURES features)."""
    from fastnn.backends import numba_sparse as sp

    n_rows = 66  # rows past a multiple of 16 (the listing's vector width)
    x = data(n_rows, d, d, 0.6, zero_rows=(7,))
    x[2, d - 1], x[3, 0], x[4, d // 2], x[5, 1 % d] = np.nan, -0.0, np.inf, -1e-38
    # the second is strided (the one-by-one path), the third below the passes' row count
    for batch, n in ((x, n_rows), (x[::2], n_rows // 2), (x[:12], 12)):
        lists = sp.csr_alloc(n, d)
        gp, gi, gv, blen, brow, bval = lists
        nnz = sp.csr_build(batch, np.arange(n), n, False, *lists)
        assert nnz == np.count_nonzero(batch != 0)
        plane = len(gi)
        assert len(gp) == -(-n // sp.GROUP) + 1
        for q in range(len(gp) - 1):  # the features where any row of group q is non-zero, each row's values
            rows = batch[q * sp.GROUP:(q + 1) * sp.GROUP]
            t = np.flatnonzero((rows != 0).any(0))
            np.testing.assert_array_equal(gi[gp[q]:gp[q + 1]], t)
            for g in range(sp.GROUP):
                value = np.where(rows[g, t] != 0, rows[g, t], np.float32(0)) if g < len(rows) else 0 * t
                got = gv[g * plane + gp[q]:g * plane + gp[q + 1]]
                np.testing.assert_array_equal(got.view(np.int32), value.astype(np.float32).view(np.int32))
        assert len(blen) == -(-d // sp.GROUP)
        for f in range(len(blen)):  # the rows having any feature of group f, each feature's values
            features = slice(f * sp.GROUP, (f + 1) * sp.GROUP)
            r = np.flatnonzero((batch[:, features] != 0).any(1))
            np.testing.assert_array_equal(brow[f, :blen[f]], r)
            for s, t in enumerate(range(f * sp.GROUP, min(d, (f + 1) * sp.GROUP))):
                value = np.where(batch[r, t] != 0, batch[r, t], np.float32(0))  # -0.0 is not listed
                np.testing.assert_array_equal(bval[s * len(blen) + f, :blen[f]].view(np.int32), value.view(np.int32))
            for s in range(min(d, (f + 1) * sp.GROUP) - f * sp.GROUP, sp.GROUP):  # past the last feature: 0
                assert not bval[s * len(blen) + f, :blen[f]].any()
        # the same lists without the buckets, in buffers sized to the non-zeros
        only = np.empty(len(gp), np.int64), np.empty(nnz + 16, np.int32), np.empty(sp.GROUP * (nnz + 16), np.float32)
        assert sp.csr_rows(batch, only[0], n, False, *only) == nnz
        listed = gp[-1]
        np.testing.assert_array_equal(only[0], gp)
        np.testing.assert_array_equal(only[1][:listed], gi[:listed])
        for g in range(sp.GROUP):
            np.testing.assert_array_equal(only[2][g * (nnz + 16):][:listed].view(np.int32),
                                          gv[g * plane:][:listed].view(np.int32))


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 64])
@pytest.mark.parametrize("m", [10, simd.BLOCK_GROUP, 2 * simd.BLOCK_GROUP + 5])
def test_group_kernels_against_float64(n, m):
    """The grouped forward and weight gradient (plain and fused with SGD) against float64
    products: batches of 1-3 rows (no buckets), ragged last row groups (n % 3), a last pixel
    group past d (37 features), one block, several blocks plus a column tail, and a layer
    narrower than a block. The fused step must change exactly the rows of the pixels present,
    once."""
    from fastnn.backends import numba_sparse as sp

    d = 37
    x = data(n, d, n + m, 0.7)
    x[:, 5] = 0  # a pixel no row has, inside a group others share
    W, dz = data(d, m, 3), data(n, m, 4)
    lists = sp.csr_alloc(n, d)
    nnz = sp.csr_build(x, np.arange(n), n, False, *lists)
    gp, gi, gv, blen, brow, bval = lists
    out = np.full((n, m), np.nan, np.float32)
    sp.csr_forward(gp, gi, gv, W, out, n)
    close(out, x.astype(np.float64) @ W, 1e-5, 1e-5)
    dW = np.full((d, m), np.nan, np.float32)
    sp.bucket_dw(blen, brow, bval, dz, dW, W.copy(), np.float32(0), False, nnz, gp, gi, gv)
    close(dW, x.T.astype(np.float64) @ dz, 1e-5, 1e-5)
    assert not dW[5].any() and not dW[(x == 0).all(0)].any()
    W1, lr = W.copy(), np.float32(0.5)
    sp.bucket_dw(blen, brow, bval, dz, np.zeros_like(W), W1, lr, True, nnz, gp, gi, gv)
    present = (x != 0).any(0)
    np.testing.assert_array_equal(W1[~present], W[~present])  # untouched, bit for bit
    np.testing.assert_array_equal(W1[present], (W - lr * dW)[present])  # the unfused gradient, once


def test_buffers_start_on_a_cache_line():
    """Parameters, gradients, optimizer slots and every layer's activations and gradients
    start on a 64-byte line, so that whole rows of 16k float32 are whole lines."""
    from fastnn.optimizers import SGD

    for shape, dtype in [(1, np.float32), ((3, 5), np.float64), (100003, np.float32), ((2, 9), np.uint8)]:
        a = S.aligned_zeros(shape, dtype)
        assert a.ctypes.data % S.ALIGN_BYTES == 0 and a.dtype == dtype and not a.any()
        assert a.shape == (shape if isinstance(shape, tuple) else (shape,))
    net = S.allocate([("dense", 13, 7, S.ACT_RELU), ("dense", 7, 5, S.ACT_NONE)])
    assert net.params.ctypes.data % 64 == 0 and net.grads.ctypes.data % 64 == 0
    opt = SGD(lr=0.1, momentum=0.9)
    opt.build(len(net.params))
    assert opt.buffers.slots.ctypes.data % 64 == 0
    ws = stepwise.make_workspace(net, 3)  # widths 13, 7, 5 at 3 rows: none a whole line by itself
    for i, width in enumerate((13, 7, 5)):
        for buf in (ws.act, ws.grad):
            start = buf[ws.offsets[i, stepwise.OFF_ACT]:]
            assert start.ctypes.data % 64 == 0
            assert ws.offsets[i, stepwise.OFF_ACT] + 3 * width <= len(buf)
    assert ws.offsets[1, 0] >= 3 * 13 and ws.offsets[2, 0] >= ws.offsets[1, 0] + 3 * 7


def test_one_numba_thread_runs_the_serial_loops():
    import numba
    from fastnn.backends import numba_sparse as sp

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert sp.parallel_chunks(100, 1 << 40, 1) == 1
        if numba.config.NUMBA_NUM_THREADS > 1:
            numba.set_num_threads(2)
            assert sp.parallel_chunks(100, 1 << 40, 1) == sp.MAX_CHUNKS
            assert sp.parallel_chunks(100, 10, 11) == 1  # too little work
    finally:
        numba.set_num_threads(before)


def test_parallel_paths_give_the_serial_bits():
    """Above the parallel thresholds the chunked kernels run; each output element is still
    one sum in a fixed order, so they equal the single-chunk (serial) path bit for bit."""
    from fastnn.backends import numba_sparse as sp

    n, d, m = 256, 784, 256
    x = data(n, d, 7, 0.8, zero_rows=(5,))
    W, dz = data(d, m, 8), data(n, m, 9)
    gp, gi, gv, blen, brow, bval = sp.csr_alloc(n, d)
    nnz = sp.csr_build(x, gp, n, False, gp, gi, gv, blen, brow, bval)
    assert nnz * m >= sp.PARALLEL_MIN_TERMS and n * d * m >= nb.PARALLEL_MIN_WORK  # really the parallel paths
    # 327 columns: the forward splits W's column blocks (128, 128, 71); 149: it splits rows
    for width in (327, 149):
        Wc = data(d, width, 11)
        assert nnz * width >= sp.PARALLEL_MIN_TERMS
        out, ref = np.full((n, width), np.nan, np.float32), np.full((n, width), np.nan, np.float32)
        sp.csr_forward(gp, gi, gv, Wc, out, n)
        sp._forward_range(gp, gi, gv, Wc, ref, n, 0, -(-n // sp.GROUP), 0, width)
        np.testing.assert_array_equal(out, ref)
        close(out, x.astype(np.float64) @ Wc, 1e-5, 1e-4)
    for fused in (False, True):
        W1, W2 = W.copy(), W.copy()
        dW1, dW2 = np.zeros((d, m), np.float32), np.zeros((d, m), np.float32)
        sp.bucket_dw(blen, brow, bval, dz, dW1, W1, np.float32(0.05), fused, nnz, gp, gi, gv)
        sp._dw_range(blen, brow, bval, dz, dW2, W2, np.float32(0.05), fused, 0, len(blen))
        np.testing.assert_array_equal(W1, W2)
        if not fused:
            np.testing.assert_array_equal(dW1, dW2)
            close(dW1, x.T.astype(np.float64) @ dz, 1e-5, 1e-4)
    dense = data(n, d, 10)
    out = np.full((n, m), np.nan, np.float32)
    nb.matmul_blocked(dense, W, out)
    close(out, dense.astype(np.float64) @ W, 1e-5, 1e-3)


# ------------------------------------------------------------------------------- dense


@pytest.mark.parametrize("n,d_in,d_out", SHAPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("sparsity", [0.0, 0.85])
def test_dense_forward_backward_match(n, d_in, d_out, act, sparsity):
    x = data(n, d_in, 1, sparsity, zero_rows=(0,))
    W = data(d_in, d_out, 2) * 0.3
    b = data(1, d_out, 3)[0]
    outs = [np.full((n, d_out), np.nan, np.float32) for _ in range(2)]
    npr.dense_forward(x, W, b, act, outs[0])
    nb.dense_forward(x, W, b, act, outs[1])
    close(outs[1], outs[0])
    dz = data(n, d_out, 4)
    grads = []
    for kern in (npr, nb):
        dx, dW, db = np.empty((n, d_in), np.float32), np.empty((d_in, d_out), np.float32), np.empty(d_out, np.float32)
        kern.dense_backward(x, W, dz, dx, dW, db)
        grads.append((dx, dW, db))
        empty_dx = np.zeros((0, 0), np.float32)
        dW2 = np.empty_like(dW)
        kern.dense_backward(x, W, dz, empty_dx, dW2, db)
        np.testing.assert_array_equal(dW2, dW)
    for g_np, g_nb in zip(*grads):
        close(g_nb, g_np)
    close(grads[0][1], x.T.astype(np.float64) @ dz, 1e-5, 1e-4)


@pytest.mark.parametrize("n", [1, 3, 100])
@pytest.mark.parametrize("sparsity", [0.0, 0.8, 0.97])  # 0.97: under a quarter of the features, listed
@pytest.mark.parametrize("m", [20, 150])  # with AVX-512: one vector + a 4-column tail; 128 + 16 + 6
def test_fused_sgd_first_layer_equals_backward_then_update(n, sparsity, m):
    x = data(n, 50, 1, sparsity, zero_rows=(0,))
    if n == 3 and sparsity > 0.9:
        x[1, 7], x[2, 7] = 0.5, -0.25  # a feature in two rows: a two-term listed sum
    W = data(50, m, 2)
    dz = data(n, m, 3)
    W1, dW1, db1 = W.copy(), np.zeros((50, m), np.float32), np.zeros(m, np.float32)
    nb.dense_backward(x, W1, dz, np.zeros((0, 0), np.float32), dW1, db1)
    nb.sgd_update(W1.reshape(-1), dW1.reshape(-1), np.zeros(W.size, np.float32), 0.05, 0.0, False, 0.0)
    W2, dW2, db2 = W.copy(), np.zeros((50, m), np.float32), np.zeros(m, np.float32)
    nb.dense_backward_sgd(x, W2, dz, dW2, db2, 0.05)
    np.testing.assert_array_equal(W2, W1)
    np.testing.assert_array_equal(db2, db1)


@pytest.mark.parametrize("act", ACTS)
def test_activations_match(act):
    x = data(17, 23, 5) * 4
    x[0] = 0
    x[1, :3] = [1e4, -1e4, 50]
    outs, dxs = [], []
    dy = data(17, 23, 6)
    for kern in (npr, nb):
        out = np.empty_like(x)
        kern.activation_forward(act, x, out)
        dx = np.empty_like(x)
        kern.activation_backward(act, out, dy, dx)
        in_place = dy.copy()  # dx is dy (the training loop's call): the same bits
        kern.activation_backward(act, out, in_place, in_place)
        np.testing.assert_array_equal(in_place.view(np.int32), dx.view(np.int32))
        outs.append(out)
        dxs.append(dx)
    close(outs[1], outs[0], 2e-6, 1e-6)
    close(dxs[1], dxs[0], 2e-6, 1e-6)
    assert np.isfinite(outs[1]).all()
    ref = {S.ACT_NONE: x, S.ACT_RELU: np.maximum(x, 0), S.ACT_TANH: np.tanh(x.astype(np.float64)),
           S.ACT_SIGMOID: 0.5 * np.tanh(0.5 * x.astype(np.float64)) + 0.5}[act]
    close(outs[1], ref, 2e-6, 1e-6)


def test_float32_tanh_within_8_ulp_and_special_values():
    """Numba's float32 tanh (a vectorised rational form) against float64 tanh on a dense
    grid, and NaN, +-inf, +-0 and tiny inputs as tanh gives them; float64 input keeps libm."""
    x = np.concatenate([np.linspace(-12, 12, 2_000_001, dtype=np.float32),
                        np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -3e-4, 7.9, -7.91, 8.5])])
    out = np.empty((1, x.size), np.float32)
    nb.activation_forward(S.ACT_TANH, x[None], out)
    ref = np.tanh(x.astype(np.float64))
    finite = np.isfinite(ref)
    ulp = np.abs(out[0, finite] - ref[finite]) / np.spacing(np.abs(ref[finite]).astype(np.float32))
    assert ulp.max() <= 8
    tail = out[0, -10:]
    assert np.isnan(tail[0]) and tail[1] == 1 and tail[2] == -1
    assert tail[3] == 0 and not np.signbit(tail[3]) and tail[4] == 0 and np.signbit(tail[4])
    assert tail[5] == np.float32(1e-30) and tail[6] == np.float32(-3e-4)
    assert (np.abs(tail[7:]) <= 1).all()
    x64 = np.linspace(-3, 3, 101)[None]
    out64 = np.empty_like(x64)
    nb.activation_forward(S.ACT_TANH, x64, out64)
    np.testing.assert_allclose(out64, np.tanh(x64), rtol=1e-15)


# -------------------------------------------------------------------------------- loss


def softmax_nll_ref(logits, y, smoothing):
    """Independent float64 reference."""
    z = logits.astype(np.float64)
    m = z.max(1, keepdims=True)
    logp = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
    n, k = z.shape
    t = np.full((n, k), smoothing / k)
    t[np.arange(n), y] += 1 - smoothing
    return -(t * logp).sum(1).mean(), (np.exp(logp) - t) / n, int((z.argmax(1) == y).sum())


@pytest.mark.parametrize("n,k", [(1, 10), (7, 3), (64, 10), (33, 47)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_nll_matches(n, k, smoothing, scale):
    logits = data(n, k, 7) * np.float32(scale)
    if n > 2:
        logits[1] = 0  # all-zero row: uniform softmax
        logits[2, :] = -1e4
        logits[2, 0] = 1e4
    y = np.random.default_rng(1).integers(0, k, n)
    ref_loss, ref_d, ref_c = softmax_nll_ref(logits, y, smoothing)
    for kern in (npr, nb):
        d = np.full_like(logits, np.nan)
        loss, correct = kern.softmax_nll(logits, y, smoothing, d)
        assert np.isfinite(loss) and correct == ref_c
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-6)
        close(d, ref_d, 1e-5, 1e-7)
        out = np.empty_like(logits)
        kern.log_softmax(logits, out)
        z = logits.astype(np.float64)
        close(out, z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)),
              1e-6, 1e-4 * max(scale, 1) / 1e4 + 1e-6)


def test_softmax_nll_finite_differences():
    r = np.random.default_rng(3)
    logits = r.standard_normal((6, 5))
    y = r.integers(0, 5, 6)
    d = np.empty_like(logits)
    npr.softmax_nll(logits, y, 0.1, d)
    num = np.empty_like(logits)
    h = 1e-6
    for idx in np.ndindex(*logits.shape):
        lp, lm = logits.copy(), logits.copy()
        lp[idx] += h
        lm[idx] -= h
        num[idx] = (npr.softmax_nll(lp, y, 0.1, np.empty_like(lp))[0]
                    - npr.softmax_nll(lm, y, 0.1, np.empty_like(lm))[0]) / (2 * h)
    np.testing.assert_allclose(d, num, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("n,d", [(1, 9), (64, 130)])
def test_dropout_masks_identical(rate, n, d):
    x = data(n, d, 8)
    res = []
    for kern in (npr, nb):
        out, mask = np.empty_like(x), np.empty_like(x)
        kern.dropout_forward(x, rate, 11, 3 * 64 + 2, out, mask)
        dy = data(n, d, 9)
        dx = np.empty_like(x)
        kern.dropout_backward(dy, mask, dx)
        res.append((out, mask, dx))
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)
    mask = res[0][1]
    scale = np.float32(1 / (1 - rate))
    assert set(np.unique(mask)) <= {np.float32(0), scale}
    if n * d > 1000:
        assert abs((mask == 0).mean() - rate) < 0.03
    other = np.empty_like(x)
    nb.dropout_forward(x, rate, 11, 3 * 64 + 3, np.empty_like(x), other)  # another stream, another mask
    if 0 < rate and n * d > 100:
        assert not np.array_equal(other, mask)


# -------------------------------------------------------------------------- batch norm


@pytest.mark.parametrize("n,d", [(1, 5), (2, 3), (33, 17), (128, 64)])
def test_batchnorm_matches(n, d):
    x = data(n, d, 10) * 3 + 1
    x[0] = 0
    gamma, beta = data(1, d, 11)[0], data(1, d, 12)[0]
    res = []
    for kern in (npr, nb):
        rm, rv = np.full(d, 0.5, np.float32), np.full(d, 2.0, np.float32)
        out, xhat, inv_std = np.empty_like(x), np.empty_like(x), np.empty(d, np.float32)
        kern.batchnorm_forward_train(x, gamma, beta, rm, rv, 0.1, 1e-5, out, xhat, inv_std)
        dy = data(n, d, 13)
        dx, dg, db = np.empty_like(x), np.empty(d, np.float32), np.empty(d, np.float32)
        kern.batchnorm_backward(dy, xhat, inv_std, gamma, dx, dg, db)
        ev = np.empty_like(x)
        kern.batchnorm_forward_eval(x, gamma, beta, rm, rv, 1e-5, ev)
        res.append((out, xhat, inv_std, rm, rv, dx, dg, db, ev))
    for a, b in zip(*res):
        close(b, a, 1e-4, 1e-4)
    # PyTorch semantics: biased variance to normalise, unbiased for the running estimate.
    x64 = x.astype(np.float64)
    close(res[1][3], 0.9 * 0.5 + 0.1 * x64.mean(0), 1e-5, 1e-5)
    close(res[1][4], 0.9 * 2.0 + 0.1 * x64.var(0, ddof=1 if n > 1 else 0), 1e-5, 1e-5)
    close(res[1][0], (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5) * gamma + beta, 1e-4, 1e-4)


# -------------------------------------------------------------------------- optimizers


def torch_like_reference(code, hp, p, grads_seq, lrs):
    """Independent float64 transcription of torch.optim's update rules."""
    p = p.astype(np.float64)
    s1 = np.zeros_like(p)
    s2 = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads_seq, lrs), start=1):
        g = g.astype(np.float64)
        if code == S.OPT_SGD:
            mom, nest, wd = hp[:3]
            g = g + wd * p
            if mom:
                s1 = mom * s1 + g
                g = g + mom * s1 if nest else s1
            p = p - lr * g
        elif code == S.OPT_RMSPROP:
            alpha, eps, wd, mom = hp
            g = g + wd * p
            s1 = alpha * s1 + (1 - alpha) * g * g
            avg = np.sqrt(s1) + eps
            if mom:
                s2 = mom * s2 + g / avg
                p = p - lr * s2
            else:
                p = p - lr * g / avg
        else:
            b1, b2, eps, wd = hp
            g = g + wd * p
            s1 = b1 * s1 + (1 - b1) * g
            s2 = b2 * s2 + (1 - b2) * g * g
            denom = np.sqrt(s2) / np.sqrt(1 - b2**t) + eps
            p = p - lr / (1 - b1**t) * s1 / denom
    return p


OPTIMIZERS = [
    (S.OPT_SGD, [0.0, 0, 0.0, 0]), (S.OPT_SGD, [0.9, 0, 1e-2, 0]), (S.OPT_SGD, [0.9, 1, 1e-2, 0]),
    (S.OPT_RMSPROP, [0.99, 1e-8, 0.0, 0.0]), (S.OPT_RMSPROP, [0.9, 1e-6, 1e-2, 0.5]),
    (S.OPT_ADAM, [0.9, 0.999, 1e-8, 0.0]), (S.OPT_ADAM, [0.8, 0.99, 1e-6, 5e-3]),
]


def optimizer_step(kern, code, hp, p, g, s, lr, t):
    """Step t (1-based) of optimizer ``code`` in place on p and its state s (2, P)."""
    if code == S.OPT_SGD:
        kern.sgd_update(p, g, s[0], lr, hp[0], bool(hp[1]), hp[2])
    elif code == S.OPT_RMSPROP:
        kern.rmsprop_update(p, g, s[0], s[1], lr, *hp)
    else:
        kern.adam_update(p, g, s[0], s[1], lr, *hp, t)


def run_optimizer(kern, code, hp, p0, grads_seq, lrs):
    p = p0.copy()
    s = np.zeros((2, len(p)), np.float32)
    for t, (g, lr) in enumerate(zip(grads_seq, lrs), start=1):
        optimizer_step(kern, code, hp, p, g, s, lr, t)
    return p


@pytest.mark.parametrize("code,hp", OPTIMIZERS)
@pytest.mark.parametrize("size", [1, 1000, nb.PARALLEL_MIN_ELEMENTS + 1001])  # the last is split across threads
def test_optimizers_match_torch_rules(code, hp, size):
    r = np.random.default_rng(size)
    p0 = r.standard_normal(size).astype(np.float32)
    grads_seq = [r.standard_normal(size).astype(np.float32) for _ in range(4)]
    lrs = [0.01, 0.02, 0.015, 0.01]
    ref = torch_like_reference(code, hp, p0, grads_seq, lrs)
    for kern in (npr, nb):
        close(run_optimizer(kern, code, hp, p0, grads_seq, lrs), ref, 1e-5, 1e-5)
    np.testing.assert_allclose(run_optimizer(nb, code, hp, p0, grads_seq, lrs),
                               run_optimizer(npr, code, hp, p0, grads_seq, lrs), rtol=1e-6, atol=1e-6)


DECAYING = [(S.OPT_SGD, [0.9, 0, 0.0, 0]), (S.OPT_SGD, [0.9, 1, 0.0, 0]), (S.OPT_RMSPROP, [0.9, 1e-8, 0.0, 0.5]),
            (S.OPT_ADAM, [0.9, 0.999, 1e-8, 0.0]), (S.OPT_ADAM, [0.8, 0.99, 1e-6, 0.0])]  # no decay: g = 0 stays 0


@pytest.mark.parametrize("code,hp", DECAYING)
def test_decayed_optimizer_state_is_flushed_not_subnormal(code, hp):
    # A weight whose gradient goes to 0 (an input that stays 0) decays its state geometrically;
    # below float32's smallest normal it is stored as 0, in both backends alike, and the weights
    # are the float64 PyTorch rules' to float32 precision all the same.
    size, steps = 6, 1500
    p0 = np.array([0.5, -0.25, 1.0, 0.0, 2.0, -1.0], np.float32)
    first = np.array([1e-3, -2e-3, 5e-1, 1e-3, 1e-20, 0.0], np.float32)
    grads_seq = [first] + [np.zeros(size, np.float32)] * (steps - 1)
    lrs = [0.01] * steps
    tiny = np.finfo(np.float32).tiny
    slots = {}
    for kern in (npr, nb):
        p = p0.copy()
        s = np.zeros((2, size), np.float32)
        for t, g in enumerate(grads_seq, start=1):
            optimizer_step(kern, code, hp, p, g, s, 0.01, t)
            assert not np.any((s != 0) & (np.abs(s) < tiny)), f"subnormal state after step {t} ({kern.__name__})"
        slots[kern.__name__] = (p, s)
        close(p, torch_like_reference(code, hp, p0, grads_seq, lrs), 1e-6, 1e-6)
    (p_np, s_np), (p_nb, s_nb) = slots.values()
    assert not np.any(s_np[0, :4])  # the first slot of those that had a gradient decayed to 0 (1500 steps)
    np.testing.assert_array_equal(s_nb, s_np)
    np.testing.assert_array_equal(p_nb, p_np)
    # NaN is never flushed: a diverged state stays visible
    for kern in (npr, nb):
        s = np.zeros((2, 1), np.float32)
        p = np.ones(1, np.float32)
        optimizer_step(kern, code, hp, p, np.array([np.nan], np.float32), s, 0.01, 1)
        assert np.isnan(s[0, 0]) and np.isnan(p[0])


# ------------------------------------------------------------------ finite differences

FD_LAYERS = [
    [("dense", 6, 4, S.ACT_NONE)], [("dense", 6, 4, S.ACT_RELU)], [("dense", 6, 4, S.ACT_SIGMOID)],
    [("dense", 6, 4, S.ACT_TANH)], [("activation", 6, S.ACT_RELU)], [("activation", 6, S.ACT_SIGMOID)],
    [("activation", 6, S.ACT_TANH)], [("dropout", 6, 0.4)], [("batchnorm", 6, 0.1, 1e-5)],
]


@pytest.mark.parametrize("layers", FD_LAYERS, ids=lambda l: f"{l[0][0]}-{l[0][-1]}")
def test_layer_backward_finite_differences(layers):
    net = S.allocate(layers, np.float64)
    r = np.random.default_rng(4)
    net.params[:] = r.standard_normal(len(net.params))
    n, d_in, d_out = 5, net.spec[0, S.N_IN], net.spec[0, S.N_OUT]
    x = r.standard_normal((n, d_in))
    R = r.standard_normal((n, d_out))

    def objective():
        out = np.zeros((n, d_out))
        stepwise.layer_forward(npr, net, 0, x, out, stepwise.make_cache(net, 0, n), True, seed=5, step=3)
        return (out * R).sum()

    out = np.zeros((n, d_out))
    cache = stepwise.make_cache(net, 0, n)
    stepwise.layer_forward(npr, net, 0, x, out, cache, True, seed=5, step=3)
    dx = np.zeros_like(x)
    stepwise.layer_backward(npr, net, 0, x, out, R.copy(), dx, cache)
    for arr, grad in [(x, dx), (net.params, net.grads)]:
        np.testing.assert_allclose(grad, numeric(objective, arr), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- property-based tests


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), d_in=st.integers(1, 70), d_out=st.integers(1, 40), sparsity=st.floats(0, 1),
       act=st.sampled_from(ACTS), seed=st.integers(0, 2**16))
def test_property_dense_layer(n, d_in, d_out, sparsity, act, seed):
    x = data(n, d_in, seed, sparsity)
    W, b, dz = data(d_in, d_out, seed + 1), data(1, d_out, seed + 2)[0], data(n, d_out, seed + 3)
    res = []
    for kern in (npr, nb):
        out = np.empty((n, d_out), np.float32)
        kern.dense_forward(x, W, b, act, out)
        dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty_like(b)
        kern.dense_backward(x, W, dz, dx, dW, db)
        res.append((out, dx, dW, db))
    for a, c in zip(*res):
        close(c, a, 1e-5, 1e-5 * np.sqrt(max(n, d_in, d_out)) * 4)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 20), k=st.integers(2, 30), scale=st.sampled_from([1e-3, 1.0, 30.0, 1e4]),
       smoothing=st.sampled_from([0.0, 0.05, 0.3]), seed=st.integers(0, 2**16))
def test_property_softmax_nll(n, k, scale, smoothing, seed):
    logits = data(n, k, seed) * np.float32(scale)
    y = np.random.default_rng(seed).integers(0, k, n)
    ref_loss, ref_d, ref_c = softmax_nll_ref(logits, y, smoothing)
    d = np.empty_like(logits)
    loss, correct = nb.softmax_nll(logits, y, smoothing, d)
    assert correct == ref_c
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-5)
    close(d, ref_d, 1e-5, 1e-7)
    # gradient rows of the mean loss sum to zero (softmax and target both sum to one)
    close(d.sum(1), 0, 0, 1e-6)


# ------------------------------------------------------------------- NUMBA_DISABLE_JIT


def test_kernels_run_with_jit_disabled():
    code = """
import numpy as np
from fastnn.backends import numba_jit as nb, numpy_ref as npr
r = np.random.default_rng(0)
x = r.standard_normal((6, 20)).astype(np.float32); x[x < 0.5] = 0
W = r.standard_normal((20, 90)).astype(np.float32); b = np.ones(90, np.float32)  # 64 + 16 + 10 columns
o1, o2 = np.empty((6, 90), np.float32), np.empty((6, 90), np.float32)
nb.dense_forward(x, W, b, 1, o1); npr.dense_forward(x, W, b, 1, o2)
assert np.allclose(o1, o2, atol=1e-5)
y = np.arange(6) % 90
d1, d2 = np.empty_like(o1), np.empty_like(o1)
assert abs(nb.softmax_nll(o1, y, 0.1, d1)[0] - npr.softmax_nll(o2, y, 0.1, d2)[0]) < 1e-5
m1, m2 = np.empty_like(x), np.empty_like(x)
nb.dropout_forward(x, 0.3, 1, 2, np.empty_like(x), m1); npr.dropout_forward(x, 0.3, 1, 2, np.empty_like(x), m2)
assert (m1 == m2).all()
print("ok")
"""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


def test_dense_backward_one_row_weight_gradient_is_the_exact_outer_product():
    # a one-row dense batch takes a hand-written outer product instead of BLAS
    x = data(1, 37, 11)
    dz = data(1, 19, 12)
    dW, db = np.empty((37, 19), np.float32), np.empty(19, np.float32)
    dx = np.empty((1, 37), np.float32)
    W = data(37, 19, 13)
    nb.dense_backward(x, W, dz, dx, dW, db)
    np.testing.assert_array_equal(dW, x[0][:, None] * dz[0][None, :])
    close(dx, dz @ W.T)
    np.testing.assert_array_equal(db, dz[0])
