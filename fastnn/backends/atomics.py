"""Atomic int64 flags for two threads that share buffers inside compiled code (Numba intrinsics).

    atomic_load(a, i) -> int64          a[i], read with acquire ordering
    atomic_store(a, i, v)               a[i] = v, with release ordering
    atomic_claim(a, i, expected) -> bool
                                        a[i] = expected + 1 if a[i] == expected (compare-and-swap,
                                        acquire-release); whether this call made the change
    spin_pause()                        a hint that the caller is busy-waiting (x86 ``pause``)
    backoff(i) -> int                   one round of a wait loop (``i``: 0 at first, then what the
                                        previous round returned): spin, then yield the core, then
                                        sleep (see ``BACKOFF_SPINS``)

``a`` is a 1-D C-contiguous int64 array; nothing is bounds-checked. Plain Numba loads and
stores may be merged, hoisted out of a wait loop or reordered with the buffer writes they
announce; these are LLVM's atomic operations, so a value written before a release store is
seen by a thread whose acquire load reads that store. Used by the list-building
thread of listing ahead (see ``jit_listing``).

Under NUMBA_DISABLE_JIT they are plain array operations (single-threaded use only).
"""

import os
import platform

from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_POSIX = os.name == "posix"  # sched_yield and usleep from the C library; elsewhere waits only spin


def _element(context, builder, signature, args):  # pointer to a[i]
    arr = context.make_array(signature.args[0])(context, builder, args[0])
    return builder.gep(arr.data, [context.cast(builder, args[1], signature.args[1], types.int64)])


def _check(a, i):
    if not (isinstance(a, types.Array) and a.dtype == types.int64 and a.ndim == 1 and a.layout == "C"
            and isinstance(i, types.Integer)):
        raise TypingError(f"atomics need a 1-D C-contiguous int64 array and an integer index; got {a}, {i}")


@intrinsic
def _atomic_load(typingctx, a, i):
    _check(a, i)

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_element(context, builder, signature, args), "acquire", 8)

    return types.int64(a, i), codegen


@intrinsic
def _atomic_store(typingctx, a, i, v):
    _check(a, i)

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(value, _element(context, builder, signature, args), "release", 8)
        return context.get_dummy_value()

    return types.void(a, i, v), codegen


@intrinsic
def _atomic_claim(typingctx, a, i, expected):
    _check(a, i)

    def codegen(context, builder, signature, args):
        old = context.cast(builder, args[2], signature.args[2], types.int64)
        new = builder.add(old, ir.Constant(ir.IntType(64), 1))
        result = builder.cmpxchg(_element(context, builder, signature, args), old, new, "acq_rel", "acquire")
        return builder.extract_value(result, 1)

    return types.boolean(a, i, expected), codegen


@intrinsic
def _spin_pause(typingctx):
    def codegen(context, builder, signature, args):
        if _X86:
            builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                        "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return types.void(), codegen


def _libc_call(name, builder, args=()):
    fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)] * len(args))
    builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), list(args))


@intrinsic
def _sched_yield(typingctx):
    def codegen(context, builder, signature, args):
        if _POSIX:
            _libc_call("sched_yield", builder)
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _sleep_us(typingctx, us):
    if not isinstance(us, types.Integer):
        raise TypingError(f"_sleep_us takes integer microseconds, got {us}")

    def codegen(context, builder, signature, args):
        if _POSIX:
            _libc_call("usleep", builder, [context.cast(builder, args[0], signature.args[0], types.int32)])
        return context.get_dummy_value()

    return types.void(us), codegen


# CLOCK_MONOTONIC's number in <time.h>
_MONOTONIC = 6 if platform.system() == "Darwin" else 1


@intrinsic
def _now_ns(typingctx):
    # clock_gettime(CLOCK_MONOTONIC) in ns (a vDSO call on Linux, ~20 ns); 0 where not POSIX
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        if not _POSIX:
            return ir.Constant(i64, 0)
        ts = cgutils.alloca_once(builder, ir.LiteralStructType([i64, i64]))  # timespec on 64-bit
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32), ts.type])
        builder.call(cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime"),
                     [ir.Constant(ir.IntType(32), _MONOTONIC), ts])
        zero, one = ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), 1)
        sec = builder.load(builder.gep(ts, [zero, zero]))
        nsec = builder.load(builder.gep(ts, [zero, one]))
        return builder.add(builder.mul(sec, ir.Constant(i64, 1_000_000_000)), nsec)

    return types.int64(), codegen


# A waiter spins (reacting within ~0.1 us) while the wait is likely short, then yields its core:
# a yield that returns at once (~0.3 us) says nothing else wants the core, and the waiter keeps
# reacting within a microsecond; a yield that took longer than BACKOFF_BUSY_NS says another
# thread ran meanwhile, and the waiter sleeps from then on (about 110 us a round with Linux's
# 50 us timer slack), so that on a busy machine it stops competing for a core. (A waiter that
# only yields stays runnable and takes its share of the core from the work that needs it.)
# Whether a yield hands the core over is the scheduler's choice: Linux's EEVDF (6.6+) often
# returns at once even with a competing process per core (seen on 6.18: 1024 yields, the
# longest 0.5 us), and the waiter then reaches the sleeping stage after its BACKOFF_YIELDS.
BACKOFF_SPINS = 256
BACKOFF_YIELDS = 1024
BACKOFF_BUSY_NS = 20_000
BACKOFF_SLEEP_US = 50


def _backoff_interpreted(i):
    return i + 1


@njit(cache=True)
def _backoff(i):
    if i < BACKOFF_SPINS:
        _spin_pause()
    elif i < BACKOFF_SPINS + BACKOFF_YIELDS:
        t0 = _now_ns()
        _sched_yield()
        if _now_ns() - t0 > BACKOFF_BUSY_NS:
            return BACKOFF_SPINS + BACKOFF_YIELDS  # another thread ran: sleep from now on
    else:
        _sleep_us(BACKOFF_SLEEP_US)
    return i + 1


def _load_interpreted(a, i):
    return a[i]


def _store_interpreted(a, i, v):
    a[i] = v


def _claim_interpreted(a, i, expected):
    if a[i] != expected:
        return False
    a[i] = expected + 1
    return True


def _pause_interpreted():
    pass


if config.DISABLE_JIT:
    atomic_load, atomic_store, atomic_claim, spin_pause, backoff = (
        _load_interpreted, _store_interpreted, _claim_interpreted, _pause_interpreted, _backoff_interpreted)
else:
    atomic_load, atomic_store, atomic_claim, spin_pause, backoff = (
        _atomic_load, _atomic_store, _atomic_claim, _spin_pause, _backoff)
