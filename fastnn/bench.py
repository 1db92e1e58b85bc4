"""``fastnn-bench``: how fast fastnn trains, next to plain NumPy and (optionally) PyTorch.

One code path serves the command line, the library and the pytest-benchmark suites
in ``benchmarks/``: they all call the functions below.

What is measured
----------------
* **Training throughput** (samples/s) of one epoch of plain SGD on the real
  60,000-image training sets, per batch size, for these *runners*:

  ``numba``      fastnn's compiled backend (``backend.train_steps``);
  ``numpy``      fastnn's NumPy backend, the "pure NumPy" baseline, same call;
  ``reference``  an independent hand-written NumPy loop
                 (``benchmarks/reference_numpy_mlp.py``) that keeps the baseline honest;
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
thread count, both bundled OpenBLAS copies' (NumPy's, and SciPy's, which runs ``np.dot``
inside Numba code) and PyTorch's alike. Without it, Numba's count (``NUMBA_NUM_THREADS``
is honoured) is applied to all of them. The counts used are recorded.
"""

import argparse
import ctypes
import glob
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNNERS = ("numba", "numpy", "reference", "torch")
BATCH_SIZES = (1, 8, 32, 128, 512)
SEED = 0
LR = 0.01
# Timers: wall time, or process CPU time (steadier on a shared machine; 1 thread only).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
REFERENCE_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_numpy_mlp.py"


# ----------------------------------------------------------------------------- machine


def _openblas_libs():
    """{owner: (ctypes lib, symbol prefix, suffix)} for the OpenBLAS copies bundled with NumPy
    and SciPy. NumPy's runs ``np.dot``; SciPy's runs ``np.dot`` *inside @njit* (Numba calls
    BLAS through ``scipy.linalg.cython_blas``). Each has its own thread pool."""
    found = {}
    site = Path(np.__file__).resolve().parent.parent
    for owner in ("numpy", "scipy"):
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


def _openblas():
    """NumPy's OpenBLAS as (lib, (prefix, suffix)), or (None, ('', ''))."""
    lib, prefix, suffix = _openblas_libs().get("numpy", (None, "", ""))
    return lib, (prefix, suffix)


def blas_threads():
    """{owner: threads} of each bundled OpenBLAS (numpy: np.dot; scipy: np.dot in Numba code)."""
    return {owner: int(getattr(lib, f"{prefix}_get_num_threads{suffix}")())
            for owner, (lib, prefix, suffix) in _openblas_libs().items()}


def set_threads(n):
    """Use ``n`` threads in Numba, both bundled OpenBLAS copies and PyTorch (if imported); returns them."""
    import numba

    pool = numba.config.NUMBA_NUM_THREADS
    if n > pool:
        raise ValueError(f"--threads {n} exceeds Numba's thread pool of {pool}; run with NUMBA_NUM_THREADS={n}")
    numba.set_num_threads(n)
    for lib, prefix, suffix in _openblas_libs().values():
        getattr(lib, f"{prefix}_set_num_threads{suffix}")(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return thread_info()


def thread_info():
    import numba

    info = {"numba": numba.get_num_threads(), "numba_pool": numba.config.NUMBA_NUM_THREADS, "blas": blas_threads()}
    if "torch" in sys.modules:
        info["torch"] = sys.modules["torch"].get_num_threads()
    return info


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name')} {blas.get('version')}"
        info["simd"] = config.get("SIMD Extensions", {}).get("found")
    except Exception:  # older NumPy: no dict mode
        info["blas"] = "unknown"
    lib, (prefix, suffix) = _openblas()
    if lib is not None and hasattr(lib, f"{prefix}_get_corename{suffix}"):
        fn = getattr(lib, f"{prefix}_get_corename{suffix}")
        fn.restype = ctypes.c_char_p
        info["blas"] += f" ({fn().decode()} kernels)"
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


# ----------------------------------------------------------------------------- data & network


def load_training_set(name, limit=None):
    """Training set ``name`` as (x float32 (n, 784) in [0, 1], y int64 (n,)), first ``limit`` rows.

    Never downloads: benchmarks must not touch the network (set ``FASTNN_DATA``).
    """
    from fastnn.datasets import load_dataset

    (x, y), _ = load_dataset(name, download=False)
    if limit:
        x, y = x[:limit].copy(), y[:limit].copy()
    return x, y


def layer_sizes(n_in, hidden, n_out=10):
    return [n_in, *hidden, n_out]


def he_weights(sizes, seed=SEED):
    """He-normal (W, b) per dense layer, float32, biases zero: the shared starting point."""
    rng = np.random.default_rng(seed)
    return [
        ((rng.standard_normal((a, b)) * math.sqrt(2.0 / a)).astype(np.float32), np.zeros(b, dtype=np.float32))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]


def build_net(weights):
    """NetBuffers of a ReLU MLP (ReLU fused into every dense layer but the last) holding ``weights``."""
    from fastnn.backends import spec as S

    n = len(weights)
    layers = [("dense", w.shape[0], w.shape[1], S.ACT_RELU if i < n - 1 else S.ACT_NONE) for i, (w, _) in enumerate(weights)]
    net = S.allocate(layers)
    for i, (w, b) in enumerate(weights):
        W, bb = S.dense_views(net, i)
        W[...], bb[...] = w, b
    return net


def build_sgd(net):
    """OptBuffers for plain SGD (no momentum, no weight decay)."""
    from fastnn.backends import spec as S

    return S.OptBuffers(S.OPT_SGD, np.zeros(4), np.zeros((2, len(net.params)), dtype=np.float32), np.zeros(1, dtype=np.int64))


def train_flops_per_sample(sizes):
    """Dense FLOPs of one training sample: forward, dW, and dx for every layer but the first."""
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * sum(macs) * 3 - 2 * macs[0]


# ----------------------------------------------------------------------------- runners


def _no_aug():
    """The ``aug`` argument of train_steps that disables augmentation (see backends/augment.py)."""
    return np.zeros(8, dtype=np.float64)


def make_runner(kind, x, y, weights, lr=LR):
    """A callable ``run(order, start, n_steps, batch_size) -> steps applied`` for one runner.

    Raises ImportError when ``kind`` cannot run here (PyTorch or the reference missing).
    """
    if kind in ("numba", "numpy"):
        from fastnn.backends import get_backend

        backend = get_backend(kind)
        net = build_net(weights)
        opt = build_sgd(net)
        bufs = {}

        def run(order, start, n_steps, batch_size):
            if bufs.get("n", -1) < n_steps:
                bufs.update(n=n_steps, loss=np.zeros(n_steps, np.float64), correct=np.zeros(n_steps, np.int64),
                            lr=np.full(n_steps, lr, np.float64))
            return backend.train_steps(x, y, order, start, n_steps, batch_size, net, opt, bufs["lr"], SEED, 0.0,
                                       _no_aug(), bufs["loss"], bufs["correct"])

        run.net = net
        return run
    if kind == "reference":
        ref = load_reference().ReferenceMLP(weights, lr)

        def run(order, start, n_steps, batch_size):
            return ref.train_steps(x, y, order, start, n_steps, batch_size)

        run.model = ref
        return run
    if kind == "torch":
        return _torch_runner(x, y, weights, lr)
    raise ValueError(f"runner must be one of {RUNNERS}, got {kind!r}")


def load_reference():
    """The independent NumPy loop, loaded by path (it lives in benchmarks/, outside the package)."""
    if not REFERENCE_PATH.exists():
        raise ImportError(f"{REFERENCE_PATH} not found (run from a source checkout)")
    spec = importlib.util.spec_from_file_location("reference_numpy_mlp", REFERENCE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torch_runner(x, y, weights, lr):
    import torch
    from torch import nn

    torch.set_num_threads(thread_info()["numba"])
    mods = []
    for i, (w, b) in enumerate(weights):
        lin = nn.Linear(*w.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        mods += [lin, nn.ReLU()] if i < len(weights) - 1 else [lin]
    model = nn.Sequential(*mods)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = nn.CrossEntropyLoss()

    def run(order, start, n_steps, batch_size):
        ot = torch.from_numpy(order)
        done = 0
        for s in range(n_steps):
            lo = start + s * batch_size
            if lo >= len(order):
                break
            idx = ot[lo : lo + batch_size]
            xb, yb = xt.index_select(0, idx), yt.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            done += 1
        return done

    run.model = model
    return run


def available_runners(wanted):
    """The subset of ``wanted`` runners that can run here, and why the others cannot."""
    ok, skipped = [], {}
    for kind in wanted:
        try:
            if kind == "torch":
                import torch  # noqa: F401
            elif kind == "reference":
                load_reference()
            elif kind not in ("numba", "numpy"):
                raise ValueError(f"unknown runner {kind!r}; choose from {RUNNERS}")
            ok.append(kind)
        except ImportError as e:
            skipped[kind] = str(e)
    return ok, skipped


# ----------------------------------------------------------------------------- timing


def epoch_order(n_samples, seed=SEED):
    """The seeded permutation every runner walks (int64, as train_steps expects)."""
    return np.random.default_rng(seed).permutation(n_samples).astype(np.int64)


def plan_steps(run, order, batch_size, max_seconds, clock=time.perf_counter):
    """Warm ``run`` up, then choose how many steps to time: the whole epoch if it fits in
    ``max_seconds`` (by a short probe), else as many steps as fit (at least the probe's)."""
    total = -(-len(order) // batch_size)
    probe = min(total, max(2, 256 // batch_size))
    run(order, 0, probe, batch_size)  # warm-up: compilation, caches, buffer allocation
    t = clock()
    run(order, 0, probe, batch_size)
    per_step = max(clock() - t, 1e-9) / probe
    return total if per_step * total <= max_seconds else max(probe, int(max_seconds / per_step))


def time_training(runners, n_samples, batch_size, max_seconds=2.0, repeats=3, seed=SEED, clock="wall"):
    """Median samples/s of each runner over one epoch (or a step-limited part of one).

    Parameters
    ----------
    runners : dict of name -> run callable (see ``make_runner``)
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

    Returns
    -------
    dict of name -> {samples_per_s, epoch_s, times, steps, samples, extrapolated}
        ``times``/``steps`` per repeat; samples/s is the median over repeats.
    """
    order = epoch_order(n_samples, seed)
    total = -(-n_samples // batch_size)
    clock = CLOCKS[clock]
    plan = {name: plan_steps(run, order, batch_size, max_seconds, clock) for name, run in runners.items()}
    times = {name: [] for name in runners}
    steps = {name: [] for name in runners}
    for _ in range(repeats):  # round-robin so that noise bursts hit every runner alike
        for name, run in runners.items():
            done, sec = _timed_steps(run, order, batch_size, plan[name], 3 * max_seconds, clock)
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


def _timed_steps(run, order, batch_size, n_steps, limit_s, clock):
    """Run ``n_steps`` steps from the start of ``order`` in at most 8 calls (continuing the
    epoch); stop after a call that ends past ``limit_s``. Returns (steps done, seconds)."""
    chunk = -(-n_steps // 8)
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
    a second step (already compiled) whose time is reported as ``step_s``.
    """
    own = cache_dir is None
    cache_dir = cache_dir or tempfile.mkdtemp(prefix="fastnn-bench-cache-")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    root = str(Path(__file__).resolve().parents[1])
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
t1 = time.perf_counter()
run(order, 0, 1, {batch_size})
t_first = time.perf_counter() - t1
t2 = time.perf_counter()
run(order, 0, 1, {batch_size})
t_step = time.perf_counter() - t2
print(json.dumps(dict(import_s=t_import, first_step_s=t_first, import_to_first_step_s=t_import + t_first, step_s=t_step)))
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
    data, records = {}, []
    for t in threads:
        tinfo = set_threads(t) if t else thread_info()
        peak = matmul_peak(peak_size, clock=CLOCKS[clock]) if peak_size else None
        if peak:
            log(f"threads {tinfo}: float32 matmul peak (np.dot {peak_size}^3) {peak:.1f} GFLOP/s")
        for dataset, hidden, batch_sizes in configs:
            if dataset not in data:
                data[dataset] = load_training_set(dataset, limit)
            x, y = data[dataset]
            sizes = layer_sizes(x.shape[1], hidden)
            weights = he_weights(sizes)
            for bs in batch_sizes:
                # Fresh runners per batch size: every one starts from the same weights.
                runs = {k: make_runner(k, x, y, weights) for k in kinds}
                res = time_training(runs, len(x), bs, max_seconds=max_seconds, repeats=repeats, clock=clock)
                rec = {"dataset": dataset, "layers": sizes, "batch_size": bs, "threads": tinfo, "n_samples": len(x),
                       "flops_per_sample": train_flops_per_sample(sizes), "peak_gflops": peak, "loadavg": _loadavg(),
                       "clock": clock, "results": res}
                records.append(rec)
                log(_one_line(rec))
    return records


def _one_line(rec):
    parts = [f"{k} {v['samples_per_s']:,.0f}/s{'*' if v['extrapolated'] else ''}" for k, v in rec["results"].items()]
    name = f"{rec['dataset']} {'-'.join(map(str, rec['layers']))} bs={rec['batch_size']} t={rec['threads']['numba']}"
    return f"  {name}: " + ", ".join(parts)


def ratio(rec, a, b):
    r = rec["results"]
    return r[a]["samples_per_s"] / r[b]["samples_per_s"] if a in r and b in r else None


def format_table(records):
    """Markdown tables, one per (threads, dataset, layers): samples/s, ratios, % of peak."""
    lines, groups = [], {}
    for rec in records:
        key = (rec["threads"]["numba"], rec["dataset"], tuple(rec["layers"]))
        groups.setdefault(key, []).append(rec)
    for (threads, dataset, sizes), recs in groups.items():
        kinds = list(recs[0]["results"])
        peak = recs[0]["peak_gflops"]
        clock = " (CPU time)" if recs[0].get("clock") == "cpu" else ""
        lines.append(f"\n### {dataset.upper()} {'-'.join(map(str, sizes))}, SGD lr {LR}, {threads} thread(s){clock}"
                     + (f", float32 matmul peak {peak:.0f} GFLOP/s" if peak else "") + _load_note(recs) + "\n")
        head = ["batch"] + [f"{k} samples/s" for k in kinds]
        ratios = [(a, b) for a, b in (("numba", "numpy"), ("numba", "reference"), ("numpy", "reference"), ("numba", "torch"))
                  if a in kinds and b in kinds]
        head += [f"{a}/{b}" for a, b in ratios] + ([f"{k} %peak" for k in kinds] if peak else [])
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for rec in recs:
            res = rec["results"]
            row = [str(rec["batch_size"])]
            row += [f"{res[k]['samples_per_s']:,.0f}{'*' if res[k]['extrapolated'] else ''}" for k in kinds]
            row += [f"{ratio(rec, a, b):.2f}x" for a, b in ratios]
            if peak:
                row += [f"{100 * res[k]['samples_per_s'] * rec['flops_per_sample'] / 1e9 / peak:.1f}%" for k in kinds]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("\n`*` step-limited: a fixed number of steps of the epoch was timed and samples/s extrapolated.")
    lines.append("%peak: dense training FLOPs/sample x samples/s over the float32 matmul peak measured at that "
                 "thread count (large np.dot); zero-skipping kernels do less work than counted, so it can exceed 100%.")
    return "\n".join(lines)


def _load_note(recs):
    loads = [r.get("loadavg") for r in recs if r.get("loadavg") is not None]
    return f" (load average up to {max(loads):.1f})" if loads else ""


def plot_chart(records, path):
    """Grouped bar chart of samples/s per batch size and runner, one panel per table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {}
    for rec in records:
        key = f"{rec['dataset']} {'-'.join(map(str, rec['layers']))}, {rec['threads']['numba']} thr"
        groups.setdefault(key, []).append(rec)
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 3.2 * len(groups)), squeeze=False)
    for ax, (title, recs) in zip(axes[:, 0], groups.items()):
        kinds = list(recs[0]["results"])
        width = 0.8 / len(kinds)
        for j, k in enumerate(kinds):
            xs = [i + (j - (len(kinds) - 1) / 2) * width for i in range(len(recs))]
            ax.bar(xs, [r["results"][k]["samples_per_s"] for r in recs], width, label=k)
        ax.set_xticks(range(len(recs)), [str(r["batch_size"]) for r in recs])
        ax.set_yscale("log")
        values = [r["results"][k]["samples_per_s"] for r in recs for k in kinds]
        # Bars on a log axis start at the axis floor: put it a decade below the smallest.
        ax.set_ylim(10 ** math.floor(math.log10(min(values)) - 0.5), max(values) * 20)
        for i, rec in enumerate(recs):
            r = ratio(rec, "numba", "numpy")
            if r:
                ax.annotate(f"{r:.1f}x", (i, max(rec["results"][k]["samples_per_s"] for k in kinds)),
                            textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples/s")
        ax.set_title(f"{title} (label: numba/numpy)")
        ax.legend(fontsize=8, ncol=len(kinds), loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def default_configs(quick=False):
    """The default comparison: MNIST 128-64 at all batch sizes, KMNIST at 128, 1024-1024 at three."""
    if quick:
        return [("mnist", (128, 64), (8, 128)), ("mnist", (1024, 1024), (128,))]
    return [("mnist", (128, 64), BATCH_SIZES), ("kmnist", (128, 64), (128,)), ("mnist", (1024, 1024), (1, 32, 512))]


# ----------------------------------------------------------------------------- kernels

MATMUL_SHAPES = ((784, 128), (128, 64), (64, 10), (784, 1024), (1024, 1024))
ACT_WIDTHS = (128, 1024)
OPT_SIZES = {"784-128-64-10": 109386, "784-1024-1024-10": 1863690}


# out = a @ b kernels a backend may export: the contract's entry and the Numba-only variants.
MATMUL_VARIANTS = ("matmul", "matmul_blocked", "matmul_sparse_rows", "matmul_blas")
# dW = x.T @ dz kernels (the weight gradient); BLAS is np.dot(x.T, dz).
XT_VARIANTS = ("matmul_xt_sparse",)


def matmul_impls(backend_name, variants=MATMUL_VARIANTS):
    """Names of the ``variants`` a backend exports (the NumPy backend has only ``matmul``)."""
    from fastnn.backends import get_backend

    mod = get_backend(backend_name)
    return [n for n in variants if callable(getattr(mod, n, None))]


def kernel_cases(backends=("numpy", "numba"), batch_sizes=BATCH_SIZES, shapes=MATMUL_SHAPES):
    """Every per-kernel case as (group, impl, shape, batch); ``make_kernel_call`` turns one into a callable.

    ``impl`` is a backend name, ``backend.kernel`` for matmul variants, or ``blas`` (plain np.dot).
    ``matmul`` is the forward product x @ W, ``matmul_xt`` the weight gradient x.T @ dz.
    """
    cases = []
    for bs in batch_sizes:
        for shape in shapes:
            cases.append(("matmul", "blas", shape, bs))
            cases += [("matmul", f"{b}.{m}", shape, bs) for b in backends for m in matmul_impls(b)]
            cases.append(("matmul_xt", "blas", shape, bs))
            cases += [("matmul_xt", f"{b}.{m}", shape, bs) for b in backends for m in matmul_impls(b, XT_VARIANTS)]
        for shape in shapes:
            cases += [(g, b, shape, bs) for g in ("dense_forward", "dense_backward") for b in backends]
        for act in ("relu", "sigmoid", "tanh"):
            for w in ACT_WIDTHS:
                cases += [(g, b, (act, w), bs) for g in ("activation_forward", "activation_backward") for b in backends]
        cases += [("softmax_nll", b, (10,), bs) for b in backends]
    for size in OPT_SIZES.values():
        for opt in ("sgd", "sgd_momentum", "rmsprop", "adam"):
            cases += [(opt, b, (size,), 0) for b in backends]
    return cases


def case_id(case):
    group, impl, shape, bs = case
    return f"{group}-{impl}-{'x'.join(map(str, shape))}" + (f"-b{bs}" if bs else "")


def make_kernel_call(case, images):
    """A zero-argument callable running one kernel case on realistic inputs.

    ``images`` are MNIST rows (float32 (n, 784)): inputs of 784-wide layers are real,
    mostly-zero pixels (what the zero-skipping kernel sees); other inputs are ReLU
    outputs of standard-normal noise (about half zeros, like hidden activations).
    Returns (fn, flops) with flops the dense arithmetic of one call (0 where not meaningful).
    """
    from fastnn.backends import get_backend
    from fastnn.backends import spec as S

    group, impl, shape, bs = case
    rng = np.random.default_rng(SEED)
    f32 = np.float32

    def inputs(n, width):
        if width == images.shape[1]:
            return np.ascontiguousarray(images[np.arange(n) % len(images)])
        return np.maximum(rng.standard_normal((n, width), dtype=f32), 0)

    if group == "matmul":
        k, m = shape
        a, b, out = inputs(bs, k), rng.standard_normal((k, m), dtype=f32), np.empty((bs, m), f32)
        if impl == "blas":
            return (lambda: np.dot(a, b, out=out)), 2 * bs * k * m
        backend, name = impl.split(".")
        fn = getattr(get_backend(backend), name)
        return (lambda: fn(a, b, out)), 2 * bs * k * m
    if group == "matmul_xt":
        k, m = shape
        x, dz, dW = inputs(bs, k), rng.standard_normal((bs, m), dtype=f32), np.empty((k, m), f32)
        if impl == "blas":
            return (lambda: np.dot(x.T, dz, out=dW)), 2 * bs * k * m
        backend, name = impl.split(".")
        fn = getattr(get_backend(backend), name)
        return (lambda: fn(x, dz, dW)), 2 * bs * k * m
    mod = get_backend(impl)
    if group in ("dense_forward", "dense_backward"):
        k, m = shape
        x, W = inputs(bs, k), (rng.standard_normal((k, m), dtype=f32) * f32(math.sqrt(2 / k)))
        bias, out = np.zeros(m, f32), np.empty((bs, m), f32)
        act = S.ACT_NONE if m == 10 else S.ACT_RELU
        if group == "dense_forward":
            return (lambda: mod.dense_forward(x, W, bias, act, out)), 2 * bs * k * m
        dz, dW, db = rng.standard_normal((bs, m), dtype=f32), np.empty((k, m), f32), np.empty(m, f32)
        # The first layer's dx is never needed: pass the empty array, as the training loop does.
        dx = np.empty((0, 0), f32) if k == images.shape[1] else np.empty((bs, k), f32)
        return (lambda: mod.dense_backward(x, W, dz, dx, dW, db)), 2 * bs * k * m * (1 + (dx.size > 0))
    if group.startswith("activation"):
        act, w = shape
        code = S.ACTIVATIONS[act]
        x, out = rng.standard_normal((bs, w), dtype=f32), np.empty((bs, w), f32)
        if group == "activation_forward":
            return (lambda: mod.activation_forward(code, x, out)), 0
        yv, dy, dx = np.empty((bs, w), f32), rng.standard_normal((bs, w), dtype=f32), np.empty((bs, w), f32)
        mod.activation_forward(code, x, yv)
        return (lambda: mod.activation_backward(code, yv, dy, dx)), 0
    if group == "softmax_nll":
        logits, dl = rng.standard_normal((bs, shape[0]), dtype=f32), np.empty((bs, shape[0]), f32)
        y = rng.integers(0, shape[0], bs).astype(np.int64)
        return (lambda: mod.softmax_nll(logits, y, 0.0, dl)), 0
    (size,) = shape
    p, g = rng.standard_normal(size, dtype=f32), rng.standard_normal(size, dtype=f32) * f32(1e-3)
    s1, s2 = np.zeros(size, f32), np.zeros(size, f32)
    if group == "sgd":
        return (lambda: mod.sgd_update(p, g, s1, 1e-3, 0.0, False, 0.0)), 0
    if group == "sgd_momentum":
        return (lambda: mod.sgd_update(p, g, s1, 1e-3, 0.9, False, 0.0)), 0
    if group == "rmsprop":
        return (lambda: mod.rmsprop_update(p, g, s1, s2, 1e-3, 0.99, 1e-8, 0.0, 0.0)), 0
    if group == "adam":
        return (lambda: mod.adam_update(p, g, s1, s2, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)), 0
    raise ValueError(f"unknown kernel group {group!r}")


def time_call(fn, target_s=0.02, repeats=5, clock=time.perf_counter):
    """Seconds per call of ``fn`` in each of ``repeats`` timed loops of about ``target_s``, after a warm-up."""
    fn()  # warm-up: compilation, first touch
    t = clock()
    fn()
    one = max(clock() - t, 1e-7)
    loops = max(1, int(target_s / one))
    times = []
    for _ in range(repeats):
        t = clock()
        for _ in range(loops):
            fn()
        times.append((clock() - t) / loops)
    return times


def run_kernel_suite(batch_sizes=BATCH_SIZES, shapes=MATMUL_SHAPES, repeats=5, clock="wall", log=print):
    """Time every kernel case; returns a list of {group, impl, shape, batch, seconds (median), min_seconds, gflops}."""
    images = load_training_set("mnist", limit=1024)[0]
    records = []
    for case in kernel_cases(batch_sizes=batch_sizes, shapes=shapes):
        fn, flops = make_kernel_call(case, images)
        times = time_call(fn, repeats=repeats, clock=CLOCKS[clock])
        sec = statistics.median(times)
        records.append({"group": case[0], "impl": case[1], "shape": list(case[2]), "batch": case[3],
                        "seconds": sec, "min_seconds": min(times), "gflops": flops / sec / 1e9 if flops else None})
    log(f"timed {len(records)} kernel cases")
    return records


def format_kernel_table(records, peak_gflops):
    """Markdown: matmuls (GFLOP/s and % of peak per implementation), then the other kernels (numpy vs numba)."""
    lines = []
    titles = {"matmul": "forward x @ W", "matmul_xt": "weight gradient x.T @ dz"}
    for group, title in titles.items():
        mm = [r for r in records if r["group"] == group]
        if not mm:
            continue
        impls = list(dict.fromkeys(r["impl"] for r in mm))
        lines += [f"\n### {title}: GFLOP/s (% of peak) per implementation; x is (batch, n_in), W (n_in, n_out)\n",
                  "| n_in x n_out | batch | " + " | ".join(impls) + " |", "|---|---|" + "---|" * len(impls)]
        cells = {}
        for r in mm:
            cells.setdefault((tuple(r["shape"]), r["batch"]), {})[r["impl"]] = r
        for (shape, bs), row in sorted(cells.items(), key=lambda kv: (_shape_rank(kv[0][0]), kv[0][1])):
            vals = [f"{row[i]['gflops']:.1f} ({100 * row[i]['gflops'] / peak_gflops:.0f}%)" if i in row else ""
                    for i in impls]
            lines.append(f"| {shape[0]}x{shape[1]} | {bs} | " + " | ".join(vals) + " |")
    lines += ["\n### other kernels: microseconds per call\n", "| kernel | shape | batch | numpy us | numba us | numpy/numba |",
              "|---|---|---|---|---|---|"]
    rest = {}
    for r in records:
        if r["group"] not in titles:
            rest.setdefault((r["group"], tuple(r["shape"]), r["batch"]), {})[r["impl"]] = r["seconds"]
    for (group, shape, bs), row in rest.items():
        npy, nba = row.get("numpy"), row.get("numba")
        ratio_s = f"{npy / nba:.2f}x" if npy and nba else ""
        us = [f"{v * 1e6:.1f}" if v else "" for v in (npy, nba)]
        lines.append(f"| {group} | {'x'.join(map(str, shape))} | {bs or ''} | {us[0]} | {us[1]} | {ratio_s} |")
    lines.append("\nmatmul inputs: real MNIST rows for 784-wide x (~81% zeros), ReLU(noise) otherwise (~50% zeros). "
                 "GFLOP/s counts dense work, so zero-skipping kernels can exceed the peak.")
    return "\n".join(lines)


def _shape_rank(shape):
    return MATMUL_SHAPES.index(shape) if shape in MATMUL_SHAPES else len(MATMUL_SHAPES)


# ----------------------------------------------------------------------------- command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="fastnn-bench", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--quick", action="store_true", help="a smaller comparison (2 cells, 1 repeat, 0.5 s)")
    p.add_argument("--limit", type=int, help="use only the first N training rows (smoke tests)")
    p.add_argument("--no-compile", action="store_true", help="skip the cold/cached compile-time probe")
    p.add_argument("--peak-size", type=int, default=2048, help="matrix size of the np.dot peak measurement (0: skip)")
    p.add_argument("--kernels", action="store_true", help="time the per-kernel table instead of training")
    p.add_argument("--out", default="bench_results", help="directory for bench.json and bench.png")
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
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.repeats, args.max_seconds = 1, min(args.max_seconds, 0.5)
    if args.full_epoch:
        args.max_seconds = math.inf
    if args.dataset or args.layers or args.batch_sizes:
        configs = [(d, tuple(args.layers or (128, 64)), tuple(args.batch_sizes or BATCH_SIZES))
                   for d in (args.dataset or ["mnist"])]
    else:
        configs = default_configs(args.quick)
    machine = describe_machine()
    print(f"machine: {machine['cpu']}, {machine['logical_cpus']} CPUs (SIMD {machine.get('simd')}), {machine['blas']}, "
          f"numpy {machine['numpy']}, numba {machine['numba']}, torch {machine['torch']}")
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
        (out / "kernels.json").write_text(json.dumps(result, indent=1))
        print(f"\nwrote {out / 'kernels.json'}")
        return 0
    compile_info = None
    if not args.no_compile and "numba" in args.runners:
        compile_info = compile_times()
        c = compile_info
        print(f"numba import-to-first-step: cold {c['cold']['import_to_first_step_s']:.2f} s, "
              f"cached {c['cached']['import_to_first_step_s']:.2f} s (import {c['cached']['import_s']:.2f} s)")
    t0 = time.perf_counter()
    import numba

    # One thread count for every engine: by default Numba's (NUMBA_NUM_THREADS honoured),
    # applied to both OpenBLAS copies and PyTorch too, so that no column gets more cores.
    threads = args.threads or [numba.get_num_threads()]
    if args.clock == "cpu" and threads != [1]:
        threads = [1]
        print("--clock cpu: timing with 1 thread (CPU time would add up every thread's time)")
    records = run_training_suite(configs, args.runners, threads, args.max_seconds, args.repeats,
                                 args.limit, args.peak_size, args.clock)
    machine["numba_threading_layer"] = _threading_layer()
    table = format_table(records)
    print(table)
    result = {"machine": machine, "compile": compile_info, "records": records,
              "settings": {"lr": LR, "seed": SEED, "repeats": args.repeats, "max_seconds": args.max_seconds,
                           "limit": args.limit, "clock": args.clock}, "seconds": time.perf_counter() - t0, "table": table}
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=float))
    plot_chart(records, out / "bench.png")
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'} ({result['seconds']:.0f} s of timing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
