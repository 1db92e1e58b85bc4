"""Ctrl-C and SIGTERM as an exception that can wait for a file to be complete.

``InterruptGuard`` turns SIGINT and SIGTERM into ``Interrupted`` (a KeyboardInterrupt
carrying the signal number) raised in the main thread. Inside ``guard.critical()`` a signal
is held and raised when the block ends, so a group of files written there (a checkpoint and
the summary that describes it) is either all old or all new, never half of each. Compiled
training loops run in native code; Python sees the signal at the end of the running chunk
of steps (at most ``model.CHUNK_SAMPLES`` samples, a fraction of a second).
"""

import contextlib
import signal


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``exit_status`` is the shell's 128 + signal number."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_status = 128 + signum


class InterruptGuard:
    """``with InterruptGuard() as guard:`` handle SIGINT/SIGTERM as ``Interrupted``; restores
    the previous handlers on exit. Main thread only (Python's rule for signal handlers)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self._depth, self._pending, self._previous = 0, None, {}

    def _handle(self, signum, frame):
        if self._depth:
            self._pending = self._pending or signum
            return
        raise Interrupted(signum)

    def __enter__(self):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @contextlib.contextmanager
    def critical(self):
        """Hold SIGINT/SIGTERM until the block is done, then raise the first one that came."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._pending is not None:  # not when the block raised: that error comes first
            signum, self._pending = self._pending, None
            raise Interrupted(signum)
