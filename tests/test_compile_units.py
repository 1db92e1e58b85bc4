"""A run compiles only what its configuration uses (fresh process, empty Numba cache)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import json
from fastnn import MLP
from fastnn.backends import jit_progress
import numpy as np
rng = np.random.default_rng(0)
x = (rng.integers(0, 256, (64, 16)) * (rng.random((64, 16)) < 0.2) / 255).astype(np.float32)  # like MNIST pixels
y = np.arange(64) % 3
with jit_progress.record() as rec:
    MLP([8, 4], optimizer={optimizer!r}).build(16, 3).fit(x, y, epochs=1, batch_size=16, verbose=1)
print(json.dumps(rec.functions))
"""


def _compiled(tmp_path, optimizer):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / optimizer), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(optimizer=optimizer)], env=env, capture_output=True,
                          text=True, timeout=900, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_the_default_mlp_compiles_no_batch_norm_dropout_augmentation_or_rmsprop(tmp_path):
    functions, stderr = _compiled(tmp_path, "adam")
    assert "fastnn.backends.jit_loop._train_loop" in functions and "fastnn.backends.jit_optimizers._adam_step" in functions
    unwanted = [f for f in functions if any(k in f for k in ("batchnorm", "dropout", "augment", "rmsprop", "_sgd_step"))]
    assert unwanted == []
    # a small network on two threads lists ahead, and its loop runs on one thread: no prange code
    # (the split switch, jit_loop.split_switch); on one thread there is none either
    parallel = [f for f in functions if f.rsplit(".", 1)[-1].endswith("_par")]
    assert parallel == []
    # fit(verbose=1) says what it compiles (a cold cache: the loop takes well over a second)
    assert "fastnn: compiled the training loop in" in stderr, stderr
