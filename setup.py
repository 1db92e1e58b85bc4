import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "fastnn" / "__init__.py").read_text()).group(1)

setup(
    name="fastnn",
    version=VERSION,
    description="Readable MLP training on MNIST-style data with Numba-compiled kernels",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    # MNIST ships inside the package so that an installed fastnn trains offline from any
    # directory. The files are tracked once, in the repository's top-level data/mnist/;
    # the "fastnn.data" mapping copies them into the wheel as fastnn/data/mnist/ (and
    # into the sdist), where fastnn.datasets looks for its packaged copy.
    packages=find_packages(include=["fastnn", "fastnn.*"]) + ["fastnn.data"],
    package_dir={"fastnn.data": "data"},
    package_data={"fastnn.data": ["mnist/*.gz"]},
    # numpy>=2.4 (below) needs Python 3.11. The whole test suite was run on 3.11.7, 3.12.1 and
    # 3.13.0 (README, "Quick start"); 3.14 is not claimed until it has been tried.
    python_requires=">=3.11,<3.14",
    # Floors are the versions the test suite has passed with. numba 0.60 / numpy 1.26 failed
    # (NumPy 1.x scalar promotion breaks the uint64 random-number hashing), so older stacks
    # are not claimed.
    install_requires=[
        "numba>=0.68.1",
        "numpy>=2.4",
        "scipy>=1.17",
        "matplotlib>=3.11",
        "tqdm>=4.70",
        # BLAS thread counts of every copy (NumPy's, SciPy's, MKL ...): fastnn.backends.blas
        "threadpoolctl>=3.1",
    ],
    extras_require={
        # setuptools>=70.1 builds wheels without the separate `wheel` package: the install
        # test builds and installs fastnn into a temporary venv offline (no build isolation).
        "test": ["pytest>=9.0", "pytest-benchmark>=5.3", "hypothesis>=6.170", "setuptools>=70.1"],
        # fastnn.MLPClassifier (scikit-learn's estimator interface and checks)
        "sklearn": ["scikit-learn>=1.9"],
        # model.to_onnx / fastnn-export, and the tests that run the export in onnxruntime
        "onnx": ["onnx>=1.23", "onnxruntime>=1.32"],
        # fastnn-sweep --scheduler: runs on a Dask distributed cluster (fastnn/sweep_dask.py)
        "cluster": ["distributed>=2026.8"],
    },
    entry_points={
        "console_scripts": [
            "fastnn-train=fastnn.cli:train_main",
            "fastnn-evaluate=fastnn.cli:evaluate_main",
            "fastnn-bench=fastnn.bench:main",
            "fastnn-sweep=fastnn.sweep:main",
            "fastnn-export=fastnn.cli:export_main",
        ]
    },
    # The licence is the `license` field above (classifiers for it are deprecated).
    classifiers=["Programming Language :: Python :: 3", "Programming Language :: Python :: 3.11",
                 "Programming Language :: Python :: 3.12", "Programming Language :: Python :: 3.13",
                 "Operating System :: POSIX :: Linux"],
)
