"""``benchmarks/time_to_accuracy.py``: the record it writes, its thresholds and stopping, its
PyTorch twin of a recipe, and the README table ``benchmarks/results.py`` renders from records.

Tiny runs (2,000 training images, 2 epochs): structure and logic only, never speed.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "time_to_accuracy.py"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tta = _load("time_to_accuracy", SCRIPT)
results = _load("results", ROOT / "benchmarks" / "results.py")


def _has_torch():
    return importlib.util.find_spec("torch") is not None


def _run(tmp_path, engine):
    out = tmp_path / f"{engine}.json"
    argv = [sys.executable, str(SCRIPT), "mnist-defaults", "--engine", engine, "--epochs", "2", "--train-limit", "2000",
            "--test-limit", "500", "--out", str(out)]
    # The checkout's fastnn, as pytest imports it (pythonpath = .), not an installed copy: a
    # script's sys.path starts at benchmarks/, and a non-editable install is no git checkout,
    # so its provenance would have no commit.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.fixture(scope="module")
def fastnn_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("tta"), "fastnn")


def test_the_record_holds_every_epoch_with_its_provenance(fastnn_run):
    rec, printed = fastnn_run
    assert rec["table"] == "tta" and rec["name"] == "mnist-defaults-fastnn-t1" and rec["threads"] == 1
    assert rec["dataset"] == "mnist" and rec["thresholds"] == [0.98, 0.99]
    assert (rec["n_train"], rec["n_test"], rec["epochs_planned"]) == (2000, 500, 2)
    epochs = rec["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert 0 < epochs[0]["train_seconds"] < epochs[1]["train_seconds"] == rec["train_seconds"]
    assert 0 < epochs[0]["cpu_seconds"] < epochs[1]["cpu_seconds"] == rec["cpu_seconds"]
    assert rec["best_accuracy"] == max(e["test_accuracy"] for e in epochs) and 0.5 < rec["best_accuracy"] < 0.98
    assert rec["reached"] == {"0.98": None, "0.99": None} and not rec["stopped_early"]
    assert rec["eval_seconds"] > 0 and rec["compile_seconds"] > 0  # both kept off the training clock
    origin = rec["provenance"]
    assert len(origin["commit"].split("+")[0]) == 40 and origin["cpu"]
    assert len(origin["load_average"]) == len(origin["load_average_end"]) == 3
    assert {"fastnn", "numpy", "numba", "python"} <= set(rec["versions"])
    assert "98%: not reached in 2 epochs, best" in printed


def test_thresholds_and_stopping_at_the_highest():
    accs = iter([0.97, 0.985, 0.982, 0.991, 0.995])
    tracker = tta.Tracker(lambda: next(accs), (0.98, 0.99), stop=True)
    done = []
    for _ in range(4):
        tracker.clock.start()
        done.append(tracker.epoch_end())
    assert done == [False, False, False, True]  # stops once 99% is reached
    reached = tracker.reached()
    assert reached["0.98"]["epoch"] == 2 and reached["0.99"]["epoch"] == 4
    go_on = tta.Tracker(lambda: 0.999, (0.98, 0.99), stop=False)
    go_on.clock.start()
    assert go_on.epoch_end() is False  # without --stop: every epoch of the recipe


def test_every_recipe_is_a_valid_fastnn_train_command():
    from fastnn.cli import build_train_parser

    parser = build_train_parser()
    for name in tta.RECIPES:
        args = parser.parse_args(tta.recipe_argv(name))
        assert args.dataset in tta.THRESHOLDS and args.val_split == 0 and not args.tta, name
    best = parser.parse_args(tta.recipe_argv("mnist-1600-aug"))
    assert (best.layers, best.epochs, best.lr, best.nesterov, best.aug_shift) == ([1600], 35, 0.2, True, 2)


def test_the_table_says_when_a_threshold_was_not_reached(fastnn_run, tmp_path):
    rec, _ = fastnn_run
    path = results.record_tta(rec, records=tmp_path)
    assert path == tmp_path / "tta" / "mnist-defaults-fastnn-t1.json"
    reached = {**rec, "name": "mnist-1600-aug-fastnn-t1", "recipe": "mnist-1600-aug",
               "reached": {"0.98": rec["epochs"][1], "0.99": None}}
    recs = {"a": rec, "b": reached}
    table = results.tta_table(recs)
    assert f"not reached in 2 epochs, best {results.pct(rec['best_accuracy'])}%" in table
    assert f"| MNIST 98% | **`mnist-1600-aug`** | {rec['epochs'][1]['train_seconds']:.1f} s (epoch 2, CPU " in table
    assert "| not run | not run | not run |" in table  # no 2-thread nor PyTorch records here
    assert str(rec["provenance"]["commit"])[:9] in table


@pytest.mark.skipif(not _has_torch(), reason="PyTorch is not installed (an optional peer)")
def test_the_pytorch_twin_trains_the_same_recipe(fastnn_run, tmp_path):
    """Same initial weights, shuffling, optimizer and schedule: on the unaugmented defaults the
    two reach the same test accuracy to within a few images."""
    ours, _ = fastnn_run
    theirs, _ = _run(tmp_path, "torch")
    assert theirs["engine"] == "torch" and theirs["name"] == "mnist-defaults-torch-t1" and "torch" in theirs["versions"]
    for a, b in zip(ours["epochs"], theirs["epochs"]):
        assert abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.01
