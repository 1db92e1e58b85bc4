"""Fixtures of the pytest-benchmark suites (``pytest benchmarks/ --benchmark-only``).

These are measurements, never assertions about speed. They live outside ``tests/`` so
that the CI command ``pytest tests`` does not collect them. They call the same
functions as ``fastnn-bench`` (``fastnn/bench.py``): one code path.

Environment knobs
-----------------
FASTNN_DATA                 where mnist/ and kmnist/ IDX files live (never downloaded)
FASTNN_BENCH_MAX_SECONDS    a training round times at most about this long; longer epochs are
                            step-limited and samples/s extrapolated (default 2; ``inf`` = full epochs)
FASTNN_BENCH_THREADS        thread count for Numba, NumPy's OpenBLAS and PyTorch (default: as started)
"""

import math
import os
import sys
from pathlib import Path

import pytest

# A source checkout need not be installed: make ``import fastnn`` find the repository.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastnn import bench  # noqa: E402


def pytest_configure(config):
    threads = os.environ.get("FASTNN_BENCH_THREADS")
    if threads:
        bench.set_threads(int(threads))


@pytest.fixture(scope="session")
def max_seconds():
    value = float(os.environ.get("FASTNN_BENCH_MAX_SECONDS", "2"))
    return math.inf if value <= 0 else value


_DATA = {}


@pytest.fixture(scope="session")
def training_set():
    """``training_set(name)`` -> (x, y), loaded once per session; skips when the files are absent."""

    def load(name):
        if name not in _DATA:
            try:
                _DATA[name] = bench.load_training_set(name)
            except Exception as e:  # DatasetError and friends: the data is not here
                pytest.skip(f"{name} training set not available ({e}); set FASTNN_DATA")
        return _DATA[name]

    return load


@pytest.fixture(scope="session")
def mnist_rows(training_set):
    """1024 real MNIST rows: the mostly-zero inputs the first layer's kernels see."""
    return training_set("mnist")[0][:1024].copy()


@pytest.fixture(scope="session", autouse=True)
def machine_info():
    """Print the machine once (CPU, BLAS, threads, versions) so that every report names it."""
    info = bench.describe_machine()
    print(f"\nfastnn benchmarks on: {info}")
    return info
