"""Per-kernel cases: matmul variants on the real layer shapes, fused activations,
softmax+NLL and optimizer updates, for both backends; timing and the table."""

import contextlib
import math
import statistics
import time

import numpy as np

from .common import BATCH_SIZES, CLOCKS, SEED
from .workload import load_training_set


MATMUL_SHAPES = ((784, 128), (128, 64), (64, 10), (784, 1024), (1024, 1024))
ACT_WIDTHS = (128, 1024)
OPT_SIZES = {"784-128-64-10": 109386, "784-1024-1024-10": 1863690}


# out = a @ b kernels a backend may export: the contract's entry and the Numba-only variants
# (``*_lists``: the training loop's first-layer kernels, the non-zero lists built per call).
MATMUL_VARIANTS = ("matmul", "matmul_lists", "matmul_blocked", "matmul_sparse_rows", "matmul_blas")
# dW = x.T @ dz kernels (the weight gradient); BLAS is np.dot(x.T, dz).
XT_VARIANTS = ("matmul_xt_lists", "matmul_xt_sparse")


def matmul_impls(backend_name, variants=MATMUL_VARIANTS):
    """Names of the ``variants`` a backend exports (the NumPy backend has only ``matmul``)."""
    from fastnn.backends import get_backend

    mod = get_backend(backend_name)
    return [n for n in variants if callable(getattr(mod, n, None))]


def kernel_cases(backends=("numpy", "numba"), batch_sizes=BATCH_SIZES, shapes=MATMUL_SHAPES):
    """Every per-kernel case as (group, impl, shape, batch); ``make_kernel_call`` turns one into a callable.

    ``impl`` is a backend name, ``backend.kernel`` for matmul variants, or ``blas`` (plain np.dot).
    ``matmul`` is the forward product x @ W, ``matmul_xt`` the weight gradient x.T @ dz.
    """
    cases = []
    for bs in batch_sizes:
        for shape in shapes:
            cases.append(("matmul", "blas", shape, bs))
            cases += [("matmul", f"{b}.{m}", shape, bs) for b in backends for m in matmul_impls(b)]
            cases.append(("matmul_xt", "blas", shape, bs))
            cases += [("matmul_xt", f"{b}.{m}", shape, bs) for b in backends for m in matmul_impls(b, XT_VARIANTS)]
        for shape in shapes:
            cases += [(g, b, shape, bs) for g in ("dense_forward", "dense_backward") for b in backends]
        for act in ("relu", "sigmoid", "tanh"):
            for w in ACT_WIDTHS:
                cases += [(g, b, (act, w), bs) for g in ("activation_forward", "activation_backward") for b in backends]
        cases += [("softmax_nll", b, (10,), bs) for b in backends]
    for size in OPT_SIZES.values():
        for opt in ("sgd", "sgd_momentum", "rmsprop", "adam"):
            cases += [(opt, b, (size,), 0) for b in backends]
    return cases


def case_id(case):
    group, impl, shape, bs = case
    return f"{group}-{impl}-{'x'.join(map(str, shape))}" + (f"-b{bs}" if bs else "")


def make_kernel_call(case, images):
    """A zero-argument callable running one kernel case on realistic inputs.

    ``images`` are MNIST rows (float32 (n, 784)): inputs of 784-wide layers are real,
    mostly-zero pixels (what the zero-skipping kernel sees); other inputs are ReLU
    outputs of standard-normal noise (about half zeros, like hidden activations).
    Returns (fn, flops) with flops the dense arithmetic of one call (0 where not meaningful).
    """
    from fastnn.backends import get_backend
    from fastnn.backends import spec as S

    group, impl, shape, bs = case
    rng = np.random.default_rng(SEED)
    f32 = np.float32

    def inputs(n, width):
        if width == images.shape[1]:
            return np.ascontiguousarray(images[np.arange(n) % len(images)])
        return np.maximum(rng.standard_normal((n, width), dtype=f32), 0)

    if group == "matmul":
        k, m = shape
        a, b, out = inputs(bs, k), rng.standard_normal((k, m), dtype=f32), np.empty((bs, m), f32)
        if impl == "blas":
            return (lambda: np.dot(a, b, out=out)), 2 * bs * k * m
        backend, name = impl.split(".")
        fn = getattr(get_backend(backend), name)
        return (lambda: fn(a, b, out)), 2 * bs * k * m
    if group == "matmul_xt":
        k, m = shape
        x, dz, dW = inputs(bs, k), rng.standard_normal((bs, m), dtype=f32), np.empty((k, m), f32)
        if impl == "blas":
            return (lambda: np.dot(x.T, dz, out=dW)), 2 * bs * k * m
        backend, name = impl.split(".")
        fn = getattr(get_backend(backend), name)
        return (lambda: fn(x, dz, dW)), 2 * bs * k * m
    mod = get_backend(impl)
    if group in ("dense_forward", "dense_backward"):
        k, m = shape
        x, W = inputs(bs, k), (rng.standard_normal((k, m), dtype=f32) * f32(math.sqrt(2 / k)))
        bias, out = np.zeros(m, f32), np.empty((bs, m), f32)
        act = S.ACT_NONE if m == 10 else S.ACT_RELU
        if group == "dense_forward":
            return (lambda: mod.dense_forward(x, W, bias, act, out)), 2 * bs * k * m
        dz, dW, db = rng.standard_normal((bs, m), dtype=f32), np.empty((k, m), f32), np.empty(m, f32)
        # The first layer's dx is never needed: pass the empty array, as the training loop does.
        dx = np.empty((0, 0), f32) if k == images.shape[1] else np.empty((bs, k), f32)
        return (lambda: mod.dense_backward(x, W, dz, dx, dW, db)), 2 * bs * k * m * (1 + (dx.size > 0))
    if group.startswith("activation"):
        act, w = shape
        code = S.ACTIVATIONS[act]
        x, out = rng.standard_normal((bs, w), dtype=f32), np.empty((bs, w), f32)
        if group == "activation_forward":
            return (lambda: mod.activation_forward(code, x, out)), 0
        yv, dy, dx = np.empty((bs, w), f32), rng.standard_normal((bs, w), dtype=f32), np.empty((bs, w), f32)
        mod.activation_forward(code, x, yv)
        return (lambda: mod.activation_backward(code, yv, dy, dx)), 0
    if group == "softmax_nll":
        logits, dl = rng.standard_normal((bs, shape[0]), dtype=f32), np.empty((bs, shape[0]), f32)
        y = rng.integers(0, shape[0], bs).astype(np.int64)
        return (lambda: mod.softmax_nll(logits, y, 0.0, dl)), 0
    (size,) = shape
    p, g = rng.standard_normal(size, dtype=f32), rng.standard_normal(size, dtype=f32) * f32(1e-3)
    s1, s2 = np.zeros(size, f32), np.zeros(size, f32)
    if group == "sgd":
        return (lambda: mod.sgd_update(p, g, s1, 1e-3, 0.0, False, 0.0)), 0
    if group == "sgd_momentum":
        return (lambda: mod.sgd_update(p, g, s1, 1e-3, 0.9, False, 0.0)), 0
    if group == "rmsprop":
        return (lambda: mod.rmsprop_update(p, g, s1, s2, 1e-3, 0.99, 1e-8, 0.0, 0.0)), 0
    if group == "adam":
        return (lambda: mod.adam_update(p, g, s1, s2, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)), 0
    raise ValueError(f"unknown kernel group {group!r}")


def time_call(fn, target_s=0.02, repeats=5, clock=time.perf_counter):
    """Seconds per call of ``fn`` in each of ``repeats`` timed loops of about ``target_s``, after a warm-up."""
    fn()  # warm-up: compilation, first touch
    t = clock()
    fn()
    one = max(clock() - t, 1e-7)
    loops = max(1, int(target_s / one))
    times = []
    for _ in range(repeats):
        t = clock()
        for _ in range(loops):
            fn()
        times.append((clock() - t) / loops)
    return times


def _blas_as_in_training(case):
    """Numba kernels that reach BLAS through ``jit_gemm`` run it on one thread, as training does
    (their blocks take the threads); ``matmul_blas`` and NumPy keep BLAS's own threads."""
    impl = case[1]
    if impl == "numba" or (impl.startswith("numba.") and impl != "numba.matmul_blas"):
        from fastnn.backends.jit_gemm import serial_blas

        return serial_blas()
    return contextlib.nullcontext()


def run_kernel_suite(batch_sizes=BATCH_SIZES, shapes=MATMUL_SHAPES, repeats=5, clock="wall", log=print):
    """Time every kernel case; returns a list of {group, impl, shape, batch, seconds (median), min_seconds, gflops}."""
    images = load_training_set("mnist", limit=1024)[0]
    records = []
    for case in kernel_cases(batch_sizes=batch_sizes, shapes=shapes):
        fn, flops = make_kernel_call(case, images)
        with _blas_as_in_training(case):
            times = time_call(fn, repeats=repeats, clock=CLOCKS[clock])
        sec = statistics.median(times)
        records.append({"group": case[0], "impl": case[1], "shape": list(case[2]), "batch": case[3],
                        "seconds": sec, "min_seconds": min(times), "gflops": flops / sec / 1e9 if flops else None})
    log(f"timed {len(records)} kernel cases")
    return records


def format_kernel_table(records, peak_gflops):
    """Markdown: matmuls (GFLOP/s and % of peak per implementation), then the other kernels (numpy vs numba)."""
    lines = []
    titles = {"matmul": "forward x @ W", "matmul_xt": "weight gradient x.T @ dz"}
    for group, title in titles.items():
        mm = [r for r in records if r["group"] == group]
        if not mm:
            continue
        impls = list(dict.fromkeys(r["impl"] for r in mm))
        lines += [f"\n### {title}: GFLOP/s (% of peak) per implementation; x is (batch, n_in), W (n_in, n_out)\n",
                  "| n_in x n_out | batch | " + " | ".join(impls) + " |", "|---|---|" + "---|" * len(impls)]
        cells = {}
        for r in mm:
            cells.setdefault((tuple(r["shape"]), r["batch"]), {})[r["impl"]] = r
        for (shape, bs), row in sorted(cells.items(), key=lambda kv: (_shape_rank(kv[0][0]), kv[0][1])):
            vals = [f"{row[i]['gflops']:.1f} ({100 * row[i]['gflops'] / peak_gflops:.0f}%)" if i in row else ""
                    for i in impls]
            lines.append(f"| {shape[0]}x{shape[1]} | {bs} | " + " | ".join(vals) + " |")
    lines += ["\n### other kernels: microseconds per call\n", "| kernel | shape | batch | numpy us | numba us | numpy/numba |",
              "|---|---|---|---|---|---|"]
    rest = {}
    for r in records:
        if r["group"] not in titles:
            rest.setdefault((r["group"], tuple(r["shape"]), r["batch"]), {})[r["impl"]] = r["seconds"]
    for (group, shape, bs), row in rest.items():
        npy, nba = row.get("numpy"), row.get("numba")
        ratio_s = f"{npy / nba:.2f}x" if npy and nba else ""
        us = [f"{v * 1e6:.1f}" if v else "" for v in (npy, nba)]
        lines.append(f"| {group} | {'x'.join(map(str, shape))} | {bs or ''} | {us[0]} | {us[1]} | {ratio_s} |")
    lines.append("\nmatmul inputs: real MNIST rows for 784-wide x (~81% zeros), ReLU(noise) otherwise (~50% zeros). "
                 "GFLOP/s counts dense work, so zero-skipping kernels can exceed the peak.")
    return "\n".join(lines)


def _shape_rank(shape):
    return MATMUL_SHAPES.index(shape) if shape in MATMUL_SHAPES else len(MATMUL_SHAPES)


