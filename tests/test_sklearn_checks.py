"""scikit-learn's own estimator checks on fastnn.MLPClassifier.

All pass but the two that ask weighted rows and repeated rows to give the same
probabilities to rtol 1e-7 / atol 1e-9: float32 training sums the batch gradient in a
different order for the two data sets, and the results differ in the last float32 bit
(1.2e-7 at most). test_estimator.py checks the same equivalence at float32 tolerance.
The array API check, which skips itself without SCIPY_ARRAY_API, runs in a subprocess.
"""

import pytest

pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'fastnn[sklearn]')")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastnn import MLPClassifier  # noqa: E402


FLOAT32_ROUNDING = ("weighted and repeated rows agree to float32 rounding (max difference 1.2e-7), not to the "
                    "rtol 1e-7 / atol 1e-9 of this check; see test_sample_weight_is_repetition")


def expected_failures(estimator):
    return {"check_sample_weight_equivalence_on_dense_data": FLOAT32_ROUNDING,
            "check_sample_weight_equivalence_on_sparse_data": FLOAT32_ROUNDING}


@parametrize_with_checks([MLPClassifier(max_iter=100)], expected_failed_checks=expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_array_api_check_with_scipy_array_api_set():
    # The one check above that skips itself unless SCIPY_ARRAY_API is set before SciPy loads:
    # run it in a fresh interpreter that has it, rather than change SciPy for the whole session.
    import os
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "from sklearn.utils.estimator_checks import check_array_api_input\n"
            "from fastnn import MLPClassifier\n"
            "check_array_api_input('MLPClassifier', MLPClassifier(max_iter=100), array_namespace='numpy',\n"
            "                      expect_only_array_outputs=False)\n"
            "print('passed')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SCIPY_ARRAY_API": "1"})
    assert out.returncode == 0 and out.stdout.strip() == "passed", out.stderr[-3000:]
