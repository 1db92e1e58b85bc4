"""``fastnn-bench --target NAME [NAME ...]``: the same benchmark with Numba compiling for other CPUs.

Numba reads ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` once, when it is imported, so each
target runs the rest of the command line in a fresh process with them set, writing into
``--out``/NAME/, and the per-target ratios are gathered into one table (``targets.json``).
``host`` is this machine as it is; any other name is an LLVM CPU name (``haswell``:
AVX2 + FMA; ``sandybridge``: AVX without FMA; ``generic``: x86-64's SSE2; ``skylake-avx512``,
``znver3``, ...) compiled with that CPU's own features (``NUMBA_CPU_FEATURES`` empty; the name
alone would keep the host's). An emulated CPU runs on this one, so its instructions must
exist here: a newer CPU than the host dies of an illegal instruction (reported, not raised).

NumPy and OpenBLAS choose their kernels from the host's features at run time, so an older
x86 CPU is emulated for them too (``peer_env``): ``NPY_DISABLE_CPU_FEATURES`` turns off what
NumPy found beyond that CPU, and ``OPENBLAS_CORETYPE`` picks OpenBLAS's kernels for it
(Haswell for AVX2 + FMA, Sandybridge for AVX, Nehalem for SSE4.2). Otherwise the NumPy
baseline would run AVX-512 code against Numba's code for a CPU without it. NumPy 2.4 needs
x86-64-v2 (SSE4.2), so ``generic`` (SSE2) gets NumPy's x86-64-v2 code: no real CPU.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ..atomic import write_text


def target_env(name, base=None):
    """The environment that makes Numba compile for ``name`` ('host': as the machine is), with
    NumPy and OpenBLAS held to that CPU too (``peer_env``)."""
    env = dict(os.environ if base is None else base)
    if name == "host":
        env.pop("NUMBA_CPU_NAME", None)
        env.pop("NUMBA_CPU_FEATURES", None)
    else:
        env["NUMBA_CPU_NAME"], env["NUMBA_CPU_FEATURES"] = name, ""
        env.update(peer_env(name))
    return env


def peer_env(name, found=None):
    """NPY_DISABLE_CPU_FEATURES / OPENBLAS_CORETYPE for an x86 CPU ``name`` compiled with its own
    features ({} for AVX-512 CPUs and other architectures: nothing to hold back or not known).
    ``found``: the SIMD features NumPy found here (default: asked)."""
    from ..backends.target import probe

    target = probe(name, "")
    if target.lanes == 16 or not target.arch.startswith(("x86", "i686", "i386")):
        return {}
    if found is None:
        import numpy as np

        found = np.show_config(mode="dicts").get("SIMD Extensions", {}).get("found") or []
    too_new = {"X86_V4"} | ({"X86_V3", "AVX2", "FMA3"} if not (target.avx2 and target.fma) else set()) | (
        {"AVX", "F16C"} if target.lanes < 8 else set())
    disable = [f for f in found if f in too_new or "AVX512" in f]
    env = {"OPENBLAS_CORETYPE": "Haswell" if target.avx2 and target.fma else
           "Sandybridge" if target.lanes == 8 else "Nehalem"}
    if disable:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(disable)
    return env


def without_target(argv):
    """``argv`` less its ``--target`` option and that option's values."""
    out, skipping = [], False
    for a in argv:
        if a == "--target" or a.startswith("--target="):
            skipping = a == "--target"
            continue
        if skipping and not a.startswith("-"):
            continue
        skipping = False
        out.append(a)
    return out


def run_targets(names, argv, out):
    """Runs ``fastnn-bench argv`` once per target (into out/NAME), prints and writes the table.

    ``targets.json``: {"argv", "provenance" (commit, machine, load as the run started),
    "load_average_end", "targets": one row per target (``_row``), "table"}; record it with
    ``python benchmarks/results.py record targets OUT`` (the README's per-CPU table)."""
    from ..provenance import load_average, provenance

    origin = provenance()
    rows = []
    for name in names:
        folder = Path(out) / name
        print(f"\n=== target {name} ===", flush=True)
        proc = subprocess.run([sys.executable, "-m", "fastnn.bench", *without_target(argv), "--out", str(folder)],
                              env=_fresh(target_env(name)))
        rows.append(_row(name, proc.returncode, folder / "bench.json"))
    table = format_target_table(rows)
    print("\n" + table)
    write_text(Path(out) / "targets.json", json.dumps({"argv": list(argv), "provenance": origin,
                                                       "load_average_end": load_average(), "targets": rows,
                                                       "table": table}, indent=1))
    print(f"\nwrote {Path(out) / 'targets.json'}")
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


def _fresh(env):
    # each child starts as the command line does: without the variables this process's
    # ``import fastnn`` set, nor the flag of the plain-NumPy re-run (fastnn.bench.cli._reexec)
    import fastnn

    from .cli import _REEXEC_FLAG

    return {k: v for k, v in env.items() if k not in (*fastnn.ENV_DEFAULTS_APPLIED, _REEXEC_FLAG)}


def _row(name, returncode, path):
    row = {"target": name, "returncode": returncode}
    if returncode < 0:
        row["error"] = f"killed by {signal.Signals(-returncode).name}" + (
            " (the target's instructions do not exist on this CPU)" if -returncode == signal.SIGILL else "")
    elif returncode != 0 or not path.exists():
        row["error"] = f"exit status {returncode}"
    else:
        result = json.loads(path.read_text())
        machine = result["machine"]
        row["numba_target"] = machine["numba_target"]
        row["loadavg"] = machine["loadavg"]
        row["numpy_simd"] = machine.get("simd")
        row["blas_kernels"] = sorted({lib.get("architecture") or "?" for lib in machine["blas_libraries"]})
        row["clock"] = result["settings"]["clock"]
        row["repeats"] = result["settings"]["repeats"]
        row["provenance"] = result.get("provenance")  # the child's: commit, load as it started
        row["versions"] = {k: machine.get(k) for k in ("python", "fastnn", "numpy", "numba", "blas")}
        row["ratios"] = [{"dataset": r["dataset"], "layers": r["layers"], "threads": r["threads"]["numba"],
                          "batch_size": r["batch_size"], "loadavg": r.get("loadavg"),
                          # medians over the repeats, samples per second
                          "numba": r["results"]["numba"]["samples_per_s"],
                          "numpy": r["results"]["numpy"]["samples_per_s"],
                          "numba_over_numpy": r["results"]["numba"]["samples_per_s"]
                          / r["results"]["numpy"]["samples_per_s"]}
                         for r in result["records"] if {"numba", "numpy"} <= set(r["results"])]
    return row


def format_target_table(rows):
    """Markdown: one row per target, numba/numpy per (data set, layers, threads, batch)."""
    keys = []
    for row in rows:
        for r in row.get("ratios", []):
            key = (r["dataset"], tuple(r["layers"]), r["threads"], r["batch_size"])
            if key not in keys:
                keys.append(key)
    head = ["target", "lanes", "FMA", "first layer", "NumPy SIMD", "OpenBLAS"] + [
        f"{d} {'-'.join(map(str, l))} {t} thr, batch {b}" for d, l, t, b in keys] + ["load"]
    lines = ["numba/numpy, samples per second (one training epoch, or the timed part of it):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        if "error" in row:
            lines.append("| " + " | ".join([row["target"], row["error"]] + [""] * (len(head) - 2)) + " |")
            continue
        t = row["numba_target"]
        found = {(r["dataset"], tuple(r["layers"]), r["threads"], r["batch_size"]): r["numba_over_numpy"]
                 for r in row["ratios"]}
        cells = [f"{found[k]:.2f}x" if k in found else "" for k in keys]
        load = f"{row['loadavg']:.1f}" if row["loadavg"] is not None else "?"
        lines.append("| " + " | ".join([f"{row['target']} ({t['cpu']})", str(t["lanes"]), "yes" if t["fma"] else "no",
                                        t["first_layer"], " ".join(row["numpy_simd"] or ["baseline"]),
                                        " ".join(row["blas_kernels"])] + cells + [load]) + " |")
    return "\n".join(lines)
