"""fastnn-sweep --scheduler on Dask distributed: the same accuracies as local runs, resume
after the driver is killed, a worker killed mid-run, atomic installs of the run folders,
and the messages for a missing package or missing worker resources.

The cluster is a LocalCluster on 127.0.0.1 (2 worker processes, 1 thread each,
resources threads=1), shared by this module's tests to keep them fast."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fastnn import sweep
from fastnn.sweep import SweepConfigError

RUNS = {"a": "layers = [16]", "b": "layers = [8]\nlr = 0.01", "c": "layers = [12, 8]"}


def _config(tmp_path, data_dir, runs=RUNS):
    # short runs on tiny data, Numba backend (the warm-up is part of what is tested)
    text = f"""
[defaults]
dataset = "{data_dir}"
epochs = 1
batch_size = 16
train_limit = 150
no_plots = true
"""
    text += "".join(f"\n[runs.{name}]\n{body}\n" for name, body in runs.items())
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


def _finished(run_dir):
    record = sweep._read_json(run_dir / "sweep_run.json") or {}
    return sweep.is_finished(run_dir, record.get("argv"))


def _accuracies(out):
    return {name: json.loads((out / name / "summary.json").read_text())["test_accuracy"]
            for name in sorted(os.listdir(out)) if (out / name / "summary.json").is_file()}


# ------------------------------------------------------------------ without a cluster

def test_missing_distributed_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    monkeypatch.delitem(sys.modules, "fastnn.sweep_dask", raising=False)
    with pytest.raises(SweepConfigError, match=r'--scheduler needs Dask distributed.*pip install "fastnn\[cluster\]"'):
        sweep.make_executor(3, scheduler="tcp://127.0.0.1:1")


def test_install_run_writes_atomically_and_refuses_escaping_paths(tmp_path):
    sweep_dask = pytest.importorskip("fastnn.sweep_dask", reason="needs Dask distributed (fastnn[cluster])")
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "stale.txt").write_text("from an earlier, unfinished attempt")
    record = {"run": "r", "argv": ["--out", str(run_dir)], "status": "ok"}
    sweep_dask.install_run(run_dir, record, {"summary.json": b'{"test_accuracy": 0.5}', "sub/x.bin": b"\x00\x01"})
    assert sorted(os.listdir(run_dir)) == ["sub", "summary.json", "sweep_run.json"]  # the old folder is gone
    assert (run_dir / "sub" / "x.bin").read_bytes() == b"\x00\x01"
    assert json.loads((run_dir / "sweep_run.json").read_text()) == record
    assert sweep.is_finished(run_dir, record["argv"])
    for bad in ("../evil.txt", "/tmp/evil.txt"):
        with pytest.raises(ValueError, match="outside the run folder"):
            sweep_dask.install_run(run_dir, record, {"summary.json": b"{}", bad: b"x"})
    assert sorted(os.listdir(tmp_path)) == ["r"]  # no staging folder left behind
    assert not (tmp_path / "evil.txt").exists()
    assert (run_dir / "sub" / "x.bin").is_file()  # the installed run is untouched


def test_retarget_moves_only_the_out_folder():
    sweep_dask = pytest.importorskip("fastnn.sweep_dask", reason="needs Dask distributed (fastnn[cluster])")
    assert sweep_dask._retarget(["--epochs", "2", "--out", "/d/r"], "/w/r") == ["--epochs", "2", "--out", "/w/r"]
    with pytest.raises(ValueError, match="must end with --out DIR"):
        sweep_dask._retarget(["--epochs", "2"], "/w/r")


# ------------------------------------------------------------------ on a LocalCluster

@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed", reason="needs Dask distributed (pip install fastnn[cluster])")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  resources={"threads": 1}, dashboard_address=None) as c:
        yield c


@pytest.fixture
def data(tmp_path, write_tiny_idx):
    write_tiny_idx(tmp_path / "data", n_train=200, n_test=60, rows=6, cols=6, n_classes=4)
    return tmp_path / "data"


def test_dask_sweep_gives_the_local_sweeps_accuracies(cluster, data, tmp_path, capsys):
    config = _config(tmp_path, data)
    assert sweep.main([config, "--out", str(tmp_path / "local"), "--jobs", "2", "--threads", "1", "--no-plot"]) == 0
    assert sweep.main([config, "--out", str(tmp_path / "dask"), "--scheduler", cluster.scheduler_address]) == 0
    printed = capsys.readouterr().out
    assert "Numba kernels compiled once before the parallel runs" in printed
    assert "2 Dask worker(s), 2 with threads>=1" in printed and "compiled once on each worker" in printed
    local, dask = _accuracies(tmp_path / "local"), _accuracies(tmp_path / "dask")
    assert sorted(local) == ["a", "b", "c"] and dask == local  # exactly equal, run by run

    # the run folder came back whole from the worker's scratch folder; the record is the driver's
    run = tmp_path / "dask" / "c"
    for name in ("summary.json", "history.csv", "model.fastnn", "log.txt"):
        assert (run / name).is_file(), name
    record = json.loads((run / "sweep_run.json").read_text())
    assert record["status"] == "ok" and record["threads"] == 1
    assert record["worker"].startswith("tcp://127.0.0.1:") and record["argv"][-1] == str(run)
    assert sweep.is_finished(run, record["argv"])
    assert "Dask cluster at tcp://127.0.0.1" in (tmp_path / "dask" / "results.md").read_text()
    assert (tmp_path / "dask" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert not [f for f in os.listdir(tmp_path / "dask") if f.startswith(".")]  # no staging leftovers


def test_resume_on_the_cluster_after_the_driver_is_killed(cluster, data, tmp_path, capsys):
    config, out = _config(tmp_path, data, {k: RUNS[k] for k in "ab"}), tmp_path / "out"
    # --jobs 1: one run on the cluster at a time, so the kill below lands with runs still to do
    cmd = [sys.executable, "-m", "fastnn.sweep", config, "--out", str(out), "--scheduler", cluster.scheduler_address,
           "--jobs", "1", "--no-plot"]
    driver = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=sweep.worker_env(1))
    deadline = time.monotonic() + 60
    while not _finished(out / "a"):
        assert driver.poll() is None and time.monotonic() < deadline, "the first run did not finish"
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not (out / "b" / "summary.json").exists()
    mtime = os.stat(out / "a" / "summary.json").st_mtime_ns

    assert sweep.main([config, "--out", str(out), "--scheduler", cluster.scheduler_address, "--no-plot"]) == 0
    printed = capsys.readouterr().out
    assert "already finished (skipped" in printed and "] a:" not in printed
    assert os.stat(out / "a" / "summary.json").st_mtime_ns == mtime
    assert sorted(_accuracies(out)) == ["a", "b"]


def _killer(marker):
    """A run hook that, once (marker file), SIGKILLs the worker as soon as its run's process trains."""
    def hook(name):
        import os
        import signal
        import threading
        import time

        import psutil

        if name != "b" or os.path.exists(marker):
            return
        open(marker, "w").close()

        def kill_when_training():
            for _ in range(600):
                runs = [c for c in psutil.Process().children() if "fastnn.sweep_worker" in " ".join(c.cmdline())]
                if runs:
                    with open(marker, "w") as f:  # tells the test which process must die with the worker
                        f.write(f"{os.getpid()} {runs[0].pid}")
                    break
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=kill_when_training, daemon=True).start()
    return hook


def _run_processes(marker):
    """fastnn-train processes with ``marker`` in their command line."""
    import psutil

    return [p for p in psutil.process_iter(["cmdline"])
            if "fastnn.sweep_worker" in (p.info["cmdline"] or ()) and any(marker in a for a in p.info["cmdline"] or ())]


def _watch_orphan(marker, seen):
    """Thread body: once the hook has killed the worker, record whether its run outlived it by 2 s."""
    import psutil

    def alive(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = open(marker).read() if os.path.exists(marker) else ""
        if text:
            worker, run = map(int, text.split())
            while alive(worker) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(2.0)  # a short run lasts longer than this; a SIGKILL from the kernel does not
            seen["run outlived its worker"] = alive(run)
            return
        time.sleep(0.02)


def test_a_worker_killed_mid_run_is_rerun_or_reported(cluster, data, tmp_path, capsys):
    import threading

    from fastnn.sweep_dask import DaskExecutor

    config = _config(tmp_path, data, {k: RUNS[k] for k in "bc"})
    # the scheduler reruns the task (allowed-failures 3 by default): ok, and the log says what happened
    ex = DaskExecutor(cluster.scheduler_address, run_hook=_killer(str(tmp_path / "killed-1")))
    seen = {}
    watcher = threading.Thread(target=_watch_orphan, args=(str(tmp_path / "killed-1"), seen), daemon=True)
    watcher.start()
    rows = {r["run"]: r for r in sweep.run_sweep(config, out=str(tmp_path / "rerun"), executor=ex, plot=False)}
    watcher.join(timeout=30)
    assert seen == {"run outlived its worker": False}  # its run died with it instead of training on
    printed = capsys.readouterr().out
    assert [rows[n]["status"] for n in "bc"] == ["ok", "ok"]
    assert "b: test" in printed and "rerun after its worker was lost (tcp://127.0.0.1:" in printed
    record = json.loads((tmp_path / "rerun" / "b" / "sweep_run.json").read_text())
    assert len(record["lost_workers"]) == 1 and record["worker"] != record["lost_workers"][0]
    assert not _run_processes(f"fastnn-sweep-{ex.tag}-")

    # with no failures allowed the scheduler gives up: the run is reported failed, with the reason
    import distributed

    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        allowed = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0))
        try:
            ex = DaskExecutor(cluster.scheduler_address, run_hook=_killer(str(tmp_path / "killed-2")))
            rows = sweep.run_sweep(config, out=str(tmp_path / "lost"), executor=ex, plot=False, only=["b"])
        finally:
            client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", allowed))
    printed = capsys.readouterr().out
    assert [(r["run"], r["status"]) for r in rows] == [("b", "failed")]
    assert "b: FAILED: lost: the worker running it died 1 time(s)" in printed
    assert "allowed-failures=0" in rows[0]["error"]
    assert json.loads((tmp_path / "lost" / "b" / "sweep_run.json").read_text())["status"] == "failed"
    assert not _finished(tmp_path / "lost" / "b")  # so the next start reruns it


def test_no_worker_with_enough_threads_is_a_clear_error(cluster, data, tmp_path, monkeypatch, capsys):
    from fastnn import sweep_dask

    monkeypatch.setattr(sweep_dask, "WORKER_WAIT_SECONDS", 0.5)
    monkeypatch.setattr(sweep_dask, "CONNECT_SECONDS", 1.0)
    config = _config(tmp_path, data)
    assert sweep.main([config, "--out", str(tmp_path / "out"), "--scheduler", cluster.scheduler_address,
                       "--threads", "2"]) == 2
    err = capsys.readouterr().err
    assert "no worker of the Dask scheduler at tcp://127.0.0.1" in err and "declares threads>=2" in err
    assert "--resources threads=N" in err
    assert sweep.main([config, "--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in capsys.readouterr().err


def test_ctrl_c_cancels_pending_runs_and_stops_running_ones(cluster, data, tmp_path):
    import distributed

    # runs that would train for hours: only the cancellation can end them
    endless = {name: f"layers = [8]\nepochs = 1000000\nseed = {i}" for i, name in enumerate("abc")}
    config, out = _config(tmp_path, data, endless), tmp_path / "out"
    cmd = [sys.executable, "-m", "fastnn.sweep", config, "--out", str(out), "--scheduler", cluster.scheduler_address,
           "--no-plot"]
    log = open(tmp_path / "driver.log", "w+")
    # SIGINT as in a terminal: a test run started in the background (`pytest &`) ignores it,
    # and a child would inherit that
    driver = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=sweep.worker_env(1),
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while len(_run_processes(str(data))) < 2:  # both workers busy, the third run pending
            assert driver.poll() is None and time.monotonic() < deadline, "the runs did not start"
            time.sleep(0.1)
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=30) == 130
        assert "interrupted; finished runs are kept" in (tmp_path / "driver.log").read_text()
        deadline = time.monotonic() + 10
        while _run_processes(str(data)):
            assert time.monotonic() < deadline, "the running runs were not stopped"
            time.sleep(0.1)
        with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
            deadline = time.monotonic() + 10
            while any(client.processing().values()):
                assert time.monotonic() < deadline, f"tasks left on the cluster: {client.processing()}"
                time.sleep(0.1)
    finally:
        driver.kill()
        log.close()
        for p in _run_processes(str(data)):  # never leave an endless run behind
            p.kill()
    rows = {r["run"]: r["status"] for r in csv.DictReader(open(out / "results.csv"))}
    assert rows == {"a": "not run", "b": "not run", "c": "not run"}


def test_scheduler_file_and_a_data_set_missing_on_the_worker(cluster, tmp_path, capsys):
    # Dask's scheduler file (dask scheduler --scheduler-file) names the address
    scheduler_file = tmp_path / "scheduler.json"
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": cluster.scheduler_address}))
    missing = tmp_path / "not_on_the_worker"
    config = _config(tmp_path, missing, {"broken": "layers = [8]\nbackend = \"numpy\""})
    assert sweep.main([config, "--out", str(tmp_path / "out"), "--scheduler-file", str(scheduler_file),
                       "--no-plot"]) == 1
    printed = capsys.readouterr().out
    assert "broken: FAILED: fastnn-train: error:" in printed and str(missing) in printed
    record = json.loads((tmp_path / "out" / "broken" / "sweep_run.json").read_text())
    assert record["status"] == "failed" and record["returncode"] == 2 and record["worker"].startswith("tcp://")
    assert "fastnn-train: error:" in (tmp_path / "out" / "broken" / "log.txt").read_text()
