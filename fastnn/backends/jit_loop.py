"""The compiled training loop (``_train_loop``: many optimizer steps per call) and inference loop
(``_forward_loop``), with their Python drivers ``train_steps``, ``forward`` and ``prepare_inputs``.

The loop composes the kernel families through ``jit_layers`` and ``jit_optimizers``; with
two Numba threads and a small network it takes each batch's non-zero lists from the
listing-ahead thread (``jit_listing``). Must not hold kernels of its own.
"""

import contextlib
import mmap
from collections import namedtuple
from typing import NamedTuple

import numba
import numpy as np
from numba import njit

from . import stepwise
from .atomics import atomic_store
from .augment import augment_rows, image_shape
from .jit_activations import activation_backward
from .jit_base import _alias, _prefer_sparse, _view, copy_1d, copy_2d
from .jit_dense import _bias_act_rows, _colsum, dense_backward_sgd
from .jit_gemm import SPLIT_MIN_MACS, serial_blas
from .jit_layers import _layer_backward, _layer_forward
from .jit_listing import (_FINISHED, _NO_SYNC, SYNC_SIZE, _list_batch, _listing_ahead, _lists, _lists_of_step,
                          _should_list_ahead, _take_lists, _too_small_to_share)
from .jit_loss import _softmax_nll
from .jit_optimizers import _sgd_update, apply_update, opt_state
from .numba_sparse import (SPARSE_MAX_DENSITY, bucket_dw, byte_row_length, csr_build, csr_forward, encode_bytes,
                           sparse_enough)
from .simd import prefetch_line
from .spec import ACT, ACT_NONE, BATCHNORM, DENSE, DROPOUT, KIND, N_IN, N_OUT, OPT_SGD, NetBuffers
from .stepwise import AUG_STREAM

# The records the compiled loops take (namedtuples of arrays and scalars: Numba passes them
# field by field at no cost). The network is a spec.NetBuffers, the optimizer a
# jit_optimizers record (SgdState, RmspropState, AdamState).
Batches = namedtuple("Batches", "x y codes order weights")
"""The data set: x (N, d) float32, y (N,) int64, codes (N, byte_row_length(d)) uint8 or (0, 8)
(``prepare_inputs``), order (M,) int64: the rows of the steps' batches, in order; weights (N,)
of the rows' losses, or (0,): unweighted."""
Steps = namedtuple("Steps", "start n_steps batch_size seed smoothing lr loss correct")
"""What to run: up to n_steps batches of batch_size rows from order[start:], the seed of
dropout/augmentation, label smoothing; per step lr (in, float64), loss (out, float64) and
correct (out, int64)."""
Buffers = namedtuple("Buffers", "act grad aux vec offs labels backup empty")
"""The per-batch workspace (``stepwise.Workspace`` without its Python parts)."""
Listing = namedtuple("Listing", "lists lists2 sync")
"""The first layer's non-zero list buffers (``numba_sparse.csr_alloc``); with listing ahead a
second set for odd steps and the int64 flags the two threads share, else lists and (0,)."""
Augment = namedtuple("Augment", "params height width")
"""Augmentation (``augment.make_aug`` vector (8,) float64) of height x width images."""


def switches(spec):
    """The compile-time switches of a network: (dropout, batchnorm), each True when a layer
    of that kind is present, else None (its code is then not compiled; see ``jit_layers``)."""
    kinds = set(int(k) for k in spec[:, KIND])
    return (True if DROPOUT in kinds else None), (True if BATCHNORM in kinds else None)


def split_switch(one_thread=False):
    """The compile-time switch of the kernels' parallel code: None (not compiled: about a
    quarter of the compile time of the default network) when the compiled code runs on one
    Numba thread (``one_thread``, or one thread set), else True."""
    return None if one_thread or numba.get_num_threads() == 1 else True


# Inference splits its kernels across threads only for networks of at least this many
# multiply-adds per row (784-1024-1024-10: 1.9M; the default 784-128-64-10: 0.11M, whose
# 10,000 MNIST test images take ~10 ms on one thread): below it a second thread saves
# milliseconds, while compiling the parallel code costs seconds on first use.
INFER_SPLIT_MIN_MACS = 1 << 20


def _macs_per_row(net):
    spec = net.spec
    return sum(int(spec[i, N_IN] * spec[i, N_OUT]) for i in range(len(spec)) if spec[i, KIND] == DENSE)


@njit(cache=True, error_model="numpy", nogil=True)
def _train_loop(data, steps, net, opt, ws, listing, augment, fuse, dropout, batchnorm, split):
    # augment: an Augment or None (no augmentation: not compiled). fuse: True for plain SGD
    # (momentum 0, weight decay 0) on a dense first layer, whose weight update is then fused
    # into its backward pass; else None. dropout, batchnorm, split: see jit_layers.
    # Every array the steps touch, as reference-count-free aliases (jit_base._alias; the
    # caller holds them): each compiled function an array passes through would otherwise
    # raise and lower its count with locked instructions, ~480 a step at batch size 1.
    x, y, codes, order, sample_weight = (_alias(data.x), _alias(data.y), _alias(data.codes), _alias(data.order),
                                         _alias(data.weights))
    act, grad, aux, vec, offs, labels, backup, empty = (_alias(ws.act), _alias(ws.grad), _alias(ws.aux),
                                                        _alias(ws.vec), _alias(ws.offs), _alias(ws.labels),
                                                        _alias(ws.backup), _alias(ws.empty))
    lists, lists2, sync = _alias_lists(listing.lists), _alias_lists(listing.lists2), _alias(listing.sync)
    net = NetBuffers(_alias(net.spec), _alias(net.fconf), _alias(net.params), _alias(net.grads), _alias(net.state))
    spec, params, grads = net.spec, net.params, net.grads
    start, n_steps, batch_size, seed = steps.start, steps.n_steps, steps.batch_size, steps.seed
    listing_ahead = sync.shape[0] > 0
    weighted = sample_weight.shape[0] > 0
    batch_weights = np.empty(batch_size if weighted else 0, sample_weight.dtype)
    n_layers = spec.shape[0]
    n_total = order.shape[0]
    d0 = spec[0, N_IN]
    first_dense = spec[0, KIND] == DENSE
    n0 = spec[0, N_OUT] if first_dense else 0
    w0_end = d0 * n0
    W0 = _view(params, np.int64(0), d0, n0)
    dW0 = _view(grads, np.int64(0), d0, n0)
    b0 = params[w0_end:w0_end + n0]
    db0 = grads[w0_end:w0_end + n0]
    for s in range(n_steps):
        pos = start + s * batch_size
        if pos >= n_total:
            return s
        n = min(batch_size, n_total - pos)
        a0 = _view(act, offs[0, 0], n, d0)
        g = opt.step[0]
        rows = order[pos:pos + n]
        gp, gi, gv, blen, brow, bval = _lists_of_step(s, lists, lists2)
        for r in range(n):
            labels[r] = y[rows[r]]
        if weighted:
            for r in range(n):
                batch_weights[r] = sample_weight[rows[r]]
        # The first dense layer works from the batch's non-zero lists, built straight from
        # the data set rows (the dense batch is then never written) or from the augmented batch.
        sparse0 = False
        nnz = 0
        if augment is not None:
            augment_rows(x, rows, augment.height, augment.width, augment.params, seed, g * 64 + AUG_STREAM, a0)
            if first_dense and _prefer_sparse(a0):  # the lists only when they will be used
                nnz = csr_build(a0, rows, n, np.bool_(False), gp, gi, gv, blen, brow, bval)
                sparse0 = True
        else:
            if first_dense and SPARSE_MAX_DENSITY >= 0:  # < 0: this CPU's first layer is BLAS (target.py)
                if listing_ahead:
                    nnz = _take_lists(x, codes, d0, rows, n, s, lists, lists2, sync)
                else:
                    nnz = _list_batch(x, codes, d0, rows, n, lists)
                sparse0 = sparse_enough(nnz, n, d0)
            if not sparse0:
                for r in range(n):
                    copy_1d(x[rows[r]], a0[r])
        if not listing_ahead:  # the rows the next step reads (its listing, else augment_rows or the copy)
            if augment is None and codes.shape[0] > 0:
                _prefetch_next(codes, order, pos + n, batch_size)
            else:
                _prefetch_next(x, order, pos + n, batch_size)
        if batchnorm is not None:
            copy_1d(net.state, backup)
        for i in range(n_layers):
            w_in, w_out = spec[i, N_IN], spec[i, N_OUT]
            if i == 0 and sparse0:
                a1 = _view(act, offs[1, 0], n, w_out)
                csr_forward(gp, gi, gv, W0, a1, n, split)
                _bias_act_rows(a1, b0, spec[0, ACT])
            else:
                _layer_forward(net, i, _view(act, offs[i, 0], n, w_in), _view(act, offs[i + 1, 0], n, w_out),
                               _view(aux, offs[i, 1], n, w_out), vec[max(offs[i, 2], 0):max(offs[i, 2], 0) + w_out],
                               np.bool_(True), seed, g, dropout, batchnorm, split)
        w_last = spec[n_layers - 1, N_OUT]
        loss, correct = _softmax_nll(_view(act, offs[n_layers, 0], n, w_last), labels[:n], batch_weights[:n],
                                     steps.smoothing, _view(grad, offs[n_layers, 0], n, w_last))
        steps.loss[s] = loss
        steps.correct[s] = correct
        if not np.isfinite(loss):
            if batchnorm is not None:
                copy_1d(backup, net.state)
            return s
        lr = steps.lr[s]
        for i in range(n_layers - 1, -1, -1):
            w_in, w_out = spec[i, N_IN], spec[i, N_OUT]
            xi = _view(act, offs[i, 0], n, w_in)
            yi = _view(act, offs[i + 1, 0], n, w_out)
            dy = _view(grad, offs[i + 1, 0], n, w_out)
            if i == 0 and sparse0:
                # dense_backward(_sgd) on the lists built above: same kernels, same bits
                if spec[0, ACT] != ACT_NONE:
                    activation_backward(spec[0, ACT], yi, dy, dy)
                _colsum(dy, db0)
                bucket_dw(blen, brow, bval, dy, dW0, W0, np.float32(lr), fuse, nnz, gp, gi, gv, split)
                continue
            if fuse is not None:
                if i == 0:
                    if spec[0, ACT] != ACT_NONE:
                        activation_backward(spec[0, ACT], yi, dy, dy)
                    dense_backward_sgd(xi, W0, dy, dW0, db0, lr, split)
                    continue
            dx = _view(grad, offs[i, 0], n, w_in) if i > 0 else empty
            _layer_backward(net, i, xi, yi, dy, dx, _view(aux, offs[i, 1], n, w_out),
                            vec[max(offs[i, 2], 0):max(offs[i, 2], 0) + w_out], dropout, batchnorm, split)
        if fuse is not None:
            _sgd_update(params[w0_end:], grads[w0_end:], opt.slots[0, w0_end:], lr, 0.0, np.bool_(False), 0.0, split)
        else:
            apply_update(opt, params, grads, lr, g + 1, split)
        opt.step[0] = g + 1
        if listing_ahead:
            atomic_store(sync, _FINISHED, s + 1)  # this step's list buffer is free again
    return n_steps


@njit(cache=True, error_model="numpy")
def _prefetch_next(rows_from, order, pos, n):
    # The first cache line of each row of the next batch (order[pos:pos + n], rows of the codes
    # or of x), asked for a step ahead. Listing a batch of random rows of a data set larger
    # than the caches waited mostly on memory: each row's first access paid the page
    # translation and the memory latency (the row's further lines are then streamed). With
    # each row's first line read beforehand, listing MNIST batch 128 took 42 instead of 86 us
    # and batch 8 6.7 instead of 12.5 us (one thread, Xeon, caches evicted between batches as
    # a training step evicts them); with whole rows read, 36 and 5.2 us, but n x 13
    # prefetches would stall the step on the CPU's dozen outstanding misses. In MLP.fit
    # (with the in-place activation backward) 1.03-1.07x at batch 8 and 32.
    for i in range(pos, min(pos + n, order.shape[0])):
        prefetch_line(rows_from, order[i])


@njit(cache=True, error_model="numpy")
def _alias_lists(lists):
    gp, gi, gv, blen, brow, bval = lists
    return _alias(gp), _alias(gi), _alias(gv), _alias(blen), _alias(brow), _alias(bval)


@njit(cache=True, error_model="numpy")
def _forward_loop(x, net, out, batch_size, ws, dropout, batchnorm, split):
    spec = net.spec
    act, offs, empty = ws.act, ws.offs, ws.empty
    n_layers = spec.shape[0]
    n_total = x.shape[0]
    d0 = spec[0, N_IN]
    k = spec[n_layers - 1, N_OUT]
    vec0 = act[0:0]
    for pos in range(0, n_total, batch_size):
        n = min(batch_size, n_total - pos)
        a0 = _view(act, offs[0, 0], n, d0)
        copy_2d(x[pos:pos + n], a0)
        for i in range(n_layers):
            _layer_forward(net, i, _view(act, offs[i, 0], n, spec[i, N_IN]),
                           _view(act, offs[i + 1, 0], n, spec[i, N_OUT]), empty, vec0, None,
                           np.int64(0), np.int64(0), dropout, batchnorm, split)
        copy_2d(_view(act, offs[n_layers, 0], n, k), out[pos:pos + n])


class ByteInputs(NamedTuple):
    """``prepare_inputs``' result: one-byte codes of x and the fraction of its values that are non-zero."""

    codes: np.ndarray  # uint8 (N, byte_row_length(d))
    density: float


def prepare_inputs(x):
    """Once per data set: the one-byte codes of x (float32 (N, d)) for ``train_steps(inputs=...)``.

    Returns ``ByteInputs`` when every value of x is k / 255 for an integer k (8-bit images
    scaled as ``load_dataset`` scales them), else None. The compiled loop then lists each
    batch's non-zeros from 1 byte per pixel instead of 4 (same lists, same results). One
    pass over x (about 15 ms for MNIST's 60,000 x 784, plus the first touch of the 47 MB
    of codes: 45 ms in all), stopping at the first row with a value that is not such a fraction.
    """
    shape = (x.shape[0], byte_row_length(x.shape[1]))
    # An anonymous mapping rather than np.empty: NumPy asks for transparent huge pages on
    # large arrays, and where the kernel then compacts memory on first touch (THP defrag
    # "madvise") that took 105 ms for MNIST's 47 MB against 45 ms with plain pages; listing
    # random rows from plain pages measured no slower (96-98 against 95-96 us per batch).
    codes = np.frombuffer(mmap.mmap(-1, max(shape[0] * shape[1], 1)), np.uint8)[:shape[0] * shape[1]].reshape(shape)
    nnz = encode_bytes(x, codes)
    return ByteInputs(codes, nnz / max(x.size, 1)) if nnz >= 0 else None


_NO_CODES = np.zeros((0, 8), np.uint8)
_NO_WEIGHTS = np.zeros(0, np.float32)
# A train step whose first layer takes the zero-skipping lists and whose BLAS products are all
# under this many multiply-adds per batch is "small": with two Numba threads it may list ahead
# (``jit_listing``) instead of splitting kernels. It is jit_gemm's limit below which a product is
# one BLAS call on one thread anyway, so listing ahead loses no split product. (It was 2^22, which
# kept 784-128-64-10 at batch 512, 512 x 128 x 64 = 2^22, off listing ahead: on 2 threads that ran
# at 0.94x of one thread, and listing ahead at 1.31x; Intel Xeon, alternating fits.)
BLAS_SERIAL_MAX_MACS = SPLIT_MIN_MACS


def _small_products(net, batch_size, aug, inputs):
    """Whether the first layer takes the lists and every BLAS product of a train step is small
    (see BLAS_SERIAL_MAX_MACS)."""
    spec = net.spec
    hidden = [int(spec[i, N_IN] * spec[i, N_OUT]) for i in range(1, len(spec)) if spec[i, KIND] == DENSE]
    lists_first = (spec[0, KIND] == DENSE and aug[0] == 0 and inputs is not None
                   and inputs.density <= SPARSE_MAX_DENSITY)
    return lists_first and batch_size * max(hidden, default=0) < BLAS_SERIAL_MAX_MACS


def train_steps(x, y, order, start, n_steps, batch_size, net, opt, lr_steps, seed, smoothing, aug,
                step_loss, step_correct, workspace=None, inputs=None, sample_weight=None):
    """The contract's ``train_steps`` (see ``fastnn.backends``) as one compiled loop.

    Arguments are not validated (the model does that); ``workspace`` (from
    ``make_workspace(net, batch_size)``) is optional: by default a cached one is used.
    ``inputs``: ``prepare_inputs(x)`` of this same x (faster; None: work from x alone).
    With plain SGD (momentum 0, weight decay 0) ``net.grads`` of the first dense layer's
    W is left as scratch. With two or more Numba threads and a small network (see
    ``LIST_AHEAD_MAX_TERMS``) a second thread lists each next batch's non-zeros meanwhile.
    ``sample_weight``: float32 (len(x),) weights of the rows' losses, or None (unweighted).
    """
    ws = workspace if workspace is not None else stepwise.get_workspace(net, batch_size)
    img_h, img_w = image_shape(aug, x.shape[1]) if aug[0] != 0 else (0, 0)
    codes = _NO_CODES if inputs is None else inputs.codes
    if codes.shape[0] and codes.shape != (x.shape[0], byte_row_length(x.shape[1])):
        raise ValueError(f"inputs of shape {codes.shape} were not prepared from this x {x.shape}: "
                         f"pass inputs=prepare_inputs(x)")
    d0 = int(net.spec[0, N_IN])
    lists = _lists(batch_size, d0)
    ahead, alone = _thread_plan(net, batch_size, n_steps, aug, inputs)
    lists2, sync = (_lists(batch_size, d0, 1), np.zeros(SYNC_SIZE, np.int64)) if ahead else (lists, _NO_SYNC)
    with contextlib.ExitStack() as stack:
        stack.enter_context(serial_blas())  # the same bits on any thread count (jit_gemm)
        if ahead:
            stack.enter_context(_listing_ahead(x, codes, d0, order, start, batch_size, n_steps, lists, lists2, sync))
        return _train_loop(Batches(x, y, codes, order, _NO_WEIGHTS if sample_weight is None else sample_weight),
                           Steps(start, n_steps, batch_size, seed, smoothing, lr_steps, step_loss, step_correct),
                           net, opt_state(opt), _buffers(ws), Listing(lists, lists2, sync),
                           Augment(aug, img_h, img_w) if aug[0] != 0 else None, _fuses(net, opt),
                           *switches(net.spec), split_switch(alone))


def _thread_plan(net, batch_size, n_steps, aug, inputs):
    """(whether ``train_steps`` lists ahead on a second thread (``jit_listing``), whether its
    compiled loop runs on one Numba thread: listing ahead, or a step too small to share)."""
    small = _small_products(net, batch_size, aug, inputs)
    ahead = _should_list_ahead(net, batch_size, n_steps, inputs, small)
    return ahead, ahead or _too_small_to_share(net, batch_size, inputs, small)


def lists_ahead(net, batch_size, n_steps, aug, inputs):
    """Whether ``train_steps`` with these arguments lists ahead on a second thread (``jit_listing``)."""
    return _thread_plan(net, batch_size, n_steps, aug, inputs)[0]


def loop_on_one_thread(net, batch_size, n_steps, aug, inputs):
    """Whether ``train_steps`` with these arguments runs its compiled loop on one Numba thread
    (``split_switch`` None: listing ahead, a step too small to share, or one thread set), as any
    one-thread run does."""
    return split_switch(_thread_plan(net, batch_size, n_steps, aug, inputs)[1]) is None


def _buffers(ws):
    return Buffers(ws.act, ws.grad, ws.aux, ws.vec, ws.offsets, ws.labels, ws.backup, ws.empty)


def _fuses(net, opt):
    """True (fuse the first layer's update into its backward pass) for plain SGD on a dense
    first layer, else None."""
    plain_sgd = opt.code == OPT_SGD and opt.hparams[0] == 0 and opt.hparams[2] == 0
    return True if plain_sgd and net.spec[0, KIND] == DENSE else None


def forward(x, net, out, batch_size, workspace=None):
    """The contract's ``forward``: inference-mode logits of all rows of x into out, compiled."""
    ws = workspace if workspace is not None else stepwise.get_workspace(net, batch_size)
    with serial_blas():
        _forward_loop(x, net, out, batch_size, _buffers(ws), *switches(net.spec),
                      split_switch(_macs_per_row(net) < INFER_SPLIT_MIN_MACS))
