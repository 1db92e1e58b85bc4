"""The Numba backend gives the same bits on any thread count, dense data included, and so
does what ``fit`` logs (its sample means of per-step losses use no BLAS).

Above 45% non-zero the first layer leaves the zero-skipping lists for BLAS, and OpenBLAS
shared a product between its threads in a thread-count-dependent order (fastnn-train on
such data: 88.15% on two threads, 88.00% on one). ``jit_gemm`` now runs BLAS on one thread,
large products cut into blocks fixed by their shape.
"""

import json
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from fastnn.backends import numba_jit as nb
from fastnn.backends.jit_gemm import FOUR_BLOCKS_MACS, SPLIT_MIN_MACS, gemm_blocks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Trains a few steps on dense synthetic data (60% non-zero) with the thread count of its
# environment, and prints a JSON list: per configuration, the weights' and the predicted
# probabilities' bytes as hex digests.
TRAIN = """
import hashlib, json, sys
import numpy as np
import fastnn
from fastnn.cli import set_threads
set_threads(int(sys.argv[1]))
rng = np.random.default_rng(0)
x = rng.random((640, 784), dtype=np.float32)
x[rng.random(x.shape) > 0.6] = 0                        # 60% non-zero: the first layer takes BLAS
y = rng.integers(0, 10, 640)
digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
out = []
for layers, opt in (([128, 64], "adam"), ([128, 64], "sgd"), ([1024, 1024], "adam")):
    model = fastnn.MLP(layers=layers, optimizer=opt, seed=0, backend="numba")
    model.fit(x, y, epochs=1, batch_size=128, verbose=0)
    out.append([digest(np.concatenate([w.ravel() for w in model.get_weights()])), digest(model.predict_proba(x))])
model = fastnn.MLP(layers=[128, 64], seed=0, backend="numba")  # the weighted loss takes the same products
model.fit(x, y, epochs=1, batch_size=128, verbose=0, sample_weight=rng.random(640).astype(np.float32) + 0.5)
out.append([digest(np.concatenate([w.ravel() for w in model.get_weights()]))])
# 12,000 steps: fit's logged loss sums 12,000 per-step losses; as `@` that was OpenBLAS's ddot,
# shared between its threads in a thread-count-dependent order (other last bits on 2 threads)
many = rng.random((12000, 784), dtype=np.float32)
many[rng.random(many.shape) > 0.2] = 0
model = fastnn.MLP(layers=[16], optimizer="sgd", seed=0, backend="numba")
model.fit(many, rng.integers(0, 10, 12000), epochs=1, batch_size=1, verbose=0)
out.append([repr(model.history.history["loss"])])
print(json.dumps(out))
"""


def _train_digests(threads):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
    res = subprocess.run([sys.executable, "-c", TRAIN, str(threads)], env=env, capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_dense_data_trains_to_the_same_bits_on_one_two_and_three_threads():
    # 784x128 at batch 128 is cut into 2 blocks, 1024x1024 into 4: three threads share them unevenly
    one = _train_digests(1)
    assert _train_digests(2) == one
    assert _train_digests(3) == one


def _operands(n, k, m, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, k), dtype=np.float32)
    x[rng.random(x.shape) > 0.6] = 0
    return x, rng.standard_normal((k, m)).astype(np.float32), rng.standard_normal((n, m)).astype(np.float32)


def _products(x, W, dz):
    out, dW, dx = (np.empty(s, np.float32) for s in ((x.shape[0], W.shape[1]), W.shape, x.shape))
    nb.gemm_nn(x, W, out)
    nb.gemm_tn(x, dz, dW)
    nb.gemm_nt(dz, W, dx)
    return out, dW, dx


@pytest.mark.parametrize("shape", [(128, 784, 128), (100, 784, 1600), (3, 5, 7), (1, 784, 128), (0, 8, 4), (4, 0, 3)])
def test_gemm_matches_float64_products(shape):
    x, W, dz = _operands(*shape)
    x64, W64, dz64 = (a.astype(np.float64) for a in (x, W, dz))
    with nb.serial_blas():
        out, dW, dx = _products(x, W, dz)
    for got, want in ((out, x64 @ W64), (dW, x64.T @ dz64), (dx, dz64 @ W64.T)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1, shape[1]) ** 0.5)


def test_gemm_block_counts_depend_on_the_shape_alone():
    assert gemm_blocks(SPLIT_MIN_MACS - 1, 4096) == 1
    assert gemm_blocks(SPLIT_MIN_MACS, 4096) == 2
    assert gemm_blocks(FOUR_BLOCKS_MACS, 4096) == 4
    assert gemm_blocks(FOUR_BLOCKS_MACS, 63) == 2  # blocks of at least 16 columns
    assert gemm_blocks(FOUR_BLOCKS_MACS, 31) == 1


@pytest.mark.parametrize("shape", [(96, 128, 64), (64, 784, 100), (1, 784, 128), (128, 784, 1), (1, 64, 1), (3, 5, 7),
                                   (0, 8, 4), (4, 0, 3)])
def test_one_block_products_are_np_dot_bit_for_bit(shape):
    # below SPLIT_MIN_MACS a product that is not the kernel's own (under OWN_MIN_MACS, or no whole
    # column blocks: test_kernels.test_small_dense_products_are_the_muladd_chain) is the one BLAS
    # call Numba's np.dot makes (gemv for a row or a column, a dot product for one element, zeros
    # when a side is empty): the same bits
    x, W, dz = _operands(*shape)
    with nb.serial_blas():
        out, dW, dx = _products(x, W, dz)
        np.testing.assert_array_equal(out, _np_dot_in_numba(x, W))
        np.testing.assert_array_equal(dW, _np_dot_in_numba(np.asfortranarray(x.T), dz))
        np.testing.assert_array_equal(dx, _np_dot_in_numba(dz, np.asfortranarray(W.T)))


@numba.njit
def _np_dot_in_numba(a, b):
    return np.dot(a, b)


@pytest.mark.parametrize("shape", [(128, 784, 128), (128, 1024, 1024), (1, 4096, 2048), (128, 128, 64)])
def test_gemm_bits_do_not_depend_on_numba_threads(shape):
    x, W, dz = _operands(*shape)
    before = numba.get_num_threads()
    results = []
    try:
        with nb.serial_blas():
            for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
                numba.set_num_threads(threads)
                results.append(_products(x, W, dz))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")
def test_gemm_takes_strided_operands():
    x, W, dz = _operands(128, 1568, 128)
    xs = x[:, ::2]  # (128, 784), not contiguous: copied before BLAS sees its pointer
    out = np.empty((128, 128), np.float32)
    with nb.serial_blas():
        nb.gemm_nn(xs, W[::2], out)
    np.testing.assert_allclose(out, xs.astype(np.float64) @ W[::2].astype(np.float64), rtol=1e-4, atol=1e-3)


def test_gemm_blocks_run_with_jit_disabled():
    code = """
import numpy as np
from fastnn.backends import numba_jit as nb
r = np.random.default_rng(0)
x = r.random((128, 784), dtype=np.float32); W = r.standard_normal((784, 128)).astype(np.float32)
dz = r.standard_normal((128, 128)).astype(np.float32)
for x, W, dz in ((x, W, dz), (x[:, :128], W[:128, :64], dz[:, :64])):  # split, then the kernel's own
    out, dW, dx = (np.empty(s, np.float32) for s in ((len(x), W.shape[1]), W.shape, x.shape))
    nb.gemm_nn(x, W, out); nb.gemm_tn(x, dz, dW); nb.gemm_nt(dz, W, dx)
    assert np.allclose(out, x @ W, atol=1e-3) and np.allclose(dW, x.T @ dz, atol=1e-3)
    assert np.allclose(dx, dz @ W.T, atol=1e-3)
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, NUMBA_DISABLE_JIT="1"),
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]
