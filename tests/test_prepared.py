"""Per-data-set preparation (fastnn.prepared) is paid once per data set, never reused stale;
and ``MLP.fit`` trains exactly as the inner loop the benchmark times."""

import gc

import numpy as np
import pytest

from fastnn import MLP, prepared
from fastnn.backends import get_backend
from fastnn.bench import make_runner
from fastnn.training_state import shuffle_stream


def _data(n, d=64, seed=0):
    """Sparse k/255 pixels (so the Numba backend prepares byte codes) and 10-class labels."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 256, (n, d)) * (rng.random((n, d)) < 0.3) / 255.0).astype(np.float32)
    return x, rng.integers(0, 10, n).astype(np.int64)


@pytest.fixture
def counted(monkeypatch):
    """prepared.counts from zero, and the Numba backend's prepare_inputs calls counted too."""
    prepared.forget()
    monkeypatch.setattr(prepared, "counts", {"check": 0, "inputs": 0})
    backend, calls = get_backend("numba"), []
    real = backend.prepare_inputs
    monkeypatch.setattr(backend, "prepare_inputs", lambda x: calls.append(1) or real(x))
    yield lambda: (prepared.counts["check"], prepared.counts["inputs"], len(calls))
    prepared.forget()


def _fit(model, x, y, **kw):
    return model.fit(x, y, **{"epochs": 1, "batch_size": 32, "verbose": 0, **kw})


@pytest.mark.parametrize("n", [200, 5000])  # 51 KB: fingerprinted in full; 1.3 MB: sampled
def test_a_second_fit_on_the_same_arrays_does_not_prepare_again(counted, n):
    x, y = _data(n)
    model = MLP([16], optimizer="sgd", lr=0.01)
    _fit(model, x, y, validation_data=(x[:50], y[:50]))
    assert counted() == (2, 1, 1)  # x and validation x checked; x's byte codes prepared
    _fit(model, x, y)
    _fit(MLP([16], seed=1), x, y)  # another model, the same data set
    assert counted() == (2, 1, 1)


@pytest.mark.parametrize("n", [200, 5000])
@pytest.mark.parametrize("change", ["scale", "shuffle rows", "refill"])
def test_an_array_changed_in_place_is_prepared_again(counted, n, change):
    x, y = _data(n)
    _fit(MLP([16], optimizer="sgd", lr=0.01), x, y)
    if change == "scale":
        x *= np.float32(0.5)
    elif change == "shuffle rows":
        np.random.default_rng(1).shuffle(x)
    else:
        x[...] = _data(n, seed=2)[0]
    assert counted() == (1, 1, 1)
    changed = _fit(MLP([16], optimizer="sgd", lr=0.01), x, y)
    assert counted() == (2, 2, 2)
    # and it trains on the new values: the same as a model fit on a fresh copy of them
    fresh = _fit(MLP([16], optimizer="sgd", lr=0.01), x.copy(), y)
    assert changed.history["loss"] == fresh.history["loss"]


def test_forget_and_a_freed_array_drop_the_preparation(counted):
    x, y = _data(300)
    _fit(MLP([16]), x, y)
    prepared.forget(x)  # a few values edited in place: the documented way to say so
    x[0, 0] = 0.5
    _fit(MLP([16]), x, y)
    assert counted() == (2, 2, 2)
    n_entries = len(prepared._ENTRIES)
    del x
    gc.collect()
    assert len(prepared._ENTRIES) == n_entries - 1  # held weakly: gone with the array


def test_converted_and_unconvertible_inputs(counted):
    x, y = _data(300)
    x64 = x.astype(np.float64)
    m1, m2 = MLP([16], seed=3), MLP([16], seed=3)
    _fit(m1, x64, y)
    _fit(m1, x64, y)  # the float32 copy is kept with the entry
    assert counted() == (1, 1, 1)
    _fit(m2, x.tolist(), y)  # a list has no identity to key on: checked every time
    _fit(m2, x.tolist(), y)
    assert counted()[0] == 3
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="x must have 64 features"):
        _fit(m1, x[:, :10], y)  # a cached data set's shape is still checked against the model


def test_a_cached_second_fit_gives_the_same_bits_as_an_uncached_one(counted):
    x, y = _data(2000)
    cached, uncached = MLP([32, 16], seed=4), MLP([32, 16], seed=4)
    for _ in range(2):
        _fit(cached, x, y)
        _fit(uncached, x.copy(), y)
    for a, b in zip(cached.get_weights(), uncached.get_weights()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("batch_size", [1, 32, 128])
def test_fit_trains_exactly_as_the_benchmarks_inner_loop(batch_size):
    """MLP.fit (chunks of CHUNK_SAMPLES, callbacks, divergence checks) and backend.train_steps as
    fastnn-bench runs it (make_runner: up to 8 calls an epoch) give the same weights, bit for bit."""
    x, y = _data(1500 if batch_size > 1 else 400, d=784)
    model = MLP([64, 32], optimizer="sgd", lr=0.01, seed=5).build(784, 10)
    w0 = model.get_weights()
    run = make_runner("numba", x, y, list(zip(w0[::2], w0[1::2])), lr=0.01)
    rng, _ = shuffle_stream(7, len(x), True, 0)
    steps = -(-len(x) // batch_size)
    for _ in range(2):
        order = rng.permutation(len(x)).astype(np.int64)
        chunk = -(-steps // 8)
        for start in range(0, steps, chunk):
            assert run(order, start * batch_size, min(chunk, steps - start), batch_size) == min(chunk, steps - start)
    model.fit(x, y, epochs=2, batch_size=batch_size, seed=7, verbose=0)
    from fastnn.bench.workload import build_net

    bench_weights = [a for i in range(len(w0) // 2) for a in _dense(run.net, i)]
    assert build_net(list(zip(w0[::2], w0[1::2]))).params.shape == run.net.params.shape
    for a, b in zip(model.get_weights(), bench_weights):
        assert np.array_equal(a, b)


def _dense(net, i):
    from fastnn.backends import spec as S

    return S.dense_views(net, i)
