"""Listing ahead and the first layer's non-zero list buffers.

While the compiled loop runs step s, a second thread lists the non-zeros of batch s + 1
(``_list_ahead``) into the other of two list buffers; ``_take_lists`` is the loop's side.
Also the cached list buffers (``_lists``) and ``matmul_lists``/``matmul_xt_lists``, the
loop's first-layer kernels run alone (for tests and timings). Must not hold layer math.
"""

import contextlib
import threading

import numba
import numpy as np
from numba import config, njit

from . import stepwise
from .atomics import BACKOFF_SPINS, atomic_claim, atomic_load, atomic_store, backoff
from .numba_sparse import PARALLEL_MIN_TERMS, bucket_dw, csr_alloc, csr_build, csr_build_bytes, csr_forward
from .spec import N_IN, N_OUT

@njit(cache=True, error_model="numpy")
def _lists_products(a, b, out, xt, lists):
    gp, gi, gv, blen, brow, bval = lists
    n = a.shape[0]
    nnz = csr_build(a, gp, n, np.bool_(False), gp, gi, gv, blen, brow, bval)
    if xt:
        bucket_dw(blen, brow, bval, b, out, out, np.float32(0), None, nnz, gp, gi, gv)
    else:
        csr_forward(gp, gi, gv, b, out, n)


def matmul_lists(a, b, out):
    """out = a @ b over the non-zero lists of a: the compiled loop's first-layer kernels
    (``numba_sparse``), lists built on every call into cached buffers. For timing them."""
    _lists_products(a, b, out, False, _lists(*a.shape))


def matmul_xt_lists(x, dz, dW):
    """dW = x.T @ dz over the non-zero lists of x (the first-layer weight gradient), as ``matmul_lists``."""
    _lists_products(x, dz, dW, True, _lists(*x.shape))


_LISTS = {}


def _lists(batch_size, d, copy=0):
    """Non-zero list buffers (``numba_sparse.csr_alloc``) for batches of up to batch_size rows of d features.

    Cached per shape and ``copy`` (listing ahead uses copies 0 and 1; a few kept). Like the
    cached workspaces, not safe for two train_steps calls at once.
    """
    return stepwise.cached(_LISTS, (int(batch_size), int(d), copy), lambda: csr_alloc(batch_size, d), limit=4)


# Listing ahead: while the compiled loop runs step s, a second thread lists the non-zeros of
# batch s + 1 (``_list_ahead``), into the other of two list buffers. The int64 array the two
# threads share holds, one 64-byte line apart: the next step nobody has claimed, the number
# of steps the loop has finished, a stop flag, per buffer the step whose lists it holds (plus
# one, once written) followed by their count, whether the helper has started, and the loop's
# count of steps the helper missed (the loop listed them itself, or waited past spinning).
_CLAIMED, _FINISHED, _STOP, _READY, _STARTED, _MISSED = 0, 8, 16, 24, 40, 48
SYNC_SIZE = 56
# The helper steps aside (the loop sets the stop flag) once it has missed more than a quarter
# of the steps since it started, plus this many: on a machine whose cores are taken by other
# work it is not keeping up, and the loop is better off listing alone than waiting for it.
STEP_ASIDE_SLACK = 8


@njit(cache=True, error_model="numpy")
def _list_batch(x, codes, d0, rows, n, lists):
    # the lists of the batch x[rows[:n]] (from its byte codes when there are any); their count
    gp, gi, gv, blen, brow, bval = lists
    if codes.shape[0] > 0:
        return csr_build_bytes(codes, d0, rows, n, gp, gi, gv, blen, brow, bval)
    return csr_build(x, rows, n, np.bool_(True), gp, gi, gv, blen, brow, bval)


@njit(cache=True, error_model="numpy")
def _lists_of_step(s, lists, lists2):
    return lists2 if s % 2 else lists


@njit(cache=True, error_model="numpy")
def _ready_flag(s):
    # where step s's buffer records the step it holds (the count follows)
    return _READY + 8 * (s % 2)


@njit(cache=True, error_model="numpy")
def _take_lists(x, codes, d0, rows, n, s, lists, lists2, sync):
    # The loop's side of listing ahead: step s's list count, its lists listed here unless
    # the other thread claimed them first (then wait for it to finish them, backing off).
    if atomic_claim(sync, _CLAIMED, s):
        _count_miss(sync, s)
        return _list_batch(x, codes, d0, rows, n, _lists_of_step(s, lists, lists2))
    ready = _ready_flag(s)
    i = 0
    while atomic_load(sync, ready) != s + 1:
        i = backoff(i)
    if i > BACKOFF_SPINS:
        _count_miss(sync, s)
    return sync[ready + 1]


@njit(cache=True, error_model="numpy")
def _count_miss(sync, s):
    # a step the helper did not have ready; too many since it started: it steps aside
    started = atomic_load(sync, _STARTED)
    if started == 0:
        return
    sync[_MISSED] += 1  # only the loop touches it
    if 4 * sync[_MISSED] > s - (started - 1) + 4 * STEP_ASIDE_SLACK:
        atomic_store(sync, _STOP, 1)


@njit(cache=True, error_model="numpy", nogil=True)
def _list_ahead(x, codes, d0, order, start, batch_size, n_steps, lists, lists2, sync):
    """The second thread of listing ahead: lists the steps' batches in order, each once the
    loop has finished with its buffer (step s - 2), until every step is listed or the stop
    flag is set. Waits spin, then yield, then sleep (``atomics.backoff``), so that on a busy
    machine the waiting thread hands its core over; the loop sets the stop flag when this
    thread keeps missing steps (``STEP_ASIDE_SLACK``).

    Deadlock-free whatever the scheduling: a step is listed by whichever thread claims it
    first, and the loop waits only on a step this thread has claimed, which it is listing.
    """
    n_total = order.shape[0]
    atomic_store(sync, _STARTED, atomic_load(sync, _CLAIMED) + 1)  # misses count from here
    i = 0
    while atomic_load(sync, _STOP) == 0:
        s = atomic_load(sync, _CLAIMED)
        pos = start + s * batch_size
        if s >= n_steps or pos >= n_total:
            return
        if atomic_load(sync, _FINISHED) < s - 1 or not atomic_claim(sync, _CLAIMED, s):
            i = backoff(i)
            continue
        i = 0
        n = min(batch_size, n_total - pos)
        ready = _ready_flag(s)
        sync[ready + 1] = _list_batch(x, codes, d0, order[pos:pos + n], n, _lists_of_step(s, lists, lists2))
        atomic_store(sync, ready, s + 1)


# With two or more Numba threads, a train_steps call whose first layer takes the lists and
# whose BLAS products are small (BLAS_SERIAL_MAX_MACS) runs its kernels on one thread and
# lists the next batch on a second, when the first layer is narrow (below) or has fewer
# multiply-adds per batch than this: below it, splitting the list kernels across threads
# (PARALLEL_MIN_TERMS) saves less than listing ahead. 784-128-64-10 at batch 128, 2 threads: KMNIST 245k -> 322k samples/s
# (a parallel region costs ~44 us against a 460 us step). Near the limit, split / ahead:
# 784-512-10 MNIST batch 128 (9.8M) 98.6k / 137.6k; 784-1024-10 KMNIST batch 32 (8.7M) 54.8k / 42.8k.
LIST_AHEAD_MAX_TERMS = 2 * PARALLEL_MIN_TERMS
# First layers at most this wide list ahead at any size: listing is then a large share of the
# step, and halving the forward and weight-gradient kernels across threads saved less (2 threads,
# alternating fits, Intel Xeon, samples/s split / ahead: 784-128-64-10 MNIST batch 512 191k / 269k,
# KMNIST batch 512 187k / 241k; 784-256-10 KMNIST batch 128 106k / 123k, MNIST batch 512 150k /
# 181k; wider layers split: 784-512-10 KMNIST batch 128 70.8k / 60.4k, 784-1024-10 MNIST batch
# 128 55.8k / 41.5k, KMNIST batch 32 24.1k / 19.0k).
LIST_AHEAD_NARROW = 256
# ... and when a batch has at least this many non-zeros: below it, listing costs less than
# handing each batch's lists between the cores. 784-128-64-10 MNIST at batch 1 (~150 non-zeros),
# 2 threads against 1: 0.94x listing ahead (AMD EPYC and Intel Xeon alike); batch 8 (~1.2k): 1.34x.
LIST_AHEAD_MIN_NONZEROS = 512
_NO_SYNC = np.zeros(0, np.int64)


def _should_list_ahead(net, batch_size, n_steps, inputs, small):
    """Whether train_steps lists the next batch on a second thread (see LIST_AHEAD_MAX_TERMS);
    ``small``: ``jit_loop._small_products``."""
    if config.DISABLE_JIT or not small or n_steps < 2 or numba.get_num_threads() < 2:
        return False
    nonzeros, width = _batch_nonzeros(net, batch_size, inputs), net.spec[0, N_OUT]
    return LIST_AHEAD_MIN_NONZEROS <= nonzeros and (width <= LIST_AHEAD_NARROW or nonzeros * width < LIST_AHEAD_MAX_TERMS)


def _too_small_to_share(net, batch_size, inputs, small):
    """Whether a train step is too small for a second thread to help at all: too few non-zeros
    to list ahead, small products and list kernels under PARALLEL_MIN_TERMS, so that its kernels
    would all run serially anyway; train_steps then runs its loop on one Numba thread."""
    if not small:
        return False
    nonzeros = _batch_nonzeros(net, batch_size, inputs)
    return nonzeros < LIST_AHEAD_MIN_NONZEROS and nonzeros * net.spec[0, N_OUT] < PARALLEL_MIN_TERMS


def _batch_nonzeros(net, batch_size, inputs):
    """Expected non-zeros of a batch (``small`` implies prepared inputs)."""
    return batch_size * net.spec[0, N_IN] * inputs.density


def compile_list_ahead(x, inputs):
    """Compile (or load from the cache) the listing-ahead thread's code for a data set like x
    (float32 (N, d)) with ``inputs`` = ``prepare_inputs(x)`` (or None); lists nothing (the stop
    flag is set)."""
    codes = np.zeros((0, 8), np.uint8) if inputs is None else inputs.codes  # as train_steps passes them
    stopped = np.zeros(SYNC_SIZE, np.int64)
    stopped[_STOP] = 1
    lists = _lists(1, x.shape[1])
    _list_ahead(x, codes, int(x.shape[1]), np.arange(1, dtype=np.int64), 0, 1, 1, lists, lists, stopped)


@contextlib.contextmanager
def _listing_ahead(*args):
    """Runs ``_list_ahead(*args)`` on a second thread, and the caller's compiled code on one Numba
    thread (its core is the other's), until the block ends: then sets the stop flag in
    ``sync`` (the last argument) and joins it."""
    sync = args[-1]
    helper = threading.Thread(target=_list_ahead, args=args, name="fastnn-list-ahead", daemon=True)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    helper.start()
    try:
        yield
    finally:
        sync[_STOP] = 1
        helper.join()
        numba.set_num_threads(threads)
