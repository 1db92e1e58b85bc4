"""The step-by-step training driver, generic over a kernel module.

Plain Python walks the rows of ``spec`` and calls one kernel per layer per batch.
Bound to the NumPy kernels it *is* the NumPy backend's ``train_steps``/``forward``;
bound to the Numba kernels it is the "step-by-step path" that the compiled loop in
``numba_jit`` must reproduce number for number. Layer math (which kernel runs for
which layer kind, in which order) lives here and in its compiled twin only.

Buffers
-------
A ``Workspace`` holds every per-batch array, allocated once per (network layout,
batch size) and reused by every step, so the loop allocates nothing big:

``act``     flat; activation a_i of layer boundary i (a_0 = gathered input batch,
            a_{i+1} = output of layer i) at ``offsets[i, 0]``, shape (n, width_i)
``grad``    flat, same layout as ``act``: dL/da_i
``aux``     flat; per-layer (n, n_out) cache at ``offsets[i, 1]``: dropout mask or
            batch-norm xhat (-1: layer has none)
``vec``     flat; per-layer (n_out,) cache at ``offsets[i, 2]``: batch-norm inv_std
``labels``  (batch_size,) int64 gathered labels
``backup``  copy of ``net.state`` taken before each step, restored when its loss is
            not finite (batch-norm running statistics then keep their last good values)
``empty``   (0, 0) array passed as ``dx`` where the input gradient is not needed
``views``   dict: batch rows n -> the per-boundary views of ``batch_views`` (Python path only)
"""

from collections import namedtuple

import numpy as np

from .augment import image_shape
from .spec import (ACTIVATION, ALIGN_BYTES, BATCHNORM, DENSE, DROPOUT, KIND, N_IN, N_OUT, OPT_ADAM, OPT_RMSPROP,
                   OPT_SGD, aligned_zeros, dense_views)

Workspace = namedtuple("Workspace", "batch_size act grad aux vec offsets labels backup empty views")

# Columns of Workspace.offsets.
OFF_ACT, OFF_AUX, OFF_VEC = 0, 1, 2


def widths(spec):
    """Widths of the L + 1 layer boundaries: input width, then each layer's output width."""
    return np.concatenate([spec[:1, N_IN], spec[:, N_OUT]]).astype(np.int64)


def make_workspace(net, batch_size):
    """Allocate the per-batch buffers of ``net`` (a NetBuffers) for batches of up to ``batch_size`` rows.

    The dtype follows ``net.params`` (float32, or float64 in float64 models and gradient checks).
    """
    spec = net.spec
    dtype = net.params.dtype
    n_layers = len(spec)
    w = widths(spec)
    offsets = np.full((n_layers + 1, 3), -1, dtype=np.int64)
    # each layer's activations start on a cache line (ALIGN_BYTES) when the base does
    per_line = ALIGN_BYTES // np.dtype(dtype).itemsize
    sizes = -(-w * batch_size // per_line) * per_line
    offsets[:, OFF_ACT] = np.concatenate([[0], np.cumsum(sizes[:-1])])
    n_aux = n_vec = 0
    for i in range(n_layers):
        if spec[i, KIND] in (DROPOUT, BATCHNORM):
            offsets[i, OFF_AUX] = n_aux
            n_aux += batch_size * spec[i, N_OUT]
        if spec[i, KIND] == BATCHNORM:
            offsets[i, OFF_VEC] = n_vec
            n_vec += spec[i, N_OUT]
    n_act = int(sizes.sum())
    return Workspace(
        batch_size, aligned_zeros(n_act, dtype), aligned_zeros(n_act, dtype), np.zeros(n_aux, dtype),
        np.zeros(n_vec, dtype), offsets, np.zeros(batch_size, np.int64), np.zeros(len(net.state), net.state.dtype),
        np.zeros((0, 0), dtype), {})


_WORKSPACES = {}


def get_workspace(net, batch_size):
    """A cached workspace for this network layout, batch size and dtype (a few are kept).

    The layout depends only on ``spec``, so networks of the same architecture share one.
    Not safe for two threads training the same layout at once: pass ``workspace=``.
    """
    key = (net.spec.tobytes(), net.spec.shape, int(batch_size), net.params.dtype.str)
    return cached(_WORKSPACES, key, lambda: make_workspace(net, batch_size), limit=8)


def cached(store, key, make, limit):
    """``store[key]``, built by ``make()`` on a miss; the oldest entry is dropped beyond ``limit``."""
    value = store.get(key)
    if value is None:
        if len(store) >= limit:
            store.pop(next(iter(store)))
        value = store[key] = make()
    return value


def boundary(ws, net, i, n, which="act"):
    """View (n, width_i) of activation (``which='act'``) or gradient (``'grad'``) boundary i."""
    w = net.spec[0, N_IN] if i == 0 else net.spec[i - 1, N_OUT]
    o = ws.offsets[i, OFF_ACT]
    return getattr(ws, which)[o:o + n * w].reshape(n, w)


def layer_cache(ws, net, i, n):
    """(aux, vec) of layer i in the workspace for a batch of n rows (None where unused)."""
    d = net.spec[i, N_OUT]
    oa, ov = ws.offsets[i, OFF_AUX], ws.offsets[i, OFF_VEC]
    aux = ws.aux[oa:oa + n * d].reshape(n, d) if oa >= 0 else None
    vec = ws.vec[ov:ov + d] if ov >= 0 else None
    return aux, vec


def make_cache(net, i, n):
    """Fresh (aux, vec) arrays for layer i and n rows, in the dtype of ``net.params`` (for tests)."""
    d = net.spec[i, N_OUT]
    return np.zeros((n, d), net.params.dtype), np.zeros(d, net.params.dtype)


Bound = namedtuple("Bound", "kind act index p1 p2 g1 g2 s1 s2 f1 f2")
"""One layer's kernel arguments, resolved once: kind/act codes (ints), ``index``; p1, p2 =
(W, b) or (gamma, beta) views into params, g1, g2 the matching views into grads; s1, s2 =
batch-norm running mean/var views into state; f1, f2 = fconf row (dropout rate; momentum, eps)."""


def bind(net, i):
    """Resolve layer ``i``'s parameter views and settings (a ``Bound``) once, outside the step loop."""
    kind, n_in, n_out, p, p2, s, s2, act = (int(v) for v in net.spec[i])
    f1, f2 = (float(v) for v in net.fconf[i])
    p1 = p2v = g1 = g2 = s1 = s2v = None
    if kind == DENSE:
        p1, p2v = dense_views(net, i)
        g1, g2 = net.grads[p:p + n_in * n_out].reshape(n_in, n_out), net.grads[p2:p2 + n_out]
    elif kind == BATCHNORM:
        p1, p2v, g1, g2 = net.params[p:p + n_in], net.params[p2:p2 + n_in], net.grads[p:p + n_in], net.grads[p2:p2 + n_in]
        s1, s2v = net.state[s:s + n_in], net.state[s2:s2 + n_in]
    elif kind not in (ACTIVATION, DROPOUT):
        raise ValueError(f"layer {i}: unknown kind {kind}")
    return Bound(kind, act, i, p1, p2v, g1, g2, s1, s2v, f1, f2)


def layer_forward(kernels, net, i, x, out, cache, training, seed=0, step=0):
    """Run layer ``i`` of ``net`` forward: out = layer(x).

    Parameters
    ----------
    kernels : backend module (``numpy_ref`` or ``numba_jit``)
    net : NetBuffers
    i : int, layer index (row of ``net.spec``)
    x : (n, n_in) array; out : (n, n_out) array, overwritten
    cache : (aux, vec)
        aux (n, n_out): dropout mask / batch-norm xhat, vec (n_out,): batch-norm inv_std;
        written in training mode for ``layer_backward``; None where the layer needs none
        (``make_cache`` or ``layer_cache`` build them).
    training : bool
        Training mode: dropout active, batch norm uses (and updates) batch statistics.
    seed, step : int
        Dropout masks use stream ``step * 64 + i`` of ``seed`` (step = global optimizer step).
    """
    bound_forward(kernels, bind(net, i), x, out, cache, training, seed, step)


def bound_forward(kernels, L, x, out, cache, training, seed=0, step=0):
    """``layer_forward`` of a pre-resolved layer ``L`` (from ``bind``)."""
    kind = L.kind
    if kind == DENSE:
        kernels.dense_forward(x, L.p1, L.p2, L.act, out, training)  # inference: BLAS, as jit_layers
    elif kind == ACTIVATION:
        kernels.activation_forward(L.act, x, out)
    elif kind == DROPOUT:
        if training and L.f1 > 0:
            kernels.dropout_forward(x, L.f1, seed, step * 64 + L.index, out, cache[0])
        else:
            np.copyto(out, x)
    elif training:  # BATCHNORM
        kernels.batchnorm_forward_train(x, L.p1, L.p2, L.s1, L.s2, L.f1, L.f2, out, cache[0], cache[1])
    else:
        kernels.batchnorm_forward_eval(x, L.p1, L.p2, L.s1, L.s2, L.f2, out)


def layer_backward(kernels, net, i, x, y, dy, dx, cache):
    """Backward of layer ``i`` after a training-mode ``layer_forward``.

    x (n, n_in) the layer's input, y (n, n_out) its output, dy (n, n_out) = dL/dy
    (OVERWRITTEN: dense layers turn it into dL/dz in place). Writes dx (n, n_in) = dL/dx
    unless dx is an empty (0, 0) array, and overwrites this layer's slice of
    ``net.grads`` (dense: dW, db; batch norm: dgamma, dbeta).
    """
    bound_backward(kernels, bind(net, i), x, y, dy, dx, cache)


def bound_backward(kernels, L, x, y, dy, dx, cache):
    """``layer_backward`` of a pre-resolved layer ``L`` (from ``bind``)."""
    kind = L.kind
    if kind == DENSE:
        if L.act:
            kernels.activation_backward(L.act, y, dy, dy)
        kernels.dense_backward(x, L.p1, dy, dx, L.g1, L.g2)
    elif kind == BATCHNORM:
        kernels.batchnorm_backward(dy, cache[0], cache[1], L.p1, dx, L.g1, L.g2)
    elif dx.size == 0:
        return
    elif kind == ACTIVATION:
        kernels.activation_backward(L.act, y, dy, dx)
    elif L.f1 > 0:  # DROPOUT
        kernels.dropout_backward(dy, cache[0], dx)
    else:
        np.copyto(dx, dy)


def apply_update(kernels, net, opt, lr):
    """One optimizer update of every parameter from ``net.grads``; increments ``opt.step``."""
    hp = opt.hparams
    if opt.code == OPT_SGD:
        kernels.sgd_update(net.params, net.grads, opt.slots[0], lr, hp[0], bool(hp[1]), hp[2])
    elif opt.code == OPT_RMSPROP:
        kernels.rmsprop_update(net.params, net.grads, opt.slots[0], opt.slots[1], lr, hp[0], hp[1], hp[2], hp[3])
    elif opt.code == OPT_ADAM:
        kernels.adam_update(net.params, net.grads, opt.slots[0], opt.slots[1], lr, hp[0], hp[1], hp[2], hp[3],
                            int(opt.step[0]) + 1)
    else:
        raise ValueError(f"unknown optimizer code {opt.code}")
    opt.step[0] += 1


# Augmentation uses the random stream step * 64 + 63; dropout uses step * 64 + layer (< 63 layers).
AUG_STREAM = 63


def gather_batch(kernels, x, idx, aug, seed, g, out):
    """out = x[idx], augmented (``fastnn.backends.augment``) when aug[0] != 0 at global step g."""
    if aug[0] == 0:
        np.take(x, idx, axis=0, out=out)
    else:
        h, w = image_shape(aug, x.shape[1])
        kernels.augment_rows(x, idx, h, w, aug, seed, g * 64 + AUG_STREAM, out)


def batch_views(ws, net, n):
    """Views for a batch of n rows: (acts, grads, caches), lists over the L + 1 boundaries
    (acts, grads) and the L layers (caches); built once per (workspace, n) and kept."""
    views = ws.views.get(n)
    if views is None:
        n_layers = len(net.spec)
        views = ws.views[n] = ([boundary(ws, net, i, n) for i in range(n_layers + 1)],
                               [boundary(ws, net, i, n, "grad") for i in range(n_layers + 1)],
                               [layer_cache(ws, net, i, n) for i in range(n_layers)])
    return views


def train_steps(kernels, x, y, order, start, n_steps, batch_size, net, opt, lr_steps, seed, smoothing, aug,
                step_loss, step_correct, workspace=None, sample_weight=None):
    """The contract's ``train_steps`` (see ``fastnn.backends``) with one kernel call per layer per batch.

    Step s trains on rows order[start + s * batch_size : ...] (min(batch_size, n - pos) rows,
    n = len(order)) with learning rate lr_steps[s]. Stops early when the rows run out.
    When a step's loss is not finite, its loss is still written to step_loss[s] but no
    update is applied (batch-norm running statistics are restored) and s is returned.
    ``sample_weight`` ((len(x),) in the dtype of ``net.params``, or None) weights each row's loss
    (``softmax_nll_weighted``). Returns the number of steps applied.
    """
    ws = workspace if workspace is not None else get_workspace(net, batch_size)
    batch_weights = None if sample_weight is None else np.empty(batch_size, sample_weight.dtype)
    n_total = len(order)
    layers = [bind(net, i) for i in range(len(net.spec))]
    backward_order = list(reversed(layers))
    for s in range(n_steps):
        pos = start + s * batch_size
        if pos >= n_total:
            return s
        n = min(batch_size, n_total - pos)
        acts, grads, caches = batch_views(ws, net, n)
        idx = order[pos:pos + n]
        g = int(opt.step[0])
        gather_batch(kernels, x, idx, aug, seed, g, acts[0])
        labels = ws.labels[:n]
        np.take(y, idx, out=labels)
        if len(ws.backup):
            ws.backup[:] = net.state
        for L in layers:
            i = L.index
            bound_forward(kernels, L, acts[i], acts[i + 1], caches[i], True, seed, g)
        if batch_weights is None:
            loss, correct = kernels.softmax_nll(acts[-1], labels, smoothing, grads[-1])
        else:
            np.take(sample_weight, idx, out=batch_weights[:n])
            loss, correct = kernels.softmax_nll_weighted(acts[-1], labels, batch_weights[:n], smoothing, grads[-1])
        step_loss[s] = loss
        step_correct[s] = correct
        if not np.isfinite(loss):
            if len(ws.backup):
                net.state[:] = ws.backup
            return s
        for L in backward_order:
            i = L.index
            bound_backward(kernels, L, acts[i], acts[i + 1], grads[i + 1], grads[i] if i else ws.empty, caches[i])
        apply_update(kernels, net, opt, lr_steps[s])
    return n_steps


def forward(kernels, x, net, out, batch_size, workspace=None):
    """Inference-mode logits of every row of x (N, n_in) into out (N, k), batch_size rows at a time."""
    ws = workspace if workspace is not None else get_workspace(net, batch_size)
    n_layers = len(net.spec)
    layers = [bind(net, i) for i in range(n_layers)]
    for pos in range(0, len(x), batch_size):
        n = min(batch_size, len(x) - pos)
        a = x[pos:pos + n]
        for i in range(n_layers):
            b = out[pos:pos + n] if i == n_layers - 1 else boundary(ws, net, i + 1, n)
            bound_forward(kernels, layers[i], a, b, (None, None), False)
            a = b
