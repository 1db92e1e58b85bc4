"""Command-line entry points: ``fastnn-train``, ``fastnn-evaluate`` and ``fastnn-export``.

argparse onto the library API and nothing more: every number the commands
report comes from ``MLP.fit`` / ``evaluate`` / ``fastnn.metrics``. Errors that
the library reports (``ValueError`` with a message naming the problem,
``DatasetError`` from the loader, a missing model file) are printed as
``<prog>: error: <message>`` with exit status 2, never as a traceback.
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import sys
import time
import warnings

import numpy as np

from . import __version__
from .atomic import write_text
from .plotting import GALLERY_MAX
from .provenance import load_average, provenance
from .divergence import DivergenceWarning
from .validation import (
    ACTIVATION_NAMES, BACKEND_NAMES, OPTIMIZER_NAMES, SCHEDULE_NAMES, Interval, POSITIVE_INT, POSITIVE_REAL,
    NON_NEGATIVE_REAL, UNIT_OPEN,
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
                   help="run folder for the model, history, summary and plots, one run per folder (default: a new "
                        "runs/YYYYmmdd-HHMMSS/ under the current directory); a folder holding a run is refused "
                        "unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out: first remove its outputs (model, summary, history, plots)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the interrupted run in RUN_DIR with its recorded settings, to the same result as "
                        "an uninterrupted run (only --threads, --verbose and --data-dir may be given with it)")
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


def _tta(args, info):
    """Test-time augmentation arguments of predict/evaluate for ``--tta`` on this data set's images."""
    from .model import TTA_AUGMENT

    return dict(tta=args.tta, seed=getattr(args, "seed", 0),
                tta_augment={**TTA_AUGMENT, "image_shape": tuple(info.image_shape)})


def set_threads(n):
    """Use ``n`` threads in Numba and in every BLAS copy (``backends.threads``), after checking
    1 <= n <= NUMBA_NUM_THREADS; returns Numba's count in use."""
    from .backends import threads

    return threads.set_threads(n)


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

    Compile units that take over a second are reported through ``log`` while they compile
    (``backends.jit_progress``). Where the training loop will run on one Numba thread (the
    default network lists ahead on the second), a second process compiles it meanwhile
    (``compile_ahead``) while this one compiles the inference loop and the listing-ahead thread.
    Returns the seconds it took (mostly compilation on a cold cache).
    """
    from . import compile_ahead
    from .backends import get_backend, jit_progress

    t0 = time.perf_counter()
    write = log or (lambda *a: None)
    write("compiling the Numba kernels (instant when cached) ...")
    twin = type(model).from_config(model.get_config())
    twin.build(model.n_features_, model.n_classes_)
    n = min(len(x), 2 * batch_size)
    xs, ys = x[:n], np.minimum(y[:n], model.n_classes_ - 1)
    backend, aug = get_backend("numba"), twin._aug()
    inputs = backend.prepare_inputs(xs) if aug[0] == 0 else None  # as fit passes them
    steps = math.ceil(n / batch_size)
    ahead = backend.lists_ahead(twin.net, batch_size, steps, aug, inputs)
    beside = backend.loop_on_one_thread(twin.net, batch_size, steps, aug, inputs)
    with jit_progress.reporting(write):
        with (compile_ahead.training_loop_beside(twin, xs, ys, batch_size) if beside
              else contextlib.nullcontext()) as helper:
            with jit_progress.record() as here:
                twin.evaluate(xs, ys)
            if helper is not None and not here.functions:  # a warm cache: the loop is in it too
                compile_ahead.stop(helper)
            elif helper is not None:
                if ahead:  # the listing-ahead thread's unit, which the helper (one thread) never compiles
                    backend.compile_list_ahead(xs, inputs)
                with jit_progress.waiting_for(write, "_train_loop"):
                    helper.wait()
        with warnings.catch_warnings():  # the real run reports a diverging learning rate
            warnings.simplefilter("ignore", DivergenceWarning)
            twin.fit(xs, ys, epochs=1, batch_size=batch_size, verbose=0)
    return time.perf_counter() - t0


def _write_json(path, obj):
    write_text(path, json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n")


def _make_optimizer(args):
    from .optimizers import SCHEDULES, HorizonSchedule, get_optimizer

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
    schedule = SCHEDULES[args.schedule]
    # the schedule spans --epochs, recorded in the model file, whichever fit call runs it
    schedule = schedule(total_epochs=args.epochs) if issubclass(schedule, HorizonSchedule) else schedule()
    return get_optimizer(args.optimizer, lr=args.lr or default_lr, weight_decay=args.weight_decay,
                         schedule=schedule, **extra)


def _run(prog, parser, body, argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage and message
        return exc.code
    args.given = _given_options(parser, argv)
    try:
        return body(args) or 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # DatasetError, ModelFormatError are ValueErrors
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def _given_options(parser, argv):
    """The ``dest`` of every option that appears on the command line."""
    given = set()
    for action in parser._actions:
        for flag in action.option_strings:
            if any(tok == flag or tok.startswith(flag + "=") for tok in argv):
                given.add(action.dest)
    return given


# fastnn-train --------------------------------------------------------------------

#: the best epoch's model while early stopping waits (resume needs its weights)
BEST_FILE = "best.fastnn"
#: exit status when training stopped because the loss diverged (outputs are still written)
EXIT_DIVERGED = 3
#: options that --resume accepts: they change how the run is computed, never its result
RESUME_OPTIONS = {"resume", "threads", "verbose", "data_dir"}


class RunRecorder:
    """Keeps a run folder current: after every finished epoch, inside ``guard.critical()`` (a
    signal waits until all three are written), ``history.csv``, then ``summary.json``
    (``"status": "running"``), then ``model.fastnn`` with its training record. Written in that
    order, a folder killed at any moment holds a summary beside any model, and the model is
    never ahead of the summary's history (``--resume`` trusts the model's record).
    """

    def __init__(self, out, guard, base, previous=None):
        from .callbacks import CSVLogger, History

        self.out, self.guard, self.base = out, guard, base
        self.csv = CSVLogger(os.path.join(out, "history.csv"), columns=HISTORY_COLUMNS[1:], epoch_base=1, append=True)
        self.stage, self.finished, self.progress = "startup", False, []
        self.history = History()  # every epoch of the run, resumed or not
        previous = previous or {}
        for key, values in previous.items():
            if key == "epoch":
                self.history.epoch = [e - 1 for e in values]
            else:
                self.history.history[key] = [float("nan") if v is None else v for v in values]
        self.model_epoch = len(self.history.epoch)

    def callback(self, model, early=None):
        """The callback that records ``model``'s epochs; ``early``: the run's EarlyStopping, whose
        best weights are kept in ``best.fastnn`` so that a resumed run stops as the whole one would."""
        from .callbacks import Callback

        recorder = self

        class _Record(Callback):
            def on_train_begin(self, logs=None):
                recorder.csv.set_model(model)
                recorder.csv.on_train_begin(logs)

            def on_epoch_begin(self, epoch, logs=None):
                recorder.stage = f"epoch {epoch + 1}"

            def on_epoch_end(self, epoch, logs=None):
                recorder.stage = f"the saving of epoch {epoch + 1}"
                recorder.history.on_epoch_end(epoch, logs)
                finished = model.training_state is not None and model.training_state["epoch"] == epoch + 1
                with recorder.guard.critical():
                    recorder.csv.on_epoch_end(epoch, logs)
                    recorder.write("running", epochs_completed=epoch + 1 if finished else epoch)
                    if finished:
                        model.save(os.path.join(recorder.out, "model.fastnn"))
                        recorder.model_epoch = epoch + 1
                        if early is not None and early.best_epoch == epoch:
                            model.save(os.path.join(recorder.out, BEST_FILE))

        return _Record()

    def truncate(self, epochs):
        """Forget rows after ``epochs`` (the model file is the authority when resuming)."""
        del self.history.epoch[epochs:]
        for values in self.history.history.values():
            del values[epochs:]
        self.model_epoch = epochs
        path = self.csv.filename
        if os.path.exists(path):
            with open(path, newline="", encoding="utf-8") as f:
                lines = f.read().splitlines(keepends=True)
            write_text(path, "".join(lines[:epochs + 1]) if epochs else "")

    def write(self, status, **extra):
        hist = self.history.history
        summary = {"status": status, **extra, **self.base,
                   "model_epoch": self.model_epoch,
                   "history": {"epoch": [e + 1 for e in self.history.epoch], **hist}}
        _write_json(os.path.join(self.out, "summary.json"), summary)


def _resume_args(args, parser):
    """The recorded arguments of the run in ``args.resume`` (with the options --resume allows)
    and that run's summary."""
    extra = sorted(args.given - RESUME_OPTIONS)
    if extra:
        flags = ", ".join("--" + d.replace("_", "-") for d in extra)
        raise ValueError(f"--resume continues a run with its recorded settings; drop {flags} (only --threads, "
                         f"--verbose and --data-dir may change)")
    path = os.path.join(args.resume, "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
        recorded = summary["config"]["args"]
    except FileNotFoundError:
        raise ValueError(f"--resume {args.resume!r}: no summary.json there, so no fastnn-train run to resume") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--resume {args.resume!r}: its summary.json is damaged ({exc!r})") from None
    if summary.get("status") not in ("running", "interrupted", "failed"):
        raise ValueError(f"--resume {args.resume!r}: that run is {summary.get('status', 'finished')}, not interrupted; "
                         f"nothing to resume (start a new run with --out)")
    resumed = parser.parse_args([])  # defaults for options newer than the recorded run
    for key, value in recorded.items():
        if key not in ("given", "resume", "overwrite", "out"):
            setattr(resumed, key, value)
    for key in args.given & RESUME_OPTIONS:
        setattr(resumed, key, getattr(args, key))
    resumed.out, resumed.resume, resumed.overwrite, resumed.given = args.resume, args.resume, False, args.given
    return resumed, summary


def _open_run_folder(args):
    """Create/check the output folder and lock it, before any data is loaded; refuse a folder
    holding another run unless --overwrite (which removes that run's outputs) or --resume."""
    from .runs import RunFolderError, RunLock, check_writable_dir, clear_run, remove_temporaries, run_files

    out = check_writable_dir(args.out, "--out") if args.out is not None else make_run_dir()
    lock = RunLock(out).acquire()
    try:
        if args.resume:  # the lock is ours, so these are a killed run's unfinished writes
            remove_temporaries(out)
        previous = run_files(out)
        if previous and not args.resume:
            if not args.overwrite:
                raise RunFolderError(f"--out {out!r} already holds a run ({', '.join(previous)}); pass --overwrite to "
                                     f"replace it, --resume {out} to continue it if it was interrupted, or choose "
                                     f"another --out")
            clear_run(out)
    except BaseException:
        lock.release()
        raise
    return out, lock

def _train(args):
    from .interrupts import InterruptGuard, Interrupted
    from .runs import clear_run

    previous = None
    if args.resume is not None:
        args, previous = _resume_args(args, build_train_parser())
    elif args.overwrite and args.out is None:
        raise ValueError("--overwrite needs --out (a new timestamped folder never holds a run)")
    setup = _setup_training(args)  # everything that can fail without data fails here
    created = args.out is None or not os.path.exists(args.out)
    out, lock = _open_run_folder(args)
    try:
        with InterruptGuard() as guard:
            recorder = RunRecorder(out, guard, {"config": {"args": _recorded_args(args)}},
                                   previous.get("history") if previous else None)
            try:
                if previous is None:
                    with guard.critical():
                        recorder.write("running", epochs_completed=0)
                return _train_in(args, setup, out, recorder)
            except Interrupted as exc:
                for bar in recorder.progress:
                    bar.on_train_end({})  # end the bar's line: the message below starts its own
                if recorder.finished:  # the signal waited for the last output: the run is whole
                    print(f"fastnn-train: interrupted by {exc.name} after the run finished; its outputs in {out} "
                          f"are complete", file=sys.stderr, flush=True)
                    return exc.exit_status
                with guard.critical():
                    recorder.write("interrupted", signal=exc.name, epochs_completed=recorder.model_epoch,
                                   interrupted_during=recorder.stage)
                kept = f"kept {recorder.model_epoch} finished epochs" if recorder.model_epoch else "no epoch had finished"
                print(f"fastnn-train: interrupted by {exc.name} during {recorder.stage}; {kept} in {out} "
                      f"(continue with: fastnn-train --resume {out})", file=sys.stderr, flush=True)
                return exc.exit_status
            except Exception as exc:
                with guard.critical():
                    if recorder.model_epoch == 0 and previous is None:  # nothing worth keeping: leave no run behind
                        clear_run(out)
                    else:
                        recorder.write("failed", error=str(exc), epochs_completed=recorder.model_epoch,
                                       failed_during=recorder.stage)
                raise
    finally:
        lock.release()
        if created:
            try:
                os.rmdir(out)  # only if empty: a run that failed before its first epoch
            except OSError:
                pass


def _continue_early_stopping(early, model, values, out):
    """Give ``early`` the interrupted run's monitored values and best weights: the model itself
    when its last epoch was the best, else ``best.fastnn`` (saved when that epoch ended)."""
    from .io import load_model

    best_epoch = early.continue_from(values)
    if best_epoch is None or best_epoch + 1 == len(values):
        early.continue_from(values, model._snapshot() if best_epoch is not None else None)
        return
    path = os.path.join(out, BEST_FILE)
    best = load_model(path) if os.path.exists(path) else None
    if best is None or best.training_state is None or best.training_state["epoch"] != best_epoch + 1:
        raise ValueError(f"cannot resume the early stopping of {out!r}: {BEST_FILE} with epoch {best_epoch + 1}'s "
                         f"weights is missing; start the run again with --overwrite")
    early.continue_from(values, best._snapshot())


def _recorded_args(args):
    return {k: v for k, v in vars(args).items() if k != "given"}


def _setup_training(args):
    """Check the arguments and build the model, optimizer and callbacks (no data needed)."""
    from .callbacks import EarlyStopping
    from .layers import Dense, parse_architecture
    from .model import AUGMENT_KEYS, MLP, Sequential

    if args.early_stopping is not None and args.val_split <= 0:
        raise ValueError("--early-stopping needs a validation set: pass --val-split, e.g. --val-split 0.1")
    # --threads limits BLAS for the NumPy backend too (its matmuls are BLAS calls)
    threads = set_threads(args.threads) if args.backend == "numba" or args.threads is not None else None
    augment = {k: getattr(args, "aug_" + k) for k in AUGMENT_KEYS}
    common = dict(optimizer=_make_optimizer(args), label_smoothing=args.label_smoothing, augment=augment,
                  backend=args.backend, seed=args.seed)
    model = hidden = None
    if args.architecture is None:
        model = MLP(layers=args.layers, activation=args.activation, dropout=args.dropout, batch_norm=args.batch_norm,
                    **common)
    else:
        if args.dropout or args.batch_norm or args.layers != TRAIN_DEFAULTS["layers"]:
            raise ValueError("--architecture replaces --layers, --dropout and --batch-norm; give one or the other")
        hidden = parse_architecture(args.architecture, args.activation)
    _check_sizes(args, model or Sequential(hidden + [Dense(2)]))
    callbacks = [EarlyStopping("val_loss", patience=args.early_stopping, restore_best_weights=True)] \
        if args.early_stopping is not None else []
    return {"threads": threads, "common": common, "model": model, "hidden": hidden, "callbacks": callbacks}


def _check_sizes(args, model):
    """What the arguments alone decide, checked before the data load: the network on the smallest
    input (1 feature, 2 classes) must fit in memory (``build`` checks again with the data's width),
    and --val-split must hold out a row of --train-limit rows."""
    from .model import check_memory, network_bytes

    _, plan = model._plan(1, 2)
    check_memory(network_bytes(plan), f"a network of hidden layer widths {plan.widths[:-1]} (on any data set)",
                 f"use narrower or fewer layers ({'--architecture' if args.architecture else '--layers'})")
    if args.train_limit is not None and args.val_split > 0 and int(args.train_limit * args.val_split) < 1:
        raise ValueError(f"--val-split {args.val_split} of --train-limit {args.train_limit} rows holds out no row; "
                         f"raise --train-limit to at least {math.ceil(1 / args.val_split)} or --val-split")


def _train_in(args, setup, out, recorder):
    from .datasets import dataset_info, load_dataset
    from .callbacks import EarlyStopping, ProgressBar
    from .io import load_model
    from .layers import Dense
    from .metrics import confusion_matrix
    from .model import Sequential

    threads, model = setup["threads"], setup["model"]
    resumed, initial_epoch = None, 0
    model_path = os.path.join(out, "model.fastnn")
    if args.resume is not None and os.path.exists(model_path):  # a damaged file fails before the data load
        resumed = load_model(model_path, backend=args.backend)
        initial_epoch = resumed.training_state["epoch"] if resumed.training_state else 0
    recorder.truncate(initial_epoch)
    early = next((cb for cb in setup["callbacks"] if isinstance(cb, EarlyStopping)), None)
    if early is not None and initial_epoch:
        _continue_early_stopping(early, resumed, recorder.history.history.get(early.monitor, []), out)

    recorder.stage = "loading the data"
    (x_train, y_train), (x_test, y_test) = load_dataset(args.dataset, args.data_dir)
    info = dataset_info(args.dataset, args.data_dir)
    if args.train_limit is not None:
        x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
    log = (lambda *a: print(*a, flush=True)) if args.verbose else (lambda *a: None)
    log(f"fastnn-train: {info.name} ({len(x_train)} train, {len(x_test)} test) from {info.directory}; "
        f"backend={args.backend}" + (f", threads={threads}" if threads else "") + f"; output in {out}")

    n_classes = max(info.n_classes, int(y_train.max()) + 1)
    augment = setup["common"]["augment"]
    if any(augment.values()):  # rows are images of the IDX header's shape, square or not
        setup["common"]["augment"] = augment = {**augment, "image_shape": info.image_shape}
        if model is not None:
            model = type(model).from_config({**model.get_config(), "augment": augment})
    if args.architecture is not None:
        model = Sequential(setup["hidden"] + [Dense(n_classes)], **setup["common"])
    model.build(x_train.shape[1], n_classes)
    n_val = int(len(x_train) * args.val_split)
    n_fit = len(x_train) - n_val
    recorder.base["dataset"] = {
        "name": info.name, "directory": str(info.directory), "n_train": n_fit, "n_val": n_val,
        "n_test": len(x_test), "image_shape": list(info.image_shape), "n_classes": model.n_classes_}
    recorder.base["config"].update(model_class=type(model).__name__, model=model.get_config(),
                                   n_params=model.count_params())
    if resumed is not None:
        model = resumed
        log(f"resuming after epoch {initial_epoch} of {args.epochs}")
    model.dataset_ = info.record()  # saved with the model: fastnn-evaluate's default data set
    model.lr_flag = "--lr {}"

    # fit's own progress bar, held here so that an interrupt can end its line before saying so
    recorder.progress = [ProgressBar(args.verbose)] if args.verbose else []
    recorder.stage = "compilation"
    compile_seconds = warm_up(model, x_train, y_train, args.batch_size, log) if args.backend == "numba" else 0.0
    recorder.stage = "training"
    origin = provenance()  # the load average as training starts; the end's is added below
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # reported below, as a line naming --lr
        warnings.simplefilter("ignore", DivergenceWarning)
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, validation_split=args.val_split,
                  callbacks=setup["callbacks"] + [recorder.callback(model, early)] + recorder.progress, seed=args.seed,
                  verbose=0, initial_epoch=initial_epoch)
    train_seconds = time.perf_counter() - t0
    history = recorder.history
    diverged = model.diverged
    if diverged:
        print(f"fastnn-train: training diverged: {model.stop_reason}", file=sys.stderr, flush=True)
    elif model.stop_reason:
        log(f"stopped: {model.stop_reason}")

    recorder.stage = "the final evaluation"
    tta = _tta(args, info)  # val and test only; the train row stays plain
    final = {"train": model.evaluate(x_train[:n_fit], y_train[:n_fit], return_dict=True),
             "val": model.evaluate(x_train[n_fit:], y_train[n_fit:], return_dict=True, **tta) if n_val else None,
             "test": model.evaluate(x_test, y_test, return_dict=True, **tta)}
    if args.tta:
        final["test_no_tta"] = model.evaluate(x_test, y_test, return_dict=True)
    cm = confusion_matrix(y_test, model.predict(x_test, **tta), model.n_classes_)

    recorder.stage = "writing the outputs"
    with recorder.guard.critical():  # the final model, plots and summary: all or (after a signal) none
        model.save(model_path)
        if os.path.exists(os.path.join(out, BEST_FILE)):  # the final model is the best one by now
            os.remove(os.path.join(out, BEST_FILE))
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
        recorder.write(
            "diverged" if diverged else "complete",
            test_accuracy=final["test"]["accuracy"],
            test_loss=final["test"]["loss"],
            tta=args.tta,
            final=final,
            epochs=[{"epoch": e + 1, "seconds": hist["seconds"][i], "samples_per_second": hist["samples_per_second"][i]}
                    for i, e in enumerate(history.epoch)],
            epochs_run=len(history.epoch),
            epochs_completed=len(history.epoch) - diverged,
            stop_reason=model.stop_reason,
            resumed_at_epoch=initial_epoch if args.resume is not None else None,
            train_seconds=train_seconds,
            compile_seconds=compile_seconds,
            confusion_matrix=cm.tolist(),
            backend=args.backend,
            threads=threads,
            # The Numba backend's bits do not depend on the thread count; the NumPy backend's depend on
            # NumPy's BLAS threads on dense layers (README, "Threads").
            thread_independent=args.backend == "numba",
            versions=versions(),
            platform=platform.platform(),
            provenance={**origin, "load_average_end": load_average()},
            files=files,
        )
        recorder.finished = True
    plain = f" (without TTA {final['test_no_tta']['accuracy']:.4f})" if args.tta else ""
    print(f"test accuracy: {final['test']['accuracy']:.4f}{plain}  test loss: {final['test']['loss']:.4f}  "
          f"({len(history.epoch)} epochs, {train_seconds:.1f} s training)  saved to {model_path}", flush=True)
    print(f"run folder: {out}", flush=True)
    return EXIT_DIVERGED if diverged else 0


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
    loss, acc = model.evaluate(x_test, y_test, batch_size=args.batch_size, **_tta(args, info))
    pred = model.predict(x_test, batch_size=args.batch_size, **_tta(args, info))
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
