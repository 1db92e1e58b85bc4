"""The compiled twins of ``stepwise.layer_forward``/``layer_backward``: one layer of the ``spec``
table, dispatched on its kind to the kernel families.

Compile-time switches: ``dropout`` and ``batchnorm`` are None when the network has no layer
of that kind, and then those branches are pruned before typing (Numba prunes ``if arg is None``
on an argument's type), so a dense network never compiles their kernels. Any other value
(True) keeps them. Each combination is its own specialisation in the cache. ``split`` is the
same kind of switch for the kernels' parallel (``prange``) code: None when the caller runs on
one thread (``jit_loop.split_switch``). ``training`` too: None in the inference loop (dropout
off, batch norm's running statistics, and dense layers on BLAS alone, so inference compiles no
listing code), True in the training loop.

Both functions, like the dense kernels and ``jit_gemm``'s wrappers under them, are inlined
(``inline="always"``) into their one or two callers. Numba compiles every other called function
into a library of its own, and each caller optimises and emits machine code again for all it
links in, so each level of calls costs the whole tree below it once more: inlining these levels
cut a cold predict's compile by about a third and the training loop's by about a tenth.

To add a layer kind: a kind code and its columns in ``spec.py``, a branch in both functions
here (behind a switch like ``dropout`` if the default network should not compile it; pass it
from ``jit_loop.switches``), and the same in ``stepwise``. Must not hold kernels or the batch loop.
"""

from numba import njit

from .jit_activations import activation_backward, activation_forward
from .jit_base import _view, copy_2d
from .jit_batchnorm import batchnorm_backward, batchnorm_forward_eval, batchnorm_forward_train
from .jit_dense import _dense_backward, _dense_forward
from .jit_dropout import dropout_backward, dropout_forward
from .spec import ACT, ACT_NONE, ACTIVATION, BATCHNORM, DENSE, DROPOUT, KIND, N_IN, N_OUT, P_OFF, P_OFF2, S_OFF, S_OFF2

@njit(cache=True, error_model="numpy", inline="always")
def _layer_forward(net, i, x, out, aux, vec, training, seed, step, dropout, batchnorm, split):
    # Compiled twin of stepwise.layer_forward. net: spec.NetBuffers.
    spec, params = net.spec, net.params
    kind = spec[i, KIND]
    n_in, n_out, p, p2 = spec[i, N_IN], spec[i, N_OUT], spec[i, P_OFF], spec[i, P_OFF2]
    if kind == DENSE:
        _dense_forward(x, _view(params, p, n_in, n_out), params[p2:p2 + n_out], spec[i, ACT],
                       out, training, split)
    elif kind == ACTIVATION:
        activation_forward(spec[i, ACT], x, out)
    if dropout is not None:
        if kind == DROPOUT:
            rate = net.fconf[i, 0]
            if training is not None and rate > 0:
                dropout_forward(x, rate, seed, step * 64 + i, out, aux)
            else:
                copy_2d(x, out)
    if batchnorm is not None:
        if kind == BATCHNORM:
            fconf, state, s, s2 = net.fconf, net.state, spec[i, S_OFF], spec[i, S_OFF2]
            if training is not None:
                batchnorm_forward_train(x, params[p:p + n_in], params[p2:p2 + n_in], state[s:s + n_in],
                                        state[s2:s2 + n_in], fconf[i, 0], fconf[i, 1], out, aux, vec)
            else:
                batchnorm_forward_eval(x, params[p:p + n_in], params[p2:p2 + n_in], state[s:s + n_in],
                                       state[s2:s2 + n_in], fconf[i, 1], out)


@njit(cache=True, error_model="numpy", inline="always")
def _layer_backward(net, i, x, y, dy, dx, aux, vec, dropout, batchnorm, split):
    # Compiled twin of stepwise.layer_backward. net: spec.NetBuffers.
    spec, params, grads = net.spec, net.params, net.grads
    kind = spec[i, KIND]
    n_in, n_out, p, p2 = spec[i, N_IN], spec[i, N_OUT], spec[i, P_OFF], spec[i, P_OFF2]
    if kind == DENSE:
        if spec[i, ACT] != ACT_NONE:
            activation_backward(spec[i, ACT], y, dy, dy)
        _dense_backward(x, _view(params, p, n_in, n_out), dy, dx, _view(grads, p, n_in, n_out), grads[p2:p2 + n_out],
                        split)
        return
    if batchnorm is not None:
        if kind == BATCHNORM:  # its parameter gradients are needed even without dx
            batchnorm_backward(dy, aux, vec, params[p:p + n_in], dx, grads[p:p + n_in], grads[p2:p2 + n_in])
            return
    if dx.shape[0] == 0:
        return
    if kind == ACTIVATION:
        activation_backward(spec[i, ACT], y, dy, dx)
    if dropout is not None:
        if kind == DROPOUT:
            if net.fconf[i, 0] > 0:
                dropout_backward(dy, aux, dx)
            else:
                copy_2d(dy, dx)
