"""Timing runners over epochs, the compile-time probe, and the training suite."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import BATCH_SIZES, CLOCKS, RUNNERS, SEED
from .machine import _loadavg, matmul_peak, set_threads, thread_info
from .workload import available_runners, he_weights, layer_sizes, load_training_set, make_runner, train_flops_per_sample


#: How long idle worker threads may keep spinning after a runner: OpenBLAS's with its defaults
#: (2**28 cycles, ~0.1 s; fastnn-bench keeps them, as a plain NumPy program has them), and
#: PyTorch's and XLA's pools. In a cell with more than one runner each one starts after that, so
#: that the previous one's threads do not take its cores.
BLAS_SETTLE_S = 0.15


def epoch_order(n_samples, seed=SEED):
    """The seeded permutation every runner walks (int64, as train_steps expects)."""
    return np.random.default_rng(seed).permutation(n_samples).astype(np.int64)


def plan_steps(run, order, batch_size, max_seconds, clock=time.perf_counter):
    """Warm ``run`` up, then choose how many steps to time: the whole epoch if it fits in
    ``max_seconds`` (by a short probe), else as many steps as fit (at least the probe's)."""
    total = -(-len(order) // batch_size)
    # a runner called once an epoch (a whole fit) has a fixed cost per call: probe with more rows
    probe = min(total, max(2, (8192 if getattr(run, "calls", 8) == 1 else 256) // batch_size))
    run(order, 0, probe, batch_size)  # warm-up: compilation, caches, buffer allocation
    t = clock()
    run(order, 0, probe, batch_size)
    per_step = max(clock() - t, 1e-9) / probe
    return total if per_step * total <= max_seconds else max(probe, int(max_seconds / per_step))


def time_training(runners, n_samples, batch_size, max_seconds=2.0, repeats=3, seed=SEED, clock="wall",
                  before=None):
    """Median samples/s of each runner over one epoch (or a step-limited part of one).

    Parameters
    ----------
    runners : dict of name -> run callable (see ``make_runner``); a name is a runner kind, or a
        (kind, threads) pair
    n_samples : int
        Epoch length (rows of the training set).
    max_seconds : float
        A runner whose full epoch would take longer times only as many steps as fit in
        about this long, then extrapolates (``extrapolated`` is True in its result).
        A repeat that runs past 3x this (the machine got busier) stops early, at a chunk
        boundary, and counts the steps it did.
    clock : {'wall', 'cpu'}
        ``cpu`` (process CPU time) is steadier on a shared machine, but only meaningful
        single-threaded: with more threads it adds their times (and their spin-waits).
    before : dict of name -> callable, optional
        Called (untimed) before each of that runner's warm-ups and repeats: e.g. setting its
        thread count, so that runners on different thread counts take turns in one cell.

    Returns
    -------
    dict of name -> {samples_per_s, epoch_s, times, steps, samples, extrapolated}
        ``times``/``steps`` per repeat; samples/s is the median over repeats.
    """
    order = epoch_order(n_samples, seed)
    total = -(-n_samples // batch_size)
    # a runner that times itself in its own process (the JAX worker) brings its clocks
    clocks = {name: getattr(run, "clocks", CLOCKS)[clock] for name, run in runners.items()}
    setup = {name: (before or {}).get(name) or (lambda: None) for name in runners}
    plan = {}
    for name, run in runners.items():
        setup[name]()
        plan[name] = plan_steps(run, order, batch_size, max_seconds, clocks[name])
        if hasattr(run, "prepare"):  # e.g. JAX: compile the timed call's shapes untimed
            run.prepare(order, plan[name], batch_size)
    times = {name: [] for name in runners}
    steps = {name: [] for name in runners}
    names = list(runners)
    for i in range(repeats):  # round-robin so that noise bursts hit every runner alike, the order
        for name in names if i % 2 == 0 else names[::-1]:  # reversed every other round: no runner always first
            run = runners[name]
            setup[name]()
            if len(runners) > 1:
                time.sleep(BLAS_SETTLE_S)  # let the previous runner's idle threads stop spinning
            done, sec = _timed_steps(run, order, batch_size, plan[name], 3 * max_seconds, clocks[name],
                                     getattr(run, "calls", 8))
            times[name].append(sec)
            steps[name].append(done)
    out = {}
    for name in runners:
        rates = [min(d * batch_size, n_samples) / t for d, t in zip(steps[name], times[name])]
        sps = statistics.median(rates)
        out[name] = {"samples_per_s": sps, "epoch_s": n_samples / sps, "times": times[name], "steps": steps[name],
                     "samples": min(max(steps[name]) * batch_size, n_samples),
                     "extrapolated": min(steps[name]) < total}
    return out


def _timed_steps(run, order, batch_size, n_steps, limit_s, clock, calls=8):
    """Run ``n_steps`` steps from the start of ``order`` in at most ``calls`` calls (continuing
    the epoch; a fit runner takes 1: one fit an epoch); stop after a call that ends past
    ``limit_s``. Returns (steps done, seconds)."""
    chunk = -(-n_steps // calls)
    done, t0 = 0, clock()
    while done < n_steps:
        k = min(chunk, n_steps - done)
        got = run(order, done * batch_size, k, batch_size)
        if got != k:
            raise RuntimeError(f"applied {got} of {k} steps (non-finite loss?)")
        done += k
        if clock() - t0 > limit_s:
            break
    return done, clock() - t0


def compile_times(hidden=(128, 64), batch_size=32, cache_dir=None):
    """Import-to-first-step seconds of the Numba backend in fresh processes: cold, then cached.

    Each probe process starts its clock before importing NumPy and fastnn, builds the
    network, runs one ``train_steps`` step (compiling or loading from the cache), then
    a second step (already compiled) whose time is reported as ``step_s``. ``compile_units``:
    the top-level units compiled during the first step, with seconds; ``compiled_functions``:
    how many functions they compiled in all (0 when everything came from the cache).
    """
    own = cache_dir is None
    cache_dir = cache_dir or tempfile.mkdtemp(prefix="fastnn-bench-cache-")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    code = _PROBE.format(hidden=list(hidden), batch_size=batch_size)
    result = {}
    try:
        for label in ("cold", "cached"):
            proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
            if proc.returncode:
                raise RuntimeError(f"compile probe failed:\n{proc.stderr[-2000:]}")
            result[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if own:
            import shutil

            shutil.rmtree(cache_dir, ignore_errors=True)
    return result


_PROBE = """
import time
t0 = time.perf_counter()
import json
import numpy as np
from fastnn import bench
from fastnn.backends import get_backend
backend = get_backend("numba")
t_import = time.perf_counter() - t0
sizes = bench.layer_sizes(784, {hidden})
rng = np.random.default_rng(0)
x = (rng.random((512, 784)) * (rng.random((512, 784)) < 0.2)).astype(np.float32)
y = rng.integers(0, 10, 512).astype(np.int64)
order = np.arange(512, dtype=np.int64)
run = bench.make_runner("numba", x, y, bench.he_weights(sizes))
from fastnn.backends import jit_progress
t1 = time.perf_counter()
with jit_progress.record() as rec:
    run(order, 0, 1, {batch_size})
t_first = time.perf_counter() - t1
t2 = time.perf_counter()
run(order, 0, 1, {batch_size})
t_step = time.perf_counter() - t2
print(json.dumps(dict(import_s=t_import, first_step_s=t_first, import_to_first_step_s=t_import + t_first, step_s=t_step,
                      compiled_functions=len(rec.functions), compile_units=[[n, round(s, 3)] for n, s in rec.units])))
"""


# ----------------------------------------------------------------------------- the suite


def run_training_suite(configs, runners=RUNNERS, threads=(None,), max_seconds=2.0, repeats=3, limit=None,
                       peak_size=2048, clock="wall", log=print):
    """Time every (dataset, hidden layers, batch sizes) config at every thread count.

    ``configs`` is a list of (dataset, hidden tuple, batch sizes). The float32 matmul
    peak is measured at each thread count (``peak_size`` 0 skips it). Returns a list of
    result records, one per (threads, dataset, layers, batch size).
    """
    kinds, skipped = available_runners(runners)
    for kind, why in skipped.items():
        log(f"[skip] {kind}: {why}")
    try:
        return _suite(configs, kinds, threads, max_seconds, repeats, limit, peak_size, clock, log)
    finally:
        if "jax" in kinds:
            from .jax_peer import stop_workers

            stop_workers()


def _suite(configs, kinds, threads, max_seconds, repeats, limit, peak_size, clock, log):
    """Each cell times every runner on every thread count in turns (``time_training``'s round
    robin), so that the machine drifting between thread counts cannot decide their ratio."""
    data, records, tinfo, peaks = {}, {t: [] for t in threads}, {}, {}
    for t in threads:
        tinfo[t] = set_threads(t) if t else thread_info()
        peaks[t] = matmul_peak(peak_size, clock=CLOCKS[clock]) if peak_size else None
        if peaks[t]:
            log(f"threads {tinfo[t]}: float32 matmul peak (np.dot {peak_size}^3) {peaks[t]:.1f} GFLOP/s")
    for dataset, hidden, batch_sizes in configs:
        if dataset not in data:
            data[dataset] = load_training_set(dataset, limit)
        x, y = data[dataset]
        sizes = layer_sizes(x.shape[1], hidden)
        weights = he_weights(sizes)
        for bs in batch_sizes:
            # Fresh runners per batch size: every one starts from the same weights.
            runs, before = {}, {}
            for t in threads:
                if t:
                    set_threads(t)  # before making them: the JAX worker is started for this count
                for k in kinds:
                    runs[k, t] = make_runner(k, x, y, weights)
                    before[k, t] = (lambda t=t: set_threads(t)) if t else None
            res = time_training(runs, len(x), bs, max_seconds=max_seconds, repeats=repeats, clock=clock,
                                before=before)
            load = _loadavg()
            for t in threads:
                cell = {k: res[k, t] for k in kinds}
                for k in kinds:  # once-per-fit input preparation, reported beside the epoch
                    run = runs[k, t]
                    if hasattr(run, "prepare_seconds"):
                        cell[k]["prepare_s"] = run.prepare_seconds
                    if hasattr(run, "usage"):  # the JAX worker: how many cores its timed calls kept busy
                        cell[k].update(run.usage())
                rec = {"dataset": dataset, "layers": sizes, "batch_size": bs, "threads": tinfo[t],
                       "n_samples": len(x), "flops_per_sample": train_flops_per_sample(sizes), "peak_gflops": peaks[t],
                       "loadavg": load, "clock": clock, "results": cell}
                records[t].append(rec)
                log(_one_line(rec))
    return [rec for t in threads for rec in records[t]]  # grouped by thread count, as the tables are


def _one_line(rec):
    parts = [f"{k} {v['samples_per_s']:,.0f}/s{'*' if v['extrapolated'] else ''}" for k, v in rec["results"].items()]
    name = f"{rec['dataset']} {'-'.join(map(str, rec['layers']))} bs={rec['batch_size']} t={rec['threads']['numba']}"
    return f"  {name}: " + ", ".join(parts)



def default_configs(quick=False):
    """The default comparison: MNIST 128-64 at all batch sizes, KMNIST at 128, 1024-1024 at 128 and 512."""
    if quick:
        return [("mnist", (128, 64), (8, 128)), ("mnist", (1024, 1024), (128,))]
    return [("mnist", (128, 64), BATCH_SIZES), ("kmnist", (128, 64), (128,)), ("mnist", (1024, 1024), (128, 512))]

