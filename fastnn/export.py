"""Taking a trained model elsewhere: ONNX, and a PyTorch ``nn.Sequential`` state dict.

Both walk the model's layer declarations (``Sequential.layers``, or the layers an
``MLP`` expands to) and its weights by their dotted names (``layers.0.W`` ...):

=================  =================================  =====================================
fastnn layer       ONNX nodes                         torch.nn modules
=================  =================================  =====================================
Dense(act)         Gemm (+ Relu / Sigmoid / Tanh)     Linear (+ ReLU / Sigmoid / Tanh)
ReLU/Sigmoid/Tanh  Relu / Sigmoid / Tanh              ReLU / Sigmoid / Tanh
Dropout            (nothing: identity at inference)   Dropout
BatchNorm          BatchNormalization (running stats) BatchNorm1d
(output)           Softmax -> "probabilities"         (none: the Sequential gives logits)
=================  =================================  =====================================

The ONNX graph takes ``input``, float32 (batch, n_features), the same features
``predict`` takes (e.g. pixels / 255), with a dynamic batch dimension, and gives
``probabilities``, float32 (batch, n_classes); a float64 model (``dtype='float64'``)
is exported in float64 (ONNX ``double``: input, weights and output), so nothing is
rounded on the way out. onnx is optional
(``pip install "fastnn[onnx]"``); the torch state dict needs only NumPy.
"""

from collections import OrderedDict

import numpy as np

from . import layers as L
from .atomic import write_bytes
from .validation import Interval, check_value

#: ONNX operator set: 17 is read by every onnxruntime since 1.13 (2022)
OPSET = 17
_ACT_OPS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
_TORCH_ACTS = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def missing_onnx():
    """None when onnx can be imported, else a message saying how to install it."""
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        return f"ONNX export needs the onnx package ({exc}); install it with: pip install \"fastnn[onnx]\""
    return None


def _layers_and_weights(model):
    model._require_built()
    return model._layers_for(model.n_classes_), dict(model._entries)


def _activation(layer):
    """The activation name a layer applies after its own work, or None."""
    if isinstance(layer, L.Dense):
        return layer.activation
    if isinstance(layer, L.Activation) and layer.name != "linear":
        return layer.name
    return None


def onnx_model(model, opset=OPSET):
    """The model as an ``onnx.ModelProto`` (checked with ``onnx.checker``)."""
    message = missing_onnx()
    if message:
        raise ImportError(message)
    import onnx
    from onnx import helper, numpy_helper

    from . import __version__

    check_value("opset", opset, Interval("int", 13, onnx.defs.onnx_opset_version()))  # 13: Softmax per axis
    layers, weights = _layers_and_weights(model)
    nodes, inits, current = [], [], "input"
    dtype = np.dtype(model.dtype)
    elem_type = helper.np_dtype_to_tensor_dtype(dtype)  # FLOAT or DOUBLE

    def add(op, inputs, name, **attrs):
        nonlocal current
        nodes.append(helper.make_node(op, [current, *inputs], [name], name=name, **attrs))
        current = name

    for i, layer in enumerate(layers):
        names = [n for n in weights if n.startswith(f"layers.{i}.")]
        inits += [numpy_helper.from_array(np.ascontiguousarray(weights[n], dtype=dtype), n) for n in names]
        if isinstance(layer, L.Dense):
            add("Gemm", names, f"layers.{i}.dense")
        elif isinstance(layer, L.BatchNorm):  # gamma, beta, running_mean, running_var: ONNX's order
            add("BatchNormalization", names, f"layers.{i}.batchnorm", epsilon=layer.eps)
        act = _activation(layer)
        if act:
            add(_ACT_OPS[act], [], f"layers.{i}.{act}")
    add("Softmax", [], "probabilities", axis=1)
    graph = helper.make_graph(
        nodes, "fastnn", [helper.make_tensor_value_info("input", elem_type, ["batch", model.n_features_])],
        [helper.make_tensor_value_info("probabilities", elem_type, ["batch", model.n_classes_])], inits)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                              producer_name="fastnn", producer_version=__version__,
                              doc_string=f"{model!r}: {dtype} features -> class probabilities")
    onnx.checker.check_model(proto)
    return proto


def to_onnx(model, path, opset=OPSET):
    """Write ``model`` as an ONNX file at ``path`` (atomically); returns the path.

    Input ``input``: float32 (batch, n_features); output ``probabilities``: float32
    (batch, n_classes), the same numbers as ``model.predict_proba`` to float32 rounding.
    Both are float64 (ONNX ``double``) for a float64 model.
    """
    return write_bytes(path, onnx_model(model, opset).SerializeToString())


def torch_modules(model):
    """The ``torch.nn`` modules, in order, that ``to_torch_state_dict`` names: a list of
    ``(class name, constructor arguments)``, e.g. ``[("Linear", (784, 128)), ("ReLU", ()), ...]``."""
    layers, _ = _layers_and_weights(model)
    modules, width = [], model.n_features_
    for layer in layers:
        if isinstance(layer, L.Dense):
            modules.append(("Linear", (width, layer.units)))
        elif isinstance(layer, L.Dropout):
            modules.append(("Dropout", (layer.rate,)))
        elif isinstance(layer, L.BatchNorm):
            modules.append(("BatchNorm1d", (width, layer.eps, layer.momentum)))
        act = _activation(layer)
        if act:
            modules.append((_TORCH_ACTS[act], ()))
        width = layer.output_width(width)
    return modules


def to_torch_state_dict(model):
    """The weights as ``torch.nn.Sequential(*modules).state_dict()`` names them.

    The modules are those of ``torch_modules(model)``: each Dense layer becomes a
    ``Linear`` whose ``weight`` is W transposed, (n_out, n_in), and a fused activation
    its own module; so ``Dense(128, "relu"), Dense(10)`` gives keys ``0.weight``,
    ``0.bias``, ``2.weight``, ``2.bias``. BatchNorm gives ``weight``, ``bias``,
    ``running_mean``, ``running_var`` and ``num_batches_tracked`` (the optimizer's
    step count). Values are NumPy arrays (the model's dtype; int64 for the count): load with
    ``seq.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``, or use
    :func:`to_torch`. The torch model gives logits; apply ``softmax(dim=1)`` for probabilities.
    """
    layers, weights = _layers_and_weights(model)
    state, index = OrderedDict(), 0
    for i, layer in enumerate(layers):
        if isinstance(layer, L.Dense):
            state[f"{index}.weight"] = np.ascontiguousarray(weights[f"layers.{i}.W"].T)
            state[f"{index}.bias"] = weights[f"layers.{i}.b"].copy()
        elif isinstance(layer, L.BatchNorm):
            for ours, theirs in (("gamma", "weight"), ("beta", "bias"), ("running_mean", "running_mean"),
                                 ("running_var", "running_var")):
                state[f"{index}.{theirs}"] = weights[f"layers.{i}.{ours}"].copy()
            state[f"{index}.num_batches_tracked"] = np.array(model.optimizer.iterations, dtype=np.int64)
        index += 1 if isinstance(layer, (L.Dense, L.Dropout, L.BatchNorm)) else 0
        index += 1 if _activation(layer) else 0
    return state


def to_torch(model):
    """A ``torch.nn.Sequential`` (in eval mode, the model's dtype) holding its weights; needs torch."""
    import torch

    seq = torch.nn.Sequential(*(getattr(torch.nn, name)(*args) for name, args in torch_modules(model)))
    seq = seq.to(getattr(torch, model.dtype))
    seq.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in to_torch_state_dict(model).items()})
    return seq.eval()
