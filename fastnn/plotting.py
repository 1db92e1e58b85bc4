"""PNG reports: learning curves, confusion matrix, a gallery of predictions.

matplotlib is imported lazily, and only its object-oriented API is used
(``matplotlib.figure.Figure`` renders with the Agg canvas), so importing fastnn
stays fast and the global pyplot backend of an interactive session is never
touched.
"""

import os

import numpy as np

from .atomic import atomic_write
from .validation import Interval, check_value


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path):
    with atomic_write(path) as f:  # a full disk leaves no 0-byte or partial PNG
        fig.savefig(f, format="png")
    return os.fspath(path)


def plot_curve(history, metric, path, title=None, test=None):
    """Plot ``metric`` and ``val_<metric>`` per epoch from a History (or its dict) into a PNG.

    ``test``, the final model's test-set value, is drawn as a star after the last epoch.
    Returns the path written.
    """
    hist = getattr(history, "history", history)
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    n_epochs = 0
    for key, label in ((metric, "train"), (f"val_{metric}", "validation")):
        values = hist.get(key)
        if values:
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=label)
            n_epochs = max(n_epochs, len(values))
    if test is not None:
        ax.plot([max(n_epochs, 1)], [test], marker="*", markersize=14, linestyle="none", color="black",
                label=f"test (final model): {test:.4f}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(cm, path, class_names=None, title="Confusion matrix"):
    """Draw a (k, k) confusion matrix of counts (rows true, columns predicted) into a PNG."""
    cm = np.asarray(cm)
    k = cm.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    fig = _figure(1.0 + 0.6 * k, 0.6 + 0.6 * k)
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > threshold else "black")
    return _save(fig, path)


#: most images a gallery draws: 50 rows of 8 already make a 65 x 73 inch figure
GALLERY_MAX = 400


def plot_gallery(images, y_true, y_pred, path, n=64, image_shape=(28, 28), class_names=None, columns=8):
    """A grid of images titled "pred (true)", misclassified ones first (in red).

    Parameters
    ----------
    images : array (N, H*W) or (N, H, W)
    y_true, y_pred : int arrays (N,)
    n : int in [1, GALLERY_MAX]
        Number of images shown (the first misclassified, then correct ones).
    """
    check_value("n", n, Interval("int", 1, GALLERY_MAX))
    images = np.asarray(images)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    wrong = np.flatnonzero(y_true != y_pred)
    right = np.flatnonzero(y_true == y_pred)
    pick = np.concatenate([wrong, right])[:n]
    names = (lambda c: str(class_names[c])) if class_names is not None else str
    rows = max(1, -(-len(pick) // columns))
    fig = _figure(1.3 * columns, 1.45 * rows)
    for slot, i in enumerate(pick):
        ax = fig.add_subplot(rows, columns, slot + 1)
        ax.imshow(images[i].reshape(image_shape), cmap="gray_r", vmin=0, vmax=max(1.0, float(images[i].max())))
        bad = y_true[i] != y_pred[i]
        ax.set_title(f"{names(y_pred[i])} ({names(y_true[i])})", fontsize=8, color="red" if bad else "black")
        ax.axis("off")
    fig.suptitle(f"predicted (true): {len(wrong)} of {len(y_true)} misclassified", fontsize=10)
    return _save(fig, path)
