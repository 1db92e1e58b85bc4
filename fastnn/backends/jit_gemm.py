"""Dense float32 products whose bits do not depend on the thread count.

    gemm_nn(a, b, out)   out = a @ b      a (n, k), b (k, m), out (n, m)   x @ W
    gemm_tn(a, b, out)   out = a.T @ b    a (n, k), b (n, m), out (k, m)   x.T @ dz
    gemm_nt(a, b, out)   out = a @ b.T    a (n, m), b (k, m), out (n, k)   dz @ W.T

All arrays C-contiguous float32; ``out`` is overwritten.

Why not plain ``np.dot``: OpenBLAS shares a product between its threads in a way that changes
the order of the sums (every shape measured, even 128 x 128 x 64, gave other bits on two
threads than on one), and cut into pieces a product gives other bits than whole (its
kernels' order depends on the shapes). So BLAS runs here on one thread only (the callers
hold SciPy's OpenBLAS there: ``serial_blas``), and a product of ``SPLIT_MIN_MACS`` or more
is cut into ``gemm_blocks`` blocks along the weight's side (W's columns for x @ W, W's rows
for the other two, so each block packs only its part of W), a count fixed by the shape
alone. Numba's threads share the blocks out; each element of ``out`` is computed by one
single-threaded BLAS call whose shape does not depend on the number of threads. A smaller
product is ``np.dot`` itself, with BLAS on one thread, unless ``_own_kernel`` takes it (from
OWN_MIN_MACS multiply-adds, output in whole ``simd.BLOCK_HALF``-column blocks: a hidden layer's
products at batch 128 and up, where OpenBLAS spent a quarter of its time packing operands):
then it runs on ``simd.dense_rows``, each element the k-ordered chain of ``simd.muladd`` from +0.

BLAS is reached the way Numba's own ``np.dot`` reaches it (``numba_xxgemm`` in Numba's helper
library, SciPy's ``cython_blas.sgemm`` behind it), so callers stay cacheable.
"""

import contextlib
import ctypes

import numpy as np
from llvmlite import ir
from numba import _helperlib, config, njit, prange, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

from . import blas
from .simd import BLOCK_HALF, DENSE_ROWS, dense_row, dense_rows, thread_count

# Products under this many multiply-adds are one BLAS call: splitting ~150 us of work
# would save less than a parallel region costs (~44 us on a 2-vCPU VM).
SPLIT_MIN_MACS = 1 << 23
# From this many multiply-adds on, four blocks instead of two (room for four cores).
FOUR_BLOCKS_MACS = 1 << 25
# Products from this many multiply-adds up to SPLIT_MIN_MACS run on _dense_product (when
# _own_kernel says so): OpenBLAS's small-matrix kernels stop at 100^3, and past them it packs
# both operands, a quarter of its time at a hidden layer's sizes. 784-128-64-10's hidden
# products at batch 128 (1.05M multiply-adds; AVX-512, standalone): x @ W 34 -> 20 us,
# x.T @ dz 36 -> 20, dz @ W.T 27 -> 20; at batch 64, under the limit, BLAS's are as fast or faster.
OWN_MIN_MACS = 1 << 20
# ... and a @ b.T from this many rows: its b is transposed first (~0.45 ns an element, paid
# back from ~30 rows on).
TRANSPOSE_MIN_ROWS = 32
# Block edges on multiples of 16 floats: each block's columns start on a 64-byte line.
_ALIGN = 16

_N, _T = ord("n"), ord("t")


@contextlib.contextmanager
def serial_blas():
    """Within the block, every BLAS copy (SciPy's OpenBLAS among them: Numba code calls it) runs on one thread."""
    with blas.at_most_threads(1):
        yield


@njit(cache=True, error_model="numpy")
def gemm_blocks(macs, size):
    """How many blocks a product of ``macs`` multiply-adds, split along a side of ``size``, is cut into."""
    if macs < SPLIT_MIN_MACS or size < 2 * _ALIGN:
        return 1
    return 2 if macs < FOUR_BLOCKS_MACS or size < 4 * _ALIGN else 4


@njit(cache=True, error_model="numpy")
def _edge(c, nb, size):
    # start of block c of nb over size, on a multiple of _ALIGN (the last block takes the rest)
    if c >= nb:
        return size
    return min(size, (c * size // nb + _ALIGN - 1) // _ALIGN * _ALIGN)


def _sgemm_interpreted(ta, tb, m, n, k, a, ia, lda, b, ib, ldb, c, ic, ldc):
    # NUMBA_DISABLE_JIT: the same column-major call in NumPy (other bits; for debugging only)
    def view(arr, off, trans, rows, cols, ld):
        flat = arr.reshape(-1)
        if trans == _N:
            return np.lib.stride_tricks.as_strided(flat[off:], (rows, cols), (4, 4 * ld))
        return np.lib.stride_tricks.as_strided(flat[off:], (cols, rows), (4, 4 * ld)).T

    view(c, ic, _N, m, n, ldc)[...] = view(a, ia, ta, m, k, lda) @ view(b, ib, tb, k, n, ldb)


def _blas_intrinsic(symbol, roles):
    """An intrinsic calling Numba's BLAS helper ``symbol`` (SciPy's ``cython_blas`` behind it) for
    float32, the way Numba's own ``np.dot`` calls it. ``roles`` spells the helper's arguments after
    its leading kind 's': ``c`` an integer passed as one byte (a transpose code), ``i`` an integer,
    ``a`` a C-contiguous float32 array and an element offset (two arguments: one pointer),
    ``1`` / ``0`` the constants alpha / beta (no argument)."""

    @intrinsic
    def call(typingctx, *args):
        arrays = [args[j] for j in _array_positions(roles)]
        for arr in arrays:
            if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.layout == "C"):
                raise TypingError(f"{symbol} takes C-contiguous float32 arrays, got {arr}")

        def codegen(context, builder, signature, llargs):
            ensure_blas()
            char, void_p = ir.IntType(8), ir.IntType(8).as_pointer()
            values = [ir.Constant(char, ord("s"))]
            pairs = iter(zip(args, cgutils.unpack_tuple(builder, llargs[0], len(args))))
            for role in roles:
                if role in "01":
                    slot = cgutils.alloca_once_value(builder, context.get_constant(types.float32, float(role)))
                    values.append(builder.bitcast(slot, void_p))
                    continue
                ty, val = next(pairs)
                if role == "a":
                    off_ty, off = next(pairs)
                    data = context.make_array(ty)(context, builder, val).data
                    values.append(builder.bitcast(builder.gep(data, [context.cast(builder, off, off_ty, types.intp)]),
                                                  void_p))
                else:
                    wide = context.cast(builder, val, ty, types.intp)
                    values.append(builder.trunc(wide, char) if role == "c" else wide)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), [v.type for v in values]),
                                                symbol)
            builder.call(fn, values)
            return context.get_dummy_value()

        return types.void(types.StarArgTuple.from_types(args)), codegen

    return call


def _array_positions(roles):
    # indices of the array arguments among an intrinsic's Python arguments
    positions, j = [], 0
    for role in roles:
        if role == "a":
            positions.append(j)
            j += 2
        elif role not in "01":
            j += 1
    return positions


# column-major C[ic:] (m x n, ldc) = op(A[ia:]) (m x k) @ op(B[ib:]) (k x n); offsets in float32 elements
_sgemm_compiled = _blas_intrinsic("numba_xxgemm", "cciii1aiai0ai")
# y[iy:] (m') = op(A[ia:]) @ x[ix:], A column-major (m x n, lda); m' = m ("n") or n ("t")
_sgemv = _blas_intrinsic("numba_xxgemv", "cii1aia0a")
# r[ir] = x[ix:ix + n] . y[iy:iy + n] (first byte: 0, no conjugate)
_sdot = _blas_intrinsic("numba_xxdot", "ciaaa")

_sgemm = _sgemm_interpreted if config.DISABLE_JIT else _sgemm_compiled


@njit(cache=True, error_model="numpy", inline="always")
def _one_call_compiled(form, a, b, out):
    """The product of ``form`` (0: a @ b, 1: a.T @ b, 2: a @ b.T) as one BLAS call, the call Numba's
    ``np.dot(x, y, out)`` makes for those operands (same bits): zeros when a side is empty, a dot
    product for one element, gemv for one row or one column, else gemm. All C-contiguous."""
    if form == 1:
        k, m = a.shape
    else:
        m, k = a.shape
    n = out.shape[1]
    if m == 0 or n == 0 or k == 0:
        for r in range(out.shape[0]):
            for j in range(n):
                out[r, j] = 0
        return
    zero = np.int64(0)
    if m == 1 and n == 1:
        _sdot(zero, k, a, zero, b, zero, out, zero)
    elif n == 1:  # a matrix times a vector
        if form == 1:
            _sgemv(_N, m, k, a, zero, m, b, zero, out, zero)
        else:
            _sgemv(_T, k, m, a, zero, k, b, zero, out, zero)
    elif m == 1:  # a vector times a matrix
        if form == 2:
            _sgemv(_T, k, n, b, zero, k, a, zero, out, zero)
        else:
            _sgemv(_N, n, k, b, zero, n, a, zero, out, zero)
    else:
        _block(form, a, b, out, zero, m if form == 1 else n)


def _one_call_interpreted(form, a, b, out):
    # NUMBA_DISABLE_JIT: np.dot itself (for debugging only)
    np.dot(a.T if form == 1 else a, b.T if form == 2 else b, out)


_one_call = _one_call_interpreted if config.DISABLE_JIT else _one_call_compiled


@njit(cache=True, error_model="numpy")
def _block(form, a, b, out, j0, j1):
    # block [j0, j1) of the split side of ``form`` (0: a @ b, 1: a.T @ b, 2: a @ b.T)
    if form == 0:  # out^T (m x n) = W^T @ x^T; the block: W's and out's columns j0:j1
        n, k = a.shape
        m = b.shape[1]
        _sgemm(_N, _N, j1 - j0, n, k, b, j0, m, a, 0, k, out, j0, m)
    elif form == 1:  # dW^T (m x k) = dz^T @ x; the block: x's columns and dW's rows j0:j1
        n, k = a.shape
        m = b.shape[1]
        _sgemm(_N, _T, m, j1 - j0, n, b, 0, m, a, j0, k, out, j0 * m, m)
    else:  # dx^T (k x n) = W @ dz^T; the block: W's rows and dx's columns j0:j1
        n, m = a.shape
        k = b.shape[0]
        _sgemm(_T, _N, j1 - j0, n, m, b, j0 * m, m, a, 0, m, out, j0, k)


@njit(cache=True, error_model="numpy", parallel=True)
def _blocks_par(form, a, b, out, nb, size):
    for c in prange(nb):
        _block(form, a, b, out, _edge(np.int64(c), nb, size), _edge(np.int64(c) + 1, nb, size))


@njit(cache=True, error_model="numpy")
def _own_kernel(form, rows, width, macs):
    """Whether a product (``form`` as in ``_block``) of ``macs`` multiply-adds into ``rows`` x
    ``width`` runs on ``_dense_product`` rather than BLAS: between OWN_MIN_MACS and one block,
    whole BLOCK_HALF column blocks, and for a @ b.T rows enough to pay for b's transpose."""
    return (OWN_MIN_MACS <= macs < SPLIT_MIN_MACS and width % BLOCK_HALF == 0
            and (form != 2 or rows >= TRANSPOSE_MIN_ROWS))


@njit(cache=True, error_model="numpy")
def _dense_product(form, a, b, out):
    # out = a @ b (form 0), a.T @ b (1) or a @ b.T (2, on b's transpose: its rows loaded
    # whole), all C-contiguous: DENSE_ROWS rows of out at once, then one at a time
    if form == 2:
        b = _transposed(b)
    step, plane, terms = (a.shape[1], 1, a.shape[0]) if form == 1 else (1, a.shape[1], a.shape[1])
    rows, width = out.shape
    r = 0
    while r + DENSE_ROWS <= rows:
        for j in range(0, width, BLOCK_HALF):
            dense_rows(out, r, step, a, plane, 0, terms, b, j)
        r += DENSE_ROWS
    while r < rows:
        for j in range(0, width, BLOCK_HALF):
            dense_row(out, r, step, a, plane, 0, terms, b, j)
        r += 1


@njit(cache=True, error_model="numpy")
def _transposed(b):
    n, m = b.shape
    t = np.empty((m, n), b.dtype)
    for i in range(n):
        for j in range(m):
            t[j, i] = b[i, j]
    return t


@njit(cache=True, error_model="numpy")
def _gemm(form, a, b, out, macs, size, split):
    # BLAS is given pointers and leading dimensions: C order (a copy only for strided inputs)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if _own_kernel(form, out.shape[0], out.shape[1], macs):
        _dense_product(form, a, b, out)
        return
    nb = gemm_blocks(macs, size)
    if nb == 1:  # np.dot's own call: its bits (gemv for one-row products) and its empty cases
        _one_call(form, a, b, out)
        return
    if split is None or thread_count() == 1:
        for c in range(nb):
            _block(form, a, b, out, _edge(c, nb, size), _edge(c + 1, nb, size))
    else:
        _blocks_par(form, a, b, out, nb, size)


@njit(cache=True, error_model="numpy", inline="always")
def gemm_nn(a, b, out, split=True):
    """out = a @ b; a (n, k), b (k, m), out (n, m) float32, C-contiguous. Blocks: b's columns."""
    _gemm(np.int64(0), a, b, out, a.shape[0] * a.shape[1] * b.shape[1], b.shape[1], split)


@njit(cache=True, error_model="numpy", inline="always")
def gemm_tn(a, b, out, split=True):
    """out = a.T @ b; a (n, k), b (n, m), out (k, m) float32, C-contiguous. Blocks: a's columns."""
    _gemm(np.int64(1), a, b, out, a.shape[0] * a.shape[1] * b.shape[1], a.shape[1], split)


@njit(cache=True, error_model="numpy", inline="always")
def gemm_nt(a, b, out, split=True):
    """out = a @ b.T; a (n, m), b (k, m), out (n, k) float32, C-contiguous. Blocks: b's rows."""
    _gemm(np.int64(2), a, b, out, a.shape[0] * a.shape[1] * b.shape[0], b.shape[0], split)


def _resolve_sgemm():
    """Has Numba's helper look SciPy's sgemm up now, on this thread: its first call takes the GIL
    to import it, which a block's worker thread could not get while the caller holds it."""
    c_ssize, ptr = ctypes.c_ssize_t, ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char, ctypes.c_char, ctypes.c_char, c_ssize, c_ssize, c_ssize,
                             ptr, ptr, c_ssize, ptr, c_ssize, ptr, ptr, c_ssize)
    one, zero, out = ctypes.c_float(1), ctypes.c_float(0), ctypes.c_float(7)
    proto(_helperlib.c_helpers["xxgemm"])(b"s", b"n", b"n", 1, 1, 1, ctypes.addressof(one), ctypes.addressof(one), 1,
                                          ctypes.addressof(one), 1, ctypes.addressof(zero), ctypes.addressof(out), 1)
    assert out.value == 1.0, "SciPy's sgemm did not answer 1 * 1"


if not config.DISABLE_JIT:
    ensure_blas()
    _resolve_sgemm()
