"""Training callbacks: History, EarlyStopping, ProgressBar, ModelCheckpoint.

The model calls, in order: ``on_train_begin(logs)``, then per epoch
``on_epoch_begin(epoch, logs)``, ``on_chunk_end(epoch, logs)`` after every chunk
of optimizer steps (``logs`` holds the running ``loss``, ``accuracy`` and
``samples`` seen so far in the epoch), ``on_epoch_end(epoch, logs)``, and finally
``on_train_end(logs)``. A callback stops training by setting
``self.model.stop_training = True``. ``on_train_begin`` receives
``logs["metrics"]``, the names the epoch logs will contain.
"""

import math
import os
import sys

from .runs import EPOCH_LOG_EXTRAS, check_path_template, check_writable_dir
from .validation import Boolean, Interval, Options, check_params


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
        self.stopped_epoch, self.wait = None, 0

    def on_train_begin(self, logs=None):
        metrics = (logs or {}).get("metrics")
        if metrics is not None and self.monitor not in metrics:
            hint = " (pass validation_split or validation_data to fit)" if self.monitor.startswith("val_") else ""
            raise ValueError(f"EarlyStopping monitor must be one of {sorted(metrics)}, got {self.monitor!r}{hint}")
        self.best = self.best_epoch = self.best_weights = self.stopped_epoch = None
        self.wait = 0

    def _improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model._snapshot()
            return
        self.wait += 1
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


class ProgressBar(Callback):
    """A tqdm bar per epoch showing live loss and accuracy (``verbose=1``), or one
    line per epoch (``verbose=2``). Writes to stderr by default."""

    def __init__(self, verbose=1, file=None):
        self.verbose, self.file = verbose, file
        self.bar = None

    def on_train_begin(self, logs=None):
        self.epochs = (logs or {}).get("epochs", 0)
        self.n_samples = (logs or {}).get("samples", 0)

    def on_epoch_begin(self, epoch, logs=None):
        if self.verbose == 1:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.n_samples, desc=f"Epoch {epoch + 1}/{self.epochs}", unit="sample",
                            unit_scale=True, leave=True, file=self.file or sys.stderr, dynamic_ncols=True)

    def on_chunk_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.update(logs["samples"] - self.bar.n)
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", acc=f"{logs['accuracy']:.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        shown = {k: v for k, v in (logs or {}).items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        text = " ".join(f"{k}={v:.4f}" for k, v in shown.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.close()
            self.bar = None
        elif self.verbose == 2:
            seconds = (logs or {}).get("seconds", float("nan"))
            print(f"Epoch {epoch + 1}/{self.epochs} - {seconds:.1f}s - {text}", file=self.file or sys.stderr, flush=True)

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
        Only save when ``monitor`` improves (the file then holds the best model).
    """

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        check_params({"save_best_only": save_best_only, "mode": mode},
                     {"save_best_only": Boolean(), "mode": Options("auto", "min", "max")})
        self.filepath, self.monitor = os.fspath(filepath), monitor
        self.save_best_only, self.mode = save_best_only, _mode_for(monitor, mode)
        self.best = None
        self.saved = []

    def on_train_begin(self, logs=None):
        metrics = (logs or {}).get("metrics")
        if self.save_best_only and metrics is not None and self.monitor not in metrics:
            raise ValueError(f"ModelCheckpoint monitor must be one of {sorted(metrics)}, got {self.monitor!r}")
        if metrics is not None:
            example = check_path_template("ModelCheckpoint filepath", self.filepath, list(metrics) + EPOCH_LOG_EXTRAS)
            check_writable_dir(os.path.dirname(os.path.abspath(example)), "ModelCheckpoint filepath's folder")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None or not math.isfinite(value):
                return
            if self.best is not None and not (value < self.best if self.mode == "min" else value > self.best):
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
        training record), replaced atomically.
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
            try:
                os.rmdir(self.backup_dir)  # only when nothing else is in it
            except OSError:
                pass


class CallbackList:
    """Dispatches each hook to every callback in order."""

    def __init__(self, callbacks, model):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            cb.set_model(model)

    def __getattr__(self, hook):
        def call(*args, **kwargs):
            for cb in self.callbacks:
                getattr(cb, hook)(*args, **kwargs)

        return call


__all__ = ["Callback", "History", "EarlyStopping", "ProgressBar", "ModelCheckpoint", "BackupAndRestore"]
