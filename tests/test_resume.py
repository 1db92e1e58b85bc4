"""Resuming training with the same bits (fit(initial_epoch=), ModelCheckpoint, BackupAndRestore),
the training record in model files, checkpoint-template checks, and the divergence stop."""

import math
import shutil
import warnings

import numpy as np
import pytest

import fastnn
from fastnn.callbacks import BackupAndRestore, Callback, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau
from fastnn.divergence import DivergenceWarning, explosion_threshold
from fastnn.io import ModelFormatError
from fastnn.optimizers import CosineDecay, OneCycle


def image_rows(n=400, d=64, k=3, seed=0):
    """Non-negative, mostly-zero rows (like pixels in [0, 1]) with learnable labels."""
    rng = np.random.default_rng(seed)
    x = np.clip(rng.normal(size=(n, d)), 0, None).astype(np.float32) / 3
    y = (x[:, 0] > 0.2).astype(np.int64) + (x[:, 1] > 0.2)
    return x, y


class StopAfter(Callback):
    """Ends training after ``epochs`` epochs, as an interruption would (raise=True: with an exception)."""

    def __init__(self, epochs, raise_=False):
        self.epochs, self.raise_ = epochs, raise_

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            if self.raise_:
                raise KeyboardInterrupt
            self.model.stop_training = True


def same_bits(a, b):
    return (all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
            and np.array_equal(a.optimizer.buffers.slots, b.optimizer.buffers.slots)
            and np.array_equal(a.optimizer.buffers.step, b.optimizer.buffers.step))


CONFIGS = [
    dict(schedule="cosine", dropout=0.2),
    dict(optimizer="sgd", momentum=0.9, schedule="onecycle", augment={"shift": 1.0, "rotation": 5.0}),
    dict(optimizer="rmsprop", momentum=0.5, schedule="step", batch_norm=True),
]
FIT = dict(epochs=4, batch_size=32, validation_split=0.1, verbose=0)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("config", CONFIGS, ids=["adam-cosine-dropout", "sgd-onecycle-augment", "rmsprop-step-bn"])
def test_save_load_resume_gives_the_same_bits(tmp_path, backend, config):
    x, y = image_rows()
    whole = fastnn.MLP([16], backend=backend, seed=3, **config)
    whole_history = whole.fit(x, y, **FIT)
    first = fastnn.MLP([16], backend=backend, seed=3, **config)
    first.fit(x, y, callbacks=[StopAfter(2)], **FIT)
    assert first.training_state["epoch"] == 2
    resumed = fastnn.load(first.save(tmp_path / "two.fastnn"))
    assert resumed.training_state == first.training_state
    history = resumed.fit(x, y, initial_epoch=2, **FIT)
    assert history.epoch == [2, 3]
    assert same_bits(whole, resumed)
    assert history.history["val_loss"] == whole_history.history["val_loss"][2:]
    assert history.history["lr"] == whole_history.history["lr"][2:]  # the schedule went on, not restarted


@pytest.mark.parametrize("schedule", [CosineDecay(total_epochs=4), OneCycle(total_epochs=4),
                                      CosineDecay(final_fraction=0.1, total_steps=40)], ids=repr)
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_split_fits_through_save_and_load_give_the_same_bits(tmp_path, schedule, backend):
    """The issue's case: fit(epochs=2), save, load, fit(epochs=4, initial_epoch=2) is fit(epochs=4),
    with shuffling, dropout and a schedule that has its own length."""
    x, y = image_rows()
    fit = dict(batch_size=32, validation_split=0.1, verbose=0)  # 12 steps an epoch
    whole = fastnn.MLP([16], seed=3, dropout=0.2, schedule=schedule, backend=backend)
    whole_history = whole.fit(x, y, epochs=4, **fit)
    first = fastnn.MLP([16], seed=3, dropout=0.2, schedule=schedule, backend=backend)
    first.fit(x, y, epochs=2, **fit)
    resumed = fastnn.load(first.save(tmp_path / "two.fastnn"))
    assert resumed.optimizer.schedule == schedule  # the length travels in the file
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing differs from the uninterrupted run: no warning
        history = resumed.fit(x, y, epochs=4, initial_epoch=2, **fit)
    assert same_bits(whole, resumed)
    assert history.history["lr"] == whole_history.history["lr"][2:]
    assert resumed.training_state["history"]["val_loss"] == whole_history.history["val_loss"]


def test_a_schedule_without_a_length_spans_each_fit_and_says_how_to_split(tmp_path):
    x, y = image_rows()
    model = fastnn.MLP([16], schedule="cosine")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert model.history.history["lr"][-1] < 1e-5  # a whole 2-epoch cosine
    with pytest.warns(UserWarning, match=r"continues a 4-epoch schedule.*CosineDecay\(total_epochs=4\)"):
        history = model.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0)
    expected = CosineDecay().rates(1e-3, np.array([3 * 13 - 1, 4 * 13 - 1]), 4 * 13, 13)
    assert history.history["lr"] == list(expected)  # epochs 3-4 of a 4-epoch cosine
    with pytest.raises(ValueError, match="give total_epochs or total_steps, not both"):
        CosineDecay(total_epochs=2, total_steps=10)
    with pytest.raises(ValueError, match=r"total_epochs must be an integer in \[1, 9007199254740992\] or None, got 0"):
        OneCycle(total_epochs=0)
    with pytest.raises(ValueError, match="total_steps must be an integer in"):
        CosineDecay(total_steps=10**400)


def overfitting_run(stop_after=None, callbacks=(), **kwargs):
    """Random labels: val_loss is best after epoch 3 and worse after 4 and 5, so EarlyStopping(patience=2)
    ends the run after epoch 5."""
    x, _ = image_rows(n=300)
    y = np.random.default_rng(2).integers(0, 3, len(x))
    model = fastnn.MLP([32], lr=1e-2, seed=2)
    extra = [StopAfter(stop_after)] if stop_after else []
    history = model.fit(x, y, epochs=10, batch_size=32, validation_split=0.25, verbose=0,
                        callbacks=list(callbacks) + extra, **kwargs)
    return model, history, (x, y)


@pytest.mark.parametrize("interrupted_after", [3, 4])
def test_early_stopping_and_the_best_checkpoint_carry_on_across_a_resume(tmp_path, interrupted_after):
    """Resumed after the best epoch (3) or after a worse one (4): the resumed fit stops where the whole
    run stops, and ModelCheckpoint(save_best_only=True) keeps epoch 3's file instead of saving worse ones."""
    def callbacks(folder):
        return [EarlyStopping(patience=2, restore_best_weights=True),
                ModelCheckpoint(folder / "best.fastnn", save_best_only=True)]

    (tmp_path / "whole").mkdir(), (tmp_path / "part").mkdir()
    whole, whole_history, (x, y) = overfitting_run(callbacks=callbacks(tmp_path / "whole"))
    assert whole_history.epoch == [0, 1, 2, 3, 4] and whole.stop_reason.endswith(" at epoch 3)")
    part, _, _ = overfitting_run(interrupted_after, callbacks(tmp_path / "part"))
    resumed = fastnn.load(part.save(tmp_path / "part.fastnn"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = resumed.fit(x, y, epochs=10, batch_size=32, validation_split=0.25, verbose=0,
                              initial_epoch=interrupted_after, callbacks=callbacks(tmp_path / "part"))
    assert history.epoch == list(range(interrupted_after, 5)) and resumed.stop_reason == whole.stop_reason
    best, whole_best = fastnn.load(tmp_path / "part" / "best.fastnn"), fastnn.load(tmp_path / "whole" / "best.fastnn")
    assert best.training_state == whole_best.training_state and best.training_state["epoch"] == 3
    assert same_bits(best, whole_best)
    messages = [str(w.message) for w in caught]
    if interrupted_after == 3:  # the resumed model holds the best epoch: restored as in the whole run
        assert messages == [] and same_bits(resumed, whole)
    else:  # epoch 3's weights are only in the checkpoint: said so, the last weights kept
        assert len(messages) == 1 and "came at epoch 3, before this fit resumed at epoch 5" in messages[0]
        assert same_bits(fastnn.load(tmp_path / "part" / "best.fastnn"), whole_best)


def test_reduce_lr_on_plateau_carries_on_across_a_resume(tmp_path):
    whole, whole_history, (x, y) = overfitting_run(callbacks=[ReduceLROnPlateau(patience=1, factor=0.5)])
    assert whole_history.history["lr"][:5] == [0.01, 0.01, 0.005, 0.005, 0.0025]  # reduced after epochs 2, 4, 5 ...
    part, _, _ = overfitting_run(4, [ReduceLROnPlateau(patience=1, factor=0.5)])
    resumed = fastnn.load(part.save(tmp_path / "part.fastnn"))
    history = resumed.fit(x, y, epochs=10, batch_size=32, validation_split=0.25, verbose=0, initial_epoch=4,
                          callbacks=[ReduceLROnPlateau(patience=1, factor=0.5)])
    assert history.history["lr"] == whole_history.history["lr"][4:] and same_bits(resumed, whole)


def test_backup_and_restore_carries_early_stopping_on(tmp_path):
    _, whole_history, (x, y) = overfitting_run(callbacks=[EarlyStopping(patience=2)])
    with pytest.raises(KeyboardInterrupt):
        overfitting_run(callbacks=[EarlyStopping(patience=2), BackupAndRestore(tmp_path), StopAfter(4, raise_=True)])
    model, history, _ = overfitting_run(callbacks=[EarlyStopping(patience=2), BackupAndRestore(tmp_path)])
    assert history.epoch == [4] and history.history["val_loss"] == whole_history.history["val_loss"][4:]


def test_model_checkpoint_files_resume_the_run(tmp_path):
    x, y = image_rows()
    whole = fastnn.MLP([16], seed=1, dropout=0.1, schedule="cosine")
    whole.fit(x, y, **FIT)
    run = fastnn.MLP([16], seed=1, dropout=0.1, schedule="cosine")
    run.fit(x, y, callbacks=[ModelCheckpoint(tmp_path / "ckpt-{epoch:02d}-{val_loss:.3f}.fastnn")], **FIT)
    ckpt = sorted(tmp_path.glob("ckpt-03-*.fastnn"))[0]
    resumed = fastnn.load(ckpt)
    resumed.fit(x, y, initial_epoch=3, **FIT)
    assert same_bits(whole, resumed)


def test_fit_seed_is_taken_from_the_saved_run(tmp_path):
    x, y = image_rows()
    whole = fastnn.MLP([16], dropout=0.3)
    whole.fit(x, y, seed=7, **FIT)
    part = fastnn.MLP([16], dropout=0.3)
    part.fit(x, y, seed=7, callbacks=[StopAfter(1)], **FIT)
    resumed = fastnn.load(part.save(tmp_path / "m.fastnn"))
    resumed.fit(x, y, initial_epoch=1, **FIT)  # seed=None: the saved run's seed 7
    assert same_bits(whole, resumed)


def test_backup_and_restore_resumes_after_an_interruption(tmp_path):
    x, y = image_rows()
    backup = tmp_path / "backup"
    whole = fastnn.MLP([16], seed=2, schedule="onecycle", dropout=0.2)
    whole.fit(x, y, **FIT)
    model = fastnn.MLP([16], seed=2, schedule="onecycle", dropout=0.2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, callbacks=[BackupAndRestore(backup), StopAfter(3, raise_=True)], **FIT)
    assert (backup / "backup.fastnn").is_file()  # kept: the run did not finish
    (backup / ".fastnn-killed.tmp").write_bytes(b"PK")  # as a process killed while writing the next backup leaves
    fresh = fastnn.MLP([16], seed=2, schedule="onecycle", dropout=0.2)  # e.g. a new process
    callback = BackupAndRestore(backup)
    history = fresh.fit(x, y, callbacks=[callback], **FIT)
    assert callback.restored_epoch == 3 and history.epoch == [3]
    assert same_bits(whole, fresh)
    assert not backup.exists()  # deleted once training ended normally
    again = fastnn.MLP([16], seed=2, schedule="onecycle", dropout=0.2)
    assert again.fit(x, y, callbacks=[BackupAndRestore(backup)], **FIT).epoch == [0, 1, 2, 3]


def test_backup_of_another_model_is_refused(tmp_path):
    x, y = image_rows()
    fastnn.MLP([8]).fit(x, y, epochs=1, verbose=0, callbacks=[BackupAndRestore(tmp_path, delete_checkpoint=False)])
    with pytest.raises(ValueError, match="saved by a different model"):
        fastnn.MLP([16]).fit(x, y, epochs=2, verbose=0, callbacks=[BackupAndRestore(tmp_path)])


def test_resume_mismatch_warns_and_initial_epoch_is_checked(tmp_path):
    x, y = image_rows()
    model = fastnn.MLP([8], schedule="cosine")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    with pytest.warns(UserWarning, match=r"batch_size=64 \(the saved run: 32\).*epochs=5 \(the saved run planned 2"):
        model.fit(x, y, epochs=5, batch_size=64, initial_epoch=2, verbose=0)
    with pytest.raises(ValueError, match="initial_epoch must be at most epochs"):
        model.fit(x, y, epochs=2, initial_epoch=3, verbose=0)
    with pytest.raises(ValueError, match="initial_epoch"):
        model.fit(x, y, epochs=2, initial_epoch=-1, verbose=0)
    assert model.fit(x, y, epochs=5, batch_size=64, initial_epoch=5, verbose=0).epoch == []


def test_version_1_files_load_and_damaged_training_records_are_refused(tmp_path, rewrite_model_config):
    x, y = image_rows()
    model = fastnn.MLP([8])
    model.fit(x, y, epochs=1, verbose=0)
    path = model.save(tmp_path / "m.fastnn")

    def rewrite(edit, target):
        shutil.copyfile(path, target)
        return rewrite_model_config(target, edit)

    def as_v1(config):
        config["format_version"] = 1
        del config["training"]

    old = fastnn.load(rewrite(as_v1, tmp_path / "v1.fastnn"))
    assert old.training_state is None and all(np.array_equal(a, b) for a, b in zip(old.get_weights(), model.get_weights()))
    with pytest.raises(ModelFormatError, match="damaged training record"):
        fastnn.load(rewrite(lambda c: c["training"].update(epoch=-1), tmp_path / "bad.fastnn"))
    with pytest.raises(ModelFormatError, match="'history' must map metric names to lists of 1 numbers or nulls"):
        fastnn.load(rewrite(lambda c: c["training"]["history"]["loss"].append(0.5), tmp_path / "long.fastnn"))
    # files saved before the record had a history: resumable, with nothing for callbacks to carry on
    older = fastnn.load(rewrite(lambda c: c["training"].pop("history"), tmp_path / "older.fastnn"))
    assert older.training_state == {**model.training_state, "history": {}}


@pytest.mark.parametrize("template, message", [
    ("{val_loss:.3f}.fastnn", r"\{val_loss\}, which this run will not have \(val_ fields need validation"),
    ("{epochs}.fastnn", r"\{epochs\}, which this run will not have; available: \{epoch\}, \{loss\}"),
    ("{loss:d}.fastnn", "cannot be formatted"),
    ("{epoch.fastnn", "is not a valid template"),
])
def test_checkpoint_templates_fail_before_training(tmp_path, template, message):
    x, y = image_rows()
    model = fastnn.MLP([8])
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(tmp_path / template)])
    assert model.optimizer.iterations == 0 and not list(tmp_path.iterdir())


def test_checkpoint_folder_under_a_file_fails_before_training(tmp_path):
    x, y = image_rows()
    (tmp_path / "file").write_text("")
    model = fastnn.MLP([8])
    with pytest.raises(OSError, match="lies under a regular file"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ModelCheckpoint(tmp_path / "file" / "sub" / "c{epoch}.fastnn")])
    assert model.optimizer.iterations == 0


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_exploding_loss_stops_and_keeps_sane_weights(backend, optimizer):
    x, y = image_rows(n=600)
    model = fastnn.MLP([32], optimizer=optimizer, lr=1e6, backend=backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    diverged = [w for w in caught if issubclass(w.category, DivergenceWarning)]
    assert len(diverged) == 1 and diverged[0].filename == __file__  # the user's line, not NumPy's
    assert "lr=1e+05" in str(diverged[0].message)
    assert model.stop_reason == history.stop_reason and model.stop_reason.startswith(("exploding loss", "non-finite"))
    assert len(history.epoch) == 1 and math.isnan(history.history["loss"][0])
    loss, _ = model.evaluate(x, y)
    assert math.isfinite(loss) and loss < explosion_threshold(3)


def test_high_learning_rate_warm_up_is_not_stopped():
    """A one-cycle run at 10x the usual peak rate has loss spikes but recovers: never stopped."""
    x, y = image_rows(n=600)
    model = fastnn.MLP([32], optimizer="sgd", lr=1.0, schedule="onecycle", momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert model.stop_reason is None and len(history.epoch) == 3
