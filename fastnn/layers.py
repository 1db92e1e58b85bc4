"""Layer declarations: configuration, shapes, parameter names and initialisation.

Layers here are *declarations*, not math. Each one knows its configuration
(``get_config`` / ``from_config``), its row(s) in the network table that
``backends.spec.build_spec`` lays out, the dotted names of its parameters
(``layers.0.W``) and how to initialise them. The arithmetic lives in the
backends, which run a whole network described by that table.

Fusion: a ``Dense`` without activation followed by an activation layer becomes
one table row with the activation fused (exactly what ``Dense(n, activation=...)``
gives), so ``Dense(128), ReLU()`` and ``Dense(128, activation="relu")`` train
identically and equally fast.

Initialisation (seeded by ``numpy.random.default_rng(seed)``, one draw per dense
layer in order): weights are He/Kaiming uniform, U(-sqrt(6/n_in), +sqrt(6/n_in)),
when the layer feeds a ReLU, and Glorot/Xavier uniform,
U(-sqrt(6/(n_in+n_out)), +sqrt(6/(n_in+n_out))), for sigmoid, tanh or linear
layers. Biases start at zero, batch-norm gamma at one and beta at zero, running
mean at zero and running variance at one.
"""

import numpy as np

from .backends import spec as S
from .validation import (ACTIVATION_NAMES, Configurable, Interval, Options, NoneValue, POSITIVE_INT, UNIT_OPEN,
                         check_value)


class Layer(Configurable):
    """Base class: a declaration of one layer of a Sequential network."""

    #: names of the learnable parameters, in get_weights order
    param_names = ()
    #: names of non-learned state (batch-norm running statistics), after the params
    state_names = ()

    def output_width(self, n_in):
        return n_in


class Dense(Layer):
    """Fully connected layer ``y = act(x @ W + b)``; W has shape (n_in, units).

    Parameters
    ----------
    units : int >= 1
        Output width.
    activation : {'relu', 'sigmoid', 'tanh', 'linear'} or None
        Fused activation; None or 'linear' means none.
    """

    param_names = ("W", "b")

    def __init__(self, units, activation=None):
        check_value("units", units, POSITIVE_INT)
        check_value("activation", activation, [Options(*ACTIVATION_NAMES), NoneValue()])
        self.units = int(units)
        self.activation = None if activation in (None, "linear") else activation

    def get_config(self):
        return {"units": self.units, "activation": self.activation}

    def output_width(self, n_in):
        return self.units


class Activation(Layer):
    """Element-wise activation layer (base of ReLU, Sigmoid, Tanh)."""

    name = "linear"


class ReLU(Activation):
    """max(x, 0)."""

    name = "relu"


class Sigmoid(Activation):
    """1 / (1 + exp(-x))."""

    name = "sigmoid"


class Tanh(Activation):
    """tanh(x)."""

    name = "tanh"


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``rate`` and
    scale the rest by 1 / (1 - rate); the identity at inference."""

    def __init__(self, rate):
        check_value("rate", rate, UNIT_OPEN)
        self.rate = float(rate)

    def get_config(self):
        return {"rate": self.rate}


class BatchNorm(Layer):
    """Batch normalisation over the batch axis, PyTorch semantics.

    Training normalises with the batch statistics and updates
    ``running = (1 - momentum) * running + momentum * batch_stat`` (unbiased
    variance); inference uses the running statistics.
    """

    param_names = ("gamma", "beta")
    state_names = ("running_mean", "running_var")

    def __init__(self, momentum=0.1, eps=1e-5):
        check_value("momentum", momentum, Interval("real", 0, 1))
        check_value("eps", eps, Interval("real", 0, closed="neither"))
        self.momentum, self.eps = float(momentum), float(eps)

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps}


LAYER_CLASSES = {cls.__name__: cls for cls in (Dense, ReLU, Sigmoid, Tanh, Dropout, BatchNorm)}
ACTIVATION_LAYERS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


def parse_architecture(text, activation="relu"):
    """Hidden layers from a compact string, for the command line and sweep files.

    Comma-separated tokens: ``dense:UNITS`` (with ``activation``), ``dense:UNITS:ACT``,
    ``relu``, ``sigmoid``, ``tanh``, ``dropout:RATE``, ``batchnorm``. The output layer is
    not part of it. Example: ``"dense:256,dropout:0.5,dense:128,dense:128,batchnorm"``.
    Returns a list of Layer; raises ValueError naming the bad token.
    """
    layers = []
    for token in (t.strip() for t in str(text).split(",")):
        name, *args = token.split(":")
        try:
            if name == "dense" and len(args) in (1, 2):
                layers.append(Dense(int(args[0]), args[1] if len(args) == 2 else activation))
            elif name == "dropout" and len(args) == 1:
                layers.append(Dropout(float(args[0])))
            elif name == "batchnorm" and not args:
                layers.append(BatchNorm())
            elif name in ACTIVATION_LAYERS and not args:
                layers.append(ACTIVATION_LAYERS[name]())
            else:
                raise ValueError("unknown layer")
        except ValueError as exc:
            raise ValueError(f"architecture token {token!r} is not valid ({exc}); use dense:UNITS[:ACT], "
                             f"dropout:RATE, batchnorm, relu, sigmoid or tanh, separated by commas") from None
    return layers


def layer_from_config(entry):
    """Rebuild a layer from ``{"class": name, "config": {...}}``."""
    try:
        cls = LAYER_CLASSES[entry["class"]]
    except (KeyError, TypeError):
        raise ValueError(f"unknown layer entry {entry!r}; expected a class among {sorted(LAYER_CLASSES)}") from None
    return cls.from_config(entry.get("config", {}))


def layer_to_config(layer):
    return {"class": type(layer).__name__, "config": layer.get_config()}


class Plan:
    """How a list of layers maps onto the backend's network table.

    Attributes
    ----------
    rows : list of tuple
        Layer descriptions for ``spec.build_spec``.
    row_of : list of int
        For each user layer, the table row that carries it (fused layers share one).
    widths : list of int
        Output width of each user layer.
    """

    def __init__(self, layers, n_features):
        self.rows, self.row_of, self.widths = [], [], []
        n = n_features
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"layers[{i}] must be a fastnn layer (Dense, ReLU, Sigmoid, Tanh, Dropout, BatchNorm), got {layer!r}")
            prev = self.rows[-1] if self.rows else None
            if isinstance(layer, Dense):
                act = S.ACTIVATIONS[layer.activation or "linear"]
                self.rows.append(("dense", n, layer.units, act))
            elif isinstance(layer, Activation):
                code = S.ACTIVATIONS[layer.name]
                fusable = prev is not None and prev[0] == "dense" and prev[3] == S.ACT_NONE and self.row_of[-1] == len(self.rows) - 1
                if fusable:  # Dense(linear) + activation -> one fused row
                    self.rows[-1] = prev[:3] + (code,)
                    self.row_of.append(len(self.rows) - 1)
                    self.widths.append(n)
                    continue
                self.rows.append(("activation", n, code))
            elif isinstance(layer, Dropout):
                self.rows.append(("dropout", n, layer.rate))
            elif isinstance(layer, BatchNorm):
                self.rows.append(("batchnorm", n, layer.momentum, layer.eps))
            n = layer.output_width(n)
            self.row_of.append(len(self.rows) - 1)
            self.widths.append(n)
        self.n_out = n


def weight_shapes(layers, plan):
    """[(dotted name, shape)] of every array ``param_entries`` returns, from the plan alone
    (nothing allocated: a saved model's arrays are checked against it before building)."""
    shapes = []
    for i, layer in enumerate(layers):
        row = plan.rows[plan.row_of[i]]
        if isinstance(layer, Dense):
            shapes += [(f"layers.{i}.W", (row[1], row[2])), (f"layers.{i}.b", (row[2],))]
        elif isinstance(layer, BatchNorm):
            shapes += [(f"layers.{i}.{key}", (row[1],)) for key in ("gamma", "beta", "running_mean", "running_var")]
    return shapes


def param_entries(layers, plan, net):
    """(dotted name, view) pairs for every parameter and state array, in get_weights order.

    Views alias ``net.params`` / ``net.state``, so writing into them sets the weights.
    """
    views = []
    for i, layer in enumerate(layers):
        r = plan.row_of[i]
        if isinstance(layer, Dense):
            views += S.dense_views(net, r)
        elif isinstance(layer, BatchNorm):
            n = int(net.spec[r, S.N_IN])
            p, p2, s, s2 = (int(v) for v in net.spec[r, [S.P_OFF, S.P_OFF2, S.S_OFF, S.S_OFF2]])
            views += [net.params[p : p + n], net.params[p2 : p2 + n], net.state[s : s + n], net.state[s2 : s2 + n]]
    return [(name, view) for (name, _), view in zip(weight_shapes(layers, plan), views)]


def initialize(net, seed):
    """Fill dense weights of ``net`` in place (He uniform before ReLU, Glorot otherwise).

    The activation that decides is the one fused into the row or, for a linear
    row, the activation layer right after it.
    """
    rng = np.random.default_rng(seed)
    spec = net.spec
    for r in range(len(spec)):
        if spec[r, S.KIND] != S.DENSE:
            continue
        n_in, n_out, act = int(spec[r, S.N_IN]), int(spec[r, S.N_OUT]), int(spec[r, S.ACT])
        if act == S.ACT_NONE:  # e.g. Dense -> BatchNorm -> ReLU: look at the next activation
            for r2 in range(r + 1, len(spec)):
                if spec[r2, S.KIND] == S.DENSE:
                    break
                if spec[r2, S.KIND] == S.ACTIVATION:
                    act = int(spec[r2, S.ACT])
                    break
        if act == S.ACT_RELU:
            limit = np.sqrt(6.0 / n_in)
        else:
            limit = np.sqrt(6.0 / (n_in + n_out))
        W, b = S.dense_views(net, r)
        W[...] = rng.uniform(-limit, limit, size=(n_in, n_out)).astype(W.dtype)  # float32 or float64 models
        b[...] = 0.0
