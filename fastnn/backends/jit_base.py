"""Shared by every Numba module of the backend: the thread pool, the serial/parallel thresholds,
and the few helpers all kernel families use (non-zero counting, flat-buffer views).

Holds no kernel of its own; import it before any module with ``prange`` code.
"""

import numpy as np
from numba import carray, config, njit, types
from numba.core.errors import TypingError
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array
from numba.np.ufunc import parallel as _numba_parallel

from .numba_sparse import SPARSE_MAX_DENSITY, SPARSE_MIN_FEATURES, sparse_enough

# Start Numba's thread pool now: a cached kernel that calls a parallel one can be loaded
# from disk before any parallel function is compiled, and then needs the pool's symbols
# (else "LLVM ERROR: Symbol not found: allocate_sched").
_numba_parallel._launch_threads()

# Multiply-adds below which a kernel stays serial: ~100 us of work or more, so that splitting
# it pays for a parallel region with sleeping waits (measured 44 us on a 2-vCPU VM; 1.2 us
# with spinning waits). numba_sparse.PARALLEL_MIN_TERMS is the same rule for list kernels.
PARALLEL_MIN_WORK = 1 << 22
# Elements below which an elementwise pass (optimizer update) stays serial.
PARALLEL_MIN_ELEMENTS = 1 << 18


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
def _sparse_count(a):
    """a's number of non-zeros (int) when its products take the zero-skipping lists
    (``sparse_enough``), else -1. Nothing is counted where BLAS is the answer whatever the count:
    a CPU whose first layer is BLAS (SPARSE_MAX_DENSITY < 0, target.py), or fewer than
    SPARSE_MIN_FEATURES features (a hidden layer's input)."""
    if SPARSE_MAX_DENSITY < 0 or a.shape[1] < SPARSE_MIN_FEATURES:
        return -1
    nnz = _count_nonzero(a)
    return nnz if sparse_enough(nnz, a.shape[0], a.shape[1]) else -1


@njit(cache=True, error_model="numpy")
def _prefer_sparse(a):
    return _sparse_count(a) >= 0


# Two rules that keep compile time down (each compiled function is optimised and turned into
# machine code again inside every function that calls it):
# - Constants passed to another compiled function are typed values (``np.int64(0)``,
#   ``np.bool_(False)``), not bare literals: Numba compiles a separate specialisation of
#   the callee for each literal value it is called with.
# - Arrays are copied with ``copy_1d``/``copy_2d``, not slice assignment (``a[:, :] = b``),
#   whose shape-mismatch error path formats a message and adds ~300 KB of LLVM IR to each
#   function that holds one.


@njit(cache=True, error_model="numpy")
def copy_1d(src, dst):
    """dst[:] = src for 1-D arrays of the same length (a plain loop)."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


@njit(cache=True, error_model="numpy")
def copy_2d(src, dst):
    """dst[:, :] = src for 2-D arrays of the same shape (a plain loop)."""
    for r in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[r, j] = src[r, j]


def _rows_interpreted(buf, off, n, w):
    # NUMBA_DISABLE_JIT: the same view through reshape
    return buf[off:off + n * w].reshape((n, w))


@intrinsic
def _rows_compiled(typingctx, buf, off, n, w):
    # (n, w) C-contiguous view of the flat C-contiguous buf from element off, sharing its memory.
    # Built directly (no reshape: its size checks and helpers added ~0.3 s to a cold compile);
    # the caller guarantees off + n * w <= len(buf).
    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"):
        raise TypingError(f"_view takes a 1-D C-contiguous array, got {buf}")
    view = buf.copy(ndim=2, layout="C")

    def codegen(context, builder, signature, args):
        src = context.make_array(signature.args[0])(context, builder, args[0])
        off, n, w = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:]))
        dst = context.make_array(view)(context, builder)
        populate_array(dst, data=builder.gep(src.data, [off]), shape=[n, w], strides=[builder.mul(w, src.itemsize),
                       src.itemsize], itemsize=src.itemsize, meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, view, dst._getvalue())

    return view(buf, off, n, w), codegen


_rows = _rows_interpreted if config.DISABLE_JIT else _rows_compiled


@intrinsic
def _data_pointer(typingctx, a):
    # the address of a C-contiguous array's first element
    if not (isinstance(a, types.Array) and a.layout == "C"):
        raise TypingError(f"_data_pointer needs a C-contiguous array; got {a}")

    def codegen(context, builder, signature, args):
        return context.make_array(signature.args[0])(context, builder, args[0]).data

    return types.CPointer(a.dtype)(a), codegen


@njit(cache=True, error_model="numpy")
def _alias_compiled(a):
    # ``a`` (C-contiguous) again, without a reference count (no meminfo), as are the views cut
    # from it: for a compiled loop whose caller holds ``a`` while it runs. A counted array's
    # count is raised and lowered with a locked (atomic) instruction in every compiled function
    # it passes through: ~480 of them a step of the 784-128-64-10 training loop at batch size
    # 1, 31% of the step (perf: NRT_incref/NRT_decref).
    return carray(_data_pointer(a), a.shape)


def _alias_interpreted(a):
    # NUMBA_DISABLE_JIT: the array itself
    return a


_alias = _alias_interpreted if config.DISABLE_JIT else _alias_compiled


@njit(cache=True, error_model="numpy")
def _view(buf, off, n, w):
    """(n, w) view of the flat buffer buf (1-D, C-contiguous) from element off; (0, w) when off < 0."""
    if off < 0:
        return _rows(buf, np.int64(0), np.int64(0), w)
    return _rows(buf, off, n, w)
