"""A real, non-editable install: build fastnn from this checkout into a fresh virtual
environment and use it from another directory, as a user after ``pip install .`` would.

To stay fast and offline, the temporary venv sees the dependencies already installed for
the running interpreter (numpy, numba ...) through a ``.pth`` line naming this
environment's site-packages, and pip builds without isolation (``--no-build-isolation``,
setuptools>=70.1 from the ``test`` extra) and without an index (``--no-index``): every
dependency must already be satisfied, and nothing is downloaded. fastnn itself is built
into a wheel and installed into the temporary venv's own site-packages, which comes first
on its path, so the copy under test is the installed one (checked), never the checkout.
Training uses the NumPy backend: a fresh install would otherwise spend about a minute
compiling the Numba kernels into its own cache.
"""

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env, timeout=300):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin directory of a venv with fastnn installed from a wheel, environment, working dir)."""
    pytest.importorskip("setuptools", minversion="70.1", reason="the offline build needs setuptools>=70.1 "
                                                                 "(pip install '.[test]')")
    root = tmp_path_factory.mktemp("install")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, os.environ.copy())
    purelib = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # after the venv's own site-packages: this environment's packages (the dependencies, pip, setuptools)
    ours = [p for p in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *site.getsitepackages()}
            if Path(p).is_dir()]
    (purelib / "zz_parent_env.pth").write_text("\n".join(sorted(ours)) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FASTNN_", "PIP_"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", XDG_CACHE_HOME=str(root / "cache"),
               HOME=str(root / "home"), PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    (root / "home").mkdir()
    # a copy of the checkout, so that the build leaves nothing (build/, *.egg-info) in the real one
    src = root / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "*.egg-info", "build", "dist", "__pycache__", ".*venv*", "runs", "bench_results", ".pytest_cache",
        ".hypothesis", ".benchmarks", ".notes"))
    _run([venv / "bin" / "python", "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-cache-dir",
          str(src)], root, env, timeout=600)
    work = root / "elsewhere"
    work.mkdir()
    return venv / "bin", env, work


def test_installed_package_is_the_wheel_with_data_license_and_reference(installed):
    bin_dir, env, work = installed
    code = ("import fastnn, fastnn.bench, importlib.metadata as m; from fastnn.datasets import dataset_info; "
            "info = dataset_info('mnist', download=False); "
            "print(fastnn.__file__); print(info.source, info.directory); "
            "print(m.metadata('fastnn')['License']); print(fastnn.bench.available_runners(['reference']))")
    lines = _run([bin_dir / "python", "-c", code], work, env).stdout.splitlines()
    site_packages = str(bin_dir.parent / "lib")
    assert lines[0].startswith(site_packages) and "/src/" not in lines[0]  # the installed copy, not the checkout
    source, directory = lines[1].split(" ", 1)
    assert source == "package" and directory.startswith(site_packages) and directory.endswith("fastnn/data/mnist")
    assert lines[2] == "MIT"
    assert lines[3] == "(['reference'], {})"  # fastnn-bench has its reference column
    license_files = list((bin_dir.parent / "lib").glob("python*/site-packages/fastnn-*.dist-info/licenses/LICENSE"))
    assert license_files and "MIT License" in license_files[0].read_text()
    for command in ("fastnn-train", "fastnn-evaluate", "fastnn-export", "fastnn-sweep", "fastnn-bench"):
        out = _run([bin_dir / command, "--version"], work, env).stdout
        assert out.strip().startswith(f"{command} 0."), out


def test_installed_fastnn_trains_mnist_offline_from_another_directory(installed):
    bin_dir, env, work = installed
    proc = _run([bin_dir / "fastnn-train", "--layers", "32", "--epochs", "1", "--train-limit", "3000",
                 "--backend", "numpy", "--no-plots"], work, env)
    assert "mnist (3000 train, 10000 test)" in proc.stdout and "test accuracy: 0." in proc.stdout
    assert proc.stderr.count("Epoch 1/1 - ") == 1  # a pipe: one plain line for the epoch
    run_folder = proc.stdout.splitlines()[-1].removeprefix("run folder: ")
    assert (work / run_folder / "model.fastnn").is_file() and run_folder.startswith("runs/")
    evaluated = _run([bin_dir / "fastnn-evaluate", f"{run_folder}/model.fastnn", "--backend", "numpy"], work, env)
    assert evaluated.stdout.startswith("mnist test set (10000 images)")  # the recorded data set
