"""Saving and loading models: one zip file holding ``config.json`` + ``weights.npz``.

The format (``FORMAT_VERSION`` 3), like Keras' ``.keras`` files, is a plain zip
archive that any zip tool can open:

``config.json``
    ``{"format": "fastnn-model", "format_version": 2, "fastnn_version": ...,
    "class": "MLP" | "Sequential", "config": <model.get_config()>,
    "n_features": d, "n_classes": k, "weights": [dotted names in order],
    "training": <fastnn.training_state record> or null,
    "dataset": null | {"name": str, "path": str | null, "n_features": d,
    "n_classes": k, "image_shape": [rows, cols]}}``

    ``dataset`` is the data set the model was trained on, as ``model.dataset_``
    holds it (``fastnn-train`` sets it): ``path`` is the directory of a data set
    given by path, null for a named one. ``fastnn-evaluate`` uses it by default.
``config["dtype"]``
    ``"float64"`` for a float64 model (``dtype=``), whose arrays below are float64; a
    float32 model's config has no ``dtype`` (its files are as before), and a file without
    one loads as float32.
``weights.npz``
    Every weight under its dotted name (``layers.0.W`` of shape (n_in, n_out),
    ``layers.0.b``, batch-norm ``gamma``/``beta``/``running_mean``/``running_var``),
    plus the optimizer state ``optimizer.slots`` (2, P) and ``optimizer.step`` (1,),
    so that training can resume.

Version 2 added ``"training"`` (where the run stood, for ``fit(initial_epoch=)``)
and ``"dataset"``; version 1 files still load, with neither record. Version 3 added
float64 models: only their files are written as version 3 (so a fastnn from before
says to upgrade rather than failing on ``dtype``); float32 models are still written
as version 2.

Loading trusts nothing in the file: every decoder error is a ``ModelFormatError`` naming
the file, the config is checked field by field, and every array's name, shape and dtype
(from its ``.npy`` header) is checked against what the config implies before any array or
network is allocated; no member is inflated beyond that size.

No pickle anywhere: JSON for the configuration, ``np.load(allow_pickle=False)``
for the arrays. Writes go to a temporary file in the destination directory that
is then renamed over the target (``os.replace``), so a crash never leaves a half
written model behind. The suggested extension is ``.fastnn``; none is enforced.
"""

import contextlib
import io as _io
import json
import math
import os
import zipfile

import numpy as np

from .atomic import atomic_write
from .training_state import check_state
from .validation import BACKEND_NAMES, Options, check_backend_dtype, check_value

FORMAT = "fastnn-model"
FORMAT_VERSION = 3
#: the version float32 models are written as (their files need nothing version 3 added)
FLOAT32_FORMAT_VERSION = 2
#: keys of the ``dataset`` record and their JSON types
DATASET_KEYS = {"name": str, "path": (str, type(None)), "n_features": int, "n_classes": int, "image_shape": list}


class ModelFormatError(ValueError):
    """The file is not a fastnn model, or is damaged, or is from a newer format."""


# The model classes a file may name, by class name. ``fastnn.model`` registers its classes
# here (``model_class``) when imported, so this module never imports ``fastnn.model``: the
# dependency goes one way (model -> io).
_MODEL_CLASSES = {}


def model_class(cls):
    """Class decorator: ``cls`` can be saved and loaded under its name."""
    _MODEL_CLASSES[cls.__name__] = cls
    return cls


def _model_classes():
    return _MODEL_CLASSES


def save_model(model, path):
    """Write ``model`` (built) to ``path`` atomically; returns ``path`` as a string."""
    from . import __version__

    model._require_built()
    path = os.fspath(path)
    config = {
        "format": FORMAT,
        "format_version": FLOAT32_FORMAT_VERSION if model.dtype == "float32" else FORMAT_VERSION,
        "fastnn_version": __version__,
        "class": type(model).__name__,
        "config": model.get_config(),
        "n_features": model.n_features_,
        "n_classes": model.n_classes_,
        "weights": model.get_weight_names(),
        "training": model.training_state,
        "dataset": getattr(model, "dataset_", None),
    }
    if config["class"] not in _model_classes():
        raise ValueError(f"can only save MLP or Sequential models, got {config['class']}")
    arrays = dict(zip(config["weights"], model.get_weights()))
    opt = model.optimizer.buffers
    arrays["optimizer.slots"], arrays["optimizer.step"] = opt.slots, opt.step
    buf = _io.BytesIO()
    np.savez(buf, **arrays)

    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", json.dumps(config, separators=(",", ":")))  # compact: long training records
        zf.writestr("weights.npz", buf.getvalue())
    return path


#: config.json larger than this is not one fastnn wrote (a few KB is usual, plus about 80 bytes per
#: epoch for the training record's history: 16 MiB allows some 200,000 epochs)
MAX_CONFIG_BYTES = 16 << 20
#: per-array allowance in weights.npz beyond the array data: zip entry and .npy headers
NPZ_OVERHEAD_BYTES = 4096

# what the file's top level must hold (other keys are kept and ignored)
_HEADER_FIELDS = {"class": (str, "a string"), "config": (dict, "an object"), "n_features": (int, "an integer"),
                  "n_classes": (int, "an integer"), "weights": (list, "a list")}


@contextlib.contextmanager
def _format_errors(path, what, errors=(ValueError, TypeError, KeyError, AttributeError, IndexError)):
    """Turn ``errors`` raised while interpreting untrusted file content into ModelFormatError
    naming the file and ``what`` was being read; the one place hostile content is caught."""
    try:
        yield
    except ModelFormatError:
        raise
    except errors as exc:
        raise ModelFormatError(f"{path!r} has {what}: {type(exc).__name__}: {exc}") from None


def _read_member(zf, name, limit, path):
    """The decompressed bytes of zip member ``name``, refused before inflating when
    its declared size exceeds ``limit`` (zipfile never inflates past the declared size)."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise ModelFormatError(f"{path!r} is damaged or not from fastnn: its {name} claims {info.file_size} bytes, "
                               f"more than the {limit} its config allows")
    with _format_errors(path, _DAMAGED_ZIP, _ZIP_ERRORS):
        return zf.read(info)


def _check_header(config, path):
    """The top level of config.json: format, version and the fields load needs, with their types."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFormatError(f"{path!r} is not a fastnn model (format {config.get('format') if isinstance(config, dict) else None!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{path!r} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFormatError(f"{path!r} uses model format version {version}, newer than this fastnn supports "
                               f"({FORMAT_VERSION}); upgrade fastnn (saved by fastnn {config.get('fastnn_version')})")
    for key, (kind, noun) in _HEADER_FIELDS.items():
        value = config.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelFormatError(f"{path!r} has a damaged config.json: {key!r} must be {noun}, "
                                   f"got {type(value).__name__}" + ("" if key in config else " (missing)"))
    if not all(isinstance(name, str) for name in config["weights"]):
        raise ModelFormatError(f"{path!r} has a damaged config.json: 'weights' must be a list of names")


def _expected_arrays(config, path, backend=None):
    """(unbuilt model, {name: (shape, dtype)} of every array the file may hold), derived from
    its config without allocating anything; ``backend`` overrides the saved one."""
    classes = _model_classes()
    if config["class"] not in classes:
        raise ModelFormatError(f"{path!r} holds an unknown model class {config['class']!r}; expected one of {sorted(classes)}")
    with _format_errors(path, "an invalid model config"):
        model = classes[config["class"]].from_config(dict(config["config"]))
        shapes = model.weight_shapes(config["n_features"], config["n_classes"])
    if backend is not None:  # the caller's choice, checked as such (not as the file's fault)
        check_value("backend", backend, Options(*BACKEND_NAMES))
        check_backend_dtype(backend, model.dtype)
        model.backend = backend
    names = [name for name, _ in shapes]
    if config["weights"] != names:
        raise ModelFormatError(f"{path!r} does not match its config: it lists weights {config['weights'][:8]}, "
                               f"the config's layers have {names[:8]}")
    n_params = sum(math.prod(shape) for name, shape in shapes if not name.endswith(("running_mean", "running_var")))
    expected = {name: (shape, np.dtype(model.dtype)) for name, shape in shapes}
    expected.update({name: (shape(n_params), np.dtype(model.dtype if dtype is None else dtype))
                     for name, (shape, dtype) in OPTIONAL_ARRAYS.items()})
    return model, expected


#: arrays a file may hold besides the weights: name -> (shape from the parameter count, dtype; None: the model's)
OPTIONAL_ARRAYS = {
    "optimizer.slots": (lambda n_params: (2, n_params), None),
    "optimizer.step": (lambda n_params: (1,), np.int64),
}


def _read_arrays(weights_bytes, expected, path):
    """{name: array} from weights.npz after checking every array's name, shape and dtype in
    its .npy header against ``expected`` (so nothing unexpected is ever allocated)."""
    arrays = {}
    with _format_errors(path, "damaged weights", Exception), \
            np.load(_io.BytesIO(weights_bytes), allow_pickle=False) as npz:
        names = set(npz.files)
        missing = [n for n in expected if n not in names and n not in OPTIONAL_ARRAYS]
        if missing:
            raise ModelFormatError(f"{path!r} lacks weights {missing}")
        unknown = sorted(names - set(expected))
        if unknown:
            raise ModelFormatError(f"{path!r} holds arrays {unknown[:8]} that its config does not describe")
        for name in (n for n in expected if n in names):  # weights first: their errors are the telling ones
            with npz.zip.open(name + ".npy") as member:
                read_header = _NPY_HEADER_READERS.get(np.lib.format.read_magic(member))
                if read_header is None:
                    raise ModelFormatError(f"{path!r} has damaged weights: array {name} has an unknown .npy version")
                shape, _, dtype = read_header(member)
            want_shape, want_dtype = expected[name]
            if tuple(shape) != tuple(want_shape) or dtype != want_dtype:
                raise ModelFormatError(f"{path!r} does not match its config: weight {name} must have shape "
                                       f"{tuple(want_shape)} and dtype {want_dtype}, got {tuple(shape)} {dtype}")
            arrays[name] = npz[name]
    return arrays


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_model_file(path):
    """(config dict, {name: array}) from a saved model, everything checked.

    Every array's name, shape and dtype is checked against the config before any array
    (or network) is allocated, and no member is inflated beyond what the config implies,
    so a damaged or hostile file costs no more memory than a genuine one of its config.
    Raises ModelFormatError (a ValueError) naming the file for anything that is not an
    intact fastnn model, FileNotFoundError when there is no file.
    """
    config, arrays, _ = _read(path)
    return config, arrays


#: what the zip and deflate decoders may raise on damaged bytes: BadZipFile, zlib.error,
#: EOFError, NotImplementedError (unknown method), RuntimeError (encrypted), OSError (bad offsets) ...
_ZIP_ERRORS = Exception
_DAMAGED_ZIP = "a damaged zip archive (not saved by model.save, or corrupted)"


def _read(path, backend=None):
    """read_model_file's (config, arrays) and the unbuilt model they describe."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no saved model at {path!r}")
    with open(path, "rb") as f:
        with _format_errors(path, _DAMAGED_ZIP, _ZIP_ERRORS):
            try:
                zf = zipfile.ZipFile(f)
            except zipfile.BadZipFile:
                raise ModelFormatError(f"{path!r} is not a fastnn model (not a zip archive; was it saved with model.save?)") from None
            names = set(zf.namelist())
        with zf:
            if not {"config.json", "weights.npz"} <= names:
                raise ModelFormatError(f"{path!r} is not a fastnn model: it lacks config.json and weights.npz")
            raw = _read_member(zf, "config.json", MAX_CONFIG_BYTES, path)
            try:
                config = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise ModelFormatError(f"{path!r} has a damaged config.json: {exc}") from None
            _check_header(config, path)
            model, expected = _expected_arrays(config, path, backend)
            limit = sum(math.prod(shape) * dtype.itemsize + NPZ_OVERHEAD_BYTES for shape, dtype in expected.values())
            weights_bytes = _read_member(zf, "weights.npz", limit, path)
    arrays = _read_arrays(weights_bytes, expected, path)
    return config, arrays, model


def load_model(path, backend=None):
    """Load a model written by ``save``; ``backend`` overrides the saved backend name.

    Raises ModelFormatError naming the file when it is damaged, hostile or not a model.
    """
    config, arrays, model = _read(path, backend)
    training, dataset = _records(path, config)
    with _format_errors(path, "an invalid model config"):
        model.build(config["n_features"], config["n_classes"])
    with _format_errors(path, "weights that do not match its config"):
        model.set_weights([arrays[n] for n in config["weights"]])
    opt = model.optimizer.buffers
    if "optimizer.slots" in arrays and "optimizer.step" in arrays:
        slots, step = arrays["optimizer.slots"], arrays["optimizer.step"]
        if not np.isfinite(slots).all() or step[0] < 0:
            raise ModelFormatError(f"{path!r} has a damaged optimizer state (non-finite slots or a negative step)")
        opt.slots[...], opt.step[...] = slots, step
    model.training_state, model.dataset_ = training, dataset
    return model


def _records(path, config):
    """The checked (training, dataset) records of a format-2 file (None where absent), before
    anything is built: both must agree with the rest of the config."""
    training = None
    if config.get("training") is not None:
        try:
            training = check_state(config["training"])
        except ValueError as exc:
            raise ModelFormatError(f"{path!r} has a damaged training record: {exc}") from None
        if training["epoch"] > training["epochs"]:
            raise ModelFormatError(f"{path!r} has a damaged training record: epoch {training['epoch']} of "
                                   f"{training['epochs']} planned epochs")
    dataset = _dataset_record(path, config.get("dataset"))
    if dataset is not None and (dataset["n_features"], dataset["n_classes"]) != (
            config["n_features"], config["n_classes"]):
        raise ModelFormatError(f"{path!r}: its dataset record ({dataset['n_features']} features, "
                               f"{dataset['n_classes']} classes) does not match the model "
                               f"({config['n_features']} features, {config['n_classes']} classes)")
    return training, dataset


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


def _dataset_record(path, record):
    """The saved ``dataset`` record, checked (None when the file has none: format 1)."""
    if record is None:
        return None
    ok = isinstance(record, dict) and set(record) == set(DATASET_KEYS) and all(
        isinstance(record[k], t) and not isinstance(record[k], bool) for k, t in DATASET_KEYS.items())
    if ok:
        shape = record["image_shape"]
        ok = (len(shape) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
              and record["n_features"] == shape[0] * shape[1] and record["n_classes"] >= 2)
    if not ok:
        raise ModelFormatError(f"{path!r} has an invalid dataset record {repr(record)[:200]}; expected "
                               f"{{{', '.join(DATASET_KEYS)}}} with image_shape [rows, cols]")
    return dict(record)


load = load_model
