"""fastnn: readable multilayer-perceptron training with Numba-compiled kernels."""

__version__ = "0.1.0"

import os

# Thread pools that wait by spinning fight over the cores: set before NumPy, SciPy and
# Numba load (every fastnn import runs this first); values the user set win.
# - Numba's OpenMP workers spin between parallel regions. On a busy 2-core machine a
#   784-128-64-10 MNIST epoch took ~40 s with 2 threads against 1.4 s with passive
#   (sleeping) waits, which cost only microseconds per region on an idle machine.
# - OpenBLAS workers spin for 2**28 cycles (~0.1 s) after each call. NumPy's and SciPy's
#   (Numba's np.dot) copies and Numba's pool then steal each other's cores: with 2 threads,
#   784-128-64-10 at batch 128 ran at 124k samples/s against 204k with a 2**4-cycle
#   timeout, and the NumPy backend at 0.84x of the reference loop against 0.98x.
#: the variables above that this import set (the user had not): fastnn-bench times its NumPy
#: baselines without them, as a plain NumPy program runs
ENV_DEFAULTS_APPLIED = tuple(k for k in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT") if k not in os.environ)
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from . import callbacks, layers, optimizers  # noqa: E402
from .callbacks import (BackupAndRestore, CSVLogger, EarlyStopping, History, LambdaCallback,  # noqa: E402
                        LearningRateScheduler, ModelCheckpoint, ProgressBar, ReduceLROnPlateau)
from .datasets import DatasetError, load_dataset  # noqa: E402
from .io import load  # noqa: E402
from .layers import BatchNorm, Dense, Dropout, ReLU, Sigmoid, Tanh  # noqa: E402
from .model import MLP, NotFittedError, Sequential  # noqa: E402
from .optimizers import SGD, Adam, RMSprop  # noqa: E402

__all__ = [
    "MLP", "Sequential", "MLPClassifier", "load", "load_dataset", "DatasetError", "NotFittedError",
    "Dense", "ReLU", "Sigmoid", "Tanh", "Dropout", "BatchNorm", "SGD", "Adam", "RMSprop",
    "History", "EarlyStopping", "ModelCheckpoint", "BackupAndRestore", "ProgressBar", "LearningRateScheduler",
    "ReduceLROnPlateau", "CSVLogger", "LambdaCallback", "layers", "optimizers", "callbacks",
]


def __getattr__(name):
    # MLPClassifier needs scikit-learn (the "sklearn" extra): imported on first use, so that
    # `import fastnn` neither needs nor pays for it.
    if name == "MLPClassifier":
        from .estimator import MLPClassifier

        return MLPClassifier
    raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
