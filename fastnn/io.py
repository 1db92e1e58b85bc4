"""Saving and loading models: one zip file holding ``config.json`` + ``weights.npz``.

The format (``FORMAT_VERSION`` 2), like Keras' ``.keras`` files, is a plain zip
archive that any zip tool can open:

``config.json``
    ``{"format": "fastnn-model", "format_version": 2, "fastnn_version": ...,
    "class": "MLP" | "Sequential", "config": <model.get_config()>,
    "n_features": d, "n_classes": k, "weights": [dotted names in order],
    "training": <fastnn.training_state record> or null}``
``weights.npz``
    Every weight under its dotted name (``layers.0.W`` of shape (n_in, n_out),
    ``layers.0.b``, batch-norm ``gamma``/``beta``/``running_mean``/``running_var``),
    plus the optimizer state ``optimizer.slots`` (2, P) and ``optimizer.step`` (1,),
    so that training can resume.

Version 2 added ``"training"`` (where the run stood, for ``fit(initial_epoch=)``);
version 1 files still load, with no training record.

No pickle anywhere: JSON for the configuration, ``np.load(allow_pickle=False)``
for the arrays. Writes go to a temporary file in the destination directory that
is then renamed over the target (``os.replace``), so a crash never leaves a half
written model behind. The suggested extension is ``.fastnn``; none is enforced.
"""

import io as _io
import json
import os
import tempfile
import zipfile

import numpy as np

from .training_state import check_state

FORMAT = "fastnn-model"
FORMAT_VERSION = 2


class ModelFormatError(ValueError):
    """The file is not a fastnn model, or is damaged, or is from a newer format."""


def _model_classes():
    from .model import MLP, Sequential

    return {"MLP": MLP, "Sequential": Sequential}


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_model(model, path):
    """Write ``model`` (built) to ``path`` atomically; returns ``path`` as a string."""
    from . import __version__

    model._require_built()
    path = os.fspath(path)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastnn_version": __version__,
        "class": type(model).__name__,
        "config": model.get_config(),
        "n_features": model.n_features_,
        "n_classes": model.n_classes_,
        "weights": model.get_weight_names(),
        "training": model.training_state,
    }
    if config["class"] not in _model_classes():
        raise ValueError(f"can only save MLP or Sequential models, got {config['class']}")
    arrays = dict(zip(config["weights"], model.get_weights()))
    opt = model.optimizer.buffers
    arrays["optimizer.slots"], arrays["optimizer.step"] = opt.slots, opt.step
    buf = _io.BytesIO()
    np.savez(buf, **arrays)

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("config.json", json.dumps(config, indent=2))
            zf.writestr("weights.npz", buf.getvalue())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_model_file(path):
    """(config dict, {name: array}) from a saved model, with the format checked."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no saved model at {path!r}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if not {"config.json", "weights.npz"} <= names:
                raise ModelFormatError(f"{path!r} is not a fastnn model: it lacks config.json and weights.npz")
            config = json.loads(zf.read("config.json").decode("utf-8"))
            weights_bytes = zf.read("weights.npz")
    except zipfile.BadZipFile:
        raise ModelFormatError(f"{path!r} is not a fastnn model (not a zip archive; was it saved with model.save?)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path!r} has a damaged config.json: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFormatError(f"{path!r} is not a fastnn model (format {config.get('format') if isinstance(config, dict) else None!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFormatError(f"{path!r} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFormatError(f"{path!r} uses model format version {version}, newer than this fastnn supports "
                               f"({FORMAT_VERSION}); upgrade fastnn (saved by fastnn {config.get('fastnn_version')})")
    try:
        with np.load(_io.BytesIO(weights_bytes), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise ModelFormatError(f"{path!r} has damaged weights: {exc}") from None
    return config, arrays


def load_model(path, backend=None):
    """Load a model written by ``save``; ``backend`` overrides the saved backend name."""
    config, arrays = read_model_file(path)
    classes = _model_classes()
    if config.get("class") not in classes:
        raise ModelFormatError(f"{path!r} holds an unknown model class {config.get('class')!r}; expected one of {sorted(classes)}")
    model_config = dict(config["config"])
    if backend is not None:
        model_config["backend"] = backend
    try:
        model = classes[config["class"]].from_config(model_config)
        model.build(config["n_features"], config["n_classes"])
    except (KeyError, TypeError) as exc:
        raise ModelFormatError(f"{path!r} has an invalid model config: {exc!r}") from None
    names = model.get_weight_names()
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ModelFormatError(f"{path!r} lacks weights {missing}")
    try:
        model.set_weights([arrays[n] for n in names])
    except ValueError as exc:
        raise ModelFormatError(f"{path!r} does not match its config: {exc}") from None
    opt = model.optimizer.buffers
    slots, step = arrays.get("optimizer.slots"), arrays.get("optimizer.step")
    if slots is not None and slots.shape == opt.slots.shape and step is not None and step.shape == opt.step.shape:
        opt.slots[...], opt.step[...] = slots, step
    if config.get("training") is not None:
        try:
            model.training_state = check_state(config["training"])
        except ValueError as exc:
            raise ModelFormatError(f"{path!r} has a damaged training record: {exc}") from None
    return model


def restore_training(model, path):
    """Put a saved run's weights, optimizer state and training record into ``model`` (built,
    same configuration); returns the epochs that run had finished (``BackupAndRestore``)."""
    saved = load_model(path, backend=model.backend)
    if saved.training_state is None:
        raise ModelFormatError(f"{path!r} has no training record to resume from (saved before any epoch finished?)")
    if (type(saved) is not type(model) or saved.get_config() != model.get_config()
            or (saved.n_features_, saved.n_classes_) != (model.n_features_, model.n_classes_)):
        raise ValueError(f"{path!r} was saved by a different model ({saved!r}, {saved.n_features_} inputs); remove it "
                         f"or use another folder for this model's backup")
    model.set_weights(saved.get_weights())
    opt, theirs = model.optimizer.buffers, saved.optimizer.buffers
    opt.slots[...], opt.step[...] = theirs.slots, theirs.step
    model.training_state = saved.training_state
    return saved.training_state["epoch"]


load = load_model
