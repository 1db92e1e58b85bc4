"""scikit-learn's own estimator checks on fastnn.MLPClassifier (every one of them)."""

import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'fastnn[sklearn]')")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastnn import MLPClassifier  # noqa: E402


@parametrize_with_checks([MLPClassifier(max_iter=100)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
