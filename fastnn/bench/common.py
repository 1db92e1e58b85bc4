"""Constants shared by the benchmark modules."""

import time
from pathlib import Path

RUNNERS = ("fit", "estimator", "numba", "numpy", "reference", "torch", "jax")
#: the runners of the main table (what users call: ``MLP.fit``, and its peers, each timed a
#: whole epoch per call) and of the inner-loop table (``backend.train_steps``, 8 calls an epoch)
FIT_TABLE = ("fit", "estimator", "reference", "torch", "jax")
LOOP_TABLE = ("numba", "numpy", "reference", "torch")
BATCH_SIZES = (1, 8, 32, 128, 512)
SEED = 0
LR = 0.01
# Timers: wall time, or process CPU time (steadier on a shared machine; 1 thread only).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
# The independent NumPy loop ships inside the package (it imports nothing from fastnn).
REFERENCE_PATH = Path(__file__).resolve().with_name("reference_numpy_mlp.py")
