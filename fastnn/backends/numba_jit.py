"""The Numba backend's facade: the contract's kernel names (see ``fastnn.backends``), gathered
from the modules that hold them, plus the step-by-step driver and ``warmup``.

Each kernel is a module-level ``@njit(cache=True, error_model="numpy")`` function;
``kernel.py_func`` runs its Python body. Hyperparameters are cast to float32 once per call
and every elementwise operation is done in float32, in the same order as the NumPy twin, so
the two backends differ only by summation order and libm rounding.

Where things live (open the module for what you change):

==================  =====================================================================
``jit_base``        thread pool start, serial/parallel thresholds, non-zero count, views
``jit_matmul``      dense matrix products: BLAS, 4 x 4 tiles, exact zero skipping
``jit_gemm``        BLAS products with the same bits on any thread count (fixed blocks)
``jit_activations`` ReLU/sigmoid/tanh kernels and the fused scalar ``_act``/``_act_grad``
``jit_dense``       dense layer forward/backward (non-zero lists for sparse x, else BLAS)
``jit_loss``        log-softmax and the fused softmax + NLL + gradient (plain and row-weighted)
``jit_dropout``     inverted dropout and its counter-based generator
``jit_batchnorm``   batch normalisation
``jit_optimizers``  SGD, RMSprop, Adam updates and the loop's optimizer dispatch
``jit_layers``      one layer of the spec table forward/backward (the loop's layer dispatch)
``jit_listing``     the first layer's list buffers and listing ahead on a second thread
``jit_loop``        the compiled training and inference loops and their Python drivers
``numba_sparse``    the non-zero list kernels; ``simd``, ``atomics``: their primitives
==================  =====================================================================

Threads: ``prange`` splits only independent rows (or weight rows), each computed by one
thread in a fixed order, so results do not depend on the thread count and a single-threaded
run is bit-reproducible; BLAS runs on one thread, large products in blocks fixed by their
shape that Numba's threads share (``jit_gemm``). Small problems stay serial, because a parallel
region with sleeping waits (fastnn's default) costs ~44 us. No ``fastmath``: reordering
would break equality with the step-by-step path. ``error_model="numpy"``: a float division
by zero gives inf/nan as in NumPy instead of raising, and, more to the point, without the
per-division check LLVM can vectorise the loops.

Whole network: ``train_steps`` runs a compiled loop over many batches, built from these
same kernels; ``train_steps_stepwise`` is the plain-Python driver of ``stepwise.py`` over
these kernels, which must give the same numbers.
"""

import sys

import numpy as np

from . import stepwise
from .augment import augment_rows
from .jit_activations import activation_backward, activation_forward
from .jit_base import PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_WORK, density
from .jit_batchnorm import batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train
from .jit_dense import dense_backward, dense_backward_sgd, dense_forward
from .jit_dropout import dropout_backward, dropout_forward, rng_key, rng_uniform
from .jit_gemm import SPLIT_MIN_MACS, gemm_nn, gemm_nt, gemm_tn, serial_blas
from .jit_listing import (LIST_AHEAD_MAX_TERMS, SYNC_SIZE, _should_list_ahead, compile_list_ahead, matmul_lists,
                          matmul_xt_lists)
from .jit_loop import (BLAS_SERIAL_MAX_MACS, ByteInputs, _small_products, forward, lists_ahead,
                       loop_on_one_thread, prepare_inputs, train_steps)
from .jit_loss import log_softmax, softmax_nll, softmax_nll_weighted
from .jit_matmul import matmul, matmul_blas, matmul_blocked, matmul_sparse_rows, matmul_xt_sparse
from .jit_optimizers import adam_update, rmsprop_update, sgd_update
from .spec import ACT_NONE, ACT_RELU, ACT_SIGMOID, ACT_TANH, OPT_ADAM, OPT_RMSPROP, OPT_SGD

NAME = "numba"

# The contract's kernels and the exported variants (``fastnn.backends``), plus the tuning
# constants and private helpers tests and benchmarks reach through this facade.
__all__ = ["NAME", "activation_backward", "activation_forward", "adam_update", "augment_rows", "batchnorm_backward",
           "batchnorm_forward_eval", "batchnorm_forward_train", "dense_backward", "dense_backward_sgd",
           "dense_forward", "density", "dropout_backward", "dropout_forward", "forward", "forward_stepwise", "gemm_nn",
           "gemm_nt", "gemm_tn", "log_softmax", "make_workspace", "matmul", "matmul_blas", "matmul_blocked",
           "matmul_lists", "matmul_sparse_rows", "matmul_xt_lists", "matmul_xt_sparse", "prepare_inputs",
           "rmsprop_update", "rng_key", "rng_uniform", "serial_blas", "sgd_update", "softmax_nll",
           "softmax_nll_weighted", "train_steps", "train_steps_stepwise", "warmup", "BLAS_SERIAL_MAX_MACS",
           "ByteInputs", "LIST_AHEAD_MAX_TERMS", "PARALLEL_MIN_ELEMENTS", "PARALLEL_MIN_WORK", "SPLIT_MIN_MACS",
           "SYNC_SIZE", "_small_products", "_should_list_ahead", "compile_list_ahead",
           "lists_ahead", "loop_on_one_thread"]

make_workspace = stepwise.make_workspace


def train_steps_stepwise(x, y, order, start, n_steps, batch_size, net, opt, lr_steps, seed, smoothing, aug,
                         step_loss, step_correct, workspace=None, inputs=None, sample_weight=None):
    """``train_steps`` by the plain-Python step-by-step driver over these kernels (for tests/debugging)."""
    with serial_blas():
        return stepwise.train_steps(sys.modules[__name__], x, y, order, start, n_steps, batch_size, net, opt,
                                    lr_steps, seed, smoothing, aug, step_loss, step_correct, workspace,
                                    sample_weight)


def forward_stepwise(x, net, out, batch_size, workspace=None):
    """``forward`` by the plain-Python driver over these kernels."""
    with serial_blas():
        stepwise.forward(sys.modules[__name__], x, net, out, batch_size, workspace)


def warmup():
    """Compile (or load from Numba's cache) the float32 specialisations training uses.

    Runs a few steps of a tiny network with every layer kind and optimizer through the
    compiled loop, the step-by-step path and ``forward``. Call it once before starting
    several processes that share the on-disk cache, so they only read it.
    """
    from .spec import NetBuffers, OptBuffers, allocate

    layers = [("dense", 12, 8, ACT_RELU), ("batchnorm", 8, 0.1, 1e-5), ("dropout", 8, 0.5),
              ("activation", 8, ACT_TANH), ("dense", 8, 3, ACT_SIGMOID), ("dense", 3, 3, ACT_NONE)]
    x = np.zeros((10, 12), np.float32)
    x[:, :3] = 1.0
    y = np.arange(10, dtype=np.int64) % 3
    hps = {OPT_SGD: [(0.0, 0, 0.0, 0), (0.9, 1, 1e-4, 0)], OPT_RMSPROP: [(0.99, 1e-8, 0.0, 0.5)],
           OPT_ADAM: [(0.9, 0.999, 1e-8, 0.0)]}
    for code, settings in hps.items():
        for hp in settings:
            for run in (train_steps, train_steps_stepwise):
                net = allocate(layers)
                net = NetBuffers(net.spec, net.fconf, net.params + np.float32(0.1), net.grads, net.state)
                opt = OptBuffers(code, np.array(hp, np.float64), np.zeros((2, len(net.params)), np.float32),
                                 np.zeros(1, np.int64))
                run(x, y, np.arange(10), 0, 3, 4, net, opt, np.full(3, 0.01), 0, 0.0, np.zeros(8), np.zeros(3),
                    np.zeros(3, np.int64))
    compile_list_ahead(x, prepare_inputs(x))
    out = np.zeros((10, 3), np.float32)
    forward(x, net, out, 4)
    forward_stepwise(x, net, out, 4)
