"""``MLPClassifier``: a drop-in for ``sklearn.neural_network.MLPClassifier``, trained by fastnn.

Needs scikit-learn (``pip install "fastnn[sklearn]"``): ``from fastnn import MLPClassifier``
without it raises an ImportError that says so. The parameters, fitted attributes and
methods are scikit-learn's, with their meanings (stochastic solvers only), plus fastnn's
own ``backend``, ``dropout``, ``batch_norm``, ``augment``, ``threads`` and ``dtype``. Training runs
``fastnn.MLP.fit`` once per ``fit`` (one epoch per ``partial_fit``); a callback applies
scikit-learn's convergence rule (``tol``, ``n_iter_no_change``) after every epoch.

Where fastnn differs from scikit-learn's own estimator, by design:

* arithmetic is float32 by default (``coefs_`` are float32; ``dtype='float64'`` trains in
  float64, as scikit-learn does on float64 input, on the NumPy backend), initialisation is fastnn's (He uniform
  before ReLU, Glorot otherwise; zero biases) and a binary problem has a 2-unit softmax
  output (``out_activation_ == "softmax"``, ``coefs_[-1]`` of shape (h, 2));
* ``alpha`` is applied as weight decay ``alpha / batch_size`` on the gradient, as
  scikit-learn's penalty ``0.5 * alpha * ||W||^2 / batch_size`` is, but on biases too;
* ``solver='lbfgs'`` is not available (fastnn trains in mini-batches);
* ``sample_weight`` scales each sample's loss by ``w / mean(w)``: exactly scikit-learn's
  weighted batch mean when a batch holds all rows, and equal to it in expectation otherwise.
"""

import numbers
import warnings

import numpy as np

try:
    import scipy.sparse as _sparse
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, unique_labels
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        f"fastnn.MLPClassifier needs scikit-learn ({exc}); install it with: pip install \"fastnn[sklearn]\""
    ) from exc

from . import prepared
from .backends.threads import limit_threads
from .callbacks import Callback
from .model import MLP, _raw_pixel_peak, augment_vector
from .optimizers import SGD, Adam
from .validation import (BACKEND_NAMES, Boolean, FloatDType, Interval, NoneValue, Options, Sizes, UNIT_OPEN,
                         check_backend_dtype, check_params, check_sample_weight, check_x, dtype_of)

#: scikit-learn's activation names, and fastnn's own, to fastnn's
ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
               "linear": "linear", "sigmoid": "sigmoid"}

PARAMS = {
    "hidden_layer_sizes": [Sizes(allow_empty=True), Interval("int", 1)],
    "activation": Options(*ACTIVATIONS),
    "solver": Options("adam", "sgd"),
    "alpha": Interval("real", 0),
    "batch_size": [Options("auto"), Interval("int", 1)],
    "learning_rate": Options("constant", "invscaling", "adaptive"),
    "learning_rate_init": Interval("real", 0, closed="neither"),
    "power_t": Interval("real", 0),
    "max_iter": Interval("int", 1),
    "shuffle": Boolean(),
    "tol": Interval("real", 0),
    "verbose": [Boolean(), Interval("int", 0)],
    "warm_start": Boolean(),
    "momentum": Interval("real", 0, 1, closed="left"),
    "nesterovs_momentum": Boolean(),
    "early_stopping": Boolean(),
    "validation_fraction": Interval("real", 0, 1, closed="neither"),
    "beta_1": Interval("real", 0, 1, closed="left"),
    "beta_2": Interval("real", 0, 1, closed="left"),
    "epsilon": Interval("real", 0, closed="neither"),
    "n_iter_no_change": Interval("int", 1),
    "backend": Options("auto", *BACKEND_NAMES),
    "dropout": UNIT_OPEN,
    "batch_norm": Boolean(),
    "threads": [Interval("int", 1), NoneValue()],
    "dtype": FloatDType(),
}


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron classifier with scikit-learn's interface, trained by fastnn.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(100,)
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        fastnn's names 'linear' and 'sigmoid' are accepted too.
    solver : {'adam', 'sgd'}, default='adam'
    alpha : float >= 0, default=1e-4
        L2 penalty (see the module notes).
    batch_size : int or 'auto', default='auto'
        'auto' is ``min(200, n_samples)``; larger values are clipped with a warning.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        For ``solver='sgd'``: 'invscaling' uses ``learning_rate_init / (t_ + 1) ** power_t``
        after each epoch; 'adaptive' divides the rate by 5 instead of stopping when the
        loss (score) stalls, and stops once it falls to 1e-6.
    learning_rate_init : float > 0, default=1e-3
    power_t : float >= 0, default=0.5
    max_iter : int >= 1, default=200
        Epochs (passes over the data).
    shuffle : bool, default=True
    random_state : int, RandomState or None, default=None
        Seeds initialisation, the early-stopping split, shuffling and dropout.
    tol : float >= 0, default=1e-4
    verbose : bool or int, default=False
        Print the loss (and validation score) after each epoch, as scikit-learn does.
    warm_start : bool, default=False
        ``fit`` continues from the current weights (with a fresh optimizer state).
    momentum : float in [0, 1), default=0.9
    nesterovs_momentum : bool, default=True
        Both for ``solver='sgd'``.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (stratified) and stop when the
        validation accuracy has not improved by ``tol`` for ``n_iter_no_change`` epochs;
        the best weights are kept.
    validation_fraction : float in (0, 1), default=0.1
    beta_1, beta_2 : float in [0, 1), default=0.9, 0.999
    epsilon : float > 0, default=1e-8
        For ``solver='adam'``.
    n_iter_no_change : int >= 1, default=10
    backend : {'auto', 'numba', 'numpy'}, default='auto'
        fastnn's compiled backend, or its NumPy reference; 'auto' is 'numba' for float32 and
        'numpy' for float64 (the compiled kernels are float32 only: 'numba' with
        ``dtype='float64'`` is an error at ``fit``).
    dropout : float in [0, 1), default=0.0
        Dropout rate after every hidden layer.
    batch_norm : bool, default=False
        Batch normalisation before each hidden activation.
    augment : dict or None, default=None
        On-the-fly augmentation of image rows (see :class:`fastnn.Sequential`).
    threads : int >= 1 or None, default=None
        Threads for Numba and BLAS during ``fit`` and prediction (None: leave them as set).
    dtype : {'float32', 'float64'} (or np.float32, np.float64), default='float32'
        What the network trains and predicts in. float64 gives scikit-learn's numerics:
        weighted rows equal repeated rows to float64 rounding (scikit-learn's
        ``check_sample_weight_equivalence_*`` pass), for exact comparisons and numerics
        studies. It runs on the NumPy backend, at about 5x the CPU time of the float32
        default (MNIST, batch 200; see the README). ``coefs_``, ``intercepts_`` and
        ``predict_proba`` follow it.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str (only when X had string column names)
    n_iter_ : int
        Epochs run by the last ``fit`` (1 after ``partial_fit``, as in scikit-learn).
    t_ : int
        Training samples seen by the solver, over all calls.
    loss_ : float
        Training loss of the last epoch (mean cross-entropy plus the L2 term).
    loss_curve_ : list of float
    best_loss_ : float or None (None with early stopping)
    validation_scores_ : list of float or None (accuracies; None without early stopping)
    best_validation_score_ : float or None
    coefs_, intercepts_ : lists of arrays (n_in, n_out) and (n_out,), of ``dtype``
        Views into the trained network: writing into them changes it.
    n_layers_, n_outputs_, out_activation_ : int, int, 'softmax'
    model_ : fastnn.MLP
        The trained network (``save``, ``to_onnx`` ...).
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, backend="auto", dropout=0.0, batch_norm=False, augment=None,
                 threads=None, dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.augment = augment
        self.threads = threads
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # densified at the boundary
        return tags

    # fitting ------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Train on X (n_samples, n_features) and labels y (n_samples,); returns self.

        ``sample_weight`` (n_samples,), non-negative: see the module notes.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y); ``classes`` (every label) is required on the first call."""
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True; set early_stopping=False")
        first = not hasattr(self, "classes_")
        if classes is not None:
            classes = unique_labels(_check_labels(np.asarray(classes), "classes"))
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(f"classes={classes!r} is not the same as on the first call to partial_fit, "
                                 f"was {self.classes_!r}")
        elif first:
            raise ValueError("classes must be passed on the first call to partial_fit, e.g. classes=np.unique(y)")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        self._check_params()
        dtype = dtype_of(self.dtype).name
        first = not hasattr(self, "model_") or not (self.warm_start or incremental)
        if not first and self.model_.dtype != dtype:
            raise ValueError(f"dtype={dtype!r} differs from the {self.model_.dtype!r} the estimator was fitted in; "
                             f"continuing (warm_start, partial_fit) keeps the dtype: fit again from scratch "
                             f"(warm_start=False) to change it")
        y = _check_labels(y, "y")
        # The NaN/inf scan (10 ms on MNIST, 9% of a batch-128 epoch) runs once per data set, in
        # fastnn.prepared, where MLP.fit finds it: not on every fit or partial_fit of the same X.
        X, y = validate_data(self, X, y, reset=first, accept_sparse=True, dtype=(np.float32, np.float64),
                             ensure_all_finite=False)
        X = X.toarray() if _sparse.issparse(X) else X
        prepared.prepare(X, "X", X.shape[1], _check_x_finite, _raw_pixel_peak, dtype)  # MLP.fit(X) then reuses it
        if y.ndim != 1 or y.dtype.kind not in "iu":  # 1-D integer labels are always binary or multiclass
            check_classification_targets(y)
        if first:
            self.classes_ = classes if classes is not None else unique_labels(y)
            if len(self.classes_) < 2:
                raise ValueError(f"y has only one class ({self.classes_[0]!r}); a classifier needs samples of at "
                                 f"least 2 classes")
        elif self.warm_start and not incremental and not np.array_equal(unique_labels(y), self.classes_):
            raise ValueError(f"warm_start can only be used where y has the same classes as in the previous call "
                             f"to fit: previously {self.classes_!r}, now {unique_labels(y)!r}")
        y_idx = _encode(y, self.classes_)
        if isinstance(sample_weight, numbers.Number):  # scikit-learn accepts one weight for all rows
            sample_weight = np.full(len(X), sample_weight)
        sample_weight = check_sample_weight(sample_weight, "sample_weight", len(X), dtype)
        rs = check_random_state(self.random_state)
        if first:
            self._start(X.shape[1], seed=int(rs.randint(np.iinfo(np.int32).max)))
        if not incremental:  # scikit-learn starts a fresh optimizer, from the current parameters, on every fit
            self.model_.optimizer = self._optimizer()
            self.model_.optimizer.build(self.model_.count_params(), dtype)
            self._lr = float(self.learning_rate_init)

        X_val = y_val = sw_val = None
        if self.early_stopping:
            parts = train_test_split(X, y_idx, *([] if sample_weight is None else [sample_weight]), random_state=rs,
                                     test_size=self.validation_fraction, stratify=y_idx)
            X, X_val, y_idx, y_val = parts[:4]
            sample_weight, sw_val = parts[4:] if sample_weight is not None else (None, None)
            if len(X_val) < 2:
                raise ValueError("The validation set is too small: increase validation_fraction or the size of "
                                 f"your data set (got {len(X_val)} validation rows)")
        batch_size = self._batch_size(len(X))
        mean_w = 1.0 if sample_weight is None else float(np.mean(sample_weight, dtype=np.float64))
        if mean_w <= 0:
            raise ValueError("sample_weight must not be all zero (over the training rows)")
        self._configure_optimizer(batch_size, mean_w)
        self._penalty_scale = 0.5 * self.alpha * float(np.ceil(len(X) / batch_size)) / (len(X) * mean_w)
        self.n_iter_, self._stopped = 0, False
        fit_kwargs = {} if sample_weight is None else {"sample_weight": sample_weight / mean_w}
        tracker = _EpochEnd(self, len(X), X_val, y_val, sw_val)
        with self._thread_limit():
            try:
                self.model_.fit(X, y_idx, epochs=1 if incremental else self.max_iter, batch_size=batch_size,
                                shuffle=self.shuffle, seed=int(rs.randint(np.iinfo(np.int32).max)), verbose=0,
                                callbacks=[tracker], **fit_kwargs)
            except KeyboardInterrupt:
                warnings.warn("Training interrupted by user.", stacklevel=3)
        if self.early_stopping and self._best_weights is not None:
            self.model_.set_weights(self._best_weights)
        self._best_weights = None
        if not incremental and not self._stopped and self.n_iter_ == self.max_iter and self.model_.stop_reason is None:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization "
                          f"hasn't converged yet.", ConvergenceWarning, stacklevel=3)
        return self

    def _check_params(self):
        check_params({name: getattr(self, name) for name in PARAMS}, PARAMS)
        augment_vector(self.augment)  # checks the dict's keys and values
        self._backend()

    def _start(self, n_features, seed):
        """Build a fresh network and reset the training record."""
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        self.model_ = MLP(layers=sizes, activation=ACTIVATIONS[self.activation], optimizer=self._optimizer(),
                          dropout=self.dropout, batch_norm=self.batch_norm, augment=self.augment,
                          backend=self._backend(), seed=seed, n_classes=len(self.classes_), dtype=self.dtype)
        self.model_.build(n_features, len(self.classes_))
        self.n_layers_, self.n_outputs_, self.out_activation_ = len(sizes) + 2, len(self.classes_), "softmax"
        self.t_, self.loss_curve_, self._no_improvement_count = 0, [], 0
        self._lr, self._best_weights = float(self.learning_rate_init), None
        if self.early_stopping:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
        else:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = None, None, np.inf

    def _backend(self):
        """The backend to train on: ``backend``, with 'auto' resolved by ``dtype`` (checked)."""
        if self.backend == "auto":
            return "numba" if dtype_of(self.dtype).name == "float32" else "numpy"
        check_backend_dtype(self.backend, self.dtype)
        return self.backend

    def _optimizer(self):
        if self.solver == "sgd":
            return SGD(lr=self.learning_rate_init, momentum=self.momentum,
                       nesterov=self.nesterovs_momentum and self.momentum > 0)
        return Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon)

    def _configure_optimizer(self, batch_size, mean_weight):
        """Set the learning rate and the weight decay that ``alpha`` means for this batch size."""
        opt = self.model_.optimizer
        opt.lr, opt.weight_decay = self._lr, self.alpha / (batch_size * mean_weight)
        opt.buffers.hparams[...] = opt.hparams()

    def _batch_size(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn(f"Got `batch_size` ({self.batch_size}) larger than the number of training samples ({n}); "
                          f"it is clipped to {n}", stacklevel=4)
        return min(self.batch_size, n)

    def _epoch_done(self, model, n_train, loss, X_val, y_val, sw_val):
        """scikit-learn's bookkeeping after one epoch; returns True to stop training."""
        self.n_iter_ += 1
        self.t_ += n_train
        # sums of squares without BLAS (as divergence.sample_mean): the same bits on any thread count
        penalty = sum(float(np.square(W, dtype=np.float64).sum()) for W in self.coefs_) * self._penalty_scale
        self.loss_ = float(loss) + penalty
        self.loss_curve_.append(self.loss_)
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
        if self.early_stopping:
            score = float(np.average(model.predict(X_val) == y_val, weights=sw_val))
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            improved = score >= self.best_validation_score_ + self.tol
            if score > self.best_validation_score_:
                self.best_validation_score_, self._best_weights = score, model.get_weights()
        else:
            improved = self.loss_ <= self.best_loss_ - self.tol
            self.best_loss_ = min(self.best_loss_, self.loss_)
        self._no_improvement_count = 0 if improved else self._no_improvement_count + 1
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            self._lr = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t
        if self._no_improvement_count > self.n_iter_no_change:
            what = "Validation score" if self.early_stopping else "Training loss"
            msg = f"{what} did not improve more than tol={self.tol:f} for {self.n_iter_no_change} consecutive epochs."
            if self.solver == "sgd" and self.learning_rate == "adaptive" and self._lr > 1e-6:
                self._lr /= 5.0
                self._no_improvement_count = 0
                if self.verbose:
                    print(f"{msg} Setting learning rate to {self._lr:f}")
            else:
                if self.verbose:
                    print(f"{msg} Stopping.")
                self._stopped = True
        model.optimizer.lr = self._lr
        return self._stopped

    def _thread_limit(self):
        return limit_threads(self.threads)

    # prediction ---------------------------------------------------------------------

    def _input(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, accept_sparse=True, dtype=(np.float32, np.float64))
        return _dense(X, self.model_.dtype)

    def predict_log_proba(self, X):
        """Log of the class probabilities (n_samples, n_classes) in ``dtype``, columns as ``classes_``."""
        X = self._input(X)
        with self._thread_limit():
            return self.model_.predict_log_proba(X)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes) in ``dtype``, columns in the order of ``classes_``."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """Predicted labels (values from ``classes_``), (n_samples,)."""
        X = self._input(X)
        with self._thread_limit():
            return self.classes_[self.model_.predict(X)]

    # the trained network's weights, scikit-learn's way ------------------------------

    @property
    def coefs_(self):
        """Weight matrices of the dense layers, (n_in, n_out) views in ``dtype``."""
        return self._dense_weights("W")

    @property
    def intercepts_(self):
        """Bias vectors of the dense layers, (n_out,) views in ``dtype``."""
        return self._dense_weights("b")

    def _dense_weights(self, kind):
        model = self.__dict__.get("model_")
        if model is None:
            raise AttributeError(f"{'coefs_' if kind == 'W' else 'intercepts_'} exists once the estimator is fitted")
        return [view for name, view in model._entries if name.endswith("." + kind)]


class _EpochEnd(Callback):
    """Runs the estimator's per-epoch bookkeeping inside ``MLP.fit``."""

    def __init__(self, estimator, n_train, X_val, y_val, sw_val):
        self.estimator, self.n_train, self.val = estimator, n_train, (X_val, y_val, sw_val)

    def on_epoch_end(self, epoch, logs=None):
        if self.estimator._epoch_done(self.model, self.n_train, logs["loss"], *self.val):
            self.model.stop_training = True


def _check_labels(y, name):
    """Reject missing labels (NaN, None) that would otherwise become a class or a TypeError."""
    if y is None:  # validate_data says that y is required
        return y
    y = np.asarray(y)
    if y.dtype.kind == "f" or y.dtype == object:
        flat = y.ravel()
        missing = np.array([v is None or (isinstance(v, float) and v != v) for v in flat]) if y.dtype == object \
            else np.isnan(flat)
        if missing.any():
            rows = np.flatnonzero(missing)
            kind = "None" if y.dtype == object and flat[rows[0]] is None else "NaN"
            raise ValueError(f"{name} has {len(rows)} missing labels ({kind} at rows {rows[:5].tolist()}"
                             f"{' ...' if len(rows) > 5 else ''}); every sample needs a class label: drop those "
                             f"rows or fill them in before fitting")
    return y


def _encode(y, classes):
    """Class indices of labels ``y`` in the sorted ``classes``; unknown labels are an error."""
    k = len(classes)
    if y.dtype.kind in "iu" and classes.dtype.kind in "iu" and classes[0] == 0 and classes[-1] == k - 1 \
            and y.min() >= 0 and y.max() < k:  # classes 0..k-1 (sorted, distinct): labels are their own indices
        return y.astype(np.int64)
    idx = np.searchsorted(classes, y)
    idx = np.minimum(idx, len(classes) - 1)
    unknown = classes[idx] != y
    if unknown.any():
        raise ValueError(f"y has labels not in classes_ {classes!r}, e.g. {y[unknown][:3]!r}")
    return idx.astype(np.int64)


def _check_x_finite(X, name, n_features, dtype):
    """``check_x`` with scikit-learn's message for NaN or inf ("Input X contains NaN.")."""
    from sklearn.utils import assert_all_finite

    assert_all_finite(X, input_name=name)
    return check_x(X, name, n_features, dtype)


def _dense(X, dtype):
    """X as a writable C-contiguous array of ``dtype`` (sparse input densified, read-only input copied)."""
    if _sparse.issparse(X):
        X = X.toarray()
    X = np.ascontiguousarray(X, dtype=dtype)
    return X if X.flags.writeable else X.copy()
