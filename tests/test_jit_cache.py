"""The Numba disk cache is keyed to the backend package's sources (``backends.jit_cache``)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from fastnn.backends import jit_cache, numba_jit

ROOT = Path(__file__).resolve().parents[1]

_RUN = """
import sys
from fastnn.backends import jit_cache
if {keyed}:
    jit_cache.install(jit_cache.locators_for({pkg!r}))
sys.path.insert(0, {pkg!r})
import caller
print(caller.g(), sum(caller.g.stats.cache_hits.values()))
"""


def _run(pkg, cache, keyed):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", _RUN.format(pkg=str(pkg), keyed=keyed)], env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout.split()
    return int(out[0]), int(out[1])  # g's result, whether g came from the cache


def _package(tmp_path, value):
    pkg = tmp_path / "pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "callee.py").write_text(f"from numba import njit\n\n@njit(cache=True)\ndef f():\n    return {value}\n")
    (pkg / "caller.py").write_text(textwrap.dedent("""
        from numba import njit
        from callee import f

        @njit(cache=True)
        def g():
            return f()
        """))
    return pkg


def test_an_edited_callee_in_another_file_recompiles_its_cached_caller(tmp_path):
    pkg = _package(tmp_path, 1)
    for keyed, cache in ((True, tmp_path / "keyed"), (False, tmp_path / "plain")):
        assert _run(pkg, cache, keyed) == (1, 0)  # compiled
        assert _run(pkg, cache, keyed) == (1, 1)  # loaded
    _package(tmp_path, 2)
    assert _run(pkg, tmp_path / "keyed", True) == (2, 0)
    # Numba alone checks the caller's file only and returns the stale result: why the key exists
    assert _run(pkg, tmp_path / "plain", False) == (1, 1)


def test_the_backend_kernels_use_the_package_keyed_locators():
    locator = numba_jit.softmax_nll._cache._impl.locator
    assert isinstance(locator, (jit_cache.PackageUserProvidedLocator, jit_cache.PackageInTreeLocator))
    from fastnn.backends.target import TARGET  # a BLAS first layer (FASTNN_FIRST_LAYER=blas) is other code

    blas = "+blas-first-layer" if TARGET.first_layer == "blas" else ""
    assert locator.get_source_stamp()[1] == jit_cache.sources_digest() + blas
