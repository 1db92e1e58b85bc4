"""Command-line entry points: ``fastnn-train``, ``fastnn-evaluate`` and ``fastnn-export``.

argparse onto the library API and nothing more: every number the commands
report comes from ``MLP.fit`` / ``evaluate`` / ``fastnn.metrics``. Errors that
the library reports (``ValueError`` with a message naming the problem,
``DatasetError`` from the loader, a missing model file) are printed as
``<prog>: error: <message>`` with exit status 2, never as a traceback.
"""

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

import numpy as np

from . import __version__
from .atomic import write_text
from .plotting import GALLERY_MAX
from .provenance import load_average, provenance
from .validation import (
    ACTIVATION_NAMES, BACKEND_NAMES, OPTIMIZER_NAMES, SCHEDULE_NAMES, Interval, POSITIVE_INT, POSITIVE_REAL,
    NON_NEGATIVE_REAL, UNIT_OPEN, check_value,
)

#: Defaults of ``fastnn-train``, measured to reach >= 97.5% test accuracy on MNIST
#: and >= 89% on KMNIST with ``--layers 128 64`` (numbers in the README).
TRAIN_DEFAULTS = {
    "layers": [128, 64],
    "epochs": 5,
    "batch_size": 128,
    "optimizer": "adam",
    "lr": 3e-3,
    "weight_decay": 0.0,
    "schedule": "cosine",
}

TRAIN_EPILOG = """\
defaults: fastnn-train and the library differ on purpose
  fastnn-train     Adam lr 3e-3, cosine schedule, 5 epochs, batch 128
  MLP() + fit()    Adam lr 1e-3, constant rate,  10 epochs, batch 128
The command is tuned to give a good model in seconds (97.9% on MNIST with
--layers 128 64); the library keeps Keras' Adam rate and a constant schedule, so
that a second fit() call continues at the rate the first one used. The library's
settings on the command line: --lr 0.001 --schedule none --epochs 10. The
command's in code: MLP(lr=3e-3, schedule="cosine").fit(x, y, epochs=5).
"""

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "samples_per_second", "lr"]


def _arg(kind, constraint):
    """An argparse ``type`` that parses with ``kind`` and checks a validation constraint."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {constraint.describe()}, got {text!r}") from None
        if not constraint.is_satisfied_by(value):
            raise argparse.ArgumentTypeError(f"must be {constraint.describe()}, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def add_version_arg(parser):
    """``--version``: print the command's name and fastnn's version, then exit."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def _common_data_args(parser, dataset_default="mnist"):
    parser.add_argument("--dataset", default=dataset_default, metavar="{mnist,kmnist,PATH}",
                        help="named dataset or a directory with the four IDX files "
                             f"(default: {dataset_default or 'the one the model was trained on'})")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="where to look for named datasets first (DIR/<name>/ or DIR itself); then "
                             "$FASTNN_DATA/<name>/, the user cache, the copy shipped with fastnn (MNIST), "
                             "and a download into the cache")
    parser.add_argument("--backend", choices=BACKEND_NAMES, default="numba", help="compute backend (default: numba)")
    parser.add_argument("--threads", type=_arg(int, POSITIVE_INT), default=None,
                        help="threads for Numba and for BLAS, 1..NUMBA_NUM_THREADS (default: Numba's default, all cores)")


def build_train_parser():
    d = TRAIN_DEFAULTS
    p = argparse.ArgumentParser(
        prog="fastnn-train",
        description="Train an MLP on MNIST-style data; print per-epoch progress and the final test\n"
                    "accuracy. Writes model.fastnn, history.csv, summary.json and the plots loss.png,\n"
                    "accuracy.png and confusion_matrix.png (about 1 MB) into the run folder: --out DIR,\n"
                    "or by default a new runs/YYYYmmdd-HHMMSS/ folder under the current directory.\n"
                    "The last line printed names it.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_arg(p)
    p.add_argument("--layers", type=_arg(int, POSITIVE_INT), nargs="+", default=d["layers"], metavar="N",
                   help=f"hidden layer widths (default: {' '.join(map(str, d['layers']))})")
    _common_data_args(p)
    p.add_argument("--epochs", type=_arg(int, POSITIVE_INT), default=d["epochs"], help=f"(default: {d['epochs']})")
    p.add_argument("--batch-size", type=_arg(int, POSITIVE_INT), default=d["batch_size"],
                   help=f"(default: {d['batch_size']})")
    p.add_argument("--optimizer", choices=OPTIMIZER_NAMES, default=d["optimizer"], help=f"(default: {d['optimizer']})")
    p.add_argument("--lr", type=_arg(float, POSITIVE_REAL), default=None,
                   help=f"base learning rate (default: {d['lr']} for adam, 0.05 for sgd, 0.001 for rmsprop)")
    p.add_argument("--momentum", type=_arg(float, Interval("real", 0, 1, closed="left")), default=None,
                   help="momentum for sgd/rmsprop (default: 0.9 for sgd, 0 for rmsprop)")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    p.add_argument("--weight-decay", type=_arg(float, NON_NEGATIVE_REAL), default=d["weight_decay"],
                   help=f"L2 weight decay (default: {d['weight_decay']})")
    p.add_argument("--activation", choices=ACTIVATION_NAMES, default="relu", help="(default: relu)")
    p.add_argument("--dropout", type=_arg(float, UNIT_OPEN), default=0.0, help="dropout rate after hidden layers")
    p.add_argument("--batch-norm", action="store_true", help="batch normalisation before hidden activations")
    p.add_argument("--architecture", default=None, metavar="SPEC",
                   help="hidden layers as tokens instead of --layers/--dropout/--batch-norm, e.g. "
                        "'dense:256,dropout:0.5,dense:128,dense:128,batchnorm' (dense layers use --activation)")
    p.add_argument("--label-smoothing", type=_arg(float, UNIT_OPEN), default=0.0)
    p.add_argument("--aug-shift", type=_arg(float, NON_NEGATIVE_REAL), default=0.0, metavar="PX",
                   help="augmentation: random shift of up to PX pixels (default: 0 = off)")
    p.add_argument("--aug-rotation", type=_arg(float, NON_NEGATIVE_REAL), default=0.0, metavar="DEG",
                   help="augmentation: random rotation of up to DEG degrees")
    p.add_argument("--aug-scale", type=_arg(float, NON_NEGATIVE_REAL), default=0.0, metavar="FRAC",
                   help="augmentation: random zoom in [1 - FRAC, 1 + FRAC]")
    p.add_argument("--aug-elastic-alpha", type=_arg(float, NON_NEGATIVE_REAL), default=0.0, metavar="A",
                   help="augmentation: elastic distortion strength (with --aug-elastic-sigma, e.g. 20 and 4)")
    p.add_argument("--aug-elastic-sigma", type=_arg(float, NON_NEGATIVE_REAL), default=0.0, metavar="S",
                   help="augmentation: elastic field smoothing in pixels")
    p.add_argument("--val-split", type=_arg(float, UNIT_OPEN), default=0.0,
                   help="fraction of the training set held out for validation (default: 0)")
    p.add_argument("--early-stopping", type=_arg(int, POSITIVE_INT), default=None, metavar="PATIENCE",
                   help="stop when val_loss has not improved for PATIENCE epochs (needs --val-split)")
    p.add_argument("--schedule", choices=SCHEDULE_NAMES, default=d["schedule"],
                   help=f"learning-rate schedule (default: {d['schedule']})")
    p.add_argument("--seed", type=_arg(int, Interval("int", 0)), default=0, help="(default: 0)")
    p.add_argument("--train-limit", type=_arg(int, POSITIVE_INT), default=None, metavar="N",
                   help="train on the first N training images only (quick runs)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run folder for the model, history, summary and plots (default: a new "
                        "runs/YYYYmmdd-HHMMSS/ under the current directory)")
    _tta_arg(p)
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="0 quiet, 1 a progress bar per epoch on a terminal (default; one line per epoch "
                        "into a pipe or file), 2 one line per epoch")
    return p


def build_evaluate_parser():
    p = argparse.ArgumentParser(prog="fastnn-evaluate",
                                description="Evaluate a saved model on a dataset's test set (by default the data set "
                                            "it was trained on): print the accuracy and a per-class table. Writes "
                                            "no file, except the --gallery image if asked for.")
    add_version_arg(p)
    p.add_argument("model", help="a model file written by fastnn-train or model.save")
    _common_data_args(p, dataset_default=None)
    p.add_argument("--batch-size", type=_arg(int, POSITIVE_INT), default=1024, help="inference batch (default: 1024)")
    p.add_argument("--gallery", default=None, metavar="FILE.png",
                   help="write a PNG of test images with predicted and true labels, misclassified first")
    p.add_argument("--gallery-size", type=_arg(int, Interval("int", 1, GALLERY_MAX)), default=64, metavar="N",
                   help=f"images in the gallery, 1..{GALLERY_MAX} (default: 64)")
    _tta_arg(p)
    return p


# helpers -----------------------------------------------------------------------

def _tta_arg(p):
    from .model import TTA_AUGMENT

    p.add_argument("--tta", type=_arg(int, Interval("int", 0)), default=0, metavar="K",
                   help="test-time augmentation: average the predictions of each image and K copies of it, "
                        f"randomly shifted up to {TTA_AUGMENT['shift']:g} px, rotated up to "
                        f"{TTA_AUGMENT['rotation']:g} degrees and zoomed up to {100 * TTA_AUGMENT['scale']:g}%%, "
                        "for the reported accuracies (default: 0 = off)")


def set_threads(n):
    """Use ``n`` threads in Numba and in every BLAS copy threadpoolctl finds, after checking
    1 <= n <= NUMBA_NUM_THREADS; returns Numba's count in use."""
    import numba

    from .backends import blas

    if n is not None:
        check_value("threads", n, Interval("int", 1, int(numba.config.NUMBA_NUM_THREADS)))
        numba.set_num_threads(n)
        blas.set_threads(n)
    return int(numba.get_num_threads())


def make_run_dir(out=None, root="runs"):
    """Create ``out`` (may exist) or a fresh ``root/YYYYmmdd-HHMMSS[-n]``; returns its path."""
    if out is not None:
        os.makedirs(out, exist_ok=True)
        return out
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = os.path.join(root, stamp if n == 0 else f"{stamp}-{n}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
    raise OSError(f"could not create a new run folder under {root!r}")


def versions():
    """Library versions (and the BLAS NumPy uses, when NumPy can say cheaply)."""
    import numba

    info = {"fastnn": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "python": platform.python_version()}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{blas.get('name')} {blas.get('version')}".strip()
    except Exception:
        pass
    return info


def _finite(obj):
    """Replace non-finite floats by None so the JSON stays standard."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def warm_up(model, x, y, batch_size, log=None):
    """Compile the backend's kernels on a throwaway copy of ``model`` (a few rows), so that
    the per-epoch times reported afterwards measure training, not JIT compilation.

    Returns the seconds it took (mostly compilation on a cold cache).
    """
    t0 = time.perf_counter()
    if log:
        log("compiling the Numba kernels (instant when cached) ...")
    twin = type(model).from_config(model.get_config())
    twin.build(model.n_features_, model.n_classes_)
    n = min(len(x), 2 * batch_size)
    twin.fit(x[:n], np.minimum(y[:n], model.n_classes_ - 1), epochs=1, batch_size=batch_size, verbose=0)
    twin.evaluate(x[:n], np.minimum(y[:n], model.n_classes_ - 1))
    return time.perf_counter() - t0


def _write_json(path, obj):
    write_text(path, json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n")


def _make_optimizer(args):
    from .optimizers import get_optimizer

    if args.momentum is not None and args.optimizer == "adam":
        raise ValueError("--momentum applies to sgd and rmsprop, not adam")
    if args.nesterov and args.optimizer != "sgd":
        raise ValueError("--nesterov applies to sgd only")
    extra = {}
    if args.optimizer == "sgd":
        extra = {"momentum": 0.9 if args.momentum is None else args.momentum, "nesterov": args.nesterov}
    elif args.optimizer == "rmsprop":
        extra = {"momentum": args.momentum or 0.0}
    default_lr = {"adam": TRAIN_DEFAULTS["lr"], "sgd": 0.05, "rmsprop": 1e-3}[args.optimizer]
    return get_optimizer(args.optimizer, lr=args.lr or default_lr, weight_decay=args.weight_decay,
                         schedule=args.schedule, **extra)


def _run(prog, parser, body, argv):
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and message
        return exc.code
    try:
        return body(args) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # DatasetError, ModelFormatError are ValueErrors
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


# fastnn-train --------------------------------------------------------------------

def _train(args):
    from .callbacks import CSVLogger, EarlyStopping
    from .datasets import dataset_info, load_dataset
    from .metrics import confusion_matrix
    from .layers import Dense, parse_architecture
    from .model import AUGMENT_KEYS, MLP, Sequential

    # Everything that can be checked without data is checked before the (slow) load.
    if args.early_stopping is not None and args.val_split <= 0:
        raise ValueError("--early-stopping needs a validation set: pass --val-split, e.g. --val-split 0.1")
    # --threads limits BLAS for the NumPy backend too (its matmuls are BLAS calls)
    threads = set_threads(args.threads) if args.backend == "numba" or args.threads is not None else None
    augment = {k: getattr(args, "aug_" + k) for k in AUGMENT_KEYS}
    common = dict(optimizer=_make_optimizer(args), label_smoothing=args.label_smoothing, augment=augment,
                  backend=args.backend, seed=args.seed)
    if args.architecture is None:
        model = MLP(layers=args.layers, activation=args.activation, dropout=args.dropout, batch_norm=args.batch_norm,
                    **common)
    else:
        if args.dropout or args.batch_norm or args.layers != TRAIN_DEFAULTS["layers"]:
            raise ValueError("--architecture replaces --layers, --dropout and --batch-norm; give one or the other")
        hidden = parse_architecture(args.architecture, args.activation)
    callbacks = [EarlyStopping("val_loss", patience=args.early_stopping, restore_best_weights=True)] \
        if args.early_stopping is not None else []

    (x_train, y_train), (x_test, y_test) = load_dataset(args.dataset, args.data_dir)
    info = dataset_info(args.dataset, args.data_dir)
    if args.train_limit is not None:
        x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
    out = make_run_dir(args.out)
    # each epoch's row is on disk as soon as it ends, so an interrupted run keeps its history
    callbacks.append(CSVLogger(os.path.join(out, "history.csv"), columns=HISTORY_COLUMNS[1:], epoch_base=1))
    log = (lambda *a: print(*a, flush=True)) if args.verbose else (lambda *a: None)
    log(f"fastnn-train: {info.name} ({len(x_train)} train, {len(x_test)} test) from {info.directory}; "
        f"backend={args.backend}" + (f", threads={threads}" if threads else "") + f"; output in {out}")

    n_classes = max(info.n_classes, int(y_train.max()) + 1)
    if args.architecture is not None:
        model = Sequential(hidden + [Dense(n_classes)], **common)
    model.build(x_train.shape[1], n_classes)
    model.dataset_ = info.record()  # saved with the model: fastnn-evaluate's default data set
    compile_seconds = warm_up(model, x_train, y_train, args.batch_size, log) if args.backend == "numba" else 0.0
    origin = provenance()  # the load average as training starts; the end's is added below
    t0 = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=args.val_split, callbacks=callbacks, seed=args.seed, verbose=args.verbose)
    train_seconds = time.perf_counter() - t0
    if model.stop_reason:
        log(f"stopped: {model.stop_reason}")

    n_val = int(len(x_train) * args.val_split)
    n_fit = len(x_train) - n_val
    tta = dict(tta=args.tta, seed=args.seed)  # val and test only; the train row stays plain
    final = {"train": model.evaluate(x_train[:n_fit], y_train[:n_fit], return_dict=True),
             "val": model.evaluate(x_train[n_fit:], y_train[n_fit:], return_dict=True, **tta) if n_val else None,
             "test": model.evaluate(x_test, y_test, return_dict=True, **tta)}
    if args.tta:
        final["test_no_tta"] = model.evaluate(x_test, y_test, return_dict=True)
    cm = confusion_matrix(y_test, model.predict(x_test, **tta), model.n_classes_)

    model_path = model.save(os.path.join(out, "model.fastnn"))
    files = {"model": "model.fastnn", "history": "history.csv"}
    if not args.no_plots:
        from .plotting import plot_confusion_matrix, plot_curve

        plot_curve(history, "loss", os.path.join(out, "loss.png"), "Cross-entropy loss", test=final["test"]["loss"])
        plot_curve(history, "accuracy", os.path.join(out, "accuracy.png"), "Accuracy",
                   test=final["test"]["accuracy"])
        plot_confusion_matrix(cm, os.path.join(out, "confusion_matrix.png"), title=f"{info.name} test set",
                              class_names=info.class_names if len(info.class_names) == len(cm) else None)
        files.update(loss_plot="loss.png", accuracy_plot="accuracy.png", confusion_matrix_plot="confusion_matrix.png")
    hist = history.history
    summary = {
        "test_accuracy": final["test"]["accuracy"],
        "test_loss": final["test"]["loss"],
        "tta": args.tta,
        "dataset": {"name": info.name, "directory": str(info.directory), "n_train": n_fit, "n_val": n_val,
                    "n_test": len(x_test), "image_shape": list(info.image_shape), "n_classes": model.n_classes_},
        "config": {"args": {k: v for k, v in vars(args).items()}, "model_class": type(model).__name__,
                   "model": model.get_config(), "n_params": model.count_params()},
        "final": final,
        "history": {"epoch": [e + 1 for e in history.epoch], **hist},
        "epochs": [{"epoch": e + 1, "seconds": hist["seconds"][i], "samples_per_second": hist["samples_per_second"][i]}
                   for i, e in enumerate(history.epoch)],
        "epochs_run": len(history.epoch),
        "stop_reason": model.stop_reason,
        "train_seconds": train_seconds,
        "compile_seconds": compile_seconds,
        "confusion_matrix": cm.tolist(),
        "backend": args.backend,
        "threads": threads,
        # The Numba backend's bits do not depend on the thread count; the NumPy backend's depend on
        # NumPy's BLAS threads on dense layers (README, "Threads").
        "thread_independent": args.backend == "numba",
        "versions": versions(),
        "platform": platform.platform(),
        "provenance": {**origin, "load_average_end": load_average()},
        "files": files,
    }
    _write_json(os.path.join(out, "summary.json"), summary)
    plain = f" (without TTA {final['test_no_tta']['accuracy']:.4f})" if args.tta else ""
    print(f"test accuracy: {final['test']['accuracy']:.4f}{plain}  test loss: {final['test']['loss']:.4f}  "
          f"({len(history.epoch)} epochs, {train_seconds:.1f} s training)  saved to {model_path}", flush=True)
    print(f"run folder: {out}", flush=True)
    return 0


def train_main(argv=None):
    """Entry point of ``fastnn-train``; returns the exit status."""
    return _run("fastnn-train", build_train_parser(), _train, argv)


# fastnn-evaluate -------------------------------------------------------------------

def _evaluate(args):
    from .datasets import dataset_info, load_dataset
    from .io import load_model
    from .metrics import confusion_matrix, format_report

    if args.backend == "numba":
        set_threads(args.threads)
    model = load_model(args.model, backend=args.backend)
    trained_on = model.dataset_
    dataset = args.dataset or _dataset_of(trained_on)
    if args.dataset is None and trained_on is not None and trained_on["path"] and not os.path.isdir(dataset):
        raise ValueError(f"the model was trained on {trained_on['name']} in {dataset}, which is not there any more; "
                         "pass --dataset with the data set's new directory")
    if dataset is None:
        dataset = "mnist"
        print("note: the model file does not say which data set it was trained on (it predates model format 2); "
              "evaluating on mnist, pass --dataset to choose", file=sys.stderr)
    (_, _), (x_test, y_test) = load_dataset(dataset, args.data_dir)
    info = dataset_info(dataset, args.data_dir)
    _check_fits(model, trained_on, info, args.dataset)
    if trained_on is not None and args.dataset is not None and info.name != trained_on["name"]:
        print(f"note: the model was trained on {trained_on['name']}; evaluating on {info.name} as asked",
              file=sys.stderr)
    loss, acc = model.evaluate(x_test, y_test, batch_size=args.batch_size, tta=args.tta)
    pred = model.predict(x_test, batch_size=args.batch_size, tta=args.tta)
    cm = confusion_matrix(y_test, pred, model.n_classes_)
    with_tta = f" with TTA ({args.tta} views)" if args.tta else ""
    print(f"{info.name} test set ({len(y_test)} images){with_tta}: accuracy {acc:.4f}  loss {loss:.4f}")
    print(format_report(cm, class_names=info.class_names))
    if args.gallery:
        from .plotting import plot_gallery

        plot_gallery(x_test, y_test, pred, args.gallery, n=args.gallery_size, image_shape=tuple(info.image_shape),
                     class_names=info.class_names)
        print(f"gallery written to {args.gallery}")
    return 0


def _dataset_of(record):
    """What to pass to load_dataset for a model's dataset record: its path, else its name (None: unknown)."""
    if record is None:
        return None
    return record["path"] or record["name"]


def _check_fits(model, trained_on, info, asked):
    """Refuse a data set whose image size or classes differ from the model's."""
    how = "(--dataset)" if asked else "(the data set recorded in the model file)"
    shape = "x".join(map(str, info.image_shape))
    if info.n_features != model.n_features_ or (
            trained_on is not None and list(info.image_shape) != trained_on["image_shape"]):
        want = "x".join(map(str, trained_on["image_shape"])) + " images" if trained_on else \
            f"{model.n_features_} features per image"
        raise ValueError(f"{info.name} {how} has {shape} images ({info.n_features} features) but the model "
                         f"expects {want}; pass --dataset with a data set of the model's image size")
    if info.n_classes != model.n_classes_:
        raise ValueError(f"{info.name} {how} has {info.n_classes} classes but the model has {model.n_classes_}; "
                         "pass --dataset with a data set of the model's classes")


def evaluate_main(argv=None):
    """Entry point of ``fastnn-evaluate``; returns the exit status."""
    return _run("fastnn-evaluate", build_evaluate_parser(), _evaluate, argv)


# fastnn-export ---------------------------------------------------------------------

def build_export_parser():
    from .export import OPSET

    p = argparse.ArgumentParser(prog="fastnn-export",
                                description="Write a saved model as ONNX: input 'input' float32 (batch, features), "
                                            "output 'probabilities' float32 (batch, classes). Needs onnx "
                                            "(pip install \"fastnn[onnx]\").")
    add_version_arg(p)
    p.add_argument("model", help="a model file written by fastnn-train or model.save")
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=_arg(int, Interval("int", 13)), default=OPSET,
                   help=f"ONNX operator set, 13 up to what the installed onnx knows (default: {OPSET})")
    return p


def _export(args):
    from .export import missing_onnx, to_onnx
    from .io import load_model

    message = missing_onnx()
    if message:  # before reading anything
        raise ValueError(message)
    model = load_model(args.model)
    to_onnx(model, args.out, args.opset)
    print(f"wrote {args.out}: {model.n_features_} features -> {model.n_classes_} class probabilities "
          f"(opset {args.opset})")
    return 0


def export_main(argv=None):
    """Entry point of ``fastnn-export``; returns the exit status."""
    return _run("fastnn-export", build_export_parser(), _export, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(train_main())
