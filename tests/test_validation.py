"""Every validation error path of the public API: each raises ValueError naming the
parameter, the allowed values and the value received."""

import re
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import MLP, Sequential, layers as L, optimizers as O
from fastnn.callbacks import EarlyStopping, ModelCheckpoint
from fastnn.model import NotFittedError
from fastnn.validation import Interval, Options, Sizes, check_value, check_x, check_y


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    return x, y


def built(backend="numpy"):
    return MLP([4], backend=backend).build(5, 3)


# constraint descriptions --------------------------------------------------------

def test_interval_descriptions():
    assert Interval("int", 1).describe() == "an integer >= 1"
    assert Interval("real", 0, closed="neither").describe() == "a number > 0"
    assert Interval("real", 0, 1, closed="left").describe() == "a number in [0, 1)"
    assert Interval("int", 1, 8).describe() == "an integer in [1, 8]"


def test_check_value_message_names_everything():
    with pytest.raises(ValueError, match=re.escape("batch_size must be an integer >= 1, got 0")):
        check_value("batch_size", 0, Interval("int", 1))
    with pytest.raises(ValueError, match=re.escape("mode must be one of 'a', 'b', got 'c'")):
        check_value("mode", "c", Options("a", "b"))


@pytest.mark.parametrize("value", [True, 1.0, "3", None, np.nan])
def test_integer_interval_rejects_non_integers(value):
    assert not Interval("int", 1).is_satisfied_by(value)


def test_integer_interval_accepts_numpy_integers():
    assert Interval("int", 1).is_satisfied_by(np.int32(3))
    assert Interval("real", 0).is_satisfied_by(np.float32(0.5))
    assert not Interval("real", 0).is_satisfied_by(np.inf)


def test_options_does_not_confuse_bool_with_int():
    assert Options(0, 1, 2).is_satisfied_by(1)
    assert not Options(0, 1, 2).is_satisfied_by(True)
    assert not Options("a").is_satisfied_by(np.array(["a"]))


def test_sizes():
    assert Sizes().is_satisfied_by([3, 4])
    assert not Sizes().is_satisfied_by([])
    assert not Sizes().is_satisfied_by("12")
    assert not Sizes().is_satisfied_by([3, 0])


# constructor parameters ------------------------------------------------------------

BAD_MLP = [
    (dict(layers=[128, 0]), "layers must be a list of integers >= 1", "[128, 0]"),
    (dict(layers="128"), "layers must be a list of integers >= 1", "'128'"),
    (dict(layers=[1.5]), "layers must be a list of integers >= 1", "[1.5]"),
    (dict(activation="gelu"), "activation must be one of 'relu', 'sigmoid', 'tanh', 'linear'", "'gelu'"),
    (dict(optimizer="adagrad"), "optimizer must be one of 'sgd', 'adam', 'rmsprop' or a fastnn.optimizers.Optimizer object", "'adagrad'"),
    (dict(lr=0), "lr must be a number > 0 or None", "0"),
    (dict(lr=-0.1), "lr must be a number > 0 or None", "-0.1"),
    (dict(lr=float("nan")), "lr must be a number > 0 or None", "nan"),
    (dict(weight_decay=-1e-4), "weight_decay must be a number >= 0", "-0.0001"),
    (dict(momentum=1.0), "momentum must be a number in [0, 1)", "1.0"),
    (dict(dropout=1.0), "dropout must be a number in [0, 1)", "1.0"),
    (dict(dropout=-0.1), "dropout must be a number in [0, 1)", "-0.1"),
    (dict(batch_norm="yes"), "batch_norm must be True or False", "'yes'"),
    (dict(schedule="linear"), "schedule must be one of 'none', 'step', 'cosine', 'onecycle' or None or a fastnn.optimizers.Schedule object", "'linear'"),
    (dict(label_smoothing=1.0), "label_smoothing must be a number in [0, 1)", "1.0"),
    (dict(backend="torch"), "backend must be one of 'numba', 'numpy'", "'torch'"),
    (dict(seed=-1), "seed must be an integer >= 0", "-1"),
    (dict(seed=1.5), "seed must be an integer >= 0", "1.5"),
    (dict(n_classes=1), "n_classes must be an integer >= 2 or None", "1"),
]


@pytest.mark.parametrize("kwargs,allowed,got", BAD_MLP, ids=[next(iter(k)) + "=" + repr(next(iter(k.values()))) for k, _, _ in BAD_MLP])
def test_mlp_constructor_errors(kwargs, allowed, got):
    with pytest.raises(ValueError) as err:
        MLP(**kwargs)
    assert str(err.value) == f"{allowed}, got {got}"


BAD_OBJECTS = [
    (lambda: L.Dense(0), "units must be an integer >= 1, got 0"),
    (lambda: L.Dense(3, activation="gelu"), "activation must be one of"),
    (lambda: L.Dropout(1.0), "rate must be a number in [0, 1), got 1.0"),
    (lambda: L.BatchNorm(momentum=1.5), "momentum must be a number in [0, 1], got 1.5"),
    (lambda: L.BatchNorm(eps=0), "eps must be a number > 0, got 0"),
    (lambda: O.SGD(lr=0), "lr must be a number > 0, got 0"),
    (lambda: O.SGD(momentum=-0.5), "momentum must be a number in [0, 1), got -0.5"),
    (lambda: O.SGD(nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda: O.SGD(nesterov=1, momentum=0.9), "nesterov must be True or False, got 1"),
    (lambda: O.Adam(beta1=1.0), "beta1 must be a number in [0, 1), got 1.0"),
    (lambda: O.Adam(eps=0.0), "eps must be a number > 0, got 0.0"),
    (lambda: O.RMSprop(alpha=1.0), "alpha must be a number in [0, 1), got 1.0"),
    (lambda: O.Adam(weight_decay=-1), "weight_decay must be a number >= 0, got -1"),
    (lambda: O.StepDecay(step_size=0), "step_size must be an integer >= 1, got 0"),
    (lambda: O.OneCycle(pct_start=1.0), "pct_start must be a number in (0, 1), got 1.0"),
    (lambda: O.CosineDecay(final_fraction=2), "final_fraction must be a number in [0, 1], got 2"),
    (lambda: EarlyStopping(patience=-1), "patience must be an integer >= 0, got -1"),
    (lambda: EarlyStopping(mode="up"), "mode must be one of 'auto', 'min', 'max', got 'up'"),
    (lambda: ModelCheckpoint("x", save_best_only="no"), "save_best_only must be True or False"),
    (lambda: Sequential([L.Dense(3), "relu"]), "layers[1] must be a fastnn layer"),
    (lambda: MLP(optimizer=object()), "optimizer must be one of 'sgd', 'adam', 'rmsprop' or a fastnn.optimizers.Optimizer object"),
]


@pytest.mark.parametrize("make,message", BAD_OBJECTS, ids=range(len(BAD_OBJECTS)))
def test_layer_optimizer_callback_errors(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make()


def test_build_errors():
    with pytest.raises(ValueError, match=re.escape("n_features must be an integer >= 1, got 0")):
        MLP([4]).build(0, 3)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2 to build an MLP, got None"):
        MLP([4]).build(5)
    with pytest.raises(ValueError, match=re.escape("n_classes must match the last layer's width (3), got 4")):
        Sequential([L.Dense(3)]).build(5, 4)
    with pytest.raises(ValueError, match="at least 2 outputs"):
        Sequential([L.Dense(1)]).build(5)
    with pytest.raises(ValueError, match="needs at least one layer"):
        Sequential([]).build(5)
    with pytest.raises(ValueError, match=re.escape("n_classes must be 4 (set in the constructor), got 3")):
        MLP([4], n_classes=4).build(5, 3)


# fit parameters ----------------------------------------------------------------------

BAD_FIT = [
    (dict(epochs=0), "epochs must be an integer >= 1, got 0"),
    (dict(epochs=2.0), "epochs must be an integer >= 1, got 2.0"),
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(batch_size=-8), "batch_size must be an integer >= 1, got -8"),
    (dict(validation_split=1.0), "validation_split must be a number in [0, 1), got 1.0"),
    (dict(validation_split=0.001), "validation_split must leave at least one sample on each side"),
    (dict(shuffle="yes"), "shuffle must be True or False, got 'yes'"),
    (dict(seed=-3), "seed must be an integer >= 0 or None, got -3"),
    (dict(verbose=3), "verbose must be one of 0, 1, 2, got 3"),
    (dict(callbacks=["early"]), "callbacks[0] must be a fastnn.callbacks.Callback object, got 'early'"),
    (dict(validation_data=np.zeros((4, 5))), "validation_data must be a tuple (x_val, y_val)"),
    (dict(callbacks=[EarlyStopping("val_loss")]), "EarlyStopping monitor must be one of ['accuracy', 'loss'], got 'val_loss' (pass validation_split"),
    (dict(callbacks=[ModelCheckpoint("m", save_best_only=True)]), "ModelCheckpoint monitor must be one of"),
]


@pytest.mark.parametrize("kwargs,message", BAD_FIT, ids=[next(iter(k)) for k, _ in BAD_FIT])
def test_fit_parameter_errors(data, kwargs, message):
    x, y = data
    with pytest.raises(ValueError, match=re.escape(message)):
        MLP([4], backend="numpy").fit(x, y, **{"epochs": 1, "verbose": 0, **kwargs})


# arrays ---------------------------------------------------------------------------------

def _nan_x(x):
    x = x.copy()
    x[3, 2] = np.nan
    return x


def _inf_x(x):
    x = x.copy()
    x[0, 0] = np.inf
    return x


BAD_ARRAYS = [
    (lambda x, y: (x[:, 0], y), "x must be 2-D with shape (n_samples, n_features), got shape (64,)"),
    (lambda x, y: (x.reshape(64, 5, 1), y), "got shape (64, 5, 1); flatten images first"),
    (lambda x, y: (x.astype(str), y), "x must have a real numeric dtype"),
    (lambda x, y: (x > 0, y), "x must have a real numeric dtype (float32, float64, uint8, ...), got dtype bool"),
    (lambda x, y: (x.astype(np.complex64), y), "got dtype complex64"),
    (lambda x, y: (x[:0], y[:0]), "x must have at least one sample and one feature, got shape (0, 5)"),
    (lambda x, y: (_nan_x(x), y), "x must contain only finite values, got 1 NaN or inf entries"),
    (lambda x, y: (_inf_x(x), y), "x must contain only finite values, got 1 NaN or inf entries"),
    (lambda x, y: (x, y[:-1]), "y must have one label per sample (64), got 63"),
    (lambda x, y: (x, y.reshape(8, 8)), "y must be 1-D class ids of shape (n_samples,), got shape (8, 8)"),
    (lambda x, y: (x, y - 1), "y labels must be in >= 0, got values from -1 to 1"),
    (lambda x, y: (x, y + 0.5), "y must hold integer class ids, got non-integer values such as 1.5"),
    (lambda x, y: (x, y.astype(str)), "y must hold integer class ids, got dtype <U"),
]


@pytest.mark.parametrize("make,message", BAD_ARRAYS, ids=range(len(BAD_ARRAYS)))
def test_fit_array_errors(data, make, message):
    x, y = make(*data)
    with pytest.raises(ValueError, match=re.escape(message)):
        MLP([4], backend="numpy").fit(x, y, epochs=1, verbose=0)


def test_errors_after_build_check_width_and_label_range(data):
    x, y = data
    model = built()
    with pytest.raises(ValueError, match=re.escape("x must have 5 features (the model was built for 5), got 4")):
        model.predict(x[:, :4])
    with pytest.raises(ValueError, match=re.escape("y labels must be in [0, 2], got values from 0 to 3")):
        model.fit(x, np.where(y == 2, 3, y), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=re.escape("validation_data x must have 5 features")):
        model.fit(x, y, validation_data=(x[:, :3], y), verbose=0)
    with pytest.raises(ValueError, match=re.escape("validation_data y labels must be in [0, 2]")):
        model.fit(x, y, validation_data=(x, y + 5), verbose=0)
    with pytest.raises(ValueError, match=re.escape("batch_size must be an integer >= 1, got 0")):
        model.predict(x, batch_size=0)
    with pytest.raises(ValueError, match=re.escape("y must have one label per sample (64), got 10")):
        model.evaluate(x, y[:10])


def test_inputs_are_converted_once(data):
    x, y = data
    x64 = check_x(x.astype(np.float64)[:, ::1])
    assert x64.dtype == np.float32 and x64.flags.c_contiguous
    xu8 = check_x((x > 0).astype(np.uint8))
    assert xu8.dtype == np.float32
    assert check_x(np.asfortranarray(x)).flags.c_contiguous
    assert check_y(y.astype(np.float64)).dtype == np.int64
    assert check_y(y.reshape(-1, 1)).shape == (64,)


def test_not_fitted_errors(data):
    x, _ = data
    model = MLP([4])
    for call in (lambda: model.predict(x), lambda: model.get_weights(), lambda: model.summary(),
                 lambda: model.save("never.fastnn"), lambda: model.set_weights([])):
        with pytest.raises(NotFittedError, match="call fit"):
            call()
    assert issubclass(NotFittedError, ValueError)


def test_set_weights_errors():
    model = built()
    w = model.get_weights()
    with pytest.raises(ValueError, match=re.escape("weights must be a list of 4 arrays (layers.0.W, layers.0.b, layers.1.W, layers.1.b), got 3")):
        model.set_weights(w[:3])
    with pytest.raises(ValueError, match=re.escape("weight layers.0.W must have shape (5, 4), got (4, 5)")):
        model.set_weights([w[0].T] + w[1:])
    bad = [a.copy() for a in w]
    bad[1][0] = np.nan
    with pytest.raises(ValueError, match="weight layers.0.b must be finite"):
        model.set_weights(bad)
    np.testing.assert_array_equal(model.get_weights()[1], w[1])  # nothing was half-written


def test_non_finite_loss_stops_with_hint_and_keeps_finite_weights(data):
    x, y = data
    model = MLP([16], optimizer="sgd", lr=1e6, backend="numpy")
    with pytest.warns(RuntimeWarning, match="Lower the learning rate"):
        history = model.fit(x * 100, y, epochs=5, batch_size=8, verbose=0)
    assert model.stop_reason.startswith("exploding loss")  # caught before it turns non-finite
    assert history.stop_reason == model.stop_reason
    assert len(history.epoch) < 5 or np.isnan(history.history["loss"][-1])
    assert np.isnan(history.history["loss"][-1])
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert np.isfinite(model.predict_proba(x)).all()


def test_dataset_error_is_a_value_error(tmp_path):
    with pytest.raises(fastnn.DatasetError):
        fastnn.load_dataset(tmp_path / "nothing-here")
    assert issubclass(fastnn.DatasetError, ValueError)


def test_no_warning_for_valid_input(data):
    x, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MLP([4], backend="numpy").fit(x, y, epochs=1, verbose=0)
