"""Listing ahead on a busy machine (fastnn.backends.jit_listing): the loop's waits back off
instead of burning a core, and a helper thread that keeps missing steps steps aside."""

import threading
import time

import numpy as np
import pytest
from numba import config, njit

from fastnn.backends import jit_listing as J
from fastnn.backends.atomics import BACKOFF_SPINS, BACKOFF_YIELDS, backoff

pytestmark = pytest.mark.skipif(config.DISABLE_JIT, reason="waits and threads need compiled code")


def _batch(n=4, d=32):
    x = np.zeros((n, d), np.float32)
    x[:, ::3] = 0.5
    return x, np.arange(n, dtype=np.int64)


@njit(nogil=True)  # as the training loop runs it: without the GIL, so another thread can run
def _take_nogil(x, codes, d0, rows, n, s, lists, lists2, sync):
    return J._take_lists(x, codes, d0, rows, n, s, lists, lists2, sync)


def _take(sync, s, x, rows):
    return _take_nogil(x, np.zeros((0, 8), np.uint8), x.shape[1], rows, len(rows), s, J._lists(len(rows), x.shape[1]),
                         J._lists(len(rows), x.shape[1], 1), sync)


def test_a_helper_that_keeps_missing_steps_steps_aside():
    x, rows = _batch()
    sync = np.zeros(J.SYNC_SIZE, np.int64)
    for s in range(20):  # the helper has not started: the loop lists alone, nobody is told to stop
        assert _take(sync, s, x, rows) == 4 * 11
    assert sync[J._MISSED] == 0 and sync[J._STOP] == 0
    sync[J._STARTED] = 21  # started at step 20, and then never lists a step in time
    stopped_at = None
    for s in range(20, 80):
        _take(sync, s, x, rows)
        if sync[J._STOP] and stopped_at is None:
            stopped_at = s
    # missed more than a quarter of the steps since it started plus the slack: 4 * 11 > 10 + 32
    assert stopped_at == 20 + 10 and sync[J._MISSED] == 60


def test_a_helper_that_keeps_up_is_never_stopped():
    x, rows = _batch()
    sync = np.zeros(J.SYNC_SIZE, np.int64)
    sync[J._STARTED] = 1
    for s in range(200):  # every 5th step missed: under a quarter
        if s % 5 == 0:
            _take(sync, s, x, rows)  # the loop lists this one itself
        else:  # the helper listed it in time
            sync[J._CLAIMED] = s + 1  # claimed by the helper
            ready = J._ready_flag(s)
            sync[ready], sync[ready + 1] = s + 1, 7
            assert _take(sync, s, x, rows) == 7
    assert sync[J._MISSED] == 40 and sync[J._STOP] == 0


def test_the_loop_waits_for_a_slow_helper_without_burning_its_core():
    x, rows = _batch()
    sync = np.zeros(J.SYNC_SIZE, np.int64)
    sync[J._STARTED] = 1
    sync[J._CLAIMED] = 1  # the "helper" claimed step 0 and takes 60 ms to list it

    def helper():
        time.sleep(0.06)
        sync[J._READY + 1] = 5
        sync[J._READY] = 1

    t = threading.Thread(target=helper)
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    t.start()
    assert _take(sync, 0, x, rows) == 5
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    t.join()
    assert wall >= 0.06
    assert cpu < 0.5 * wall, f"the waiting thread used {cpu:.3f} s of CPU in {wall:.3f} s: it spun"
    assert sync[J._MISSED] == 1  # waited past spinning: counted


def test_backoff_runs_through_its_three_stages():
    assert backoff(0) == 1 and backoff(BACKOFF_SPINS - 1) == BACKOFF_SPINS  # spinning
    after = backoff(BACKOFF_SPINS)  # one yield: the next round, or the sleeping stage if another thread ran
    assert after in (BACKOFF_SPINS + 1, BACKOFF_SPINS + BACKOFF_YIELDS)
    t0 = time.perf_counter()
    assert backoff(10**6) == 10**6 + 1
    assert time.perf_counter() - t0 >= 40e-6  # slept (50 us asked)
