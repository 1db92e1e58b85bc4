"""Shared pytest fixtures. Each section is self-contained; append new sections below."""

# ---------------------------------------------------------------- datasets fixtures
import gzip as _gzip
import struct as _struct

import numpy as _np
import pytest


def _idx_bytes(array):
    """Encode a uint8 array as IDX bytes (magic 00 00 08 ndim, big-endian uint32 dims)."""
    a = _np.ascontiguousarray(array, dtype=_np.uint8)
    return bytes([0, 0, 0x08, a.ndim]) + _struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def _write_tiny_idx(directory, n_train=20, n_test=10, rows=5, cols=4, n_classes=4, gz=True,
                    seed=0):
    """Write the four standard IDX files of a small random dataset into ``directory``.

    Images are random uint8 with pixel 0 of image 0 forced to 0 and pixel 1 to 255, so
    scaled features span exactly [0, 1]. Labels cycle through ``0..n_classes-1``.

    Returns
    -------
    dict
        ``train_images`` (n_train, rows, cols) uint8, ``train_labels`` (n_train,) uint8,
        ``test_images``, ``test_labels``, and ``paths`` (role -> written file).
    """
    rng = _np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        img = rng.integers(0, 256, size=(n, rows, cols), dtype=_np.uint8)
        if n:
            img[0, 0, 0], img[0, 0, 1] = 0, 255
        arrays[f"{split}_images"] = img
        arrays[f"{split}_labels"] = (_np.arange(n) % n_classes).astype(_np.uint8)
    names = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, stem in names.items():
        raw = _idx_bytes(arrays[role])
        path = directory / (stem + ".gz" if gz else stem)
        path.write_bytes(_gzip.compress(raw) if gz else raw)
        paths[role] = path
    arrays["paths"] = paths
    return arrays


@pytest.fixture
def idx_bytes():
    """``idx_bytes(uint8_array) -> bytes``: encode an array as an IDX file."""
    return _idx_bytes


@pytest.fixture
def write_tiny_idx():
    """``write_tiny_idx(directory, n_train=20, n_test=10, rows=5, cols=4, n_classes=4,
    gz=True, seed=0) -> dict`` writes a small IDX dataset (see ``_write_tiny_idx``)."""
    return _write_tiny_idx


@pytest.fixture
def tiny_idx_dir(tmp_path):
    """A directory with a gzipped 20-train / 10-test, 5x4-pixel, 4-class IDX dataset."""
    directory = tmp_path / "tiny_idx"
    _write_tiny_idx(directory)
    return directory


@pytest.fixture
def isolated_data_env(tmp_path, monkeypatch):
    """Make real data unreachable: FASTNN_DATA/FASTNN_MIRROR unset, HOME, XDG cache and
    cwd inside tmp_path, the packaged copy (package and checkout data/) redirected to
    ``<root>/repo``, the in-process cache cleared.

    Returns the tmp root; the cache lives at ``<root>/xdg_cache/fastnn/<name>``.
    """
    from fastnn import datasets

    root = tmp_path / "isolated"
    for sub in ("home", "xdg_cache", "cwd", "repo"):
        (root / sub).mkdir(parents=True)
    monkeypatch.delenv("FASTNN_DATA", raising=False)
    monkeypatch.delenv("FASTNN_MIRROR", raising=False)
    monkeypatch.setenv("HOME", str(root / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg_cache"))
    monkeypatch.chdir(root / "cwd")
    monkeypatch.setattr(datasets, "_REPO_ROOT", root / "repo")
    monkeypatch.setattr(datasets, "_PACKAGE_ROOT", root / "repo" / "fastnn")
    # Belt and braces: a test that forgets download=False must not reach the internet.
    for name in list(datasets.MIRRORS):
        monkeypatch.setitem(datasets.MIRRORS, name, ["http://127.0.0.1:1/unreachable/"])
    datasets.clear_cache()
    yield root
    datasets.clear_cache()


# ---------------------------------------------------------------- model-file fixtures
@pytest.fixture
def rewrite_model_config():
    """``rewrite_model_config(path, edit)``: rewrite config.json inside a saved model file
    with ``edit(config)`` (a function changing the dict in place), weights kept as they are."""
    import json
    import zipfile

    def rewrite(path, edit):
        with zipfile.ZipFile(path) as zf:
            config, weights = json.loads(zf.read("config.json")), zf.read("weights.npz")
        edit(config)
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("config.json", json.dumps(config))
            zf.writestr("weights.npz", weights)
        return path

    return rewrite


# ---------------------------------------------------------------- compile-time report
# Numba compiles into one disk cache that every test process shares (the package's
# __pycache__, or NUMBA_CACHE_DIR when set, which subprocesses inherit), so the suite
# compiles each unit once. The terminal summary says how long this process spent compiling.
_COMPILE = {}


def pytest_sessionstart(session):
    from fastnn.backends import jit_progress

    _COMPILE["ctx"] = jit_progress.record()
    _COMPILE["rec"] = _COMPILE["ctx"].__enter__()


def pytest_terminal_summary(terminalreporter):
    rec = _COMPILE.get("rec")
    if rec is None:
        return
    _COMPILE["ctx"].__exit__(None, None, None)
    import os

    where = os.environ.get("NUMBA_CACHE_DIR") or "the package's __pycache__"
    terminalreporter.write_line(f"Numba compile time in the test process: {rec.seconds:.1f} s for {len(rec.units)} "
                                f"units ({len(rec.functions)} functions; 0 = all from the cache in {where})")
