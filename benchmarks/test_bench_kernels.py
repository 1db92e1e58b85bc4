"""Per-kernel benchmarks: matmuls on the real layer shapes, fused activations, softmax+NLL
and optimizer updates, for both backends.

Cases come from ``fastnn.bench.kernel_cases`` (the same list ``fastnn-bench --kernels``
prints as a table). Matmul implementations are reported separately: ``blas`` is plain
``np.dot``, ``numpy.matmul`` the NumPy backend's, and ``numba.<name>`` each Numba
variant (``matmul`` the contract's entry point, which picks zero skipping for sparse
inputs; ``matmul_blocked`` hand-written dense; ``matmul_sparse_rows`` exact zero skipping;
``matmul_blas`` np.dot inside @njit). ``matmul_xt`` is the weight gradient x.T @ dz.

Run a slice, e.g.::

    pytest benchmarks/test_bench_kernels.py --benchmark-only -k "matmul and 784x128"

Benchmarks are grouped by (kernel, shape, batch) so implementations sit side by side.
The first call (compilation) happens in the warm-up, outside the timing.
"""

import pytest

from fastnn import bench

CASES = bench.kernel_cases()


@pytest.mark.parametrize("case", CASES, ids=[bench.case_id(c) for c in CASES])
def test_kernel(benchmark, case, mnist_rows):
    group, impl, shape, bs = case
    fn, flops = bench.make_kernel_call(case, mnist_rows)
    fn()  # compile / first touch outside the timing
    benchmark.group = f"{group} {'x'.join(map(str, shape))}" + (f" batch {bs}" if bs else "")
    benchmark.extra_info.update(impl=impl, flops=flops)
    benchmark.pedantic(fn, rounds=20, iterations=_iterations(fn), warmup_rounds=1)
    if flops:
        benchmark.extra_info["gflops_median"] = flops / benchmark.stats.stats.median / 1e9


def _iterations(fn):
    """Calls per round so that one round lasts about a millisecond (tiny kernels need many)."""
    return max(1, int(1e-3 / max(bench.time_call(fn, target_s=1e-3, repeats=1)[0], 1e-7)))
