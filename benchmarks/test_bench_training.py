"""Full-training benchmarks: one epoch of plain SGD on the real 60,000-image training sets.

Parametrised by runner x dataset x hidden layers x batch size, with the runners of
``fastnn.bench``: ``fit`` (``MLP.fit``, one epoch a call), ``numba`` and ``numpy`` (fastnn's
backends, ``train_steps``),
``reference`` (the independent hand-written NumPy loop in ``fastnn/bench/reference_numpy_mlp.py``)
``torch`` and ``jax`` (PyTorch, JAX on CPU; skipped when not importable). Every runner starts from
the same He-initialised weights and walks the same seeded permutation.

Each round is one epoch, or, where an epoch would take longer than
``FASTNN_BENCH_MAX_SECONDS`` (NumPy at batch 1, the 1024-1024 network), a fixed number
of steps of it; ``extra_info`` holds ``steps``, ``samples`` and the median
``samples_per_s`` (extrapolated in the step-limited case, flagged ``extrapolated``).
A warm-up round runs first, so compilation is never timed; ``test_compile_time``
reports it separately (cold and cached start, in fresh processes).

For ratios measured in one process (the numbers to quote), use ``fastnn-bench``.

    pytest benchmarks/test_bench_training.py --benchmark-only -k "mnist and 128-64"
"""

import pytest

from fastnn import bench

DATASETS = ("mnist", "kmnist")
LAYERS = ((128, 64), (1024, 1024))


@pytest.mark.parametrize("batch_size", bench.BATCH_SIZES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("hidden", LAYERS, ids=lambda h: "-".join(map(str, h)))
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("runner", bench.RUNNERS)
def test_train_epoch(benchmark, runner, dataset, hidden, batch_size, training_set, max_seconds):
    ok, skipped = bench.available_runners([runner])
    if not ok:
        pytest.skip(skipped[runner])
    x, y = training_set(dataset)
    sizes = bench.layer_sizes(x.shape[1], hidden)
    run = bench.make_runner(runner, x, y, bench.he_weights(sizes))
    order = bench.epoch_order(len(x))
    steps = bench.plan_steps(run, order, batch_size, max_seconds)  # includes the warm-up
    if hasattr(run, "prepare"):  # JAX: compile the timed call's shapes first
        run.prepare(order, steps, batch_size)
    benchmark.group = f"train {dataset} {'-'.join(map(str, sizes))} batch {batch_size}"
    done = benchmark.pedantic(run, args=(order, 0, steps, batch_size), rounds=3, iterations=1, warmup_rounds=1)
    samples = min(steps * batch_size, len(x))
    benchmark.extra_info.update(
        runner=runner, steps=steps, samples=samples, extrapolated=steps < -(-len(x) // batch_size),
        samples_per_s=samples / benchmark.stats.stats.median, threads=bench.thread_info(),
        flops_per_sample=bench.train_flops_per_sample(sizes))
    assert done == steps, f"{runner} applied {done} of {steps} steps"  # correctness, not speed


def test_compile_time(benchmark):
    """Import-to-first-step of the Numba backend in fresh processes: cold cache, then cached."""
    result = {}
    benchmark.group = "numba compile"
    benchmark.pedantic(lambda: result.update(bench.compile_times()), rounds=1, iterations=1)
    for label in ("cold", "cached"):
        for key, value in result[label].items():
            benchmark.extra_info[f"{label}_{key}"] = value
