"""fastnn-train and fastnn-evaluate: bad arguments, missing data, and an end-to-end
run on real MNIST (one short epoch) checking every output file."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn.cli import evaluate_main, make_run_dir, train_main



def _have_mnist():
    """Real MNIST reachable offline: $FASTNN_DATA, the cache, or the copy shipped with fastnn."""
    from fastnn.datasets import DatasetNotFoundError, dataset_info

    try:
        return dataset_info("mnist", download=False) is not None
    except DatasetNotFoundError:
        return False


needs_mnist = pytest.mark.skipif(not _have_mnist(), reason="real MNIST not found (not in $FASTNN_DATA, the "
                                                           "cache or the package's data/mnist)")


@pytest.mark.parametrize("argv,message", [
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1, got '0'"),
    (["--epochs", "two"], "argument --epochs: must be an integer >= 1, got 'two'"),
    (["--batch-size", "-5"], "argument --batch-size: must be an integer >= 1, got '-5'"),
    (["--lr", "0"], "argument --lr: must be a number > 0, got '0'"),
    (["--lr", "nan"], "argument --lr: must be a number > 0, got 'nan'"),
    (["--layers"], "argument --layers: expected at least one argument"),
    (["--layers", "128", "0"], "argument --layers: must be an integer >= 1, got '0'"),
    (["--optimizer", "adagrad"], "argument --optimizer: invalid choice: 'adagrad'"),
    (["--backend", "torch"], "argument --backend: invalid choice: 'torch'"),
    (["--dropout", "1"], "argument --dropout: must be a number in [0, 1), got '1'"),
    (["--val-split", "1.5"], "argument --val-split: must be a number in [0, 1), got '1.5'"),
    (["--momentum", "1"], "argument --momentum: must be a number in [0, 1), got '1'"),
    (["--weight-decay", "-1"], "argument --weight-decay: must be a number >= 0, got '-1'"),
    (["--threads", "0"], "argument --threads: must be an integer >= 1, got '0'"),
    (["--early-stopping", "0"], "argument --early-stopping: must be an integer >= 1, got '0'"),
    (["--schedule", "linear"], "argument --schedule: invalid choice: 'linear'"),
    (["--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_train_bad_arguments_exit_2_with_argparse_message(capsys, argv, message):
    assert train_main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("usage: fastnn-train") and f"fastnn-train: error: {message}" in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize("argv,message", [
    (["--early-stopping", "3"], "--early-stopping needs a validation set: pass --val-split"),
    (["--optimizer", "adam", "--momentum", "0.9"], "--momentum applies to sgd and rmsprop, not adam"),
    (["--optimizer", "adam", "--nesterov"], "--nesterov applies to sgd only"),
    (["--threads", "100000"], "threads must be an integer in [1, "),
])
def test_train_inconsistent_arguments_fail_before_loading_data(capsys, tmp_path, argv, message):
    assert train_main(argv + ["--dataset", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastnn-train: error: {message}") and "Traceback" not in err


def test_missing_dataset_gets_the_loaders_message(capsys, tmp_path):
    assert train_main(["--dataset", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastnn-train: error: ") and "nowhere" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing written for a failed run


def test_evaluate_bad_model_file(capsys, tmp_path):
    assert evaluate_main([str(tmp_path / "missing.fastnn")]) == 2
    assert "fastnn-evaluate: error: no saved model at" in capsys.readouterr().err
    (tmp_path / "junk.fastnn").write_text("junk")
    assert evaluate_main([str(tmp_path / "junk.fastnn")]) == 2
    assert "is not a fastnn model" in capsys.readouterr().err
    assert evaluate_main([]) == 2
    assert "the following arguments are required: model" in capsys.readouterr().err


def test_help_exits_zero(capsys):
    assert train_main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--data-dir", "--epochs", "--batch-size", "--optimizer", "--lr", "--momentum",
                 "--weight-decay", "--activation", "--dropout", "--batch-norm", "--val-split", "--early-stopping",
                 "--schedule", "--backend", "--threads", "--seed", "--out"):
        assert flag in text


def test_run_dirs_are_timestamped_and_unique(tmp_path):
    a = make_run_dir(root=str(tmp_path / "runs"))
    b = make_run_dir(root=str(tmp_path / "runs"))
    assert a != b and os.path.isdir(a) and os.path.isdir(b)
    assert len(os.path.basename(a)) == len("20240101-120000")
    assert make_run_dir(str(tmp_path / "given")) == str(tmp_path / "given")


def test_warm_up_leaves_the_model_untouched():
    from fastnn.cli import warm_up

    rng = np.random.default_rng(0)
    x, y = rng.random((50, 6)).astype(np.float32), rng.integers(0, 3, 50)
    model = fastnn.MLP([4], dropout=0.1, backend="numpy").build(6, 3)
    before = model.get_weights()
    assert warm_up(model, x, y, 16) >= 0
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.optimizer.iterations == 0


def _is_png(path):
    data = Path(path).read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


@needs_mnist
def test_train_and_evaluate_end_to_end_on_mnist(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--layers", "64", "--epochs", "1", "--train-limit", "6000", "--val-split", "0.1", "--backend", "numpy",
            "--lr", "0.003", "--out", str(out), "--verbose", "1", "--seed", "1"]
    assert train_main(argv) == 0
    captured = capsys.readouterr()
    assert "Epoch 1/1" in captured.err  # the progress bar
    assert "test accuracy: 0." in captured.out

    summary = json.loads((out / "summary.json").read_text())
    assert 0.85 < summary["test_accuracy"] <= 1 and 0 < summary["test_loss"] < 1
    assert summary["final"]["test"] == {"accuracy": summary["test_accuracy"], "loss": summary["test_loss"]}
    assert set(summary["final"]) == {"train", "val", "test"} and summary["final"]["val"]["accuracy"] > 0.8
    assert summary["dataset"]["n_train"] == 5400 and summary["dataset"]["n_val"] == 600
    assert summary["config"]["args"]["layers"] == [64] and summary["config"]["model"]["layers"] == [64]
    assert summary["backend"] == "numpy" and summary["threads"] is None and summary["compile_seconds"] == 0
    assert summary["thread_independent"] is False  # NumPy's BLAS threads can change its dense products' bits
    assert set(summary["versions"]) >= {"fastnn", "numpy", "numba", "python"}
    origin = summary["provenance"]  # what a recorded result needs to be traced (fastnn.provenance)
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", origin["commit"]) and origin["cpu"] and origin["logical_cpus"] >= 1
    assert len(origin["load_average"]) == 3 and len(origin["load_average_end"]) == 3
    from fastnn.backends.target import TARGET  # the CPU target and the first-layer path chosen for it
    assert origin["numba_target"]["cpu"] == TARGET.cpu and origin["numba_target"]["first_layer"] in ("lists", "blas")
    assert summary["history"]["epoch"] == [1] and len(summary["history"]["val_accuracy"]) == 1
    assert summary["epochs"][0]["seconds"] > 0 and summary["epochs"][0]["samples_per_second"] > 0
    assert np.array(summary["confusion_matrix"]).sum() == 10000

    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds",
                             "samples_per_second", "lr"]
    assert len(rows) == 1 and float(rows[0]["val_accuracy"]) == pytest.approx(summary["history"]["val_accuracy"][0])

    for png in ("loss.png", "accuracy.png", "confusion_matrix.png"):
        assert _is_png(out / png), png
    import matplotlib.image

    assert matplotlib.image.imread(out / "confusion_matrix.png").ndim == 3

    model = fastnn.load(out / "model.fastnn")
    (_, _), (x_test, y_test) = fastnn.load_dataset("mnist")
    assert model.evaluate(x_test, y_test)[1] == pytest.approx(summary["test_accuracy"])

    gallery = tmp_path / "gallery.png"
    assert evaluate_main([str(out / "model.fastnn"), "--dataset", "mnist", "--backend", "numpy",
                          "--gallery", str(gallery), "--gallery-size", "16"]) == 0
    text = capsys.readouterr().out
    assert f"accuracy {summary['test_accuracy']:.4f}" in text
    assert "precision" in text and text.count("\n") >= 12  # header + 10 classes + total
    assert _is_png(gallery)


@needs_mnist
def test_tta_flag_reports_both_accuracies(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--layers", "32", "--epochs", "1", "--train-limit", "3000", "--val-split", "0.1", "--backend", "numpy",
            "--out", str(out), "--verbose", "0", "--no-plots", "--tta", "2"]
    assert train_main(argv) == 0
    assert "(without TTA 0." in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tta"] == 2 and set(summary["final"]) == {"train", "val", "test", "test_no_tta"}
    model = fastnn.load(out / "model.fastnn")
    (_, _), (x_test, y_test) = fastnn.load_dataset("mnist")
    assert model.evaluate(x_test, y_test, tta=2)[1] == pytest.approx(summary["test_accuracy"])
    assert model.evaluate(x_test, y_test)[1] == pytest.approx(summary["final"]["test_no_tta"]["accuracy"])
    assert summary["test_accuracy"] != summary["final"]["test_no_tta"]["accuracy"]  # 2 views change some calls
    assert evaluate_main([str(out / "model.fastnn"), "--dataset", "mnist", "--backend", "numpy", "--tta", "2"]) == 0
    assert f"with TTA (2 views): accuracy {summary['test_accuracy']:.4f}" in capsys.readouterr().out
    assert train_main(argv + ["--tta", "-1"]) == 2


@needs_mnist
def test_console_script_module_runs_without_traceback(tmp_path):
    """The real process: a bad value exits 2 with the argparse message."""
    code = "import sys; from fastnn.cli import train_main; sys.exit(train_main())"
    proc = subprocess.run([sys.executable, "-c", code, "--epochs", "-1"], capture_output=True, text=True,
                          cwd=Path(fastnn.__file__).parent.parent, timeout=120)
    assert proc.returncode == 2 and "fastnn-train: error: argument --epochs" in proc.stderr
    assert "Traceback" not in proc.stderr
