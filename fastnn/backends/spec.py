"""The network description shared by the model and both backends.

A network is a table of layers (``spec``, int64 of shape (L, 8)) plus flat
float32 buffers. Every learnable number lives in one ``params`` buffer, with
gradients in a ``grads`` buffer of the same length; each layer's W and b are
views into it. Non-learned state (batch-norm running statistics) lives in a
``state`` buffer. Keeping everything in a few flat arrays lets a compiled
training loop take plain arrays and lets an optimizer update every parameter
in one fused pass.

Columns of ``spec`` (one row per layer, in forward order):

====  =========  ==============================================================
col   name       meaning
====  =========  ==============================================================
0     KIND       DENSE, ACTIVATION, DROPOUT or BATCHNORM
1     N_IN       width of the layer's input
2     N_OUT      width of the layer's output (== N_IN except for DENSE)
3     P_OFF      DENSE: offset of W (n_in, n_out, row-major); BATCHNORM: gamma
4     P_OFF2     DENSE: offset of b (n_out,); BATCHNORM: beta
5     S_OFF      BATCHNORM: offset of running_mean in ``state``; else -1
6     S_OFF2     BATCHNORM: offset of running_var in ``state``; else -1
7     ACT        DENSE: activation fused after x @ W + b; ACTIVATION: its code
====  =========  ==============================================================

``fconf`` (float64 of shape (L, 2)) holds per-layer float settings:
DROPOUT: [rate, 0]; BATCHNORM: [momentum, eps] (PyTorch semantics:
running = (1 - momentum) * running + momentum * batch_stat, running_var uses
the unbiased batch variance); other kinds: [0, 0].
"""

from collections import namedtuple

import numpy as np

# Layer kinds (column KIND).
DENSE, ACTIVATION, DROPOUT, BATCHNORM = 0, 1, 2, 3
# Activation codes (column ACT).
ACT_NONE, ACT_RELU, ACT_SIGMOID, ACT_TANH = 0, 1, 2, 3
ACTIVATIONS = {"linear": ACT_NONE, "relu": ACT_RELU, "sigmoid": ACT_SIGMOID, "tanh": ACT_TANH}
# Spec columns.
KIND, N_IN, N_OUT, P_OFF, P_OFF2, S_OFF, S_OFF2, ACT = range(8)
# Optimizer codes, and the meaning of their float64 hyperparameter vector.
OPT_SGD, OPT_RMSPROP, OPT_ADAM = 0, 1, 2
#   SGD:     [momentum, nesterov (0/1), weight_decay, 0]
#   RMSprop: [alpha, eps, weight_decay, momentum]
#   Adam:    [beta1, beta2, eps, weight_decay]
# Optimizer state (velocity, square averages, moments) smaller in magnitude than the smallest
# normal float32 is stored as 0 (numpy_ref: the model dtype's smallest normal): see jit_optimizers.
FLUSH_BELOW = np.float32(np.finfo(np.float32).tiny)

NetBuffers = namedtuple("NetBuffers", "spec fconf params grads state")
"""Everything that describes one network: spec (L, 8) int64, fconf (L, 2) float64,
params (P,) float32, grads (P,) float32, state (S,) float32 (all three float64 in a
float64 model, which only the NumPy backend trains)."""

OptBuffers = namedtuple("OptBuffers", "code hparams slots step")
"""One optimizer: code (int), hparams (4,) float64, slots (2, P) float32 (float64 in a float64 model)
(SGD: velocity, -; RMSprop: square average, momentum buffer; Adam: m, v),
step (1,) int64 = number of updates applied so far (Adam's bias correction)."""


def build_spec(layers):
    """Lay out a network from plain layer descriptions.

    Parameters
    ----------
    layers : list of tuple
        In forward order, each one of ``("dense", n_in, n_out, act_code)``,
        ``("activation", n, act_code)``, ``("dropout", n, rate)``,
        ``("batchnorm", n, momentum, eps)``.

    Returns
    -------
    spec : ndarray of int64, shape (L, 8)
    fconf : ndarray of float64, shape (L, 2)
    n_params : int
        Length of the ``params`` and ``grads`` buffers.
    n_state : int
        Length of the ``state`` buffer.
    """
    spec = np.full((len(layers), 8), -1, dtype=np.int64)
    fconf = np.zeros((len(layers), 2), dtype=np.float64)
    p = s = 0
    for i, layer in enumerate(layers):
        kind = layer[0]
        if kind == "dense":
            _, n_in, n_out, act = layer
            spec[i] = (DENSE, n_in, n_out, p, p + n_in * n_out, -1, -1, act)
            p += n_in * n_out + n_out
        elif kind == "activation":
            _, n, act = layer
            spec[i] = (ACTIVATION, n, n, -1, -1, -1, -1, act)
        elif kind == "dropout":
            _, n, rate = layer
            spec[i] = (DROPOUT, n, n, -1, -1, -1, -1, ACT_NONE)
            fconf[i, 0] = rate
        elif kind == "batchnorm":
            _, n, momentum, eps = layer
            spec[i] = (BATCHNORM, n, n, p, p + n, s, s + n, ACT_NONE)
            fconf[i] = (momentum, eps)
            p += 2 * n
            s += 2 * n
        else:
            raise ValueError(f"unknown layer kind {kind!r}; expected dense, activation, dropout or batchnorm")
        if i and spec[i, N_IN] != spec[i - 1, N_OUT]:
            raise ValueError(f"layer {i} expects {spec[i, N_IN]} inputs but layer {i - 1} gives {spec[i - 1, N_OUT]}")
    return spec, fconf, p, s


#: Bytes that the start of every parameter, gradient and workspace buffer is aligned to:
#: one cache line, so that a row of 16k float32 weights is whole cache lines. The
#: first-layer list kernels load 512-byte rows of W and of the gradient; from buffers
#: that NumPy (malloc) had placed 16 bytes off a line, each load touched an extra line
#: and KMNIST's forward and weight gradient at batch 128 took 183 + 171 us instead of
#: 156 + 114.
ALIGN_BYTES = 64


def aligned_zeros(shape, dtype):
    """np.zeros(shape, dtype) whose data starts on an ``ALIGN_BYTES`` boundary."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    raw = np.zeros(n * dtype.itemsize + ALIGN_BYTES, np.uint8)
    start = -raw.ctypes.data % ALIGN_BYTES
    return raw[start:start + n * dtype.itemsize].view(dtype).reshape(shape)


def allocate(layers, dtype=np.float32):
    """Build the spec and zeroed buffers for ``layers``; returns a NetBuffers.

    ``dtype`` (float32, or float64 for the NumPy backend) is that of params, grads and
    state. Batch-norm gammas and running variances start at one, everything else at zero
    (the model initialises dense weights itself).
    """
    spec, fconf, n_params, n_state = build_spec(layers)
    params = aligned_zeros(n_params, dtype)
    state = np.zeros(n_state, dtype=dtype)
    for row in spec[spec[:, KIND] == BATCHNORM]:
        params[row[P_OFF] : row[P_OFF] + row[N_IN]] = 1.0
        state[row[S_OFF2] : row[S_OFF2] + row[N_IN]] = 1.0
    return NetBuffers(spec, fconf, params, aligned_zeros(n_params, dtype), state)


def dense_views(net, i):
    """(W, b) of dense layer ``i`` as views into ``net.params``: shapes (n_in, n_out), (n_out,)."""
    kind, n_in, n_out, p, p2 = net.spec[i, :5]
    assert kind == DENSE, f"layer {i} is not dense"
    return net.params[p : p + n_in * n_out].reshape(n_in, n_out), net.params[p2 : p2 + n_out]
