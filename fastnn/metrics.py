"""Classification metrics: accuracy, confusion matrix, per-class precision/recall/F1."""

import numpy as np


def accuracy(y_true, y_pred):
    """Fraction of equal entries of two label arrays of shape (n,)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}")
    return float(np.mean(y_true == y_pred)) if y_true.size else float("nan")


def confusion_matrix(y_true, y_pred, n_classes=None):
    """Counts C[i, j] of samples with true class i predicted as j; int64 (k, k)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if n_classes is None:
        n_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_report(cm):
    """Precision, recall, F1 and support per class from a confusion matrix.

    Returns a dict of float64/int64 arrays of shape (k,); 0/0 is reported as 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def format_report(cm, class_names=None):
    """A plain-text per-class table (precision, recall, F1, support, accuracy)."""
    rep = per_class_report(cm)
    k = len(rep["support"])
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    width = max(5, max(len(n) for n in names))
    lines = [f"{'class':>{width}}  precision  recall     f1  support"]
    for i in range(k):
        lines.append(f"{names[i]:>{width}}  {rep['precision'][i]:9.4f}  {rep['recall'][i]:6.4f}  "
                     f"{rep['f1'][i]:5.4f}  {rep['support'][i]:7d}")
    total = int(np.sum(cm))
    acc = float(np.trace(cm)) / total if total else float("nan")
    lines.append(f"{'all':>{width}}  {'':9}  {'':6}  {'':5}  {total:7d}   accuracy {acc:.4f}")
    return "\n".join(lines)
