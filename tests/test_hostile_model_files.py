"""Damaged and hostile model files: only ModelFormatError (naming the file) ever escapes,
nothing is allocated beyond what the stored arrays hold, and loads that succeed give a
usable model."""

import json
import random
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn.io import ModelFormatError


def _data(n=64, d=20, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype=np.float32), rng.integers(0, k, n)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    x, y = _data()
    model = fastnn.MLP([12, 8], batch_norm=True, backend="numpy", seed=1)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = model.save(tmp_path_factory.mktemp("model") / "m.fastnn")
    with open(path, "rb") as f:
        return f.read(), x


def _rewrite(src_bytes, dst, edit_config=None, members=None):
    """Copy a saved model into ``dst`` with its config edited and/or members replaced."""
    import io

    with zipfile.ZipFile(io.BytesIO(src_bytes)) as zf:
        contents = {name: zf.read(name) for name in zf.namelist()}
    if edit_config is not None:
        config = json.loads(contents["config.json"])
        edit_config(config)
        contents["config.json"] = json.dumps(config).encode()
    contents.update(members or {})
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
    return dst


def _load_checked(path, x):
    """Load; a successful load must give a model that predicts valid classes."""
    model = fastnn.load(path, backend="numpy")
    pred = model.predict(x)
    assert pred.shape == (len(x),) and pred.min() >= 0 and pred.max() < model.n_classes_
    assert np.isfinite(model.predict_proba(x)).all()


def test_fuzzed_model_files_raise_only_model_format_error(tmp_path, saved):
    good, x = saved
    rng = random.Random(20261130)
    outcomes = {"loaded": 0, "refused": 0}
    for trial in range(300):
        data = bytearray(good)
        kind = rng.choice(["overwrite", "overwrite", "truncate", "both"])
        if kind in ("overwrite", "both"):
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        if kind in ("truncate", "both"):
            del data[rng.randrange(len(data)):]
        path = tmp_path / f"fuzz{trial}.fastnn"
        path.write_bytes(bytes(data))
        try:
            _load_checked(path, x)
            outcomes["loaded"] += 1
        except ModelFormatError as exc:
            assert str(path) in str(exc)
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"trial {trial} ({kind}) raised {type(exc).__name__}: {exc}")
    assert outcomes["refused"] > 150, outcomes  # the damage was real, not a no-op


def _member_data_span(raw, name):
    """(start, end) of a member's compressed bytes in a zip file held in ``raw``."""
    import io

    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        info = zf.getinfo(name)
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26:][:2], "little"), \
        int.from_bytes(raw[info.header_offset + 28:][:2], "little")
    start = info.header_offset + 30 + name_len + extra_len
    return start, start + info.compress_size


def test_damaged_deflate_stream(tmp_path, saved):
    good, _ = saved
    start, end = _member_data_span(good, "weights.npz")
    for i, offset in enumerate(range(start + 5, end - 5, max(1, (end - start) // 20))):
        data = bytearray(good)
        data[offset:offset + 4] = b"\xff\x00\xff\x00"
        path = tmp_path / f"deflate{i}.fastnn"
        path.write_bytes(bytes(data))
        with pytest.raises(ModelFormatError, match="damaged"):
            fastnn.load(path)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("config"), r"'config' must be an object, got NoneType \(missing\)"),
    (lambda c: c.update(config=[1, 2]), "'config' must be an object, got list"),
    (lambda c: c.update(config={"layers": "wide"}), "invalid model config"),
    (lambda c: c["config"].pop("optimizer"), "invalid model config"),
    (lambda c: c["config"].update(layers=[{"units": 4}]), "invalid model config"),
    (lambda c: c.update(n_features="784"), "'n_features' must be an integer, got str"),
    (lambda c: c.update(n_features=True), "'n_features' must be an integer, got bool"),
    (lambda c: c.update(n_classes=1), "invalid model config"),
    (lambda c: c.update(weights=["a", "b"]), "it lists weights"),
    (lambda c: c.update(weights=None), "'weights' must be a list"),
    (lambda c: c.update(training={"epoch": -1}), "damaged training record"),
    (lambda c: c.update(training={"epoch": 9, "seed": 0, "shuffle": True, "batch_size": 16, "n_train": 64,
                                  "epochs": 2}), "epoch 9 of 2 planned epochs"),
    (lambda c: c.update(dataset={"name": "x"}), "invalid dataset record"),
    (lambda c: c.update(dataset={"name": "x", "path": None, "n_features": 4, "n_classes": 3, "image_shape": [2, 2]}),
     "dataset record .4 features, 3 classes. does not match the model .20 features"),
])
def test_bad_configs(tmp_path, saved, edit, message):
    good, _ = saved
    path = _rewrite(good, tmp_path / "bad.fastnn", edit_config=edit)
    with pytest.raises(ModelFormatError, match=message) as info:
        fastnn.load(path)
    assert str(path) in str(info.value)


def _peak_bytes_to_refuse(path, message):
    """Peak Python allocation while loading ``path`` fails with ModelFormatError matching ``message``."""
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match=message):
            fastnn.load(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("edit", [
    lambda c: c.update(n_features=10**9),
    lambda c: c.update(n_features=10**30),
    lambda c: c["config"].update(layers=[10**12, 8]),
])
def test_config_claiming_a_huge_network_allocates_nothing(tmp_path, saved, edit):
    good, _ = saved
    path = _rewrite(good, tmp_path / "huge.fastnn", edit_config=edit)
    peak = _peak_bytes_to_refuse(path, "does not match its config")
    assert peak < 20 * 2**20, f"{peak} bytes allocated to refuse a {len(good)}-byte file"


def test_members_larger_than_the_config_allows_are_not_inflated(tmp_path, saved):
    good, _ = saved
    # 200 MB of zeros deflate to about 200 KB: declared size far above what the config implies
    bomb = _rewrite(good, tmp_path / "bomb.fastnn", members={"weights.npz": bytes(200 * 2**20)})
    assert _peak_bytes_to_refuse(bomb, "weights.npz claims 209715200 bytes") < 20 * 2**20
    big_config = _rewrite(good, tmp_path / "cfg.fastnn", members={"config.json": b" " * (17 * 2**20) + b"{}"})
    with pytest.raises(ModelFormatError, match="config.json claims"):
        fastnn.load(big_config)
    nested = _rewrite(good, tmp_path / "nested.fastnn", members={"config.json": b"[" * 100_000})
    with pytest.raises(ModelFormatError, match="damaged config.json"):
        fastnn.load(nested)


def test_unexpected_and_mistyped_arrays(tmp_path, saved):
    import io

    good, _ = saved
    _, arrays = fastnn.io.read_model_file(_rewrite(good, tmp_path / "copy.fastnn"))

    def npz(**changes):
        buf = io.BytesIO()
        np.savez(buf, **{**arrays, **changes})
        return buf.getvalue()

    cases = {
        "extra": (npz(secret=np.zeros(3)), r"holds arrays \['secret'\]"),
        "dtype": (npz(**{"layers.0.W": arrays["layers.0.W"].astype(np.float64)}), "dtype float32, got .*float64"),
        "slots": (npz(**{"optimizer.slots": np.zeros((2, 5), np.float32)}), "optimizer.slots must have shape"),
        "nan": (npz(**{"layers.0.b": np.full_like(arrays["layers.0.b"], np.nan)}), "must be finite"),
    }
    for name, (blob, message) in cases.items():
        path = _rewrite(good, tmp_path / f"{name}.fastnn", members={"weights.npz": blob})
        with pytest.raises(ModelFormatError, match=message):
            fastnn.load(path)
