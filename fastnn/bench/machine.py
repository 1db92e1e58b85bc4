"""The machine under test: CPU, versions, BLAS libraries, thread control, matmul peak.

Thread counts of BLAS are read and set through threadpoolctl (``fastnn.backends.blas``),
for every copy it finds: NumPy's and SciPy's bundled OpenBLAS (SciPy's runs ``np.dot``
inside Numba code), MKL, BLIS ...
"""

import os
import platform
import statistics
import sys
import time

import numpy as np

from ..backends import blas, threads
from ..provenance import cpu_model, numba_target
from .common import SEED


def blas_threads():
    """{file path: threads} of every BLAS copy threadpoolctl finds."""
    return blas.get_threads()


def blas_libraries():
    """Every BLAS copy loaded (a fresh threadpoolctl scan): library, version, threads,
    internal API, kernels (architecture) and file path, one dict each."""
    return [{k: lib.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer", "architecture",
                                     "filepath")} for lib in blas.libraries(fresh=True)]


def describe_blas(libraries):
    """One line per BLAS copy, e.g. ``openblas 0.3.30 (Haswell kernels, pthreads, 2 threads) .../libscipy_openblas.so``."""
    return [f"{lib['internal_api']} {lib['version']} ({lib['architecture']} kernels, {lib['threading_layer']}, "
            f"{lib['num_threads']} threads) {lib['filepath']}" for lib in libraries]


def describe_target(target):
    """The Numba target of ``describe_machine``, e.g. ``haswell (8 float32 lanes, FMA; first layer:
    zero-skipping lists)``; BLAS where the list kernels would lose to it (see backends/target.py)."""
    path = "zero-skipping lists" if target["first_layer"] == "lists" else "BLAS"
    return (f"{target['cpu']} ({target['lanes']} float32 lanes, {'FMA' if target['fma'] else 'no FMA'}; "
            f"first layer: {path})")


def set_threads(n):
    """Use ``n`` threads in Numba, every BLAS copy (``backends.threads``) and PyTorch (if imported); returns them."""
    threads.set_threads(n)  # Numba and every BLAS copy, checked against Numba's pool
    if sys.modules.get("torch") is not None:  # imported (None: an import that failed or was blocked)
        sys.modules["torch"].set_num_threads(n)
    return thread_info()


def thread_info():
    import numba

    info = {"numba": numba.get_num_threads(), "numba_pool": numba.config.NUMBA_NUM_THREADS, "blas": blas_threads()}
    if sys.modules.get("torch") is not None:
        info["torch"] = sys.modules["torch"].get_num_threads()
    return info


def describe_machine():
    """Versions, CPU, BLAS library and thread settings, for the results file."""
    import numba

    import fastnn

    info = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "fastnn": fastnn.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": _torch_version(),
        "threads": thread_info(),
        "loadavg": _loadavg(),
        "env": {k: os.environ[k] for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }
    try:
        info["simd"] = np.show_config(mode="dicts").get("SIMD Extensions", {}).get("found")
    except Exception:  # older NumPy: no dict mode
        info["simd"] = None
    info["numba_target"] = numba_target()
    info["blas_libraries"] = blas_libraries()
    info["blas"] = "; ".join(f"{lib['internal_api']} {lib['version']}" for lib in info["blas_libraries"]) or "none found"
    return info


def _threading_layer():
    """Numba's threading layer (omp, tbb or workqueue); known only after a parallel kernel ran."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return None


def _loadavg():
    """1-minute load average (None where unavailable): other work on the machine skews timings."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _torch_version():
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def matmul_peak(n=2048, repeats=5, clock=time.perf_counter):
    """Measured float32 matmul peak in GFLOP/s: median of ``repeats`` (n x n) @ (n x n) np.dot."""
    rng = np.random.default_rng(SEED)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    c = np.empty((n, n), dtype=np.float32)
    np.dot(a, b, out=c)  # warm-up: thread pool start, page faults
    times = []
    for _ in range(repeats):
        t = clock()
        np.dot(a, b, out=c)
        times.append(clock() - t)
    return 2.0 * n**3 / statistics.median(times) / 1e9

