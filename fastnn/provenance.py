"""Where a result came from: the code's commit, the machine and how busy it was.

``fastnn-train`` stores ``provenance()`` in every ``summary.json``, so a number quoted from a
run (the README's results tables are generated from such records, see ``benchmarks/results``)
can be traced to the code that produced it, to the load it was measured under and to the
CPU target and first-layer path the Numba kernels were compiled for.
"""

import os
import platform
import subprocess
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def git_commit(path=_CHECKOUT):
    """The checkout's HEAD commit (40 hex digits, ``+dirty`` appended when tracked files under
    ``fastnn/`` differ from it), or None when fastnn does not run from a git checkout."""
    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "fastnn").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    """The 1-, 5- and 15-minute load averages (None where the OS has none): other work on the
    machine slows a run down, so timings are only comparable at similar load."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def numba_target():
    """The CPU the Numba kernels compile for and the paths chosen for it
    (``fastnn.backends.target.Target.as_dict``: cpu, features, arch, lanes, fma, first_layer)."""
    from .backends.target import TARGET

    return TARGET.as_dict()


def provenance():
    """{commit, cpu, logical_cpus, load_average, numba_target} of this process's code and machine, now."""
    return {"commit": git_commit(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "load_average": load_average(), "numba_target": numba_target()}
