"""The NumPy backend: plain vectorised NumPy, the correctness oracle and the speed baseline.

Every kernel follows the contract in ``fastnn.backends`` (shapes, dtypes, outputs
written in place). The kernels are dtype-generic: given float64 arrays they compute
in float64, which float64 models (``dtype='float64'``) and the finite-difference tests use. Work arrays of the batch's full
size are never allocated here: each kernel writes its big results through ``out=``
into the caller's buffers; only per-row or per-column vectors (length n or d) are
temporaries, as any competent NumPy code has them.

``train_steps`` and ``forward`` are the generic driver of ``stepwise.py`` bound to
these kernels: one NumPy matmul per dense layer per batch, no per-sample Python.
"""

import math
import sys

import numpy as np

from . import rng, stepwise
from .augment import augment_rows_numpy as augment_rows  # noqa: F401  (kernel contract name)
from .spec import ACT_NONE, ACT_RELU, ACT_SIGMOID, ACT_TANH

NAME = "numpy"


# ----------------------------------------------------------------------------- matmul


def matmul(a, b, out):
    """out = a @ b. a (n, k), b (k, m), out (n, m); overwrites ``out``."""
    np.matmul(a, b, out=out)


# ------------------------------------------------------------------------- activations


def activation_forward(act, x, out):
    """out = act(x) elementwise; x and out (n, d) may be the same array."""
    if act == ACT_RELU:
        np.maximum(x, 0, out=out)
    elif act == ACT_SIGMOID:
        # 0.5 * tanh(x / 2) + 0.5 is the logistic function without exp overflow.
        np.multiply(x, 0.5, out=out)
        np.tanh(out, out=out)
        out *= 0.5
        out += 0.5
    elif act == ACT_TANH:
        np.tanh(x, out=out)
    elif act == ACT_NONE:
        if out is not x:
            np.copyto(out, x)
    else:
        raise ValueError(f"unknown activation code {act}")


def activation_backward(act, y, dy, dx):
    """dx = dy * act'(.), with the derivative written through the output y = act(x).

    y, dy, dx (n, d); dx may be the same array as dy (in-place).
    """
    if act == ACT_RELU:
        np.multiply(dy, y > 0, out=dx)
    elif act == ACT_SIGMOID:
        # dy * y * (1 - y)
        np.multiply(dy, y, out=dx)
        dx *= 1 - y
    elif act == ACT_TANH:
        # dy * (1 - y^2)
        np.multiply(dy, 1 - y * y, out=dx)
    elif act == ACT_NONE:
        if dx is not dy:
            np.copyto(dx, dy)
    else:
        raise ValueError(f"unknown activation code {act}")


# ------------------------------------------------------------------------------ dense


def dense_forward(x, W, b, act, out, lists=True):
    """out = act(x @ W + b). x (n, d_in), W (d_in, d_out), b (d_out,), out (n, d_out).
    ``lists``: the compiled backend's choice of non-zero lists for sparse x (here always BLAS)."""
    np.matmul(x, W, out=out)
    out += b
    if act != ACT_NONE:
        activation_forward(act, out, out)


def dense_backward(x, W, dz, dx, dW, db):
    """Gradients of z = x @ W + b given dz = dL/dz (n, d_out).

    Overwrites dW (d_in, d_out) = x.T @ dz, db (d_out,) = dz.sum(0) and, unless dx is
    an empty array, dx (n, d_in) = dz @ W.T.
    """
    np.matmul(x.T, dz, out=dW)
    np.sum(dz, axis=0, out=db)
    if dx.size:
        np.matmul(dz, W.T, out=dx)


# ------------------------------------------------------------------------------- loss


def log_softmax(logits, out):
    """out = log_softmax(logits) along axis 1, stable (max subtracted). (n, k) each."""
    np.subtract(logits, logits.max(axis=1, keepdims=True), out=out)
    out -= np.log(np.exp(out).sum(axis=1, keepdims=True))


def softmax_nll(logits, y, smoothing, dlogits):
    """Fused stable log-softmax + mean negative log-likelihood + its gradient.

    Parameters
    ----------
    logits : (n, k) float array
    y : (n,) int64 class labels in [0, k)
    smoothing : float
        Label smoothing; the target is (1 - smoothing) * onehot(y) + smoothing / k.
    dlogits : (n, k) float array, overwritten with d(mean loss)/d logits
        = (softmax(logits) - target) / n.

    Returns
    -------
    loss : float
        Mean over rows of -sum_j target_j * log_softmax(logits)_j (float64).
    n_correct : int
        Rows whose arg-max logit (first on ties) equals y.
    """
    return _softmax_nll(logits, y, None, smoothing, dlogits)


def softmax_nll_weighted(logits, y, weights, smoothing, dlogits):
    """``softmax_nll`` with per-row weights (Keras' default "sum over batch size" reduction).

    weights : (n,) float array >= 0. The loss is sum_r weights[r] * loss_r / n (float64)
    (divided by the row count, not by the sum of the weights), and dlogits its gradient
    (softmax - target) * weights[r] / n. n_correct is unweighted.
    """
    return _softmax_nll(logits, y, weights, smoothing, dlogits)


def _softmax_nll(logits, y, weights, smoothing, dlogits):
    n, k = logits.shape
    rows = np.arange(n)
    n_correct = int(np.count_nonzero(np.argmax(logits, axis=1) == y))
    z = dlogits
    np.subtract(logits, logits.max(axis=1, keepdims=True), out=z)  # z <= 0: exp cannot overflow
    picked = z[rows, y].astype(np.float64)
    zsum = z.sum(axis=1, dtype=np.float64)
    np.exp(z, out=z)
    s = z.sum(axis=1, keepdims=True)
    lse = np.log(s[:, 0].astype(np.float64))
    # -sum_j t_j (z_j - lse) with sum_j t_j = 1
    row_loss = lse - (1.0 - smoothing) * picked - (smoothing / k) * zsum
    z /= s
    z[rows, y] -= 1.0 - smoothing
    if smoothing:
        z -= smoothing / k
    if weights is None:
        loss = row_loss.mean()
    else:
        loss = (row_loss * weights).sum() / n
        z *= weights[:, None]
    z /= n
    return float(loss), n_correct


# ---------------------------------------------------------------------------- dropout

_INDEX_CACHE = {}


def _indices(size):
    """uint64 [0, size): cached, so the mask draw does not build it every batch."""
    idx = _INDEX_CACHE.get(size)
    if idx is None:
        if len(_INDEX_CACHE) > 16:
            _INDEX_CACHE.clear()
        idx = _INDEX_CACHE[size] = np.arange(size, dtype=np.uint64)
    return idx


def dropout_forward(x, rate, seed, stream, out, mask):
    """Inverted dropout. x, out, mask (n, d); overwrites out and mask.

    Element (r, j) is kept when ``rng.uniform(rng.key(seed, stream), r * d + j) >=
    float32(rate)``; mask = keep / (1 - rate) (0 where rate >= 1); out = x * mask.
    """
    n, d = x.shape
    u = rng.uniform(rng.key(seed, stream), _indices(n * d)).reshape(n, d)
    scale = np.float32(1.0 / (1.0 - rate)) if rate < 1.0 else np.float32(0.0)
    np.multiply(u >= np.float32(rate), scale, out=mask)
    np.multiply(x, mask, out=out)


def dropout_backward(dy, mask, dx):
    """dx = dy * mask; all (n, d)."""
    np.multiply(dy, mask, out=dx)


# ------------------------------------------------------------------------- batch norm


def batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps, out, xhat, inv_std):
    """Training-mode batch normalisation (PyTorch semantics).

    x, out, xhat (n, d); gamma, beta, running_mean, running_var, inv_std (d,).
    Normalises with the biased batch variance; updates running_mean and running_var
    in place (running_var with the unbiased variance var * n / (n - 1), or the biased
    one when n == 1). Overwrites out = gamma * xhat + beta, xhat = (x - mean) * inv_std
    and inv_std = 1 / sqrt(var + eps).
    """
    n = x.shape[0]
    mean = x.mean(axis=0)
    np.subtract(x, mean, out=xhat)
    np.multiply(xhat, xhat, out=out)  # out as scratch for the squares
    var = out.mean(axis=0)
    np.sqrt(var + eps, out=inv_std)
    np.divide(1, inv_std, out=inv_std)
    xhat *= inv_std
    np.multiply(xhat, gamma, out=out)
    out += beta
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * (var * (n / max(n - 1, 1)))


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, out):
    """Inference-mode batch normalisation with the running statistics; overwrites out (n, d)."""
    scale = gamma / np.sqrt(running_var + eps)
    np.subtract(x, running_mean, out=out)
    out *= scale
    out += beta


def batchnorm_backward(dy, xhat, inv_std, gamma, dx, dgamma, dbeta):
    """Backward of training-mode batch norm.

    dy, xhat (n, d); inv_std, gamma (d,). Overwrites dgamma = sum(dy * xhat),
    dbeta = sum(dy) and, unless dx is empty, dx = gamma * inv_std / n *
    (n * dy - dbeta - xhat * dgamma).
    """
    n = dy.shape[0]
    np.sum(dy, axis=0, out=dbeta)
    np.einsum("ij,ij->j", dy, xhat, out=dgamma)
    if dx.size:
        np.multiply(xhat, dgamma, out=dx)
        dx += dbeta
        np.subtract(n * dy, dx, out=dx)
        dx *= gamma * inv_std / n


# ------------------------------------------------------------------------- optimizers


def _as(array, *scalars):
    """Scalars in ``array``'s dtype: a float64 scalar (e.g. an element of lr_steps) would
    otherwise promote every float32 temporary to float64 (NumPy 2 promotion rules)."""
    return [array.dtype.type(v) for v in scalars]


def _flush(state):
    """Optimizer state below the dtype's smallest normal number := 0, in place (see
    jit_optimizers: subnormal arithmetic is ~100x slower on Intel CPUs; NaN is kept)."""
    state[np.abs(state) < np.finfo(state.dtype).tiny] = 0


def sgd_update(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    """PyTorch SGD step, in place on params and velocity (all (P,)).

    g = grad + weight_decay * p; if momentum: v = momentum * v + g (subnormal v := 0) and
    g = g + momentum * v (nesterov) or g = v; p -= lr * g. ``grads`` is not modified.
    """
    lr, momentum, weight_decay = _as(params, lr, momentum, weight_decay)
    g = grads
    if weight_decay:
        g = grads + weight_decay * params
    if momentum:
        velocity *= momentum
        velocity += g
        _flush(velocity)
        g = g + momentum * velocity if nesterov else velocity
    params -= lr * g


def rmsprop_update(params, grads, square_avg, momentum_buf, lr, alpha, eps, weight_decay, momentum):
    """PyTorch RMSprop step, in place on params, square_avg and momentum_buf (all (P,)).

    g = grad + wd * p; sq = alpha * sq + (1 - alpha) * g^2; a = sqrt(sq) + eps;
    if momentum: buf = momentum * buf + g / a, p -= lr * buf; else p -= lr * g / a.
    Subnormal sq and buf := 0.
    """
    lr, alpha, one_m_alpha, eps, weight_decay, momentum = _as(params, lr, alpha, 1.0 - alpha, eps, weight_decay,
                                                              momentum)
    g = grads + weight_decay * params if weight_decay else grads
    square_avg *= alpha
    square_avg += one_m_alpha * (g * g)
    _flush(square_avg)
    avg = np.sqrt(square_avg)
    avg += eps
    if momentum:
        momentum_buf *= momentum
        momentum_buf += g / avg
        _flush(momentum_buf)
        params -= lr * momentum_buf
    else:
        params -= lr * (g / avg)


def adam_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """PyTorch Adam step number ``step`` (1-based), in place on params, m and v (all (P,)).

    g = grad + wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps); subnormal m and v := 0.
    The bias corrections are computed in float64, then every factor is cast once.
    """
    step_size, bc2_sqrt, b1, one_m_b1, b2, one_m_b2, eps, weight_decay = _as(
        params, lr / (1.0 - beta1**step), math.sqrt(1.0 - beta2**step), beta1, 1.0 - beta1, beta2, 1.0 - beta2,
        eps, weight_decay)
    g = grads + weight_decay * params if weight_decay else grads
    m *= b1
    m += one_m_b1 * g
    v *= b2
    v += one_m_b2 * (g * g)
    _flush(m)
    _flush(v)
    denom = np.sqrt(v)
    denom /= bc2_sqrt
    denom += eps
    params -= step_size * (m / denom)


# -------------------------------------------------------------------- whole network

make_workspace = stepwise.make_workspace


def prepare_inputs(x):
    """The contract's per-data-set preparation: nothing to precompute here."""
    return None


def train_steps(x, y, order, start, n_steps, batch_size, net, opt, lr_steps, seed, smoothing, aug,
                step_loss, step_correct, workspace=None, inputs=None, sample_weight=None):
    """The contract's ``train_steps`` (see ``fastnn.backends``), run by ``stepwise.train_steps``."""
    return stepwise.train_steps(sys.modules[__name__], x, y, order, start, n_steps, batch_size, net, opt,
                                lr_steps, seed, smoothing, aug, step_loss, step_correct, workspace, sample_weight)


def forward(x, net, out, batch_size, workspace=None):
    """The contract's ``forward`` (inference-mode logits), run by ``stepwise.forward``."""
    stepwise.forward(sys.modules[__name__], x, net, out, batch_size, workspace)
