"""Thread counts of every BLAS library loaded in the process, through threadpoolctl.

There is usually more than one copy: pip's NumPy and SciPy wheels each bundle an OpenBLAS
(NumPy's runs ``np.dot`` from Python; SciPy's runs ``np.dot`` inside ``@njit`` code, which
Numba calls through ``scipy.linalg.cython_blas``), conda brings MKL, a distribution its
system OpenBLAS or BLIS. threadpoolctl finds them all, whatever their file names, and
each keeps its own thread pool.

One ``ThreadpoolController`` is kept for the process (a fresh scan of the loaded
libraries costs about 1.6 ms, too much for every ``train_steps`` call). It is created on
first use, after SciPy's BLAS is loaded, so that it sees the copy compiled code calls.
"""

import contextlib
import functools

from threadpoolctl import ThreadpoolController

USER_API = "blas"


@functools.lru_cache(maxsize=None)
def controller():
    """The process's ThreadpoolController, restricted to BLAS libraries (scanned once)."""
    import scipy.linalg.cython_blas  # noqa: F401  (load the copy Numba's np.dot calls before scanning)

    return ThreadpoolController().select(user_api=USER_API)


def libraries(fresh=False):
    """One dict per BLAS copy: ``internal_api`` (openblas, mkl, blis ...), ``version``,
    ``num_threads``, ``threading_layer``, ``architecture``, ``prefix`` and ``filepath``.

    ``fresh=True`` scans again (1.6 ms), to see libraries loaded since the first scan
    (e.g. by a later ``import torch``).
    """
    found = ThreadpoolController().select(user_api=USER_API) if fresh else controller()
    return found.info()


def get_threads():
    """{filepath: threads} of every BLAS copy."""
    return {lib.filepath: int(lib.num_threads) for lib in controller().lib_controllers}


def set_threads(n):
    """Use ``n`` threads in every BLAS copy (until changed again)."""
    for lib in controller().lib_controllers:
        lib.set_num_threads(int(n))


@contextlib.contextmanager
def at_most_threads(n):
    """Within the block, every BLAS copy uses at most ``n`` threads; each is restored afterwards."""
    lowered = []
    try:
        for lib in controller().lib_controllers:
            before = int(lib.num_threads)
            if before > n:
                lib.set_num_threads(int(n))
                lowered.append((lib, before))
        yield
    finally:
        for lib, before in lowered:
            lib.set_num_threads(before)
