"""fastnn.MLPClassifier against scikit-learn's own MLPClassifier, same configuration.

Both estimators get the same float32 MNIST rows, hidden layers, solver, learning rate,
alpha, batch size and number of epochs (``tol=0`` so neither stops early), one thread
each (Numba and every BLAS pool limited through threadpoolctl), and run round-robin in
this one process after a warm-up fit (Numba's compilation is never timed). Reported:
median CPU seconds (user + system, from ``resource.getrusage``) and wall seconds per
fit, their ratio, test accuracy, and the load average before and after.

    python benchmarks/sklearn_compare.py --epochs 5 --repeats 3
"""

import argparse
import os
import resource
import statistics
import time
import warnings

os.environ.setdefault("NUMBA_NUM_THREADS", "1")  # before fastnn imports Numba

import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import fastnn  # noqa: E402


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed_fit(est, x, y):
    c0, w0 = cpu_seconds(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x, y)
    return cpu_seconds() - c0, time.perf_counter() - w0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--layers", type=int, nargs="+", default=[128, 64])
    p.add_argument("--solver", choices=["adam", "sgd"], default="adam")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-limit", type=int, default=None)
    args = p.parse_args(argv)

    (x, y), (x_test, y_test) = fastnn.load_dataset(args.dataset, download=False)
    x, y = x[: args.train_limit], y[: args.train_limit]
    config = dict(hidden_layer_sizes=tuple(args.layers), solver=args.solver, alpha=1e-4, batch_size=args.batch_size,
                  learning_rate_init=1e-3 if args.solver == "adam" else 0.01, max_iter=args.epochs, tol=0.0,
                  random_state=0)
    runners = {"fastnn": lambda: fastnn.MLPClassifier(**config, threads=1),
               "scikit-learn": lambda: SkMLPClassifier(**config)}
    load_before = os.getloadavg()
    with threadpool_limits(limits=1):
        timed_fit(runners["fastnn"]().set_params(max_iter=1), x[:2000], y[:2000])  # compile (or load the cache)
        times = {name: [] for name in runners}
        accuracy = {}
        for _ in range(args.repeats):
            for name, make in runners.items():
                est = make()
                times[name].append(timed_fit(est, x, y))
                accuracy[name] = est.score(x_test, y_test)
    load_after = os.getloadavg()

    print(f"{args.dataset} {len(x)} rows, 784-{'-'.join(map(str, args.layers))}-10, {args.solver}, batch "
          f"{args.batch_size}, {args.epochs} epochs, 1 thread, float32 input, median of {args.repeats}; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print("| estimator | CPU s per fit | wall s per fit | test accuracy |")
    print("|---|---|---|---|")
    med = {name: (statistics.median(c for c, _ in t), statistics.median(w for _, w in t)) for name, t in times.items()}
    for name in runners:
        print(f"| {name} | {med[name][0]:.2f} | {med[name][1]:.2f} | {accuracy[name]:.4f} |")
    ratio = med["scikit-learn"][0] / med["fastnn"][0]
    print(f"fastnn is {ratio:.1f}x faster in CPU time ({med['scikit-learn'][1] / med['fastnn'][1]:.1f}x in wall time)")


if __name__ == "__main__":
    main()
