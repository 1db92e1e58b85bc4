"""Time to accuracy: seconds of training until a recipe first reaches a test accuracy.

Trains one of the README's recipes (``RECIPES``) with fastnn (``MLP.fit``, Numba backend) or
with PyTorch on CPU (the same network, initial weights, optimizer, schedule, batch size, label
smoothing and augmentation), evaluates the test set after every epoch *outside* the training
clock, and writes the run's record: per epoch the cumulative training seconds (wall and process
CPU time) and the test accuracy, the epoch and seconds at which each threshold was first
reached, the commit, machine, threads and load average before and after.

    python benchmarks/time_to_accuracy.py mnist-1600-aug --threads 1 --stop --record
    python benchmarks/time_to_accuracy.py mnist-defaults --engine torch --threads 2 --record

``--record`` keeps it under ``benchmarks/results/tta/`` (``python benchmarks/results.py record
tta FILE`` does the same for a written ``--out`` file); ``python benchmarks/results.py write``
then regenerates the README's time-to-accuracy table. ``--stop`` ends the run once its data
set's highest threshold is reached (the schedule still spans the recipe's epochs, so the
epochs up to there are those of the full run).

Process CPU time adds every thread's time: on one thread it is about the wall time of an
unloaded machine, a steadier number on a shared one.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ROOT / "benchmarks" / "sweeps"
THRESHOLDS = {"mnist": (0.98, 0.99), "kmnist": (0.90, 0.95)}
ENGINES = ("fastnn", "torch")

# name -> (what it is, its fastnn-train options: argv, or (sweep file, run name))
RECIPES = {
    "mnist-defaults": ("`fastnn-train --dataset mnist` (the defaults: 784-128-64-10, Adam lr 3e-3, cosine, "
                       "batch 128, 5 epochs)", ["--dataset", "mnist"]),
    "kmnist-defaults": ("`fastnn-train --dataset kmnist` (the defaults)", ["--dataset", "kmnist"]),
    "kmnist-128-64-32-nesterov": ("seed recipe 784-128-64-32-10, Nesterov SGD lr 0.05, weight decay 5e-4, "
                                  "cosine, 10 epochs (`seeds.toml`, here on all 60,000 images)",
                                  ("seeds.toml", "kmnist-128-64-32-relu-nesterov-l2")),
    "mnist-1600-aug": ("accuracy recipe 784-1600-10, Nesterov SGD lr 0.2, cosine, label smoothing 0.1, "
                       "augmentation, 35 epochs (`best.toml`)", ("best.toml", "mnist-mlp-1600-aug")),
    "kmnist-1600-aug": ("accuracy recipe 784-1600-10 with half the augmentation, 80 epochs (`best.toml`; "
                        "test-time views off: plain test accuracy)", ("best.toml", "kmnist-mlp-1600-aug")),
}
# per-epoch evaluation is of the plain test set on all training rows: no held-out split, no views
OVERRIDES = {"val_split": 0.0, "tta": 0}


def recipe_argv(name):
    """fastnn-train's options of recipe ``name`` (without --threads, --out, --verbose)."""
    from fastnn.sweep import expand_config, options_to_argv

    spec = RECIPES[name][1]
    if isinstance(spec, list):
        return list(spec)
    path, run = SWEEPS / spec[0], spec[1]
    with open(path, "rb") as f:
        options = expand_config(tomllib.load(f), str(path))[run]["options"]
    options = {k: v for k, v in {**options, **OVERRIDES}.items() if k not in ("verbose", "threads", "out")}
    return options_to_argv(options)


def build(argv, threads):
    """(parsed fastnn-train args, the untrained fastnn model) of a recipe, threads set."""
    from fastnn import cli

    args = cli.build_train_parser().parse_args([*argv, "--threads", str(threads)])
    if args.architecture is not None:
        raise ValueError("time_to_accuracy runs MLP recipes (--layers), not --architecture")
    setup = cli._setup_training(args)  # the model exactly as fastnn-train builds it; sets the threads
    model = setup["model"]
    augment = setup["common"]["augment"]
    if any(augment.values()):
        model = type(model).from_config({**model.get_config(), "augment": {**augment, "image_shape": (28, 28)}})
    return args, model


class Clock:
    """Cumulative training seconds (wall and process CPU) over the spans between start and stop."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def start(self):
        self._w, self._c = time.perf_counter(), time.process_time()

    def stop(self):
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


class Tracker:
    """After each epoch: stop the clock, evaluate (untimed), note thresholds; ``done`` once the
    highest is reached and ``stop`` was asked."""

    def __init__(self, evaluate, thresholds, stop):
        self.evaluate, self.thresholds, self.stop = evaluate, thresholds, stop
        self.clock, self.epochs, self.eval_seconds = Clock(), [], 0.0

    def epoch_end(self):
        self.clock.stop()
        t = time.perf_counter()
        acc = float(self.evaluate())
        self.eval_seconds += time.perf_counter() - t
        self.epochs.append({"epoch": len(self.epochs) + 1, "train_seconds": self.clock.wall,
                            "cpu_seconds": self.clock.cpu, "test_accuracy": acc})
        return self.stop and acc >= max(self.thresholds)

    def reached(self):
        """{threshold as text: first epoch at or above it (its record), or None}."""
        return {f"{t:g}": next((e for e in self.epochs if e["test_accuracy"] >= t), None) for t in self.thresholds}


def train_fastnn(args, model, data, tracker):
    """``MLP.fit`` over the recipe's epochs, compiled first (untimed) as fastnn-train does."""
    from fastnn import cli
    from fastnn.callbacks import Callback

    (x, y), (xt, yt) = data
    model.build(x.shape[1], 10)
    compile_s = cli.warm_up(model, x, y, args.batch_size)

    class Hook(Callback):
        def on_epoch_begin(self, epoch, logs=None):
            tracker.clock.start()

        def on_epoch_end(self, epoch, logs=None):
            if tracker.epoch_end():
                self.model.stop_training = True

    tracker.evaluate = lambda: model.evaluate(xt, yt, return_dict=True)["accuracy"]
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, callbacks=[Hook()], seed=args.seed, verbose=0)
    return compile_s


def torch_model(model):
    """A torch ``nn.Sequential`` of ``model``'s dense layers holding its current (initial) weights."""
    import torch
    from torch import nn

    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if model.dropout or model.batch_norm or model.activation not in acts:
        raise ValueError("the torch engine runs plain dense recipes (no dropout or batch norm)")
    w = model.get_weights()
    mods = []
    for i in range(0, len(w), 2):
        lin = nn.Linear(*w[i].shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w[i].T)))
            lin.bias.copy_(torch.from_numpy(w[i + 1]))
        mods += [lin] + ([acts[model.activation]()] if i + 2 < len(w) else [])
    return nn.Sequential(*mods)


def torch_optimizer(opt, params):
    """The torch optimizer of fastnn optimizer ``opt`` (both follow PyTorch's semantics)."""
    import torch

    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, nesterov=opt.nesterov,
                               weight_decay=opt.weight_decay)
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps,
                                weight_decay=opt.weight_decay)
    raise ValueError(f"the torch engine runs sgd and adam recipes, got {opt.name!r}")


def train_torch(args, model, data, tracker):
    """A plain PyTorch loop: the recipe's network from fastnn's initial weights, its optimizer,
    fastnn's per-step schedule, label smoothing, a fresh permutation each epoch; augmented
    recipes get fastnn's compiled augmentation of each batch (counted in the training time)."""
    import torch
    from torch import nn

    from fastnn.backends.augment import augment_rows

    (x, y), (xt, yt) = data
    torch.set_num_threads(args.threads)
    model.build(x.shape[1], 10)
    net = torch_model(model)
    opt = torch_optimizer(model.optimizer, net.parameters())
    loss_fn = nn.CrossEntropyLoss(label_smoothing=model.label_smoothing)
    xs, ys, x_test = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), torch.from_numpy(xt)
    aug = model._aug()
    buf = np.empty((args.batch_size, x.shape[1]), np.float32)
    bs, n = args.batch_size, len(x)
    steps = math.ceil(n / bs)
    rng = np.random.default_rng(args.seed)

    def evaluate():
        net.eval()
        with torch.no_grad():
            pred = torch.cat([net(x_test[i:i + 10000]).argmax(1) for i in range(0, len(x_test), 10000)])
        net.train()
        return float((pred.numpy() == yt).mean())

    tracker.evaluate = evaluate
    t0 = time.perf_counter()
    if aug[0]:  # load the compiled augmentation before the clock starts, as fastnn's warm-up does
        augment_rows(x, np.arange(min(bs, n), dtype=np.int64), 28, 28, aug, args.seed, 0, buf[:min(bs, n)])
    compile_s = time.perf_counter() - t0
    for epoch in range(args.epochs):
        tracker.clock.start()
        order = rng.permutation(n).astype(np.int64)
        lrs = model.optimizer.learning_rates(epoch * steps, steps, args.epochs * steps, steps)
        for s in range(steps):
            idx = order[s * bs:(s + 1) * bs]
            if aug[0]:
                augment_rows(x, idx, 28, 28, aug, args.seed, epoch * steps + s, buf[:len(idx)])
                xb = torch.from_numpy(buf[:len(idx)])
            else:
                xb = xs[torch.from_numpy(idx)]
            for group in opt.param_groups:
                group["lr"] = float(lrs[s])
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xb), ys[torch.from_numpy(idx)]).backward()
            opt.step()
        if tracker.epoch_end():
            break
    return compile_s


def load(dataset, train_limit=None, test_limit=None):
    from fastnn.datasets import load_dataset

    (x, y), (xt, yt) = load_dataset(dataset, download=False)
    return (x[:train_limit], y[:train_limit]), (xt[:test_limit], yt[:test_limit])


def run(recipe, engine="fastnn", threads=1, stop=False, train_limit=None, test_limit=None, epochs=None):
    """Train ``recipe`` and return its record (a dict; see the module docstring)."""
    from fastnn.cli import versions
    from fastnn.provenance import load_average, provenance

    argv = recipe_argv(recipe) + (["--epochs", str(epochs)] if epochs else [])
    args, model = build(argv, threads)
    data = load(args.dataset, train_limit, test_limit)
    tracker = Tracker(None, THRESHOLDS[args.dataset], stop)
    vers = versions()
    if engine == "torch":
        import torch

        vers["torch"] = torch.__version__
    origin = provenance()
    compile_s = (train_torch if engine == "torch" else train_fastnn)(args, model, data, tracker)
    best = max(e["test_accuracy"] for e in tracker.epochs)
    return {
        "table": "tta", "name": f"{recipe}-{engine}-t{threads}", "recipe": recipe, "engine": engine,
        "about": RECIPES[recipe][0], "dataset": args.dataset, "argv": argv, "threads": threads,
        "thresholds": list(THRESHOLDS[args.dataset]), "epochs_planned": args.epochs, "stopped_early": len(tracker.epochs) < args.epochs,
        "n_train": len(data[0][0]), "n_test": len(data[1][0]),
        "epochs": tracker.epochs, "reached": tracker.reached(), "best_accuracy": best,
        "train_seconds": tracker.clock.wall, "cpu_seconds": tracker.clock.cpu,
        "eval_seconds": tracker.eval_seconds, "compile_seconds": compile_s,
        "provenance": {**origin, "load_average_end": load_average()}, "versions": vers,
    }


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/time_to_accuracy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", choices=sorted(RECIPES))
    p.add_argument("--engine", choices=ENGINES, default="fastnn")
    p.add_argument("--threads", type=int, default=1, help="threads for Numba, BLAS and PyTorch (default 1)")
    p.add_argument("--stop", action="store_true", help="stop once the data set's highest threshold is reached")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (smoke tests; changes the schedule)")
    p.add_argument("--train-limit", type=int, help="train on the first N images only (smoke tests)")
    p.add_argument("--test-limit", type=int, help="evaluate on the first N test images only (smoke tests)")
    p.add_argument("--out", help="write the record (JSON) here")
    p.add_argument("--record", action="store_true", help="record it under benchmarks/results/tta/")
    args = p.parse_args(argv)
    rec = run(args.recipe, args.engine, args.threads, args.stop, args.train_limit, args.test_limit, args.epochs)
    for e in rec["epochs"]:
        print(f"epoch {e['epoch']}: {e['train_seconds']:.2f} s (CPU {e['cpu_seconds']:.2f} s), "
              f"test {100 * e['test_accuracy']:.2f}%", flush=True)
    for t, e in rec["reached"].items():
        print(f"{100 * float(t):g}%: " + (f"epoch {e['epoch']}, {e['train_seconds']:.2f} s" if e else
                                          f"not reached in {len(rec['epochs'])} epochs, best "
                                          f"{100 * rec['best_accuracy']:.2f}%"))
    if args.out:
        Path(args.out).write_text(json.dumps(rec, indent=1) + "\n")
    if args.record:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import results

        print("recorded", results.record_tta(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
