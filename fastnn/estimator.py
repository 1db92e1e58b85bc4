"""A scikit-learn compatible classifier around :class:`fastnn.MLP`.

``MLPClassifier`` implements the estimator protocol (``get_params``,
``set_params``, ``fit``, ``predict``, ``predict_proba``, ``score``, fitted
attributes ending in ``_``) without importing scikit-learn, so it works in
``Pipeline`` and ``GridSearchCV`` when scikit-learn is installed and costs
nothing when it is not. As scikit-learn requires, ``__init__`` only stores its
arguments; they are validated in ``fit``. Labels may be any sortable values
(strings, ints ...): they are mapped to ``classes_``.
"""

import inspect

import numpy as np

from .model import MLP, NotFittedError
from .validation import FIT_PARAMS, Boolean, Interval, NoneValue, check_params, check_x


class MLPClassifier:
    """Multilayer-perceptron classifier with the scikit-learn estimator interface.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int
    activation : {'relu', 'sigmoid', 'tanh', 'linear'}
    optimizer : {'adam', 'sgd', 'rmsprop'}
    lr : float or None (the optimizer's default)
    momentum : float (for 'sgd' and 'rmsprop')
    weight_decay, dropout, batch_norm, schedule, label_smoothing
        As for :class:`fastnn.MLP`.
    epochs, batch_size, shuffle : as for ``MLP.fit``
    early_stopping : bool
        Hold out ``validation_fraction`` of the training rows and stop when the
        validation loss has not improved for ``patience`` epochs (best weights kept).
    validation_fraction : float in (0, 1)
    patience : int >= 0
    backend : {'numba', 'numpy'}
    random_state : int or None
        Seeds initialisation, shuffling and dropout (None: 0, i.e. still reproducible).
    verbose : {0, 1, 2}

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    n_features_in_ : int
    model_ : MLP
    history_ : dict (the History's ``.history``)
    """

    _estimator_type = "classifier"

    def __init__(self, hidden_layer_sizes=(128, 64), activation="relu", optimizer="adam", lr=None, momentum=0.0,
                 weight_decay=0.0, dropout=0.0, batch_norm=False, schedule=None, label_smoothing=0.0, epochs=10,
                 batch_size=128, shuffle=True, early_stopping=False, validation_fraction=0.1, patience=3,
                 backend="numba", random_state=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.schedule = schedule
        self.label_smoothing = label_smoothing
        self.epochs = epochs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.backend = backend
        self.random_state = random_state
        self.verbose = verbose

    # estimator protocol ---------------------------------------------------------

    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p for p in sig.parameters if p != "self")

    def get_params(self, deep=True):
        """Constructor parameters as a dict (``deep`` is accepted for compatibility)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set constructor parameters; unknown names raise ValueError."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for MLPClassifier; valid parameters are {valid}")
            setattr(self, name, value)
        return self

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags())

    def __repr__(self):
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults[k].default)]
        return f"MLPClassifier({', '.join(changed)})"

    # fitting --------------------------------------------------------------------

    def _check_params(self):
        check_params(
            {"epochs": self.epochs, "batch_size": self.batch_size, "shuffle": self.shuffle, "verbose": self.verbose,
             "early_stopping": self.early_stopping, "validation_fraction": self.validation_fraction,
             "patience": self.patience, "random_state": self.random_state},
            {"epochs": FIT_PARAMS["epochs"], "batch_size": FIT_PARAMS["batch_size"], "shuffle": Boolean(),
             "verbose": FIT_PARAMS["verbose"], "early_stopping": Boolean(),
             "validation_fraction": Interval("real", 0, 1, closed="neither"), "patience": Interval("int", 0),
             "random_state": [Interval("int", 0), NoneValue()]},
        )

    def fit(self, X, y):
        """Train a fresh MLP on X (n, d) and labels y (n,); returns self."""
        from .callbacks import EarlyStopping

        self._check_params()
        X = check_x(X, "X")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"y must be 1-D with one label per row of X ({len(X)}), got shape {y.shape}")
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y must contain at least 2 classes, got {len(classes)}: {classes!r}")
        seed = 0 if self.random_state is None else self.random_state
        model = MLP(layers=self.hidden_layer_sizes, activation=self.activation, optimizer=self.optimizer, lr=self.lr,
                    momentum=self.momentum, weight_decay=self.weight_decay, dropout=self.dropout,
                    batch_norm=self.batch_norm, schedule=self.schedule, label_smoothing=self.label_smoothing,
                    backend=self.backend, seed=seed, n_classes=len(classes))
        callbacks, split = [], 0.0
        if self.early_stopping:
            callbacks.append(EarlyStopping("val_loss", patience=self.patience, restore_best_weights=True))
            split = self.validation_fraction
            # shuffle once so the held-out rows are not just the tail of a sorted data set
            perm = np.random.default_rng(seed).permutation(len(X))
            X, y_idx = X[perm], y_idx[perm]
        history = model.fit(X, y_idx.astype(np.int64), epochs=self.epochs, batch_size=self.batch_size,
                            validation_split=split, callbacks=callbacks, shuffle=self.shuffle, seed=seed,
                            verbose=self.verbose)
        self.model_, self.classes_, self.n_features_in_ = model, classes, X.shape[1]
        self.history_ = history.history
        self.n_iter_ = len(history.epoch)
        return self

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise NotFittedError("this MLPClassifier is not fitted yet; call fit(X, y) first")

    def predict_proba(self, X):
        """Class probabilities (n, n_classes), columns in the order of ``classes_``."""
        self._check_fitted()
        return self.model_.predict_proba(check_x(X, "X", self.n_features_in_))

    def predict(self, X):
        """Predicted labels (values from ``classes_``)."""
        self._check_fitted()
        return self.classes_[self.model_.predict(check_x(X, "X", self.n_features_in_))]

    def score(self, X, y):
        """Mean accuracy on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))


def _same(a, b):
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return a is b
