"""The sweep's comparison chart: final accuracies beside reported numbers, and validation curves.

matplotlib is imported lazily through ``fastnn.plotting`` (object-oriented API,
Agg canvas), as for the run plots.
"""

import numpy as np

from .plotting import _figure, _save


def plot_comparison(rows, histories, path, title="Sweep"):
    """Draw one PNG with two panels.

    Left: a horizontal bar per run, its test accuracy in percent (val as a small
    cross), with the reported number as a black diamond; failed runs
    show their status instead of a bar. The accuracy axis starts at 0, so bar
    lengths compare honestly; the exact values sit in the run labels. Right: every
    run's ``val_accuracy`` per epoch overlaid (``accuracy`` dashed when a run had no
    validation split), its legend beside the axes so that it covers no curve.

    Parameters
    ----------
    rows : list of dict
        Result rows from ``fastnn.sweep.result_row`` (accuracies in percent or "").
    histories : dict of str -> dict
        Run name -> the ``history`` dict of its summary.json (lists per epoch).
    path : str
        The PNG to write.

    Returns
    -------
    str
        The path written.
    """
    n = max(1, len(rows))
    fig = _figure(13, max(3.5, 1.2 + 0.32 * n))
    ax_bar, ax_curve = fig.subplots(1, 2, width_ratios=[1.1, 1])
    colors = [_color(i, n) for i in range(n)]
    y = np.arange(len(rows))[::-1]  # first run at the top

    for yi, row, color in zip(y, rows, colors):
        test = row.get("test_accuracy")
        if isinstance(test, float):
            ax_bar.barh(yi, test, color=color, alpha=0.85, height=0.7)
    lo = 0.0  # bars start at zero: a zoomed axis would exaggerate differences of a point or two
    for yi, row in zip(y, rows):
        test = row.get("test_accuracy")
        if isinstance(test, float):
            if isinstance(row.get("val_accuracy"), float):
                ax_bar.plot(row["val_accuracy"], yi, "x", color="0.3", markersize=4)
        else:
            ax_bar.text(lo + 0.2, yi, str(row.get("status") or "not run"), va="center", fontsize=7, color="red")
        reported = row.get("reported")
        if reported not in ("", None):
            ax_bar.plot(float(reported), yi, "D", color="black", markersize=5)
    # the value sits in the tick label, where no marker can cover it
    ax_bar.set_yticks(y, [f"{r['run']}  " + (f"{r['test_accuracy']:.2f}" if isinstance(r.get("test_accuracy"), float)
                                              else "-") for r in rows], fontsize=7)
    ax_bar.set_xlim(lo, 100.5)
    ax_bar.set_xticks(range(0, 101, 10))
    ax_bar.set_xlabel("accuracy (%)")
    ax_bar.set_title("test accuracy (bar), val (x), reported (black diamond)", fontsize=9)
    ax_bar.grid(True, axis="x", alpha=0.3)

    drawn = 0
    for row, color in zip(rows, colors):
        hist = histories.get(row["run"]) or {}
        val = [v for v in hist.get("val_accuracy") or [] if v is not None]
        style, curve = "-", val
        if not curve:
            style, curve = "--", [v for v in hist.get("accuracy") or [] if v is not None]
        if curve:
            epochs = np.arange(1, len(curve) + 1)
            ax_curve.plot(epochs, 100.0 * np.asarray(curve), style, marker=".", color=color,
                          label=row["run"], linewidth=1.2, markersize=4)
            drawn += 1
    from matplotlib.ticker import MaxNLocator

    ax_curve.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_curve.set_xlabel("epoch")
    ax_curve.set_ylabel("validation accuracy (%)")
    ax_curve.set_title("validation accuracy per epoch (dashed: train accuracy, no val split)", fontsize=9)
    ax_curve.grid(True, alpha=0.3)
    if drawn:
        ax_curve.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                        ncol=2 if drawn > 24 else 1)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _color(i, n):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return cmap(i % cmap.N)
