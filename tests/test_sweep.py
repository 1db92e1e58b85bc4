"""fastnn-sweep: TOML layout, argv mapping, up-front validation, worker planning, and a
tiny real sweep (two runs, one failing) with its table, chart and resume."""

import csv
import json
import os

import pytest

from fastnn import sweep
from fastnn.cli import build_train_parser
from fastnn.sweep import SweepConfigError


def _write(path, text):
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ configuration

def test_defaults_runs_meta_and_grid_expansion():
    doc = {
        "defaults": {"dataset": "kmnist", "epochs": 3, "val_split": 0.1, "meta": {"source": "seed"}},
        "runs": {"a": {"layers": [128, 64], "epochs": 5, "meta": {"reported": 88.34}},
                 "b": {"optimizer": "sgd", "nesterov": True}},
        "grids": {"fam": {"dataset": "mnist", "grid": {"layers": [[64], [128, 64]],
                                                       "activation": ["relu", "tanh", "sigmoid"]},
                          "meta": {"note": "family"}}},
    }
    runs = sweep.expand_config(doc)
    assert list(runs) == ["a", "b", "fam-64-relu", "fam-64-tanh", "fam-64-sigmoid",
                          "fam-128x64-relu", "fam-128x64-tanh", "fam-128x64-sigmoid"]
    # run keys win over defaults; defaults fill the rest; verbose defaults to 2
    assert runs["a"]["options"] == {"verbose": 2, "dataset": "kmnist", "epochs": 5, "val_split": 0.1,
                                    "layers": [128, 64]}
    assert runs["a"]["meta"] == {"source": "seed", "reported": 88.34}
    assert runs["b"]["options"]["epochs"] == 3 and runs["b"]["options"]["nesterov"] is True
    # a grid's shared keys override defaults, grid values override both
    fam = runs["fam-128x64-tanh"]
    assert fam["options"]["dataset"] == "mnist" and fam["options"]["layers"] == [128, 64]
    assert fam["options"]["activation"] == "tanh" and fam["options"]["epochs"] == 3
    assert fam["meta"] == {"source": "seed", "note": "family"}
    assert "grid" not in fam["options"]


def test_grid_names_fall_back_to_indices_when_labels_collide():
    runs = sweep.expand_config({"grids": {"g": {"grid": {"dataset": ["a b", "a_b"]}}}})
    assert list(runs) == ["g-0", "g-1"]
    assert [r["options"]["dataset"] for r in runs.values()] == ["a b", "a_b"]


@pytest.mark.parametrize("doc, message", [
    ({}, "no runs"),
    ({"run": {"a": {}}}, "unknown top-level"),
    ({"runs": {"a b": {}}}, "may use only letters"),
    ({"runs": {"a": {"opts": {"x": 1}}}}, "only 'meta' may be a sub-table"),
    ({"runs": {"a": {"meta": 3}}}, "'meta' must be a table"),
    ({"runs": {"g-1": {}}, "grids": {"g": {"grid": {"epochs": [1]}}}}, "used twice"),
    ({"grids": {"g": {"epochs": 2}}}, "needs grid"),
    ({"grids": {"g": {"grid": {"epochs": 2}}}}, "non-empty list"),
])
def test_malformed_layouts_are_rejected(doc, message):
    with pytest.raises(SweepConfigError, match=message):
        sweep.expand_config(doc)


def test_load_config_reads_toml_and_reports_bad_toml(tmp_path):
    good = _write(tmp_path / "s.toml", """
[defaults]
epochs = 2
[runs.one]
layers = [16, 8]
batch_norm = true
[runs.one.meta]
reported = 90.5
""")
    runs = sweep.load_config(good)
    assert runs == {"one": {"options": {"verbose": 2, "epochs": 2, "layers": [16, 8], "batch_norm": True},
                            "meta": {"reported": 90.5}}}
    bad = _write(tmp_path / "bad.toml", "[runs.one\nlayers = 3\n")
    with pytest.raises(SweepConfigError, match="not valid TOML"):
        sweep.load_config(bad)


# ------------------------------------------------------------------ argv mapping

def test_options_to_argv_maps_keys_lists_and_booleans():
    argv = sweep.options_to_argv({"layers": [128, 64], "weight_decay": 0.0005, "batch_norm": True,
                                  "nesterov": False, "optimizer": "sgd", "early_stopping": 3, "lr": 1e-3})
    assert argv == ["--layers", "128", "64", "--weight-decay", "0.0005", "--batch-norm",
                    "--optimizer", "sgd", "--early-stopping", "3", "--lr", "0.001"]


def test_build_run_argv_parses_with_fastnn_train_parser(tmp_path):
    options = {"dataset": "kmnist", "layers": [128, 64], "optimizer": "sgd", "nesterov": True,
               "weight_decay": 0.0005, "dropout": 0.2, "batch_norm": True, "val_split": 0.1,
               "early_stopping": 2, "schedule": "step", "verbose": 2, "label_smoothing": 0.1}
    argv = sweep.build_run_argv("r", options, tmp_path / "r")
    args = build_train_parser().parse_args(argv)
    assert args.layers == [128, 64] and args.nesterov and args.batch_norm
    assert args.weight_decay == 0.0005 and args.dropout == 0.2 and args.early_stopping == 2
    assert args.out == str(tmp_path / "r") and args.verbose == 2 and args.label_smoothing == 0.1


@pytest.mark.parametrize("options, message", [
    ({"layer": [128]}, r"run 'r': unknown key 'layer' \(fastnn-train has no --layer\); did you mean 'layers'"),
    ({"colour": "red"}, r"unknown key 'colour'.*\[runs.<name>.meta\]"),
    ({"out": "x"}, "key 'out' is not allowed"),
    ({"threads": 2}, "key 'threads' is not allowed"),
    ({"epochs": 0}, r"run 'r': argument --epochs: must be"),
    ({"optimizer": "lbfgs"}, r"run 'r': argument --optimizer: invalid choice"),
    ({"epochs": True}, r"run 'r': argument --epochs: expected one argument"),
    ({"layers": [[1]]}, r"run 'r': value \[1\] cannot be"),
])
def test_bad_keys_and_values_fail_with_run_name(tmp_path, options, message):
    with pytest.raises(SweepConfigError, match=message):
        sweep.build_run_argv("r", options, tmp_path / "r")


def test_a_typo_fails_the_whole_sweep_before_anything_runs(tmp_path, capsys):
    config = _write(tmp_path / "typo.toml", """
[runs.fine]
epochs = 1
[runs.typo]
learning_rate = 0.1
""")
    out = tmp_path / "out"
    assert sweep.main([config, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "run 'typo': unknown key 'learning_rate'" in err
    assert not out.exists()  # nothing trained, no folder made


# ------------------------------------------------------------------ workers

@pytest.mark.parametrize("n_runs, jobs, threads, cores, expected", [
    (10, None, None, 8, (8, 1)),     # one run per core
    (2, None, None, 8, (2, 4)),      # few runs: the spare cores become threads
    (10, 2, None, 8, (2, 4)),
    (10, None, 2, 8, (4, 2)),
    (10, 3, 2, 8, (3, 2)),
    (10, 8, 4, 8, (2, 4)),           # jobs bounded by cores // threads
    (1, 8, None, 8, (1, 8)),         # bounded by the number of runs
    (5, None, 16, 8, (1, 16)),       # explicit oversubscription: one run at a time
    (0, None, None, 2, (1, 2)),
])
def test_plan_workers_never_oversubscribes_by_default(n_runs, jobs, threads, cores, expected):
    parallel, t = sweep.plan_workers(n_runs, jobs, threads, cores)
    assert (parallel, t) == expected
    if threads is None or threads <= cores:
        assert parallel * t <= cores


def test_plan_workers_rejects_nonpositive():
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        sweep.plan_workers(3, jobs=0, cores=4)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        sweep.plan_workers(3, threads=0, cores=4)


def test_worker_env_pins_thread_counts():
    env = sweep.worker_env(3, base={"PATH": "/bin", "NUMBA_NUM_THREADS": "16"})
    assert all(env[v] == "3" for v in sweep.THREAD_ENV_VARS)
    assert env["PATH"] == "/bin"
    assert os.path.isdir(os.path.join(env["PYTHONPATH"].split(os.pathsep)[0], "fastnn"))


def test_last_error_line():
    log = "fastnn-train: kmnist ...\nTraceback (most recent call last):\n  File x\nValueError: bad thing\n\n"
    assert sweep.last_error_line(log) == "ValueError: bad thing"
    assert sweep.last_error_line("a\nlast words\n", 3) == "last words"
    assert sweep.last_error_line("", 3) == "exit status 3"


# ------------------------------------------------------------------ a real sweep

def _sweep_toml(tmp_path, data_dir):
    # numpy backend: no Numba compilation in the worker processes, so the test stays fast
    return _write(tmp_path / "tiny.toml", f"""
[defaults]
dataset = "{data_dir}"
backend = "numpy"
epochs = 3
batch_size = 32
val_split = 0.2
no_plots = true

[runs.good]
layers = [16]
lr = 0.01
[runs.good.meta]
reported = 40.0
source = "a seed | with a pipe"

[runs.broken]
dataset = "{tmp_path / 'no_such_dataset'}"
""")


def test_tiny_sweep_end_to_end_failure_and_resume(tmp_path, write_tiny_idx, capsys):
    data = tmp_path / "data"
    write_tiny_idx(data, n_train=200, n_test=50, rows=6, cols=6, n_classes=4)
    config = _sweep_toml(tmp_path, data)
    out = tmp_path / "sweep"

    assert sweep.main([config, "--out", str(out), "--jobs", "2"]) == 1  # 1: a run failed
    printed = capsys.readouterr().out
    assert "broken: FAILED" in printed and "good: test" in printed

    # the good run wrote its usual fastnn-train folder plus the sweep's log and record
    for name in ("summary.json", "history.csv", "model.fastnn", "log.txt", "sweep_run.json"):
        assert (out / "good" / name).is_file(), name
    summary = json.loads((out / "good" / "summary.json").read_text())
    record = json.loads((out / "good" / "sweep_run.json").read_text())
    assert record["status"] == "ok" and record["returncode"] == 0 and record["threads"] == 1
    assert "--backend numpy" in (out / "good" / "log.txt").read_text()

    with open(out / "results.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["good", "broken"]
    good, broken = rows["good"], rows["broken"]
    assert good["status"] == "ok" and good["error"] == ""
    assert float(good["test_accuracy"]) == pytest.approx(100 * summary["test_accuracy"])
    assert float(good["val_accuracy"]) == pytest.approx(100 * summary["final"]["val"]["accuracy"])
    assert float(good["delta"]) == pytest.approx(100 * summary["test_accuracy"] - 40.0)
    assert int(good["epochs_run"]) == 3
    val = summary["history"]["val_accuracy"]
    assert int(good["best_epoch"]) == 1 + val.index(max(val))
    assert float(good["samples_per_second"]) > 0 and float(good["wall_seconds"]) > 0
    assert good["layers"] == "16" and good["dataset"] == "data" and float(good["lr"]) == 0.01
    assert broken["status"] == "failed"
    assert "fastnn-train: error:" in broken["error"] and "no_such_dataset" in broken["error"]

    md = (out / "results.md").read_text()
    assert "| good |" in md and "| broken |" in md and "failed" in md and "fastnn-train: error:" in md
    compared = md.split("## Compared with reported numbers")[1]
    assert "| good | a seed \\| with a pipe | 40.00 | " in compared and "broken" not in compared
    assert good["source"] == "a seed | with a pipe"
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # resume: the finished run is skipped (untouched), the failed one is tried again
    mtime = os.stat(out / "good" / "summary.json").st_mtime_ns
    assert sweep.main([config, "--out", str(out), "--jobs", "2", "--no-plot"]) == 1
    printed = capsys.readouterr().out
    assert "1 to run, 1 already finished" in printed and "good:" not in printed.split("output in")[1]
    assert os.stat(out / "good" / "summary.json").st_mtime_ns == mtime

    # --force with --only reruns the finished run
    assert sweep.main([config, "--out", str(out), "--only", "good", "--force", "--no-plot"]) == 0
    assert os.stat(out / "good" / "summary.json").st_mtime_ns != mtime


def test_is_finished_needs_summary_ok_status_and_same_argv(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    argv = ["--epochs", "2", "--out", str(run_dir)]
    assert not sweep.is_finished(run_dir, argv)
    (run_dir / "sweep_run.json").write_text(json.dumps({"argv": argv, "status": "ok"}))
    assert not sweep.is_finished(run_dir, argv)  # no summary yet (interrupted before the end)
    (run_dir / "summary.json").write_text('{"test_accuracy": 0.5')  # torn file
    assert not sweep.is_finished(run_dir, argv)
    (run_dir / "summary.json").write_text('{"test_accuracy": 0.5}')
    assert sweep.is_finished(run_dir, argv)
    assert not sweep.is_finished(run_dir, ["--epochs", "3", "--out", str(run_dir)])  # the TOML changed
    (run_dir / "sweep_run.json").write_text(json.dumps({"argv": argv, "status": "incomplete"}))
    assert not sweep.is_finished(run_dir, argv)


def test_run_one_records_a_timeout(tmp_path):
    run_dir = tmp_path / "slow"
    record = sweep.run_one("slow", ["--epochs", "1", "--out", str(run_dir)], str(run_dir), threads=1, timeout=0.01)
    assert record["status"] == "failed" and record["returncode"] is None
    assert record["error"] == "timed out after 0.01 s (--timeout)"
    assert json.loads((run_dir / "sweep_run.json").read_text())["status"] == "failed"
    assert not sweep.is_finished(run_dir, record["argv"])
