"""The ``fastnn-bench`` command: argparse onto the functions of this package.

``DESCRIPTION`` is what ``fastnn-bench --help`` shows users.
"""

DESCRIPTION = """\
Time one training epoch of fastnn's Numba backend against its NumPy backend, an
independent hand-written NumPy loop and (when installed) PyTorch, on real MNIST-style
data at several batch sizes, and print the table of samples per second and ratios.
Writes bench.json and bench.png (kernels.json with --kernels) into --out DIR, by
default ./bench_results/ under the current directory. The full run takes several
minutes; --quick takes well under a minute."""

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from ..atomic import write_text
from ..provenance import provenance
from .checks import competing_process, fresh_checks, train_command
from .common import BATCH_SIZES, CLOCKS, LR, RUNNERS, SEED
from .kernels import format_kernel_table, run_kernel_suite
from .machine import describe_blas, describe_machine, describe_target, matmul_peak, set_threads, _threading_layer
from .report import format_checks, format_table, format_train_row, plot_chart
from .training import compile_times, default_configs, run_training_suite


def parse_args(argv=None):
    from ..cli import add_version_arg

    p = argparse.ArgumentParser(prog="fastnn-bench", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_arg(p)
    p.add_argument("--dataset", nargs="+", help="datasets to time (default: the built-in comparison)")
    p.add_argument("--layers", nargs="+", type=int, help="hidden layer widths, e.g. --layers 128 64")
    p.add_argument("--batch-sizes", nargs="+", type=int, help=f"batch sizes (default {list(BATCH_SIZES)})")
    p.add_argument("--runners", nargs="+", default=list(RUNNERS), help=f"subset of {list(RUNNERS)}")
    p.add_argument("--threads", nargs="+", type=int, help="thread counts to compare, e.g. 1 2 (default: current)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per cell; the median is reported")
    p.add_argument("--max-seconds", type=float, default=2.0,
                   help="time at most about this long per repeat; longer epochs are step-limited and extrapolated")
    p.add_argument("--full-epoch", action="store_true", help="never step-limit: time whole epochs")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time (default), or process CPU time: steadier on a busy machine, 1 thread only")
    p.add_argument("--quick", action="store_true",
                   help="a smaller comparison: 3 cells, 1 repeat of at most 0.5 s each, no compile-time probe")
    p.add_argument("--limit", type=int, help="use only the first N training rows (smoke tests)")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the cold/cached compile-time probe (about a minute; --quick skips it too)")
    p.add_argument("--peak-size", type=int, default=2048, help="matrix size of the np.dot peak measurement (0: skip)")
    p.add_argument("--kernels", action="store_true", help="time the per-kernel table instead of training")
    p.add_argument("--busy", action="store_true",
                   help="run one competing CPU-bound process (while 1: pass) beside the timing, as on a busy machine")
    p.add_argument("--no-fresh-check", action="store_true",
                   help="skip timing each NumPy baseline again alone in a fresh process (--quick skips it too)")
    p.add_argument("--no-train-row", action="store_true",
                   help="skip the end-to-end fastnn-train row (--quick skips it too)")
    p.add_argument("--target", nargs="+", metavar="CPU",
                   help="run the benchmark once per Numba target CPU, each in a fresh process: 'host', or an LLVM "
                        "CPU name compiled with its own features (haswell, sandybridge, generic, ...), and tabulate "
                        "numba/numpy per target (targets.json); see fastnn/bench/targets.py")
    p.add_argument("--out", default="bench_results", metavar="DIR",
                   help="folder for bench.json and bench.png, or kernels.json (default: ./bench_results)")
    args = p.parse_args(argv)
    for name in ("batch_sizes", "threads", "layers"):
        vals = getattr(args, name) or []
        if any(v < 1 for v in vals):
            p.error(f"--{name.replace('_', '-')} values must be >= 1, got {vals}")
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.clock == "cpu" and args.threads and args.threads != [1]:
        p.error("--clock cpu adds up every thread's time: use it with --threads 1")
    return args


def main(argv=None):
    if argv is None and _reexec_wanted():  # the command line (a library call keeps its process)
        return _reexec(sys.argv[1:])
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.target:
        from .targets import run_targets

        return run_targets(args.target, sys.argv[1:] if argv is None else list(argv), out)
    if args.quick:
        # quick means quick: the cold-compile probe alone takes about a minute
        args.repeats, args.max_seconds, args.no_compile = 1, min(args.max_seconds, 0.5), True
        args.no_fresh_check = args.no_train_row = True
    if args.full_epoch:
        args.max_seconds = math.inf
    if args.dataset or args.layers or args.batch_sizes:
        configs = [(d, tuple(args.layers or (128, 64)), tuple(args.batch_sizes or BATCH_SIZES))
                   for d in (args.dataset or ["mnist"])]
    else:
        configs = default_configs(args.quick)
    machine = describe_machine()
    print(f"machine: {machine['cpu']}, {machine['logical_cpus']} CPUs (SIMD {machine.get('simd')}), {machine['blas']}, "
          f"numpy {machine['numpy']}, numba {machine['numba']}, torch {machine['torch']}; "
          f"numba target {describe_target(machine['numba_target'])}")
    for line in describe_blas(machine["blas_libraries"]):  # every copy: NumPy's, SciPy's (Numba's np.dot) ...
        print(f"BLAS: {line}")
    load = machine["loadavg"]
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} on {os.cpu_count()} CPUs: other work will skew these timings "
              "(multi-threaded ones most); compare ratios, or rerun on a quiet machine")
    if args.kernels:
        if args.threads:
            print(f"threads: {set_threads(args.threads[0])}")
        peak = matmul_peak(args.peak_size, clock=CLOCKS[args.clock])
        print(f"float32 matmul peak (np.dot {args.peak_size}^3): {peak:.1f} GFLOP/s")
        records = run_kernel_suite(args.batch_sizes or BATCH_SIZES, repeats=max(args.repeats, 3), clock=args.clock)
        table = format_kernel_table(records, peak)
        print(table)
        result = {"machine": machine, "peak_gflops": peak, "clock": args.clock, "kernels": records, "table": table}
        write_text(out / "kernels.json", json.dumps(result, indent=1))
        print(f"\nwrote {out / 'kernels.json'}")
        return 0
    compile_info = None
    if not args.no_compile and "numba" in args.runners:
        compile_info = compile_times()
        c = compile_info
        print(f"numba import-to-first-step: cold {c['cold']['import_to_first_step_s']:.2f} s, "
              f"cached {c['cached']['import_to_first_step_s']:.2f} s (import {c['cached']['import_s']:.2f} s); "
              f"cold compiled {c['cold']['compiled_functions']} functions in "
              + ", ".join(f"{n.rsplit('.', 1)[-1]} {s:.1f} s" for n, s in c['cold']['compile_units']))
    t0 = time.perf_counter()
    import numba

    # One thread count for every engine: by default Numba's (NUMBA_NUM_THREADS honoured),
    # applied to both OpenBLAS copies and PyTorch too, so that no column gets more cores.
    threads = list(dict.fromkeys(args.threads)) if args.threads else [numba.get_num_threads()]
    if args.clock == "cpu" and threads != [1]:
        threads = [1]
        print("--clock cpu: timing with 1 thread (CPU time would add up every thread's time)")
    checks, train_rows = [], []
    with competing_process(args.busy):
        records = run_training_suite(configs, args.runners, threads, args.max_seconds, args.repeats,
                                     args.limit, args.peak_size, args.clock)
        for rec in records:
            rec["busy"] = args.busy
        if not args.no_fresh_check:
            print("each NumPy baseline alone in a fresh process (NumPy imported first, as a plain NumPy program):")
            checks = fresh_checks(records, args.max_seconds, args.limit)
        if not args.no_train_row:
            for t in threads:
                train_rows.append(train_command(t, limit=args.limit))
                print(format_train_row(train_rows[-1], records))
    machine["numba_threading_layer"] = _threading_layer()
    table = format_table(records) + "\n" + format_checks(checks, train_rows, records)
    print(table)
    result = {"machine": machine, "provenance": provenance(), "compile": compile_info, "records": records,
              "fresh_checks": checks, "train_rows": train_rows,
              "settings": {"lr": LR, "seed": SEED, "repeats": args.repeats, "max_seconds": args.max_seconds,
                           "limit": args.limit, "clock": args.clock, "busy": args.busy, "threads": threads,
                           "argv": sys.argv[1:] if argv is None else list(argv)},
              "seconds": time.perf_counter() - t0, "table": table}
    write_text(out / "bench.json", json.dumps(result, indent=1, default=float))
    plot_chart(records, out / "bench.png")
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'} ({result['seconds']:.0f} s of timing)")
    return 0


_REEXEC_FLAG = "FASTNN_BENCH_PLAIN_NUMPY"


def _reexec_wanted():
    """Whether this process's NumPy loaded with the OpenBLAS settings ``import fastnn`` applies
    (``fastnn.ENV_DEFAULTS_APPLIED``): then the bench runs again in a process that loads
    NumPy first, so that its baselines run as a plain NumPy program does. The NumPy
    baselines' BLAS workers otherwise sleep after every call (OPENBLAS_THREAD_TIMEOUT), and
    on two threads each product waits for a worker to wake up."""
    import fastnn

    return os.environ.get(_REEXEC_FLAG) is None and "OPENBLAS_THREAD_TIMEOUT" in fastnn.ENV_DEFAULTS_APPLIED


def _reexec(argv):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env[_REEXEC_FLAG] = "1"
    code = "import numpy, sys; from fastnn.bench.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], env=env).returncode
