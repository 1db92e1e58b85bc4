"""What keeps the benchmark honest, beside its tables.

* ``fresh_process_rate``: a baseline column (the NumPy backend, the reference loop) timed
  the same way in a fresh process that imports NumPy first, as a plain NumPy program does:
  each baseline must run within ``FRESH_TOLERANCE`` of that inside the bench, or its ratios
  flatter fastnn. The two are timed in turns (``FRESH_ROUNDS`` each), so that the machine
  drifting between them (a shared VM's speed wanders by 10-20% over minutes) cannot decide it.
* ``train_command``: the end-to-end ``fastnn-train`` row: the command, from start to its
  printed test accuracy, in a fresh process with Numba's cache warm.
* ``competing_process``: ``--busy``: one CPU-bound process (``while 1: pass``) runs beside
  the bench, the case where more threads must not become a trap.
"""

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRESH_TOLERANCE = 0.10
FRESH_ROUNDS = 3

_FRESH = """
import json, sys
import numpy  # first, as a plain NumPy program loads it (and its OpenBLAS, with OpenBLAS's defaults)
spec = json.loads(sys.argv[1])
from fastnn import bench
bench.set_threads(spec["threads"])
x, y = bench.load_training_set(spec["dataset"], spec["limit"])
run = bench.make_runner(spec["kind"], x, y, bench.he_weights(bench.layer_sizes(x.shape[1], spec["hidden"])))
res = bench.time_training({spec["kind"]: run}, len(x), spec["batch_size"], spec["max_seconds"], spec["repeats"])
print(json.dumps(res[spec["kind"]]["samples_per_s"]))
"""


def fresh_process_rate(kind, dataset, hidden, batch_size, threads, max_seconds, repeats, limit=None):
    """Samples/s of runner ``kind`` alone in a fresh process (NumPy imported first), timed as in the bench."""
    spec = dict(kind=kind, dataset=dataset, hidden=list(hidden), batch_size=batch_size, threads=threads,
                max_seconds=max_seconds, repeats=repeats, limit=limit)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT" or _user_set(k)}
    proc = subprocess.run([sys.executable, "-c", _FRESH, json.dumps(spec)], env=env, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode:
        raise RuntimeError(f"fresh-process timing of {kind} failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def _user_set(name):
    """Whether the environment variable ``name`` came from the user, not from ``import fastnn``."""
    import fastnn

    return name not in getattr(fastnn, "ENV_DEFAULTS_APPLIED", ())


def fresh_checks(records, max_seconds, limit=None, kinds=("numpy", "reference"), log=print):
    """Compare each baseline column with a fresh process at one batch size per table (128, or
    the nearest timed): in turns, FRESH_ROUNDS times each, the column again inside this process
    and alone in a fresh one, medians compared; returns a list of check dicts (also logged)."""
    from .machine import set_threads
    from .training import time_training
    from .workload import he_weights, load_training_set, make_runner

    checks, seen = [], set()
    for rec in records:
        key = (rec["threads"]["numba"], rec["dataset"], tuple(rec["layers"]))
        batches = [r["batch_size"] for r in records if (r["threads"]["numba"], r["dataset"], tuple(r["layers"])) == key]
        if key in seen or rec["batch_size"] != min(batches, key=lambda b: abs(b - 128)):
            continue
        seen.add(key)
        x, y = load_training_set(rec["dataset"], limit)
        weights = he_weights(rec["layers"])
        set_threads(key[0])  # this process's timings; a fresh process sets its own
        for kind in kinds:
            if kind not in rec["results"]:
                continue
            inside, fresh = [], []
            for _ in range(FRESH_ROUNDS):
                run = make_runner(kind, x, y, weights)  # from the same weights each round
                inside.append(time_training({kind: run}, len(x), rec["batch_size"], max_seconds, 1)[kind]["samples_per_s"])
                fresh.append(fresh_process_rate(kind, rec["dataset"], rec["layers"][1:-1], rec["batch_size"], key[0],
                                                max_seconds, 1, limit))
            now, alone = statistics.median(inside), statistics.median(fresh)
            check = {"kind": kind, "dataset": rec["dataset"], "layers": rec["layers"], "batch_size": rec["batch_size"],
                     "threads": key[0], "table": rec["results"][kind]["samples_per_s"], "inside": now, "fresh": alone,
                     "inside_runs": inside, "fresh_runs": fresh, "ratio": now / alone,
                     "ok": abs(now / alone - 1) <= FRESH_TOLERANCE}
            checks.append(check)
            log(format_check(check))
    return checks


def format_check(c):
    verdict = "ok" if c["ok"] else f"OFF by more than {100 * FRESH_TOLERANCE:.0f}%"
    table = f" (table: {c['table']:,.0f})" if "table" in c else ""
    turns = f", in turns, medians of {len(c['fresh_runs'])}" if "fresh_runs" in c else ""
    return (f"{c['kind']} {c['dataset'].upper()} {'-'.join(map(str, c['layers']))} batch {c['batch_size']}, "
            f"{c['threads']} thread(s): {c['inside']:,.0f} samples/s in the bench{table}, {c['fresh']:,.0f} alone in "
            f"a fresh process{turns} ({c['ratio']:.2f}x: {verdict})")


def train_command(threads, dataset="mnist", epochs=3, batch_size=128, limit=None):
    """Run ``fastnn-train`` (plain SGD lr 0.01 as the bench's MLP.fit: momentum 0, where the command's
    ``--optimizer sgd`` defaults to 0.9; 128-64, ``epochs`` epochs) in a fresh process; returns the
    wall seconds of the whole command, its training seconds, median epoch samples/s and test accuracy."""
    with tempfile.TemporaryDirectory(prefix="fastnn-bench-train-") as out:
        argv = ["--dataset", dataset, "--layers", "128", "64", "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0",
                "--schedule", "none", "--epochs", str(epochs), "--batch-size", str(batch_size),
                "--threads", str(threads), "--out", out, "--no-plots", "--verbose", "0", "--overwrite"]
        argv += ["--train-limit", str(limit)] if limit else []
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fastnn.cli", *argv], capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"fastnn-train {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
        summary = json.loads((Path(out) / "summary.json").read_text())
    rates = sorted(r for r in summary["history"]["samples_per_second"] if r)
    return {"command": "fastnn-train " + " ".join(a for a in argv if not a.startswith(out)), "threads": threads,
            "dataset": dataset, "epochs": epochs, "batch_size": batch_size, "wall_s": wall,
            "train_s": summary["train_seconds"], "samples_per_s": rates[len(rates) // 2],
            "test_accuracy": summary["test_accuracy"]}


@contextlib.contextmanager
def competing_process(active=True):
    """One CPU-bound Python process (``while 1: pass``) running for the block (``active``)."""
    if not active:
        yield None
        return
    proc = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
    try:
        time.sleep(0.5)  # let it start and take its share
        yield proc
    finally:
        proc.kill()
        proc.wait()
