"""What a newcomer sees: progress output on and off a terminal, the raw-pixel warning,
--version and help texts, the run folder, fastnn-evaluate's default data set, class names."""

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import datasets
from fastnn.callbacks import ProgressBar
from fastnn.cli import build_evaluate_parser, build_train_parser, evaluate_main, export_main, train_main

REPO = Path(__file__).resolve().parents[1]


def blobs(n=300, d=16, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 3
    y = rng.integers(0, k, n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


# progress output ------------------------------------------------------------------------------

def test_progress_off_a_terminal_is_one_plain_line_per_epoch():
    x, y = blobs()
    out = io.StringIO()  # not a terminal, as a pipe or a CI log
    fastnn.MLP([8], backend="numpy").fit(x, y, epochs=3, batch_size=16, validation_split=0.1, verbose=0,
                                         callbacks=[ProgressBar(1, file=out)])
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 4, text  # three lines, each ended, none blank
    for epoch, line in enumerate(lines[:3], start=1):
        assert re.fullmatch(rf"Epoch {epoch}/3 - \d+\.\ds - loss=\d\.\d{{4}} accuracy=\d\.\d{{4}} "
                            r"val_loss=\d\.\d{4} val_accuracy=\d\.\d{4}", line), line


def test_progress_bar_keeps_every_number_within_80_columns():
    term = FakeTerminal()
    bar = ProgressBar(1, file=term, ncols=80)
    bar.on_train_begin({"epochs": 12, "samples": 54000})
    bar.on_epoch_begin(9)  # "Epoch 10/12": the widest label up to 99 epochs
    for seen in (16384, 32768):
        bar.on_chunk_end(9, {"loss": 0.12345, "accuracy": 0.96789, "samples": seen})
        bar.bar.refresh()  # tqdm draws at most every 0.1 s; draw every chunk here
    bar.on_epoch_end(9, {"loss": 0.1, "accuracy": 0.97, "val_loss": 0.08, "val_accuracy": 0.975, "seconds": 1.0})
    screens = [s.rstrip() for s in re.split(r"[\r\n]", term.getvalue()) if s.strip()]
    assert all(len(s) <= 80 for s in screens), [len(s) for s in screens]
    mid = [s for s in screens if "%" in s and "loss=" in s]
    assert len(mid) == 2 and mid[0].startswith("Epoch 10/12 loss=0.1235 accuracy=0.9679 |") and "30%" in mid[0]
    assert screens[-1].startswith("Epoch 10/12 loss=0.1000 accuracy=0.9700 val_loss=0.0800 val_accuracy=0.9750")
    # the same names mid-epoch as at the end (History's keys)
    assert re.findall(r"(\w+)=", mid[1]) == ["loss", "accuracy"]
    assert re.findall(r"(\w+)=", screens[-1]) == ["loss", "accuracy", "val_loss", "val_accuracy"]


def _read_all(fd):
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other end is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("columns", [0, 80])
def test_a_terminal_without_width_gets_plain_lines(columns):
    """``script`` without a real terminal reports 0 columns: tqdm would print blank lines there."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    x, y = blobs()
    with open(slave, "w", closefd=True) as term:
        assert term.isatty()
        fastnn.MLP([8], backend="numpy").fit(x, y, epochs=2, batch_size=16, verbose=0,
                                             callbacks=[ProgressBar(1, file=term)])
    text = _read_all(master)
    os.close(master)
    lines = [line for line in re.split(r"[\r\n]+", text) if line.strip()]
    if columns == 0:
        assert [line.split(" - ")[0] for line in lines] == ["Epoch 1/2", "Epoch 2/2"], text
    else:
        assert "|" in text and all(len(line) <= columns for line in lines), text  # a bar, within the width
        assert lines[-1].startswith("Epoch 2/2 loss=")


def test_fastnn_train_through_a_pipe_prints_plain_epoch_lines(tmp_path, tiny_idx_dir):
    code = "import sys; from fastnn.cli import train_main; sys.exit(train_main())"
    proc = subprocess.run([sys.executable, "-c", code, "--dataset", str(tiny_idx_dir), "--layers", "4",
                           "--epochs", "2", "--batch-size", "4", "--val-split", "0.2", "--backend", "numpy",
                           "--no-plots", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "\r" not in proc.stderr and all(line.strip() for line in lines), proc.stderr
    epochs = [line for line in lines if line.startswith("Epoch ")]
    assert [line.split(" - ")[0] for line in epochs] == ["Epoch 1/2", "Epoch 2/2"]
    assert all("val_accuracy=" in line for line in epochs)
    assert proc.stdout.splitlines()[-1] == f"run folder: {tmp_path / 'run'}"


# raw 0-255 pixels ---------------------------------------------------------------------------

def test_raw_pixel_input_warns_with_the_fix():
    x, y = blobs(d=16)
    pixels = np.clip(np.rint(x * 30 + 128), 0, 255).astype(np.float32)
    with pytest.warns(UserWarning, match=r"raw 0-255 pixel values .* model.fit\(x / 255.0, y\)") as record:
        fastnn.MLP([8], backend="numpy").fit(pixels, y, epochs=1, verbose=0)
    assert record[0].filename == __file__  # points at the caller's fit, not inside fastnn


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # max_iter=1 does not converge, as it says
def test_raw_pixel_warning_through_the_estimator_points_at_the_caller():
    pytest.importorskip("sklearn", reason="fastnn.MLPClassifier needs scikit-learn (pip install 'fastnn[sklearn]')")
    x, y = blobs(d=16)
    pixels = np.clip(np.rint(x * 30 + 128), 0, 255)
    with pytest.warns(UserWarning, match="raw 0-255 pixel values") as record:
        fastnn.MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, backend="numpy").fit(pixels, y)
    assert [w.filename for w in record if "raw 0-255" in str(w.message)] == [__file__]


@pytest.mark.parametrize("transform", [
    lambda x: np.clip(x / 10 + 0.5, 0, 1),  # scaled pixels
    lambda x: x,                            # standardised features (negative values)
    lambda x: np.abs(x) * 7.3,              # non-negative measurements, not whole numbers
    lambda x: np.clip(np.rint(np.abs(x)), 0, 4),  # small whole-number counts (max 4), not pixels
])
def test_no_raw_pixel_warning_for_other_inputs(transform):
    x, y = blobs(d=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastnn.MLP([8], backend="numpy").fit(transform(x).astype(np.float32), y, epochs=1, verbose=0)


# --version, help, where things go -------------------------------------------------------------

def _help(parser):
    return parser.format_help()


def _all_parsers():
    from fastnn import sweep
    from fastnn.bench import cli as bench_cli

    helps = {"fastnn-train": _help(build_train_parser()), "fastnn-evaluate": _help(build_evaluate_parser()),
             "fastnn-sweep": _help(sweep.build_parser())}
    with pytest.raises(SystemExit):
        bench_cli.parse_args(["--help"])
    return helps


def test_every_command_has_version(capsys):
    from fastnn import sweep
    from fastnn.bench import cli as bench_cli

    assert train_main(["--version"]) == 0
    assert evaluate_main(["--version"]) == 0
    assert export_main(["--version"]) == 0
    for call in (lambda: sweep.main(["--version"]), lambda: bench_cli.parse_args(["--version"])):
        with pytest.raises(SystemExit) as exc:
            call()
        assert exc.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{prog} {fastnn.__version__}" for prog in
                   ("fastnn-train", "fastnn-evaluate", "fastnn-export", "fastnn-sweep", "fastnn-bench")]


def test_help_says_where_each_command_writes(capsys):
    helps = _all_parsers()
    helps["fastnn-bench"] = capsys.readouterr().out
    assert "runs/YYYYmmdd-HHMMSS/" in helps["fastnn-train"] and "MLP() + fit()" in helps["fastnn-train"]
    assert "Writes no file" in helps["fastnn-evaluate"]
    assert "runs/sweeps/<config stem>/" in helps["fastnn-sweep"]
    assert "./bench_results" in helps["fastnn-bench"] and "argparse" not in helps["fastnn-bench"]
    shipped = [REPO / "benchmarks" / "sweeps" / name for name in ("best.toml", "seeds.toml")]
    for name, text in list(helps.items()) + [(p.name, p.read_text()) for p in shipped]:
        assert "/work/" not in text and "/tmp/" not in text, name  # no developer-machine paths


# fastnn-evaluate's data set -------------------------------------------------------------------

def _train_tiny(directory, out, capsys):
    assert train_main(["--dataset", str(directory), "--layers", "8", "--epochs", "3", "--batch-size", "4",
                       "--backend", "numpy", "--no-plots", "--verbose", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[-1] == f"run folder: {out}"  # every run names its folder last
    return json.loads((out / "summary.json").read_text())


def test_evaluate_defaults_to_the_training_data_set(tmp_path, write_tiny_idx, capsys, monkeypatch):
    data = tmp_path / "letters"
    write_tiny_idx(data, n_train=40, n_test=12)
    summary = _train_tiny(data, tmp_path / "run", capsys)
    model_path = str(tmp_path / "run" / "model.fastnn")
    assert fastnn.load(model_path).dataset_ == {"name": "letters", "path": str(data), "n_features": 20,
                                                "n_classes": 4, "image_shape": [5, 4]}
    monkeypatch.chdir(tmp_path.parent)  # the recorded path is absolute
    assert evaluate_main([model_path, "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"letters test set (12 images): accuracy {summary['test_accuracy']:.4f}")

    # a data set of another image size (MNIST) or with other classes is refused
    assert evaluate_main([model_path, "--dataset", "mnist", "--backend", "numpy"]) == 2
    err = capsys.readouterr().err
    assert "mnist (--dataset) has 28x28 images (784 features) but the model expects 5x4 images" in err
    other = tmp_path / "three"
    write_tiny_idx(other, n_classes=3)
    assert evaluate_main([model_path, "--dataset", str(other), "--backend", "numpy"]) == 2
    assert "three (--dataset) has 3 classes but the model has 4" in capsys.readouterr().err
    transposed = tmp_path / "wide"
    write_tiny_idx(transposed, rows=4, cols=5)
    assert evaluate_main([model_path, "--dataset", str(transposed), "--backend", "numpy"]) == 2
    assert "has 4x5 images (20 features) but the model expects 5x4 images" in capsys.readouterr().err
    # the recorded directory moved: say so, and how to point at it
    data.rename(tmp_path / "moved")
    assert evaluate_main([model_path, "--backend", "numpy"]) == 2
    assert f"trained on letters in {data}, which is not there any more; pass --dataset" in capsys.readouterr().err
    assert evaluate_main([model_path, "--dataset", str(tmp_path / "moved"), "--backend", "numpy"]) == 0
    assert capsys.readouterr().out.startswith("moved test set (12 images)")


def test_evaluate_names_classes_of_a_named_data_set(tmp_path, write_tiny_idx, capsys, monkeypatch):
    data = tmp_path / "named"
    write_tiny_idx(data, n_train=40, n_test=12)
    sha = {stem: hashlib.sha256(gzip.decompress((data / (stem + ".gz")).read_bytes())).hexdigest()
           for stem in datasets.FILES.values()}
    monkeypatch.setitem(datasets.DATASETS, "kana", datasets.DatasetSpec("kana", 4, sha, "", ("o", "ki", "su", "tsu")))
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path))
    monkeypatch.setitem(datasets.MIRRORS, "kana", [])
    (tmp_path / "kana").symlink_to(data)
    assert train_main(["--dataset", "kana", "--layers", "8", "--epochs", "1", "--backend", "numpy", "--verbose", "0",
                       "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    model_path = str(tmp_path / "run" / "model.fastnn")
    assert fastnn.load(model_path).dataset_["name"] == "kana" and fastnn.load(model_path).dataset_["path"] is None
    gallery = tmp_path / "gallery.png"
    assert evaluate_main([model_path, "--backend", "numpy", "--gallery", str(gallery)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("kana test set (12 images)")
    assert [row.split()[0] for row in table[2:6]] == ["o", "ki", "su", "tsu"]
    assert gallery.stat().st_size > 1000
    assert datasets.class_names("kmnist", 10) == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert datasets.class_names("mnist", 10) == tuple("0123456789")


def test_evaluate_model_without_record_says_it_uses_mnist(tmp_path, capsys, rewrite_model_config):
    model = fastnn.MLP([4], backend="numpy").build(784, 10)
    path = model.save(tmp_path / "old.fastnn")
    # as format 1 wrote it: no dataset record
    rewrite_model_config(path, lambda c: (c.pop("dataset"), c.update(format_version=1)))
    assert evaluate_main([path, "--backend", "numpy"]) == 0
    captured = capsys.readouterr()
    assert "does not say which data set it was trained on" in captured.err and "pass --dataset" in captured.err
    assert captured.out.startswith("mnist test set (10000 images)")


# plots -----------------------------------------------------------------------------------------

@pytest.fixture
def saved_figures(monkeypatch):
    """Figures the plotting functions would save, captured instead of written."""
    from fastnn import plotting, sweep_plots

    figures = []

    def keep(fig, path):
        figures.append(fig)
        return str(path)

    monkeypatch.setattr(plotting, "_save", keep)
    monkeypatch.setattr(sweep_plots, "_save", keep)
    return figures


def test_curves_show_validation_and_the_final_test_point(saved_figures):
    from fastnn.plotting import plot_curve

    plot_curve({"accuracy": [0.8, 0.9, 0.95], "val_accuracy": [0.85, 0.88, 0.9]}, "accuracy", "a.png", test=0.87)
    ax = saved_figures[0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"train", "validation", "test (final model): 0.8700"}
    assert list(lines["validation"].get_ydata()) == [0.85, 0.88, 0.9]
    assert list(lines["test (final model): 0.8700"].get_xydata()[0]) == [3, 0.87]  # at the last epoch


def test_sweep_chart_axis_starts_at_zero_and_legend_covers_no_curve(saved_figures):
    from fastnn.sweep_plots import plot_comparison

    rows = [{"run": f"run-{i}", "test_accuracy": 96.0 + i / 10, "val_accuracy": 97.0, "reported": 95.0,
             "status": "ok"} for i in range(14)]
    histories = {row["run"]: {"val_accuracy": [0.9, 0.95, 0.97]} for row in rows}
    plot_comparison(rows, histories, "c.png")
    fig = saved_figures[0]
    bars, curves = fig.axes[:2]
    assert bars.get_xlim()[0] == 0  # no zoomed 96-98% axis that makes 0.1 points look large
    assert [t.get_text() for t in bars.get_yticklabels()][0] == "run-0  96.00"  # exact values in the labels
    fig.canvas.draw()
    legend = curves.get_legend().get_window_extent()
    assert legend.x0 >= curves.get_window_extent().x1  # beside the axes, over no curve
