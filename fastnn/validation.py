"""Parameter constraints and input checks, applied once at the public boundary.

Every public entry point (``MLP``, ``Sequential``, ``fit``, ``MLPClassifier``,
the command line) describes its parameters in a declarative table, scikit-learn
style, and calls :func:`check_params`. A failed check raises ``ValueError`` whose
message names the parameter, the allowed values and the value received::

    batch_size must be an integer >= 1, got 0

Array inputs go through :func:`check_x` / :func:`check_y`, which convert them
once to the layouts the kernels expect (C-contiguous float32 features, int64
labels) so that compiled code sees a single specialisation and never has to
check anything itself.
"""

import numbers

import numpy as np


class Constraint:
    """One allowed kind of value; ``describe()`` is used in error messages."""

    def is_satisfied_by(self, value):
        raise NotImplementedError

    def describe(self):
        raise NotImplementedError

    def __repr__(self):
        return f"<{self.describe()}>"


class Interval(Constraint):
    """A number of type ``kind`` ('int' or 'real') within [low, high].

    ``closed`` is 'both', 'left', 'right' or 'neither' (which bounds are allowed).
    Booleans are never accepted as numbers: ``epochs=True`` is a bug, not 1.
    """

    def __init__(self, kind, low=None, high=None, closed="both"):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def is_satisfied_by(self, value):
        if isinstance(value, (bool, np.bool_)):
            return False
        if self.kind == "int":
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real) or not np.isfinite(value):
            return False
        low_ok = self.closed in ("both", "left")
        high_ok = self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not low_ok)):
            return False
        if self.high is not None and (value > self.high or (value == self.high and not high_ok)):
            return False
        return True

    def describe(self):
        noun = "an integer" if self.kind == "int" else "a number"
        low_ok = self.closed in ("both", "left")
        high_ok = self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            left = "[" if low_ok else "("
            right = "]" if high_ok else ")"
            return f"{noun} in {left}{self.low}, {self.high}{right}"
        if self.low is not None:
            return f"{noun} {'>=' if low_ok else '>'} {self.low}"
        if self.high is not None:
            return f"{noun} {'<=' if high_ok else '<'} {self.high}"
        return noun if self.kind == "int" else "a finite number"


class Options(Constraint):
    """One of a fixed set of values (typically strings)."""

    def __init__(self, *options):
        self.options = options

    def is_satisfied_by(self, value):
        if isinstance(value, (bool, np.bool_, np.ndarray)):
            return False
        try:
            return any(type(value) is type(o) or isinstance(value, numbers.Integral) and isinstance(o, int)
                       for o in self.options if o == value)
        except Exception:
            return False

    def describe(self):
        return "one of " + ", ".join(repr(o) for o in self.options)


class Boolean(Constraint):
    def is_satisfied_by(self, value):
        return isinstance(value, (bool, np.bool_))

    def describe(self):
        return "True or False"


class NoneValue(Constraint):
    def is_satisfied_by(self, value):
        return value is None

    def describe(self):
        return "None"


class InstanceOf(Constraint):
    def __init__(self, cls, name=None):
        self.cls, self.name = cls, name or cls.__name__

    def is_satisfied_by(self, value):
        return isinstance(value, self.cls)

    def describe(self):
        return f"a {self.name} object"


class Sizes(Constraint):
    """A non-empty list/tuple of integers >= 1 (hidden-layer widths)."""

    def __init__(self, allow_empty=False):
        self.allow_empty = allow_empty

    def is_satisfied_by(self, value):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, np.ndarray)):
            return False
        if len(value) == 0 and not self.allow_empty:
            return False
        return all(Interval("int", 1).is_satisfied_by(v) for v in value)

    def describe(self):
        return "a list of integers >= 1" + ("" if self.allow_empty else " (at least one)")


class FloatDType(Constraint):
    """A training dtype: 'float32' or 'float64', as a name, a NumPy type (``np.float64``) or a dtype."""

    def is_satisfied_by(self, value):
        return dtype_of(value) is not None

    def describe(self):
        return "'float32' or 'float64' (or np.float32, np.float64)"


#: the dtypes a network can train in
FLOAT_DTYPES = ("float32", "float64")


def dtype_of(value):
    """np.dtype('float32' or 'float64') for a name, NumPy type or dtype of one of them, else None."""
    if not isinstance(value, (str, type, np.dtype)):
        return None  # np.dtype(None) would be float64
    try:
        dtype = np.dtype(value)
    except TypeError:
        return None
    return dtype if dtype.name in FLOAT_DTYPES and dtype.isnative else None


def check_backend_dtype(backend, dtype):
    """ValueError unless ``backend`` trains in ``dtype``: the Numba kernels are float32 only."""
    if backend == "numba" and dtype_of(dtype).name != "float32":
        raise ValueError(f"dtype={dtype_of(dtype).name!r} needs backend='numpy': the Numba backend's compiled "
                         f"kernels compute in float32 only, got backend='numba'; pass backend='numpy' (several "
                         f"times slower) or keep dtype='float32'")


def check_value(name, value, constraints):
    """Raise ValueError unless ``value`` satisfies at least one of ``constraints``."""
    if not isinstance(constraints, (list, tuple)):
        constraints = [constraints]
    if any(c.is_satisfied_by(value) for c in constraints):
        return value
    allowed = " or ".join(c.describe() for c in constraints)
    raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_params(params, table):
    """Check every entry of ``params`` (a dict) that ``table`` constrains.

    Parameters
    ----------
    params : dict
        Parameter name to value.
    table : dict
        Parameter name to a Constraint or list of Constraints (any one suffices).
    """
    for name, value in params.items():
        if name in table:
            check_value(name, value, table[name])


# Shared constraint tables --------------------------------------------------

ACTIVATION_NAMES = ("relu", "sigmoid", "tanh", "linear")
OPTIMIZER_NAMES = ("sgd", "adam", "rmsprop")
SCHEDULE_NAMES = ("none", "step", "cosine", "onecycle")
BACKEND_NAMES = ("numba", "numpy")

POSITIVE_INT = Interval("int", 1)
POSITIVE_REAL = Interval("real", 0, closed="neither")
NON_NEGATIVE_REAL = Interval("real", 0)
UNIT_OPEN = Interval("real", 0, 1, closed="left")  # [0, 1): dropout rates, split fractions

FIT_PARAMS = {
    "epochs": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "validation_split": UNIT_OPEN,
    "shuffle": Boolean(),
    "seed": [Interval("int", 0), NoneValue()],
    "verbose": Options(0, 1, 2),
    "initial_epoch": Interval("int", 0),
}


# Arrays --------------------------------------------------------------------

def check_x(x, name="x", n_features=None, dtype=np.float32):
    """Return ``x`` as a C-contiguous array of shape (n, d) and ``dtype`` (the model's: float32 or float64).

    Accepts any real numeric dtype (uint8 images, float64 ...), converting once.
    Read-only input (a memory map opened with mode "r") is copied, since compiled
    kernels take writable arrays. Rejects other dtypes, wrong ndim, empty arrays,
    NaN or inf, and a feature count different from ``n_features`` (the width the
    model was built for).
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise ValueError(f"{name} must be a 2-D numeric array of shape (n_samples, n_features), got {type(x).__name__}: {exc}") from None
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{name} must have a real numeric dtype (float32, float64, uint8, ...), got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n_samples, n_features), got shape {x.shape}"
            + ("; flatten images first, e.g. x.reshape(len(x), -1)" if x.ndim > 2 else "")
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one feature, got shape {x.shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} features (the model was built for {n_features}), got {x.shape[1]}")
    x = np.ascontiguousarray(x, dtype=dtype)
    if not x.flags.writeable:  # e.g. joblib.load(mmap_mode="r"): compiled kernels take writable arrays only
        x = x.copy()
    if not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name} must contain only finite values, got {bad} NaN or inf entries")
    return x


def check_y(y, name="y", n_samples=None, n_classes=None):
    """Return labels ``y`` as a contiguous int64 array of shape (n,), values in [0, n_classes).

    Float labels are accepted only when they are whole numbers (e.g. 3.0).
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D class ids of shape (n_samples,), got shape {y.shape}")
    if n_samples is not None and y.shape[0] != n_samples:
        raise ValueError(f"{name} must have one label per sample ({n_samples}), got {y.shape[0]}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            bad = float(y[~np.isfinite(y) | (y != np.round(y))][0])
            raise ValueError(f"{name} must hold integer class ids, got non-integer values such as {bad!r}")
    elif y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    y = np.ascontiguousarray(y, dtype=np.int64)
    if not y.flags.writeable:
        y = y.copy()
    if y.size:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or (n_classes is not None and hi >= n_classes):
            allowed = f"[0, {n_classes - 1}]" if n_classes is not None else ">= 0"
            raise ValueError(f"{name} labels must be in {allowed}, got values from {lo} to {hi}")
    return y


class Configurable:
    """Base of objects rebuilt from their constructor arguments (layers, schedules).

    ``get_config()`` returns those arguments as a JSON-serialisable dict; ``repr`` and
    ``==`` are derived from it.
    """

    def get_config(self):
        """Constructor arguments as a JSON-serialisable dict."""
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = object.__hash__


def check_sample_weight(sample_weight, name, n_samples, dtype=np.float32):
    """Return per-sample weights as a contiguous array of shape (n_samples,) and ``dtype``, or None.

    Weights must be finite and >= 0 (a weight scales its sample's loss; 0 leaves it out).
    """
    if sample_weight is None:
        return None
    try:
        w = np.asarray(sample_weight)
    except Exception as exc:
        raise ValueError(f"{name} must be a 1-D array of {n_samples} non-negative numbers, got "
                         f"{type(sample_weight).__name__}: {exc}") from None
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.dtype == np.bool_ or not (np.issubdtype(w.dtype, np.integer) or np.issubdtype(w.dtype, np.floating)):
        raise ValueError(f"{name} must hold real numbers, got dtype {w.dtype}")
    if w.shape != (n_samples,):
        raise ValueError(f"{name} must have shape ({n_samples},), one weight per sample, got shape {w.shape}")
    w = np.ascontiguousarray(w, dtype=dtype)
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        raise ValueError(f"{name} must be finite and >= 0, got {int(bad.sum())} other values such as "
                         f"{float(w[bad][0])!r}")
    return w


def combine_weights(sample_weight, class_weight, y, n_classes, dtype=np.float32):
    """Training weights: ``sample_weight`` times ``class_weight[y]`` ((n,) of ``dtype``), or None when both are None.

    ``class_weight`` maps class ids in [0, n_classes) to weights >= 0; classes it leaves
    out weigh 1 (as in Keras, whose tf.keras 2 versions multiply the two as here).
    """
    w = check_sample_weight(sample_weight, "sample_weight", len(y), dtype)
    if class_weight is None:
        return w
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be a dict {{class id: weight}} or None, got {type(class_weight).__name__}")
    table = np.ones(n_classes, dtype=dtype)
    for key, value in class_weight.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, numbers.Integral) or not 0 <= key < n_classes:
            raise ValueError(f"class_weight keys must be class ids in [0, {n_classes - 1}], got {key!r}")
        check_value(f"class_weight[{key}]", value, Interval("real", 0))
        table[int(key)] = value
    per_class = table[y]
    return per_class if w is None else w * per_class
