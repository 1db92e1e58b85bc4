"""BLAS thread control through threadpoolctl: ``--threads``, the limit ``train_steps`` applies
and the bench report cover every BLAS copy threadpoolctl sees (NumPy's and SciPy's bundled
OpenBLAS on pip installs; MKL, BLIS or a system OpenBLAS elsewhere).

Each check first raises every copy to 2 threads, so that a limit that did nothing would
show, and reads the counts back through a fresh threadpoolctl scan, not fastnn's cached one.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController, threadpool_info

from fastnn import bench, cli
from fastnn.backends import blas, jit_loop
from fastnn.backends import numba_jit as nb
from fastnn.backends import spec as S
from test_train_steps import load_mnist_rows, make_net, make_opt


def blas_counts():
    """{file path: threads} of every BLAS copy in a fresh scan."""
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.fixture
def two_threads_everywhere():
    """Every BLAS copy at 2 threads during the test (restored afterwards), NumPy's and SciPy's at least."""
    import numba

    blas.controller()  # loads SciPy's copy, as the first train_steps would
    before, numba_before = blas_counts(), numba.get_num_threads()
    if not before:
        pytest.skip("threadpoolctl finds no BLAS library in this process")
    ThreadpoolController().limit(limits=2, user_api="blas")  # limit() also raises counts
    if set(blas_counts().values()) != {2}:
        pytest.skip(f"BLAS copies that cannot run 2 threads: {blas_counts()}")
    yield blas_counts()
    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        lib.set_num_threads(before.get(lib.filepath, lib.num_threads))
    numba.set_num_threads(numba_before)


def test_both_bundled_copies_are_seen(two_threads_everywhere):
    found = two_threads_everywhere
    assert set(found) == set(blas.get_threads())  # the cached controller sees what a fresh scan sees
    assert any("scipy" in path for path in found), f"SciPy's BLAS (Numba's np.dot) missing from {found}"


def test_threads_option_limits_every_blas_copy(two_threads_everywhere, monkeypatch):
    """``fastnn-train --threads 1``: by the time the data set loads, every copy runs one thread."""
    seen = {}

    def load_dataset(*args, **kwargs):
        seen.update(blas_counts())
        raise ValueError("stop here")

    monkeypatch.setattr("fastnn.datasets.load_dataset", load_dataset)
    for backend in ("numba", "numpy"):
        seen.clear()
        ThreadpoolController().limit(limits=2, user_api="blas")
        assert cli.train_main(["--threads", "1", "--backend", backend, "--epochs", "1", "--no-plots"]) == 2
        assert seen == {path: 1 for path in two_threads_everywhere}, backend


def test_at_most_threads_limits_every_copy_and_restores(two_threads_everywhere):
    with blas.at_most_threads(1):
        assert set(blas_counts().values()) == {1}
    assert blas_counts() == two_threads_everywhere
    with pytest.raises(RuntimeError), blas.at_most_threads(1):
        raise RuntimeError
    assert blas_counts() == two_threads_everywhere  # restored after an exception too
    with blas.at_most_threads(4):  # never raises a count
        assert blas_counts() == two_threads_everywhere


@pytest.mark.parametrize("hidden", [[128, 64], [1024, 1024]])
def test_train_steps_holds_every_blas_copy_to_one_thread(two_threads_everywhere, monkeypatch, hidden):
    """The context train_steps uses around its compiled loop (784-128-64-10 and 784-1024-1024-10 at
    batch 128): BLAS on one thread whatever the network, so that its bits do not depend on the
    thread count (jit_gemm's blocks take Numba's threads instead)."""
    x, y = load_mnist_rows(512)
    widths = [784, *hidden]
    net = make_net([("dense", a, b, S.ACT_RELU) for a, b in zip(widths, widths[1:])] + [("dense", widths[-1], 10, 0)])
    inside = []
    loop = jit_loop._train_loop

    def spy(*args):
        inside.append(blas_counts())
        return loop(*args)

    monkeypatch.setattr(jit_loop, "_train_loop", spy)
    assert nb.train_steps(x, y, np.arange(512), 0, 2, 128, net, make_opt("sgd", len(net.params)), np.full(2, 0.1), 0,
                          0.0, np.zeros(8), np.zeros(2), np.zeros(2, np.int64), inputs=nb.prepare_inputs(x)) == 2
    assert inside == [{path: 1 for path in two_threads_everywhere}]
    assert blas_counts() == two_threads_everywhere


def test_bench_reports_every_blas_copy():
    libraries = bench.blas_libraries()
    assert {lib["filepath"] for lib in libraries} == set(blas_counts())
    lines = bench.describe_blas(libraries)
    assert len(lines) == len(libraries)
    for lib, line in zip(libraries, lines):
        assert lib["version"] in line and lib["filepath"] in line and f"{lib['num_threads']} threads" in line


def test_estimator_threads_limits_every_blas_copy_in_a_fresh_process():
    """``MLPClassifier(threads=1)`` as a fresh process meets it, at the machine's default thread
    counts: every BLAS copy, SciPy's (Numba's np.dot) included, runs one thread in the loop."""
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'fastnn[sklearn]')")
    script = """
import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_info
from fastnn import MLPClassifier
from fastnn.backends import jit_loop

def counts():
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

inside, loop = [], jit_loop._train_loop
def spy(*args):
    inside.append(counts())
    return loop(*args)
jit_loop._train_loop = spy
rng = np.random.default_rng(0)
x = (rng.random((300, 784)) < 0.2) * np.float32(1)  # MNIST-like: the compiled loop's list path
y = rng.integers(0, 10, 300)
MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=1, batch_size=128, threads=1).fit(x, y)
assert inside and all(set(c.values()) == {1} for c in inside), inside
assert len(inside[0]) >= 2, inside  # NumPy's and SciPy's copies
print("ok", max(counts().values()))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    if result.stdout.strip() == "ok 1":
        pytest.skip("BLAS runs one thread by default here: a limit to 1 cannot be seen")
    assert result.stdout.startswith("ok ")  # restored after fit


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_model_threads_hold_numba_and_every_blas_copy_and_restore(two_threads_everywhere, monkeypatch, backend):
    """``MLP(threads=1)``: during fit (seen from a callback) and predict (seen from the backend's
    forward), Numba and every BLAS copy run one thread; afterwards each count is back, also
    after fit raised."""
    import numba

    from fastnn import MLP
    from fastnn.backends import get_backend
    from fastnn.callbacks import Callback

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba's pool has one thread: a limit to 1 cannot be seen")
    numba.set_num_threads(2)
    seen = []

    def counts():
        seen.append((numba.get_num_threads(), blas_counts()))

    class Spy(Callback):
        def on_epoch_end(self, epoch, logs=None):
            counts()

    module, forward = get_backend(backend), get_backend(backend).forward
    monkeypatch.setattr(module, "forward", lambda *args, **kwargs: (counts(), forward(*args, **kwargs))[1])
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 12)).astype(np.float32), rng.integers(0, 3, 64)
    model = MLP([8], backend=backend, threads=1)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[Spy()])
    model.predict(x)
    one = (1, {path: 1 for path in two_threads_everywhere})
    assert seen == [one, one]
    assert numba.get_num_threads() == 2 and blas_counts() == two_threads_everywhere
    with pytest.raises(ValueError, match="y labels must be in"):
        model.fit(x, np.full(64, 7), epochs=1, verbose=0)  # labels beyond the built output layer
    assert numba.get_num_threads() == 2 and blas_counts() == two_threads_everywhere
    model.threads = None  # leaves every count as it is
    model.predict(x)
    assert seen[-1] == (2, two_threads_everywhere)


def test_model_threads_are_checked_and_not_saved(tmp_path):
    import numba

    from fastnn import MLP, load

    pool = numba.config.NUMBA_NUM_THREADS
    with pytest.raises(ValueError, match=r"threads must be an integer in \[1, \d+\], got 0"):
        MLP(threads=0)
    with pytest.raises(ValueError, match=f"set the environment variable NUMBA_NUM_THREADS={pool + 1}"):
        MLP(threads=pool + 1)
    model = MLP([4], threads=1).build(6, 2)
    assert "threads" not in model.get_config()  # a setting of the machine, not of the model
    assert load(model.save(tmp_path / "m.fastnn")).threads is None


def test_estimator_threads_hold_numba_and_every_blas_copy_and_restore(two_threads_everywhere, monkeypatch):
    """``MLPClassifier(threads=1)`` goes through the same limit as the models: one thread in Numba
    and every BLAS copy at each epoch's end and in predict, every count back afterwards."""
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'fastnn[sklearn]')")
    import numba

    from fastnn import MLPClassifier
    from fastnn.backends import get_backend

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba's pool has one thread: a limit to 1 cannot be seen")
    numba.set_num_threads(2)
    seen = []
    epoch_done, forward = MLPClassifier._epoch_done, get_backend("numpy").forward

    def spy(*args, **kwargs):
        seen.append((numba.get_num_threads(), blas_counts()))

    monkeypatch.setattr(MLPClassifier, "_epoch_done", lambda *a, **k: (spy(), epoch_done(*a, **k))[1])
    monkeypatch.setattr(get_backend("numpy"), "forward", lambda *a, **k: (spy(), forward(*a, **k))[1])
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 12)), rng.integers(0, 3, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning after 2 epochs
        MLPClassifier((8,), max_iter=2, backend="numpy", threads=1).fit(x, y).predict(x)
    assert seen == [(1, {path: 1 for path in two_threads_everywhere})] * 3
    assert numba.get_num_threads() == 2 and blas_counts() == two_threads_everywhere
