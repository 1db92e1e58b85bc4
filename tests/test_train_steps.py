"""Whole-network tests: the compiled Numba loop, the step-by-step Numba path and NumPy agree.

Tolerances: compiled loop vs step-by-step Numba path: bit-identical (same kernels,
same order). Numba vs NumPy after one step: rtol/atol 1e-5; after a short epoch:
1e-4 for SGD, looser for RMSprop/Adam, which divide by running gradient magnitudes
and so amplify float32 rounding in tiny gradients (see ADAPTIVE_TOL).
"""

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnn.backends import jit_listing, numba_jit as nb
from fastnn.backends import numpy_ref as npr
from fastnn.backends import spec as S
from fastnn.backends.target import TARGET

ROOT = Path(__file__).resolve().parents[1]
ARCH = [("dense", 200, 48, S.ACT_RELU), ("batchnorm", 48, 0.1, 1e-5), ("dropout", 48, 0.25),
        ("dense", 48, 24, S.ACT_TANH), ("activation", 24, S.ACT_SIGMOID), ("dropout", 24, 0.0),
        ("dense", 24, 7, S.ACT_NONE)]
OPTIMIZERS = {
    "sgd": (S.OPT_SGD, [0.0, 0, 0.0, 0]),
    "sgd-nesterov-wd": (S.OPT_SGD, [0.9, 1, 1e-3, 0]),
    "rmsprop-momentum-wd": (S.OPT_RMSPROP, [0.99, 1e-3, 1e-3, 0.5]),
    "adam-wd": (S.OPT_ADAM, [0.9, 0.999, 1e-3, 5e-4]),
}
ADAPTIVE_TOL = 2e-3
PATHS = {"numpy": npr.train_steps, "numba-stepwise": nb.train_steps_stepwise, "numba": nb.train_steps}


def make_data(n, d, k, seed=0, sparsity=0.7):
    r = np.random.default_rng(seed)
    x = r.random((n, d)).astype(np.float32)
    x[r.random((n, d)) < sparsity] = 0
    x[::17] = 0  # all-zero rows
    return x, r.integers(0, k, n).astype(np.int64)


def make_net(layers=ARCH, seed=1):
    net = S.allocate(layers)
    r = np.random.default_rng(seed)
    for i in np.flatnonzero(net.spec[:, S.KIND] == S.DENSE):
        W, b = S.dense_views(net, i)
        W[:] = r.standard_normal(W.shape) * np.sqrt(2.0 / W.shape[0])
        b[:] = r.standard_normal(b.shape) * 0.1
    return net


def copy_net(net):
    return S.NetBuffers(net.spec, net.fconf, net.params.copy(), net.grads.copy(), net.state.copy())


def make_opt(name, n_params):
    code, hp = OPTIMIZERS[name]
    return S.OptBuffers(code, np.array(hp, np.float64), np.zeros((2, n_params), np.float32), np.zeros(1, np.int64))


def run(path, net, opt, x, y, order, batch_size, n_steps, start=0, lr=0.05, seed=3, smoothing=0.05):
    loss, correct = np.zeros(n_steps), np.zeros(n_steps, np.int64)
    lrs = np.full(n_steps, lr) * (1 + 0.1 * np.arange(n_steps))  # a per-step schedule
    k = PATHS[path](x, y, order, start, n_steps, batch_size, net, opt, lrs, seed, smoothing, np.zeros(8), loss,
                    correct)
    return k, loss, correct


def train_all_paths(opt_name, x, y, order, batch_size, n_steps, layers=ARCH):
    base = make_net(layers)
    out = {}
    for path in PATHS:
        net, opt = copy_net(base), make_opt(opt_name, len(base.params))
        k, loss, correct = run(path, net, opt, x, y, order, batch_size, n_steps)
        out[path] = (net, opt, k, loss, correct)
    return out


def assert_paths_agree(out, tol):
    ref, stepwise, compiled = out["numpy"], out["numba-stepwise"], out["numba"]
    for a in (stepwise, compiled):
        assert a[2] == ref[2] and a[1].step[0] == ref[1].step[0]
    # Compiled loop == step-by-step path, bit for bit.
    np.testing.assert_array_equal(compiled[0].params, stepwise[0].params)
    np.testing.assert_array_equal(compiled[0].state, stepwise[0].state)
    np.testing.assert_array_equal(compiled[1].slots, stepwise[1].slots)
    np.testing.assert_array_equal(compiled[3], stepwise[3])
    np.testing.assert_array_equal(compiled[4], stepwise[4])
    # Numba == NumPy within tolerance.
    np.testing.assert_allclose(compiled[0].params, ref[0].params, rtol=tol, atol=tol)
    np.testing.assert_allclose(compiled[0].state, ref[0].state, rtol=tol, atol=tol)
    np.testing.assert_allclose(compiled[3], ref[3], rtol=tol, atol=tol)


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("batch_size", [1, 16, 100])
def test_one_step_agrees(opt_name, batch_size):
    x, y = make_data(300, 200, 7)
    order = np.random.default_rng(5).permutation(300)
    out = train_all_paths(opt_name, x, y, order, batch_size, 1)
    assert out["numba"][2] == 1
    assert_paths_agree(out, 1e-5)
    assert not np.array_equal(out["numba"][0].params, make_net().params)  # it did train


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_short_epoch_agrees(opt_name):
    x, y = make_data(600, 200, 7, seed=2)
    order = np.random.default_rng(6).permutation(600)
    n_steps = 19  # 18 batches of 32 and a ragged last batch of 24
    out = train_all_paths(opt_name, x, y, order, 32, n_steps)
    assert out["numba"][2] == n_steps
    tol = 1e-4 if opt_name.startswith("sgd") else ADAPTIVE_TOL
    assert_paths_agree(out, tol)
    assert out["numba"][3][-1] < out["numba"][3][0]  # learning happens


def test_batch_size_one_epoch():
    x, y = make_data(60, 200, 7, seed=3)
    out = train_all_paths("sgd", x, y, np.arange(60), 1, 60)
    assert_paths_agree(out, 1e-4)


@pytest.mark.parametrize("opt_name", ["sgd", "sgd-nesterov-wd"])
@pytest.mark.parametrize("sparsity", [0.6, 0.9])
def test_density_rules_agree(opt_name, sparsity):
    """Inputs 38% non-zero (the zero-skipping limit is 45%) or 10%, a second layer whose
    input is ~45% non-zero and a third whose input is nearly all zeros: the compiled loop
    must make the step-by-step path's list-or-BLAS choices for every layer, bit for bit."""
    x, y = make_data(256, 200, 7, seed=5, sparsity=sparsity)
    layers = [("dense", 200, 40, S.ACT_RELU), ("dense", 40, 30, S.ACT_RELU), ("dense", 30, 7, S.ACT_NONE)]
    base = make_net(layers)
    W1, b1 = S.dense_views(base, 1)
    b1[:] -= 1.5  # most of layer 1's outputs are 0 after the ReLU: a sparse input to layer 2
    out = {}
    for path in PATHS:
        net, opt = copy_net(base), make_opt(opt_name, len(base.params))
        out[path] = (net, opt) + run(path, net, opt, x, y, np.random.default_rng(2).permutation(256), 32, 8)
    assert_paths_agree(out, 1e-4)


def test_ragged_last_batch_and_chunking():
    """Several calls (chunks) give exactly what one call gives; the last batch has n % batch_size rows."""
    x, y = make_data(50, 200, 7, seed=4)
    order = np.random.default_rng(1).permutation(50)
    net1, opt1 = make_net(), make_opt("adam-wd", len(make_net().params))
    k, loss1, _ = run("numba", net1, opt1, x, y, order, 16, 4)
    assert k == 4 and opt1.step[0] == 4
    net2, opt2 = make_net(), make_opt("adam-wd", len(make_net().params))
    lr = 0.05 * (1 + 0.1 * np.arange(4))
    losses = []
    for start_step, count in [(0, 3), (3, 1)]:
        loss, correct = np.zeros(count), np.zeros(count, np.int64)
        nb.train_steps(x, y, order, start_step * 16, count, 16, net2, opt2, lr[start_step:start_step + count], 3,
                       0.05, np.zeros(8), loss, correct)
        losses.append(loss)
    np.testing.assert_array_equal(net2.params, net1.params)
    np.testing.assert_array_equal(np.concatenate(losses), loss1)
    # The last batch has 50 - 48 = 2 rows.
    _, _, correct = run("numba", make_net(), make_opt("sgd", len(net1.params)), x, y, order, 16, 4, lr=0.0)
    assert correct[3] <= 2 and correct[:3].max() <= 16


def test_stops_when_rows_run_out():
    x, y = make_data(40, 200, 7)
    for path in PATHS:
        net, opt = make_net(), make_opt("sgd", len(make_net().params))
        k, _, _ = run(path, net, opt, x, y, np.arange(40), 16, 10)
        assert k == 3 and opt.step[0] == 3


@pytest.mark.parametrize("path", list(PATHS))
def test_non_finite_loss_stops_before_update(path):
    x, y = make_data(64, 200, 7)
    x[40] = np.nan  # in the third batch of 16
    ref_net, ref_opt = make_net(), make_opt("sgd-nesterov-wd", len(make_net().params))
    run(path, ref_net, ref_opt, x, y, np.arange(64), 16, 2)
    net, opt = make_net(), make_opt("sgd-nesterov-wd", len(make_net().params))
    k, loss, _ = run(path, net, opt, x, y, np.arange(64), 16, 4)
    assert k == 2 and opt.step[0] == 2
    assert np.isnan(loss[2])
    np.testing.assert_array_equal(net.params, ref_net.params)
    np.testing.assert_array_equal(net.state, ref_net.state)  # batch-norm statistics restored
    np.testing.assert_array_equal(opt.slots, ref_opt.slots)


def test_forward_agrees_in_inference_mode():
    x, y = make_data(90, 200, 7)
    out = train_all_paths("adam-wd", x, y, np.arange(90), 16, 5)
    net = out["numba"][0]
    assert not np.allclose(net.state[:48], 0)  # running statistics were updated
    logits = {}
    for name, f in [("numpy", npr.forward), ("numba", nb.forward), ("stepwise", nb.forward_stepwise)]:
        o = np.full((90, 7), np.nan, np.float32)
        f(x, net, o, 13)  # 13 does not divide 90: ragged last chunk
        logits[name] = o
    np.testing.assert_array_equal(logits["numba"], logits["stepwise"])
    np.testing.assert_allclose(logits["numba"], logits["numpy"], rtol=1e-5, atol=1e-5)
    # inference is deterministic and batch-size independent (no dropout, running statistics)
    o = np.empty((90, 7), np.float32)
    npr.forward(x, net, o, 90)
    np.testing.assert_allclose(o, logits["numpy"], rtol=1e-5, atol=1e-6)


REPRO_SCRIPT = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
import test_train_steps as t
x, y = t.make_data(600, 200, 7, seed=2)
order = np.random.default_rng(6).permutation(600)
h = hashlib.sha256()
for name in t.OPTIMIZERS:
    net, opt = t.make_net(), t.make_opt(name, len(t.make_net().params))
    k, loss, correct = t.run("numba", net, opt, x, y, order, 32, 19)
    h.update(net.params.tobytes()); h.update(net.state.tobytes()); h.update(loss.tobytes())
print(h.hexdigest())
"""


def test_numba_single_thread_bit_reproducible():
    script = REPRO_SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"))
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    digests = []
    for _ in range(2):
        res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        digests.append(res.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1] and len(digests[0]) == 64


def load_mnist_rows(n):
    folder = ROOT / "data" / "mnist"
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("MNIST files not present in data/mnist")
    with gzip.open(folder / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(16 + 784 * n), np.uint8, offset=16).reshape(n, 784)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(8 + n), np.uint8, offset=8)
    return (x / np.float32(255)).astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("opt_name", ["sgd", "adam-wd"])
def test_byte_inputs_train_bit_for_bit_like_floats(opt_name):
    """prepare_inputs only changes where the first layer's lists come from: same bits."""
    x, y = load_mnist_rows(640)
    prepared = nb.prepare_inputs(x)
    assert prepared is not None and prepared.codes.shape == (640, 784) and 0.1 < prepared.density < 0.3
    layers = [("dense", 784, 64, S.ACT_RELU), ("dense", 64, 10, S.ACT_NONE)]
    base, order = make_net(layers), np.random.default_rng(0).permutation(640)
    results = []
    for inputs in (None, prepared):
        net, opt = copy_net(base), make_opt(opt_name, len(base.params))
        loss, correct = np.zeros(12), np.zeros(12, np.int64)
        assert nb.train_steps(x, y, order, 0, 12, 50, net, opt, np.full(12, 0.05), 3, 0.1, np.zeros(8), loss,
                              correct, inputs=inputs) == 12
        results.append((net.params, loss))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    with pytest.raises(ValueError, match="were not prepared from this x"):
        nb.train_steps(x[:100], y, order, 0, 1, 50, net, opt, np.full(1, 0.05), 3, 0.1, np.zeros(8), loss, correct,
                       inputs=prepared)
    assert npr.prepare_inputs(x) is None


def test_small_products_choose_the_steps_that_list_ahead():
    """BLAS runs on one thread in every train step (jit_gemm; tests/test_blas_threads.py checks
    every copy is held and restored); _small_products picks the steps small enough to list ahead."""
    x, y = load_mnist_rows(640)
    prepared, no_aug = nb.prepare_inputs(x), np.zeros(8)
    small = make_net([("dense", 784, 128, S.ACT_RELU), ("dense", 128, 64, S.ACT_RELU), ("dense", 64, 10, S.ACT_NONE)])
    wide = make_net([("dense", 784, 1024, S.ACT_RELU), ("dense", 1024, 1024, S.ACT_RELU), ("dense", 1024, 10, 0)])
    # the lists where the target takes them for the first layer (not on 4-lane CPUs: backends/target.py)
    assert nb._small_products(small, 128, no_aug, prepared) == (TARGET.first_layer == "lists")
    assert nb._small_products(small, 512, no_aug, prepared) == (TARGET.first_layer == "lists")  # 2^22: one call
    assert not nb._small_products(small, 1024, no_aug, prepared)  # 1024 x 128 x 64: split in blocks
    assert not nb._small_products(wide, 32, no_aug, prepared)
    assert not nb._small_products(small, 128, no_aug, None)  # the first layer may take BLAS
    assert not nb._small_products(small, 128, np.array([1, 2, 0, 0, 0, 0, 0, 0.0]), prepared)


def test_real_mnist_rows():
    x, y = load_mnist_rows(640)
    layers = [("dense", 784, 32, S.ACT_RELU), ("dense", 32, 10, S.ACT_NONE)]
    base = make_net(layers)
    res = {}
    for path in ("numpy", "numba"):
        net, opt = copy_net(base), make_opt("sgd", len(base.params))
        k, loss, correct = run(path, net, opt, x, y, np.arange(640), 64, 10, lr=0.1, smoothing=0.0)
        res[path] = (net.params, loss, correct)
    np.testing.assert_allclose(res["numba"][0], res["numpy"][0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(res["numba"][2], res["numpy"][2])
    loss = res["numba"][1]
    assert loss[-3:].mean() < 0.9 * loss[:3].mean()


def test_listing_ahead_trains_bit_for_bit(monkeypatch):
    """With two Numba threads a second thread lists each next batch (small networks): the same
    bits as listing in the loop, ragged last batch, chunked calls and a refused step included;
    train_steps then restores the thread count and leaves no thread behind."""
    import threading

    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads")
    x, y = load_mnist_rows(1000)
    prepared = nb.prepare_inputs(x)
    layers = [("dense", 784, 64, S.ACT_RELU), ("dense", 64, 32, S.ACT_RELU), ("dense", 32, 10, S.ACT_NONE)]
    base, order = make_net(layers), np.random.default_rng(0).permutation(1000)
    lrs = np.full(20, 0.05)
    lrs[12] = 1e30  # blows the weights up: step 13's loss is not finite and the loop stops there

    def train(opt_name, calls):
        net, opt = copy_net(base), make_opt(opt_name, len(base.params))
        loss, correct, done = np.zeros(20), np.zeros(20, np.int64), []
        for first, count in calls:
            done.append(nb.train_steps(x, y, order, first * 64, count, 64, net, opt, lrs[first:first + count], 3,
                                       0.1, np.zeros(8), loss[first:first + count], correct[first:first + count],
                                       inputs=prepared))
        return done, net.params, opt.slots, loss, correct

    numba.set_num_threads(2)
    assert nb._should_list_ahead(base, 64, 20, prepared, True)
    threads_before = threading.active_count()
    for opt_name in ("sgd", "adam-wd"):
        for calls in ([(0, 20)], [(0, 5), (5, 7), (12, 8)], [(14, 6)]):  # (14, 6): 16 batches, the last 40 rows
            ahead = train(opt_name, calls)
            assert numba.get_num_threads() == 2 and threading.active_count() == threads_before
            with monkeypatch.context() as m:
                m.setattr(jit_listing, "LIST_AHEAD_MAX_TERMS", 0)  # where _should_list_ahead reads them
                m.setattr(jit_listing, "LIST_AHEAD_NARROW", 0)
                assert not nb._should_list_ahead(base, 64, 20, prepared, True)
                alone = train(opt_name, calls)
            assert ahead[0] == alone[0] and ahead[0] in ([13], [5, 7, 1], [2])
            if calls != [(14, 6)]:
                assert np.isfinite(ahead[3][12]) and not np.isfinite(ahead[3][13])
            for a, b in zip(ahead[1:], alone[1:]):
                np.testing.assert_array_equal(a, b)


def test_when_lists_are_built_ahead():
    import numba

    x, _ = load_mnist_rows(640)
    prepared = nb.prepare_inputs(x)
    small = make_net([("dense", 784, 128, S.ACT_RELU), ("dense", 128, 64, S.ACT_RELU), ("dense", 64, 10, S.ACT_NONE)])
    wide = make_net([("dense", 784, 1600, S.ACT_RELU), ("dense", 1600, 10, S.ACT_NONE)])
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        if numba.get_num_threads() == 2:
            assert nb._should_list_ahead(small, 128, 64, prepared, True)
            # batch 1: nothing worth a second thread, the loop runs on one (no parallel code compiled)
            assert nb.loop_on_one_thread(small, 1, 64, np.zeros(8), prepared)
            assert not nb.loop_on_one_thread(wide, 128, 64, np.zeros(8), prepared)
        assert not nb._should_list_ahead(small, 128, 1, prepared, True)  # one step: nothing to list ahead
        assert not nb._should_list_ahead(small, 1, 64, prepared, True)  # ~150 non-zeros: cheaper to list in the loop
        assert not nb._should_list_ahead(small, 128, 64, prepared, False)  # products worth splitting
        assert not nb._should_list_ahead(wide, 128, 64, prepared, True)  # 784x1600: split the list kernels instead
        if numba.get_num_threads() == 2:  # a narrow first layer lists ahead at any size
            assert nb._should_list_ahead(small, 4096, 64, prepared, True)
        numba.set_num_threads(1)
        assert not nb._should_list_ahead(small, 128, 64, prepared, True)
    finally:
        numba.set_num_threads(threads)
