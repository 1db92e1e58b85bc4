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
product is ``np.dot`` itself, with BLAS on one thread.

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
from .simd import thread_count

# Products under this many multiply-adds are one BLAS call: splitting ~150 us of work
# would save less than a parallel region costs (~44 us on a 2-vCPU VM).
SPLIT_MIN_MACS = 1 << 23
# From this many multiply-adds on, four blocks instead of two (room for four cores).
FOUR_BLOCKS_MACS = 1 << 25
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


@intrinsic
def _sgemm_compiled(typingctx, ta, tb, m, n, k, a, ia, lda, b, ib, ldb, c, ic, ldc):
    # Column-major C[ic:] (m x n, ldc) = op(A[ia:]) (m x k) @ op(B[ib:]) (k x n), through
    # numba_xxgemm as Numba's np.dot calls it; offsets count float32 elements.
    for arr in (a, b, c):
        if not (isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.layout == "C"):
            raise TypingError(f"_sgemm takes C-contiguous float32 arrays, got {arr}")
    sig = types.void(ta, tb, m, n, k, a, ia, lda, b, ib, ldb, c, ic, ldc)

    def codegen(context, builder, signature, args):
        ensure_blas()
        intp = context.get_value_type(types.intp)
        char = ir.IntType(8)
        void_p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.IntType(32), [char, char, char, intp, intp, intp, void_p, void_p, intp, void_p,
                                                intp, void_p, void_p, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        vals = dict(zip(("ta", "tb", "m", "n", "k", "a", "ia", "lda", "b", "ib", "ldb", "c", "ic", "ldc"), args))
        tys = dict(zip(("ta", "tb", "m", "n", "k", "a", "ia", "lda", "b", "ib", "ldb", "c", "ic", "ldc"),
                       signature.args))

        def scalar(name, to):
            return context.cast(builder, vals[name], tys[name], to)

        def pointer(arr, off):
            data = context.make_array(tys[arr])(context, builder, vals[arr]).data
            return builder.bitcast(builder.gep(data, [scalar(off, types.intp)]), void_p)

        alpha = cgutils.alloca_once_value(builder, context.get_constant(types.float32, 1.0))
        beta = cgutils.alloca_once_value(builder, context.get_constant(types.float32, 0.0))
        builder.call(fn, [ir.Constant(char, ord("s")), builder.trunc(scalar("ta", types.intp), char),
                          builder.trunc(scalar("tb", types.intp), char), scalar("m", types.intp),
                          scalar("n", types.intp), scalar("k", types.intp), builder.bitcast(alpha, void_p),
                          pointer("a", "ia"), scalar("lda", types.intp), pointer("b", "ib"),
                          scalar("ldb", types.intp), builder.bitcast(beta, void_p), pointer("c", "ic"),
                          scalar("ldc", types.intp)])
        return context.get_dummy_value()

    return sig, codegen


_sgemm = _sgemm_interpreted if config.DISABLE_JIT else _sgemm_compiled


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
def _gemm(form, a, b, out, macs, size, split):
    nb = gemm_blocks(macs, size)
    if nb == 1:  # np.dot itself: its bits (it takes gemv for one-row products) and its empty cases
        if form == 0:
            np.dot(a, b, out)
        elif form == 1:
            np.dot(a.T, b, out)
        else:
            np.dot(a, b.T, out)
        return
    # BLAS is given pointers and leading dimensions: C order (a copy only for strided inputs)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if split is None or thread_count() == 1:
        for c in range(nb):
            _block(form, a, b, out, _edge(c, nb, size), _edge(c + 1, nb, size))
    else:
        _blocks_par(form, a, b, out, nb, size)


@njit(cache=True, error_model="numpy")
def gemm_nn(a, b, out, split=True):
    """out = a @ b; a (n, k), b (k, m), out (n, m) float32, C-contiguous. Blocks: b's columns."""
    _gemm(np.int64(0), a, b, out, a.shape[0] * a.shape[1] * b.shape[1], b.shape[1], split)


@njit(cache=True, error_model="numpy")
def gemm_tn(a, b, out, split=True):
    """out = a.T @ b; a (n, k), b (n, m), out (k, m) float32, C-contiguous. Blocks: a's columns."""
    _gemm(np.int64(1), a, b, out, a.shape[0] * a.shape[1] * b.shape[1], a.shape[1], split)


@njit(cache=True, error_model="numpy")
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
