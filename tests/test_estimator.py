"""fastnn.MLPClassifier as a drop-in for sklearn.neural_network.MLPClassifier.

scikit-learn's own check suite runs in test_sklearn_checks.py; these tests pin the
meanings of the parameters and attributes, and fastnn's boundary behaviour.
"""

import os
import pickle  # only to check that sklearn-style copies work; fastnn itself never pickles
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'fastnn[sklearn]')")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402

from fastnn import MLPClassifier  # noqa: E402


def blobs(n=240, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(k, d)) * 3
    y = rng.integers(0, k, n)
    return (c[y] + rng.normal(size=(n, d))).astype(np.float64), y


FAST = dict(hidden_layer_sizes=(16,), max_iter=8, batch_size=16, learning_rate_init=0.01)


def quiet(est, *args, **kwargs):
    """fit without the ConvergenceWarning that short test runs give."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


def test_parameters_are_scikit_learns_plus_fastnns():
    ours, theirs = MLPClassifier().get_params(), SkMLPClassifier().get_params()
    assert set(theirs) - set(ours) == {"max_fun"}  # L-BFGS only
    assert set(ours) - set(theirs) == {"backend", "dropout", "batch_norm", "augment", "threads", "dtype"}
    for name in set(ours) & set(theirs):
        assert ours[name] == theirs[name], name  # same defaults
    assert repr(MLPClassifier(max_iter=3)) == "MLPClassifier(max_iter=3)"


def test_bad_parameters_name_the_parameter_at_fit():
    x, y = blobs()
    est = MLPClassifier(max_iter=0)  # __init__ only stores, as scikit-learn requires
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1, got 0"):
        est.fit(x, y)
    with pytest.raises(ValueError, match="solver must be one of 'adam', 'sgd', got 'lbfgs'"):
        MLPClassifier(solver="lbfgs").fit(x, y)
    with pytest.raises(ValueError, match=r"batch_size must be one of 'auto' or an integer >= 1, got 0"):
        MLPClassifier(batch_size=0).fit(x, y)
    with pytest.raises(ValueError, match=r"validation_fraction must be a number in \(0, 1\), got 1.5"):
        MLPClassifier(early_stopping=True, validation_fraction=1.5).fit(x, y)
    with pytest.raises(ValueError, match="augment has unknown keys"):
        MLPClassifier(augment={"shfit": 1}).fit(x, y)


def test_fit_predict_and_fitted_attributes_with_string_labels():
    x, y = blobs()
    names = np.array(["cat", "dog", "eel"])[y]
    est = quiet(MLPClassifier(random_state=0, **FAST), x, names)
    np.testing.assert_array_equal(est.classes_, ["cat", "dog", "eel"])
    assert est.n_features_in_ == 6 and est.n_iter_ == 8 and est.t_ == 8 * 240
    assert len(est.loss_curve_) == 8 and est.loss_ == est.loss_curve_[-1] and est.best_loss_ == min(est.loss_curve_)
    assert est.validation_scores_ is None and est.best_validation_score_ is None
    assert [w.shape for w in est.coefs_] == [(6, 16), (16, 3)] and [b.shape for b in est.intercepts_] == [(16,), (3,)]
    assert (est.n_layers_, est.n_outputs_, est.out_activation_) == (3, 3, "softmax")
    proba = est.predict_proba(x)
    assert proba.shape == (240, 3)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(est.predict(x), est.classes_[proba.argmax(1)])
    np.testing.assert_allclose(est.predict_log_proba(x), np.log(proba), atol=1e-5)
    assert est.score(x, names) > 0.95
    # coefs_ are the network's weights: the forward pass by hand gives the same probabilities
    h = np.maximum(x @ est.coefs_[0] + est.intercepts_[0], 0) @ est.coefs_[1] + est.intercepts_[1]
    np.testing.assert_allclose(proba, np.exp(h) / np.exp(h).sum(1, keepdims=True), atol=1e-5)
    # reproducible for a fixed random_state; survives copying as scikit-learn does it
    again = quiet(MLPClassifier(random_state=0, **FAST), x, names)
    np.testing.assert_array_equal(again.predict_proba(x), proba)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict_proba(x), proba)


def test_log_proba_stays_finite_where_proba_underflows():
    x, y = blobs()
    est = quiet(MLPClassifier(random_state=0, **{**FAST, "max_iter": 30}), x * 50, y)
    logp = est.predict_log_proba(x * 50)
    assert np.isfinite(logp).all() and logp.min() < -104  # exp(-104) is 0 in float32


def test_convergence_rule_and_warning():
    x, y = blobs()
    # tol=1 can never be met: the loss "stalls" from the first epoch, so training stops after
    # n_iter_no_change + 1 epochs without a ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = MLPClassifier(tol=1.0, n_iter_no_change=3, random_state=0, **{**FAST, "max_iter": 50}).fit(x, y)
    assert est.n_iter_ == 5  # the first epoch improves on inf
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(8\) reached"):
        MLPClassifier(random_state=0, **FAST).fit(x, y)


def test_early_stopping_keeps_the_best_validation_weights():
    x, y = blobs(300)
    labels = np.array([10, 20, 40])[y]
    est = MLPClassifier(early_stopping=True, n_iter_no_change=2, validation_fraction=0.2, random_state=1,
                        **{**FAST, "max_iter": 60}).fit(x, labels)
    assert set(est.predict(x)) <= {10, 20, 40}
    assert est.best_loss_ is None and len(est.validation_scores_) == est.n_iter_ < 60
    assert est.best_validation_score_ == max(est.validation_scores_)


def test_partial_fit_follows_scikit_learn():
    x, y = blobs()
    est = MLPClassifier(random_state=0, **FAST)
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        est.partial_fit(x, y)
    est.partial_fit(x[:120], y[:120], classes=[0, 1, 2])
    assert est.n_iter_ == 1 and est.t_ == 120 and len(est.loss_curve_) == 1
    for _ in range(5):
        est.partial_fit(x, y)
    assert est.n_iter_ == 1 and est.t_ == 120 + 5 * 240 and len(est.loss_curve_) == 6
    assert est.loss_curve_[-1] < est.loss_curve_[0]
    with pytest.raises(ValueError, match="is not the same as on the first call"):
        est.partial_fit(x, y, classes=[0, 1])
    with pytest.raises(ValueError, match="y has labels not in classes_"):
        est.partial_fit(x, y + 1)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 6"):
        est.partial_fit(x[:, :3], y)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        MLPClassifier(early_stopping=True).partial_fit(x, y, classes=[0, 1, 2])


def test_warm_start_continues_from_the_weights():
    x, y = blobs()
    est = quiet(MLPClassifier(warm_start=True, random_state=0, **FAST), x, y)
    first = est.coefs_[0].copy()
    quiet(est, x, y)
    assert len(est.loss_curve_) == 16 and est.n_iter_ == 8 and est.t_ == 16 * 240
    assert est.loss_curve_[8] < est.loss_curve_[0]  # not a restart
    assert not np.array_equal(first, est.coefs_[0])
    quiet(est.set_params(solver="sgd", momentum=0.5), x, y)  # a fresh optimizer with the new parameters
    assert est.model_.optimizer.name == "sgd" and est.model_.optimizer.momentum == 0.5
    assert est.model_.optimizer.iterations == 8 * 15
    with pytest.raises(ValueError, match="warm_start can only be used where y has the same classes"):
        est.fit(x, y % 2)


def test_alpha_is_the_l2_penalty_per_batch():
    x, y = blobs()
    plain = quiet(MLPClassifier(alpha=0.0, random_state=0, **FAST), x, y)
    strong = quiet(MLPClassifier(alpha=5.0, random_state=0, **FAST), x, y)
    assert strong.model_.optimizer.weight_decay == pytest.approx(5.0 / 16)
    assert np.linalg.norm(strong.coefs_[0]) < 0.8 * np.linalg.norm(plain.coefs_[0])
    # loss_ includes 0.5 * alpha * ||W||^2 per batch (15 batches of 16 over 240 rows)
    norm2 = sum(float((w.astype(np.float64) ** 2).sum()) for w in strong.coefs_)
    nll = strong.loss_ - 0.5 * 5.0 * norm2 * 15 / 240
    assert 0 < nll < strong.loss_


def test_sgd_learning_rate_schedules():
    x, y = blobs()
    sgd = dict(FAST, solver="sgd", learning_rate_init=0.05)
    est = quiet(MLPClassifier(learning_rate="invscaling", power_t=0.5, random_state=0, **sgd), x, y)
    assert est.model_.optimizer.lr == pytest.approx(0.05 / (est.t_ + 1) ** 0.5)
    est = MLPClassifier(learning_rate="adaptive", tol=10.0, n_iter_no_change=1, random_state=0,
                        **{**sgd, "max_iter": 100}).fit(x, y)
    # every second epoch "stalls": the rate is divided by 5 until it is <= 1e-6, then training stops
    assert est.model_.optimizer.lr <= 1e-6 and est.n_iter_ < 100
    assert est.model_.optimizer.momentum == 0.9 and est.model_.optimizer.nesterov


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_sample_weight_is_repetition(solver):
    # scikit-learn's meaning: an integer weight is that many copies of the row, a zero weight
    # drops it. With all rows in one batch ("auto" is min(200, n)) that holds exactly, up to
    # float32 rounding; the SGD case pins the scale of the loss, which Adam would hide.
    x, y = blobs(60, k=3)
    w = np.random.default_rng(1).integers(0, 4, len(x))
    kw = dict(hidden_layer_sizes=(8,), solver=solver, alpha=1e-2, max_iter=30, learning_rate_init=0.05,
              random_state=0)
    weighted = quiet(MLPClassifier(**kw), x, y, sample_weight=w)
    repeated = quiet(MLPClassifier(**kw), x.repeat(w, axis=0), y.repeat(w))
    np.testing.assert_allclose(weighted.predict_proba(x), repeated.predict_proba(x), atol=2e-5)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-5)
    unweighted = quiet(MLPClassifier(**kw), x, y)
    assert np.abs(unweighted.predict_proba(x) - weighted.predict_proba(x)).max() > 1e-2  # the weights matter
    # one weight for all rows: 3 copies of the data, so the L2 penalty counts a third as much
    np.testing.assert_allclose(quiet(MLPClassifier(**kw), x, y, sample_weight=3.0).predict_proba(x),
                               quiet(MLPClassifier(**{**kw, "alpha": 1e-2 / 3}), x, y).predict_proba(x), atol=2e-5)


def test_sample_weight_errors_and_weighted_validation_score():
    x, y = blobs()
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(240,\)"):
        MLPClassifier(**FAST).fit(x, y, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="sample_weight must be finite and >= 0"):
        MLPClassifier(**FAST).fit(x, y, sample_weight=-np.ones(240))
    with pytest.raises(ValueError, match="sample_weight must not be all zero"):
        MLPClassifier(**FAST).fit(x, y, sample_weight=np.zeros(240))
    w = np.where(y == 0, 5.0, 1.0)
    est = quiet(MLPClassifier(early_stopping=True, random_state=0, **FAST), x, y, sample_weight=w)
    assert len(est.validation_scores_) == est.n_iter_


def test_missing_and_continuous_labels_are_clear_errors():
    x, y = blobs()
    y_nan = y.astype(float)
    y_nan[[3, 7]] = np.nan
    with pytest.raises(ValueError, match=r"y has 2 missing labels \(NaN at rows \[3, 7\]\)"):
        MLPClassifier(**FAST).fit(x, y_nan)
    y_none = np.array(["a", "b", "c"], dtype=object)[y]
    y_none[5] = None
    with pytest.raises(ValueError, match=r"y has 1 missing labels \(None at rows \[5\]\)"):
        MLPClassifier(**FAST).fit(x, y_none)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        MLPClassifier(**FAST).fit(x, np.linspace(0, 1, len(x)))
    with pytest.raises(ValueError, match="only one class"):
        MLPClassifier(**FAST).fit(x, np.zeros(len(x)))
    with pytest.warns(Warning, match="column-vector y was passed"):
        quiet(MLPClassifier(**FAST), x, y[:, None])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        MLPClassifier(**FAST).fit(np.full_like(x, np.nan), y)


def test_sparse_input_is_densified():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    x, y = blobs()
    x[x < 0.5] = 0
    dense = quiet(MLPClassifier(random_state=0, **FAST), x, y)
    sparse = quiet(MLPClassifier(random_state=0, **FAST), scipy_sparse.csr_matrix(x), y)
    np.testing.assert_array_equal(sparse.predict_proba(scipy_sparse.csc_matrix(x)), dense.predict_proba(x))


def test_read_only_memory_maps_of_data_and_weights(tmp_path):
    joblib = pytest.importorskip("joblib")
    x, y = blobs()
    joblib.dump((x.astype(np.float32), y), tmp_path / "data.joblib")
    x_ro, y_ro = joblib.load(tmp_path / "data.joblib", mmap_mode="r")
    assert not x_ro.flags.writeable
    est = quiet(MLPClassifier(random_state=0, **FAST), x_ro, y_ro)  # copied at the boundary
    joblib.dump(est, tmp_path / "est.joblib")
    loaded = joblib.load(tmp_path / "est.joblib", mmap_mode="r")
    np.testing.assert_array_equal(loaded.predict_proba(x_ro), est.predict_proba(x))
    loaded.coefs_[0][0, 0] = 1.0  # the weights are the network's own, writable, again
    assert loaded.model_.get_weights()[0][0, 0] == 1.0
    quiet(loaded.set_params(warm_start=True), x_ro, y_ro)  # training goes on from there
    # the same for a bare fastnn.MLP
    joblib.dump(est.model_, tmp_path / "mlp.joblib")
    mlp = joblib.load(tmp_path / "mlp.joblib", mmap_mode="r")
    np.testing.assert_array_equal(mlp.predict_proba(x), est.model_.predict_proba(x))
    mlp.fit(x, y, epochs=1, verbose=0)


def test_threads_parameter_limits_and_restores():
    numba = pytest.importorskip("numba")
    x, y = blobs()
    before = numba.get_num_threads()
    est = quiet(MLPClassifier(threads=1, random_state=0, **FAST), x, y)
    assert numba.get_num_threads() == before
    np.testing.assert_array_equal(est.predict(x), quiet(MLPClassifier(random_state=0, **FAST), x, y).predict(x))
    with pytest.raises(ValueError, match="threads must be an integer in"):
        MLPClassifier(threads=10**6, **FAST).fit(x, y)


def test_pipeline_and_grid_search():
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = blobs(180)
    est = MLPClassifier(**{**FAST, "max_iter": 6})
    assert is_classifier(est)
    assert clone(est).get_params() == est.get_params()
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", est)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(x, y)
        assert pipe.score(x, y) > 0.9
        grid = GridSearchCV(pipe, {"mlp__hidden_layer_sizes": [(4,), (16,)], "mlp__alpha": [1e-4, 1e-2]}, cv=3)
        grid.fit(x, y)
        assert set(grid.best_params_) == {"mlp__hidden_layer_sizes", "mlp__alpha"}
        assert grid.best_score_ > 0.85
        assert cross_val_score(est, x, y, cv=3).mean() > 0.85


def test_without_scikit_learn_the_message_says_how_to_install():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import fastnn\n"
            "m = fastnn.MLP([4])\n"
            "try:\n"
            "    from fastnn import MLPClassifier\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    assert 'fastnn.MLPClassifier needs scikit-learn' in out.stdout
    assert 'pip install "fastnn[sklearn]"' in out.stdout
