"""``fastnn-bench``: how fast fastnn trains, next to plain NumPy and (optionally) PyTorch.

One code path serves the command line, the library and the pytest-benchmark suites
in ``benchmarks/``: they all call the functions of this package
(``machine``, ``workload``, ``training``, ``report``, ``kernels``, ``cli``).

What is measured
----------------
* **Training throughput** (samples/s) of one epoch of plain SGD on the real
  60,000-image training sets, per batch size, for these *runners*:

  ``numba``      fastnn's compiled backend (``backend.train_steps``);
  ``numpy``      fastnn's NumPy backend, the "pure NumPy" baseline, same call;
  ``reference``  an independent hand-written NumPy loop
                 (``fastnn/bench/reference_numpy_mlp.py``) that keeps the baseline honest;
  ``torch``      PyTorch on CPU, only when it is importable (never a dependency).

  All runners start from the same He-initialised weights and walk the same seeded
  permutation. Each is warmed up first (compilation is never timed), then timed
  ``repeats`` times, round-robin across runners so that machine noise hits them alike;
  the median is reported, and ratios are computed from medians of the same run. An
  epoch is run in up to 8 ``train_steps`` calls (as ``fit`` runs it in chunks).
  Where a full epoch would take longer than ``max_seconds`` (NumPy at batch 1, the
  1024-1024 network), a fixed number of steps is timed and samples/s extrapolated;
  the table marks such cells with ``*``.
* **Effective GFLOP/s**: dense training FLOPs per sample times samples/s, as a
  percentage of the machine's measured float32 matmul peak (a large ``np.dot``).
  Zero-skipping kernels do less arithmetic than counted, so "effective" may exceed
  what the hardware could do densely.
* **Compile time**: import-to-first-training-step of the Numba backend in a fresh
  process, cold (empty ``NUMBA_CACHE_DIR``) and cached (second process, same cache).
* **Per-kernel timings** (``--kernels``): matmuls on the real layer shapes, fused
  activations, softmax+NLL and optimizer updates, for both backends.

Threads: ``--threads 1 2`` measures each count in the same process, setting Numba's
thread count, every BLAS copy's that threadpoolctl finds (NumPy's and SciPy's bundled
OpenBLAS, SciPy's running ``np.dot`` inside Numba code; MKL ...) and PyTorch's alike.
Without it, Numba's count (``NUMBA_NUM_THREADS`` is honoured) is applied to all of them.
The counts used are recorded, and every BLAS copy found is reported (library, version,
threads, kernels, file path).
"""

from .common import BATCH_SIZES, CLOCKS, LR, REFERENCE_PATH, RUNNERS, SEED
from .kernels import (MATMUL_SHAPES, MATMUL_VARIANTS, XT_VARIANTS, case_id, format_kernel_table, kernel_cases,
                      make_kernel_call, matmul_impls, run_kernel_suite, time_call)
from .machine import blas_libraries, blas_threads, cpu_model, describe_blas, describe_machine, matmul_peak, set_threads, thread_info
from .report import format_table, plot_chart, ratio
from .training import (compile_times, default_configs, epoch_order, plan_steps, run_training_suite,
                       time_training)
from .workload import (available_runners, build_net, build_sgd, he_weights, layer_sizes, load_reference,
                       load_training_set, make_runner, train_flops_per_sample)
from .cli import main, parse_args

__all__ = [
    "BATCH_SIZES", "CLOCKS", "LR", "REFERENCE_PATH", "RUNNERS", "SEED", "MATMUL_SHAPES", "MATMUL_VARIANTS",
    "XT_VARIANTS", "available_runners", "blas_libraries", "blas_threads", "build_net", "build_sgd", "case_id", "compile_times",
    "cpu_model", "default_configs", "describe_blas", "describe_machine", "epoch_order", "format_kernel_table", "format_table",
    "he_weights", "kernel_cases", "layer_sizes", "load_reference", "load_training_set", "main", "make_kernel_call",
    "make_runner", "matmul_impls", "matmul_peak", "parse_args", "plan_steps", "plot_chart", "ratio",
    "run_kernel_suite", "run_training_suite", "set_threads", "thread_info", "time_call", "time_training",
    "train_flops_per_sample",
]
