"""Augmentation through the model API, and the compact architecture strings."""

import numpy as np
import pytest

import fastnn
from fastnn.layers import BatchNorm, Dense, Dropout, ReLU, parse_architecture

AUG = {"shift": 2, "rotation": 10, "scale": 0.1, "elastic_alpha": 20, "elastic_sigma": 4}


@pytest.fixture(scope="module")
def digits():
    """400 learnable 28x28 'images': a bright blob whose position encodes the class."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    x = np.zeros((400, 28, 28), np.float32)
    for i, c in enumerate(y):
        r, q = 6 + 12 * (c // 2), 6 + 12 * (c % 2)
        x[i, r - 3:r + 4, q - 3:q + 4] = rng.uniform(0.5, 1.0, (7, 7))
    return x.reshape(400, 784), y.astype(np.int64)


def _train(backend, x, y, augment):
    model = fastnn.MLP([32], optimizer="sgd", lr=0.05, momentum=0.9, dropout=0.1, augment=augment,
                       backend=backend, seed=3)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model


def test_augmented_training_is_identical_on_both_backends(digits):
    a = _train("numba", *digits, AUG).get_weights()
    b = _train("numpy", *digits, AUG).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=2e-5)


def test_augmentation_changes_training_and_is_seeded(digits):
    plain = _train("numba", *digits, None).get_weights()[0]
    aug1 = _train("numba", *digits, AUG).get_weights()[0]
    aug2 = _train("numba", *digits, AUG).get_weights()[0]
    assert np.abs(plain - aug1).max() > 1e-3
    np.testing.assert_array_equal(aug1, aug2)


def test_augmented_model_still_learns(digits):
    x, y = digits
    assert _train("numba", x, y, AUG).evaluate(x, y)[1] > 0.9


@pytest.mark.parametrize("augment, match", [
    ({"shfit": 2}, "unknown keys"),
    ({"shift": -1}, r"augment\['shift'\] must be"),
    ({"scale": 1.5}, "max_scale"),
    ([2, 10], "must be a dict"),
])
def test_bad_augment_settings(augment, match):
    with pytest.raises(ValueError, match=match):
        fastnn.MLP([8], augment=augment)


def test_augment_needs_image_rows():
    model = fastnn.MLP([8], augment={"shift": 1})
    with pytest.raises(ValueError, match="not a"):
        model.fit(np.zeros((10, 30), np.float32), np.arange(10) % 2, epochs=1, verbose=0)


def test_augment_survives_save_and_load(tmp_path, digits):
    model = _train("numba", *digits, AUG)
    loaded = fastnn.load(model.save(tmp_path / "m.fastnn"))
    assert loaded.augment == model.augment


def test_parse_architecture():
    layers = parse_architecture("dense:256,dropout:0.5,dense:128:tanh,relu,batchnorm", activation="relu")
    assert [type(l) for l in layers] == [Dense, Dropout, Dense, ReLU, BatchNorm]
    assert (layers[0].units, layers[0].activation, layers[2].activation, layers[1].rate) == (256, "relu", "tanh", 0.5)


@pytest.mark.parametrize("text", ["dense", "dense:0", "dropout:1.5", "drop:0.5", "batchnorm:3", "dense:12:swish"])
def test_parse_architecture_rejects_bad_tokens(text):
    with pytest.raises(ValueError, match="architecture token"):
        parse_architecture(text)


def test_cli_rejects_architecture_with_layers(capsys):
    from fastnn.cli import train_main

    assert train_main(["--architecture", "dense:64", "--layers", "32"]) == 2
    assert "--architecture replaces" in capsys.readouterr().err
