"""Keras-semantics tests of LearningRateScheduler, ReduceLROnPlateau, CSVLogger,
LambdaCallback and batch-level hooks, in both backends (the Numba one through its
compiled many-steps loop)."""

import csv
import warnings

import numpy as np
import pytest

from fastnn import MLP
from fastnn.callbacks import (Callback, CSVLogger, LambdaCallback, LearningRateScheduler, ReduceLROnPlateau,
                              defines_batch_hooks)

BACKENDS = ["numpy", "numba"]


def blobs(n=200, d=12, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2.0
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y.astype(np.int64)


def model_for(backend, **kwargs):
    return MLP([16], backend=backend, seed=1, **{"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, **kwargs})


def fit(model, x, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Numba's caching notices
        return model.fit(x, y, batch_size=32, shuffle=False, verbose=0, **kwargs)


def assert_trained_as_with_rates(model, backend, x, y, rates):
    """``model`` has the bits of one-epoch fits with these rates set by hand in between."""
    by_hand = model_for(backend)
    for lr in rates:
        by_hand.optimizer.lr = lr
        fit(by_hand, x, y, epochs=1)
    for a, b in zip(model.get_weights(), by_hand.get_weights()):
        np.testing.assert_array_equal(a, b)


# LearningRateScheduler ----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_learning_rate_scheduler_sets_each_epochs_rate_from_its_first_step(backend):
    """fit(epochs=3) with a scheduler == three fit(epochs=1) calls with those rates set by hand:
    the rate changes take effect in the compiled loop at the start of the right epoch."""
    x, y = blobs()
    seen = []

    def schedule(epoch, lr):
        seen.append((epoch, lr))
        return lr if epoch == 0 else lr * 0.5

    model = model_for(backend)
    history = fit(model, x, y, epochs=3, callbacks=[LearningRateScheduler(schedule)])
    assert seen == [(0, 0.05), (1, 0.05), (2, 0.025)]
    assert history.history["lr"] == [0.05, 0.025, 0.0125]
    assert model.optimizer.lr == 0.0125  # kept after fit, as in Keras

    assert_trained_as_with_rates(model, backend, x, y, [0.05, 0.025, 0.0125])
    # and not what a constant rate gives
    constant = model_for(backend)
    fit(constant, x, y, epochs=3)
    assert not np.array_equal(constant.get_weights()[0], model.get_weights()[0])


def test_learning_rate_scheduler_verbose_and_bad_rates(capsys):
    x, y = blobs(60)
    fit(model_for("numpy"), x, y, epochs=2, callbacks=[LearningRateScheduler(lambda e, lr: 0.01 * (e + 1), verbose=1)])
    out = capsys.readouterr().out
    assert "Epoch 1: LearningRateScheduler setting learning rate to 0.01." in out
    assert "Epoch 2: LearningRateScheduler setting learning rate to 0.02." in out
    for bad in (0.0, -1.0, float("nan"), "0.1", None):
        with pytest.raises(ValueError, match=r"LearningRateScheduler's schedule\(0, lr\) must be a number > 0"):
            fit(model_for("numpy"), x, y, epochs=1, callbacks=[LearningRateScheduler(lambda e, lr, bad=bad: bad)])
    with pytest.raises(ValueError, match="schedule must be a function"):
        LearningRateScheduler(0.1)


def test_learning_rate_scheduler_takes_one_argument_schedules_as_keras_does():
    """Keras accepts schedule(epoch) as well as schedule(epoch, lr): the same rates, the same bits."""
    import functools

    x, y = blobs(60)
    rates = {0: 0.05, 1: 0.02}
    one = model_for("numpy")
    history = fit(one, x, y, epochs=2, callbacks=[LearningRateScheduler(lambda epoch: rates[epoch])])
    assert history.history["lr"] == [0.05, 0.02]
    assert_trained_as_with_rates(one, "numpy", x, y, [0.05, 0.02])

    class Halving:  # a callable object; its signature is read from __call__
        def __call__(self, epoch, lr):
            return lr / 2

    def table(rates, epoch):
        return rates[epoch]

    for schedule, expected in [(Halving(), [0.025, 0.0125]), (functools.partial(table, [0.3, 0.2]), [0.3, 0.2]),
                               (lambda epoch, lr=None: 0.01, [0.01, 0.01]), (lambda *args: 0.1 * len(args), [0.2] * 2)]:
        history = fit(model_for("numpy"), x, y, epochs=2, callbacks=[LearningRateScheduler(schedule)])
        assert history.history["lr"] == pytest.approx(expected)
    for bad, shown in [(lambda: 0.1, r"<lambda>\(\)"), (lambda epoch, lr, extra: 0.1, r"<lambda>\(epoch, lr, extra\)"),
                       (lambda *, epoch: 0.1, r"<lambda>\(\*, epoch\)")]:
        with pytest.raises(ValueError, match=r"schedule must take \(epoch, lr\) or \(epoch\) and return the "
                                             r"learning rate, got " + shown):
            LearningRateScheduler(bad)
    with pytest.raises(ValueError, match=r"LearningRateScheduler's schedule\(0\) must be a number > 0, got -1"):
        fit(model_for("numpy"), x, y, epochs=1, callbacks=[LearningRateScheduler(lambda epoch: -1)])

    def broken(epoch):  # a TypeError inside the schedule is the schedule's, not a cue to call it otherwise
        return "0.1" * 0.5

    with pytest.raises(TypeError, match="can't multiply sequence"):
        fit(model_for("numpy"), x, y, epochs=1, callbacks=[LearningRateScheduler(broken)])


# ReduceLROnPlateau -----------------------------------------------------------------------


class _Opt:
    lr = 1.0


class _Model:
    def __init__(self):
        self.optimizer = _Opt()


def _plateau_rates(values, **kwargs):
    """The rate after each epoch end, for a monitored value sequence (no training)."""
    cb = ReduceLROnPlateau(monitor="val_loss", **kwargs)
    cb.set_model(_Model())
    cb.on_train_begin({"metrics": ["loss", "val_loss"]})
    rates = []
    for epoch, value in enumerate(values):
        cb.on_epoch_end(epoch, {"val_loss": value})
        rates.append(cb.model.optimizer.lr)
    return rates


@pytest.mark.parametrize("values, kwargs, expected", [
    # patience 2: the 2nd epoch without improvement reduces; waiting starts again after
    ([1.0, 1.0, 1.0, 1.0, 1.0], dict(factor=0.5, patience=2), [1, 1, 0.5, 0.5, 0.25]),
    # an improvement resets the wait
    ([1.0, 1.1, 0.9, 1.0, 1.0], dict(factor=0.5, patience=2), [1, 1, 1, 1, 0.5]),
    # min_delta: 0.95 is not better than 1.0 - 0.1
    ([1.0, 0.95, 0.95], dict(factor=0.5, patience=1, min_delta=0.1), [1, 0.5, 0.25]),
    # cooldown 2: after a reduction, the next epoch does not count (Keras decrements first)
    ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], dict(factor=0.5, patience=1, cooldown=2), [1, 0.5, 0.5, 0.25, 0.25, 0.125]),
    # min_lr bounds the rate, and no reduction once it is reached
    ([1.0, 2.0, 2.0, 2.0], dict(factor=0.1, patience=1, min_lr=0.05), [1, 0.1, 0.05, 0.05]),
])
def test_reduce_lr_on_plateau_follows_keras(values, kwargs, expected):
    np.testing.assert_allclose(_plateau_rates(values, **kwargs), expected, rtol=1e-12)


def test_reduce_lr_on_plateau_max_mode_for_accuracies_and_bad_arguments():
    cb = ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1)
    cb.set_model(_Model())
    cb.on_train_begin({})
    for epoch, acc in enumerate([0.5, 0.6, 0.6]):
        cb.on_epoch_end(epoch, {"val_accuracy": acc})
    assert cb.model.optimizer.lr == 0.5
    with pytest.raises(ValueError, match=r"factor must be a number in \(0, 1\), got 1.0"):
        ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="pass validation_split or validation_data"):
        x, y = blobs(60)
        fit(model_for("numpy"), x, y, epochs=1, callbacks=[ReduceLROnPlateau()])


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduce_lr_on_plateau_in_fit_changes_the_next_epochs_rate(backend):
    x, y = blobs()
    # min_delta so large that only the first epoch counts as an improvement
    cb = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1e9, verbose=1)
    model = model_for(backend)
    history = fit(model, x, y, epochs=3, callbacks=[cb])
    assert history.history["lr"] == [0.05, 0.05, 0.025]
    assert_trained_as_with_rates(model, backend, x, y, [0.05, 0.05, 0.025])
    assert model.optimizer.lr == 0.0125  # reduced again at the end of the last epoch


# CSVLogger ---------------------------------------------------------------------------


def _rows(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=sep))


def test_csv_logger_writes_every_epoch_as_it_ends(tmp_path):
    path = tmp_path / "log.csv"
    x, y = blobs()
    lines_seen = []
    reader = LambdaCallback(on_epoch_end=lambda epoch, logs: lines_seen.append(len(_rows(path))))
    history = fit(model_for("numba"), x, y, epochs=3, validation_split=0.2, callbacks=[CSVLogger(path), reader])
    assert lines_seen == [2, 3, 4]  # header + one row per finished epoch, on disk before fit returns
    rows = _rows(path)
    keys = sorted(history.history)
    assert rows[0] == ["epoch"] + keys  # Keras: the first epoch's keys, sorted
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]  # Keras counts epochs from 0
    for i, row in enumerate(rows[1:]):
        assert [float(v) for v in row[1:]] == [history.history[k][i] for k in keys]  # full precision


def test_csv_logger_append_separator_columns_and_interrupted_runs(tmp_path):
    path = tmp_path / "log.csv"
    x, y = blobs(80)
    fit(model_for("numpy"), x, y, epochs=1, callbacks=[CSVLogger(path, separator=";", columns=["loss", "val_loss"],
                                                                 epoch_base=1)])
    fit(model_for("numpy"), x, y, epochs=2,
        callbacks=[CSVLogger(path, separator=";", append=True, columns=["loss", "val_loss"], epoch_base=1)])
    rows = _rows(path, ";")
    assert rows[0] == ["epoch", "loss", "val_loss"] and [r[0] for r in rows] == ["epoch", "1", "1", "2"]
    assert all(r[2] == "NA" for r in rows[1:])  # no validation: missing, as Keras writes it

    def interrupt(epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    path2 = tmp_path / "interrupted.csv"
    with pytest.raises(KeyboardInterrupt):
        fit(model_for("numpy"), x, y, epochs=5, callbacks=[CSVLogger(path2), LambdaCallback(on_epoch_end=interrupt)])
    assert [r[0] for r in _rows(path2)] == ["epoch", "0", "1"]  # the finished epochs are on disk


def test_csv_logger_bad_arguments():
    with pytest.raises(ValueError, match="separator must be a single character"):
        CSVLogger("x.csv", separator=", ")
    with pytest.raises(ValueError, match="append must be True or False"):
        CSVLogger("x.csv", append="yes")
    with pytest.raises(ValueError, match="columns must be a list of log keys"):
        CSVLogger("x.csv", columns="loss")
    x, y = blobs(40)
    with pytest.raises(OSError, match="CSVLogger filename '/proc/x.csv': cannot write /proc/x.csv"):
        fit(model := model_for("numpy"), x, y, epochs=1, callbacks=[CSVLogger("/proc/x.csv")])
    assert model.optimizer.iterations == 0  # refused before training


# LambdaCallback ------------------------------------------------------------------------------


def test_lambda_callback_calls_the_functions_it_was_given():
    calls = []
    cb = LambdaCallback(on_train_begin=lambda logs: calls.append("begin"),
                        on_epoch_begin=lambda epoch, logs: calls.append(f"epoch{epoch}"),
                        on_epoch_end=lambda epoch, logs: calls.append(f"end{epoch}:{sorted(logs)[:2]}"),
                        on_train_end=lambda logs: calls.append("done"))
    assert not defines_batch_hooks(cb)
    x, y = blobs(60)
    fit(model_for("numpy"), x, y, epochs=2, callbacks=[cb])
    assert calls == ["begin", "epoch0", "end0:['accuracy', 'loss']", "epoch1", "end1:['accuracy', 'loss']", "done"]
    with pytest.raises(ValueError, match=r"unknown hooks \['on_epoch_finish'\]"):
        LambdaCallback(on_epoch_finish=print)
    with pytest.raises(ValueError, match="on_epoch_end must be a function or None"):
        LambdaCallback(on_epoch_end=3)


# batch-level hooks -------------------------------------------------------------------------


class BatchRecorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_batch_begin(self, batch, logs=None):
        self.events.append(("begin", batch, self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        self.events.append(("end", batch, self.model.optimizer.iterations, logs["loss"], logs["accuracy"]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_hooks_are_called_around_every_step_without_changing_results(backend):
    x, y = blobs(100)
    rec = BatchRecorder()
    model = model_for(backend, dropout=0.2)
    history = fit(model, x, y, epochs=2, callbacks=[rec])
    # 100 rows at 32: 4 steps per epoch, the batch index counts within the epoch
    begins = [e for e in rec.events if e[0] == "begin"]
    ends = [e for e in rec.events if e[0] == "end"]
    assert [(b, it) for _, b, it in begins] == [(0, 0), (1, 1), (2, 2), (3, 3), (0, 4), (1, 5), (2, 6), (3, 7)]
    assert [(b, it) for _, b, it, _, _ in ends] == [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (1, 6), (2, 7), (3, 8)]
    # the end logs are the epoch's running means (Keras), the last one the epoch's
    assert ends[3][3] == history.history["loss"][0] and ends[7][4] == history.history["accuracy"][1]

    plain = model_for(backend, dropout=0.2)
    plain_history = fit(plain, x, y, epochs=2)
    assert plain_history.history["loss"] == history.history["loss"]
    for a, b in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras_aliases_lambda_batch_hooks_and_stopping_after_a_batch():
    class OldStyle(Callback):
        def __init__(self):
            self.batches = []

        def on_batch_end(self, batch, logs=None):  # Keras' older name, called via on_train_batch_end
            self.batches.append(batch)

    old = OldStyle()
    assert defines_batch_hooks(old) and defines_batch_hooks(LambdaCallback(on_train_batch_end=print))
    assert not defines_batch_hooks(CSVLogger("unused.csv"))

    def stop(batch, logs):
        if batch == 1:
            model.stop_training = True

    x, y = blobs(100)
    model = model_for("numba")
    history = fit(model, x, y, epochs=3, callbacks=[old, LambdaCallback(on_train_batch_end=stop)])
    # Keras: training stops after the batch that set stop_training; that epoch still ends
    assert old.batches == [0, 1] and model.optimizer.iterations == 2 and history.epoch == [0]


def test_keras_hooks_fastnn_never_calls_are_warned_about_at_fit():
    class Tester(Callback):
        def on_test_batch_end(self, batch, logs=None):
            pass

    x, y = blobs(40)
    with pytest.warns(UserWarning, match="Tester.on_test_batch_end will not be called") as record:
        model_for("numpy").fit(x, y, epochs=1, verbose=0, callbacks=[Tester()])
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none for callbacks that define only hooks fastnn calls
        model_for("numpy").fit(x, y, epochs=1, verbose=0, callbacks=[LambdaCallback(on_batch_end=lambda b, logs: None)])
