"""Compile the training loop in a second process while this one compiles the rest.

On a cold cache the training loop is the largest compile unit (about three quarters of
``fastnn-train``'s compile time); the inference loop and the listing-ahead thread are small,
and Numba compiles one function at a time per process. ``training_loop_beside(model, x, y,
batch_size)`` starts a process that trains a copy of ``model`` for one epoch on x, y (a few
rows) with one Numba thread, which compiles exactly the training loop a run with listing
ahead uses (the same signature: listing ahead also runs the loop on one thread) and writes it
to the shared cache (saves are locked: ``backends.jit_cache``). Meanwhile the caller compiles
the other units; on leaving the block it waits for the process, and its own training then
loads the loop from the cache.

The process is a helper, never a dependency: if it fails, is killed or the platform has no
``flock``, the caller compiles the loop itself as before. It dies with its parent (Linux) and
is killed when the block is left by an exception (Ctrl-C included).
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from .backends import jit_cache

_CHILD = """
import json, sys
import numpy as np
from fastnn.compile_ahead import _train_copy
from fastnn.sweep_worker import die_with_parent
die_with_parent(int(sys.argv[3]))
with open(sys.argv[1]) as f:
    job = json.load(f)
data = np.load(sys.argv[2])
_train_copy(job["class"], job["config"], data["x"], data["y"], job["batch_size"])
"""


def _train_copy(class_name, config, x, y, batch_size):
    from .io import _model_classes

    model = _model_classes()[class_name].from_config(config)
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)


def enabled():
    """Whether a helper process may compile beside this one: the Numba backend's cache saves can
    be locked (POSIX), the cache is on, and the machine has a second core to give it."""
    from numba import config

    return jit_cache.fcntl is not None and not config.DISABLE_JIT and (os.cpu_count() or 1) > 1


@contextlib.contextmanager
def training_loop_beside(model, x, y, batch_size):
    """While the block runs, a second process compiles the training loop of a copy of ``model``
    (built) on x, y (float32 (n, d), int64 (n,); a few batches); leaving the block waits for it.
    Yields the process (or None when ``enabled()`` is False). ``stop(process)`` ends it early."""
    if not enabled():
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="fastnn-compile-") as tmp:
        job, arrays = os.path.join(tmp, "job.json"), os.path.join(tmp, "data.npz")
        with open(job, "w") as f:
            json.dump({"class": type(model).__name__, "config": model.get_config(), "batch_size": int(batch_size)}, f)
        np.savez(arrays, x=np.ascontiguousarray(x), y=np.asarray(y))
        # one Numba thread: no listing ahead, so the loop and its callees are the listing-ahead
        # run's, and the process's own helper thread (listing) is not compiled there
        env = dict(os.environ, NUMBA_NUM_THREADS="1")
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, job, arrays, str(os.getpid())], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield proc
            proc.wait()
        finally:
            stop(proc)


def stop(proc):
    """End the helper process now (nothing it saved is lost: each cache entry is whole)."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
