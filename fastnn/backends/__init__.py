"""Compute backends: the same kernel names and signatures, chosen by name.

``numpy``  (``numpy_ref.py``) plain vectorised NumPy: the correctness oracle and
           the "pure NumPy" speed baseline.
``numba``  (``numba_jit.py``, a facade over the ``jit_*`` modules) Numba-compiled
           kernels plus a compiled training loop that runs many optimizer steps per
           call. The default.

Only this package knows which engine runs; layers, losses, optimizers and the
model call ``get_backend(name).<kernel>``.

The kernel contract
-------------------
All float arrays are C-contiguous float32, labels int64; scalars are Python
floats/ints. (``numpy`` also runs every kernel in float64, given float64 arrays
throughout: the float64 models of ``dtype='float64'``.) Every kernel writes into caller-allocated outputs (named ``out``,
``d*``) and allocates nothing per batch. Shapes: x (n, d_in), W (d_in, d_out),
b (d_out,), logits (n, k), y (n,). ``act`` is an activation code from ``spec``.

matmul(a, b, out)                         out = a @ b
dense_forward(x, W, b, act, out, lists=True)
                                          out = act(x @ W + b) (lists False: no zero-skipping
                                          for sparse x, as in inference)
dense_backward(x, W, dz, dx, dW, db)      dW = x.T @ dz, db = dz.sum(0), dx = dz @ W.T
                                          (dx may be an empty (0, 0) array: skipped)
activation_forward(act, x, out)           out = act(x)
activation_backward(act, y, dy, dx)       dx = dy * act'(.) written via the output y
softmax_nll(logits, y, smoothing, dlogits) -> (mean loss: float, n_correct: int)
                                          fused stable log-softmax + NLL (with label
                                          smoothing) + gradient d(mean loss)/dlogits
softmax_nll_weighted(logits, y, weights, smoothing, dlogits) -> (loss, n_correct)
                                          the same with row weights (n,) >= 0: loss =
                                          sum_r weights[r] * loss_r / n (Keras' default
                                          reduction), dlogits scaled per row to match
log_softmax(logits, out)                  out = log_softmax(logits)
dropout_forward(x, rate, seed, stream, out, mask)
                                          inverted dropout; mask[i, j] in {0, 1/(1-rate)}
                                          from the counter-based generator in rng.py
dropout_backward(dy, mask, dx)            dx = dy * mask
batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                        out, xhat, inv_std)
batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps, out)
batchnorm_backward(dy, xhat, inv_std, gamma, dx, dgamma, dbeta)
sgd_update(params, grads, velocity, lr, momentum, nesterov, weight_decay)
rmsprop_update(params, grads, square_avg, momentum_buf, lr, alpha, eps, weight_decay, momentum)
adam_update(params, grads, m, v, lr, beta1, beta2, eps, weight_decay, step)
                                          PyTorch semantics (L2 weight decay added to the
                                          gradient); all update params and slots in place
augment_rows(x, rows, height, width, aug, seed, stream, out)
                                          out = randomly shifted/rotated/scaled/elastically
                                          distorted images x[rows] (see augment.py); the
                                          train_steps ``aug`` vector turns it on

Whole-network entry points (see spec.py for NetBuffers / OptBuffers):

train_steps(x, y, order, start, n_steps, batch_size, net, opt, lr_steps, seed,
            smoothing, aug, step_loss, step_correct) -> int
    Runs up to ``n_steps`` optimizer steps on the batches
    order[start + s*batch_size : start + (s+1)*batch_size] (the last may be ragged),
    writes each step's mean loss and correct count, and returns the number of steps
    applied; it stops before applying a step whose loss is not finite.
    Keyword ``sample_weight``: float32 (len(x),) weights of the rows' losses
    (``softmax_nll_weighted``), or None (the default: unweighted, the same bits
    as without the keyword).
forward(x, net, out, batch_size)         inference-mode logits for all rows of x

prepare_inputs(x) -> inputs             once per data set (e.g. per fit): anything the
                                          backend precomputes from x to train faster, or
                                          None; pass it as ``train_steps(..., inputs=)``
                                          with that same x. It never changes results.
                                          (numba: one-byte pixel codes when every value
                                          of x is k/255; numpy: always None)

Both also accept ``workspace=`` (keyword): the per-batch buffers from
``make_workspace(net, batch_size)`` (``stepwise.Workspace``). By default a cached
workspace per (layout, batch size, dtype) is used, so the hot loop never allocates.

Extensions (compatible with the contract above)
-----------------------------------------------
- ``batchnorm_backward`` also skips ``dx`` when it is an empty (0, 0) array.
- ``sgd_update`` etc. leave ``grads`` untouched; ``adam_update``'s ``step`` is the
  1-based index of this update (t in the bias corrections).
- Batch norm with a 1-row batch: running_var takes the biased variance (0) instead of
  dividing by n - 1 = 0.
- ``train_steps`` writes the non-finite loss of the step it refused into
  ``step_loss[returned count]``, restores batch-norm running statistics, and stops
  early (returns fewer steps) when ``order`` runs out of rows. With plain SGD
  (momentum 0, weight decay 0) the Numba loop fuses the first dense layer's update
  into its backward pass, so ``net.grads`` is scratch afterwards.
- ``numba_jit`` also exports ``matmul_blas``, ``matmul_blocked``, ``matmul_sparse_rows``,
  ``matmul_xt_sparse`` (x.T @ dz skipping zeros), ``matmul_lists``/``matmul_xt_lists``
  (the training loop's first-layer list kernels), ``dense_backward_sgd`` (fused first
  layer), ``density``, ``train_steps_stepwise``/``forward_stepwise`` (the plain-Python
  driver over Numba kernels) and ``warmup()`` (compile everything once, e.g. before
  starting parallel jobs that share Numba's on-disk cache).
- ``stepwise`` holds the per-layer functions ``layer_forward``/``layer_backward`` and
  the generic driver both backends share.
"""

from importlib import import_module

from . import jit_cache

jit_cache.install()  # before any kernel module defines its cached functions

BACKENDS = {"numba": "fastnn.backends.numba_jit", "numpy": "fastnn.backends.numpy_ref"}
DEFAULT_BACKEND = "numba"


def get_backend(name=DEFAULT_BACKEND):
    """Return the backend module registered as ``name`` ('numba' or 'numpy')."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {name!r}")
    return import_module(BACKENDS[name])
