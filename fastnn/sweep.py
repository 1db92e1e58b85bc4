"""``fastnn-sweep CONFIG``: run a TOML file of named ``fastnn-train`` runs in parallel.

One code path: every run is ``python -m fastnn.sweep_worker <argv>``, i.e. exactly
what ``fastnn-train`` does, in its own worker process writing its usual run folder.
The sweep only maps TOML keys onto that argv, schedules the processes, and
collects each run's ``summary.json`` into a results table and a chart. Where the
processes run is the executor's business: ``LocalExecutor`` here, or with
``--scheduler`` the workers of a Dask cluster (``fastnn.sweep_dask``).

No worker outlives the sweep: each runs in its own process group; Ctrl-C (SIGINT) or
SIGTERM to the sweep is passed on to the running workers (fastnn-train keeps their
finished epochs), which get ``STOP_GRACE_S`` seconds before SIGKILL; a sweep killed
outright takes its workers with it (Linux's parent-death signal, see ``sweep_worker``).

TOML format
-----------
::

    [defaults]                 # shared by every run (a run's own keys win)
    dataset = "kmnist"
    epochs = 10
    val_split = 0.1

    [runs.adam-128-64]         # one named run
    layers = [128, 64]
    optimizer = "adam"
    weight_decay = 0.0005
    batch_norm = true

    [runs.adam-128-64.meta]    # metadata: not passed to fastnn-train
    reported = 88.34           # a reported test accuracy in percent -> "reported", "delta" columns
    source = "a blog post"
    note = "anything"

    [grids.family]             # the cartesian product of the lists under `grid`
    dataset = "mnist"          # keys shared by the grid's runs (over [defaults])
    grid = {layers = [[64], [128, 64]], activation = ["relu", "tanh"]}
    [grids.family.meta]        # copied into every expanded run
    note = "looped family"

A grid expands into runs named ``<grid>-<value>-<value>...`` (lists joined by
``x``: ``family-128x64-tanh``), in the order of the product with the first grid
key varying slowest. Run names must be unique and use only letters, digits,
``.``, ``_`` and ``-`` (they name the run folders).

Key mapping (generic, so options added to ``fastnn-train`` later need no change
here): ``foo_bar = v`` becomes ``--foo-bar v``; a list gives several values
(``layers = [128, 64]`` -> ``--layers 128 64``); ``true`` gives the bare flag and
``false`` omits the option (its default applies). ``out`` and ``threads`` are
set by the sweep and may not appear in the file; ``verbose`` defaults to 2 (one
line per epoch in the run's ``log.txt``). Relative paths (``dataset = "./my_idx"``)
are relative to the directory the sweep is started from. Every run's argv is
parsed with ``fastnn-train``'s own parser before anything trains, so a typo fails
at once, naming the run and the key.

Outputs (``--out``, default ``runs/sweeps/<config stem>/``, stable so that
starting the same sweep again resumes it): ``<run>/`` (the run's fastnn-train
folder plus ``log.txt`` with its stdout/stderr and ``sweep_run.json`` with the
argv, exit status and wall time), ``results.md``, ``results.csv`` and
``comparison.png``. A run counts as finished when its ``summary.json`` parses
and its recorded argv equals the current one; finished runs are skipped unless
``--force`` is given. A failed run (non-zero exit or ``--timeout``) is listed
with the last error line of its log, and the other runs go on.
"""

import argparse
import concurrent.futures
import csv
import datetime
import difflib
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import tomllib

from .atomic import atomic_write, write_text
from .interrupts import InterruptGuard

#: keys the sweep itself sets on every run's argv
RESERVED_KEYS = {"out": "the sweep writes each run to <sweep dir>/<run name>",
                 "threads": "the sweep sets the threads per run (fastnn-sweep --threads)"}
DEFAULT_RUN_KEYS = {"verbose": 2}
RUN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
THREAD_ENV_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

MD_ERROR_CHARS = 160
RESULT_COLUMNS = ["run", "dataset", "layers", "activation", "optimizer", "lr", "weight_decay", "dropout",
                  "batch_norm", "epochs_run", "best_epoch", "train_accuracy", "val_accuracy", "test_accuracy",
                  "tta", "test_no_tta", "train_seconds", "wall_seconds", "samples_per_second", "reported", "delta", "status", "error"]
META_COLUMNS = ["source", "note"]  # from meta; in the CSV and the comparison table


class SweepConfigError(ValueError):
    """A sweep file that cannot be run: bad TOML, an unknown option, a bad value, a bad name."""


# configuration --------------------------------------------------------------------

def load_config(path):
    """Read a sweep TOML file into ``{run name: {"options": dict, "meta": dict}}`` (file order).

    Raises SweepConfigError for unreadable TOML or a malformed layout.
    """
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SweepConfigError(f"{path}: not valid TOML: {exc}") from None
    return expand_config(doc, source=str(path))


def _table(doc, key, where):
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise SweepConfigError(f"{where}: [{key}] must be a table, got {type(value).__name__}")
    return value


def _split_meta(table, where):
    table = dict(table)
    meta = table.pop("meta", {})
    if not isinstance(meta, dict):
        raise SweepConfigError(f"{where}: 'meta' must be a table ([...meta]), got {type(meta).__name__}")
    for key, value in table.items():
        if isinstance(value, dict):
            raise SweepConfigError(f"{where}: key {key!r} is a table; only 'meta' may be a sub-table "
                                   f"(fastnn-train options are plain values or lists)")
    return table, meta


def _label(value):
    if isinstance(value, list):
        return "x".join(_label(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(value))


def expand_config(doc, source="sweep"):
    """Expand a parsed TOML document (defaults, runs, grids) into named runs.

    Parameters
    ----------
    doc : dict
        The TOML document: optional ``defaults``, ``runs`` and ``grids`` tables.
    source : str
        Names the file in error messages.

    Returns
    -------
    dict
        ``{name: {"options": {key: value}, "meta": {key: value}}}`` in file order
        (runs, then grids); options already include the defaults.
    """
    unknown = set(doc) - {"defaults", "runs", "grids"}
    if unknown:
        raise SweepConfigError(f"{source}: unknown top-level table(s) {sorted(unknown)}; "
                               f"use [defaults], [runs.<name>] and [grids.<name>]")
    defaults, default_meta = _split_meta(_table(doc, "defaults", source), f"{source} [defaults]")
    runs = {}

    def add(name, options, meta, where):
        if not RUN_NAME.match(name):
            raise SweepConfigError(f"{where}: run name {name!r} may use only letters, digits, '.', '_' and '-'")
        if name in runs:
            raise SweepConfigError(f"{where}: run name {name!r} is used twice")
        runs[name] = {"options": {**DEFAULT_RUN_KEYS, **defaults, **options},
                      "meta": {**default_meta, **meta}}

    for name, table in _table(doc, "runs", source).items():
        where = f"{source} [runs.{name}]"
        if not isinstance(table, dict):
            raise SweepConfigError(f"{where}: must be a table, got {type(table).__name__}")
        add(name, *_split_meta(table, where), where)

    for name, table in _table(doc, "grids", source).items():
        where = f"{source} [grids.{name}]"
        if not isinstance(table, dict):
            raise SweepConfigError(f"{where}: must be a table, got {type(table).__name__}")
        table = dict(table)
        grid = table.pop("grid", None)
        if not isinstance(grid, dict) or not grid:
            raise SweepConfigError(f"{where}: needs grid = {{key = [values...], ...}} with at least one key")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SweepConfigError(f"{where}: grid.{key} must be a non-empty list of values, got {values!r}")
        shared, meta = _split_meta(table, where)
        keys = list(grid)
        combos = list(itertools.product(*(grid[k] for k in keys)))
        names = [f"{name}-" + "-".join(_label(v) for v in combo) for combo in combos]
        if len(set(names)) != len(names):  # values that label alike: fall back to indices
            names = [f"{name}-{i}" for i in range(len(combos))]
        for run_name, combo in zip(names, combos):
            add(run_name, {**shared, **dict(zip(keys, combo))}, meta, where)

    if not runs:
        raise SweepConfigError(f"{source}: no runs: add [runs.<name>] or [grids.<name>] tables")
    return runs


def options_to_argv(options):
    """Map ``{foo_bar: value}`` onto fastnn-train's argv (``--foo-bar value``).

    ``True`` -> the bare flag, ``False`` -> nothing, a list -> several values.
    """
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag] + [_format(v) for v in value]
        else:
            argv += [flag, _format(value)]
    return argv


def _format(value):
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict, bool)):
        raise SweepConfigError(f"value {value!r} cannot be a command-line argument")
    return str(value)


def _train_parser():
    from .cli import build_train_parser

    parser = build_train_parser()

    def error(message):  # argparse would print usage and exit: make it an exception instead
        raise SweepConfigError(message)

    parser.error = error
    return parser


def build_run_argv(name, options, run_dir):
    """fastnn-train's argv for one run, validated by fastnn-train's parser.

    Raises SweepConfigError naming the run and the bad key or value.
    """
    parser = _train_parser()
    known = {s[2:].replace("-", "_") for a in parser._actions for s in a.option_strings if s.startswith("--")}
    for key in options:
        if key in RESERVED_KEYS:
            raise SweepConfigError(f"run {name!r}: key {key!r} is not allowed: {RESERVED_KEYS[key]}")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else \
                "; put metadata under [runs.<name>.meta]"
            raise SweepConfigError(f"run {name!r}: unknown key {key!r} (fastnn-train has no "
                                   f"--{key.replace('_', '-')}){hint}")
    try:
        argv = options_to_argv(options)
    except SweepConfigError as exc:
        raise SweepConfigError(f"run {name!r}: {exc}") from None
    argv += ["--out", os.fspath(run_dir)]
    try:
        parser.parse_args(argv)
    except SweepConfigError as exc:
        raise SweepConfigError(f"run {name!r}: {exc} (argv: {' '.join(argv)})") from None
    return argv


# scheduling -------------------------------------------------------------------------

def available_cores():
    """Cores this process may run on (its CPU affinity where the OS tells, else cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def plan_workers(n_runs, jobs=None, threads=None, cores=None):
    """How many runs go in parallel and how many threads each gets.

    Defaults keep ``parallel * threads <= cores``: with neither given, as many
    parallel runs as fit (one per core, at most ``n_runs``) and the cores left
    shared out as threads. An explicit ``threads`` above ``cores`` is honoured
    with one run at a time (the caller asked for it).

    Returns
    -------
    (parallel, threads) : tuple of int, both >= 1
    """
    cores = max(1, int(cores or available_cores()))
    n_runs = max(1, int(n_runs))
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if threads is None:
        parallel = min(jobs or cores, cores, n_runs)
        threads = max(1, cores // parallel)
    else:
        parallel = min(jobs or cores, max(1, cores // threads), n_runs)
    return max(1, parallel), threads


def worker_env(threads, base=None):
    """The environment of a run's process: thread counts pinned, fastnn importable."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_ENV_VARS:
        env[var] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def read_summary(run_dir):
    """The run's summary.json as a dict, or None when missing or unreadable (not finished)."""
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and "test_accuracy" in summary else None


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def is_finished(run_dir, argv):
    """True when the run's summary.json parses and it was trained with this same argv."""
    record = _read_json(os.path.join(run_dir, "sweep_run.json")) or {}
    return read_summary(run_dir) is not None and record.get("argv") == argv and record.get("status") == "ok"


def last_error_line(log_text, returncode=None):
    """The most telling line of a failed run's log: the last one naming an error, else the last line."""
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.search(r"error|exception|traceback|killed", line, re.IGNORECASE):
            return line
    if lines:
        return lines[-1]
    return f"exit status {returncode}" if returncode is not None else "no output"


def run_one(name, argv, run_dir, threads, timeout=None, preexec_fn=None):
    """Run one fastnn-train process; stdout/stderr go to ``run_dir/log.txt``.

    ``preexec_fn`` runs in the child before it starts (a Dask worker's ties the run's
    life to its own).

    Returns the record also written to ``run_dir/sweep_run.json``: ``argv``,
    ``status`` ('ok' or 'failed'), ``returncode``, ``wall_seconds``, ``error``.
    """
    os.makedirs(run_dir, exist_ok=True)
    summary_path = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary_path):  # a stale result must not survive a failed rerun
        os.remove(summary_path)
    log_path = os.path.join(run_dir, "log.txt")
    # a rerun replaces what an earlier, unfinished attempt left (fastnn-train refuses that otherwise)
    # fastnn-train, ended with the sweep
    cmd = [sys.executable, "-m", "fastnn.sweep_worker", *argv, "--overwrite"]
    record = {"run": name, "argv": argv, "threads": threads,
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
    # until the process ends the run reads as incomplete (an interrupted sweep leaves it so)
    _write_json(os.path.join(run_dir, "sweep_run.json"), {**record, "status": "incomplete", "error": ""})
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        returncode, timed_out = run_worker(cmd, log, worker_env(threads), timeout, preexec_fn)
    record["wall_seconds"] = time.perf_counter() - t0
    record["returncode"] = returncode
    with open(log_path) as f:
        text = f.read()
    if timed_out:
        record.update(status="failed", error=f"timed out after {timeout:g} s (--timeout)")
    elif returncode is None:
        record.update(status="failed", error="not started: the sweep was stopping")
    elif returncode != 0:
        record.update(status="failed", error=last_error_line(text, returncode))
    elif read_summary(run_dir) is None:
        record.update(status="failed", error="exited 0 but wrote no readable summary.json")
    else:
        record.update(status="ok", error="")
    _write_json(os.path.join(run_dir, "sweep_run.json"), record)
    return record


# worker processes -------------------------------------------------------------------

#: seconds a worker gets to save its finished epochs after the sweep passes on a signal
STOP_GRACE_S = 30.0
_workers = {}  # pid -> Popen of each run in progress
_workers_lock = threading.Lock()
_stopping = threading.Event()  # set while the sweep ends its workers: start no new one


def run_worker(cmd, log, env, timeout=None, preexec_fn=None):
    """Run one worker process to its end; returns (returncode, timed_out).

    The worker gets its own session (process group), so the terminal's Ctrl-C reaches
    only the sweep, which passes it on (``stop_workers``), and so its whole group can be
    ended. A worker that outlives ``timeout`` gets SIGTERM, then SIGKILL after
    ``STOP_GRACE_S``. Returns (None, False) without starting when the sweep is stopping.
    ``preexec_fn`` runs in the child before it starts (see ``run_one``).
    """
    with _workers_lock:
        if _stopping.is_set():
            return None, False
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**env, "FASTNN_SWEEP_PID": str(os.getpid())},
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec_fn)
        _workers[proc.pid] = proc
    try:
        try:
            return proc.wait(timeout), False
        except subprocess.TimeoutExpired:
            _end_workers([proc], signal.SIGTERM)
            return None, True
    finally:
        if proc.poll() is None:  # an exception in this thread: never leave the worker behind
            _end_workers([proc], signal.SIGTERM)
        with _workers_lock:
            _workers.pop(proc.pid, None)


def _signal_group(proc, signum):
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):  # already gone
        pass


def _end_workers(procs, signum, grace=STOP_GRACE_S):
    """Send ``signum`` to each worker's process group, wait up to ``grace`` seconds in all,
    then SIGKILL the groups still running; returns when every worker has exited."""
    try:
        for proc in procs:
            _signal_group(proc, signum)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:  # also on a second Ctrl-C while waiting
        for proc in procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


def stop_workers(signum=signal.SIGTERM, grace=STOP_GRACE_S):
    """End every running worker: pass on ``signum`` (SIGINT for Ctrl-C: fastnn-train keeps its
    finished epochs), SIGKILL after ``grace`` seconds; no new worker starts afterwards."""
    with _workers_lock:
        _stopping.set()
        procs = list(_workers.values())
    _end_workers(procs, signum, grace)


# executors --------------------------------------------------------------------------
# An executor runs jobs ``(name, argv, run_dir)`` and yields ``(name, record)`` as runs end,
# with the run folder complete under --out; ``cancel()`` stops what has not finished.
# LocalExecutor: subprocesses on this machine. fastnn.sweep_dask.DaskExecutor: a Dask cluster.

WARM_UP_CODE = "from fastnn.backends import get_backend; get_backend('numba').warmup()"


def warm_up_kernels(threads=1):
    """Compile the Numba kernels once into Numba's on-disk cache, in a subprocess.

    Runs started in parallel afterwards then load the cache instead of each compiling
    the same kernels at once. Returns ``(seconds, error)``; error is "" on success (a
    failure is not fatal: each run still compiles what it needs and logs its own error).
    """
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WARM_UP_CODE], env=worker_env(threads), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    error = "" if proc.returncode == 0 else last_error_line(proc.stdout + proc.stderr, proc.returncode)
    return time.perf_counter() - t0, error


class LocalExecutor:
    """Runs each run as a ``python -m fastnn.sweep_worker`` subprocess here, ``parallel`` at a time."""

    def __init__(self, parallel, threads, timeout=None):
        self.parallel, self.threads, self.timeout = parallel, threads, timeout
        self.description = f"{parallel} parallel run(s) x {threads} thread(s) each on {available_cores()} core(s)"
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel)
        self._futures = {}

    def start(self, n_runs, warm_up, log):
        """Compile the Numba kernels once before parallel runs (``warm_up``: some run uses Numba)."""
        if warm_up and n_runs > 1 and self.parallel > 1:
            seconds, error = warm_up_kernels()
            log(f"fastnn-sweep: Numba kernels compiled once before the parallel runs ({seconds:.1f} s)"
                if not error else f"fastnn-sweep: warning: compiling the Numba kernels failed ({error}); "
                                  f"each run compiles its own")

    def results(self, jobs):
        _stopping.clear()
        self._futures = {self._pool.submit(run_one, name, argv, run_dir, self.threads, self.timeout): name
                         for name, argv, run_dir in jobs}
        for fut in concurrent.futures.as_completed(self._futures):
            yield self._futures[fut], fut.result()

    def cancel(self):
        for fut in self._futures:
            fut.cancel()

    def close(self):
        self._pool.shutdown(wait=True)


# results ------------------------------------------------------------------------------

def _best_epoch(history):
    val = [v for v in history.get("val_accuracy") or []]
    if val and any(v is not None for v in val):
        return 1 + max(range(len(val)), key=lambda i: -1.0 if val[i] is None else val[i])
    loss = history.get("loss") or []
    finite = [i for i, v in enumerate(loss) if v is not None]
    return 1 + min(finite, key=lambda i: loss[i]) if finite else None


def result_row(name, run, run_dir):
    """One results-table row (a dict over RESULT_COLUMNS) from a run's files; accuracies in percent."""
    options, meta = run["options"], run["meta"]
    record = _read_json(os.path.join(run_dir, "sweep_run.json")) or {}
    summary = read_summary(run_dir) if record.get("status") == "ok" else None
    row = dict.fromkeys(RESULT_COLUMNS + META_COLUMNS, "")
    row.update({k: str(meta[k]) for k in META_COLUMNS if k in meta})
    row.update(run=name, dataset=options.get("dataset", "mnist"),
               layers=options.get("architecture") or _label(options.get("layers", "")),
               activation=options.get("activation", ""), optimizer=options.get("optimizer", ""),
               lr=options.get("lr", ""), weight_decay=options.get("weight_decay", ""),
               dropout=options.get("dropout", ""), batch_norm=options.get("batch_norm", ""))
    reported = meta.get("reported")
    row["reported"] = reported if reported is not None else ""
    if summary is None:
        row["status"] = record.get("status", "not run") if record.get("status") != "ok" else "incomplete"
        row["error"] = record.get("error", "")
        row["wall_seconds"] = record.get("wall_seconds", "")
        return row
    args = summary.get("config", {}).get("args", {})
    opt = summary.get("config", {}).get("model", {}).get("optimizer", {})
    hist = summary.get("history", {})
    final = summary.get("final", {})
    pct = lambda part: 100.0 * final[part]["accuracy"] if final.get(part) else ""  # noqa: E731
    rates = [r for r in hist.get("samples_per_second") or [] if r is not None]
    row.update(dataset=summary.get("dataset", {}).get("name", row["dataset"]),
               layers=args.get("architecture") or _label(args.get("layers", row["layers"])),
               activation=args.get("activation", ""),
               optimizer=args.get("optimizer", "") + (" nesterov" if args.get("nesterov") else ""),
               lr=opt.get("config", {}).get("lr", args.get("lr", "")), weight_decay=args.get("weight_decay", ""),
               dropout=args.get("dropout", ""), batch_norm=args.get("batch_norm", ""),
               epochs_run=summary.get("epochs_run", ""), best_epoch=_best_epoch(hist) or "",
               train_accuracy=pct("train"), val_accuracy=pct("val"), test_accuracy=100.0 * summary["test_accuracy"],
               tta=summary.get("tta") or "", test_no_tta=pct("test_no_tta"),
               train_seconds=summary.get("train_seconds", ""), wall_seconds=record.get("wall_seconds", ""),
               samples_per_second=statistics.median(rates) if rates else "", status="ok")
    if reported != "" and reported is not None:
        row["delta"] = row["test_accuracy"] - float(reported)
    return row


def _cell(value, digits=2):
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 0.01 or value == 0 else f"{value:g}"
    return str(value)


MD_HEADS = {"train_accuracy": "train %", "val_accuracy": "val %", "test_accuracy": "test %",
            "train_seconds": "train s", "wall_seconds": "wall s", "samples_per_second": "samples/s",
            "reported": "reported %", "delta": "delta", "weight_decay": "wd", "batch_norm": "bn",
            "epochs_run": "epochs", "best_epoch": "best", "tta": "TTA views", "test_no_tta": "test % no TTA"}
MD_TEXT_COLUMNS = {"run", "dataset", "layers", "activation", "optimizer", "status", "error", "source", "note"}
#: the short table of runs that carry a reported number or a source (e.g. for a README)
COMPARISON_COLUMNS = ["run", "source", "reported", "test_accuracy", "delta", "tta", "test_no_tta", "val_accuracy",
                      "epochs_run", "train_seconds", "wall_seconds"]


def _md_cell(column, value):
    if isinstance(value, float):
        if column == "samples_per_second":
            value = f"{value:,.0f}"
        elif column == "delta":
            value = f"{value:+.2f}"
        elif column in ("lr", "weight_decay", "dropout"):
            value = f"{value:g}"
        elif column in ("train_seconds", "wall_seconds"):
            value = f"{value:.1f}"
    elif column == "error" and len(str(value)) > MD_ERROR_CHARS:  # the CSV keeps the whole line
        value = str(value)[: MD_ERROR_CHARS - 3] + "..."
    return _cell(value).replace("|", "\\|")


def markdown_table(rows, columns):
    """A Markdown table of ``rows`` (dicts) over ``columns``, numbers right-aligned and rounded."""
    lines = ["| " + " | ".join(MD_HEADS.get(c, c) for c in columns) + " |",
             "|" + "|".join("---" if c in MD_TEXT_COLUMNS else "---:" for c in columns) + "|"]
    lines += ["| " + " | ".join(_md_cell(c, row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines


def write_results(rows, out_dir, title="sweep", header_lines=()):
    """Write ``results.csv`` (full precision) and ``results.md`` (rounded) into ``out_dir``.

    results.md holds the full table and, when some runs carry ``meta.reported`` or
    ``meta.source``, a short table of those runs beside their reported numbers.
    """
    csv_path = os.path.join(out_dir, "results.csv")
    with atomic_write(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS + META_COLUMNS)
        w.writeheader()
        w.writerows(rows)

    lines = [f"# {title}", "", *header_lines, "", *markdown_table(rows, RESULT_COLUMNS)]
    compared = [r for r in rows if r.get("reported") != "" or r.get("source")]
    if compared:
        lines += ["", "## Compared with reported numbers", "",
                  "source: where the configuration comes from; reported: its published test accuracy (%); "
                  "test: fastnn's test accuracy (%) for the same configuration on the same data.", "",
                  *markdown_table(compared, COMPARISON_COLUMNS)]
        notes = [f"- {r['run']}: {r['note']}" for r in compared if r.get("note")]
        if notes:
            lines += ["", "Notes:", "", *notes]
    md_path = os.path.join(out_dir, "results.md")
    write_text(md_path, "\n".join(lines) + "\n")
    return md_path, csv_path


# the command ------------------------------------------------------------------------

def build_parser():
    p = argparse.ArgumentParser(
        prog="fastnn-sweep",
        description="Run the named fastnn-train runs of a TOML file in parallel worker processes (or on a "
                    "Dask cluster: --scheduler); write "
                    "results.md, results.csv and comparison.png. Starting it again skips finished runs.",
        epilog="TOML layout: [defaults], [runs.<name>] (+ [runs.<name>.meta]: reported, source, note), "
               "[grids.<name>] with grid = {key = [values]}. See the fastnn.sweep module docstring.")
    from .cli import add_version_arg

    add_version_arg(p)
    p.add_argument("config", help="the sweep's TOML file")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="sweep folder: one run folder per run, results.md, results.csv, comparison.png "
                        "(default: runs/sweeps/<config stem>/ under the current directory; reused, so reruns "
                        "resume)")
    p.add_argument("--jobs", "-j", type=int, default=None,
                   help="most runs at once (default: as many as cores, at most the number of runs). Wide "
                        "networks may not fit the shared cache twice: on a 2-core VM two 784-1600-10 runs "
                        "each ran 8x slower than one alone, so time such runs with --jobs 1")
    p.add_argument("--threads", type=int, default=None,
                   help="Numba/BLAS threads per run (default: cores // parallel runs; on Dask 1, and each run "
                        "holds that many of its worker's 'threads' resource)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="run on this Dask distributed scheduler instead of local processes (needs "
                            "fastnn[cluster]; workers started with --resources threads=N); --jobs then caps "
                            "the runs submitted at once")
    where.add_argument("--scheduler-file", default=None, metavar="FILE",
                       help="like --scheduler, with the address read from Dask's scheduler file")
    p.add_argument("--only", nargs="+", default=None, metavar="RUN",
                   help="run only these runs (names or shell-style patterns); the table still lists all")
    p.add_argument("--force", action="store_true", help="rerun runs that already finished")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="per-run wall-clock limit")
    p.add_argument("--dry-run", action="store_true", help="validate the file and print each run's command")
    p.add_argument("--no-plot", action="store_true", help="skip comparison.png")
    return p


def _select(runs, patterns):
    import fnmatch

    if not patterns:
        return list(runs)
    picked = [n for n in runs if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not picked:
        raise SweepConfigError(f"--only {' '.join(patterns)} matches no run; runs are: {', '.join(runs)}")
    return picked


def _uses_numba(argv):
    return _train_parser().parse_args(argv).backend == "numba"


def make_executor(n_runs, jobs=None, threads=None, timeout=None, scheduler=None, scheduler_file=None):
    """The executor for these options: a Dask cluster when a scheduler is named, else local processes."""
    if scheduler or scheduler_file:
        try:
            from .sweep_dask import DaskExecutor
        except ImportError as exc:
            raise SweepConfigError(f"--scheduler needs Dask distributed ({exc}): "
                                   f'pip install "fastnn[cluster]"') from None
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        return DaskExecutor(address=scheduler, scheduler_file=scheduler_file, threads=threads or 1,
                            timeout=timeout, jobs=jobs)
    parallel, threads = plan_workers(n_runs, jobs, threads)
    return LocalExecutor(parallel, threads, timeout)


def run_sweep(config, out=None, jobs=None, threads=None, force=False, timeout=None, only=None,
              plot=True, dry_run=False, log=print, scheduler=None, scheduler_file=None, executor=None):
    """Validate, run and tabulate a sweep; returns the result rows (dicts) of the selected runs.

    Runs go to ``executor`` when given, else to a Dask cluster (``scheduler`` address
    or ``scheduler_file``), else to local worker processes. Raises SweepConfigError
    before anything runs when the file or any run's options are invalid. Failed runs
    do not raise: they appear in the rows.
    """
    runs = load_config(config)
    stem = os.path.splitext(os.path.basename(config))[0]
    out = out or os.path.join("runs", "sweeps", stem)
    argvs = {name: build_run_argv(name, run["options"], os.path.join(out, name)) for name, run in runs.items()}
    selected = _select(runs, only)
    if dry_run:
        for name in selected:
            log(f"{name}: fastnn-train {' '.join(argvs[name])}")
        return []
    os.makedirs(out, exist_ok=True)
    todo = [n for n in selected if force or not is_finished(os.path.join(out, n), argvs[n])]
    if executor is None:
        executor = make_executor(len(todo), jobs, threads, timeout, scheduler, scheduler_file)
    skipped = len(selected) - len(todo)
    log(f"fastnn-sweep: {len(runs)} runs in {config}; {len(todo)} to run"
        + (f", {skipped} already finished (skipped; --force reruns them)" if skipped else "")
        + f"; {executor.description}; output in {out}")

    header = [f"Config: `{config}`; last invocation: {executor.description} (each run's own thread count "
              f"is in its sweep_run.json). Accuracies in percent; delta = test - reported; "
              f"best = epoch of highest val accuracy (lowest loss without validation); "
              f"samples/s = median over epochs; wall s = whole process (data load, compile, training, plots)."]
    lock = threading.Lock()

    def tabulate():
        rows = [result_row(n, runs[n], os.path.join(out, n)) for n in runs]
        with lock:
            write_results(rows, out, title=f"Sweep {stem}", header_lines=header)
        return rows

    done = 0
    try:
        executor.start(len(todo), any(_uses_numba(argvs[n]) for n in todo), log)
        for name, record in executor.results([(n, argvs[n], os.path.join(out, n)) for n in todo]):
            done += 1
            row = result_row(name, runs[name], os.path.join(out, name))
            msg = (f"test {row['test_accuracy']:.2f}%" if record["status"] == "ok"
                   else f"FAILED: {record['error']}")
            note = f"; {record['note']}" if record.get("note") else ""
            log(f"[{done}/{len(todo)}] {name}: {msg} ({record.get('wall_seconds', 0.0):.1f} s{note})")
            tabulate()
    except BaseException as exc:  # Ctrl-C, SIGTERM (Interrupted) or an error: no worker outlives the sweep
        executor.cancel()
        stop_workers(getattr(exc, "signum", signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM))
        if isinstance(exc, KeyboardInterrupt):
            log("fastnn-sweep: interrupted; finished runs are kept, start the sweep again to resume")
            tabulate()
        raise
    finally:
        executor.close()
    rows = tabulate()
    if plot:
        from .sweep_plots import plot_comparison

        histories = {}
        for name in runs:
            summary = read_summary(os.path.join(out, name))
            if summary is not None:
                histories[name] = summary.get("history", {})
        plot_comparison(rows, histories, os.path.join(out, "comparison.png"), title=f"Sweep {stem}")
    rows = [r for r in rows if r["run"] in selected]
    failed = [r["run"] for r in rows if r["status"] == "failed"]
    log(f"fastnn-sweep: results in {os.path.join(out, 'results.md')}"
        + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""))
    return rows


def main(argv=None):
    """Entry point of ``fastnn-sweep``; returns the exit status (1 when a run failed, 2 for a bad file)."""
    args = build_parser().parse_args(argv)
    try:
        with InterruptGuard():  # SIGTERM too arrives as an exception, so the workers are ended
            rows = run_sweep(args.config, out=args.out, jobs=args.jobs, threads=args.threads, force=args.force,
                             timeout=args.timeout, only=args.only, plot=not args.no_plot, dry_run=args.dry_run,
                             scheduler=args.scheduler, scheduler_file=args.scheduler_file)
    except KeyboardInterrupt as exc:
        return getattr(exc, "exit_status", 130)
    except (SweepConfigError, OSError, ValueError) as exc:
        print(f"fastnn-sweep: error: {exc}", file=sys.stderr)
        return 2
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
