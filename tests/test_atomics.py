"""The atomic flags two threads share in compiled code (fastnn.backends.atomics)."""

import threading

import numpy as np
from numba import njit

from fastnn.backends.atomics import atomic_claim, atomic_load, atomic_store, spin_pause


@njit(nogil=True)
def claim_all(sync, n, mine):
    # claims steps sync[0], sync[0] + 1, ... until n, marking the ones this thread won
    while True:
        s = atomic_load(sync, 0)
        if s >= n:
            return
        if atomic_claim(sync, 0, s):
            mine[s] += 1
        else:
            spin_pause()


def test_each_step_is_claimed_exactly_once_by_two_threads():
    n = 200_000
    sync = np.zeros(8, np.int64)
    won = [np.zeros(n, np.int64) for _ in range(2)]
    threads = [threading.Thread(target=claim_all, args=(sync, n, w)) for w in won]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sync[0] == n
    np.testing.assert_array_equal(won[0] + won[1], 1)


@njit
def store_then_claim(sync):
    atomic_store(sync, 3, 7)
    first = atomic_claim(sync, 3, 7)  # 7 -> 8
    again = atomic_claim(sync, 3, 7)  # now 8: refused, nothing written
    return first, again, atomic_load(sync, 3)


def test_claim_only_from_the_expected_value():
    sync = np.zeros(8, np.int64)
    assert store_then_claim(sync) == (True, False, 8)
    assert sync.tolist() == [0, 0, 0, 8, 0, 0, 0, 0]
