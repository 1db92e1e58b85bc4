"""Optimizer kernels: in-place SGD (momentum, Nesterov), RMSprop and Adam updates over the flat
parameter buffer, and ``apply_update``, the compiled loop's dispatch on the optimizer's record type.

To add an optimizer: a code and hyperparameter layout in ``spec.py``, its ``*_update`` here
(serial ``_range`` body plus a ``prange`` twin for large buffers), a record and a
``_*_step`` here (registered in ``OPT_STATES`` and ``_STEPS``), and its NumPy twin in ``numpy_ref``.
It costs compile time only for runs that use it. Must not hold layer or loss logic.
"""

from collections import namedtuple

import numpy as np
from numba import njit, prange
from numba.extending import overload

from .jit_base import PARALLEL_MIN_ELEMENTS
from .numba_sparse import MAX_CHUNKS
from .spec import FLUSH_BELOW, OPT_ADAM, OPT_RMSPROP, OPT_SGD

# The update loops compute g = grad + weight_decay * p unconditionally (adding 0 * p
# changes nothing for finite p) and test momentum/nesterov outside the loops: a branch
# inside would keep LLVM from vectorising them.
#
# Optimizer state that decays (velocity, square averages, Adam's moments) is flushed to 0 once
# it falls below float32's smallest normal number (``spec.FLUSH_BELOW``): a weight that gets
# no gradient for a while (an input pixel that stays 0) would otherwise carry subnormal state
# for hundreds of steps, and on Intel CPUs every arithmetic on a subnormal takes a microcode
# assist of ~100 cycles (Adam's MNIST epochs ran 2.5x slower from the third on). The weights'
# bits do not change: such a state moves no weight larger than about 1e-26.


@njit(cache=True, error_model="numpy", inline="always")
def _flushed(s):
    # NaN passes through (the comparison is false), so divergence is still seen
    return np.float32(0) if abs(s) < FLUSH_BELOW else s


@njit(cache=True, error_model="numpy")
def _sgd_range(params, grads, velocity, lr, momentum, nesterov, weight_decay, i0, i1):
    # Loops run over slices from 0: an index that might be negative would need
    # wrap-around handling, which keeps LLVM from vectorising.
    p, gr = params[i0:i1], grads[i0:i1]
    if momentum == 0:
        for i in range(p.shape[0]):
            p[i] = p[i] - lr * (gr[i] + weight_decay * p[i])
        return
    vel = velocity[i0:i1]
    if nesterov:
        for i in range(p.shape[0]):
            g = gr[i] + weight_decay * p[i]
            v = _flushed(vel[i] * momentum + g)
            vel[i] = v
            p[i] = p[i] - lr * (g + momentum * v)
    else:
        for i in range(p.shape[0]):
            g = gr[i] + weight_decay * p[i]
            v = _flushed(vel[i] * momentum + g)
            vel[i] = v
            p[i] = p[i] - lr * v


@njit(cache=True, error_model="numpy", parallel=True)
def _sgd_par(params, grads, velocity, lr, momentum, nesterov, weight_decay, chunks):
    p = params.shape[0]
    for c in prange(chunks):
        _sgd_range(params, grads, velocity, lr, momentum, nesterov, weight_decay, c * p // chunks,
                   (c + 1) * p // chunks)


@njit(cache=True, error_model="numpy")
def _elem_chunks(p):
    if p < PARALLEL_MIN_ELEMENTS:
        return 1
    return MAX_CHUNKS


@njit(cache=True, error_model="numpy")
def sgd_update(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """PyTorch SGD step in place (params, velocity (P,)); see numpy_ref.sgd_update."""
    _sgd_update(params, grads, velocity, lr, momentum, nesterov, weight_decay, np.bool_(True))


@njit(cache=True, error_model="numpy")
def _sgd_update(params, grads, velocity, lr, momentum, nesterov, weight_decay, split):
    # split None: never split across threads (the parallel code is then not compiled)
    lr32, mom, wd = np.float32(lr), np.float32(momentum), np.float32(weight_decay)
    chunks = _elem_chunks(params.shape[0])
    if split is None or chunks == 1:
        _sgd_range(params, grads, velocity, lr32, mom, nesterov, wd, np.int64(0), params.shape[0])
    else:
        _sgd_par(params, grads, velocity, lr32, mom, nesterov, wd, chunks)


@njit(cache=True, error_model="numpy")
def _rmsprop_range(params, grads, square_avg, momentum_buf, lr, alpha, one_m_alpha, eps, weight_decay, momentum, i0,
                   i1):
    p, gr, sq = params[i0:i1], grads[i0:i1], square_avg[i0:i1]
    if momentum != 0:
        buf = momentum_buf[i0:i1]
        for i in range(p.shape[0]):
            g = gr[i] + weight_decay * p[i]
            s = _flushed(sq[i] * alpha + one_m_alpha * (g * g))
            sq[i] = s
            b = _flushed(buf[i] * momentum + g / (np.sqrt(s) + eps))
            buf[i] = b
            p[i] = p[i] - lr * b
    else:
        for i in range(p.shape[0]):
            g = gr[i] + weight_decay * p[i]
            s = _flushed(sq[i] * alpha + one_m_alpha * (g * g))
            sq[i] = s
            p[i] = p[i] - lr * (g / (np.sqrt(s) + eps))


@njit(cache=True, error_model="numpy", parallel=True)
def _rmsprop_par(params, grads, sq, buf, lr, alpha, one_m_alpha, eps, weight_decay, momentum, chunks):
    p = params.shape[0]
    for c in prange(chunks):
        _rmsprop_range(params, grads, sq, buf, lr, alpha, one_m_alpha, eps, weight_decay, momentum,
                       c * p // chunks, (c + 1) * p // chunks)


@njit(cache=True, error_model="numpy")
def rmsprop_update(params, grads, square_avg, momentum_buf, lr, alpha, eps, weight_decay, momentum):
    """PyTorch RMSprop step in place; see numpy_ref.rmsprop_update."""
    _rmsprop_update(params, grads, square_avg, momentum_buf, lr, alpha, eps, weight_decay, momentum, np.bool_(True))


@njit(cache=True, error_model="numpy")
def _rmsprop_update(params, grads, square_avg, momentum_buf, lr, alpha, eps, weight_decay, momentum, split):
    # split None: never split across threads (the parallel code is then not compiled)
    a = (np.float32(lr), np.float32(alpha), np.float32(1.0 - alpha), np.float32(eps), np.float32(weight_decay),
         np.float32(momentum))
    chunks = _elem_chunks(params.shape[0])
    if split is None or chunks == 1:
        _rmsprop_range(params, grads, square_avg, momentum_buf, a[0], a[1], a[2], a[3], a[4], a[5], np.int64(0),
                       params.shape[0])
    else:
        _rmsprop_par(params, grads, square_avg, momentum_buf, a[0], a[1], a[2], a[3], a[4], a[5], chunks)


@njit(cache=True, error_model="numpy")
def _adam_range(params, grads, m, v, step_size, b1, one_m_b1, b2, one_m_b2, bc2_sqrt, eps, weight_decay, i0, i1):
    p, gr, ms, vs = params[i0:i1], grads[i0:i1], m[i0:i1], v[i0:i1]
    for i in range(p.shape[0]):
        g = gr[i] + weight_decay * p[i]
        mi = _flushed(ms[i] * b1 + one_m_b1 * g)
        vi = _flushed(vs[i] * b2 + one_m_b2 * (g * g))
        ms[i] = mi
        vs[i] = vi
        p[i] = p[i] - step_size * (mi / (np.sqrt(vi) / bc2_sqrt + eps))


@njit(cache=True, error_model="numpy", parallel=True)
def _adam_par(params, grads, m, v, step_size, b1, one_m_b1, b2, one_m_b2, bc2_sqrt, eps, weight_decay, chunks):
    p = params.shape[0]
    for c in prange(chunks):
        _adam_range(params, grads, m, v, step_size, b1, one_m_b1, b2, one_m_b2, bc2_sqrt, eps, weight_decay,
                    c * p // chunks, (c + 1) * p // chunks)


@njit(cache=True, error_model="numpy")
def adam_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """PyTorch Adam step number ``step`` (1-based) in place; see numpy_ref.adam_update."""
    _adam_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step, np.bool_(True))


@njit(cache=True, error_model="numpy")
def _adam_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step, split):
    # split None: never split across threads (the parallel code is then not compiled)
    step_size = np.float32(lr / (1.0 - beta1**step))
    bc2_sqrt = np.float32(np.sqrt(1.0 - beta2**step))
    b1, omb1 = np.float32(beta1), np.float32(1.0 - beta1)
    b2, omb2 = np.float32(beta2), np.float32(1.0 - beta2)
    eps32, wd = np.float32(eps), np.float32(weight_decay)
    chunks = _elem_chunks(params.shape[0])
    if split is None or chunks == 1:
        _adam_range(params, grads, m, v, step_size, b1, omb1, b2, omb2, bc2_sqrt, eps32, wd, np.int64(0),
                    params.shape[0])
    else:
        _adam_par(params, grads, m, v, step_size, b1, omb1, b2, omb2, bc2_sqrt, eps32, wd, chunks)


# The compiled loop takes its optimizer as one of these records, and ``apply_update`` picks
# the kernel from the record's type while compiling: an Adam run never compiles RMSprop or SGD.
# hparams (4,) float64 as in spec.py, slots (2, P) float32, step (1,) int64 (updates so far).
SgdState = namedtuple("SgdState", "hparams slots step")
RmspropState = namedtuple("RmspropState", "hparams slots step")
AdamState = namedtuple("AdamState", "hparams slots step")
OPT_STATES = {OPT_SGD: SgdState, OPT_RMSPROP: RmspropState, OPT_ADAM: AdamState}


def opt_state(opt):
    """The record of ``opt`` (a spec.OptBuffers) that the compiled loop takes."""
    return OPT_STATES[int(opt.code)](opt.hparams, opt.slots, opt.step)


@njit(cache=True, error_model="numpy")
def _sgd_step(opt, params, grads, lr, t, split):
    hp = opt.hparams
    _sgd_update(params, grads, opt.slots[0], lr, hp[0], hp[1] != 0, hp[2], split)


@njit(cache=True, error_model="numpy")
def _rmsprop_step(opt, params, grads, lr, t, split):
    hp = opt.hparams
    _rmsprop_update(params, grads, opt.slots[0], opt.slots[1], lr, hp[0], hp[1], hp[2], hp[3], split)


@njit(cache=True, error_model="numpy")
def _adam_step(opt, params, grads, lr, t, split):
    hp = opt.hparams
    _adam_update(params, grads, opt.slots[0], opt.slots[1], lr, hp[0], hp[1], hp[2], hp[3], t, split)


_STEPS = {SgdState: _sgd_step, RmspropState: _rmsprop_step, AdamState: _adam_step}


def apply_update(opt, params, grads, lr, t, split):
    """One update (the t-th, 1-based) of the optimizer whose record ``opt`` is, in place;
    ``split`` as in ``_sgd_update``."""
    _STEPS[type(opt)](opt, params, grads, lr, t, split)


@overload(apply_update, jit_options={"error_model": "numpy"})
def _apply_update_compiled(opt, params, grads, lr, t, split):
    step = _STEPS[opt.instance_class]  # chosen by the record's type: the others are never compiled
    return lambda opt, params, grads, lr, t, split: step(opt, params, grads, lr, t, split)
