"""Outputs on a full disk and a read-only file system: every file is written under a
temporary name and renamed when complete, so a failure leaves no partial, 0-byte or
temporary file, and the message names the file. Uses a small tmpfs and a read-only bind
mount (skipped, with the reason, where this machine does not allow mounting)."""

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn.atomic import OutputError, atomic_write, write_text


def _mount(*args):
    proc = subprocess.run(["mount", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here (root and CAP_SYS_ADMIN needed): {proc.stderr.strip() or proc.returncode}")


@contextlib.contextmanager
def _mounted(point, *args):
    point.mkdir(parents=True, exist_ok=True)
    _mount(*args, point)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs; ``fill(free_bytes)`` leaves about that much space."""
    with _mounted(tmp_path / "disk", "-t", "tmpfs", "-o", "size=1m", "tmpfs") as disk:
        def fill(free_bytes):
            filler = disk / "filler"
            filler.unlink(missing_ok=True)
            st = os.statvfs(disk)
            with open(filler, "wb") as f:
                f.write(bytes(max(0, st.f_bavail * st.f_frsize - free_bytes)))
            return disk / "out"
        yield fill


@pytest.fixture
def read_only(tmp_path):
    """A read-only bind mount of a folder holding ``old.txt``."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.txt").write_text("old")
    with _mounted(tmp_path / "ro", "--bind", src):
        _mount("-o", "remount,bind,ro", tmp_path / "ro")
        yield tmp_path / "ro"


def _leftovers(folder):
    """Files that a failed write must not leave: temporaries and empty files."""
    return sorted(str(p) for p in folder.rglob("*")
                  if p.is_file() and (p.name.endswith(".tmp") or p.stat().st_size == 0))


def test_full_disk_keeps_the_old_file_and_leaves_nothing(full_disk):
    full_disk(64 * 1024).parent.joinpath("keep.json").write_text("old")  # written before the disk filled up
    out = full_disk(0)
    target = out.parent / "keep.json"
    with pytest.raises(OutputError, match=f"cannot write {target}: No space left on device"):
        write_text(target, "x" * 100_000)
    assert target.read_text() == "old"
    assert _leftovers(out.parent) == []


def test_every_output_kind_on_a_full_disk(full_disk, tmp_path):
    from fastnn.plotting import plot_curve

    x = np.random.default_rng(0).random((40, 6), dtype=np.float32)
    model = fastnn.MLP([64], backend="numpy", n_classes=3).build(6)
    out = full_disk(2048)
    for name, write in [("m.fastnn", model.save),
                        ("loss.png", lambda p: plot_curve({"loss": [1.0, 0.5, 0.25]}, "loss", p)),
                        ("history.csv", lambda p: write_text(p, "epoch,loss\n" * 5000))]:
        with pytest.raises(OutputError, match=f"cannot write {out / name}"):
            write(out / name)
        assert not (out / name).exists()
    assert _leftovers(out.parent) == []


def test_read_only_file_system(read_only):
    model = fastnn.MLP([4], backend="numpy", n_classes=2).build(3)
    with pytest.raises(OutputError, match=f"cannot write {read_only / 'm.fastnn'}: Read-only file system"):
        model.save(read_only / "m.fastnn")
    with pytest.raises(OutputError, match=f"cannot write {read_only / 'old.txt'}"):
        with atomic_write(read_only / "old.txt", "w") as f:
            f.write("new")
    assert sorted(os.listdir(read_only)) == ["old.txt"] and (read_only / "old.txt").read_text() == "old"


@pytest.mark.parametrize("free_kib", [6, 40])
def test_cli_on_a_full_disk(full_disk, tmp_path, write_tiny_idx, free_kib):
    write_tiny_idx(tmp_path / "data", n_train=60, n_test=20)
    out = full_disk(free_kib * 1024) / "run"
    proc = subprocess.run([sys.executable, "-m", "fastnn.cli", "--dataset", str(tmp_path / "data"), "--layers", "8",
                           "--epochs", "2", "--backend", "numpy", "--verbose", "0", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"cannot write {out}/" in proc.stderr and "[Errno" not in proc.stderr, proc.stderr
    assert "No space left on device (nothing was written)\n" in proc.stderr
    assert _leftovers(out.parent) == []
