"""Compiling in a second process: the helper's cache entries are used, and saves are locked."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from numba.core import caching

from fastnn import compile_ahead
from fastnn.backends import jit_cache

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import json
import numpy as np
from fastnn import MLP, compile_ahead
from fastnn.backends import jit_progress
rng = np.random.default_rng(0)
x = (rng.integers(0, 256, (64, 16)) * (rng.random((64, 16)) < 0.2) / 255).astype(np.float32)  # like MNIST pixels
y = np.arange(64) % 3
with compile_ahead.training_loop_beside(MLP([8, 4]).build(16, 3), x, y, 16) as helper:
    pass  # leaving the block waits for the helper
with jit_progress.record() as rec:
    MLP([8, 4]).build(16, 3).fit(x, y, epochs=1, batch_size=16, verbose=0)
print(json.dumps([helper.returncode, rec.functions]))
"""


@pytest.mark.skipif(not compile_ahead.enabled(), reason="needs POSIX flock and a second core")
def test_the_training_loop_compiled_beside_is_loaded_not_compiled_again(tmp_path):
    # one Numba thread here too: this fit's loop is the helper's (a one-thread loop, split None)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), NUMBA_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=900,
                          check=True)
    returncode, functions = json.loads(proc.stdout.strip().splitlines()[-1])
    assert returncode == 0
    assert "fastnn.backends.jit_loop._train_loop" not in functions, functions  # from the helper's cache entry
    assert list((tmp_path / "cache").rglob(jit_cache.LOCK_NAME))  # its saves took the lock


class _FakeIndex:
    """Stands for Numba's IndexDataCacheFile: records when its save ran."""

    def __init__(self, cache_path, stamp):
        self._cache_path, self._source_stamp, self.saved_at = cache_path, stamp, None

    def save(self, key, data):
        self.saved_at = time.monotonic()


@pytest.mark.skipif(jit_cache.fcntl is None, reason="no POSIX flock on this platform")
def test_saves_of_package_entries_wait_for_the_lock(tmp_path):
    assert getattr(caching.IndexDataCacheFile.save, "fastnn_locked", False)  # installed on import
    locked_save = jit_cache._locked(_FakeIndex.save)
    ours, other = _FakeIndex(str(tmp_path), ((1.0, 2), "a" * 64)), _FakeIndex(str(tmp_path), (1.0, 2))
    with jit_cache.save_lock(str(tmp_path)):
        held_from = time.monotonic()
        worker = threading.Thread(target=locked_save, args=(ours, "key", b"data"))
        worker.start()
        locked_save(other, "key", b"data")  # another library's entry does not wait
        time.sleep(0.3)
        released = time.monotonic()
    worker.join(5)
    assert other.saved_at < released and ours.saved_at >= released > held_from
