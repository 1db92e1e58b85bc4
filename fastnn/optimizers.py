"""Optimizers (SGD, RMSprop, Adam) and learning-rate schedules.

An optimizer object holds its hyperparameters and owns its state buffers
(``spec.OptBuffers``: velocity / moment slots over the flat parameter buffer and
the step count). The update arithmetic runs in the backend, with PyTorch
semantics so that results can be checked against other frameworks:

* SGD: ``v = momentum * v + g``; ``p -= lr * v`` (Nesterov: ``p -= lr * (g + momentum * v)``);
  with ``momentum=0`` simply ``p -= lr * g`` where ``g`` is the gradient of the
  batch-mean loss.
* RMSprop: ``s = alpha * s + (1 - alpha) * g**2``; ``p -= lr * g / (sqrt(s) + eps)``
  (with an optional momentum buffer).
* Adam: bias-corrected first and second moments, ``eps`` added outside the sqrt.

``weight_decay`` is classic L2 decay, added to the gradient (``g += wd * p``)
before the update, as ``torch.optim`` does.

A schedule maps (step, total steps) to a learning rate; the model evaluates it
for every optimizer step and passes the rates to the backend as a float64 array.
Schedules whose shape depends on the run's length (cosine, one-cycle) take that length,
their horizon, as ``total_epochs`` or ``total_steps`` (Keras' ``decay_steps``, PyTorch's
``total_steps``); without one, the horizon is the ``epochs`` of the ``fit`` call (see
``HorizonSchedule``).
"""

import numpy as np

from .backends import spec as S
from .validation import (
    Configurable, Interval, NoneValue, Boolean, InstanceOf, Options, SCHEDULE_NAMES, POSITIVE_REAL,
    NON_NEGATIVE_REAL, POSITIVE_INT, check_params, check_value,
)


# Learning-rate schedules ----------------------------------------------------

class Schedule(Configurable):
    """Base class: ``rates(lr, steps, total_steps, steps_per_epoch)`` -> float64 array."""

    name = "constant"

    def rates(self, lr, steps, total_steps, steps_per_epoch):
        """Learning rate for each global step index in ``steps`` (int array, 0-based)."""
        return np.full(len(steps), lr, dtype=np.float64)


class Constant(Schedule):
    """The base learning rate throughout."""


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs (PyTorch StepLR)."""

    name = "step"

    def __init__(self, step_size=5, gamma=0.1):
        check_params({"step_size": step_size, "gamma": gamma},
                     {"step_size": POSITIVE_INT, "gamma": Interval("real", 0, 1, closed="right")})
        self.step_size, self.gamma = int(step_size), float(gamma)

    def rates(self, lr, steps, total_steps, steps_per_epoch):
        epoch = np.asarray(steps) // steps_per_epoch
        return lr * self.gamma ** (epoch // self.step_size).astype(np.float64)

    def get_config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}


class HorizonSchedule(Schedule):
    """A schedule over a horizon: the number of optimizer steps its shape spans.

    ``total_steps`` (optimizer steps) or ``total_epochs`` (epochs of ``fit``'s batches) fix the
    horizon, so that the rate of a step never depends on how training is split into ``fit``
    calls: ``fit(epochs=2)``, ``save``, ``load``, ``fit(epochs=4, initial_epoch=2)`` gives the
    same bits as ``fit(epochs=4)``. Without either (None, the default) the horizon is the
    ``epochs`` of the ``fit`` call that runs it: a single ``fit``, and a run resumed with that
    same ``epochs`` (``initial_epoch``, ``BackupAndRestore``, ``fastnn-train --resume``), follow
    one schedule, but a first call cannot know a longer run that follows it.
    """

    def __init__(self, total_epochs=None, total_steps=None):
        length = [Interval("int", 1, 2**53), NoneValue()]  # 2**53: step / length stays exact in float64
        check_params({"total_epochs": total_epochs, "total_steps": total_steps},
                     {"total_epochs": length, "total_steps": length})
        if total_epochs is not None and total_steps is not None:
            raise ValueError(f"give total_epochs or total_steps, not both; got total_epochs={total_epochs}, "
                             f"total_steps={total_steps}")
        self.total_epochs = None if total_epochs is None else int(total_epochs)
        self.total_steps = None if total_steps is None else int(total_steps)

    def horizon(self, total_steps, steps_per_epoch):
        """Steps the schedule spans: its own horizon, else ``total_steps`` (the fit's)."""
        if self.total_steps is not None:
            return self.total_steps
        if self.total_epochs is not None:
            return self.total_epochs * steps_per_epoch
        return total_steps

    def get_config(self):
        # only when given: configs (and files) of schedules without a horizon stay as they were
        return {k: v for k, v in (("total_epochs", self.total_epochs), ("total_steps", self.total_steps))
                if v is not None}


class CosineDecay(HorizonSchedule):
    """Cosine annealing from ``lr`` to ``lr * final_fraction`` over the horizon, per step
    (then ``lr * final_fraction``); ``total_epochs`` / ``total_steps``: see HorizonSchedule."""

    name = "cosine"

    def __init__(self, final_fraction=0.0, total_epochs=None, total_steps=None):
        check_value("final_fraction", final_fraction, Interval("real", 0, 1))
        self.final_fraction = float(final_fraction)
        super().__init__(total_epochs, total_steps)

    def rates(self, lr, steps, total_steps, steps_per_epoch):
        t = np.asarray(steps, dtype=np.float64) / max(self.horizon(total_steps, steps_per_epoch), 1)
        lo = lr * self.final_fraction
        return lo + (lr - lo) * 0.5 * (1.0 + np.cos(np.pi * np.clip(t, 0.0, 1.0)))

    def get_config(self):
        return {"final_fraction": self.final_fraction, **super().get_config()}


class OneCycle(HorizonSchedule):
    """One-cycle policy (PyTorch OneCycleLR, cosine annealing, no momentum cycling).

    Warm up from ``lr / div_factor`` to ``lr`` over the first ``pct_start`` of the
    horizon's steps, then anneal to ``lr / (div_factor * final_div_factor)``;
    ``total_epochs`` / ``total_steps``: see HorizonSchedule.
    """

    name = "onecycle"

    def __init__(self, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, total_epochs=None, total_steps=None):
        check_params(
            {"pct_start": pct_start, "div_factor": div_factor, "final_div_factor": final_div_factor},
            {"pct_start": Interval("real", 0, 1, closed="neither"), "div_factor": Interval("real", 1),
             "final_div_factor": Interval("real", 1)},
        )
        self.pct_start, self.div_factor, self.final_div_factor = float(pct_start), float(div_factor), float(final_div_factor)
        super().__init__(total_epochs, total_steps)

    def rates(self, lr, steps, total_steps, steps_per_epoch):
        steps = np.asarray(steps, dtype=np.float64)
        total_steps = self.horizon(total_steps, steps_per_epoch)
        start, end = lr / self.div_factor, lr / (self.div_factor * self.final_div_factor)
        up = max(self.pct_start * total_steps - 1.0, 1.0)
        down = max(total_steps - 1.0 - up, 1.0)

        def anneal(a, b, frac):
            return b + (a - b) * 0.5 * (1.0 + np.cos(np.pi * np.clip(frac, 0.0, 1.0)))

        return np.where(steps <= up, anneal(start, lr, steps / up), anneal(lr, end, (steps - up) / down))

    def get_config(self):
        return {"pct_start": self.pct_start, "div_factor": self.div_factor, "final_div_factor": self.final_div_factor,
                **super().get_config()}


SCHEDULES = {"none": Constant, "constant": Constant, "step": StepDecay, "cosine": CosineDecay, "onecycle": OneCycle}


def get_schedule(schedule):
    """A Schedule from a name ('none', 'step', 'cosine', 'onecycle'), an object or None."""
    check_value("schedule", schedule, [Options(*SCHEDULE_NAMES, "constant"), InstanceOf(Schedule, "Schedule"), NoneValue()])
    if schedule is None:
        return Constant()
    if isinstance(schedule, Schedule):
        return schedule
    return SCHEDULES[schedule]()


def schedule_to_config(schedule):
    return {"name": schedule.name, "config": schedule.get_config()}


def schedule_from_config(cfg):
    return SCHEDULES[cfg["name"]](**cfg.get("config", {}))


# Optimizers ------------------------------------------------------------------

class Optimizer:
    """Base optimizer: hyperparameters, a schedule and the state buffers it owns.

    Parameters
    ----------
    lr : float > 0
        Base learning rate (the schedule scales it per step).
    weight_decay : float >= 0
        L2 penalty added to the gradient.
    schedule : {'none', 'step', 'cosine', 'onecycle'}, Schedule or None
    """

    name = None
    code = None
    default_lr = 0.01

    def __init__(self, lr=None, weight_decay=0.0, schedule=None):
        lr = self.default_lr if lr is None else lr
        check_params({"lr": lr, "weight_decay": weight_decay}, {"lr": POSITIVE_REAL, "weight_decay": NON_NEGATIVE_REAL})
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.schedule = get_schedule(schedule)
        self.buffers = None

    def hparams(self):
        """The (4,) float64 hyperparameter vector the backend expects for this optimizer."""
        raise NotImplementedError

    def build(self, n_params, dtype=np.float32):
        """Allocate (or reset) the state buffers for ``n_params`` parameters of ``dtype`` (the model's)."""
        self.buffers = S.OptBuffers(self.code, self.hparams(), S.aligned_zeros((2, n_params), dtype), np.zeros(1, np.int64))
        return self.buffers

    def reset(self):
        if self.buffers is not None:
            self.buffers.slots[...] = 0.0
            self.buffers.step[...] = 0

    @property
    def iterations(self):
        """Number of updates applied so far."""
        return 0 if self.buffers is None else int(self.buffers.step[0])

    def learning_rates(self, first_step, n_steps, total_steps, steps_per_epoch):
        """float64 (n_steps,) learning rates for the steps first_step .. first_step + n_steps - 1."""
        steps = np.arange(first_step, first_step + n_steps)
        return np.ascontiguousarray(self.schedule.rates(self.lr, steps, total_steps, steps_per_epoch), dtype=np.float64)

    def get_config(self):
        return {"lr": self.lr, "weight_decay": self.weight_decay, "schedule": schedule_to_config(self.schedule)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = schedule_from_config(config.get("schedule", {"name": "none"}))
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "schedule")
        return f"{type(self).__name__}({args}, schedule={self.schedule!r})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum; PyTorch semantics."""

    name, code, default_lr = "sgd", S.OPT_SGD, 0.01

    def __init__(self, lr=None, momentum=0.0, nesterov=False, weight_decay=0.0, schedule=None):
        check_params({"momentum": momentum, "nesterov": nesterov},
                     {"momentum": Interval("real", 0, 1, closed="left"), "nesterov": Boolean()})
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0, got momentum=0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        super().__init__(lr, weight_decay, schedule)

    def hparams(self):
        return np.array([self.momentum, float(self.nesterov), self.weight_decay, 0.0])

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(Optimizer):
    """RMSprop (PyTorch semantics: eps outside the square root, optional momentum)."""

    name, code, default_lr = "rmsprop", S.OPT_RMSPROP, 0.001

    def __init__(self, lr=None, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, schedule=None):
        check_params({"alpha": alpha, "eps": eps, "momentum": momentum},
                     {"alpha": Interval("real", 0, 1, closed="left"), "eps": POSITIVE_REAL,
                      "momentum": Interval("real", 0, 1, closed="left")})
        self.alpha, self.eps, self.momentum = float(alpha), float(eps), float(momentum)
        super().__init__(lr, weight_decay, schedule)

    def hparams(self):
        return np.array([self.alpha, self.eps, self.weight_decay, self.momentum])

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "eps": self.eps, "momentum": self.momentum}


class Adam(Optimizer):
    """Adam (PyTorch semantics: L2 weight decay added to the gradient, bias correction)."""

    name, code, default_lr = "adam", S.OPT_ADAM, 0.001

    def __init__(self, lr=None, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, schedule=None):
        check_params({"beta1": beta1, "beta2": beta2, "eps": eps},
                     {"beta1": Interval("real", 0, 1, closed="left"), "beta2": Interval("real", 0, 1, closed="left"),
                      "eps": POSITIVE_REAL})
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        super().__init__(lr, weight_decay, schedule)

    def hparams(self):
        return np.array([self.beta1, self.beta2, self.eps, self.weight_decay])

    def get_config(self):
        return {**super().get_config(), "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


OPTIMIZERS = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}


def get_optimizer(optimizer, lr=None, weight_decay=0.0, schedule=None, **kwargs):
    """An Optimizer from a name ('sgd', 'adam', 'rmsprop') or an Optimizer object.

    ``lr``, ``weight_decay``, ``schedule`` and extra keyword arguments (e.g.
    ``momentum``) configure an optimizer given by name; an object is used as is.
    """
    check_value("optimizer", optimizer, [Options(*OPTIMIZERS), InstanceOf(Optimizer, "fastnn.optimizers.Optimizer")])
    if isinstance(optimizer, Optimizer):
        return optimizer
    return OPTIMIZERS[optimizer](lr=lr, weight_decay=weight_decay, schedule=schedule, **kwargs)


def optimizer_to_config(opt):
    return {"name": opt.name, "config": opt.get_config()}


def optimizer_from_config(cfg):
    try:
        cls = OPTIMIZERS[cfg["name"]]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer entry {cfg!r}; expected one of {sorted(OPTIMIZERS)}") from None
    return cls.from_config(cfg.get("config", {}))
