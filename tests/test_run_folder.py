"""fastnn-train run folders in real processes: Ctrl-C and SIGTERM keep every finished epoch,
--resume continues to the same bits, a diverging loss stops with a non-zero exit, a folder
holds one run (refused reuse, --overwrite, a lock), and bad output paths fail before training."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn.cli import train_main
from fastnn.runs import LOCK_FILE, RunFolderError, RunLock

HERE = Path(__file__).parent
ROOT = HERE.parent
DRIVER = HERE / "interrupt_driver.py"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small IDX data set (4,000 training rows of 8x8) so each process starts fast."""
    from conftest import _write_tiny_idx

    directory = tmp_path_factory.mktemp("data") / "tiny"
    _write_tiny_idx(directory, n_train=4000, n_test=200, rows=8, cols=8, n_classes=4, seed=1)
    return str(directory)


def train_args(dataset, out, *extra):
    """4 epochs of 4,000 rows in batches of 64: 63 steps an epoch, in chunks of 128 steps."""
    return ["--dataset", dataset, "--layers", "16", "--epochs", "4", "--batch-size", "64", "--dropout", "0.1",
            "--schedule", "cosine", "--threads", "1", "--no-plots", "--verbose", "0", "--out", str(out), *extra]


def run(args, driver=None, timeout=120):
    """fastnn-train in a fresh process (through the interrupt driver when ``driver`` = (moment, signal))."""
    head = [str(DRIVER), *driver, "--"] if driver else ["-c", "import sys; from fastnn.cli import train_main; "
                                                              "sys.exit(train_main())"]
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    return subprocess.run([sys.executable, *head, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=timeout)


def summary(out):
    return json.loads((Path(out) / "summary.json").read_text())


def history_rows(out):
    with open(Path(out) / "history.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_second")} for row in csv.DictReader(f)]


def same_model(a, b):
    ma, mb = fastnn.load(a), fastnn.load(b)
    return (all(np.array_equal(u, v) for u, v in zip(ma.get_weights(), mb.get_weights()))
            and np.array_equal(ma.optimizer.buffers.slots, mb.optimizer.buffers.slots))


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    proc = run(train_args(dataset, out))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("moment, sig, epochs_kept", [
    ("step:150", "SIGINT", 2),   # epoch 3 of 4 (steps 126..188), after its first chunk
    ("step:10", "SIGTERM", 0),   # epoch 1, before any epoch finished
    ("saving:2", "SIGTERM", 2),  # while epoch 2's checkpoint is written: it completes first
])
def test_signal_keeps_finished_epochs_and_resume_gives_the_same_run(dataset, tmp_path, uninterrupted, moment, sig,
                                                                     epochs_kept):
    out = tmp_path / "run"
    proc = run(train_args(dataset, out), driver=(moment, sig))
    status = 128 + getattr(signal, sig)
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert f"interrupted by {sig}" in proc.stderr and f"--resume {out}" in proc.stderr
    record = summary(out)
    assert record["status"] == "interrupted" and record["signal"] == sig
    assert record["epochs_completed"] == epochs_kept == record["model_epoch"]
    assert len(history_rows(out)) == epochs_kept
    if epochs_kept:
        assert fastnn.load(out / "model.fastnn").training_state["epoch"] == epochs_kept
        during = f"epoch {epochs_kept + 1}" if moment.startswith("step") else f"the saving of epoch {epochs_kept}"
        assert record["interrupted_during"] == during
    else:
        assert not (out / "model.fastnn").exists()
    assert not (out / LOCK_FILE).exists() and not list(out.glob("*.tmp"))

    resumed = run(["--resume", str(out), "--threads", "1"])
    assert resumed.returncode == 0, resumed.stderr
    done, whole = summary(out), summary(uninterrupted)
    assert done["status"] == "complete" and done["resumed_at_epoch"] == epochs_kept
    assert done["final"] == whole["final"] and done["history"]["loss"] == whole["history"]["loss"]
    assert history_rows(out) == history_rows(uninterrupted)
    assert same_model(out / "model.fastnn", uninterrupted / "model.fastnn")


@pytest.mark.parametrize("moment, model_epoch", [
    ("step:150", 2),   # in epoch 3 of 4
    ("rename:2", 1),   # epoch 2's model complete in its temporary file, not yet renamed: epoch 1's stays
])
def test_sigkill_keeps_the_last_whole_epoch_and_resume_gives_the_same_run(dataset, tmp_path, uninterrupted, moment,
                                                                          model_epoch):
    """SIGKILL cannot be handled: what survives is what the atomic, ordered per-epoch writes left."""
    out = tmp_path / "run"
    proc = run(train_args(dataset, out), driver=(moment, "SIGKILL"))
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    record = summary(out)  # a whole file, not yet told the run ended
    assert record["status"] == "running" and record["epochs_completed"] == 2
    assert fastnn.load(out / "model.fastnn").training_state["epoch"] == model_epoch  # loads: never half written
    assert len(history_rows(out)) == 2
    stray = list(out.glob(".fastnn-*.tmp"))
    assert len(stray) == (moment.startswith("rename"))
    assert (out / LOCK_FILE).exists()  # its flock died with the process

    resumed = run(["--resume", str(out), "--threads", "1"])
    assert resumed.returncode == 0, resumed.stderr
    done = summary(out)
    assert done["status"] == "complete" and done["resumed_at_epoch"] == model_epoch
    assert done["final"] == summary(uninterrupted)["final"] and history_rows(out) == history_rows(uninterrupted)
    assert same_model(out / "model.fastnn", uninterrupted / "model.fastnn")
    assert not list(out.glob("*.tmp")) and not (out / LOCK_FILE).exists()


def test_signal_while_writing_the_final_outputs_leaves_a_complete_run(dataset, tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = run(train_args(dataset, out), driver=("final", "SIGINT"))
    assert proc.returncode == 130 and "after the run finished" in proc.stderr and "Traceback" not in proc.stderr
    assert summary(out)["status"] == "complete" and summary(out)["final"] == summary(uninterrupted)["final"]
    refused = run(["--resume", str(out)])
    assert refused.returncode == 2 and "nothing to resume" in refused.stderr


def test_resume_refuses_changed_settings(tmp_path, capsys):
    assert train_main(["--resume", str(tmp_path), "--lr", "0.1", "--epochs", "9"]) == 2
    assert "drop --epochs, --lr" in capsys.readouterr().err
    assert train_main(["--resume", str(tmp_path)]) == 2
    assert "no summary.json there" in capsys.readouterr().err


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_diverging_run_stops_with_the_flag_to_change(dataset, tmp_path, capsys, optimizer):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Python warning (naming lr=) would be a second, wrong message
        assert train_main(train_args(dataset, out, "--optimizer", optimizer, "--lr", "1e6")) == 3
    err = capsys.readouterr().err
    assert "fastnn-train: training diverged:" in err and "--lr 1e+05" in err and "lr=" not in err
    record = summary(out)
    assert record["status"] == "diverged" and record["stop_reason"].startswith(("exploding loss", "non-finite"))
    assert record["epochs_run"] == 1 and record["epochs_completed"] == 0
    assert record["test_loss"] is not None  # the kept weights give a finite loss
    assert np.isfinite(np.concatenate([w.ravel() for w in fastnn.load(out / "model.fastnn").get_weights()])).all()


def test_a_folder_holds_one_run(dataset, tmp_path, capsys, uninterrupted):
    out = tmp_path / "run"
    assert train_main(train_args(dataset, out, "--epochs", "1")) == 0
    before = (out / "model.fastnn").read_bytes()
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert train_main(train_args(dataset, out)) == 2
    err = capsys.readouterr().err
    assert "already holds a run (history.csv, model.fastnn, summary.json)" in err and "--overwrite" in err
    assert (out / "model.fastnn").read_bytes() == before  # untouched
    assert train_main(train_args(dataset, out, "--overwrite")) == 0
    assert summary(out)["final"] == summary(uninterrupted)["final"] and (out / "notes.txt").read_text() == "mine"


def test_two_processes_never_share_a_folder(dataset, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from fastnn.runs import RunLock; "
                               f"RunLock({str(out)!r}).acquire(); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = run(train_args(dataset, out))
        assert busy.returncode == 2 and f"in use by another fastnn process (pid {holder.pid})" in busy.stderr
        assert not (out / "summary.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK_FILE).exists()  # left by the killed process: a stale lock is taken over
    assert run(train_args(dataset, out, "--epochs", "1")).returncode == 0
    assert not (out / LOCK_FILE).exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process state from /proc (Linux)")
def test_two_fastnn_train_processes_on_one_folder(dataset, tmp_path, uninterrupted):
    """The first run stops itself (SIGSTOP) in epoch 1 holding the folder; a second run on the
    same --out is refused while it waits, and the first then finishes untouched."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(DRIVER), "step:10", "SIGSTOP", "--", *train_args(dataset, out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env=dict(os.environ, NUMBA_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 60
        while not Path(f"/proc/{first.pid}/stat").read_text().split(")")[1].split()[0] == "T":
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        second = run(train_args(dataset, out, "--overwrite"))
        assert second.returncode == 2 and f"in use by another fastnn process (pid {first.pid})" in second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert summary(out)["final"] == summary(uninterrupted)["final"]


def test_lock_in_process(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released: free again
        pass


@pytest.mark.parametrize("make_out, message", [
    (lambda tmp: tmp / "file" / "run", "lies under a regular file"),
    (lambda tmp: tmp / "file", "is a file, not a folder"),
    (lambda tmp: tmp / "ro" / "run", "is not writable"),
])
def test_bad_out_fails_before_the_data_is_loaded(tmp_path, capsys, make_out, message):
    (tmp_path / "file").write_text("")
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() == 0 and make_out(tmp_path).parent.name == "ro":
        pytest.skip("root may write into a mode-0500 folder")
    assert train_main(["--dataset", str(tmp_path / "no-data"), "--out", str(make_out(tmp_path))]) == 2
    assert message in capsys.readouterr().err  # not the loader's "no data set" message: checked first


@pytest.mark.parametrize("args, message", [
    (["--layers", "1000000", "1000000"], r"hidden layer widths \[1000000, 1000000\] \(on any data set\) needs about "
                                         r"14.6 TiB of memory, more than this machine's .*; use narrower or fewer layers"),
    (["--train-limit", "5", "--val-split", "0.1"], "--val-split 0.1 of --train-limit 5 rows holds out no row; raise "
                                                   "--train-limit to at least 10"),
])
def test_argument_checks_fail_before_the_data_is_loaded(tmp_path, args, message):
    proc = run(["--dataset", str(tmp_path / "no-data"), "--out", str(tmp_path / "run"), *args], timeout=60)
    assert proc.returncode == 2 and re.search(message, proc.stderr), proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_resume_with_a_damaged_model_fails_before_the_data_is_loaded(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"status": "running", "history": {},
                                                  "config": {"args": {"dataset": str(tmp_path / "no-data")}}}))
    (out / "model.fastnn").write_bytes(b"PK\x03\x04 cut short")
    assert train_main(["--resume", str(out)]) == 2
    assert "model.fastnn' is not a fastnn model" in capsys.readouterr().err  # not the missing data set
    assert summary(out)["status"] == "failed" and (out / "model.fastnn").exists()  # kept for a look


def test_read_only_file_system_fails_before_training(tmp_path, capsys):
    """A read-only bind mount (skipped where the machine forbids mounting)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mount = subprocess.run(["mount", "--bind", "-o", "ro", str(ro), str(ro)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {mount.stderr.strip() or mount.returncode}")
    try:
        assert train_main(["--dataset", str(tmp_path / "no-data"), "--out", str(ro / "run")]) == 2
        assert "the file system is read-only" in capsys.readouterr().err
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_resume_carries_early_stopping_on(dataset, tmp_path):
    """Interrupted in the epoch where early stopping ends the whole run, after an epoch that was
    not the best: the resumed run stops there too and restores the best epoch's weights (from
    best.fastnn)."""
    args = ["--epochs", "8", "--val-split", "0.2", "--early-stopping", "2"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run(train_args(dataset, whole, *args)).returncode == 0
    expected = summary(whole)
    stop_epoch = expected["epochs_run"]
    best_epoch = int(np.argmin(expected["history"]["val_loss"])) + 1
    assert expected["stop_reason"].startswith("early stopping") and best_epoch == stop_epoch - 2
    steps_per_epoch = 50  # 3,200 training rows in batches of 64
    proc = run(train_args(dataset, part, *args), driver=(f"step:{(stop_epoch - 1) * steps_per_epoch + 10}", "SIGINT"))
    assert proc.returncode == 130 and summary(part)["epochs_completed"] == stop_epoch - 1
    assert fastnn.load(part / "best.fastnn").training_state["epoch"] == best_epoch
    resumed = run(["--resume", str(part)])
    assert resumed.returncode == 0, resumed.stderr
    done = summary(part)
    assert done["stop_reason"] == expected["stop_reason"] and done["final"] == expected["final"]
    assert same_model(part / "model.fastnn", whole / "model.fastnn") and not (part / "best.fastnn").exists()
