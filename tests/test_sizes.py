"""Sizes that cannot fit: batch sizes above the data are clamped, absurd networks are
refused with a memory estimate before anything is allocated, galleries are capped."""

import numpy as np
import pytest

import fastnn
from fastnn.plotting import GALLERY_MAX, plot_gallery


def _data(n=50, d=12, k=3):
    rng = np.random.default_rng(0)
    return rng.random((n, d), dtype=np.float32), rng.integers(0, k, n)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_batch_size_above_the_data_is_the_whole_data(backend):
    x, y = _data()
    runs = []
    for batch_size in (len(x), 10**9):
        model = fastnn.MLP([8], backend=backend, seed=0)
        model.fit(x, y, epochs=2, batch_size=batch_size, verbose=0)
        runs.append((model.get_weights(), model.predict_proba(x, batch_size=batch_size)))
    for a, b in zip(runs[0][0] + [runs[0][1]], runs[1][0] + [runs[1][1]]):
        np.testing.assert_array_equal(a, b)


def test_absurd_widths_are_refused_with_a_memory_estimate(monkeypatch):
    model = fastnn.MLP([10**9], backend="numpy")
    with pytest.raises(ValueError, match=r"layer widths \[1000000000, 10\] on 784 inputs needs about .* TiB of "
                                         r"memory, more than this machine's .*; use narrower or fewer layers"):
        model.build(784, 10)
    assert not model.built
    monkeypatch.setattr(fastnn.model, "physical_memory", lambda: 2**30)  # the same on any machine
    wide = fastnn.MLP([1024], backend="numpy")  # small weights, but 8 GB of activations at this batch size
    with pytest.raises(ValueError, match=r"training with batch_size=1000000 .* needs about 7.66 GiB of memory, more "
                                         r"than this machine's 1 GiB; use a smaller batch_size"):
        wide.fit(np.zeros((10**6, 1), np.float32), np.arange(10**6) % 2, batch_size=10**6, verbose=0)


def test_gallery_size_is_capped(tmp_path):
    x, y = _data()
    with pytest.raises(ValueError, match=rf"n must be an integer in \[1, {GALLERY_MAX}\], got 100000"):
        plot_gallery(x, y, y, tmp_path / "g.png", n=100000, image_shape=(3, 4))
    assert not (tmp_path / "g.png").exists()
    from fastnn.cli import evaluate_main

    assert evaluate_main(["missing.fastnn", "--gallery-size", "1000000000"]) == 2


def test_cli_batch_size_1e9_trains_on_the_data(tmp_path, capsys):
    from fastnn.cli import train_main

    status = train_main(["--layers", "8", "--epochs", "1", "--batch-size", "1000000000", "--train-limit", "300",
                         "--backend", "numpy", "--no-plots", "--verbose", "0", "--out", str(tmp_path / "run")])
    assert status == 0, capsys.readouterr().err
