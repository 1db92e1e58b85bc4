"""Tables (markdown) and the chart (PNG) of training results."""

import math

from ..atomic import atomic_write
from .common import LR


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
    prepared = {}  # dataset -> (seconds, batch-128 epoch seconds), first thread count
    for rec in records:
        numba = rec["results"].get("numba", {})
        if rec["batch_size"] == 128 and numba.get("prepare_s"):
            prepared.setdefault(rec["dataset"], (numba["prepare_s"], numba["epoch_s"]))
    if prepared:
        lines.append("\nnumba prepares one-byte pixel codes once per fit, outside the epoch times above: "
                     + ", ".join(f"{d.upper()} {1e3 * p:.0f} ms ({100 * p / e:.0f}% of a batch-128 epoch)"
                                 for d, (p, e) in prepared.items()) + ".")
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
    with atomic_write(path) as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)


