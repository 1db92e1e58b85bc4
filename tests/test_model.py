"""Model API behaviour: build, fit/History, optimizer semantics against a float64
reference, schedules, callbacks, early stopping, weights, inference, backends."""

import warnings

import numpy as np
import pytest

from fastnn import MLP, Sequential, layers as L, optimizers as O
from fastnn.callbacks import Callback, EarlyStopping, History, ModelCheckpoint


def blobs(n=300, d=10, k=3, seed=0, spread=3.0):
    """Separable Gaussian blobs: float32 (n, d), int64 (n,)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread
    y = rng.integers(0, k, n)
    x = centres[y] + rng.normal(size=(n, d))
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def data():
    return blobs()


class Recorder(Callback):
    """Keeps a copy of the weights and the logs at every epoch end, and counts hooks."""

    def __init__(self):
        self.weights, self.logs, self.calls = [], [], []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin{epoch}")

    def on_chunk_end(self, epoch, logs=None):
        self.calls.append("chunk")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end{epoch}")
        self.weights.append(self.model.get_weights())
        self.logs.append(dict(logs))

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


# building and weights -------------------------------------------------------------

def test_build_creates_weights_without_training():
    model = MLP([32, 16], backend="numpy", seed=3).build(20, 4)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(20, 32), (32,), (32, 16), (16,), (16, 4), (4,)]
    assert model.get_weight_names() == ["layers.0.W", "layers.0.b", "layers.1.W", "layers.1.b", "layers.2.W", "layers.2.b"]
    assert model.count_params() == 20 * 32 + 32 + 32 * 16 + 16 + 16 * 4 + 4
    assert model.optimizer.iterations == 0
    W0, b0, W1, _, W2, _ = model.get_weights()
    assert W0.dtype == np.float32 and not b0.any()
    # He uniform before ReLU, Glorot uniform for the linear output layer
    assert np.abs(W0).max() <= np.sqrt(6 / 20) and np.abs(W0).max() > 0.9 * np.sqrt(6 / 20)
    assert np.abs(W1).max() <= np.sqrt(6 / 32) and np.abs(W1).max() > 0.9 * np.sqrt(6 / 32)
    assert np.abs(W2).max() <= np.sqrt(6 / 20) and np.abs(W2).max() > 0.8 * np.sqrt(6 / 20)
    # seeded: same seed, same weights; other seed, other weights
    again = MLP([32, 16], seed=3).build(20, 4).get_weights()
    other = MLP([32, 16], seed=4).build(20, 4).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again))
    assert not np.array_equal(model.get_weights()[0], other[0])


def test_glorot_for_tanh_and_he_through_batchnorm():
    tanh = MLP([50], activation="tanh").build(30, 3).get_weights()[0]
    assert np.abs(tanh).max() <= np.sqrt(6 / 80) and np.abs(tanh).max() > 0.9 * np.sqrt(6 / 80)
    bn = MLP([50], batch_norm=True).build(30, 3)
    assert bn.get_weight_names()[:6] == ["layers.0.W", "layers.0.b", "layers.1.gamma", "layers.1.beta",
                                         "layers.1.running_mean", "layers.1.running_var"]
    W, _, gamma, beta, mean, var = bn.get_weights()[:6]
    assert np.abs(W).max() > np.sqrt(6 / 80)  # He (ReLU after the batch norm), wider than Glorot
    assert (gamma == 1).all() and (beta == 0).all() and (mean == 0).all() and (var == 1).all()


def test_set_weights_changes_predictions_and_get_weights_copies(data):
    x, y = data
    model = MLP([8], backend="numpy").build(10, 3)
    weights = model.get_weights()
    weights[0][...] = 0  # a copy: the model is unchanged
    assert model.get_weights()[0].any()
    new = [np.full_like(w, 0.0) for w in model.get_weights()]
    new[-1] = np.array([0.0, 5.0, 0.0], dtype=np.float64)  # float64 is converted
    model.set_weights(new)
    assert (model.predict(x) == 1).all()
    assert model.get_weights()[-1].dtype == np.float32


def test_dense_plus_activation_layer_is_fused_and_identical(data):
    x, y = data
    a = Sequential([L.Dense(16), L.ReLU(), L.Dense(3)], backend="numpy", seed=5)
    b = Sequential([L.Dense(16, activation="relu"), L.Dense(3)], backend="numpy", seed=5)
    ha = a.fit(x, y, epochs=2, batch_size=32, verbose=0)
    hb = b.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert len(a.plan.rows) == 2 and a.plan.rows[0] == ("dense", 10, 16, 1)
    assert a.get_weight_names() == ["layers.0.W", "layers.0.b", "layers.2.W", "layers.2.b"]
    assert ha.history["loss"] == hb.history["loss"]
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_sequential_architecture_from_the_issue(data):
    x, y = data
    model = Sequential([L.Dense(256), L.Dropout(0.5), L.Dense(128), L.Dense(128), L.BatchNorm(), L.Dense(3)],
                       backend="numpy")
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    names = model.get_weight_names()
    assert names[-6:] == ["layers.4.gamma", "layers.4.beta", "layers.4.running_mean", "layers.4.running_var",
                          "layers.5.W", "layers.5.b"]
    mean = model.get_weights()[-4]
    assert np.abs(mean).max() > 0  # running statistics were updated
    assert history.history["accuracy"][-1] > 0.8
    text = model.summary(print_fn=None)
    assert "Dropout(rate=0.5)" in text and "BatchNorm(momentum=0.1, eps=1e-05)" in text
    assert f"Trainable parameters: {model.count_params()}" in text
    # inference mode is deterministic (no dropout), training changed the weights
    np.testing.assert_array_equal(model.predict_proba(x), model.predict_proba(x))


# fit and History ------------------------------------------------------------------------

def test_fit_returns_history_with_keras_keys(data):
    x, y = data
    model = MLP([16], backend="numpy", lr=0.01)
    history = model.fit(x, y, epochs=4, batch_size=50, validation_split=0.2, verbose=0)
    assert isinstance(history, History) and model.history is history
    h = history.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "seconds", "samples_per_second", "lr"}
    assert all(len(v) == 4 for v in h.values()) and history.epoch == [0, 1, 2, 3]
    assert all(s > 0 for s in h["seconds"])
    np.testing.assert_allclose(h["samples_per_second"], 240 / np.array(h["seconds"]))
    assert h["loss"][-1] < h["loss"][0] and h["val_accuracy"][-1] > 0.9
    # validation_split holds out the *last* 20% of rows, as Keras does
    loss, acc = model.evaluate(x[240:], y[240:])
    assert h["val_loss"][-1] == pytest.approx(loss) and h["val_accuracy"][-1] == pytest.approx(acc)
    no_val = MLP([16], backend="numpy").fit(x, y, epochs=1, verbose=0).history
    assert "val_loss" not in no_val


def test_validation_data_and_determinism(data):
    x, y = data
    xv, yv = blobs(60, seed=0)
    runs = [MLP([16], backend="numpy", seed=s).fit(x, y, epochs=2, batch_size=32, validation_data=(xv, yv),
                                                   verbose=0).history for s in (1, 1, 2)]
    assert runs[0]["loss"] == runs[1]["loss"] and runs[0]["val_loss"] == runs[1]["val_loss"]
    assert runs[0]["loss"] != runs[2]["loss"]
    # fit(seed=...) overrides the model seed for shuffling only: same init, other order
    a = MLP([16], backend="numpy", seed=1).fit(x, y, epochs=1, batch_size=32, seed=9, verbose=0).history
    assert a["loss"] != runs[0]["loss"][:1]


def test_history_loss_is_sample_weighted_mean_of_steps(data):
    x, y = data
    model = MLP([8], backend="numpy", seed=0, optimizer="sgd", lr=1e-9)  # weights barely move
    model.build(10, 3)
    weights = model.get_weights()
    weights[-1][:] = [0.01, 0.02, 0.03]  # dead-ReLU rows would tie at logits 0 and flip on any update
    model.set_weights(weights)
    loss0, acc0 = model.evaluate(x, y)
    h = model.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0).history  # ragged last batch (44)
    assert h["loss"][0] == pytest.approx(loss0, rel=1e-5)
    assert h["accuracy"][0] == pytest.approx(acc0)


def test_callback_hooks_in_order(data):
    x, y = data
    rec = Recorder()
    MLP([8], backend="numpy").fit(x, y, epochs=2, batch_size=10, callbacks=[rec], verbose=0)
    assert rec.calls[0] == "train_begin" and rec.calls[-1] == "train_end"
    assert rec.calls.index("epoch_begin1") > rec.calls.index("epoch_end0")
    assert rec.calls.count("chunk") == 2  # 30 steps per epoch fit in one chunk


def test_progress_bar_shows_live_metrics(data, capsys):
    x, y = data
    MLP([8], backend="numpy").fit(x, y, epochs=2, batch_size=16, validation_split=0.1, verbose=1)
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err and "val_accuracy=" in err and "loss=" in err
    MLP([8], backend="numpy").fit(x, y, epochs=1, verbose=2)
    assert "Epoch 1/1 - " in capsys.readouterr().err
    MLP([8], backend="numpy").fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr() == ("", "")


# optimizer semantics against an independent float64 reference ----------------------------

def _reference_grads(params, x, y, wd):
    """Loss and gradients of a Dense-ReLU-Dense net with mean softmax cross-entropy, float64."""
    W0, b0, W1, b1 = params
    z1 = x @ W0 + b0
    a1 = np.maximum(z1, 0)
    z2 = a1 @ W1 + b1
    z2 = z2 - z2.max(1, keepdims=True)
    p = np.exp(z2) / np.exp(z2).sum(1, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y]).mean()
    dz2 = p.copy()
    dz2[np.arange(n), y] -= 1
    dz2 /= n
    dz1 = (dz2 @ W1.T) * (z1 > 0)
    grads = [x.T @ dz1, dz1.sum(0), a1.T @ dz2, dz2.sum(0)]
    return loss, [g + wd * w for g, w in zip(grads, params)]


def _reference_train(params, x, y, opt, steps):
    params = [p.astype(np.float64) for p in params]
    state = [[np.zeros_like(p) for p in params] for _ in range(2)]
    losses = []
    for t in range(1, steps + 1):
        loss, grads = _reference_grads(params, x, y, opt["wd"])
        losses.append(loss)
        for i, (p, g) in enumerate(zip(params, grads)):
            if opt["name"] == "sgd":
                v = state[0][i] = opt["momentum"] * state[0][i] + g if t > 1 else g.copy()
                step = g + opt["momentum"] * v if opt["nesterov"] else v
                p -= opt["lr"] * step
            elif opt["name"] == "adam":
                m = state[0][i] = 0.9 * state[0][i] + 0.1 * g
                v = state[1][i] = 0.999 * state[1][i] + 0.001 * g * g
                p -= opt["lr"] * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
            elif opt["name"] == "rmsprop":
                s = state[0][i] = 0.99 * state[0][i] + 0.01 * g * g
                p -= opt["lr"] * g / (np.sqrt(s) + 1e-8)
    return params, losses


OPTIMIZER_CASES = [
    (O.SGD(lr=0.5), dict(name="sgd", lr=0.5, momentum=0.0, nesterov=False, wd=0.0)),
    (O.SGD(lr=0.2, momentum=0.9, weight_decay=0.01), dict(name="sgd", lr=0.2, momentum=0.9, nesterov=False, wd=0.01)),
    (O.SGD(lr=0.2, momentum=0.8, nesterov=True), dict(name="sgd", lr=0.2, momentum=0.8, nesterov=True, wd=0.0)),
    (O.Adam(lr=0.01, weight_decay=0.001), dict(name="adam", lr=0.01, wd=0.001)),
    (O.RMSprop(lr=0.003), dict(name="rmsprop", lr=0.003, wd=0.0)),
]


@pytest.mark.parametrize("opt,ref", OPTIMIZER_CASES, ids=["sgd", "momentum+wd", "nesterov", "adam+wd", "rmsprop"])
def test_optimizer_matches_pytorch_semantics(opt, ref):
    x, y = blobs(40, d=6, seed=1)
    model = MLP([5], optimizer=opt, backend="numpy", seed=2).build(6, 3)
    init = model.get_weights()
    history = model.fit(x, y, epochs=3, batch_size=40, shuffle=False, verbose=0)  # 3 full-batch steps
    expected, losses = _reference_train(init, x.astype(np.float64), y, ref, 3)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(history.history["loss"], losses, rtol=1e-5)
    assert model.optimizer.iterations == 3


def test_schedules():
    steps = np.arange(100)
    cos = O.CosineDecay().rates(0.1, steps, 100, 10)
    assert cos[0] == pytest.approx(0.1) and cos[50] == pytest.approx(0.05) and np.all(np.diff(cos) <= 0)
    step = O.StepDecay(step_size=3, gamma=0.5).rates(0.1, steps, 100, 10)
    assert step[29] == pytest.approx(0.1) and step[30] == pytest.approx(0.05) and step[99] == pytest.approx(0.0125)
    one = O.OneCycle(pct_start=0.3).rates(0.1, steps, 100, 10)
    assert one[0] == pytest.approx(0.1 / 25) and one.max() == pytest.approx(0.1, rel=1e-3)
    assert 28 <= one.argmax() <= 30 and one[-1] == pytest.approx(0.1 / 25 / 1e4, rel=1e-3)
    assert isinstance(O.get_schedule("onecycle"), O.OneCycle) and isinstance(O.get_schedule(None), O.Constant)


def test_schedule_drives_the_learning_rate_per_step(data):
    x, y = data
    model = MLP([8], optimizer="sgd", lr=0.1, schedule="step", backend="numpy")
    model.optimizer.schedule = O.StepDecay(step_size=1, gamma=0.5)
    h = model.fit(x, y, epochs=3, batch_size=100, verbose=0).history
    np.testing.assert_allclose(h["lr"], [0.1, 0.05, 0.025])
    cos = MLP([8], schedule="cosine", lr=0.01, backend="numpy").fit(x, y, epochs=2, batch_size=100, verbose=0)
    np.testing.assert_allclose(cos.history["lr"], [0.01 * 0.5 * (1 + np.cos(np.pi * 2 / 6)), 0.01 * 0.5 * (1 + np.cos(np.pi * 5 / 6))])


# early stopping ---------------------------------------------------------------------------

def _overfitting_problem():
    """Random labels: the training loss falls while the validation loss rises after a few epochs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    return x, y, x[:60] + 0.0, rng.integers(0, 3, 60)


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_restores_best_weights(restore):
    x, y, xv, yv = _overfitting_problem()
    rec = Recorder()
    stop = EarlyStopping("val_loss", patience=2, restore_best_weights=restore)
    model = MLP([64], lr=0.01, backend="numpy")
    history = model.fit(x, y, epochs=40, batch_size=20, validation_data=(xv, yv), callbacks=[stop, rec], verbose=0)
    val = history.history["val_loss"]
    best = int(np.argmin(val))
    assert len(val) < 40 and len(val) == best + 3  # stopped 2 epochs after the best one
    assert stop.best_epoch == best and stop.stopped_epoch == len(val) - 1
    assert "early stopping" in model.stop_reason and history.stop_reason == model.stop_reason
    final = model.get_weights()
    expected = rec.weights[best] if restore else rec.weights[-1]
    for a, b in zip(final, expected):
        np.testing.assert_array_equal(a, b)
    assert model.evaluate(xv, yv)[0] == pytest.approx(val[best] if restore else val[-1])


class _FakeModel:
    stop_training = False
    stop_reason = None

    def _snapshot(self):
        return None


@pytest.mark.parametrize("monitor,values,patience,min_delta,stop_at", [
    ("val_loss", [1.0, 0.9, 0.95, 0.96, 0.5], 2, 0.0, 3),
    ("val_loss", [1.0, 0.99, 0.98, 0.97], 2, 0.05, 2),
    ("val_accuracy", [0.5, 0.6, 0.55, 0.7, 0.69, 0.68], 2, 0.0, 5),
    ("loss", [1.0, 1.1], 0, 0.0, 1),
])
def test_early_stopping_patience_and_min_delta(monitor, values, patience, min_delta, stop_at):
    stop = EarlyStopping(monitor, patience=patience, min_delta=min_delta)
    stop.set_model(_FakeModel())
    stop.on_train_begin({"metrics": [monitor]})
    for epoch, v in enumerate(values):
        stop.on_epoch_end(epoch, {monitor: v})
        if stop.model.stop_training:
            break
    assert stop.stopped_epoch == stop_at


def test_model_checkpoint_saves_best(tmp_path, data):
    x, y = data
    ckpt = ModelCheckpoint(tmp_path / "m-{epoch:02d}.fastnn", monitor="loss", save_best_only=True)
    MLP([8], backend="numpy").fit(x, y, epochs=3, callbacks=[ckpt], verbose=0)
    assert [p.rsplit("/", 1)[-1] for p in ckpt.saved] == ["m-01.fastnn", "m-02.fastnn", "m-03.fastnn"]
    assert all((tmp_path / f"m-0{i}.fastnn").is_file() for i in (1, 2, 3))


# inference -------------------------------------------------------------------------------

def test_predict_proba_evaluate_against_manual(data):
    x, y = data
    model = MLP([16], backend="numpy")
    model.fit(x, y, epochs=2, verbose=0)
    proba = model.predict_proba(x, batch_size=7)
    assert proba.shape == (300, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(x), proba.argmax(1))
    assert model.predict(x).dtype == np.int64
    loss, acc = model.evaluate(x, y)
    assert loss == pytest.approx(-np.log(proba[np.arange(300), y].astype(np.float64)).mean(), rel=1e-4)
    assert acc == pytest.approx(np.mean(proba.argmax(1) == y))
    assert model.evaluate(x, y, return_dict=True) == {"loss": loss, "accuracy": acc}
    # the result does not depend on the inference batch size beyond float32 rounding: the NumPy
    # backend's BLAS picks its blocking by the number of rows (1.5e-6 apart seen with OpenBLAS Haswell kernels)
    np.testing.assert_allclose(model.predict_proba(x, batch_size=1024), proba, rtol=1e-5)


def _image_problem(n=120, side=8, seed=0):
    """Two classes of 8x8 images: a bright bar in the top or the bottom half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.random((n, side, side)).astype(np.float32) * 0.2
    for i, label in enumerate(y):
        rows = slice(1, 3) if label == 0 else slice(5, 7)
        x[i, rows, 1:7] = 1.0
    return x.reshape(n, side * side), y.astype(np.int64)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_test_time_augmentation_averages_augmented_views(backend):
    from fastnn.backends.augment import augment_rows_numpy
    from fastnn.model import TTA_AUGMENT, augment_vector

    x, y = _image_problem()
    model = MLP([16], backend=backend, seed=1)
    model.fit(x, y, epochs=3, verbose=0)
    plain = model.predict_proba(x)
    np.testing.assert_array_equal(model.predict_proba(x, tta=0), plain)
    tta = model.predict_proba(x, tta=3, seed=5)
    assert tta.shape == plain.shape and tta.dtype == np.float32
    np.testing.assert_allclose(tta.sum(1), 1, rtol=1e-5)
    # independent reference: the NumPy augmentation of each view, classified one view at a time
    aug = augment_vector(TTA_AUGMENT)
    views = [x] + [np.empty_like(x) for _ in range(3)]
    for k in range(3):
        augment_rows_numpy(x, np.arange(len(x)), 8, 8, aug, 5, k, views[k + 1])
    assert not np.array_equal(views[1], x) and not np.array_equal(views[1], views[2])
    reference = np.mean([model.predict_proba(v).astype(np.float64) for v in views], axis=0)
    np.testing.assert_allclose(tta, reference, atol=2e-6)
    np.testing.assert_array_equal(model.predict_proba(x, tta=3, seed=5), tta)  # seeded
    assert not np.array_equal(model.predict_proba(x, tta=3, seed=6), tta)
    np.testing.assert_array_equal(model.predict(x, tta=3, seed=5), tta.argmax(1))
    loss, acc = model.evaluate(x, y, tta=3, seed=5)
    assert acc == pytest.approx(np.mean(tta.argmax(1) == y))
    assert loss == pytest.approx(-np.log(tta[np.arange(len(y)), y].astype(np.float64)).mean(), rel=1e-4)
    custom = model.predict_proba(x, tta=2, tta_augment={"shift": 2})
    assert not np.allclose(custom, model.predict_proba(x, tta=2))


def test_test_time_augmentation_bad_input_is_named():
    x, y = blobs(60)  # 10 features: not an image
    model = MLP([8], backend="numpy")
    model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="tta_augment needs image rows, but 10 features are not a square image"):
        model.predict_proba(x, tta=2)
    with pytest.raises(ValueError, match="tta must be"):
        model.predict(x, tta=-1)
    xi, yi = _image_problem(40)
    model = MLP([8], backend="numpy")
    model.fit(xi, yi, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="tta_augment must turn on at least one transform"):
        model.predict_proba(xi, tta=2, tta_augment={"shift": 0})
    with pytest.raises(ValueError, match="unknown keys"):
        model.evaluate(xi, yi, tta=2, tta_augment={"flip": 1})


def test_fit_prepares_byte_inputs_once_and_they_change_nothing(monkeypatch):
    from fastnn.backends import numba_jit

    x, y = _image_problem(200)
    x = (np.rint(x * 255) / np.float32(255)).astype(np.float32)  # 8-bit images
    calls = []
    real = numba_jit.prepare_inputs

    def spy(data):
        calls.append(real(data))
        return calls[-1]

    weights = []
    for prepare in (spy, lambda data: None):
        monkeypatch.setattr(numba_jit, "prepare_inputs", prepare)
        model = MLP([16], optimizer="sgd", lr=0.1, seed=2)
        model.fit(x, y, epochs=3, batch_size=32, verbose=0)
        weights.append(model.get_weights())
    assert len(calls) == 1 and calls[0] is not None  # once per fit, and the data were byte-valued
    assert all(np.array_equal(a, b) for a, b in zip(*weights))
    calls.clear()
    monkeypatch.setattr(numba_jit, "prepare_inputs", spy)
    MLP([16], augment={"shift": 1}).fit(x, y, epochs=1, verbose=0)
    assert calls == []  # augmented batches are listed from their copies


def test_accepts_uint8_and_float64_inputs():
    x, y = blobs(100)
    xu8 = np.clip(x * 10 + 128, 0, 255).astype(np.uint8)
    model = MLP([8], backend="numpy")
    with pytest.warns(UserWarning, match="raw 0-255 pixel values"):  # accepted, with advice to scale
        model.fit(xu8, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.predict(xu8), model.predict(xu8.astype(np.float64)))


def test_learns_blobs_to_high_accuracy(data):
    x, y = data
    model = MLP([32, 16], backend="numpy", lr=0.01)
    model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert model.evaluate(x, y)[1] > 0.95


# backends ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    dict(optimizer="adam", dropout=0.2),
    dict(optimizer="sgd", lr=0.05, momentum=0.9, batch_norm=True, schedule="cosine"),
], ids=["adam-dropout", "sgd-batchnorm"])
def test_numba_backend_equals_numpy_through_the_api(kwargs):
    pytest.importorskip("numba")
    x, y = blobs(200, d=12, k=4, seed=3)
    histories, weights, probas = [], [], []
    for backend in ("numpy", "numba"):
        model = MLP([16, 8], backend=backend, seed=4, **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Numba's caching notices
            h = model.fit(x, y, epochs=3, batch_size=32, validation_split=0.2, verbose=0)
            probas.append(model.predict_proba(x))
        histories.append(h.history)
        weights.append(model.get_weights())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(histories[0][key], histories[1][key], rtol=2e-4, atol=1e-5, err_msg=key)
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-5)
    np.testing.assert_allclose(probas[0], probas[1], atol=1e-4)
