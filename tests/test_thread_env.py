"""Importing fastnn sets sleeping waits for the thread pools, unless the user chose otherwise."""

import os
import subprocess
import sys

import pytest

PROBE = "import os, fastnn; print(os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_THREAD_TIMEOUT'])"


def _probe(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_defaults_are_set_before_the_libraries_load():
    assert _probe() == ["passive", "4"]


@pytest.mark.parametrize("env, expected", [({"OMP_WAIT_POLICY": "active"}, ["active", "4"]),
                                           ({"OPENBLAS_THREAD_TIMEOUT": "28"}, ["passive", "28"])])
def test_user_values_win(env, expected):
    assert _probe(**env) == expected


def test_numpy_is_not_imported_before_the_defaults():
    # The OpenBLAS inside NumPy reads its timeout once, when NumPy is first imported.
    src = open(os.path.join(os.path.dirname(__file__), "..", "fastnn", "__init__.py")).read()
    head = src[: src.index('os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT"')]
    assert "numpy" not in head and "from ." not in head
