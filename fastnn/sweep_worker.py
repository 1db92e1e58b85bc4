"""The process of one ``fastnn-sweep`` run: ``fastnn-train`` that never outlives its sweep.

``python -m fastnn.sweep_worker <fastnn-train argv>`` runs exactly ``fastnn-train``, after
asking the Linux kernel to send it SIGTERM when the sweep that started it dies, even by
SIGKILL (``prctl(PR_SET_PDEATHSIG)``); fastnn-train then saves its finished epochs and exits.
The sweep passes its pid in ``FASTNN_SWEEP_PID``; a sweep already gone by the time the
request is made (a race at start-up) ends the worker at once. Elsewhere the request is
skipped: the sweep still ends its workers when it exits or gets a signal.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2


def die_with_parent(parent_pid):
    """Have the kernel SIGTERM this process when ``parent_pid`` (its parent) dies; Linux only."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = ctypes.c_int(0)
        libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(current))
        if current.value == 0:  # keep a signal the starter chose (a Dask worker's SIGKILL)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return
    if parent_pid and os.getppid() != parent_pid:  # the sweep died before the request took effect
        sys.exit(128 + signal.SIGTERM)


def main(argv=None):
    die_with_parent(int(os.environ.get("FASTNN_SWEEP_PID", "0") or 0))
    from .cli import train_main

    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
