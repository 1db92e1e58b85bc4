"""Tables (markdown) and the chart (PNG) of training results."""

import math

from ..atomic import atomic_write
from .common import FIT_TABLE, LOOP_TABLE, LR


def ratio(rec, a, b):
    r = rec["results"]
    return r[a]["samples_per_s"] / r[b]["samples_per_s"] if a in r and b in r else None


FIT_RATIOS = (("fit", "reference"), ("fit", "torch"), ("fit", "jax"), ("fit", "numba"), ("estimator", "fit"))
LOOP_RATIOS = (("numba", "numpy"), ("numba", "reference"), ("numpy", "reference"), ("numba", "torch"))


def format_table(records):
    """Markdown tables, one pair per (threads, dataset, layers): first ``MLP.fit`` against its
    peers (samples/s, ratios; ``fit/numba``: fit against the inner loop it drives), then the
    inner loop (``train_steps``) against the NumPy baselines, with % of the matmul peak."""
    lines, groups = [], {}
    for rec in records:
        key = (rec["threads"]["numba"], rec["dataset"], tuple(rec["layers"]))
        groups.setdefault(key, []).append(rec)
    for (threads, dataset, sizes), recs in groups.items():
        title = f"{dataset.upper()} {'-'.join(map(str, sizes))}, SGD lr {LR}, {threads} thread(s)"
        clock = " (CPU time)" if recs[0].get("clock") == "cpu" else ""
        busy = ", one competing CPU-bound process (--busy)" if recs[0].get("busy") else ""
        fit_kinds = [k for k in FIT_TABLE if k in recs[0]["results"]]
        if "fit" in fit_kinds:
            lines.append(f"\n### `MLP.fit`: {title}{clock}{busy}{_load_note(recs)}\n")
            lines += _cells(recs, fit_kinds, FIT_RATIOS, None)
        loop_kinds = [k for k in LOOP_TABLE if k in recs[0]["results"]]
        if loop_kinds:
            peak = recs[0]["peak_gflops"]
            lines.append(f"\n### Inner loop (`backend.train_steps`): {title}{clock}{busy}"
                         + (f", float32 matmul peak {peak:.0f} GFLOP/s" if peak else "") + _load_note(recs) + "\n")
            lines += _cells(recs, loop_kinds, LOOP_RATIOS, peak)
    prepared = {}  # dataset -> (seconds, batch-128 epoch seconds), first thread count
    for rec in records:
        numba = rec["results"].get("numba", {})
        if rec["batch_size"] == 128 and numba.get("prepare_s"):
            prepared.setdefault(rec["dataset"], (numba["prepare_s"], numba["epoch_s"]))
    if prepared:
        lines.append("\nThe inner loop's data set is prepared (one-byte pixel codes) once, outside its epoch times; "
                     "`MLP.fit` pays it on its first call on a data set only (`fastnn.prepared`): "
                     + ", ".join(f"{d.upper()} {1e3 * p:.0f} ms ({100 * p / e:.0f}% of a batch-128 epoch)"
                                 for d, (p, e) in prepared.items()) + ".")
    for extra in (format_jax_cores(records), format_thread_ratios(records), format_targets(records)):
        if extra:
            lines.append(extra)
    lines.append("\n`*` step-limited: a fixed number of steps of the epoch was timed and samples/s extrapolated.")
    lines.append("`fit`: one-epoch `MLP.fit` calls (Numba backend) on the same data set each time; `estimator`: "
                 "one-epoch `fastnn.MLPClassifier.fit` calls (a fresh estimator each, plain SGD); the peers (reference "
                 "NumPy loop, PyTorch, JAX: the epoch as one `jax.jit`-compiled `lax.scan`) run a whole epoch per call. "
                 "The inner loop runs an epoch in 8 `train_steps` calls.")
    lines.append("%peak: dense training FLOPs/sample x samples/s over the float32 matmul peak measured at that "
                 "thread count (large np.dot); zero-skipping kernels do less work than counted, so it can exceed 100%.")
    return "\n".join(lines)


def _cells(recs, kinds, ratio_pairs, peak):
    ratios = [(a, b) for a, b in ratio_pairs if a in kinds and (b in kinds or b in recs[0]["results"])]
    head = ["batch"] + [f"{k} samples/s" for k in kinds] + [f"{a}/{b}" for a, b in ratios]
    head += [f"{k} %peak" for k in kinds] if peak else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in recs:
        res = rec["results"]
        row = [str(rec["batch_size"])]
        row += [f"{res[k]['samples_per_s']:,.0f}{'*' if res[k]['extrapolated'] else ''}" if k in res else "-"
                for k in kinds]
        row += [f"{r:.2f}x" if (r := ratio(rec, a, b)) else "-" for a, b in ratios]
        if peak:
            row += [f"{100 * res[k]['samples_per_s'] * rec['flops_per_sample'] / 1e9 / peak:.1f}%" if k in res else "-"
                    for k in kinds]
        lines.append("| " + " | ".join(row) + " |")
    return lines


# Issue 14's goals for MLP.fit against its peers: (dataset, hidden layers, batch, peer) -> ratio
TARGETS = {("mnist", (128, 64), 1, "reference"): 25, ("mnist", (128, 64), 8, "reference"): 6,
           ("mnist", (128, 64), 32, "reference"): 4, ("mnist", (128, 64), 128, "reference"): 3,
           ("mnist", (128, 64), 512, "reference"): 2.5, ("kmnist", (128, 64), 128, "reference"): 2.5,
           ("mnist", (1024, 1024), 128, "reference"): 2, ("mnist", (128, 64), 128, "torch"): 4,
           ("mnist", (128, 64), 8, "torch"): 15, ("mnist", (128, 64), 128, "jax"): 2,
           ("mnist", (128, 64), 8, "jax"): 3}


def format_targets(records):
    """The goals against what this run measured (MLP.fit / peer, per thread count)."""
    threads = sorted({r["threads"]["numba"] for r in records})
    rows = []
    for (dataset, hidden, bs, peer), goal in TARGETS.items():
        got = {r["threads"]["numba"]: ratio(r, "fit", peer) for r in records
               if (r["dataset"], tuple(r["layers"][1:-1]), r["batch_size"]) == (dataset, hidden, bs)}
        cells = [f"{got[t]:.2f}x" if got.get(t) else "-" for t in threads]
        measured = [v for v in got.values() if v]
        if not measured:
            continue
        verdict = "met" if min(measured) >= goal else "not met"
        rows.append(f"| {dataset.upper()} {'-'.join(map(str, hidden))}, batch {bs}, fit/{peer} | {goal:g}x | "
                    + " | ".join(cells) + f" | {verdict} |")
    if not rows:
        return ""
    head = "| goal (MLP.fit against) | target | " + " | ".join(f"{t} thread(s)" for t in threads) + " | |"
    return "\n".join(["\n### Goals (issue 14) in this run\n", head, "|---|---:|" + "---:|" * len(threads) + "---|", *rows])


def format_jax_cores(records):
    """How many cores the JAX worker kept busy, per thread count (see ``jax_peer``)."""
    per = {}
    for r in records:
        jax = r["results"].get("jax", {})
        if jax.get("cpu_per_wall") is not None:
            per.setdefault(r["threads"]["numba"], []).append(jax)
    if not per:
        return ""
    parts = [f"{t} thread(s): {min(j['cpus'] for j in js)} CPU(s) allowed, CPU time / wall time "
             f"{min(j['cpu_per_wall'] for j in js):.2f}-{max(j['cpu_per_wall'] for j in js):.2f}, busiest thread "
             f"{100 * min(j['busiest_thread_share'] for j in js):.0f}-{100 * max(j['busiest_thread_share'] for j in js):.0f}% "
             f"of the CPU time" for t, js in sorted(per.items())]
    return ("\nJAX runs in a process of its own per thread count (XLA fixes its threads as it loads; one thread: "
            "`--xla_cpu_multi_thread_eigen=false` and bound to one CPU), over its timed calls: " + "; ".join(parts) + ".")


def format_thread_ratios(records):
    """MLP.fit on 2 threads against 1, per cell: more threads must never be a trap."""
    one = {(r["dataset"], tuple(r["layers"]), r["batch_size"]): r for r in records if r["threads"]["numba"] == 1}
    rows = []
    for r in records:
        base = one.get((r["dataset"], tuple(r["layers"]), r["batch_size"]))
        if r["threads"]["numba"] == 1 or base is None or "fit" not in r["results"] or "fit" not in base["results"]:
            continue
        a, b = base["results"]["fit"]["samples_per_s"], r["results"]["fit"]["samples_per_s"]
        rows.append(f"| {r['dataset'].upper()} {'-'.join(map(str, r['layers']))}, batch {r['batch_size']} | {a:,.0f} | "
                    f"{r['threads']['numba']} | {b:,.0f} | {b / a:.2f}x |")
    if not rows:
        return ""
    busy = " (one competing CPU-bound process)" if records[0].get("busy") else ""
    return "\n".join([f"\n### `MLP.fit`: more threads against one{busy}\n",
                      "| network, batch | 1 thread samples/s | threads | samples/s | ratio |",
                      "|---|---:|---:|---:|---:|", *rows])


def format_train_row(row, records):
    """One line: the fastnn-train command end to end, and its epochs against MLP.fit's in the same run."""
    fit = [r["results"]["fit"]["samples_per_s"] for r in records
           if "fit" in r["results"] and r["dataset"] == row["dataset"] and r["batch_size"] == row["batch_size"]
           and r["threads"]["numba"] == row["threads"] and r["layers"][1:-1] == [128, 64]]
    vs = f", {row['samples_per_s'] / fit[0]:.2f}x MLP.fit's epoch in this run" if fit else ""
    return (f"| `{row['command'].split(' --out')[0]}` | {row['threads']} | {row['wall_s']:.2f} s | "
            f"{row['train_s']:.2f} s | {row['samples_per_s']:,.0f}{vs} | {100 * row['test_accuracy']:.2f}% |")


def format_checks(checks, train_rows, records):
    """The fastnn-train rows and the fresh-process checks of the baselines, as markdown."""
    from .checks import FRESH_TOLERANCE, format_check

    lines = []
    if train_rows:
        lines += ["\n### `fastnn-train` end to end (fresh process, warm Numba cache)\n",
                  "| command | threads | whole command | training | samples/s (median epoch) | test accuracy |",
                  "|---|---:|---:|---:|---|---:|"]
        lines += [format_train_row(r, records) for r in train_rows]
    if checks:
        bad = [c for c in checks if not c["ok"]]
        lines += [f"\nBaselines inside the bench against the same code alone in a fresh process (NumPy imported "
                  f"first), tolerance {100 * FRESH_TOLERANCE:.0f}%: "
                  + ("all within it." if not bad else f"{len(bad)} of {len(checks)} outside it.")]
        lines += [f"* {format_check(c)}" for c in checks]
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
    with atomic_write(path) as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)


