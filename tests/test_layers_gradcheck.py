"""Finite-difference gradient checks of every layer kind and of the loss, in float64.

Each layer is run through the same per-layer driver the training loop uses
(``stepwise.layer_forward`` / ``layer_backward``) with the NumPy kernels on a
float64 copy of its buffers. The scalar objective is ``sum(R * layer(x))`` for a
fixed random ``R``, whose gradient with respect to the output is ``R``.
"""

import numpy as np
import pytest

from fastnn.backends import numpy_ref as K
from fastnn.backends import spec as S
from fastnn.backends import stepwise
from gradcheck import numeric

N, D_IN, D_OUT = 5, 4, 3


def net64(row, seed=0):
    """A one-layer NetBuffers in float64 with random parameters."""
    net = S.allocate([row], np.float64)
    rng = np.random.default_rng(seed)
    net.params[:] = rng.normal(size=len(net.params))
    if row[0] == "batchnorm":
        net.params[: row[1]] = 1.0 + 0.3 * rng.normal(size=row[1])  # gamma around one
    return net


def forward(net, x, seed=7, step=3):
    out = np.zeros((len(x), net.spec[0, S.N_OUT]))
    stepwise.layer_forward(K, net, 0, x, out, stepwise.make_cache(net, 0, len(x)), True, seed, step)
    return out


def analytic(net, x, r):
    """(dL/dx, dL/dparams) of L = sum(r * layer(x)) from the backward pass."""
    cache = stepwise.make_cache(net, 0, len(x))
    out = np.zeros_like(r)
    stepwise.layer_forward(K, net, 0, x, out, cache, True, 7, 3)
    dx = np.zeros_like(x)
    net.grads[...] = np.nan  # backward must overwrite every gradient entry
    stepwise.layer_backward(K, net, 0, x, out, r.copy(), dx, cache)
    return dx, net.grads.copy()


def check_layer(row, x, seed=0):
    net = net64(row, seed)
    rng = np.random.default_rng(seed + 1)
    r = rng.normal(size=(len(x), net.spec[0, S.N_OUT]))
    dx, dparams = analytic(net, x, r)

    def objective():
        return float(np.sum(r * forward(net, x)))

    np.testing.assert_allclose(dx, numeric(objective, x), rtol=1e-5, atol=1e-7, err_msg="dx")
    if len(net.params):
        np.testing.assert_allclose(dparams, numeric(objective, net.params), rtol=1e-5, atol=1e-7, err_msg="dparams")
    return dx, dparams


def inputs(shape=(N, D_IN), seed=3):
    x = np.random.default_rng(seed).normal(size=shape)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the ReLU kink
    return x


@pytest.mark.parametrize("act", ["linear", "relu", "sigmoid", "tanh"])
def test_dense_with_every_activation(act):
    x = inputs()
    # a ReLU must see pre-activations away from zero too: check them, then run the check
    net = net64(("dense", D_IN, D_OUT, S.ACTIVATIONS[act]))
    W, b = S.dense_views(net, 0)
    assert np.abs(x @ W + b).min() > 1e-4
    check_layer(("dense", D_IN, D_OUT, S.ACTIVATIONS[act]), x)


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_activation_layers(act):
    check_layer(("activation", D_IN, S.ACTIVATIONS[act]), inputs())


def test_dropout_gradient_and_mask():
    x = inputs((8, 6))
    dx, _ = check_layer(("dropout", 6, 0.4), x)
    out = forward(net64(("dropout", 6, 0.4)), x)
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / 0.6)  # inverted dropout scaling
    assert 0.2 < kept.mean() < 0.95
    assert (dx[~kept] == 0).all()


def test_batchnorm_training_mode():
    x = inputs((6, 4)) * 2 + 1
    check_layer(("batchnorm", 4, 0.1, 1e-5), x)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy(smoothing):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 5)) * 2
    y = rng.integers(0, 5, 6)
    dlogits = np.zeros_like(logits)
    loss, correct = K.softmax_nll(logits, y, smoothing, dlogits)
    # independent reference of the loss value
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    target = np.full_like(logits, smoothing / 5)
    target[np.arange(6), y] += 1 - smoothing
    assert loss == pytest.approx(-(target * logp).sum(1).mean(), rel=1e-12)
    assert correct == int((logits.argmax(1) == y).sum())

    def objective():
        return K.softmax_nll(logits, y, smoothing, np.zeros_like(logits))[0]

    np.testing.assert_allclose(dlogits, numeric(objective, logits), rtol=1e-5, atol=1e-8)
