"""Saving and loading: round trips, atomic writes, format checks, no pickle."""

import io
import json
import os
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import MLP, Sequential, layers as L, optimizers as O
from fastnn.io import FLOAT32_FORMAT_VERSION, FORMAT_VERSION, ModelFormatError, read_model_file


def blobs(n=200, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(k, d)) * 3
    y = rng.integers(0, k, n)
    return (c[y] + rng.normal(size=(n, d))).astype(np.float32), y


@pytest.fixture(scope="module")
def trained_models():
    x, y = blobs()
    mlp = MLP([16, 8], dropout=0.1, batch_norm=True, optimizer=O.SGD(lr=0.05, momentum=0.9, schedule="cosine"),
              label_smoothing=0.1, backend="numpy", seed=3)
    mlp.fit(x, y, epochs=2, batch_size=32, verbose=0)
    seq = Sequential([L.Dense(12), L.Tanh(), L.Dropout(0.2), L.Dense(6, activation="sigmoid"), L.BatchNorm(0.2, 1e-3),
                      L.Dense(3)], optimizer="rmsprop", backend="numpy", seed=1)
    seq.fit(x, y, epochs=2, batch_size=32, verbose=0)
    return x, y, {"mlp": mlp, "sequential": seq}


@pytest.mark.parametrize("kind", ["mlp", "sequential"])
def test_round_trip_gives_identical_predictions(tmp_path, trained_models, kind):
    x, y, models = trained_models
    model = models[kind]
    path = model.save(tmp_path / "model.fastnn")
    loaded = fastnn.load(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    assert loaded.get_weight_names() == model.get_weight_names()
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y) == model.evaluate(x, y)
    # optimizer state travels too, so training resumes where it left off
    assert loaded.optimizer.iterations == model.optimizer.iterations > 0
    np.testing.assert_array_equal(loaded.optimizer.buffers.slots, model.optimizer.buffers.slots)
    assert repr(loaded.optimizer) == repr(model.optimizer)


def test_resumed_training_matches_uninterrupted(tmp_path):
    x, y = blobs()
    a = MLP([8], optimizer="adam", backend="numpy", seed=2)
    a.fit(x, y, epochs=1, batch_size=50, shuffle=False, verbose=0)
    b = fastnn.load(a.save(tmp_path / "a.fastnn"))
    a.fit(x, y, epochs=1, batch_size=50, shuffle=False, verbose=0)
    b.fit(x, y, epochs=1, batch_size=50, shuffle=False, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_file_layout_is_plain_json_and_npz(tmp_path, trained_models):
    _, _, models = trained_models
    path = models["mlp"].save(tmp_path / "m.fastnn")
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["config.json", "weights.npz"]
        config = json.loads(zf.read("config.json"))
        with np.load(io.BytesIO(zf.read("weights.npz")), allow_pickle=False) as npz:
            names = set(npz.files)
    assert config["format"] == "fastnn-model" and config["format_version"] == FLOAT32_FORMAT_VERSION == 2
    assert config["fastnn_version"] == fastnn.__version__ and config["class"] == "MLP"
    assert config["n_features"] == 8 and config["n_classes"] == 3
    assert set(config["weights"]) | {"optimizer.slots", "optimizer.step"} == names
    assert "layers.1.running_var" in names


def test_atomic_overwrite_leaves_no_temporary_files(tmp_path, trained_models):
    x, _, models = trained_models
    path = tmp_path / "m.fastnn"
    models["mlp"].save(path)
    models["sequential"].save(path)  # overwrite in place
    assert os.listdir(tmp_path) == ["m.fastnn"]
    assert type(fastnn.load(path)) is Sequential
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)  # usual permissions, not mkstemp's


def test_failed_write_keeps_previous_file(tmp_path, trained_models, monkeypatch):
    _, _, models = trained_models
    path = tmp_path / "m.fastnn"
    models["mlp"].save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        models["sequential"].save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.fastnn"]


def test_load_with_backend_override(tmp_path, trained_models):
    x, _, models = trained_models
    path = models["mlp"].save(tmp_path / "m.fastnn")
    assert fastnn.load(path, backend="numpy").backend == "numpy"


def _write_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npz_bytes(**arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _edit_config(src, dst, **changes):
    with zipfile.ZipFile(src) as zf:
        config = json.loads(zf.read("config.json"))
        weights = zf.read("weights.npz")
    config.update(changes)
    _write_zip(dst, {"config.json": json.dumps(config), "weights.npz": weights})


def test_load_errors(tmp_path, trained_models):
    _, _, models = trained_models
    good = models["mlp"].save(tmp_path / "good.fastnn")
    with pytest.raises(FileNotFoundError, match="no saved model at"):
        fastnn.load(tmp_path / "missing.fastnn")
    (tmp_path / "text.fastnn").write_text("hello")
    with pytest.raises(ModelFormatError, match="not a zip archive"):
        fastnn.load(tmp_path / "text.fastnn")
    _write_zip(tmp_path / "empty.fastnn", {"other.txt": "x"})
    with pytest.raises(ModelFormatError, match="lacks config.json and weights.npz"):
        fastnn.load(tmp_path / "empty.fastnn")
    _write_zip(tmp_path / "badjson.fastnn", {"config.json": "{nope", "weights.npz": b""})
    with pytest.raises(ModelFormatError, match="damaged config.json"):
        fastnn.load(tmp_path / "badjson.fastnn")
    _edit_config(good, tmp_path / "future.fastnn", format_version=FORMAT_VERSION + 1)
    with pytest.raises(ModelFormatError, match=f"format version {FORMAT_VERSION + 1}, newer than this fastnn supports"):
        fastnn.load(tmp_path / "future.fastnn")
    _edit_config(good, tmp_path / "other.fastnn", format="keras")
    with pytest.raises(ModelFormatError, match="is not a fastnn model"):
        fastnn.load(tmp_path / "other.fastnn")
    _edit_config(good, tmp_path / "cls.fastnn", **{"class": "ResNet"})
    with pytest.raises(ModelFormatError, match="unknown model class 'ResNet'"):
        fastnn.load(tmp_path / "cls.fastnn")
    _edit_config(good, tmp_path / "shape.fastnn", n_features=9)
    with pytest.raises(ModelFormatError, match=r"does not match its config: weight layers.0.W must have shape \(9, 16\)"):
        fastnn.load(tmp_path / "shape.fastnn")
    assert issubclass(ModelFormatError, ValueError)


def test_weights_never_unpickled(tmp_path, trained_models):
    _, _, models = trained_models
    good = models["mlp"].save(tmp_path / "good.fastnn")
    with zipfile.ZipFile(good) as zf:
        config = zf.read("config.json")
    _, arrays = read_model_file(good)
    evil = _npz_bytes(**{**arrays, "layers.0.W": np.array([object()], dtype=object)})
    _write_zip(tmp_path / "pickle.fastnn", {"config.json": config, "weights.npz": evil})
    # refused from the .npy header, before any pickle could be read
    with pytest.raises(ModelFormatError, match=r"weight layers.0.W must have shape \(8, 16\) and dtype float32, got \(1,\) object"):
        read_model_file(tmp_path / "pickle.fastnn")
    _write_zip(tmp_path / "partial.fastnn", {"config.json": config, "weights.npz": _npz_bytes(x=np.zeros(2))})
    with pytest.raises(ModelFormatError, match=r"lacks weights \['layers.0.W'"):
        fastnn.load(tmp_path / "partial.fastnn")


# the training data set's record (format 2) ---------------------------------------------------

def test_dataset_record_round_trip_and_format_1_files(tmp_path, tiny_idx_dir, rewrite_model_config):
    from fastnn.datasets import dataset_info, load_dataset

    info = dataset_info(tiny_idx_dir)
    (x, y), _ = load_dataset(tiny_idx_dir)
    model = MLP([4], backend="numpy")
    model.fit(x, y, epochs=1, verbose=0)
    assert model.dataset_ is None
    model.dataset_ = info.record()
    assert model.dataset_ == {"name": "tiny_idx", "path": str(tiny_idx_dir.resolve()), "n_features": 20,
                              "n_classes": 4, "image_shape": [5, 4]}
    path = model.save(tmp_path / "m.fastnn")
    config, _ = read_model_file(path)
    assert config["format_version"] == FLOAT32_FORMAT_VERSION == 2 and config["dataset"] == model.dataset_
    assert fastnn.load(path).dataset_ == model.dataset_
    # a model file from before the record (format 1) loads, its data set unknown
    rewrite_model_config(path, lambda c: (c.pop("dataset"), c.update(format_version=1)))
    assert fastnn.load(path).dataset_ is None


@pytest.mark.parametrize("record,message", [
    ({"name": "x"}, "invalid dataset record"),
    ({"name": "x", "path": None, "n_features": 20, "n_classes": 4, "image_shape": [5, 5]}, "invalid dataset record"),
    ({"name": "x", "path": 3, "n_features": 20, "n_classes": 4, "image_shape": [5, 4]}, "invalid dataset record"),
    ({"name": "x", "path": None, "n_features": 20, "n_classes": True, "image_shape": [5, 4]}, "invalid dataset record"),
    ("mnist", "invalid dataset record"),
    ({"name": "x", "path": None, "n_features": 20, "n_classes": 9, "image_shape": [5, 4]}, "does not match the model"),
])
def test_bad_dataset_record_is_a_format_error(tmp_path, record, message, rewrite_model_config):
    x, y = blobs(d=20, k=4)
    model = MLP([4], backend="numpy")
    model.fit(x, y, epochs=1, verbose=0)
    path = model.save(tmp_path / "m.fastnn")
    rewrite_model_config(path, lambda c: c.update(dataset=record))
    with pytest.raises(ModelFormatError, match=message):
        fastnn.load(path)


def test_io_never_imports_the_model_module():
    # The dependency goes one way (model -> io): io knows the model classes from the
    # registry fastnn.model fills (io.model_class), so the two modules form no import circle.
    import ast
    import fastnn.io

    tree = ast.parse(open(fastnn.io.__file__).read())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [m for m in imported if m and m.split(".")[-1] == "model"], imported
    assert set(fastnn.io._model_classes()) == {"MLP", "Sequential"}
