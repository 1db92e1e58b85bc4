"""sample_weight / class_weight with Keras semantics, through the compiled loss of both backends.

A batch's loss is sum_i w_i * loss_i / (rows in the batch) -- Keras' default
"sum_over_batch_size" reduction, not divided by the sum of the weights -- and its
gradient the same weighted sum. Checked against an independent float64 computation and
finite differences, and the NumPy backend, the Numba step-by-step path and the compiled
Numba loop against each other (the last two bit for bit, as without weights).
"""

import warnings

import numpy as np
import pytest

from fastnn import MLP
from fastnn.backends import numba_jit as nb
from fastnn.backends import numpy_ref as npr
from fastnn.backends import spec as S
from fastnn.backends import stepwise
from gradcheck import numeric
from test_train_steps import PATHS, assert_paths_agree, copy_net, make_data, make_net, make_opt

KERNELS = {"numpy": npr, "numba": nb}


def weighted_nll_ref(logits, y, w, smoothing):
    """Independent float64 reference: (loss, dlogits)."""
    z = logits.astype(np.float64)
    logp = z - z.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    n, k = z.shape
    t = np.full((n, k), smoothing / k)
    t[np.arange(n), y] += 1 - smoothing
    w = w.astype(np.float64)
    return (w * -(t * logp).sum(1)).sum() / n, (np.exp(logp) - t) * w[:, None] / n


def weights_for(n, seed=0):
    w = np.random.default_rng(seed).uniform(0, 3, n).astype(np.float32)
    w[::5] = 0  # some samples left out entirely
    return w


# kernels -----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_weighted_softmax_nll_matches_reference(kernel, smoothing):
    r = np.random.default_rng(1)
    logits = (r.standard_normal((37, 10)) * 3).astype(np.float32)
    y = r.integers(0, 10, 37)
    w = weights_for(37)
    d = np.full_like(logits, np.nan)
    loss, correct = KERNELS[kernel].softmax_nll_weighted(logits, y, w, smoothing, d)
    ref_loss, ref_d = weighted_nll_ref(logits, y, w, smoothing)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(d, ref_d, rtol=1e-5, atol=1e-7)
    assert correct == int((logits.argmax(1) == y).sum())  # accuracy stays unweighted
    assert np.all(d[w == 0] == 0)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_unit_weights_give_the_unweighted_bits(kernel):
    r = np.random.default_rng(2)
    logits = r.standard_normal((50, 7)).astype(np.float32)
    y = r.integers(0, 7, 50)
    d1, d2 = np.empty_like(logits), np.empty_like(logits)
    plain = KERNELS[kernel].softmax_nll(logits, y, 0.1, d1)
    weighted = KERNELS[kernel].softmax_nll_weighted(logits, y, np.ones(50, np.float32), 0.1, d2)
    assert plain == weighted
    np.testing.assert_array_equal(d1, d2)


def test_weighted_softmax_nll_finite_differences():
    r = np.random.default_rng(3)
    logits = r.standard_normal((6, 5))
    y = r.integers(0, 5, 6)
    w = r.uniform(0, 2, 6)
    d = np.empty_like(logits)
    npr.softmax_nll_weighted(logits, y, w, 0.1, d)
    num = numeric(lambda: npr.softmax_nll_weighted(logits, y, w, 0.1, np.empty_like(logits))[0], logits)
    np.testing.assert_allclose(d, num, rtol=1e-6, atol=1e-9)


# train_steps: whole network --------------------------------------------------------------


def test_weighted_network_gradient_is_the_finite_difference_of_the_weighted_loss():
    """One full-batch plain-SGD step with lr 1 in float64 moves the parameters by exactly
    minus the gradient; it must be the finite difference of sum_i w_i loss_i / n, with the
    weights gathered through a shuffled row order."""
    layers = [("dense", 8, 6, S.ACT_TANH), ("dense", 6, 4, S.ACT_NONE)]
    base = make_net(layers)
    net = S.NetBuffers(base.spec, base.fconf, base.params.astype(np.float64), base.grads.astype(np.float64),
                       base.state.astype(np.float64))
    r = np.random.default_rng(4)
    x, y, w = r.standard_normal((12, 8)), r.integers(0, 4, 12), r.uniform(0, 2, 12)
    order = r.permutation(12)

    def objective():
        logits = np.zeros((12, 4))
        npr.forward(x, net, logits, 12, workspace=stepwise.make_workspace(net, 12))
        return npr.softmax_nll_weighted(logits, y, w, 0.0, np.empty_like(logits))[0]

    expected = numeric(objective, net.params)
    before = net.params.copy()
    opt = S.OptBuffers(S.OPT_SGD, np.zeros(4), np.zeros((2, len(before))), np.zeros(1, np.int64))
    npr.train_steps(x, y, order, 0, 1, 12, net, opt, np.ones(1), 0, 0.0, np.zeros(8), np.zeros(1),
                    np.zeros(1, np.int64), workspace=stepwise.make_workspace(net, 12), sample_weight=w)
    np.testing.assert_allclose(before - net.params, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("opt_name", ["sgd", "adam-wd"])
@pytest.mark.parametrize("batch_size", [1, 32])
def test_weighted_paths_agree(opt_name, batch_size):
    """NumPy, the Numba step-by-step path and the compiled loop, with weights; the last two bit for bit."""
    x, y = make_data(300, 200, 7, seed=3)
    w = weights_for(300, seed=1)
    order = np.random.default_rng(7).permutation(300)
    n_steps = min(10, 300 // batch_size)
    base = make_net()
    out = {}
    for path, train in PATHS.items():
        net, opt = copy_net(base), make_opt(opt_name, len(base.params))
        loss, correct = np.zeros(n_steps), np.zeros(n_steps, np.int64)
        k = train(x, y, order, 0, n_steps, batch_size, net, opt, np.full(n_steps, 0.05), 3, 0.05, np.zeros(8),
                  loss, correct, sample_weight=w)
        out[path] = (net, opt, k, loss, correct)
    assert out["numba"][2] == n_steps
    assert_paths_agree(out, 1e-4 if opt_name == "sgd" else 2e-3)
    unweighted = copy_net(base)
    PATHS["numba"](x, y, order, 0, n_steps, batch_size, unweighted, make_opt(opt_name, len(base.params)),
                   np.full(n_steps, 0.05), 3, 0.05, np.zeros(8), np.zeros(n_steps), np.zeros(n_steps, np.int64))
    assert not np.array_equal(unweighted.params, out["numba"][0].params)  # the weights were used


# fit / evaluate --------------------------------------------------------------------------


def blobs(n=240, d=10, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 1.5
    y = rng.integers(0, k, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y.astype(np.int64)


def fitted(backend, x, y, epochs=2, **kwargs):
    model = MLP([16], backend=backend, seed=2, optimizer="sgd", lr=0.1, momentum=0.5)
    fit_kwargs = dict(epochs=epochs, batch_size=32, verbose=0, seed=5)
    fit_kwargs.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Numba's caching notices
        history = model.fit(x, y, **fit_kwargs)
    return model, history


def same_weights(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


@pytest.mark.parametrize("backend", list(KERNELS))
def test_class_weight_is_a_per_class_sample_weight_and_they_multiply(backend):
    x, y = blobs()
    s = weights_for(len(y), seed=3)
    cw = {0: 2.0, 2: 0.5}  # class 1 is not listed: weight 1
    per_class = np.array([2.0, 1.0, 0.5], np.float32)[y]
    a, ha = fitted(backend, x, y, class_weight=cw)
    b, hb = fitted(backend, x, y, sample_weight=per_class)
    assert same_weights(a, b) and ha.history["loss"] == hb.history["loss"]
    c, _ = fitted(backend, x, y, class_weight=cw, sample_weight=s)
    d, _ = fitted(backend, x, y, sample_weight=s * per_class)
    assert same_weights(c, d)
    ones, _ = fitted(backend, x, y, sample_weight=np.ones(len(y)))
    plain, _ = fitted(backend, x, y)
    assert same_weights(ones, plain)  # unit weights: the unweighted bits
    assert not same_weights(a, plain)


@pytest.mark.parametrize("backend", list(KERNELS))
def test_zero_weights_drop_samples_up_to_the_batch_size_normalisation(backend):
    """Full-batch plain SGD: weights 1/0 on rows == training on the kept rows alone with the
    learning rate scaled by kept/n (the loss is divided by all n rows, as in Keras)."""
    x, y = blobs(120)
    keep = np.random.default_rng(1).random(120) < 0.6
    def sgd(lr):
        return MLP([8], backend=backend, seed=2, optimizer="sgd", lr=lr)
    a, b = sgd(0.2), sgd(0.2 * keep.sum() / 120)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.fit(x, y, epochs=3, batch_size=120, shuffle=False, verbose=0, sample_weight=keep.astype(np.float32))
        b.build(10, 3)
        b.fit(x[keep], y[keep], epochs=3, batch_size=int(keep.sum()), shuffle=False, verbose=0)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


def test_logged_loss_and_evaluate_are_the_weighted_means():
    x, y = blobs(90)
    w = weights_for(90, seed=4)
    model = MLP([8], backend="numpy", seed=2, optimizer="sgd", lr=0.1).build(10, 3)
    probs = model.predict_proba(x).astype(np.float64)
    expected = (w * -np.log(probs[np.arange(90), y])).sum() / 90
    loss, acc = model.evaluate(x, y, sample_weight=w)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert acc == model.evaluate(x, y)[1]  # accuracy is not weighted (Keras' metrics)
    # one full-batch epoch logs the weighted loss of the weights it started from
    history = model.fit(x, y, epochs=1, batch_size=90, verbose=0, sample_weight=w)
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-6)


@pytest.mark.parametrize("backend", list(KERNELS))
def test_validation_weights(backend):
    x, y = blobs(200)
    xv, yv = blobs(60, seed=9)
    wv = weights_for(60, seed=5)
    model, history = fitted(backend, x, y, validation_data=(xv, yv, wv))
    assert history.history["val_loss"][-1] == model.evaluate(xv, yv, sample_weight=wv)[0]
    assert history.history["val_loss"][-1] != model.evaluate(xv, yv)[0]
    # validation_split: the held-out tail keeps its sample weights; class_weight is training-only
    w = weights_for(200, seed=6)
    model, history = fitted(backend, x, y, validation_split=0.25, sample_weight=w, class_weight={1: 3.0})
    assert history.history["val_loss"][-1] == model.evaluate(x[150:], y[150:], sample_weight=w[150:])[0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(sample_weight=np.ones(5)), r"sample_weight must have shape \(40,\), one weight per sample, got shape \(5,\)"),
    (dict(sample_weight=-np.ones(40)), "sample_weight must be finite and >= 0, got 40 other values such as -1.0"),
    (dict(sample_weight=np.full(40, np.nan)), "sample_weight must be finite and >= 0"),
    (dict(sample_weight=np.array(["a"] * 40)), "sample_weight must hold real numbers, got dtype <U1"),
    (dict(class_weight=[1.0, 2.0]), r"class_weight must be a dict \{class id: weight\} or None, got list"),
    (dict(class_weight={3: 1.0}), r"class_weight keys must be class ids in \[0, 2\], got 3"),
    (dict(class_weight={"0": 1.0}), r"class_weight keys must be class ids in \[0, 2\], got '0'"),
    (dict(class_weight={0: -1.0}), r"class_weight\[0\] must be a number >= 0, got -1.0"),
    (dict(validation_data=(np.zeros((4, 10)), np.zeros(4), np.ones(3))),
     r"validation_data sample_weight must have shape \(4,\)"),
    (dict(validation_data=(np.zeros((4, 10)),)), "validation_data must be a tuple .* got tuple of length 1"),
])
def test_bad_weights_are_named(kwargs, message):
    x, y = blobs(40)
    model = MLP([4], backend="numpy")
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, verbose=0, **kwargs)
    with pytest.raises(ValueError, match="sample_weight must be finite and >= 0"):
        model.build(10, 3).evaluate(x, y, sample_weight=-np.ones(40))
