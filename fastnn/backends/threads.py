"""The one place that sets how many threads fastnn computes on: Numba's and every BLAS copy's.

``threads=`` on ``Sequential``/``MLP`` and ``MLPClassifier`` (scoped: ``limit_threads``)
and ``fastnn-train --threads`` (for the whole process: ``set_threads``) all come here.
BLAS goes through ``blas.controller()``, the process's one threadpoolctl controller
(scanned once), so every copy is covered: NumPy's, SciPy's (the one compiled code calls),
MKL or a system OpenBLAS. The Numba backend's training loop holds BLAS to one thread
inside itself anyway (``jit_gemm``); the NumPy backend's products use the count set here.
"""

import contextlib
import numbers

import numba

from ..validation import Interval, check_value
from . import blas


def check_threads(n, name="threads"):
    """``n`` as an int in [1, NUMBA_NUM_THREADS], or a ValueError naming ``name`` and the fix."""
    pool = int(numba.config.NUMBA_NUM_THREADS)
    try:
        return int(check_value(name, n, Interval("int", 1, pool)))
    except ValueError as exc:
        if isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > pool:
            raise ValueError(f"{exc}; Numba's thread pool has {pool} threads: to use more, set the environment "
                             f"variable NUMBA_NUM_THREADS={n} before Python starts") from None
        raise


def set_threads(n):
    """From now on, ``n`` threads in Numba and in every BLAS copy (None: leave them); returns
    Numba's count in use."""
    if n is not None:
        n = check_threads(n)
        numba.set_num_threads(n)
        blas.set_threads(n)
    return int(numba.get_num_threads())


@contextlib.contextmanager
def limit_threads(n):
    """Within the block, ``n`` threads in Numba and in every BLAS copy; each count is restored
    afterwards, also after an exception. ``n=None`` changes nothing (and costs nothing)."""
    if n is None:
        yield
        return
    n = check_threads(n)
    numba_before = numba.get_num_threads()
    blas_before = [(lib, int(lib.num_threads)) for lib in blas.controller().lib_controllers]
    try:
        numba.set_num_threads(n)
        for lib, _ in blas_before:
            lib.set_num_threads(n)
        yield
    finally:
        numba.set_num_threads(numba_before)
        for lib, before in blas_before:
            lib.set_num_threads(before)
