"""Training callbacks: History, EarlyStopping, ProgressBar, ModelCheckpoint, BackupAndRestore,
LearningRateScheduler, ReduceLROnPlateau, CSVLogger, LambdaCallback.

The model calls, in order: ``on_train_begin(logs)``, then per epoch
``on_epoch_begin(epoch, logs)``, ``on_chunk_end(epoch, logs)`` after every chunk
of optimizer steps (``logs`` holds the running ``loss``, ``accuracy`` and
``samples`` seen so far in the epoch), ``on_epoch_end(epoch, logs)``, and finally
``on_train_end(logs)``. A callback stops training by setting
``self.model.stop_training = True`` (checked after every chunk, and at the end of
each epoch). ``on_train_begin`` receives ``logs["metrics"]``, the names the epoch
logs will contain.

Batch-level hooks (``on_train_batch_begin(batch, logs)``, ``on_train_batch_end(batch,
logs)``, and Keras' older aliases ``on_batch_begin`` / ``on_batch_end``) are called
around every optimizer step, ``batch`` being the step's index within the epoch and the
end logs the running ``loss`` and ``accuracy`` of the epoch so far, as in Keras. They
have a price: the compiled loop normally runs many steps per call, and when any
callback defines one of these hooks ``fit`` runs one step per call instead: about 50 us
more per step (MNIST 784-128-64-10, one thread: x1.59 the epoch time at batch 32, x1.14 at
128, x1.03 at 512). Callbacks that define none of them cost nothing.
"""

import csv
import inspect
import io
import math
import numbers
import os
import sys

from .atomic import OutputError, write_text
from .divergence import warn_outside
from .runs import EPOCH_LOG_EXTRAS, check_path_template, check_writable_dir, remove_temporaries
from .training_state import past_values
from .validation import Boolean, Interval, Options, check_params, check_value

BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
#: Keras hooks fastnn never calls (``evaluate`` and ``predict`` take no callbacks, and ``fit``
#: validates without them): ``fit`` warns when a callback defines one
UNCALLED_HOOKS = tuple(f"on_{stage}_{when}" for stage in ("test", "predict", "test_batch", "predict_batch")
                       for when in ("begin", "end"))



def _check_monitor(owner, monitor, logs):
    """Refuse a monitored quantity that fit will not log (``logs["metrics"]``: the names it will)."""
    metrics = (logs or {}).get("metrics")
    if metrics is not None and monitor not in metrics:
        hint = " (pass validation_split or validation_data to fit)" if monitor.startswith("val_") else ""
        raise ValueError(f"{owner} monitor must be one of {sorted(metrics)}, got {monitor!r}{hint}")

class Callback:
    """Base class; every hook is a no-op."""

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_chunk_end(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass


def defines_batch_hooks(callback):
    """Whether ``callback`` overrides (or, like a LambdaCallback, was given) a batch-level hook."""
    return any(getattr(type(callback), hook) is not getattr(Callback, hook) or hook in vars(callback)
               for hook in BATCH_HOOKS)


class History(Callback):
    """Records the epoch logs; ``fit`` returns it.

    Attributes
    ----------
    history : dict of str -> list
        ``loss``, ``accuracy`` (training, averaged over the epoch's batches as
        they were trained, i.e. with dropout active), ``val_loss`` and
        ``val_accuracy`` (when validating), ``seconds`` (training time of the
        epoch, excluding validation), ``samples_per_second`` and ``lr`` (the rate
        of the epoch's last step).
    epoch : list of int
        Epoch indices (0-based) that were run.
    stop_reason : str or None
        Why training ended before the last epoch (early stopping, non-finite loss).
    """

    def __init__(self):
        self.history, self.epoch, self.stop_reason = {}, [], None

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _mode_for(monitor, mode):
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    Parameters
    ----------
    monitor : str
        An epoch-log key such as 'val_loss' (default), 'val_accuracy' or 'loss'.
    patience : int >= 0
        Epochs without improvement before stopping.
    min_delta : float >= 0
        Smallest change that counts as an improvement.
    mode : {'auto', 'min', 'max'}
        'auto' maximises accuracies and minimises everything else.
    restore_best_weights : bool
        At the end of training put back the weights of the best epoch (as Keras 3).

    A resumed ``fit`` (``initial_epoch`` > 0 on a model saved during training, or
    ``BackupAndRestore``) continues the saved run's bookkeeping: the best value, its epoch
    and the epochs waited come from the model's training record, so the resumed run stops
    where the uninterrupted one would. The weights of a best epoch before the resume are not
    in the resumed model: unless the run improves on it, ``restore_best_weights`` then keeps
    the last weights and warns (``fastnn-train`` keeps them in ``best.fastnn``; in code, pass
    them to ``continue_from``).
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False):
        check_params(
            {"patience": patience, "min_delta": min_delta, "mode": mode, "restore_best_weights": restore_best_weights},
            {"patience": Interval("int", 0), "min_delta": Interval("real", 0), "mode": Options("auto", "min", "max"),
             "restore_best_weights": Boolean()},
        )
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.mode, self.restore_best_weights = _mode_for(monitor, mode), restore_best_weights
        self.best = self.best_epoch = self.best_weights = None
        self.stopped_epoch, self.wait, self._continued = None, 0, None
        self._from_record, self._resumed_at = False, 0

    def continue_from(self, values, best_weights=None):
        """Carry on the bookkeeping of an interrupted run (for ``fit(initial_epoch=)``): ``values``
        are its ``monitor`` values, one per finished epoch from epoch 0, ``best_weights`` the
        ``model._snapshot()`` of its best epoch (with ``restore_best_weights``). Kept for the
        next ``on_train_begin``, which otherwise starts afresh; returns the best epoch (or None)."""
        self._continued = (list(values), best_weights)
        self._replay()
        return self.best_epoch

    def _replay(self):
        self.best = self.best_epoch = self.best_weights = self.stopped_epoch = None
        self.wait = 0
        values, weights = self._continued or ((), None)
        for epoch, value in enumerate(values):
            self._track(epoch, value)
        if values:
            self.best_weights = weights
        self._resumed_at = len(values)

    def on_train_begin(self, logs=None):
        _check_monitor("EarlyStopping", self.monitor, logs)
        self._replay()
        self._from_record, self._continued = self._continued is None, None

    def on_epoch_begin(self, epoch, logs=None):
        # the first epoch of a resumed fit: the record is the one BackupAndRestore or load restored
        if self._from_record:
            self._from_record = False
            state = self.model.training_state
            values = past_values(state, self.monitor, epoch)
            if values:
                self._continued = (values, None)
                self._replay()
                self._continued = None
                if self.best_epoch == epoch - 1 and state["epoch"] == epoch:  # the model holds the best epoch
                    self.best_weights = self.model._snapshot()

    def _improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _track(self, epoch, value):
        """Update best/wait for ``epoch``'s value; True when it improved."""
        if value is None or not math.isfinite(value):
            return None
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        self.wait += 1
        return False

    def on_epoch_end(self, epoch, logs=None):
        improved = self._track(epoch, (logs or {}).get(self.monitor))
        if improved is None:
            return
        if improved:
            if self.restore_best_weights:
                self.best_weights = self.model._snapshot()
            return
        if self.wait >= self.patience:  # wait >= 1 here, so patience=0 stops at once
            self.stopped_epoch = epoch
            self.model.stop_training = True
            self.model.stop_reason = (
                f"early stopping: {self.monitor} did not improve for {self.wait} epochs "
                f"(best {self.best:.6g} at epoch {self.best_epoch + 1})"
            )

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model._restore(self.best_weights)
        elif self.restore_best_weights and self.best_epoch is not None:
            warn_outside(f"EarlyStopping: the best {self.monitor} ({self.best:.6g}) came at epoch {self.best_epoch + 1}, "
                         f"before this fit resumed at epoch {self._resumed_at + 1}, and its weights are not in the "
                         f"resumed model: the last weights are kept. Load that epoch's ModelCheckpoint(save_best_only"
                         f"=True) file for them, or pass them to EarlyStopping.continue_from", UserWarning)


#: the epoch-log keys progress output shows, under the same names mid-epoch, at the epoch's
#: end and in plain lines (History's keys)
PROGRESS_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def format_metrics(logs):
    """``"loss=0.1234 accuracy=0.9612 ..."`` for the PROGRESS_KEYS present in ``logs``."""
    return " ".join(f"{key}={logs[key]:.4f}" for key in PROGRESS_KEYS if key in logs)


def _terminal_columns(stream):
    """Width of the terminal ``stream`` writes to; 0 when it is none or has no width (a pipe,
    a file, ``script`` without a terminal, which reports 0 x 0)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else 0
    except (AttributeError, ValueError, OSError):  # no fileno/isatty, a closed file, not a terminal
        return 0


class ProgressBar(Callback):
    """Per-epoch progress on stderr (or ``file``).

    ``verbose=1`` on a terminal: a tqdm bar per epoch with the numbers before the bar,
    so that a narrow terminal shrinks the bar, not them
    (``Epoch 3/5 loss=0.0662 accuracy=0.9791 |█████     |  46% 00:01``); at the epoch's
    end the line becomes ``Epoch 3/5 loss=... accuracy=... val_loss=... val_accuracy=...
    00:03``, 78 columns for up to 9 epochs.
    ``verbose=2``, or any output that is not a terminal of known width (a pipe, a file, a
    CI log, ``script``): one plain line per epoch, ``Epoch 3/5 - 1.2s - loss=0.0662 accuracy=0.9791 ...``.
    The names are History's keys everywhere. ``ncols`` fixes the bar's width
    (default: the terminal's, following resizes).
    """

    def __init__(self, verbose=1, file=None, ncols=None):
        self.verbose, self.file, self.ncols = verbose, file, ncols
        self.bar = None

    def _stream(self):
        return self.file or sys.stderr

    def _use_bar(self):
        # Jupyter's streams are no terminals, but tqdm.auto draws a widget there. A bar needs a
        # width: a terminal of 0 columns gets plain lines (tqdm would print blank ones).
        if self.verbose != 1:
            return False
        return "ipykernel" in sys.modules or (self.ncols or _terminal_columns(self._stream())) > 0

    def on_train_begin(self, logs=None):
        self.epochs = (logs or {}).get("epochs", 0)
        self.n_samples = (logs or {}).get("samples", 0)

    def on_epoch_begin(self, epoch, logs=None):
        if self._use_bar():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.n_samples, desc=self._label(epoch, {}), leave=True,
                            file=self._stream(), ncols=self.ncols, dynamic_ncols=self.ncols is None,
                            bar_format="{desc} |{bar}| {percentage:3.0f}% {elapsed}")

    def _label(self, epoch, logs):
        # the numbers go in the description, before the bar: tqdm shrinks the bar, not them
        return f"Epoch {epoch + 1}/{self.epochs} {format_metrics(logs)}".rstrip()

    def on_chunk_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.set_description_str(self._label(epoch, logs), refresh=False)
            self.bar.update(logs["samples"] - self.bar.n)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.bar is not None:
            self.bar.set_description_str(self._label(epoch, logs), refresh=False)
            self.bar.bar_format = "{desc} {elapsed}"  # the finished bar makes room for val_*
            self.bar.close()
            self.bar = None
        elif self.verbose:
            seconds = logs.get("seconds", float("nan"))
            print(f"Epoch {epoch + 1}/{self.epochs} - {seconds:.1f}s - {format_metrics(logs)}", file=self._stream(),
                  flush=True)

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ModelCheckpoint(Callback):
    """Save the model after epochs (``fastnn.io`` format). Each file also holds the optimizer
    state and the training record, so ``fit(..., initial_epoch=<its epoch>)`` on the loaded
    model continues the run with the same bits.

    Parameters
    ----------
    filepath : str or path-like
        May contain ``{epoch}`` (1-based) and any epoch-log key, e.g.
        ``"ckpt-{epoch:02d}-{val_loss:.3f}.fastnn"``. Checked when training begins:
        unknown fields, fields the run will not log (``{val_loss}`` without validation),
        bad format specs and a folder that cannot be written fail before the first epoch.
    monitor, mode : as in EarlyStopping (used with ``save_best_only``)
    save_best_only : bool
        Only save when ``monitor`` improves (the file then holds the best model). A resumed
        ``fit`` (``initial_epoch`` > 0) starts from the best value in the model's training
        record, so it never replaces a better checkpoint of the run with a worse one.
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        check_params({"save_best_only": save_best_only, "mode": mode},
                     {"save_best_only": Boolean(), "mode": Options("auto", "min", "max")})
        self.filepath, self.monitor = os.fspath(filepath), monitor
        self.save_best_only, self.mode = save_best_only, _mode_for(monitor, mode)
        self.best, self._from_record = None, False
        self.saved = []

    def on_train_begin(self, logs=None):
        metrics = (logs or {}).get("metrics")
        if self.save_best_only and metrics is not None and self.monitor not in metrics:
            raise ValueError(f"ModelCheckpoint monitor must be one of {sorted(metrics)}, got {self.monitor!r}")
        if metrics is not None:
            example = check_path_template("ModelCheckpoint filepath", self.filepath, list(metrics) + EPOCH_LOG_EXTRAS)
            check_writable_dir(os.path.dirname(os.path.abspath(example)), "ModelCheckpoint filepath's folder")
        self._from_record = True

    def _improves(self, value):
        """Whether ``value`` beats the best so far (non-finite values never do)."""
        return value is not None and math.isfinite(value) and (
            self.best is None or (value < self.best if self.mode == "min" else value > self.best))

    def on_epoch_begin(self, epoch, logs=None):
        # the first epoch of a resumed fit: the saved run's best, unless this object has one already
        if self._from_record and self.save_best_only and self.best is None:
            for value in past_values(self.model.training_state, self.monitor, epoch):
                if self._improves(value):
                    self.best = value
        self._from_record = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if not self._improves(value):
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self.model.save(path)
        self.saved.append(path)


class BackupAndRestore(Callback):
    """Survive interruptions (Keras semantics): back the model up into ``backup_dir`` at the
    end of every epoch; when ``fit`` is called again after an interruption (an exception,
    Ctrl-C, a killed process), restore the backup and continue from the epoch after it, with
    the same bits as an uninterrupted run. The backup is deleted when training ends normally.

    Parameters
    ----------
    backup_dir : str or path-like
        A folder for this training run only (created; must be writable: checked before the
        first epoch). The backup is ``backup_dir/backup.fastnn`` (weights, optimizer state,
        training record), replaced atomically; a process killed while writing it leaves the
        previous backup and a ``.fastnn-*.tmp``, removed with the backup when training ends.
    delete_checkpoint : bool
        Delete the backup when training ends normally (default, as Keras).
    """

    FILE = "backup.fastnn"

    def __init__(self, backup_dir, delete_checkpoint=True):
        check_params({"delete_checkpoint": delete_checkpoint}, {"delete_checkpoint": Boolean()})
        self.backup_dir, self.delete_checkpoint = os.fspath(backup_dir), delete_checkpoint
        self.path = os.path.join(self.backup_dir, self.FILE)
        self.restored_epoch = None

    def on_train_begin(self, logs=None):
        from .io import restore_training

        check_writable_dir(self.backup_dir, "BackupAndRestore backup_dir")
        self.restored_epoch = None
        if os.path.exists(self.path):
            self.restored_epoch = restore_training(self.model, self.path)
            self.model._restored_epoch = self.restored_epoch

    def on_epoch_end(self, epoch, logs=None):
        state = self.model.training_state
        if state is not None and state["epoch"] == epoch + 1:  # not after a diverged epoch
            self.model.save(self.path)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and os.path.exists(self.path):
            os.remove(self.path)
            remove_temporaries(self.backup_dir)  # a backup whose writer was killed (SIGKILL) before its rename
            try:
                os.rmdir(self.backup_dir)  # only when nothing else is in it
            except OSError:
                pass


def _set_lr(model, lr, source):
    """Make ``lr`` the optimizer's (base) learning rate, after checking it."""
    check_value(source, lr, Interval("real", 0, closed="neither"))
    model.optimizer.lr = float(lr)
    return float(lr)


class LearningRateScheduler(Callback):
    """At the start of every epoch set the learning rate to ``schedule(epoch, lr)`` (Keras).

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch, lr) -> new lr`` or, as Keras also accepts, ``schedule(epoch) ->
        new lr``: ``epoch`` is 0-based, ``lr`` the current rate (a float); it must return a
        number > 0. Which form is read from its signature (two arguments are passed when
        it can take them). The first epoch's rate applies from its first optimizer step,
        also in the compiled loop.
    verbose : {0, 1}
        1 prints the rate set at each epoch.

    With a per-step ``schedule`` on the model ('cosine', ...), this sets its base rate.
    The optimizer keeps the last rate set after ``fit``, as in Keras.
    """

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise ValueError(f"schedule must be a function (epoch, lr) -> lr or (epoch) -> lr, got {schedule!r}")
        check_value("verbose", verbose, Options(0, 1))
        self.schedule, self.verbose = schedule, verbose
        self._takes_lr = _schedule_takes_lr(schedule)

    def on_epoch_begin(self, epoch, logs=None):
        if self._takes_lr:
            lr, call = self.schedule(epoch, float(self.model.optimizer.lr)), f"schedule({epoch}, lr)"
        else:
            lr, call = self.schedule(epoch), f"schedule({epoch})"
        lr = _set_lr(self.model, lr, f"LearningRateScheduler's {call}")
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")


def _schedule_takes_lr(schedule):
    """True for ``schedule(epoch, lr)``, False for ``schedule(epoch)`` (Keras takes both),
    from the signature; a ValueError for a callable that can take neither."""
    try:
        signature = inspect.signature(schedule)
    except (TypeError, ValueError):  # no signature to read (some builtins): Keras' current form
        return True
    for args, takes_lr in (((0, 0.1), True), ((0,), False)):
        try:
            signature.bind(*args)
            return takes_lr
        except TypeError:
            pass
    raise ValueError(f"schedule must take (epoch, lr) or (epoch) and return the learning rate, got "
                     f"{getattr(schedule, '__name__', type(schedule).__name__)}{signature}")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has stopped improving (Keras).

    Parameters
    ----------
    monitor : str
        An epoch-log key, e.g. 'val_loss' (default), 'loss', 'val_accuracy'.
    factor : float in (0, 1)
        new lr = max(lr * factor, min_lr).
    patience : int >= 0
        Epochs without improvement before the rate is reduced.
    verbose : {0, 1}
        1 prints each reduction.
    mode : {'auto', 'min', 'max'}
        'auto' maximises accuracies and minimises everything else.
    min_delta : float >= 0
        An improvement must beat the best value so far by more than this.
    cooldown : int >= 0
        Epochs after a reduction during which waiting does not count.
    min_lr : float >= 0
        Lower bound on the rate.

    A resumed ``fit`` (``initial_epoch`` > 0) continues the saved run's counters from the
    metrics in the model's training record, as ``EarlyStopping`` does.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        check_params(
            {"factor": factor, "patience": patience, "verbose": verbose, "mode": mode, "min_delta": min_delta,
             "cooldown": cooldown, "min_lr": min_lr},
            {"factor": Interval("real", 0, 1, closed="neither"), "patience": Interval("int", 0),
             "verbose": Options(0, 1), "mode": Options("auto", "min", "max"), "min_delta": Interval("real", 0),
             "cooldown": Interval("int", 0), "min_lr": Interval("real", 0)},
        )
        self.monitor, self.factor, self.patience, self.verbose = monitor, float(factor), patience, verbose
        self.mode, self.min_delta = _mode_for(monitor, mode), float(min_delta)
        self.cooldown, self.min_lr = cooldown, float(min_lr)
        self._reset()
        self._from_record = False

    def _reset(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = self.cooldown_counter = 0

    def on_train_begin(self, logs=None):
        _check_monitor("ReduceLROnPlateau", self.monitor, logs)
        self._reset()
        self._from_record = True

    def on_epoch_begin(self, epoch, logs=None):
        # The first epoch of a resumed fit: replay the saved run's values. The saved rate already
        # holds its reductions; while it is above min_lr, every due reduction was made, so the
        # counters come out as in the uninterrupted run (at min_lr no reduction can follow anyway).
        if self._from_record:
            self._from_record = False
            for value in past_values(self.model.training_state, self.monitor, epoch):
                if value is not None and self._due(value) and self.model.optimizer.lr > self.min_lr:
                    self.cooldown_counter, self.wait = self.cooldown, 0

    def _improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _due(self, value):
        """Count an epoch's ``value``; True when the rate is due for a reduction."""
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best, self.wait = value, 0
            return False
        if self.cooldown_counter == 0:
            self.wait += 1
            return self.wait >= self.patience
        return False

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        old = float(self.model.optimizer.lr)
        if self._due(value) and old > self.min_lr:
            new = _set_lr(self.model, max(old * self.factor, self.min_lr), "ReduceLROnPlateau's new rate")
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
            self.cooldown_counter, self.wait = self.cooldown, 0


class CSVLogger(Callback):
    """Write each epoch's logs as a CSV row when the epoch ends (Keras).

    After every epoch the file holds every finished epoch: it is rewritten whole and
    atomically (``fastnn.atomic``: a few hundred bytes per epoch), so an interrupted run
    keeps its history and a crash never leaves a half-written line.

    Parameters
    ----------
    filename : str or path-like
    separator : str
        One character between fields.
    append : bool
        Append to an existing file (its header is then not written again) instead of
        overwriting it.
    columns : list of str or None (keyword)
        The log keys to write, in this order (missing ones as ``NA``); None: the first
        epoch's keys, sorted, as Keras does.
    epoch_base : {0, 1} (keyword)
        The number written for the first epoch: 0 as Keras, 1 to count from one.
    """

    def __init__(self, filename, separator=",", append=False, *, columns=None, epoch_base=0):
        check_params({"append": append, "epoch_base": epoch_base}, {"append": Boolean(), "epoch_base": Options(0, 1)})
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"separator must be a single character such as ',' or ';', got {separator!r}")
        if columns is not None and (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)):
            raise ValueError(f"columns must be a list of log keys such as ['loss', 'val_loss'] or None, got {columns!r}")
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self.columns, self.epoch_base = None if columns is None else list(columns), epoch_base
        self.keys, self._text = None, ""

    def on_train_begin(self, logs=None):
        self._text = ""
        if self.append and os.path.isfile(self.filename):
            with open(self.filename, newline="", encoding="utf-8") as f:
                self._text = f.read()
        self.keys = self.columns
        self._write()  # as Keras opens it here: an unwritable path fails before the first epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        rows = [] if self._text else [["epoch"] + self.keys]
        rows.append([epoch + self.epoch_base] + [_csv_value(logs.get(key, "NA")) for key in self.keys])
        out = io.StringIO()
        csv.writer(out, delimiter=self.separator, lineterminator="\n").writerows(rows)
        self._text += out.getvalue()
        self._write()

    def _write(self):
        try:
            write_text(self.filename, self._text)
        except OSError as e:
            raise OutputError(e.errno, f"CSVLogger filename {self.filename!r}: {e.strerror or e}", self.filename) from None


def _csv_value(value):
    if isinstance(value, (str, numbers.Number)):
        return value
    try:
        return f"[{', '.join(map(str, value))}]"
    except TypeError:
        return value


class LambdaCallback(Callback):
    """A callback made of plain functions (Keras).

    ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``, ``on_train_begin(logs)``,
    ``on_train_end(logs)``, ``on_train_batch_begin(batch, logs)``,
    ``on_train_batch_end(batch, logs)``, and by keyword any other hook (``on_chunk_end``,
    ``on_batch_begin``, ``on_batch_end``). Hooks not given do nothing; giving a batch-level
    one makes ``fit`` run one step per compiled call.
    """

    HOOKS = ("on_train_begin", "on_epoch_begin", "on_chunk_end", "on_epoch_end", "on_train_end") + BATCH_HOOKS

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        unknown = sorted(set(kwargs) - set(self.HOOKS))
        if unknown:
            raise ValueError(f"LambdaCallback got unknown hooks {unknown}; allowed: {list(self.HOOKS)}")
        hooks = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end, on_train_begin=on_train_begin,
                     on_train_end=on_train_end, on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end, **kwargs)
        for name, fn in hooks.items():
            if fn is None:
                continue
            if not callable(fn):
                raise ValueError(f"LambdaCallback {name} must be a function or None, got {fn!r}")
            setattr(self, name, fn)


class CallbackList:
    """Dispatches each hook to every callback in order.

    ``batch_hooks`` tells whether any callback defines a batch-level hook (``fit`` then
    runs one optimizer step per compiled call, so that they are called around each).
    """

    def __init__(self, callbacks, model):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)
        self.batch_hooks = any(defines_batch_hooks(cb) for cb in self.callbacks)
        for cb in self.callbacks:
            for hook in UNCALLED_HOOKS:
                if callable(getattr(cb, hook, None)):
                    warn_outside(f"{type(cb).__name__}.{hook} will not be called: fastnn's evaluate and predict take "
                                 f"no callbacks and fit validates without test hooks", UserWarning)

    def __getattr__(self, hook):
        def call(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kwargs)

        return call


__all__ = ["Callback", "History", "EarlyStopping", "ProgressBar", "ModelCheckpoint", "BackupAndRestore",
           "LearningRateScheduler", "ReduceLROnPlateau", "CSVLogger", "LambdaCallback"]
