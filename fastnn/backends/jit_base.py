"""Shared by every Numba module of the backend: the thread pool, the serial/parallel thresholds,
and the few helpers all kernel families use (non-zero counting, flat-buffer views).

Holds no kernel of its own; import it before any module with ``prange`` code.
"""

from numba import njit
from numba.np.ufunc import parallel as _numba_parallel

from .numba_sparse import SPARSE_MAX_DENSITY, sparse_enough

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
def _prefer_sparse(a):
    if SPARSE_MAX_DENSITY < 0:  # this CPU's first layer is BLAS (target.py): nothing to count
        return False
    return sparse_enough(_count_nonzero(a), a.shape[0], a.shape[1])


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


@njit(cache=True, error_model="numpy")
def _view(buf, off, n, w):
    if off < 0:
        return buf[0:0].reshape((0, w))
    return buf[off:off + n * w].reshape((n, w))
