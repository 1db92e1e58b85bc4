"""Hostile and degenerate IDX data sets: the header is checked before the payload is
inflated, nothing beyond what the header implies is decompressed, and empty splits,
0-pixel images, overflowing dimensions and one-class training sets are refused at load."""

import gzip
import os
import resource
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from fastnn import datasets
from fastnn.datasets import IDXFormatError, LabelError, load_dataset

TRAIN_IMAGES = datasets.FILES["train_images"] + ".gz"


def _gzip_bomb(path, header, payload_bytes, total_bytes):
    """A .gz whose stream is ``header``, ``payload_bytes`` zeros and then zeros up to
    ``total_bytes``, written as repeated gzip members (one 64 MiB member compressed once),
    so that building a 3 GiB bomb takes a moment and a few MB."""
    block = 64 * 2**20
    member = gzip.compress(bytes(block), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(header + bytes(payload_bytes)))
        for _ in range((total_bytes - payload_bytes) // block):
            f.write(member)


def _header(*dims):
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def test_gzip_bomb_is_not_inflated(tmp_path, write_tiny_idx):
    write_tiny_idx(tmp_path, rows=28, cols=28)
    bomb = tmp_path / TRAIN_IMAGES
    _gzip_bomb(bomb, _header(20, 28, 28), 20 * 28 * 28, 3 * 2**30)
    assert bomb.stat().st_size < 8 * 2**20
    datasets.clear_cache()
    tracemalloc.start()
    try:
        with pytest.raises(IDXFormatError, match="payload length mismatch.*longer \\(trailing bytes\\)"):
            load_dataset(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20, f"{peak} bytes to refuse a 3 GiB bomb"


def test_gzip_bomb_under_a_memory_limit_gives_one_line_from_the_cli(tmp_path, write_tiny_idx):
    write_tiny_idx(tmp_path / "bomb", rows=28, cols=28)
    _gzip_bomb(tmp_path / "bomb" / TRAIN_IMAGES, _header(20, 28, 28), 20 * 28 * 28, 3 * 2**30)
    limit = 1536 * 2**20  # less than the bomb: inflating it all would be a MemoryError

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "fastnn.cli", "--dataset", str(tmp_path / "bomb"),
                           "--out", str(tmp_path / "run"), "--epochs", "1", "--backend", "numpy"],
                          capture_output=True, text=True, preexec_fn=cap_memory, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    assert f"{TRAIN_IMAGES}: payload length mismatch" in proc.stderr


@pytest.mark.parametrize("dims, gz, message", [
    ((2**32 - 1, 2**32 - 1, 2**32 - 1), True, "can hold at most about"),   # product overflows 64 bits
    ((2**32 - 1, 2**32 - 1, 2**32 - 1), False, "the file holds 400 "),
    ((2**31, 2**31, 4), True, "can hold at most about"),  # wraps to 0 in int64: the old check passed it
    ((0, 5, 4), True, "holds no items"),
    ((20, 0, 4), True, "0 pixels"),
    ((20, 5, 0), False, "0 pixels"),
])
def test_bad_headers_are_refused_before_reading_the_payload(tmp_path, write_tiny_idx, dims, gz, message):
    write_tiny_idx(tmp_path, gz=gz)
    name = datasets.FILES["train_images"] + (".gz" if gz else "")
    raw = _header(*dims) + bytes(20 * 5 * 4 if 0 not in dims else 0)
    (tmp_path / name).write_bytes(gzip.compress(raw) if gz else raw)
    datasets.clear_cache()
    with pytest.raises(IDXFormatError, match=message) as info:
        load_dataset(tmp_path)
    assert info.value.path.name == name


def test_empty_test_split_is_refused(tmp_path, write_tiny_idx):
    write_tiny_idx(tmp_path, n_test=0)
    datasets.clear_cache()
    with pytest.raises(IDXFormatError, match="t10k-.*holds no items"):
        load_dataset(tmp_path)


def test_one_class_training_set_is_refused(tmp_path, write_tiny_idx):
    write_tiny_idx(tmp_path, n_classes=1)
    datasets.clear_cache()
    with pytest.raises(LabelError, match="train-labels-idx1-ubyte.gz: every training label is 0, a single class"):
        load_dataset(tmp_path)


def test_raw_and_gzip_files_give_the_same_read_only_arrays(tmp_path, write_tiny_idx):
    arrays = write_tiny_idx(tmp_path / "gz")
    write_tiny_idx(tmp_path / "raw", gz=False)
    for directory in ("gz", "raw"):
        info = datasets.dataset_info(tmp_path / directory)
        assert (info.n_train, info.n_test, info.image_shape) == (20, 10, (5, 4))
        (x, y), _ = load_dataset(tmp_path / directory)
        np.testing.assert_array_equal(x, arrays["train_images"].reshape(20, -1) / np.float32(255))
        cached = datasets._read_idx(arrays["paths"]["train_images"])
        assert not cached.flags.writeable
