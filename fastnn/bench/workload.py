"""What is trained: data, the shared starting network, and the runners that train it.

A *runner* is a callable ``run(order, start, n_steps, batch_size) -> steps applied``
over one training set, holding its own copy of the network.
"""

import importlib.util
import math
import time

import numpy as np

from .common import LR, RUNNERS, SEED
from .machine import thread_info


def load_training_set(name, limit=None):
    """Training set ``name`` as (x float32 (n, 784) in [0, 1], y int64 (n,)), first ``limit`` rows.

    Never downloads: benchmarks must not touch the network (set ``FASTNN_DATA``).
    """
    from fastnn.datasets import load_dataset

    (x, y), _ = load_dataset(name, download=False)
    if limit:
        x, y = x[:limit].copy(), y[:limit].copy()
    return x, y


def layer_sizes(n_in, hidden, n_out=10):
    return [n_in, *hidden, n_out]


def he_weights(sizes, seed=SEED):
    """He-normal (W, b) per dense layer, float32, biases zero: the shared starting point."""
    rng = np.random.default_rng(seed)
    return [
        ((rng.standard_normal((a, b)) * math.sqrt(2.0 / a)).astype(np.float32), np.zeros(b, dtype=np.float32))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]


def build_net(weights):
    """NetBuffers of a ReLU MLP (ReLU fused into every dense layer but the last) holding ``weights``."""
    from fastnn.backends import spec as S

    n = len(weights)
    layers = [("dense", w.shape[0], w.shape[1], S.ACT_RELU if i < n - 1 else S.ACT_NONE) for i, (w, _) in enumerate(weights)]
    net = S.allocate(layers)
    for i, (w, b) in enumerate(weights):
        W, bb = S.dense_views(net, i)
        W[...], bb[...] = w, b
    return net


def build_sgd(net):
    """OptBuffers for plain SGD (no momentum, no weight decay)."""
    from fastnn.backends import spec as S

    return S.OptBuffers(S.OPT_SGD, np.zeros(4), np.zeros((2, len(net.params)), dtype=np.float32), np.zeros(1, dtype=np.int64))


def train_flops_per_sample(sizes):
    """Dense FLOPs of one training sample: forward, dW, and dx for every layer but the first."""
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * sum(macs) * 3 - 2 * macs[0]


# ----------------------------------------------------------------------------- runners


def _no_aug():
    """The ``aug`` argument of train_steps that disables augmentation (see backends/augment.py)."""
    return np.zeros(8, dtype=np.float64)


def make_runner(kind, x, y, weights, lr=LR):
    """A callable ``run(order, start, n_steps, batch_size) -> steps applied`` for one runner.

    Raises ImportError when ``kind`` cannot run here (PyTorch or the reference missing).
    """
    if kind in ("numba", "numpy"):
        from fastnn.backends import get_backend

        backend = get_backend(kind)
        net = build_net(weights)
        opt = build_sgd(net)
        bufs = {}
        t0 = time.perf_counter()
        inputs = backend.prepare_inputs(x)  # once per data set, as MLP.fit does once per fit

        def run(order, start, n_steps, batch_size):
            if bufs.get("n", -1) < n_steps:
                bufs.update(n=n_steps, loss=np.zeros(n_steps, np.float64), correct=np.zeros(n_steps, np.int64),
                            lr=np.full(n_steps, lr, np.float64))
            return backend.train_steps(x, y, order, start, n_steps, batch_size, net, opt, bufs["lr"], SEED, 0.0,
                                       _no_aug(), bufs["loss"], bufs["correct"], inputs=inputs)

        run.net = net
        run.prepare_seconds = time.perf_counter() - t0
        return run
    if kind == "reference":
        ref = load_reference().ReferenceMLP(weights, lr)

        def run(order, start, n_steps, batch_size):
            return ref.train_steps(x, y, order, start, n_steps, batch_size)

        run.model = ref
        return run
    if kind == "fit":
        return _fit_runner(x, y, weights, lr)
    if kind == "estimator":
        return _estimator_runner(x, y, weights, lr)
    if kind == "torch":
        return _torch_runner(x, y, weights, lr)
    if kind == "jax":  # in a worker process per thread count (jax_peer): XLA fixes its threads as it loads
        from .jax_peer import jax_runner

        return jax_runner(x, y, weights, lr, thread_info()["numba"])
    raise ValueError(f"runner must be one of {RUNNERS}, got {kind!r}")


def _fit_runner(x, y, weights, lr):
    """``MLP.fit`` (the public API, Numba backend) for one epoch per call, over the first
    ``n_steps * batch_size`` rows; fit shuffles them itself (seeded), so ``order`` is unused."""
    from fastnn import MLP

    hidden = [w.shape[1] for w, _ in weights[:-1]]
    model = MLP(hidden, optimizer="sgd", lr=lr, seed=SEED).build(x.shape[1], weights[-1][0].shape[1])
    model.set_weights([a for pair in weights for a in pair])
    parts = {}  # rows -> (x, y): the same array objects on every call, as a user's data set

    def run(order, start, n_steps, batch_size):
        if start:
            raise ValueError(f"the fit runner times whole fits from the first row, got start={start}")
        rows = min(n_steps * batch_size, len(x))
        xs, ys = parts.setdefault(rows, (x, y) if rows == len(x) else (x[:rows], y[:rows]))
        model.fit(xs, ys, epochs=1, batch_size=batch_size, shuffle=True, seed=SEED, verbose=0)
        return -(-rows // batch_size)

    run.model, run.calls = model, 1
    return run


def _estimator_runner(x, y, weights, lr):
    """``fastnn.MLPClassifier.fit`` (scikit-learn's API) for one epoch per call, configured as
    plain SGD: the same training as the fit runner, through the estimator's own checks."""
    import warnings

    from fastnn.estimator import MLPClassifier

    hidden = tuple(w.shape[1] for w, _ in weights[:-1])
    parts = {}

    def run(order, start, n_steps, batch_size):
        if start:
            raise ValueError(f"the estimator runner times whole fits from the first row, got start={start}")
        rows = min(n_steps * batch_size, len(x))
        xs, ys = parts.setdefault(rows, (x, y) if rows == len(x) else (x[:rows], y[:rows]))
        clf = MLPClassifier(hidden, solver="sgd", learning_rate_init=lr, momentum=0.0, alpha=0.0,
                            batch_size=batch_size, max_iter=1, tol=0.0, random_state=SEED)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_iter=1: "not converged"
            clf.fit(xs, ys)
        return -(-rows // batch_size)

    run.calls = 1
    return run


def load_reference():
    """The independent NumPy loop (``fastnn.bench.reference_numpy_mlp``, shipped with the package)."""
    from . import reference_numpy_mlp

    return reference_numpy_mlp


def _torch_runner(x, y, weights, lr):
    import torch
    from torch import nn

    torch.set_num_threads(thread_info()["numba"])
    mods = []
    for i, (w, b) in enumerate(weights):
        lin = nn.Linear(*w.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        mods += [lin, nn.ReLU()] if i < len(weights) - 1 else [lin]
    model = nn.Sequential(*mods)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = nn.CrossEntropyLoss()

    def run(order, start, n_steps, batch_size):
        ot = torch.from_numpy(order)
        done = 0
        for s in range(n_steps):
            lo = start + s * batch_size
            if lo >= len(order):
                break
            idx = ot[lo : lo + batch_size]
            xb, yb = xt.index_select(0, idx), yt.index_select(0, idx)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            done += 1
        return done

    run.model = model
    return run


def available_runners(wanted):
    """The subset of ``wanted`` runners that can run here, and why the others cannot."""
    ok, skipped = [], {}
    for kind in wanted:
        try:
            if kind == "torch":
                import torch  # noqa: F401
            elif kind == "jax":  # imported in its worker process only (jax_peer)
                if importlib.util.find_spec("jax") is None:
                    raise ImportError("No module named 'jax'")
            elif kind == "estimator":
                import sklearn  # noqa: F401
            elif kind == "reference":
                load_reference()
            elif kind not in ("fit", "numba", "numpy", "estimator"):
                raise ValueError(f"unknown runner {kind!r}; choose from {RUNNERS}")
            ok.append(kind)
        except ImportError as e:
            skipped[kind] = str(e)
    return ok, skipped

