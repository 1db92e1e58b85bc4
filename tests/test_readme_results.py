"""The README's results tables are the recorded runs' numbers (benchmarks/results.py).

Fails when a generated table differs from what its records give (a number typed by hand or
left stale), when an accuracy in the Results section has no recorded run behind it (outside
the blocks marked as earlier sessions' unrecorded notes), or when a record lacks what makes it
traceable (commit, machine, load, threads, versions).
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("results", ROOT / "benchmarks" / "results.py")
results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results)


@pytest.fixture(scope="module")
def readme():
    return (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def records():
    return results.load_records()


def test_every_results_table_is_what_its_records_give(readme, records):
    assert results.render_readme(readme, records) == readme, \
        "README.md's results tables differ from benchmarks/results/: run python benchmarks/results.py write"


def test_every_accuracy_in_the_results_section_has_a_recorded_run(readme, records):
    assert results.unbacked_accuracies(readme, records) == []


def test_records_are_traceable(records):
    for table in results.TABLES:
        assert records[table], f"no recorded runs for {table}"
        for name, rec in records[table].items():
            if table in ("speed", "targets"):
                (_check_speed_record if table == "speed" else _check_targets_record)(name, rec)
                continue
            if table == "tta":
                _check_tta_record(name, rec)
                continue
            origin = rec["provenance"]
            assert len(origin["commit"].split("+")[0]) == 40, name
            assert origin["cpu"] and origin["logical_cpus"] >= 1 and len(origin["load_average"]) == 3, name
            assert rec["threads"] or rec["backend"] == "numpy", name
            assert {"fastnn", "numpy", "numba", "python"} <= set(rec["versions"]), name
            assert 0 < rec["test_accuracy"] <= 1 and rec["train_seconds"] > 0, name


def _check_speed_record(name, rec):
    origin = rec["provenance"]
    assert len(origin["commit"].split("+")[0]) == 40, name
    assert origin["cpu"] and origin["logical_cpus"] >= 1 and len(origin["load_average"]) == 3, name
    assert {"numpy", "numba", "python", "blas"} <= set(rec["machine"]) and rec["settings"]["threads"], name
    for cell in rec["records"]:
        assert cell["loadavg"] is not None and cell["threads"]["numba"] in rec["settings"]["threads"], name
        assert all(r["samples_per_s"] > 0 for r in cell["results"].values()), name


def _check_tta_record(name, rec):
    origin = rec["provenance"]
    assert len(origin["commit"].split("+")[0]) == 40 and origin["cpu"] and origin["logical_cpus"] >= 1, name
    assert len(origin["load_average"]) == len(origin["load_average_end"]) == 3, name
    assert rec["threads"] >= 1 and {"fastnn", "numpy", "numba", "python"} <= set(rec["versions"]), name
    assert rec["engine"] == "fastnn" or "torch" in rec["versions"], name
    assert rec["n_train"] == 60000 and rec["n_test"] == 10000, name  # real runs, not smoke tests
    epochs = rec["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1)) and len(epochs) <= rec["epochs_planned"]
    seconds = [e["train_seconds"] for e in epochs]
    assert seconds == sorted(seconds) and seconds[-1] == rec["train_seconds"] > 0, name
    for t in rec["thresholds"]:  # each threshold's epoch is the first at or above it
        first = next((e for e in epochs if e["test_accuracy"] >= t), None)
        assert rec["reached"][f"{t:g}"] == first, name
    assert rec["best_accuracy"] == max(e["test_accuracy"] for e in epochs), name


def test_a_changed_time_to_accuracy_is_caught(readme, records):
    rec = next(r for r in records["tta"].values() if r["engine"] == "fastnn" and any(r["reached"].values()))
    hit = next(h for h in rec["reached"].values() if h)
    shown = f"{hit['train_seconds']:.1f} s (epoch {hit['epoch']}"
    assert shown in readme
    edited = readme.replace(shown, f"0.1 s (epoch {hit['epoch']}", 1)
    assert edited != readme and results.render_readme(edited, records) != edited


def _check_targets_record(name, rec):
    # one fastnn-bench --target run: its commit, machine and load, and per CPU the child's own
    # provenance (the same commit), its clock and repeats, and the medians behind each ratio
    origin = rec["provenance"]
    assert len(origin["commit"].split("+")[0]) == 40 and not origin["commit"].endswith("+dirty"), name
    assert origin["cpu"] and origin["logical_cpus"] >= 1 and len(origin["load_average"]) == 3, name
    assert len(rec["load_average_end"]) == 3 and "--target" in rec["argv"], name
    for row in rec["targets"]:
        assert row["returncode"] == 0 and row["provenance"]["commit"] == origin["commit"], (name, row["target"])
        assert row["numba_target"]["cpu"] and row["clock"] and row["repeats"] >= 5 and row["loadavg"] is not None
        for cell in row["ratios"]:
            assert cell["threads"] >= 1 and cell["loadavg"] is not None and cell["numba"] > 0 and cell["numpy"] > 0
            assert cell["numba_over_numpy"] == cell["numba"] / cell["numpy"], (name, row["target"])


def test_a_changed_target_ratio_is_caught(readme, records):
    # a numba/numpy ratio of the generated per-CPU block ("Other CPUs"), edited by hand, makes the README stale
    cell = records["targets"][sorted(records["targets"])[0]]["targets"][-1]["ratios"][0]
    shown = f"| {cell['numba_over_numpy']:.2f}x ("
    assert shown in readme
    edited = readme.replace(shown, "| 4.50x (", 1)
    assert edited != readme and results.render_readme(edited, records) != edited


def test_a_changed_speed_number_is_caught(readme, records):
    # a samples/s cell of the generated speed block, edited by hand, makes the README stale
    cell = records["speed"][sorted(records["speed"])[0]]["records"][0]
    shown = f"{cell['results']['fit']['samples_per_s']:,.0f}"
    assert shown in readme
    edited = readme.replace(f"| {shown}", "| 1,234,567", 1)
    assert edited != readme and results.render_readme(edited, records) != edited


def test_a_changed_number_or_an_unrecorded_accuracy_is_caught(readme, records):
    # the checks can fail: a table cell changed by hand, and a typed accuracy in the prose
    row = next(r for r in records["defaults"].values() if r["dataset"] == "mnist")
    shown = results.pct(row["test_accuracy"]) + "%"
    assert shown in readme
    edited = readme.replace(shown, "12.34%", 1)
    assert results.render_readme(edited, records) != edited
    prose = readme.replace("### The seed projects", "It scored 12.34%.\n\n### The seed projects", 1)
    assert results.unbacked_accuracies(prose, records) == ["12.34%"]


def test_record_and_check_from_the_command_line(tmp_path):
    # record a fastnn-train folder into a scratch records folder; check exits 0 on the real README
    import json
    src = next((ROOT / "benchmarks" / "results" / "defaults").glob("*.json"))
    rec = json.loads(src.read_text())
    summary = {"test_accuracy": rec["test_accuracy"], "test_loss": rec["test_loss"], "dataset": {"name": "mnist"},
               "config": {"args": rec["settings"]}, "history": {"samples_per_second": [1000.0, 2000.0]},
               "epochs": [{"seconds": 1.5}, {"seconds": 2.5}], "epochs_run": 2, "train_seconds": 4.0,
               "backend": "numba", "threads": 1, "thread_independent": True, "provenance": rec["provenance"],
               "versions": rec["versions"], "final": {}}
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary))
    written = results.record("defaults", run, name="scratch", records=tmp_path / "records")
    got = json.loads(written[0].read_text())
    assert got["epoch_seconds"] == [1.5, 2.5] and got["samples_per_second"] == 1500.0 and got["name"] == "scratch"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "results.py"), "check"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
