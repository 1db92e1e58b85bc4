"""Augmentation and test-time augmentation on images that are not square: the CLI takes
the image shape from the IDX header, so they just work."""

import json

import numpy as np
import pytest

import fastnn
from fastnn.cli import evaluate_main, train_main


def test_cli_augments_and_tta_on_non_square_images(tmp_path, write_tiny_idx, capsys):
    write_tiny_idx(tmp_path / "wide", n_train=60, n_test=20, rows=3, cols=7, n_classes=3)
    out = tmp_path / "run"
    status = train_main(["--dataset", str(tmp_path / "wide"), "--layers", "8", "--epochs", "2", "--batch-size", "16",
                         "--aug-shift", "1", "--aug-rotation", "10", "--tta", "2", "--backend", "numpy",
                         "--no-plots", "--verbose", "0", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["image_shape"] == [3, 7] and summary["tta"] == 2
    model = fastnn.load(out / "model.fastnn")
    assert tuple(model.augment["image_shape"]) == (3, 7)
    capsys.readouterr()
    assert evaluate_main([str(out / "model.fastnn"), "--dataset", str(tmp_path / "wide"), "--tta", "2",
                          "--backend", "numpy"]) == 0
    assert "with TTA (2 views)" in capsys.readouterr().out


def test_views_follow_the_given_shape():
    x = np.random.default_rng(0).random((5, 21), dtype=np.float32)  # 3x7 images
    model = fastnn.MLP([4], backend="numpy", n_classes=2).build(21)
    with pytest.raises(ValueError, match="not a square image; add 'image_shape'"):
        model.predict_proba(x, tta=1)
    probs = model.predict_proba(x, tta=3, tta_augment={"shift": 1.0, "image_shape": (3, 7)})
    assert probs.shape == (5, 2) and np.isfinite(probs).all()
