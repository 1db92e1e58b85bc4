"""Smoke tests of ``fastnn-bench`` (fastnn/bench.py) on a tiny subset: it runs end to end,
writes JSON and a PNG, and its NumPy baseline and independent reference do the same math.

Speed is never asserted here; benchmarks/ holds the measurements.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnn import bench
from fastnn.backends import get_backend
from fastnn.backends.spec import dense_views

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_mnist():
    try:
        return bench.load_training_set("mnist", limit=512)
    except Exception as e:  # the data set is not on this machine
        pytest.skip(f"MNIST not available: {e}")


def test_cli_runs_end_to_end(tmp_path, capsys, tiny_mnist):
    argv = ["--dataset", "mnist", "--layers", "32", "16", "--batch-sizes", "8", "64", "--limit", "512",
            "--runners", "numba", "numpy", "reference", "--repeats", "1", "--max-seconds", "0.1",
            "--no-compile", "--peak-size", "128", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "numba/numpy" in printed and "numpy/reference" in printed
    result = json.loads((tmp_path / "bench.json").read_text())
    assert [r["batch_size"] for r in result["records"]] == [8, 64]
    for rec in result["records"]:
        assert rec["layers"] == [784, 32, 16, 10] and rec["n_samples"] == 512
        assert set(rec["results"]) == {"numba", "numpy", "reference"}
        for res in rec["results"].values():
            assert res["samples_per_s"] > 0 and len(res["times"]) == 1
            assert res["samples"] <= 512
    assert result["machine"]["numpy"] == np.__version__
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--batch-sizes", "0"])
    with pytest.raises(ValueError, match="unknown runner"):
        bench.available_runners(["tensorflow"])


def test_training_flops_per_sample():
    # 784-128-64-10: forward 2*MACs, dW 2*MACs, dx 2*MACs except the input layer's.
    macs = 784 * 128 + 128 * 64 + 64 * 10
    assert bench.train_flops_per_sample([784, 128, 64, 10]) == 6 * macs - 2 * 784 * 128


def test_reference_loop_matches_numpy_backend(tiny_mnist):
    """The independent loop and fastnn's NumPy backend train identically (the baseline is fair)."""
    x, y = tiny_mnist
    weights = bench.he_weights([784, 32, 16, 10], seed=3)
    order = bench.epoch_order(len(x), seed=1)
    n_steps, bs = 6, 50

    fast = bench.make_runner("numpy", x, y, weights, lr=0.05)
    net, opt = fast.net, bench.build_sgd(fast.net)
    fast_loss, fast_correct = np.zeros(n_steps), np.zeros(n_steps, np.int64)
    applied = get_backend("numpy").train_steps(x, y, order, 0, n_steps, bs, net, opt, np.full(n_steps, 0.05), 0, 0.0,
                                               np.zeros(8), fast_loss, fast_correct)
    ref = bench.load_reference().ReferenceMLP(weights, lr=0.05)
    ref_loss, ref_correct = np.zeros(n_steps), np.zeros(n_steps, np.int64)
    assert applied == ref.train_steps(x, y, order, 0, n_steps, bs, ref_loss, ref_correct) == n_steps

    np.testing.assert_allclose(ref_loss, fast_loss, rtol=1e-5)
    np.testing.assert_array_equal(ref_correct, fast_correct)
    assert ref_loss[-1] < ref_loss[0]  # it learns
    for i in range(3):
        W, b = dense_views(net, i)
        np.testing.assert_allclose(ref.W[i], W, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ref.b[i], b, rtol=1e-4, atol=1e-6)
        assert not np.allclose(W, weights[i][0])  # the weights moved


def test_quick_skips_the_compile_probe(tmp_path, capsys, monkeypatch, tiny_mnist):
    from fastnn.bench import cli as bench_cli

    def probe():
        raise AssertionError("--quick must not run the cold-compile probe (about a minute)")

    monkeypatch.setattr(bench_cli, "compile_times", probe)
    assert bench.main(["--quick", "--limit", "512", "--runners", "numpy", "reference", "--peak-size", "128",
                       "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["compile"] is None and result["settings"]["repeats"] == 1
    assert "wrote " + str(tmp_path / "bench.json") in capsys.readouterr().out  # where it wrote, last


def test_fit_and_jax_runners_train_as_the_inner_loop(tiny_mnist):
    """The fit runner (MLP.fit), the estimator's and JAX's run whole epochs from the same weights."""
    x, y = tiny_mnist
    weights = bench.he_weights([784, 32, 16, 10], seed=2)
    order = bench.epoch_order(len(x))
    fit = bench.make_runner("fit", x, y, weights)
    assert fit.calls == 1 and fit(order, 0, 4, 128) == 4
    assert not np.array_equal(fit.model.get_weights()[0], weights[0][0])  # it trained
    with pytest.raises(ValueError, match="start=128"):
        fit(order, 128, 1, 128)
    if bench.available_runners(["estimator"])[0]:  # MLPClassifier.fit, one epoch a call
        assert bench.make_runner("estimator", x, y, weights)(order, 0, 4, 128) == 4
    ok, _ = bench.available_runners(["jax"])
    if ok:  # in a worker process held to one CPU (jax_peer), timed by the worker's own clocks
        from fastnn.bench import jax_peer

        try:
            jax_run = jax_peer.jax_runner(x, y, weights, bench.LR, threads=1)
            jax_run.prepare(order, 5, 100)
            before = jax_run.clocks["wall"]()
            assert jax_run(order, 0, 5, 100) == 5  # 4 full batches in one scan, the 12-row rest alone
            assert jax_run.clocks["wall"]() > before and jax_run.clocks["cpu"]() > 0
            assert jax_run.usage()["cpus"] == 1
        finally:
            jax_peer.stop_workers()


def test_fresh_process_check_and_train_row(tiny_mnist):
    from fastnn.bench import checks
    from fastnn.bench.report import format_checks

    rate = checks.fresh_process_rate("reference", "mnist", [32, 16], 64, 1, 0.05, 1, limit=512)
    assert rate > 0
    row = checks.train_command(1, epochs=1, limit=512)
    assert row["wall_s"] > row["train_s"] > 0 and 0 < row["test_accuracy"] <= 1 and row["threads"] == 1
    check = {"kind": "reference", "dataset": "mnist", "layers": [784, 32, 16, 10], "batch_size": 64, "threads": 1,
             "inside": 0.8 * rate, "fresh": rate, "ratio": 0.8, "ok": False}
    text = format_checks([check], [row], [])
    assert "OFF by more than 10%" in text and "fastnn-train --dataset mnist" in text


def test_busy_starts_and_stops_one_competing_process():
    from fastnn.bench.checks import competing_process

    with competing_process() as proc:
        assert proc.poll() is None  # running
    assert proc.poll() is not None
    with competing_process(False) as proc:
        assert proc is None


def test_target_option_runs_each_target_in_its_own_process(tmp_path, capsys, tiny_mnist):
    """--target: one child process per CPU (here the host only: another CPU would compile cold),
    its numba/numpy ratios gathered into targets.json with what makes them traceable (commit,
    load, the medians behind each ratio) and recordable by benchmarks/results.py; the host's
    target is in the machine line."""
    from fastnn.backends.target import TARGET
    from fastnn.bench import targets

    argv = ["--dataset", "mnist", "--layers", "32", "--batch-sizes", "8", "--limit", "256", "--runners", "numba",
            "numpy", "--repeats", "1", "--max-seconds", "0.05", "--no-compile", "--peak-size", "0",
            "--target", "host", "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    result = json.loads((tmp_path / "targets.json").read_text())
    (row,) = result["targets"]
    assert row["target"] == "host" and row["numba_target"]["cpu"] == TARGET.cpu
    assert [r["batch_size"] for r in row["ratios"]] == [8] and row["ratios"][0]["numba_over_numpy"] > 0
    cell = row["ratios"][0]
    assert cell["numba_over_numpy"] == cell["numba"] / cell["numpy"] and cell["threads"] >= 1
    assert result["provenance"]["commit"] == row["provenance"]["commit"] and "--target" in result["argv"]
    assert len(result["load_average_end"]) == 3 and row["repeats"] == 1 and row["clock"] == "wall"
    spec = importlib.util.spec_from_file_location("results", ROOT / "benchmarks" / "results.py")
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    (written,) = results.record("targets", tmp_path, name="smoke", records=tmp_path / "records")
    table = results.targets_table({"smoke": json.loads(written.read_text())})
    assert f"| {cell['numba_over_numpy']:.2f}x (" in table and f"LLVM `{TARGET.cpu}`" in table
    assert (tmp_path / "host" / "bench.json").exists()
    assert f"| host ({TARGET.cpu}) | {TARGET.lanes} | {'yes' if TARGET.fma else 'no'} |" in capsys.readouterr().out
    assert targets.without_target(["--target", "a", "b", "--x", "1", "--target=c", "--y"]) == ["--x", "1", "--y"]
    env = targets.target_env("haswell", {"NUMBA_CPU_FEATURES": "+avx2"})
    assert env["NUMBA_CPU_NAME"] == "haswell" and env["NUMBA_CPU_FEATURES"] == ""
    assert "NUMBA_CPU_NAME" not in targets.target_env("host", {"NUMBA_CPU_NAME": "haswell"})
    if TARGET.arch == "x86_64":  # NumPy and OpenBLAS held to the emulated CPU too
        found = ["X86_V3", "X86_V4", "AVX512_ICL"]
        assert targets.peer_env("haswell", found) == {"OPENBLAS_CORETYPE": "Haswell",
                                                      "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL"}
        assert targets.peer_env("sandybridge", found)["NPY_DISABLE_CPU_FEATURES"] == "X86_V3 X86_V4 AVX512_ICL"
        assert targets.peer_env("nehalem", found)["OPENBLAS_CORETYPE"] == "Nehalem"
        assert targets.peer_env("skylake-avx512", found) == {}
    crashed = targets.format_target_table([targets._row("icelake-server", -4, tmp_path / "none.json")])
    assert "| icelake-server | killed by SIGILL (the target's instructions do not exist on this CPU) |" in crashed


def test_torch_is_skipped_with_a_note_when_it_cannot_be_imported(tmp_path, capsys, monkeypatch, tiny_mnist):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError, as when absent
    ok, skipped = bench.available_runners(["fit", "torch"])
    assert ok == ["fit"] and "torch" in skipped["torch"]
    assert bench.main(["--dataset", "mnist", "--layers", "32", "--batch-sizes", "64", "--limit", "512", "--runners",
                       "fit", "torch", "--repeats", "1", "--max-seconds", "0.05", "--no-compile", "--peak-size", "0",
                       "--no-fresh-check", "--no-train-row", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "[skip] torch:" in printed and "fit/torch" not in printed
    (rec,) = json.loads((tmp_path / "bench.json").read_text())["records"]
    assert set(rec["results"]) == {"fit"}


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed (an optional peer)")
def test_torch_column_trains_as_the_reference_and_gets_its_ratios(tmp_path, capsys, tiny_mnist):
    """The PyTorch runner does the same SGD as the independent NumPy loop (a fair peer), and the
    MLP.fit table shows its samples/s, fit/torch, and the goals against it."""
    x, y = tiny_mnist
    weights = bench.he_weights([784, 32, 16, 10], seed=3)
    order = bench.epoch_order(len(x), seed=1)
    run = bench.make_runner("torch", x, y, weights, lr=0.05)
    ref = bench.load_reference().ReferenceMLP(weights, lr=0.05)
    assert run(order, 0, 6, 50) == ref.train_steps(x, y, order, 0, 6, 50) == 6
    linears = [m for m in run.model if hasattr(m, "weight")]
    for i, lin in enumerate(linears):
        np.testing.assert_allclose(lin.weight.detach().numpy().T, ref.W[i], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(lin.bias.detach().numpy(), ref.b[i], rtol=1e-4, atol=1e-5)
        assert not np.allclose(ref.W[i], weights[i][0])  # both trained
    assert bench.main(["--dataset", "mnist", "--layers", "128", "64", "--batch-sizes", "8", "--limit", "512",
                       "--runners", "fit", "torch", "--threads", "1", "--repeats", "1", "--max-seconds", "0.05",
                       "--no-compile", "--peak-size", "0", "--no-fresh-check", "--no-train-row",
                       "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| batch | fit samples/s | torch samples/s | fit/torch |" in printed
    assert "| MNIST 128-64, batch 8, fit/torch | 15x |" in printed
    (rec,) = json.loads((tmp_path / "bench.json").read_text())["records"]
    assert rec["results"]["torch"]["samples_per_s"] > 0 and rec["threads"]["torch"] == 1


def test_perf_fit_reads_the_functions_of_a_numba_cache_entry(tmp_path):
    """benchmarks/perf_fit.py maps perf samples in Numba's code to functions through the
    object file inside a cache entry: extract it from a real entry (a compiled caller and its
    callee) and read the functions' names and offsets. perf itself is not needed here."""
    if shutil.which("nm") is None or shutil.which("objdump") is None:
        pytest.skip("binutils (nm, objdump) not installed")
    spec = importlib.util.spec_from_file_location("perf_fit", ROOT / "benchmarks" / "perf_fit.py")
    perf_fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(perf_fit)
    (tmp_path / "probe_kernels.py").write_text(
        "from numba import njit\n"
        "@njit(cache=True)\ndef scaled_sum(a):\n    return a.sum() * 2.0\n"
        "@njit(cache=True)\ndef caller(a):\n    return scaled_sum(a) + 1.0\n")
    cache = tmp_path / "cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBA_ENABLE_PROFILING="1",
               PYTHONPATH=str(tmp_path))
    subprocess.run([sys.executable, "-c", "import numpy, probe_kernels; probe_kernels.caller(numpy.ones(3))"],
                   env=env, check=True, cwd=tmp_path)
    (entry,) = cache.rglob("probe_kernels.caller-*.nbc")
    code = perf_fit.object_code(entry)
    assert code[:4] == b"\x7fELF"
    (tmp_path / "caller.o").write_bytes(code)
    names, size = perf_fit.symbols(tmp_path / "caller.o")
    readable = [name for _, name in names]
    assert "probe_kernels::caller" in readable and "probe_kernels::scaled_sum" in readable, readable
    assert [offset for offset, _ in names] == sorted(offset for offset, _ in names) and size > names[-1][0]
    assert perf_fit.readable("_ZN6fastnn8backends8jit_loop11_train_loopB3v10B70c8tJTC_2fWwxyz") == "jit_loop::_train_loop"
    assert perf_fit.object_code(tmp_path / "probe_kernels.py") is None
