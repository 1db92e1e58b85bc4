"""float64 models (``dtype="float64"``, NumPy backend): gradients, agreement with float32,
save/load, export, and the errors that say where float64 cannot go (the Numba backend)."""

import importlib.util
import json
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import MLP, BatchNorm, Dense, Dropout, Sequential, Tanh
from fastnn.backends import get_backend
from fastnn.io import FLOAT32_FORMAT_VERSION, FORMAT_VERSION, ModelFormatError
from fastnn.optimizers import SGD
from gradcheck import numeric

NUMBA_FLOAT64 = "dtype='float64' needs backend='numpy'.*got backend='numba'; pass backend='numpy'"


def _data(n=240, d=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    return x, (x[:, :3].sum(1) * 1.3).astype(np.int64) % k


def _float64_model(**kwargs):
    return MLP([16, 8], activation="tanh", backend="numpy", dtype="float64", seed=3, **kwargs)


def test_every_buffer_and_output_is_float64():
    x, y = _data()
    model = _float64_model(batch_norm=True, dropout=0.1)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, sample_weight=np.linspace(0.5, 2, len(x)))
    net, opt = model.net, model.optimizer.buffers
    assert {a.dtype for a in (net.params, net.grads, net.state, opt.slots)} == {np.dtype(np.float64)}
    assert {w.dtype for w in model.get_weights()} == {np.dtype(np.float64)}
    for out in (model.predict_proba(x), model.predict_log_proba(x)):
        assert out.dtype == np.float64
    np.testing.assert_allclose(model.predict_proba(x).sum(1), 1.0, rtol=0, atol=1e-14)
    assert np.isfinite(model.evaluate(x, y)[0])


@pytest.mark.parametrize("weighted", [False, True])
def test_float64_gradients_match_finite_differences(weighted):
    """The whole network's float64 gradient (one full-batch step of the NumPy backend's
    train_steps at learning rate 0) against central differences of evaluate's float64 loss."""
    x, y = _data(n=20, d=6, k=3)
    w = np.linspace(0.2, 3.0, len(x)) if weighted else None
    model = Sequential([Dense(5, "tanh"), Dense(4, "sigmoid"), Dense(4), Tanh(), Dense(3)], optimizer=SGD(lr=0.1),
                       backend="numpy", dtype="float64", seed=2)
    model.build(x.shape[1], 3)
    loss, correct = np.zeros(1), np.zeros(1, np.int64)
    steps = get_backend("numpy").train_steps(
        x, y, np.arange(len(x)), 0, 1, len(x), model.net, model.optimizer.buffers, np.zeros(1), 0, 0.0, model._aug(),
        loss, correct, **({} if w is None else {"sample_weight": w}))
    assert steps == 1 and model.net.grads.dtype == np.float64
    assert loss[0] == pytest.approx(model.evaluate(x, y, sample_weight=w)[0], rel=1e-15)
    expected = numeric(lambda: model.evaluate(x, y, sample_weight=w)[0], model.net.params)
    np.testing.assert_allclose(model.net.grads, expected, rtol=1e-6, atol=1e-9)


def test_float64_fit_equals_float32_fit_to_float32_rounding():
    x, y = _data()
    runs = {}
    for dtype, backend in (("float32", "numba"), ("float32", "numpy"), ("float64", "numpy")):
        model = MLP([16, 8], activation="tanh", backend=backend, dtype=dtype, seed=3)
        history = model.fit(x, y, epochs=5, batch_size=32, verbose=0)
        runs[dtype, backend] = model, history.history["loss"]
    model64, loss64 = runs["float64", "numpy"]
    for key in (("float32", "numba"), ("float32", "numpy")):
        model32, loss32 = runs[key]
        for w32, w64 in zip(model32.get_weights(), model64.get_weights()):
            assert w32.dtype == np.float32 and w64.dtype == np.float64
            np.testing.assert_allclose(w32, w64, rtol=0, atol=2e-6, err_msg=str(key))  # measured: 2e-7
            assert not np.array_equal(w32, w64)  # really trained in another precision
        np.testing.assert_allclose(loss32, loss64, rtol=1e-6)
        np.testing.assert_allclose(model32.predict_proba(x), model64.predict_proba(x), rtol=0, atol=2e-6)


def test_the_float32_default_is_unchanged():
    x, y = _data()
    default, explicit = MLP([16], seed=1), MLP([16], seed=1, dtype=np.float32)
    assert default.dtype == explicit.dtype == "float32" and "dtype" not in default.get_config()
    for model in (default, explicit):
        model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    for a, b in zip(default.get_weights(), explicit.get_weights()):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value", [np.float64, np.dtype("float64"), "float64", "f8"])
def test_dtype_accepts_numpys_spellings(value):
    model = MLP([4], backend="numpy", dtype=value)
    assert model.dtype == "float64" and model.get_config()["dtype"] == "float64"


@pytest.mark.parametrize("value", ["float16", np.int64, None, 64, "double precision", np.dtype(">f8")])
def test_other_dtypes_are_refused_naming_the_choices(value):
    with pytest.raises(ValueError, match=r"dtype must be 'float32' or 'float64' \(or np.float32, np.float64\), got"):
        MLP([4], backend="numpy", dtype=value)


def test_numba_with_float64_is_an_error_that_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=NUMBA_FLOAT64):
        MLP([4], dtype="float64")  # backend='numba' is the model's default
    with pytest.raises(ValueError, match=NUMBA_FLOAT64):
        Sequential([Dense(3)], backend="numba", dtype=np.float64)
    x, y = _data(n=40)
    model = _float64_model()
    model.fit(x, y, epochs=1, verbose=0)
    model.backend = "numba"  # switched after construction: refused before any kernel sees float64
    with pytest.raises(ValueError, match=NUMBA_FLOAT64):
        model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=NUMBA_FLOAT64):
        model.predict(x)
    model.backend = "numpy"
    path = model.save(tmp_path / "m.fastnn")
    with pytest.raises(ValueError, match=NUMBA_FLOAT64) as info:  # the caller's argument, not the file's fault
        fastnn.load(path, backend="numba")
    assert not isinstance(info.value, ModelFormatError)


def test_save_load_round_trip_keeps_float64_and_resumes_bit_for_bit(tmp_path):
    x, y = _data()
    fit = dict(batch_size=32, verbose=0, seed=5)
    whole = _float64_model(dropout=0.2)
    whole.fit(x, y, epochs=4, **fit)
    first = _float64_model(dropout=0.2)
    first.fit(x, y, epochs=2, **fit)
    path = first.save(tmp_path / "m.fastnn")
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    assert config["format_version"] == FORMAT_VERSION == 3 and config["config"]["dtype"] == "float64"
    loaded = fastnn.load(path)
    assert loaded.dtype == "float64" and loaded.backend == "numpy"
    assert loaded.optimizer.buffers.slots.dtype == np.float64
    for a, b in zip(first.get_weights(), loaded.get_weights()):
        assert b.dtype == np.float64
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict_proba(x), first.predict_proba(x))
    loaded.fit(x, y, epochs=4, initial_epoch=2, **fit)
    for a, b in zip(whole.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_float32_files_stay_version_2_and_load_as_float32(tmp_path):
    x, y = _data(n=40)
    model = MLP([4], backend="numpy", seed=1)
    model.fit(x, y, epochs=1, verbose=0)
    path = model.save(tmp_path / "m.fastnn")
    config, arrays = fastnn.io.read_model_file(path)
    assert config["format_version"] == FLOAT32_FORMAT_VERSION == 2 and "dtype" not in config["config"]
    assert all(a.dtype in (np.float32, np.int64) for a in arrays.values())
    assert fastnn.load(path).dtype == "float32"


def _rewritten(src, dst, edit=None, arrays=None):
    """A copy of model file ``src`` with its config edited and/or its arrays cast."""
    import io

    with zipfile.ZipFile(src) as zf:
        config, weights = json.loads(zf.read("config.json")), zf.read("weights.npz")
    if edit:
        edit(config)
    if arrays:
        with np.load(io.BytesIO(weights)) as npz:
            cast = {name: npz[name].astype(arrays) if npz[name].dtype.kind == "f" else npz[name] for name in npz.files}
        buf = io.BytesIO()
        np.savez(buf, **cast)
        weights = buf.getvalue()
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("weights.npz", weights)
    return dst


@pytest.mark.parametrize("case,message", [
    ("float32 arrays, config says float64", r"weight layers.0.W must have shape \(12, 4\) and dtype float64, got"),
    ("float64 arrays, config says float32", r"weight layers.0.W must have shape \(12, 4\) and dtype float32, got"),
    ("dtype float16", "invalid model config: ValueError: dtype must be 'float32' or 'float64'"),
    ("dtype a list", "invalid model config: ValueError: dtype must be 'float32' or 'float64'"),
    ("float64 on numba", "invalid model config: ValueError: dtype='float64' needs backend='numpy'"),
])
def test_files_whose_dtype_does_not_add_up_are_refused(tmp_path, case, message):
    x, y = _data(n=40)
    model32, model64 = MLP([4], backend="numpy", seed=1), MLP([4], backend="numpy", dtype="float64", seed=1)
    for model in (model32, model64):
        model.fit(x, y, epochs=1, verbose=0)
    f32, f64 = model32.save(tmp_path / "32.fastnn"), model64.save(tmp_path / "64.fastnn")
    bad = tmp_path / "bad.fastnn"

    def set_dtype(value):
        return lambda c: c["config"].update(dtype=value)

    {"float32 arrays, config says float64": lambda: _rewritten(f32, bad, set_dtype("float64")),
     "float64 arrays, config says float32": lambda: _rewritten(f64, bad, lambda c: c["config"].pop("dtype")),
     "dtype float16": lambda: _rewritten(f32, bad, set_dtype("float16"), arrays=np.float16),
     "dtype a list": lambda: _rewritten(f32, bad, set_dtype(["float64"])),
     "float64 on numba": lambda: _rewritten(f64, bad, lambda c: c["config"].update(backend="numba")),
     }[case]()
    with pytest.raises(ModelFormatError, match=message):
        fastnn.load(bad)


def test_onnx_export_of_a_float64_model_is_float64_in_onnxruntime(tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'fastnn[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'fastnn[onnx]')")
    x, y = _data()
    model = Sequential([Dense(16), BatchNorm(), Tanh(), Dropout(0.2), Dense(8, "sigmoid"), Dense(4)],
                       backend="numpy", dtype="float64", seed=1)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    session = ort.InferenceSession(str(model.to_onnx(tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.type == out.type == "tensor(double)"
    got = session.run(None, {"input": x})[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, model.predict_proba(x), rtol=0, atol=1e-12)


def test_a_data_set_is_prepared_once_per_dtype():
    from fastnn import prepared

    x, y = _data()
    x32 = x.astype(np.float32)  # the same array, trained on by a float32 and a float64 model
    m32, m64 = MLP([8], backend="numpy", seed=1), MLP([8], backend="numpy", dtype="float64", seed=1)
    before = prepared.counts["check"]
    for _ in range(2):
        m32.fit(x32, y, epochs=1, verbose=0)
        m64.fit(x32, y, epochs=1, verbose=0)
    assert prepared.counts["check"] - before == 2
    assert m64.net.params.dtype == np.float64 and m32.net.params.dtype == np.float32


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                    reason="scikit-learn is not installed (pip install 'fastnn[sklearn]')")
class TestEstimator:
    def _fit(self, est, x, y, **kwargs):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return est.fit(x, y, **kwargs)

    def test_dtype_is_a_parameter_that_clone_and_set_params_keep(self):
        from sklearn.base import clone

        from fastnn import MLPClassifier

        est = MLPClassifier(dtype="float64")
        assert est.get_params()["dtype"] == "float64" and est.get_params()["backend"] == "auto"
        assert clone(est).get_params()["dtype"] == "float64"
        assert MLPClassifier().get_params()["dtype"] == "float32"
        assert clone(MLPClassifier(dtype=np.float64)).dtype is np.float64  # kept as given, as scikit-learn asks
        assert est.set_params(dtype="float32").dtype == "float32"
        assert repr(MLPClassifier(dtype="float64")) == "MLPClassifier(dtype='float64')"

    def test_auto_backend_follows_the_dtype_and_an_explicit_numba_is_an_error(self):
        from fastnn import MLPClassifier

        x, y = _data()
        kw = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
        est64 = self._fit(MLPClassifier(dtype="float64", **kw), x, y)
        est32 = self._fit(MLPClassifier(**kw), x, y)
        assert (est64.model_.backend, est64.model_.dtype) == ("numpy", "float64")
        assert (est32.model_.backend, est32.model_.dtype) == ("numba", "float32")
        assert est64.coefs_[0].dtype == est64.intercepts_[0].dtype == est64.predict_proba(x).dtype == np.float64
        assert est32.coefs_[0].dtype == est32.predict_proba(x).dtype == np.float32
        np.testing.assert_allclose(est64.predict_proba(x), est32.predict_proba(x), rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match=NUMBA_FLOAT64):
            MLPClassifier(backend="numba", dtype="float64", **kw).fit(x, y)
        with pytest.raises(ValueError, match=r"dtype must be 'float32' or 'float64'"):
            MLPClassifier(dtype="float16", **kw).fit(x, y)

    def test_continuing_keeps_the_dtype(self):
        from fastnn import MLPClassifier

        x, y = _data()
        est = self._fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, warm_start=True, dtype="float64"), x, y)
        est.set_params(dtype="float32")
        with pytest.raises(ValueError, match="differs from the 'float64' the estimator was fitted in.*warm_start=Fa"):
            est.fit(x, y)
        assert self._fit(est.set_params(warm_start=False), x, y).model_.dtype == "float32"

    def test_weighted_rows_equal_repeated_rows_to_float64_rounding(self):
        from fastnn import MLPClassifier

        x, y = _data(n=30)
        w = np.random.default_rng(1).integers(1, 4, len(x))
        w[:3] = 0  # rows left out, their classes still present
        kw = dict(hidden_layer_sizes=(8,), max_iter=40, random_state=0, dtype="float64")  # one batch of all rows
        weighted = self._fit(MLPClassifier(**kw), x, y, sample_weight=w)
        repeated = self._fit(MLPClassifier(**kw), x.repeat(w, axis=0), y.repeat(w))
        assert list(weighted.classes_) == list(repeated.classes_) == [0, 1, 2, 3]
        np.testing.assert_allclose(weighted.predict_proba(x), repeated.predict_proba(x), rtol=1e-10, atol=1e-12)


def test_the_memory_check_counts_eight_bytes_a_number(monkeypatch):
    monkeypatch.setattr(fastnn.model, "physical_memory", lambda: 2**30)  # the same on any machine
    # 39.75 M parameters, 4 numbers each (weights, gradients, two optimizer slots): 0.59 GiB in float32
    model = MLP([50000], backend="numpy", dtype="float64")
    with pytest.raises(ValueError, match=r"needs about 1.18 GiB of memory, more than this machine's 1 GiB"):
        model.build(784, 10)
    assert not model.built
