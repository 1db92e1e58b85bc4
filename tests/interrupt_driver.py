"""Run fastnn-train and send this process a signal at a chosen moment (for test_run_folder.py).

    python interrupt_driver.py MOMENT SIGNAL -- <fastnn-train arguments>

MOMENT is ``step:S`` (right after the chunk of steps that takes the optimizer past global
step S: in the middle of an epoch when an epoch has several chunks), ``saving:N`` (inside
the writing of epoch N's checkpoint files, after history.csv and before summary.json and the
model), ``rename:N`` (epoch N's model.fastnn is complete in its temporary file, not yet
renamed over the previous one) or ``final`` (while the finished run's outputs are written).
Patching instead of sleeping makes the moment exact on a loaded machine.
"""

import os
import signal
import sys

import fastnn.cli as cli
import fastnn.model as model_module

moment, sig_name = sys.argv[1], sys.argv[2]
argv = sys.argv[sys.argv.index("--") + 1:]
sig = getattr(signal, sig_name)
kind, _, value = moment.partition(":")


def fire():
    os.kill(os.getpid(), sig)


if kind == "step":
    real_get_backend = model_module.get_backend

    class Proxy:
        def __init__(self, backend):
            self._backend = backend

        def __getattr__(self, name):
            return getattr(self._backend, name)

        def train_steps(self, *args, **kwargs):
            opt = args[7]
            before = int(opt.step[0])
            done = self._backend.train_steps(*args, **kwargs)
            if before <= int(value) < int(opt.step[0]):
                fire()
            return done

    model_module.get_backend = lambda name: Proxy(real_get_backend(name))
elif kind in ("saving", "final"):
    real_write = cli.RunRecorder.write

    def write(self, status, **extra):
        if (kind == "saving" and status == "running" and extra.get("epochs_completed") == int(value)) or \
                (kind == "final" and status == "complete"):
            fire()
        return real_write(self, status, **extra)

    cli.RunRecorder.write = write
elif kind == "rename":
    real_replace, renames = os.replace, []

    def replace(src, dst, **kwargs):
        if os.path.basename(dst) == "model.fastnn":
            renames.append(dst)
            if len(renames) == int(value):
                fire()
        return real_replace(src, dst, **kwargs)

    os.replace = replace  # fastnn.atomic renames through os.replace
else:
    sys.exit(f"unknown moment {moment!r}")

sys.exit(cli.train_main(argv))
