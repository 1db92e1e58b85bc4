"""The README's results tables, generated from recorded runs.

A recorded run is a small JSON file under ``benchmarks/results/<table>/<run>.json``: the
numbers a table quotes, taken from the run's ``summary.json`` (``fastnn-train`` writes it),
with the commit, machine, load average, threads and library versions it was made with.
The README holds each table between ``<!-- results:<table> -->`` and ``<!-- /results:<table> -->``;
``write`` regenerates them, and ``tests/test_readme_results.py`` fails when the README
differs from what the records give (a number typed by hand, or a stale one).

    # record runs (a fastnn-train folder, or every run of a fastnn-sweep folder)
    python benchmarks/results.py record defaults runs/mnist-defaults --name mnist
    python benchmarks/results.py record seeds runs/sweeps/seeds --config benchmarks/sweeps/seeds.toml
    python benchmarks/results.py record best runs/sweeps/best --config benchmarks/sweeps/best.toml
    # rewrite the README's tables from the records; or only check them (exit status 1 when stale)
    python benchmarks/results.py write
    python benchmarks/results.py check

Tables: ``defaults`` (``fastnn-train --layers 128 64`` per data set), ``seeds`` (the seed
projects' configurations, ``benchmarks/sweeps/seeds.toml``), ``best`` (the accuracy push,
``benchmarks/sweeps/best.toml``), ``tta`` (time to accuracy: ``benchmarks/time_to_accuracy.py``
runs, recorded by its ``--record`` or from its ``--out`` file), ``speed`` (``fastnn-bench`` runs:
record its ``--out`` folder, ``python benchmarks/results.py record speed bench_results --name idle``)
and ``targets`` (the per-CPU table, "Other CPUs": a ``fastnn-bench --target host haswell ...`` run,
recorded from its ``--out`` folder's ``targets.json``: ``python benchmarks/results.py record targets OUT --name cpus``).
"""

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
TABLES = ("defaults", "seeds", "best", "tta", "speed", "targets")
DATA_NAMES = {"mnist": "MNIST", "kmnist": "KMNIST"}
# fastnn-train options a record keeps (the settings a table may quote)
SETTINGS = ("dataset", "layers", "architecture", "activation", "optimizer", "lr", "momentum", "nesterov",
            "weight_decay", "dropout", "batch_norm", "batch_size", "epochs", "schedule", "label_smoothing",
            "early_stopping", "val_split", "seed", "tta", "aug_shift", "aug_rotation", "aug_scale",
            "aug_elastic_alpha", "aug_elastic_sigma", "train_limit", "backend", "threads")


# ------------------------------------------------------------------------------ recording


def record_from_summary(summary, name, table, meta=None, argv=None):
    """The record of one run: its ``summary.json`` (dict) reduced to what the tables quote."""
    hist = summary.get("history", {})
    final = summary.get("final", {})
    args = summary.get("config", {}).get("args", {})
    epochs = [e["seconds"] for e in summary.get("epochs", []) if e.get("seconds") is not None]
    rates = [r for r in hist.get("samples_per_second") or [] if r is not None]
    losses = [v for v in hist.get("val_loss") or [] if v is not None]

    def acc(part):
        return final[part]["accuracy"] if final.get(part) else None

    return {
        "table": table, "name": name, "argv": argv,
        "settings": {k: args[k] for k in SETTINGS if k in args},
        "meta": meta or {},
        "dataset": summary.get("dataset", {}).get("name"),
        "n_train": summary.get("dataset", {}).get("n_train"),
        "test_accuracy": summary["test_accuracy"], "test_loss": summary["test_loss"],
        "test_no_tta": acc("test_no_tta"), "val_accuracy": acc("val"), "tta": summary.get("tta") or 0,
        "epochs_run": summary.get("epochs_run"),
        "best_val_loss_epoch": 1 + losses.index(min(losses)) if losses else None,
        "stop_reason": summary.get("stop_reason"),
        "train_seconds": summary.get("train_seconds"),
        "epoch_seconds": [min(epochs), max(epochs)] if epochs else None,
        "samples_per_second": statistics.median(rates) if rates else None,
        "backend": summary.get("backend"), "threads": summary.get("threads"),
        "thread_independent": summary.get("thread_independent"),
        "provenance": summary.get("provenance"), "versions": summary.get("versions"),
    }


def _read(path):
    with open(path) as f:
        return json.load(f)


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _sweep_meta(config):
    """{run name: meta} of a sweep TOML (grids expanded as fastnn-sweep expands them)."""
    from fastnn.sweep import expand_config

    with open(config, "rb") as f:
        return {name: run["meta"] for name, run in expand_config(tomllib.load(f), str(config)).items()}


def record_from_bench(bench, name):
    """The record of one ``fastnn-bench`` run: its ``bench.json`` (dict) less the raw repeat times."""
    keep = ("samples_per_s", "epoch_s", "extrapolated", "prepare_s", "cpu_per_wall", "busiest_thread_share", "cpus")
    cells = [{**{k: v for k, v in rec.items() if k != "results"},
              "results": {kind: {k: r[k] for k in keep if k in r} for kind, r in rec["results"].items()}}
             for rec in bench["records"]]
    machine = {k: bench["machine"].get(k) for k in ("cpu", "logical_cpus", "python", "fastnn", "numpy", "numba",
                                                     "torch", "blas", "numba_threading_layer", "env")}
    return {"table": "speed", "name": name, "provenance": bench.get("provenance"), "machine": machine,
            "settings": bench["settings"], "compile": bench.get("compile"), "records": cells,
            "fresh_checks": bench.get("fresh_checks", []), "train_rows": bench.get("train_rows", []),
            "seconds": bench.get("seconds")}


def record_tta(rec, records=RECORDS):
    """Keep one ``benchmarks/time_to_accuracy.py`` record (a dict, already reduced) as
    ``tta/<its name>.json``; returns the file written."""
    out = Path(records) / "tta" / f"{rec['name']}.json"
    _write(out, rec)
    return out


def record_from_targets(targets, name):
    """The record of one ``fastnn-bench --target`` run: its ``targets.json`` (dict) less the
    printed table. Refuses a run without provenance (written before targets.json had it)."""
    if not targets.get("provenance"):
        raise SystemExit("this targets.json has no provenance (commit, machine, load): rerun fastnn-bench --target")
    return {"table": "targets", "name": name, "argv": targets.get("argv"), "provenance": targets["provenance"],
            "load_average_end": targets.get("load_average_end"), "targets": targets["targets"]}


def record(table, path, name=None, config=None, records=RECORDS):
    """Record the run folder ``path`` (it has a summary.json) or every finished run of the sweep
    folder ``path`` (``config``: its TOML, for the runs' meta); for ``speed``, a fastnn-bench
    ``--out`` folder (its bench.json); for ``targets``, a ``fastnn-bench --target`` ``--out``
    folder (its targets.json). Returns the files written."""
    path = Path(path)
    if table == "tta":
        rec = _read(path)
        return [record_tta({**rec, "name": name or rec["name"]}, records)]
    if table in ("speed", "targets"):
        found = path / ("bench.json" if table == "speed" else "targets.json") if path.is_dir() else path
        make = record_from_bench if table == "speed" else record_from_targets
        out = records / table / f"{name or ('bench' if table == 'speed' else table)}.json"
        _write(out, make(_read(found), name or ("bench" if table == "speed" else table)))
        return [out]
    if (path / "summary.json").exists():
        runs = {name or path.name: path}
    else:
        runs = {d.name: d for d in sorted(path.iterdir()) if (d / "summary.json").exists()}
        if not runs:
            raise SystemExit(f"no summary.json in {path} nor in its sub-folders: pass a fastnn-train run folder "
                             f"or a fastnn-sweep output folder")
    meta = _sweep_meta(config) if config else {}
    written = []
    for run_name, run_dir in runs.items():
        sweep_run = run_dir / "sweep_run.json"
        argv = _read(sweep_run).get("argv") if sweep_run.exists() else None
        rec = record_from_summary(_read(run_dir / "summary.json"), run_name, table, meta.get(run_name), argv)
        rec["position"] = list(meta).index(run_name) if run_name in meta else None  # the sweep file's order
        out = records / table / f"{run_name}.json"
        _write(out, rec)
        written.append(out)
    return written


def load_records(records=RECORDS):
    """{table: {run name: record}} of every recorded run."""
    found = {t: {} for t in TABLES}
    for path in sorted(Path(records).glob("*/*.json")):
        rec = _read(path)
        found.setdefault(rec["table"], {})[rec["name"]] = rec
    return found


# ------------------------------------------------------------------------------ tables


def pct(fraction):
    return f"{100 * fraction:.2f}"


def _load(rec):
    """'load 2.1-3.4': the 1-minute load average as training started and ended."""
    origin = rec.get("provenance") or {}
    start, end = (origin.get("load_average") or [None])[0], (origin.get("load_average_end") or [None])[0]
    if start is None:
        return "load unknown"
    lo, hi = sorted((start, end if end is not None else start))
    return f"load {lo:.1f}" if f"{lo:.1f}" == f"{hi:.1f}" else f"load {lo:.1f}-{hi:.1f}"


def _threads(rec):
    n = rec.get("threads")
    return f"{n} thread{'s' if n != 1 else ''}" if n else rec.get("backend", "")


def _commits(recs):
    commits = sorted({(r.get("provenance") or {}).get("commit") or "unknown" for r in recs})
    return ", ".join(c[:9] + ("+dirty" if c.endswith("+dirty") else "") for c in commits)


def _footer(recs):
    cpus = sorted({f"{(r.get('provenance') or {}).get('cpu')} ({(r.get('provenance') or {}).get('logical_cpus')} "
                   f"logical CPUs)" for r in recs})
    versions = sorted({", ".join(f"{k} {v}" for k, v in (r.get("versions") or {}).items() if k != "blas")
                       for r in recs})
    return (f"*Recorded runs: `benchmarks/results/{recs[0]['table']}/`, commit {_commits(recs)}, "
            f"{'; '.join(cpus)}, {'; '.join(versions)}.*")


def _md(head, rows, align):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def defaults_table(recs):
    order = sorted(recs.values(), key=lambda r: (r["backend"] != "numba", list(DATA_NAMES).index(r["dataset"])
                                                 if r["dataset"] in DATA_NAMES else 99))
    rows = []
    for r in order:
        lo, hi = r["epoch_seconds"]
        label = DATA_NAMES.get(r["dataset"], r["dataset"]) + (f" (`--backend {r['backend']}`)"
                                                             if r["backend"] != "numba" else "")
        rows.append([label, pct(r["test_accuracy"]) + "%",
                     f"{r['test_loss']:.3f}", f"{r['train_seconds']:.1f} s", f"{lo:.2f}-{hi:.2f} s",
                     f"{_threads(r)}, {_load(r)}"])
    head = ["data set", "test accuracy", "test loss", f"training time ({order[0]['epochs_run']} epochs)", "per epoch",
            "threads, load average"]
    return _md(head, rows, "lrrrrl") + "\n\n" + _footer(order)


def _family_key(rec):
    s = rec["settings"]
    acts = ["relu", "tanh", "sigmoid"]
    return (len(s.get("layers", [])), s.get("layers", [0])[0], acts.index(s["activation"]) if s.get(
        "activation") in acts else 9)


def _seed_settings(r):
    s = r["settings"]
    parts = (["`--architecture`"] if s.get("architecture") else []) + [f"lr {s['lr']:g}"]
    if s.get("early_stopping") is not None:
        parts[-1] += " constant" if s.get("schedule") == "none" else ""
        parts.append(f"stopped after {r['epochs_run']} of {s['epochs']} epochs (best: {r['best_val_loss_epoch']})"
                     if r["epochs_run"] < s["epochs"] else f"{s['epochs']} epochs (no early stop)")
    else:
        parts.append(f"{r['epochs_run']} epochs")
    return ", ".join(parts)


def _configuration(r):
    source = r["meta"].get("source", r["name"])
    return re.sub(r"^seed: (KMNIST|MNIST),? ?(MLP )?", "", source).replace(" (no number reported)", "")


def seeds_table(recs):
    family = sorted((r for n, r in recs.items() if n.startswith("mnist-family-")), key=_family_key)
    single = sorted((r for n, r in recs.items() if not n.startswith("mnist-family-")),
                    key=lambda r: (r.get("position") is None, r.get("position"), r["name"]))
    rows = []
    for r in single:
        reported = r["meta"].get("reported")
        test = 100 * r["test_accuracy"]
        rows.append([_configuration(r), DATA_NAMES[r["dataset"]], _seed_settings(r),
                     f"{reported:.2f}" if reported is not None else "-", f"{test:.2f}",
                     f"{test - reported:+.2f}" if reported is not None else "-", f"{r['train_seconds']:.1f}"])
    if family:
        accs = [100 * r["test_accuracy"] for r in family]
        secs = [r["train_seconds"] for r in family]
        s = family[0]["settings"]
        widths = ", ".join(sorted({str(r["settings"]["layers"]) for r in family}, key=len))
        rows.append([f"looped family: hidden {widths}"
                     f" x ReLU/Tanh/Sigmoid, Adam ({len(family)} runs)", DATA_NAMES[family[0]["dataset"]],
                     f"lr {s['lr']:g}, {s['epochs']} epochs each", "-", f"{min(accs):.2f} - {max(accs):.2f}", "-",
                     f"{min(secs):.1f} - {max(secs):.1f} each"])
    head = ["seed configuration", "data", "fastnn settings", "reported test %", "fastnn test %", "delta", "train s"]
    out = _md(head, rows, "lllrrrr")
    if family:
        by_width = {}
        for r in family:
            by_width.setdefault(str(r["settings"]["layers"]), []).append(
                f"{r['settings']['activation']} {pct(r['test_accuracy'])}")
        out += "\n\nFamily, test %: " + "; ".join(f"{w} {', '.join(v)}" for w, v in by_width.items()) + "."
    deltas = [100 * r["test_accuracy"] - r["meta"]["reported"] for r in single if r["meta"].get("reported") is not None]
    if deltas:
        verdict = ("Every configuration with a reported number is matched or beaten" if min(deltas) >= 0
                   else "Not every configuration with a reported number is matched")
        out += f"\n\n{verdict} (smallest margin {min(deltas):+.2f} points)."
    threads = sorted({_threads(r) for r in recs.values()})
    loads = [((r.get("provenance") or {}).get("load_average") or [0])[0] for r in recs.values()]
    out += (f" Numba backend, {', '.join(threads)} per run, run one at a time while the machine's load average "
            f"was {min(loads):.1f}-{max(loads):.1f}, so the seconds are upper bounds.")
    return out + "\n\n" + _footer(list(recs.values()))


def best_table(recs):
    rows = []
    order = sorted(recs.values(), key=lambda r: r["dataset"] != "mnist")
    for r in order:
        data = DATA_NAMES[r["dataset"]]
        target = r["meta"].get("target")
        goal = f"{target}% ({'met' if 100 * r['test_accuracy'] >= target else 'not met'})" if target else ""
        label = f"{data}, with test-time augmentation ({r['tta']} views)" if r["tta"] else data
        rows.append([label, f"**{pct(r['test_accuracy'])}%**", goal, f"{r['train_seconds']:.1f} s", r["epochs_run"],
                     f"{r['samples_per_second']:,.0f}", f"{_threads(r)}, {_load(r)}"])
        if r["tta"] and r.get("test_no_tta") is not None:
            rows.append([f"{data}, the same model without it", f"{pct(r['test_no_tta'])}%", "", "", "", "", ""])
    head = ["data set", "test accuracy", "goal", "training time", "epochs", "samples/s (median epoch)",
            "threads, load average"]
    return _md(head, rows, "lrrrrrl") + "\n\n" + _footer(order)


def _tta_cell(rec, threshold, base=None):
    """'12.3 s (epoch 4)', on one thread with its CPU time, or why there is no time. ``base``: the
    fastnn run on the same threads, for PyTorch's cells: fastnn's speed-up, by CPU time on one
    thread (steadier on a shared machine), by wall time on more."""
    if rec is None:
        return "not run"
    hit = rec["reached"][f"{threshold:g}"]
    if hit is None:
        return f"not reached in {len(rec['epochs'])} epochs, best {pct(rec['best_accuracy'])}%"
    one = rec["threads"] == 1
    cell = f"{hit['train_seconds']:.1f} s (epoch {hit['epoch']}" + (f", CPU {hit['cpu_seconds']:.1f} s)" if one else ")")
    ours = base and base["reached"][f"{threshold:g}"]
    if ours:
        key = "cpu_seconds" if one else "train_seconds"
        cell += f", fastnn {hit[key] / ours[key]:.1f}x faster" + (" (CPU)" if one else "")
    return cell


def _seconds(rec, threshold):
    """Seconds to ``threshold`` (CPU time on one thread, else wall), or None."""
    hit = rec["reached"][f"{threshold:g}"]
    return hit and hit["cpu_seconds" if rec["threads"] == 1 else "train_seconds"]


def _fastnn(runs, recipe):
    """The recipe's fastnn run on 1 thread, else on 2 (they reach each accuracy at the same epoch)."""
    return runs.get((recipe, "fastnn", 1)) or runs.get((recipe, "fastnn", 2))


def tta_table(recs):
    """Seconds of training to each threshold, per recipe (fastnn's soonest first), on 1 and 2
    threads, fastnn beside PyTorch; then every run with its load, commit and machine."""
    thresholds_of = {r["dataset"]: tuple(r["thresholds"]) for r in recs.values()}
    runs = {(r["recipe"], r["engine"], r["threads"]): r for r in recs.values()}
    recipes = sorted({r["recipe"] for r in recs.values()})
    rows = []
    for dataset in sorted(thresholds_of, key=lambda d: list(DATA_NAMES).index(d) if d in DATA_NAMES else 99):
        thresholds = thresholds_of[dataset]
        recipes_here = [rc for rc in recipes if _fastnn(runs, rc) and _fastnn(runs, rc)["dataset"] == dataset]
        for t in thresholds:
            def soon(recipe):  # reached first, by fastnn's seconds; then by best accuracy
                r = _fastnn(runs, recipe)
                sec = _seconds(r, t)
                return (0, sec) if sec is not None else (1, -r["best_accuracy"])
            for i, rc in enumerate(sorted(recipes_here, key=soon)):
                f1, f2 = runs.get((rc, "fastnn", 1)), runs.get((rc, "fastnn", 2))
                name = f"**`{rc}`**" if i == 0 and soon(rc)[0] == 0 else f"`{rc}`"
                rows.append([f"{DATA_NAMES[dataset]} {100 * t:g}%", name, _tta_cell(f1, t), _tta_cell(f2, t),
                             _tta_cell(runs.get((rc, "torch", 1)), t, f1), _tta_cell(runs.get((rc, "torch", 2)), t, f2)])
    head = ["test accuracy", "recipe", "fastnn, 1 thread", "fastnn, 2 threads", "PyTorch, 1 thread",
            "PyTorch, 2 threads"]
    out = _md(head, rows, "llllll")
    about = [f"`{rc}`: {next(r['about'] for r in recs.values() if r['recipe'] == rc)}" for rc in recipes]
    out += ("\n\nThe soonest recipe to each accuracy is in bold (by CPU time on one thread). Recipes: "
            + "; ".join(about) + ".")
    run_rows = []
    for r in sorted(recs.values(), key=lambda r: (r["recipe"], r["engine"], r["threads"])):
        o = r["provenance"]
        stop = f", stopped at {100 * max(r['thresholds']):g}%" if r["stopped_early"] else ""
        run_rows.append([r["recipe"], "PyTorch " + r["versions"]["torch"] if r["engine"] == "torch" else "fastnn",
                         r["threads"], f"{len(r['epochs'])} of {r['epochs_planned']}{stop}",
                         f"{pct(r['best_accuracy'])}%", f"{r['train_seconds']:.1f} s / {r['cpu_seconds']:.1f} s",
                         _load({"provenance": o}), _commits([r])])
    out += "\n\n" + _md(["recipe", "engine", "threads", "epochs run", "best test accuracy",
                          "training wall / CPU", "load average", "commit"], run_rows, "llrlrrll")
    # PyTorch's version is in the engine column: one footer line of versions for every run
    plain = [{**r, "versions": {k: v for k, v in r["versions"].items() if k != "torch"}} for r in recs.values()]
    return out + "\n\n" + _footer(sorted(plain, key=lambda r: r["name"]))


def speed_table(recs):
    """Every recorded fastnn-bench run (by name): its tables, checks and the machine it ran on."""
    from fastnn.bench.report import format_checks, format_table

    out = []
    for name in sorted(recs, key=lambda n: (bool(recs[n]["settings"].get("busy")), n)):  # quiet runs first
        r = recs[name]
        m, origin, st = r["machine"], r.get("provenance") or {}, r["settings"]
        loads = [c["loadavg"] for c in r["records"] if c.get("loadavg") is not None]
        c = r.get("compile") or {}
        compiled = (f" Numba's import-to-first-step: {c['cold']['import_to_first_step_s']:.1f} s cold, "
                    f"{c['cached']['import_to_first_step_s']:.2f} s with the cache warm." if c else "")
        out.append(f"#### Run `{name}`: `fastnn-bench {' '.join(st.get('argv') or [])}`\n\n"
                   f"{m['cpu']} ({m['logical_cpus']} logical CPUs), {m['blas']}, NumPy {m['numpy']}, Numba "
                   f"{m['numba']}, PyTorch {m['torch'] or 'not installed'}, Python {m['python']}; threads "
                   f"{', '.join(map(str, st['threads']))}{', one competing CPU-bound process' if st.get('busy') else ''}; "
                   f"load average {min(loads):.1f}-{max(loads):.1f} during the run; median of {st['repeats']}, "
                   f"{st['clock']} clock; commit {_commits([r])}.{compiled}\n"
                   + format_table(r["records"]).replace("\n### ", "\n##### ")
                   + "\n" + format_checks(r["fresh_checks"], r["train_rows"], r["records"]).replace("\n### ", "\n##### "))
    return "\n\n".join(out) + f"\n\n*Recorded runs: `benchmarks/results/speed/`.*"


# What each emulated CPU stands for (LLVM CPU names; ``host`` is the machine itself)
CPU_NOTES = {"haswell": "AVX2 + FMA: Intel 2013 on, AMD Zen 1-3", "skylake": "AVX2 + FMA",
             "sandybridge": "AVX, no FMA", "ivybridge": "AVX, no FMA", "nehalem": "SSE4.2, no FMA",
             "generic": "x86-64's baseline: SSE2, no FMA"}


def _cell_key(ratio):
    return ratio["dataset"], tuple(ratio["layers"]), ratio["threads"], ratio["batch_size"]


def _rate(samples_per_s):
    return f"{samples_per_s / 1e3:.1f}k" if samples_per_s < 1e5 else f"{samples_per_s / 1e3:.0f}k"


def targets_table(recs):
    """Each recorded ``fastnn-bench --target`` run: numba/numpy per emulated CPU and cell, with the
    medians behind each ratio, the run's commit, machine and load."""
    out = []
    for name in sorted(recs):
        r = recs[name]
        origin, rows = r["provenance"], r["targets"]
        done = [row for row in rows if "error" not in row]
        keys = list(dict.fromkeys(_cell_key(q) for row in done for q in row["ratios"]))
        common = {k[:3] for k in keys}
        label = (lambda k: f"batch {k[3]}") if len(common) == 1 else (
            lambda k: f"{DATA_NAMES.get(k[0], k[0])} {'-'.join(map(str, k[1]))}, {k[2]} thr, batch {k[3]}")
        loads = [q["loadavg"] for row in done for q in row["ratios"] if q.get("loadavg") is not None]
        loads += [v[0] for v in (origin.get("load_average"), r.get("load_average_end")) if v]
        commits = {(row.get("provenance") or {}).get("commit") or "unknown" for row in done} | {origin["commit"]}
        first = done[0] if done else {}
        head = [f"CPU (emulated on {origin['cpu']})", "lanes", "FMA", "first layer", "NumPy SIMD, OpenBLAS kernels",
                *(f"{label(k)}: numba/numpy (samples/s)" for k in keys), "load"]
        lines = []
        for row in rows:
            if "error" in row:
                lines.append([row["target"], row["error"]] + [""] * (len(head) - 2))
                continue
            t, cells = row["numba_target"], {_cell_key(q): q for q in row["ratios"]}
            note = "this machine" if row["target"] == "host" else CPU_NOTES.get(row["target"], row["target"])
            lines.append([f"{row['target']} ({note}; LLVM `{t['cpu']}`)", t["lanes"], "yes" if t["fma"] else "no",
                          t["first_layer"], f"{' '.join(row['numpy_simd'] or ['baseline'])}; {' '.join(row['blas_kernels'])}",
                          *(f"{cells[k]['numba_over_numpy']:.2f}x ({_rate(cells[k]['numba'])} / "
                            f"{_rate(cells[k]['numpy'])})" if k in cells else "" for k in keys),
                          f"{row['loadavg']:.1f}" if row.get("loadavg") is not None else "?"])
        (d, layers, threads), = common if len(common) == 1 else [(None, None, None)]
        what = (f"{DATA_NAMES.get(d, d)} {'-'.join(map(str, layers))}, {threads} thread{'s' if threads != 1 else ''}, "
                if d else "")
        out.append(f"Run `{name}`: `fastnn-bench {' '.join(r.get('argv') or [])}`; {what}{first.get('clock', '?')} "
                   f"clock, median of {first.get('repeats', '?')}; load average {min(loads):.1f}-{max(loads):.1f}; "
                   f"{origin['cpu']} ({origin['logical_cpus']} logical CPUs); commit {_commits([{'provenance': {'commit': c}} for c in commits])}.\n\n"
                   + _md(head, lines, "lrlll" + "r" * len(keys) + "r"))
    return "\n\n".join(out) + "\n\n*Recorded runs: `benchmarks/results/targets/`.*"


RENDER = {"defaults": defaults_table, "seeds": seeds_table, "best": best_table, "tta": tta_table,
          "speed": speed_table, "targets": targets_table}


# ------------------------------------------------------------------------------ README


def _block(table):
    return re.compile(rf"(<!-- results:{table} [^>]*-->\n)(.*?)(<!-- /results:{table} -->)", re.S)


def render_readme(text, records):
    """``text`` with each results block replaced by the table its records give; raises when a
    block has no records or a table's block is missing."""
    for table in TABLES:
        if not _block(table).search(text):
            raise ValueError(f"README has no <!-- results:{table} ... --> ... <!-- /results:{table} --> block")
        if not records.get(table):
            raise ValueError(f"no recorded runs for the {table!r} table under {RECORDS}")
        body = RENDER[table](records[table])
        text = _block(table).sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)
    return text


def results_section(text):
    """The README's "## Results" section up to its speed tables (hand-written: see the README)."""
    start = text.index("## Results\n")
    return text[start:text.index("### Speed", start)]


def unbacked_accuracies(text, records):
    """Accuracies (``12.34%``) in the Results section outside the generated blocks and outside
    ``<!-- unrecorded ... -->`` blocks that no recorded run gives (test, test without TTA, validation)."""
    prose = results_section(text)
    for table in TABLES:
        prose = _block(table).sub("", prose)
    prose = re.sub(r"<!-- unrecorded[^>]*-->.*?<!-- /unrecorded -->", "", prose, flags=re.S)
    known = {pct(r[k]) for recs in records.values() for r in recs.values()
             for k in ("test_accuracy", "test_no_tta", "val_accuracy", "best_accuracy") if r.get(k) is not None}
    return [m.group(0) for m in re.finditer(r"(?<![\d.])\d+\.\d\d%", prose) if m.group(0)[:-1] not in known]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/results.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record a fastnn-train run folder or a fastnn-sweep output folder")
    rec.add_argument("table", choices=TABLES)
    rec.add_argument("path", help="a run folder (with summary.json), a sweep output folder, or (speed, targets) "
                                  "a fastnn-bench --out folder")
    rec.add_argument("--name", help="the record's name for a single run folder (default: the folder's name)")
    rec.add_argument("--config", help="the sweep's TOML file (its runs' meta: reported, source, target)")
    sub.add_parser("write", help="rewrite the README's results blocks from the records")
    sub.add_parser("check", help="exit 1 when the README's results blocks differ from the records")
    args = p.parse_args(argv)
    if args.command == "record":
        for path in record(args.table, args.path, args.name, args.config):
            print(f"recorded {path.relative_to(ROOT)}")
        return 0
    text = README.read_text(encoding="utf-8")
    new = render_readme(text, load_records())
    if args.command == "check":
        stale, unbacked = new != text, unbacked_accuracies(text, load_records())
        if stale:
            print("README.md's results tables differ from benchmarks/results/: run python benchmarks/results.py write",
                  file=sys.stderr)
        if unbacked:
            print(f"README.md's Results section quotes accuracies no recorded run gives: {', '.join(unbacked)}",
                  file=sys.stderr)
        return 1 if stale or unbacked else 0
    README.write_text(new, encoding="utf-8")
    print("README.md results tables written from benchmarks/results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
