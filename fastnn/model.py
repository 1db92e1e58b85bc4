"""Sequential and MLP models: build, fit, evaluate, predict, weights, summary, save.

A model is a list of layer declarations (``fastnn.layers``) laid out as one
network table with flat parameter buffers (``backends.spec``), an optimizer that
owns its state buffers, and a backend that runs the arithmetic. ``fit`` drives
``backend.train_steps`` in chunks of optimizer steps over a seeded permutation
of row indices (the data set is never copied), so the progress bar can show
live loss and accuracy while the compiled loop does the work.

Divergence (``fastnn.divergence``): the backend stops before applying a step whose
loss is not finite, and ``fit`` checks each chunk for an exploding loss. ``fit`` then
stops training and keeps the last good weights, those after one update fewer than
the first bad step (it restores the chunk-start snapshot and deterministically
replays the chunk's steps up to there), records that epoch with ``loss = nan``, sets
``model.stop_reason`` / ``History.stop_reason`` and emits a ``DivergenceWarning``
naming the learning rate to lower, at the caller's line (no exception: the partly
trained model stays usable).

Resume (``fastnn.training_state``): after each finished epoch ``training_state``
records where the run stands; a model saved then and fit again with
``initial_epoch`` continues with the same bits as an uninterrupted run.
"""

import contextlib
import functools
import math
import os
import sys
import time

import numpy as np

from . import layers as L
from . import prepared
from .backends import DEFAULT_BACKEND, get_backend
from .backends import spec as S
from .backends.augment import image_shape, make_aug
from .backends.jit_progress import reporting
from .backends.threads import check_threads, limit_threads
from .callbacks import CallbackList, History, ProgressBar, Callback
from .divergence import (EXPLOSION_FACTOR, DivergenceWarning, explosion_threshold, first_exploded_step, sample_mean,
                         warn_outside)
from .io import model_class, save_model
from .training_state import make_state, past_history, resume_mismatches, shuffle_stream
from .optimizers import Optimizer, Schedule, get_optimizer, optimizer_from_config, optimizer_to_config
from .validation import (
    ACTIVATION_NAMES, BACKEND_NAMES, FIT_PARAMS, OPTIMIZER_NAMES, SCHEDULE_NAMES, Boolean, FloatDType, InstanceOf,
    Interval, NoneValue, Options, POSITIVE_INT, Sizes, UNIT_OPEN, check_params, check_sample_weight, check_value,
    check_backend_dtype, check_x, check_y, combine_weights, dtype_of,
)

#: samples per train_steps call: small enough for a live progress bar, large
#: enough that Python overhead per call is negligible
CHUNK_SAMPLES = 8192
EVAL_BATCH = 1024


AUGMENT_KEYS = ("shift", "rotation", "scale", "elastic_alpha", "elastic_sigma")
#: default test-time augmentation: half the training recipes' shifts, rotations and zooms, no
#: elastic field (best of 7 variants on KMNIST validation; see benchmarks/sweeps/best.toml)
TTA_AUGMENT = {"shift": 1.0, "rotation": 5.0, "scale": 0.05}


def augment_vector(augment):
    """The backends' float64 (8,) augmentation vector for an ``augment`` dict (None: off)."""
    if not augment:
        return np.zeros(8, dtype=np.float64)
    if not isinstance(augment, dict):
        raise ValueError(f"augment must be a dict with keys from {AUGMENT_KEYS + ('image_shape',)} or None, "
                         f"got {augment!r}")
    unknown = set(augment) - set(AUGMENT_KEYS) - {"image_shape"}
    if unknown:
        raise ValueError(f"augment has unknown keys {sorted(unknown)}; allowed: {AUGMENT_KEYS + ('image_shape',)}")
    h, w = augment.get("image_shape") or (0, 0)
    settings = {k: check_value(f"augment[{k!r}]", augment.get(k, 0.0), Interval("real", 0)) for k in AUGMENT_KEYS}
    return make_aug(**settings, height=h, width=w)


def _image_shape(aug, n_features, name):
    """(height, width) of the rows an augmentation vector is applied to, or a ValueError for ``name``."""
    try:
        return image_shape(aug, n_features)
    except ValueError:
        raise ValueError(f"{name} needs image rows, but {n_features} features are not a square image; add "
                         f"'image_shape': (height, width) to {name}, or leave it off") from None


def physical_memory():
    """Bytes of physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def network_bytes(plan, itemsize=4):
    """Bytes a built network of ``plan`` holds: parameters, gradients and two optimizer
    slots (4 x ``itemsize`` bytes per parameter: 4 for float32), plus batch-norm state."""
    n_params = n_state = 0
    for row in plan.rows:  # Python ints: no overflow, however absurd the widths
        if row[0] == "dense":
            n_params += row[1] * row[2] + row[2]
        elif row[0] == "batchnorm":
            n_params, n_state = n_params + 2 * row[1], n_state + 2 * row[1]
    return itemsize * (4 * n_params + n_state)


def workspace_bytes(plan, batch_size, itemsize=4):
    """Approximate bytes of a training step's per-batch buffers: activations and their
    gradients for every layer boundary, and the first layer's non-zero lists."""
    n_in = plan.rows[0][1]
    return itemsize * batch_size * (2 * (n_in + sum(plan.widths)) + 2 * n_in)


def _size(n_bytes):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n_bytes < 1024 or unit == "PiB":
            return f"{n_bytes:.3g} {unit}"
        n_bytes /= 1024


def check_memory(n_bytes, what, fix):
    """ValueError before allocating when ``what`` needs more than the machine's physical memory."""
    total = physical_memory()
    if total is not None and n_bytes > total:
        raise ValueError(f"{what} needs about {_size(n_bytes)} of memory, more than this machine's "
                         f"{_size(total)}; {fix}")


def _raw_pixel_peak(x):
    """The max of ``x`` when it looks like unscaled 8-bit images (whole numbers in [0, 255],
    max > 16), else None; ``_warn_raw_pixels`` explains."""
    peak = float(x.max()) if x.size else 0.0
    if not 16.0 < peak <= 255.0 or float(x.min()) < 0.0:
        return None
    sample = x[: 256]
    return peak if np.array_equal(sample, np.round(sample)) else None


def _warn_raw_pixels(peak):
    """Warn when x looks like unscaled 8-bit images (``peak``: ``_raw_pixel_peak(x)``, None: it does not).

    A max of 16 or less is more likely small counts or codes than 8-bit pixels (whose ink reaches
    well above that), and such features get no warning.

    Such input trains far worse than pixels / 255 (MNIST, ``MLP([128, 64])`` with its defaults:
    84.4% against 95.3% test accuracy after 1 epoch, 94.1% against 97.8% after 5), and nothing
    else would say so.
    """
    if peak is not None:
        warn_outside(f"x looks like raw 0-255 pixel values (whole numbers, max {peak:g}); the network trains "
                     "much worse on them than on values in [0, 1]. Scale the input first, e.g. "
                     "model.fit(x / 255.0, y), and scale the same way for evaluate and predict "
                     "(fastnn.load_dataset already returns [0, 1]).", UserWarning)


def _on_model_threads(method):
    """Run ``method`` with the model's ``threads`` in Numba and every BLAS copy (``backends.threads``),
    and, unless called with ``verbose=0``, say on stderr what is compiling whenever a compile
    unit takes over a second (a cold cache; ``backends.jit_progress``)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        progress = reporting(_stderr_line) if kwargs.get("verbose", 1) else contextlib.nullcontext()
        with limit_threads(self.threads), progress:
            return method(self, *args, **kwargs)
    return run


def _stderr_line(line):
    print(f"fastnn: {line}", file=sys.stderr, flush=True)


class NotFittedError(ValueError, AttributeError):
    """Raised when a model is used before ``build`` or ``fit``."""


COMMON_PARAMS = {
    "optimizer": [Options(*OPTIMIZER_NAMES), InstanceOf(Optimizer, "fastnn.optimizers.Optimizer")],
    "lr": [Interval("real", 0, closed="neither"), NoneValue()],
    "weight_decay": Interval("real", 0),
    "momentum": Interval("real", 0, 1, closed="left"),
    "schedule": [Options(*SCHEDULE_NAMES), NoneValue(), InstanceOf(Schedule, "fastnn.optimizers.Schedule")],
    "label_smoothing": UNIT_OPEN,
    "backend": Options(*BACKEND_NAMES),
    "seed": Interval("int", 0),
    "dtype": FloatDType(),
}


@model_class
class Sequential:
    """A stack of layers trained with softmax cross-entropy.

    Parameters
    ----------
    layers : list of Layer
        E.g. ``[Dense(256, "relu"), Dropout(0.5), Dense(128), ReLU(), Dense(10)]``.
        The last layer's width is the number of classes.
    optimizer : {'adam', 'sgd', 'rmsprop'} or Optimizer
    lr, weight_decay, momentum, schedule
        Configure an optimizer given by name (``lr=None``: its default; ``momentum``
        is used by 'sgd' and 'rmsprop'). Ignored when an Optimizer object is given.
    label_smoothing : float in [0, 1)
    augment : dict or None
        On-the-fly training augmentation of image rows, e.g. ``{"shift": 2, "rotation": 10,
        "scale": 0.1, "elastic_alpha": 20, "elastic_sigma": 4}`` (pixels, degrees, zoom
        fraction, elastic displacement scale and smoothing; missing keys are 0 = off;
        ``"image_shape": (h, w)`` for non-square images). Seeded, applied per batch in
        the backend's compiled loop; evaluation and prediction see the original images.
    backend : {'numba', 'numpy'}
    seed : int >= 0
        Seeds weight initialisation, shuffling and dropout (``fit(seed=...)`` overrides
        the last two).
    threads : int in [1, NUMBA_NUM_THREADS] or None
        Threads for Numba and every BLAS copy during ``fit``, ``evaluate`` and ``predict*``
        (each count restored afterwards); None leaves them as they are. A setting of this
        machine, not of the model: not saved. The attribute may be changed at any time.
    dtype : {'float32', 'float64'} (or np.float32, np.float64)
        What the network computes and stores in: weights, gradients, optimizer state,
        inputs (converted once) and the outputs of ``predict*``. float32 (the default) runs
        on either backend; float64 only on ``backend='numpy'`` (the compiled kernels are
        float32), several times slower, for numerics studies and exact comparisons with
        float64 references. Saved with the model.
    """

    def __init__(self, layers=None, optimizer="adam", lr=None, weight_decay=0.0, momentum=0.0, schedule=None,
                 label_smoothing=0.0, augment=None, backend=DEFAULT_BACKEND, seed=0, threads=None, dtype="float32"):
        self._set_common(optimizer, lr, weight_decay, momentum, schedule, label_smoothing, backend, seed, augment,
                         threads, dtype)
        layers = list(layers or [])
        for i, layer in enumerate(layers):
            if not isinstance(layer, L.Layer):
                raise ValueError(f"layers[{i}] must be a fastnn layer (Dense, ReLU, Sigmoid, Tanh, Dropout, BatchNorm), got {layer!r}")
        self.layers = layers

    def _set_common(self, optimizer, lr, weight_decay, momentum, schedule, label_smoothing, backend, seed,
                    augment=None, threads=None, dtype="float32"):
        check_params(dict(optimizer=optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum, schedule=schedule,
                          label_smoothing=label_smoothing, backend=backend, seed=seed, dtype=dtype), COMMON_PARAMS)
        self.dtype = dtype_of(dtype).name
        check_backend_dtype(backend, self.dtype)
        extra = {"momentum": momentum} if optimizer in ("sgd", "rmsprop") else {}
        self.optimizer = get_optimizer(optimizer, lr=lr, weight_decay=weight_decay, schedule=schedule, **extra)
        self.label_smoothing, self.backend, self.seed = float(label_smoothing), backend, int(seed)
        self._aug_vector = augment_vector(augment)
        self.augment = dict(augment) if augment else None
        self.threads = None if threads is None else check_threads(threads)
        self.net = self.plan = None
        self.n_features_ = self.n_classes_ = None
        self.stop_training, self.stop_reason, self.history, self.diverged = False, None, None, False
        self.training_state = None  # fastnn.training_state record once an epoch has finished
        # the training data set's record, saved with the model (fastnn.io; fastnn-train sets it)
        self.dataset_ = None

    # building ----------------------------------------------------------------

    @property
    def built(self):
        return self.net is not None

    def _layers_for(self, n_classes):
        return self.layers

    def _plan(self, n_features, n_classes):
        """(layers, Plan) for inputs of width ``n_features``, checked; allocates nothing."""
        check_value("n_features", n_features, POSITIVE_INT)
        check_value("n_classes", n_classes, [Interval("int", 2), NoneValue()])
        layers = self._layers_for(n_classes)
        if not layers:
            raise ValueError("a Sequential model needs at least one layer, e.g. Sequential([Dense(10)])")
        plan = L.Plan(layers, int(n_features))
        if n_classes is not None and plan.n_out != n_classes:
            raise ValueError(f"n_classes must match the last layer's width ({plan.n_out}), got {n_classes}")
        if plan.n_out < 2:
            raise ValueError(f"the last layer must have at least 2 outputs (one per class), got {plan.n_out}")
        return layers, plan

    def weight_shapes(self, n_features, n_classes=None):
        """[(dotted name, shape)] of the weights ``build(n_features, n_classes)`` would create,
        in get_weights order, without allocating them (``fastnn.io`` checks files against it)."""
        return L.weight_shapes(*self._plan(n_features, n_classes))

    def build(self, n_features, n_classes=None):
        """Create (and initialise) the weights for inputs of width ``n_features``.

        ``n_classes`` is checked against the last layer's width (Sequential) or
        sets the output layer's width (MLP). Rebuilding re-initialises everything.
        A network too large for this machine's memory is refused before allocating.
        """
        layers, plan = self._plan(n_features, n_classes)
        check_memory(network_bytes(plan, np.dtype(self.dtype).itemsize),
                     f"a network of layer widths {plan.widths} on {n_features} inputs",
                     "use narrower or fewer layers")
        self.plan, self.net = plan, S.allocate(plan.rows, self.dtype)
        self.training_state = None
        L.initialize(self.net, self.seed)
        self.optimizer.build(len(self.net.params), self.dtype)
        self._entries = L.param_entries(layers, plan, self.net)
        self.n_features_, self.n_classes_ = int(n_features), int(plan.n_out)
        return self

    def _require_built(self):
        if not self.built:
            raise NotFittedError(f"this {type(self).__name__} has no weights yet; call fit(x, y) or build(n_features, n_classes) first")

    # weights -----------------------------------------------------------------

    def get_weight_names(self):
        """Dotted names (``layers.0.W`` ...) in get_weights order."""
        self._require_built()
        return [name for name, _ in self._entries]

    def get_weights(self):
        """Copies of all weights: [W0, b0, W1, b1, ...], W of shape (n_in, n_out);
        a batch-norm layer contributes gamma, beta, running_mean, running_var."""
        self._require_built()
        return [view.copy() for _, view in self._entries]

    def set_weights(self, weights):
        """Set every weight from a list in ``get_weights`` order (shapes must match)."""
        self._require_built()
        weights = list(weights)
        if len(weights) != len(self._entries):
            raise ValueError(f"weights must be a list of {len(self._entries)} arrays ({', '.join(self.get_weight_names())}), got {len(weights)}")
        arrays = []
        for (name, view), w in zip(self._entries, weights):
            w = np.asarray(w)
            if w.shape != view.shape:
                raise ValueError(f"weight {name} must have shape {view.shape}, got {w.shape}")
            if not np.issubdtype(w.dtype, np.number) or not np.isfinite(w).all():
                raise ValueError(f"weight {name} must be finite numbers, got dtype {w.dtype} with non-finite or non-numeric values")
            arrays.append(w)
        for (_, view), w in zip(self._entries, arrays):
            view[...] = w
        return self

    def __getstate__(self):
        # The weight views alias the flat buffers, which pickle does not preserve: rebuilt on load.
        state = dict(self.__dict__)
        state.pop("_entries", None)
        return state

    def __setstate__(self, state):
        """Unpickled buffers become fresh, aligned, writable copies: a copy made with
        ``joblib.load(mmap_mode="r")`` holds read-only memory maps, which compiled code
        must not be given."""
        state.setdefault("threads", None)  # pickled before models had them
        state.setdefault("dtype", "float32")
        self.__dict__.update(state)
        if self.net is not None:
            self.net = S.NetBuffers(*(_writable_copy(a) for a in self.net))
            opt = self.optimizer.buffers
            self.optimizer.buffers = opt._replace(hparams=_writable_copy(opt.hparams), slots=_writable_copy(opt.slots),
                                                  step=_writable_copy(opt.step))
            self._entries = L.param_entries(self._layers_for(self.n_classes_), self.plan, self.net)

    def _snapshot(self):
        return self.net.params.copy(), self.net.state.copy()

    def _restore(self, snap):
        self.net.params[...] = snap[0]
        self.net.state[...] = snap[1]

    # training ----------------------------------------------------------------

    @_on_model_threads
    @np.errstate(over="ignore", invalid="ignore")  # divergence is reported once, by fit itself
    def fit(self, x, y, epochs=10, batch_size=128, validation_split=0.0, validation_data=None, callbacks=None,
            shuffle=True, seed=None, verbose=1, initial_epoch=0, sample_weight=None, class_weight=None):
        """Train on ``x`` (n, d) and integer labels ``y`` (n,); returns a History.

        Parameters
        ----------
        x : array of shape (n, d), real numeric (converted once to the model's dtype)
        y : array of shape (n,), integer class ids in [0, n_classes)
        epochs, batch_size : int >= 1
            ``epochs`` is the index of the last epoch (as in Keras), not a count from
            ``initial_epoch``.
        validation_split : float in [0, 1)
            Hold out this fraction of the *last* rows (before shuffling), as Keras does.
        validation_data : (x_val, y_val), (x_val, y_val, val_sample_weight) or None
            Overrides ``validation_split``. The weights weigh ``val_loss`` as
            ``sample_weight`` weighs ``loss``.
        callbacks : list of Callback
            Batch-level hooks (``on_train_batch_end`` ...) make the compiled loop run
            one step per call (see ``fastnn.callbacks``).
        shuffle : bool
            Draw a fresh permutation of the training rows every epoch.
        seed : int or None
            Seeds shuffling and dropout; None uses the seed of the run being resumed
            (``initial_epoch > 0`` on a model saved during training), else the model's ``seed``.
        verbose : {0, 1, 2}
            0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        initial_epoch : int >= 0
            Epoch at which to start (0-based), to resume a run: a model saved after k
            epochs (``save``, ``ModelCheckpoint``, ``BackupAndRestore``), loaded and fit
            with the same data, ``epochs`` and ``batch_size`` and ``initial_epoch=k``, ends
            with the same bits as the uninterrupted run: the shuffle order, schedule
            position, optimizer state and step, and dropout/augmentation streams continue.
        sample_weight : array of shape (n,), finite, >= 0, or None
            Scales each sample's loss, as in Keras: a batch's loss (and its gradient) is
            sum(w_i * loss_i) / batch rows, not divided by the sum of the weights, so the
            weights' scale acts like the learning rate's. The logged ``loss`` is the mean
            of w_i * loss_i over the epoch; ``accuracy`` stays unweighted (Keras'
            ``metrics``). With ``validation_split`` the held-out rows keep their weights.
        class_weight : dict {class id: weight >= 0} or None
            Multiplies the weight of every training sample of that class (classes not
            listed: 1), combined with ``sample_weight`` by multiplication. Not applied
            to validation, as in Keras.
        """
        check_params(dict(epochs=epochs, batch_size=batch_size, validation_split=validation_split, shuffle=shuffle,
                          seed=seed, verbose=verbose, initial_epoch=initial_epoch), FIT_PARAMS)
        check_backend_dtype(self.backend, self.dtype)  # the attribute may have been changed since
        if initial_epoch > epochs:
            raise ValueError(f"initial_epoch must be at most epochs ({epochs}), got {initial_epoch}; epochs is the "
                             f"index of the last epoch, so to train 2 more epochs after {initial_epoch} pass "
                             f"epochs={initial_epoch + 2}")
        callbacks = list(callbacks or [])
        for i, cb in enumerate(callbacks):
            check_value(f"callbacks[{i}]", cb, InstanceOf(Callback, "fastnn.callbacks.Callback"))
        # checked once per data set, not once per call (fastnn.prepared: the rule for reuse)
        data = prepared.prepare(x, "x", self.n_features_, check_x, _raw_pixel_peak, self.dtype)
        x = data.x
        y = check_y(y, "y", len(x), self.n_classes_)
        sample_weight = check_sample_weight(sample_weight, "sample_weight", len(x), self.dtype)  # before any building
        w_val = None
        _warn_raw_pixels(data.raw_pixels)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                got = type(validation_data).__name__
                got += f" of length {len(validation_data)}" if isinstance(validation_data, (tuple, list)) else ""
                raise ValueError(f"validation_data must be a tuple (x_val, y_val) or (x_val, y_val, "
                                 f"sample_weight_val), got {got}")
            x_val = prepared.prepare(validation_data[0], "validation_data x", x.shape[1], check_x, lambda _: None,
                                     self.dtype).x
            y_val = check_y(validation_data[1], "validation_data y", len(x_val), self.n_classes_)
            if len(validation_data) == 3:
                w_val = check_sample_weight(validation_data[2], "validation_data sample_weight", len(x_val), self.dtype)
            n_train = len(x)
        elif validation_split > 0:
            n_val = int(len(x) * validation_split)
            if n_val < 1 or n_val >= len(x):
                raise ValueError(f"validation_split must leave at least one sample on each side; with {len(x)} samples, got {validation_split}")
            n_train = len(x) - n_val
            x_val, y_val = x[n_train:], y[n_train:]
            w_val = None if sample_weight is None else sample_weight[n_train:]
        else:
            n_train, x_val, y_val = len(x), None, None
        batch_size = min(batch_size, n_train)  # one batch of everything; never a workspace for absent rows
        if not self.built:
            labels_max = int(y.max()) if y_val is None else max(int(y.max()), int(y_val.max()))
            self.build(x.shape[1], self._infer_classes(labels_max))
            y = check_y(y, "y", len(x), self.n_classes_)
            if y_val is not None:
                y_val = check_y(y_val, "validation y", len(y_val), self.n_classes_)
        # None without weights: train_steps then takes its unweighted (default) path
        weights = combine_weights(sample_weight, class_weight, y, self.n_classes_, self.dtype)
        weighted = {} if weights is None else {"sample_weight": weights}

        itemsize = np.dtype(self.dtype).itemsize
        check_memory(network_bytes(self.plan, itemsize) + workspace_bytes(self.plan, batch_size, itemsize),
                     f"training with batch_size={batch_size} (layer widths {self.plan.widths})",
                     "use a smaller batch_size or narrower layers")
        history = History()
        cbs = [history] + callbacks + ([ProgressBar(verbose)] if verbose else [])
        cb = CallbackList(cbs, self)
        batch_hooks = cb.batch_hooks
        metrics = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if x_val is not None else [])
        self.stop_training, self.stop_reason, self.diverged = False, None, False
        backend = get_backend(self.backend)
        net, opt = self.net, self.optimizer.buffers
        # augmented batches are listed from the augmented copies, never from x itself
        inputs = data.inputs(backend) if self._aug()[0] == 0 else None

        steps_per_epoch = math.ceil(n_train / batch_size)
        total_steps = epochs * steps_per_epoch
        # one step per compiled call when a callback is called around every step
        chunk = 1 if batch_hooks else max(1, math.ceil(CHUNK_SAMPLES / batch_size))
        sizes = np.full(steps_per_epoch, batch_size, dtype=np.float64)
        sizes[-1] = n_train - (steps_per_epoch - 1) * batch_size
        step_loss = np.zeros(steps_per_epoch, dtype=np.float64)
        step_correct = np.zeros(steps_per_epoch, dtype=np.int64)
        order = np.arange(n_train, dtype=np.int64)
        y_train = y  # rows >= n_train are never indexed by `order`
        explode_at = explosion_threshold(self.n_classes_)

        self._restored_epoch = None  # BackupAndRestore sets it in on_train_begin
        cb.on_train_begin({"metrics": metrics, "epochs": epochs, "samples": n_train, "steps_per_epoch": steps_per_epoch,
                           "initial_epoch": initial_epoch})
        if self._restored_epoch is not None:
            initial_epoch = min(self._restored_epoch, epochs)
        saved = self.training_state
        if seed is None:
            seed = saved["seed"] if initial_epoch > 0 and saved is not None else self.seed
        differences = resume_mismatches(saved, initial_epoch, seed, shuffle, batch_size, n_train)
        if saved is not None and 0 < initial_epoch < epochs and saved["epochs"] != epochs:
            first = initial_epoch * steps_per_epoch
            if not np.array_equal(self.optimizer.learning_rates(first, steps_per_epoch, total_steps, steps_per_epoch),
                                  self.optimizer.learning_rates(first, steps_per_epoch, saved["epochs"] * steps_per_epoch,
                                                                steps_per_epoch)):
                schedule = type(self.optimizer.schedule).__name__
                differences.append(f"epochs={epochs} (the saved run planned {saved['epochs']}; its {schedule} has "
                                   f"no length of its own and spans each fit's epochs, so this continues a "
                                   f"{epochs}-epoch schedule; to split a run into fit calls exactly, give the "
                                   f"schedule its length, e.g. {schedule}(total_epochs={epochs}))")
        if differences:
            warn_outside(f"resuming at epoch {initial_epoch} with {', '.join(differences)}: training continues, but "
                         f"not as the saved run would have", UserWarning)
        rng, dropout_seed = shuffle_stream(seed, n_train, shuffle, initial_epoch)
        # the metrics of every finished epoch of the run, recorded for callbacks of a resumed fit
        run_history = past_history(saved, initial_epoch, metrics) if initial_epoch > 0 else {k: [] for k in metrics}
        prev = None  # the previous chunk, to replay up to the last good step if the next diverges at once
        for epoch in range(initial_epoch, epochs):
            cb.on_epoch_begin(epoch, {})
            if shuffle:
                order = rng.permutation(n_train).astype(np.int64)
            t0 = time.perf_counter()
            done = 0
            diverged = False
            while done < steps_per_epoch:
                k = min(chunk, steps_per_epoch - done)
                if batch_hooks:
                    cb.on_train_batch_begin(done, {})
                lrs = self.optimizer.learning_rates(epoch * steps_per_epoch + done, k, total_steps, steps_per_epoch)
                chunk_rec = (self._full_snapshot(), order, done * batch_size, lrs)
                applied = int(backend.train_steps(x, y_train, order, done * batch_size, k, batch_size, net, opt, lrs,
                                                  dropout_seed, self.label_smoothing, self._aug(),
                                                  step_loss[done : done + k], step_correct[done : done + k],
                                                  inputs=inputs, **weighted))
                exploded = first_exploded_step(step_loss[done : done + applied], sizes[done : done + applied],
                                               explode_at)
                bad = exploded if exploded is not None else applied
                last_lr = float(lrs[max(bad - 1, 0)])
                if bad < k:
                    diverged = True
                    # The weights after `bad` updates gave a non-finite or exploded loss: go back to
                    # those after one update fewer, the last that gave a sane loss.
                    if bad > 0:
                        self._replay(backend, x, y_train, batch_size, dropout_seed, chunk_rec, bad - 1, weighted)
                    elif prev is not None:
                        self._replay(backend, x, y_train, batch_size, dropout_seed, prev, len(prev[3]) - 1, weighted)
                    self._stop_diverged(epoch, done + bad, lrs[bad], step_loss[done + bad], explode_at)
                    done += bad
                    break
                done += applied
                prev = chunk_rec
                seen = sizes[:done].sum()
                running = {"loss": sample_mean(step_loss[:done], sizes[:done]),
                           "accuracy": float(step_correct[:done].sum() / seen)}
                if batch_hooks:
                    cb.on_train_batch_end(done - 1, dict(running))
                cb.on_chunk_end(epoch, {**running, "samples": int(seen)})
                if self.stop_training:  # set by a batch or chunk hook: end the epoch here (Keras)
                    break
            seconds = time.perf_counter() - t0
            seen = sizes[:done].sum()
            logs = {
                "loss": float("nan") if diverged else sample_mean(step_loss[:done], sizes[:done]),
                "accuracy": float(step_correct[:done].sum() / seen) if seen else float("nan"),
            }
            if x_val is not None:
                logs["val_loss"], logs["val_accuracy"] = (
                    (float("nan"), float("nan")) if diverged else self.evaluate(x_val, y_val, sample_weight=w_val)
                )
            logs.update(seconds=seconds, samples_per_second=float(seen / seconds) if seconds > 0 else float("nan"),
                        lr=last_lr)
            if not diverged and done == steps_per_epoch:  # what a checkpoint saved now needs to resume at the next epoch
                for key in metrics:
                    run_history[key].append(logs[key])
                self.training_state = make_state(epoch + 1, seed, shuffle, batch_size, n_train, epochs, run_history)
            cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cb.on_train_end({})
        history.stop_reason = self.stop_reason
        self.history = history
        return history

    def _aug(self):
        if self._aug_vector[0] != 0:
            _image_shape(self._aug_vector, self.n_features_, "augment")  # rows that are not images
        return self._aug_vector

    def _infer_classes(self, labels_max):
        return None  # a Sequential's classes are its last layer's width

    def _full_snapshot(self):
        net, opt = self.net, self.optimizer.buffers
        return net.params.copy(), net.state.copy(), opt.slots.copy(), opt.step.copy()

    def _replay(self, backend, x, y, batch_size, seed, record, n_steps, weighted):
        """Restore a chunk-start snapshot and redo its first ``n_steps`` steps (deterministic)."""
        (params, state, slots, step), order, start, lrs = record
        net, opt = self.net, self.optimizer.buffers
        net.params[...], net.state[...], opt.slots[...], opt.step[...] = params, state, slots, step
        if n_steps > 0:
            scratch_loss, scratch_correct = np.zeros(n_steps), np.zeros(n_steps, dtype=np.int64)
            backend.train_steps(x, y, order, start, n_steps, batch_size, net, opt, lrs[:n_steps], seed,
                                self.label_smoothing, self._aug(), scratch_loss, scratch_correct, **weighted)

    #: how the divergence advice names the learning rate; fastnn-train sets "--lr {}"
    lr_flag = "lr={}"

    def _stop_diverged(self, epoch, step, lr, loss, threshold):
        self.stop_training = self.diverged = True
        what = "non-finite loss" if not math.isfinite(loss) else \
            f"exploding loss ({loss:.3g}, over {threshold:.3g} = {EXPLOSION_FACTOR:g} x ln(classes))"
        self.stop_reason = (
            f"{what} at epoch {epoch + 1}, step {step + 1} (learning rate {lr:.3g}); training stopped "
            f"and the last weights that gave a sane loss kept. Lower the learning rate "
            f"(e.g. {self.lr_flag.format(f'{self.optimizer.lr / 10:.3g}')}) or scale the inputs to about [0, 1]."
        )
        warn_outside(self.stop_reason, DivergenceWarning)

    # inference ---------------------------------------------------------------

    def _inference_input(self, x, batch_size):
        """x checked and converted (the model's dtype, C order) for ``_forward``."""
        self._require_built()
        check_value("batch_size", batch_size, POSITIVE_INT)
        check_backend_dtype(self.backend, self.dtype)
        return check_x(x, "x", self.n_features_, self.dtype)

    def _forward(self, x, batch_size):
        batch_size = max(1, min(batch_size, len(x)))  # workspaces are sized by the batch: none for absent rows
        out = np.empty((len(x), self.n_classes_), dtype=self.dtype)
        get_backend(self.backend).forward(x, self.net, out, batch_size)
        return out

    def _logits(self, x, batch_size):
        return self._forward(self._inference_input(x, batch_size), batch_size)

    def _probabilities(self, logits):
        logp = np.empty_like(logits)
        get_backend(self.backend).log_softmax(logits, logp)
        return np.exp(logp)

    @_on_model_threads
    def predict_proba(self, x, batch_size=EVAL_BATCH, tta=0, tta_augment=None, seed=0):
        """Class probabilities (n, n_classes) in the model's dtype (inference mode: no dropout,
        batch norm with running statistics).

        ``tta`` (int >= 0): test-time augmentation. Also classify ``tta`` randomly augmented
        copies of every image and average the probabilities of all ``tta + 1`` views.
        ``tta_augment`` is a dict like ``augment`` (default ``TTA_AUGMENT``: shifts up to
        1 px, rotations up to 5 degrees, zooms up to 5%); ``seed`` makes the views
        reproducible. Rows must be images (square, or ``image_shape`` in ``tta_augment``).
        """
        check_value("tta", tta, Interval("int", 0))
        x = self._inference_input(x, batch_size)
        probs = self._probabilities(self._forward(x, batch_size))
        if tta == 0:
            return probs
        check_value("seed", seed, Interval("int", 0))
        aug = augment_vector(TTA_AUGMENT if tta_augment is None else tta_augment)
        if aug[0] == 0:
            raise ValueError(f"tta_augment must turn on at least one transform, got {tta_augment!r}")
        height, width = _image_shape(aug, self.n_features_, "tta_augment")
        views, rows = np.empty_like(x), np.arange(len(x), dtype=np.int64)
        total = probs.astype(np.float64)
        for view in range(tta):  # views of checked rows are finite float32 already: no re-check
            get_backend(self.backend).augment_rows(x, rows, height, width, aug, seed, view, views)
            total += self._probabilities(self._forward(views, batch_size))
        return (total / (tta + 1)).astype(self.dtype)

    @_on_model_threads
    def predict_log_proba(self, x, batch_size=EVAL_BATCH):
        """Log class probabilities (n, n_classes), the model's dtype: the log-softmax of the logits,
        accurate where ``log(predict_proba(x))`` would underflow to -inf."""
        logits = self._logits(x, batch_size)
        logp = np.empty_like(logits)
        get_backend(self.backend).log_softmax(logits, logp)
        return logp

    @_on_model_threads
    def predict(self, x, batch_size=EVAL_BATCH, tta=0, tta_augment=None, seed=0):
        """Predicted class ids, int64 (n,). ``tta``: see ``predict_proba``."""
        if tta:
            return self.predict_proba(x, batch_size, tta, tta_augment, seed).argmax(axis=1).astype(np.int64)
        return self._logits(x, batch_size).argmax(axis=1).astype(np.int64)

    @_on_model_threads
    def evaluate(self, x, y, batch_size=EVAL_BATCH, return_dict=False, tta=0, tta_augment=None, seed=0,
                 sample_weight=None):
        """Mean loss (cross-entropy, with the model's label smoothing) and accuracy.

        Returns ``(loss, accuracy)``, or ``{"loss": ..., "accuracy": ...}`` with ``return_dict=True``.
        With ``tta`` (see ``predict_proba``) both come from the averaged probabilities.
        ``sample_weight`` (n,) >= 0 weighs the loss as in ``fit``: sum(w_i * loss_i) / n;
        accuracy stays unweighted.
        """
        if tta:
            # log of the averaged probabilities as logits: their softmax is those probabilities
            probs = self.predict_proba(x, batch_size, tta, tta_augment, seed)
            logits = np.log(np.maximum(probs, np.float32(1e-30)))
        else:
            logits = self._logits(x, batch_size)
        y = check_y(y, "y", len(logits), self.n_classes_)
        w = check_sample_weight(sample_weight, "sample_weight", len(y), self.dtype)
        dlogits = np.empty_like(logits)
        backend = get_backend(self.backend)
        if w is None:
            loss, correct = backend.softmax_nll(logits, y, self.label_smoothing, dlogits)
        else:
            loss, correct = backend.softmax_nll_weighted(logits, y, w, self.label_smoothing, dlogits)
        result = (float(loss), float(correct) / len(y))
        return {"loss": result[0], "accuracy": result[1]} if return_dict else result

    # description -------------------------------------------------------------

    def _config_common(self):
        # dtype only when float64: float32 configs (and files) stay as they were
        return {"optimizer": optimizer_to_config(self.optimizer), "label_smoothing": self.label_smoothing,
                "augment": self.augment, "backend": self.backend, "seed": self.seed,
                **({} if self.dtype == "float32" else {"dtype": self.dtype})}

    def get_config(self):
        """JSON-serialisable constructor arguments (layers, optimizer ...)."""
        return {"layers": [L.layer_to_config(layer) for layer in self.layers], **self._config_common()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layers"] = [L.layer_from_config(c) for c in config["layers"]]
        config["optimizer"] = optimizer_from_config(config["optimizer"])
        return cls(**config)

    def count_params(self):
        self._require_built()
        return int(len(self.net.params))

    def summary(self, print_fn=print):
        """Print (and return) a table of layers, output widths and parameter counts."""
        self._require_built()
        layers = self._layers_for(self.n_classes_)
        lines = [f"{type(self).__name__}: {self.n_features_} inputs -> {self.n_classes_} classes, "
                 f"backend={self.backend}" + ("" if self.dtype == "float32" else f", dtype={self.dtype}"),
                 f"{'#':>3}  {'layer':<34} {'output':>8} {'params':>10}"]
        for i, layer in enumerate(layers):
            n = sum(v.size for name, v in self._entries if name.startswith(f"layers.{i}.") and not name.endswith(("running_mean", "running_var")))
            lines.append(f"{i:>3}  {layer!r:<34} {self.plan.widths[i]:>8} {n:>10}")
        lines.append(f"Trainable parameters: {len(self.net.params)}; non-trainable: {len(self.net.state)}")
        lines.append(f"Optimizer: {self.optimizer!r}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def save(self, path):
        """Write the model to ``path`` (see ``fastnn.io``); returns the path."""
        return save_model(self, path)

    def to_onnx(self, path, opset=None):
        """Write the model as ONNX (input ``input`` float32 (batch, n_features), output
        ``probabilities`` float32 (batch, n_classes)); needs onnx. See ``fastnn.export``."""
        from .export import OPSET, to_onnx

        return to_onnx(self, path, OPSET if opset is None else opset)

    def to_torch_state_dict(self):
        """The weights named as ``torch.nn.Sequential`` expects them (W transposed), as
        NumPy arrays; ``fastnn.export.to_torch(model)`` builds that Sequential."""
        from .export import to_torch_state_dict

        return to_torch_state_dict(self)

    def __repr__(self):
        return f"{type(self).__name__}({self._layers_for(self.n_classes_)!r})"


def _writable_copy(a):
    """A C-contiguous, writable copy of ``a`` starting on a cache line (see ``spec.aligned_zeros``)."""
    out = S.aligned_zeros(a.shape, a.dtype)
    out[...] = a
    return out


@model_class
class MLP(Sequential):
    """A multilayer perceptron: Dense hidden layers, then a linear output layer.

    Each hidden layer is ``Dense(units)`` -> [``BatchNorm``] -> activation ->
    [``Dropout(dropout)``]; without batch norm the activation is fused into the
    dense layer. The output width is set by ``build`` / ``fit`` (the largest label + 1).

    Parameters
    ----------
    layers : list of int
        Hidden-layer widths, e.g. ``[128, 64]``.
    activation : {'relu', 'sigmoid', 'tanh', 'linear'}
    dropout : float in [0, 1)
        Dropout rate after every hidden layer (0: none).
    batch_norm : bool
        Batch normalisation before each hidden activation.
    optimizer, lr, weight_decay, momentum, schedule, label_smoothing, augment, backend, seed, threads, dtype
        As for :class:`Sequential`.
    n_classes : int or None
        Output width; None infers it from the labels on the first ``fit``.
    """

    def __init__(self, layers=(128, 64), activation="relu", optimizer="adam", lr=None, weight_decay=0.0,
                 momentum=0.0, dropout=0.0, batch_norm=False, schedule=None, label_smoothing=0.0, augment=None,
                 backend=DEFAULT_BACKEND, seed=0, n_classes=None, threads=None, dtype="float32"):
        check_params(dict(layers=layers, activation=activation, dropout=dropout, batch_norm=batch_norm, n_classes=n_classes),
                     {"layers": Sizes(allow_empty=True), "activation": Options(*ACTIVATION_NAMES),
                      "dropout": UNIT_OPEN, "batch_norm": Boolean(), "n_classes": [Interval("int", 2), NoneValue()]})
        self._set_common(optimizer, lr, weight_decay, momentum, schedule, label_smoothing, backend, seed, augment,
                         threads, dtype)
        self.hidden_units = tuple(int(u) for u in layers)
        self.activation, self.dropout, self.batch_norm = activation, float(dropout), bool(batch_norm)
        self.n_classes = n_classes

    def _layers_for(self, n_classes):
        n_classes = n_classes or self.n_classes
        out = []
        for units in self.hidden_units:
            if self.batch_norm:
                out += [L.Dense(units), L.BatchNorm()]
                if self.activation != "linear":
                    out.append(L.ACTIVATION_LAYERS[self.activation]())
            else:
                out.append(L.Dense(units, activation=self.activation))
            if self.dropout > 0:
                out.append(L.Dropout(self.dropout))
        if n_classes is not None:
            out.append(L.Dense(n_classes))
        return out

    @property
    def layers(self):
        """The layer declarations this MLP expands to (with the output layer once its width is known)."""
        return self._layers_for(self.n_classes_)

    def _plan(self, n_features, n_classes):
        n_classes = n_classes or self.n_classes
        if n_classes is None:
            raise ValueError("n_classes must be an integer >= 2 to build an MLP, got None")
        if self.n_classes is not None and n_classes != self.n_classes:
            raise ValueError(f"n_classes must be {self.n_classes} (set in the constructor), got {n_classes}")
        return super()._plan(n_features, n_classes)

    def _infer_classes(self, labels_max):
        return self.n_classes or max(labels_max + 1, 2)

    def get_config(self):
        return {"layers": list(self.hidden_units), "activation": self.activation, "dropout": self.dropout,
                "batch_norm": self.batch_norm, "n_classes": self.n_classes, **self._config_common()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["optimizer"] = optimizer_from_config(config["optimizer"])
        return cls(**config)

    def __repr__(self):
        return (f"MLP(layers={list(self.hidden_units)}, activation={self.activation!r}, dropout={self.dropout}, "
                f"batch_norm={self.batch_norm}, optimizer={self.optimizer!r}, backend={self.backend!r}"
                + ("" if self.dtype == "float32" else f", dtype={self.dtype!r}") + ")")
