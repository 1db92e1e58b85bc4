"""The scikit-learn estimator protocol of MLPClassifier, with and without scikit-learn."""

import pickle  # only to check that sklearn-style copies work; fastnn itself never pickles

import numpy as np
import pytest

from fastnn import MLPClassifier, NotFittedError


def blobs(n=240, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(k, d)) * 3
    y = rng.integers(0, k, n)
    return (c[y] + rng.normal(size=(n, d))).astype(np.float64), y


FAST = dict(hidden_layer_sizes=(16,), epochs=8, batch_size=16, lr=0.01, backend="numpy")


def test_get_set_params_and_clone_by_constructor():
    est = MLPClassifier(**FAST)
    params = est.get_params()
    assert params["hidden_layer_sizes"] == (16,) and params["epochs"] == 8 and params["random_state"] is None
    assert set(params) == {"activation", "backend", "batch_norm", "batch_size", "dropout", "early_stopping", "epochs",
                           "hidden_layer_sizes", "label_smoothing", "lr", "momentum", "optimizer", "patience",
                           "random_state", "schedule", "shuffle", "validation_fraction", "verbose", "weight_decay"}
    clone = MLPClassifier(**params)
    assert clone.get_params() == params
    assert est.set_params(epochs=3, dropout=0.2) is est
    assert est.epochs == 3 and est.dropout == 0.2
    with pytest.raises(ValueError, match="invalid parameter 'layers' for MLPClassifier"):
        est.set_params(layers=[3])
    assert repr(MLPClassifier(epochs=3)) == "MLPClassifier(epochs=3)"


def test_init_stores_arguments_unchanged():
    sizes = [32, 16]
    est = MLPClassifier(hidden_layer_sizes=sizes, epochs=0)  # invalid values are accepted until fit
    assert est.hidden_layer_sizes is sizes
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        est.fit(*blobs())


def test_fit_predict_score_with_string_labels():
    x, y = blobs()
    names = np.array(["cat", "dog", "eel"])[y]
    est = MLPClassifier(random_state=0, **FAST)
    assert est.fit(x, names) is est
    np.testing.assert_array_equal(est.classes_, ["cat", "dog", "eel"])
    assert est.n_features_in_ == 6 and est.n_iter_ == 8 and len(est.history_["loss"]) == 8
    proba = est.predict_proba(x)
    assert proba.shape == (240, 3)
    np.testing.assert_array_equal(est.predict(x), est.classes_[proba.argmax(1)])
    assert est.score(x, names) > 0.95
    assert est.score(x, names) == pytest.approx(np.mean(est.predict(x) == names))
    # reproducible for a fixed random_state
    again = MLPClassifier(random_state=0, **FAST).fit(x, names)
    np.testing.assert_array_equal(again.predict_proba(x), proba)
    # a fitted estimator survives copying as scikit-learn does it
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(x), est.predict(x))


def test_non_contiguous_labels_and_early_stopping():
    x, y = blobs(300)
    labels = np.array([10, 20, 40])[y]
    est = MLPClassifier(early_stopping=True, patience=1, validation_fraction=0.2, random_state=1,
                        **{**FAST, "epochs": 50}).fit(x, labels)
    assert set(est.predict(x)) <= {10, 20, 40}
    assert "val_loss" in est.history_ and est.n_iter_ <= 50


def test_errors():
    x, y = blobs()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        MLPClassifier().predict(x)
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier(**FAST).fit(x, np.zeros(len(x)))
    with pytest.raises(ValueError, match=r"y must be 1-D with one label per row of X \(240\)"):
        MLPClassifier(**FAST).fit(x, y[:5])
    with pytest.raises(ValueError, match="validation_fraction must be a number in \\(0, 1\\), got 1.5"):
        MLPClassifier(early_stopping=True, validation_fraction=1.5, **FAST).fit(x, y)
    with pytest.raises(ValueError, match="dropout must be a number in \\[0, 1\\), got 2"):
        MLPClassifier(dropout=2, **FAST).fit(x, y)
    est = MLPClassifier(**FAST).fit(x, y)
    with pytest.raises(ValueError, match="X must have 6 features"):
        est.predict(x[:, :3])


def test_pipeline_and_grid_search():
    sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed (optional)")
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = blobs(180)
    est = MLPClassifier(**{**FAST, "epochs": 4})
    assert is_classifier(est)
    assert clone(est).get_params() == est.get_params()
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", est)])
    pipe.fit(x, y)
    assert pipe.score(x, y) > 0.9
    grid = GridSearchCV(pipe, {"mlp__hidden_layer_sizes": [(4,), (16,)], "mlp__lr": [0.01, 0.03]}, cv=3)
    grid.fit(x, y)
    assert set(grid.best_params_) == {"mlp__hidden_layer_sizes", "mlp__lr"}
    assert grid.best_score_ > 0.85
    assert cross_val_score(est, x, y, cv=3).mean() > 0.85
    assert sklearn.__version__
