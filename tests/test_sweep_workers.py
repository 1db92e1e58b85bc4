"""fastnn-sweep never leaves an orphan worker: Ctrl-C and SIGTERM are passed on to the running
fastnn-train, and a sweep killed outright takes its workers with it (driven in a subprocess)."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; parent-death signal is Linux's")


def _workers_of(marker):
    """Pids of live processes whose command line contains ``marker`` (zombies excluded)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and "sweep_worker" in cmdline and state != "Z":
            pids.append(int(entry))
    return pids


def _wait(condition, seconds, step=0.2):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


@pytest.fixture
def long_sweep(tmp_path, write_tiny_idx):
    """Start a sweep whose one run trains (almost) forever; yields (process, run dir)."""
    write_tiny_idx(tmp_path / "data", n_train=40, n_test=10)
    config = tmp_path / "long.toml"
    config.write_text(f'[defaults]\ndataset = "{tmp_path / "data"}"\nbackend = "numpy"\nlayers = [4]\n'
                      f'epochs = 1000000\nno_plots = true\nverbose = 0\n[runs.forever]\n')
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "fastnn.sweep", str(config), "--out", str(out), "--no-plot"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marker = str(out / "forever")
    try:
        assert _wait(lambda: _workers_of(marker), 60), "the worker never started"
        time.sleep(1.0)  # past start-up: training
        yield proc, marker
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _workers_of(marker):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_the_sweep_stops_its_worker(long_sweep, signum, status):
    proc, marker = long_sweep
    workers = _workers_of(marker)
    proc.send_signal(signum)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == status, output
    assert "Traceback" not in output
    assert not _workers_of(marker), f"orphan worker(s) {workers} after {signal.Signals(signum).name}"


def test_killed_sweep_takes_its_worker_along(long_sweep):
    proc, marker = long_sweep
    workers = _workers_of(marker)
    proc.kill()
    proc.wait()
    assert _wait(lambda: not _workers_of(marker), 30), f"orphan worker(s) {workers} after SIGKILL of the sweep"
