"""Compile progress: what Numba is compiling, for how long so far, and roughly how long it takes.

``reporting(write)`` is a context manager; while it is active, each top-level compile unit
(a compiled function called from Python whose machine code is neither in memory nor in the
disk cache) that takes more than a second gets a line from a small timer thread:
``compiling the training loop ... 3 s (about 12 s on an idle 2-core machine)``, updated
every few seconds, then ``compiled the training loop in 11.2 s (34 functions)``. Loading
from the cache prints nothing. Numba reports compiles as ``numba:compile`` events
(``numba.core.event``); the functions a unit calls are compiled inside it and counted in it.

``record()`` collects, for tests and benchmarks, every compiled function (module-qualified
name) and the seconds of each top-level unit. Must not import kernel modules.
"""

import contextlib
import threading
import time

from numba.core import event

# What the user reads instead of a function name, and roughly how many seconds each took to
# compile from an empty cache on the 2-core reference machine (idle; see README, compile time).
LABELS = {"_train_loop": "the training loop", "_forward_loop": "the inference loop",
          "_list_ahead": "the listing-ahead thread", "encode_bytes": "the byte-code encoder"}
ESTIMATES = {"_train_loop": 8.0, "_forward_loop": 1.5, "_list_ahead": 1.2}
SHOW_AFTER_S = 1.0
EVERY_S = 5.0


def unit_name(ev):
    """Module-qualified name of the function a ``numba:compile`` event is about."""
    f = ev.data["dispatcher"].py_func
    return f"{f.__module__}.{f.__qualname__}"


class _Listener(event.Listener):
    """Tracks nesting so that only top-level compile units are reported; calls hooks on them."""

    def __init__(self, on_unit_start=None, on_unit_end=None, on_function=None):
        self.depth = 0
        self.on_unit_start, self.on_unit_end, self.on_function = on_unit_start, on_unit_end, on_function

    def on_start(self, ev):
        if self.on_function:
            self.on_function(unit_name(ev))
        if self.depth == 0 and self.on_unit_start:
            self.on_unit_start(unit_name(ev))
        self.depth += 1

    def on_end(self, ev):
        self.depth -= 1
        if self.depth == 0 and self.on_unit_end:
            self.on_unit_end(unit_name(ev))


@contextlib.contextmanager
def _listening(listener):
    event.register("numba:compile", listener)
    try:
        yield listener
    finally:
        event.unregister("numba:compile", listener)


class _Reporter:
    def __init__(self, write):
        self.write = write
        self.lock = threading.Lock()
        self.unit = None

    def start(self, name):
        short = name.rsplit(".", 1)[-1]
        unit = {"label": LABELS.get(short, short), "estimate": ESTIMATES.get(short), "t0": time.perf_counter(),
                "functions": 0, "shown": False, "done": threading.Event()}
        with self.lock:
            self.unit = unit
        threading.Thread(target=self._tick, args=(unit,), name="fastnn-compile-progress", daemon=True).start()

    def function(self, name):
        if self.unit is not None:
            self.unit["functions"] += 1

    def end(self, name):
        with self.lock:
            unit, self.unit = self.unit, None
        if unit is None:
            return
        unit["done"].set()
        with self.lock:
            if unit["shown"]:
                where = f"{unit['functions']} functions" if unit["functions"] else "in a second process"
                self.write(f"compiled {unit['label']} in {time.perf_counter() - unit['t0']:.1f} s ({where})")

    def _tick(self, unit):
        wait = SHOW_AFTER_S
        while not unit["done"].wait(wait):
            with self.lock:
                if unit["done"].is_set():
                    return
                about = f" (about {unit['estimate']:.0f} s on an idle 2-core machine)" if unit["estimate"] else ""
                self.write(f"compiling {unit['label']} ... {time.perf_counter() - unit['t0']:.0f} s{about}")
                unit["shown"] = True
            wait = EVERY_S


_active = threading.local()


@contextlib.contextmanager
def waiting_for(write, name):
    """Report, like a unit compiled here, the unit ``name`` (e.g. ``_train_loop``) that another
    process compiles while this block waits for it (``fastnn.compile_ahead``)."""
    rep = _Reporter(write)
    rep.start(name)
    try:
        yield
    finally:
        rep.end(name)


@contextlib.contextmanager
def reporting(write):
    """While active, report compile units that take over a second through ``write(line)``.
    Nested in another ``reporting`` of the same thread it does nothing (one line per unit)."""
    if getattr(_active, "on", False):
        yield
        return
    rep = _Reporter(write)
    _active.on = True
    try:
        with _listening(_Listener(rep.start, rep.end, rep.function)):
            yield
    finally:
        _active.on = False


class Record:
    """What ``record()`` saw: ``functions`` (every compiled function's qualified name, in order)
    and ``units`` (list of (top-level name, seconds))."""

    def __init__(self):
        self.functions, self.units, self._t0 = [], [], 0.0

    def _start(self, name):
        self._t0 = time.perf_counter()

    def _end(self, name):
        self.units.append((name, time.perf_counter() - self._t0))

    @property
    def seconds(self):
        return sum(s for _, s in self.units)


@contextlib.contextmanager
def record():
    """Collect what is compiled while active (yields a ``Record``)."""
    rec = Record()
    with _listening(_Listener(rec._start, rec._end, rec.functions.append)):
        yield rec
