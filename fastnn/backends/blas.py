"""Thread counts of the OpenBLAS copies that NumPy and SciPy bundle, through their C API.

NumPy's copy runs ``np.dot`` from Python; SciPy's runs ``np.dot`` inside ``@njit`` code
(Numba calls BLAS through ``scipy.linalg.cython_blas``). Each has its own thread pool.
Found by file name next to the packages (``numpy.libs``/``scipy.libs``, as pip wheels lay
them out); where they are not found, the functions here do nothing.
"""

import contextlib
import ctypes
import functools
import glob
from pathlib import Path

import numpy as np

OWNERS = ("numpy", "scipy")


@functools.lru_cache(maxsize=None)
def openblas_libs():
    """{owner: (ctypes lib, symbol prefix, symbol suffix)} of the bundled OpenBLAS copies found."""
    found = {}
    site = Path(np.__file__).resolve().parent.parent
    for owner in OWNERS:
        for path in sorted(glob.glob(str(site / f"{owner}.libs" / "*openblas*"))):
            try:
                lib = ctypes.CDLL(path)  # the same handle the package loaded (or will load)
            except OSError:
                continue
            for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                                   ("openblas", "")):
                if hasattr(lib, f"{prefix}_get_num_threads{suffix}"):
                    found[owner] = (lib, prefix, suffix)
                    break
    return found


def get_threads(owner):
    """Threads of ``owner``'s OpenBLAS ('numpy' or 'scipy'), or None when it was not found."""
    if owner not in openblas_libs():
        return None
    lib, prefix, suffix = openblas_libs()[owner]
    return int(getattr(lib, f"{prefix}_get_num_threads{suffix}")())


def set_threads(owner, n):
    """Use ``n`` threads in ``owner``'s OpenBLAS (no-op when it was not found)."""
    if owner in openblas_libs():
        lib, prefix, suffix = openblas_libs()[owner]
        getattr(lib, f"{prefix}_set_num_threads{suffix}")(int(n))


@contextlib.contextmanager
def at_most_threads(owner, n):
    """Within the block, ``owner``'s OpenBLAS uses at most ``n`` threads; restored afterwards."""
    before = get_threads(owner)
    if before is None or before <= n:
        yield
        return
    set_threads(owner, n)
    try:
        yield
    finally:
        set_threads(owner, before)
