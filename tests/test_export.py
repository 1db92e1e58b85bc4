"""Export: ONNX (checked in onnxruntime on real MNIST), fastnn-export, torch state dicts."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import MLP, BatchNorm, Dense, Dropout, ReLU, Sequential, Sigmoid, Tanh
from fastnn.cli import export_main
from fastnn.export import to_torch_state_dict, torch_modules

N_TRAIN = 3000  # enough for non-trivial weights and batch-norm statistics in one epoch


@pytest.fixture(scope="module")
def mnist():
    try:
        (x, y), (x_test, _) = fastnn.load_dataset("mnist", download=False)
    except fastnn.DatasetError as exc:
        pytest.skip(f"real MNIST not found ({exc})")
    return x[:N_TRAIN], y[:N_TRAIN], x_test


_TRAINED = {}


def trained(name, mnist):
    """MODELS[name] after one epoch on the first N_TRAIN MNIST images (trained once per session)."""
    if name not in _TRAINED:
        layers, kwargs = MODELS[name]
        x, y, _ = mnist
        make = Sequential if isinstance(layers[0], fastnn.layers.Layer) else MLP
        _TRAINED[name] = make(layers, seed=1, **kwargs)
        _TRAINED[name].fit(x, y, epochs=1, batch_size=64, verbose=0)
    return _TRAINED[name]


#: every layer kind: Dense with each activation, stand-alone activations, Dropout, BatchNorm
MODELS = {
    "mlp-relu": ([64, 32], {}),
    "mlp-sigmoid-dropout": ([64], {"activation": "sigmoid", "dropout": 0.3}),
    "mlp-tanh-batchnorm": ([48, 32], {"activation": "tanh", "batch_norm": True}),
    "mlp-linear": ([32], {"activation": "linear"}),
    "sequential-layers": ([Dense(64), BatchNorm(), ReLU(), Dropout(0.2), Dense(32, "sigmoid"), Dense(24), Tanh(),
                           Dense(16), Sigmoid(), Dense(10)], {}),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_matches_predict_proba_in_onnxruntime(name, mnist, tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install 'fastnn[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'fastnn[onnx]')")
    model = trained(name, mnist)
    path = model.to_onnx(tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, out.name, out.shape) == ("input", ["batch", 784], "probabilities", ["batch", 10])
    x_test = mnist[2]
    expected = model.predict_proba(x_test)
    got = session.run(None, {"input": x_test})[0]
    assert got.shape == (10000, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert (got.argmax(1) == expected.argmax(1)).mean() > 0.999
    np.testing.assert_allclose(session.run(None, {"input": x_test[:1]})[0], expected[:1], atol=1e-5)  # any batch


def test_fastnn_export_command(mnist, tmp_path, capsys):
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'fastnn[onnx]')")
    model = trained("mlp-linear", mnist)
    model.save(tmp_path / "m.fastnn")
    assert export_main([str(tmp_path / "m.fastnn"), str(tmp_path / "m.onnx")]) == 0
    assert "784 features -> 10 class probabilities (opset 17)" in capsys.readouterr().out
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.opset_import[0].version == 17 and proto.producer_name == "fastnn"
    assert [i.name for i in proto.graph.initializer] == model.get_weight_names()
    assert export_main([str(tmp_path / "m.fastnn"), str(tmp_path / "m21.onnx"), "--opset", "21"]) == 0
    assert onnx.load(str(tmp_path / "m21.onnx")).opset_import[0].version == 21
    assert export_main([str(tmp_path / "m.fastnn"), str(tmp_path / "m999.onnx"), "--opset", "999"]) == 2
    assert "opset must be an integer in [13, " in capsys.readouterr().err
    os.unlink(tmp_path / "m21.onnx")
    # a bad model file is one line on stderr, exit 2, and no output file
    (tmp_path / "junk").write_bytes(b"not a model")
    assert export_main([str(tmp_path / "junk"), str(tmp_path / "junk.onnx")]) == 2
    assert "fastnn-export: error:" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["junk", "m.fastnn", "m.onnx"]


def test_export_version_and_help(capsys):
    assert export_main(["--version"]) == 0
    assert capsys.readouterr().out == f"fastnn-export {fastnn.__version__}\n"
    assert export_main(["--help"]) == 0
    assert "output 'probabilities' float32 (batch, classes)" in " ".join(capsys.readouterr().out.split())


def test_export_without_onnx_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from fastnn.cli import export_main\n"
            "sys.exit(export_main([sys.argv[1], sys.argv[2]]))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.fastnn"), str(tmp_path / "m.onnx")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert 'ONNX export needs the onnx package' in out.stderr and 'pip install "fastnn[onnx]"' in out.stderr


def _numpy_torch_forward(modules, state, x):
    """What torch.nn.Sequential(modules) computes in eval mode, written with NumPy."""
    act = {"ReLU": lambda z: np.maximum(z, 0), "Sigmoid": lambda z: 1 / (1 + np.exp(-z)), "Tanh": np.tanh}
    h = x.astype(np.float64)
    for i, (kind, args) in enumerate(modules):
        if kind == "Linear":
            h = h @ state[f"{i}.weight"].T + state[f"{i}.bias"]
        elif kind == "BatchNorm1d":
            h = (h - state[f"{i}.running_mean"]) / np.sqrt(state[f"{i}.running_var"] + args[1]) \
                * state[f"{i}.weight"] + state[f"{i}.bias"]
        elif kind in act:
            h = act[kind](h)
    return h


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_state_dict_names_and_values(name, mnist):
    model = trained(name, mnist)
    modules, state = torch_modules(model), to_torch_state_dict(model)
    assert list(state) == [k for i, (kind, _) in enumerate(modules) if kind in ("Linear", "BatchNorm1d")
                           for k in ((f"{i}.weight", f"{i}.bias") if kind == "Linear" else
                                     (f"{i}.weight", f"{i}.bias", f"{i}.running_mean", f"{i}.running_var",
                                      f"{i}.num_batches_tracked"))]
    first = next(i for i, (kind, _) in enumerate(modules) if kind == "Linear")
    assert state[f"{first}.weight"].shape == (modules[first][1][1], 784)  # (out, in): W transposed
    x = mnist[2][:500]
    logits = _numpy_torch_forward(modules, state, x)
    proba = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(proba / proba.sum(1, keepdims=True), model.predict_proba(x), atol=1e-5)


@pytest.mark.parametrize("name", ["mlp-tanh-batchnorm", "sequential-layers"])
def test_torch_sequential_gives_the_same_probabilities(name, mnist):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional, never a dependency)")
    from fastnn.export import to_torch

    model = trained(name, mnist)
    seq = to_torch(model)
    assert not seq.training
    x = mnist[2][:2000]
    with torch.no_grad():
        got = torch.softmax(seq(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(got, model.predict_proba(x), atol=1e-5)
