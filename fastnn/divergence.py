"""When is a training run diverging, and how is the user told.

A run has diverged when a step's loss is not finite, or when the loss *explodes*: the
sample-weighted mean loss of a whole chunk of steps (``model.CHUNK_SAMPLES`` samples, 64
batches of 128) exceeds ``EXPLOSION_FACTOR`` times ln(n_classes), the loss of a uniform
guess. At 1000 x ln(10) = 2303 the model gives the true class, on average over thousands of
samples, a probability of e^-2303: its logits are thousands apart, softmax is saturated and
every update is as large as the learning rate allows, the state ``--lr 1e6`` reaches (first
chunks of 1e10 to 1e25 with Adam, SGD and RMSprop on MNIST and KMNIST).

Why a chunk mean and not a single step: a too-high but workable learning rate can spike one
step's loss and recover. Measured on 12,000 MNIST/KMNIST rows, 3 epochs (3 optimizers x
constant/cosine/onecycle x batch norm on/off, learning rates up to 10, batches of 1 to
128): single steps reached 1,868 in a run that recovered to 63% accuracy (RMSprop lr=1 with
batch norm) and 3e7 in runs that went on with finite losses, but no chunk mean went over 876,
and every run that learned anything stayed under 73; ordinary runs stay under 3. So the rule
leaves a margin of 30x over any run that recovers and never stops a warm-up, while a run
that explodes is stopped in its first chunk. The rule depends only on the losses, never on
the run's history, so a resumed run stops exactly where an uninterrupted one does.

The weights kept are those before the first step of the offending chunk whose own loss is
over the threshold (or not finite): the last weights that gave a sane loss.
"""

import math
import os
import sys
import warnings

import numpy as np

EXPLOSION_FACTOR = 1000.0


def explosion_threshold(n_classes):
    """Chunk-mean loss above which a run counts as exploded."""
    return EXPLOSION_FACTOR * math.log(n_classes)


def sample_mean(step_values, sizes):
    """Sample-weighted mean of per-step values (float64 (n,), ``sizes`` float64 (n,) > 0 in sum).

    A plain sum, not ``step_values @ sizes``: NumPy's ``@`` calls OpenBLAS's ddot, which on
    more than one BLAS thread wakes a worker for every call, leaves it spinning on the other
    core, and sums in an order that depends on the thread count (a 2-thread ``fit`` at batch 1
    ran 13% slower than a 1-thread one, with 14% more CPU time, for these few dot products)."""
    return float(np.multiply(step_values, sizes).sum() / sizes.sum())


def first_exploded_step(step_loss, sizes, threshold):
    """Index of the first step whose loss is over ``threshold`` when the chunk's
    sample-weighted mean is over it, else None. ``step_loss``, ``sizes``: float64 (n_steps,)."""
    if len(step_loss) == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        mean = sample_mean(step_loss, sizes)
    if not mean > threshold:
        return None
    return int(np.argmax(step_loss > threshold))


class DivergenceWarning(RuntimeWarning):
    """Training stopped because the loss became non-finite or exploded."""


_INTERNAL = (os.path.dirname(os.path.abspath(__file__)) + os.sep,
             os.path.dirname(os.path.abspath(np.__file__)) + os.sep,
             os.path.abspath(sys.modules["contextlib"].__file__))


def warn_outside(message, category):
    """Warn at the first caller frame outside fastnn, NumPy and contextlib (``np.errstate``
    decorates ``fit``): the warning points at the user's line, or at nothing at all."""
    frame, level = sys._getframe(1), 2  # stacklevel 2 is this function's caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)  # past the stack's end: no location
