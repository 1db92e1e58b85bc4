"""The JAX peer, timed in a process of its own per thread count.

XLA sizes its thread pools when JAX loads, so one process cannot time JAX on one thread
and then on two: a "1 thread" JAX column timed inside the bench used both cores. Each thread
count gets a worker process (``multiprocessing``, spawned) that, before it imports JAX,

* for one thread: sets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`` and binds itself to
  one CPU (``os.sched_setaffinity``), so it cannot run on two cores at once whatever XLA does;
* for more: binds itself to that many CPUs and leaves XLA its defaults.

The worker times each call itself (wall and process CPU seconds, without the pipe), and
reports how its CPU time split over its threads: ``usage()`` gives the CPU-time / wall-time
ratio of the timed calls and the busiest thread's share, which the table prints as the check
that a one-thread run used one core. A runner exposes the worker's clocks (``run.clocks``)
for ``time_training`` to use in place of its own.
"""

import multiprocessing as mp
import os
import statistics
import time

import numpy as np

_WORKERS = {}  # threads -> _Worker


def jax_runner(x, y, weights, lr, threads):
    """A runner (see ``workload.make_runner``) whose calls run in the JAX worker for ``threads``.

    Raises ImportError when JAX cannot be imported in the worker."""
    worker = _WORKERS.get(threads)
    if worker is None or not worker.alive():
        worker = _WORKERS[threads] = _Worker(threads)
    worker.load(x, y)
    worker.call("net", [(np.asarray(w), np.asarray(b)) for w, b in weights], float(lr))
    totals = {"wall": 0.0, "cpu": 0.0}
    usage = []

    def run(order, start, n_steps, batch_size):
        worker.send_order(order)
        done, wall, cpu, share = worker.call("run", start, n_steps, batch_size, False)
        totals["wall"] += wall
        totals["cpu"] += cpu
        usage.append((wall, cpu, share))
        return done

    def prepare(order, n_steps, batch_size):
        worker.send_order(order)
        worker.call("run", 0, n_steps, batch_size, True)  # compiles these shapes; keeps the weights
        usage.clear()

    def summary():
        """CPU time / wall time of the timed calls (median), the busiest thread's share of the
        CPU time, and the CPUs the worker may run on."""
        timed = [u for u in usage if u[0] > 0]
        return {"cpu_per_wall": statistics.median(c / w for w, c, _ in timed) if timed else None,
                "busiest_thread_share": statistics.median(s for *_, s in timed) if timed else None,
                "cpus": worker.cpus}

    run.prepare, run.calls, run.usage = prepare, 1, summary
    run.clocks = {"wall": lambda: totals["wall"], "cpu": lambda: totals["cpu"]}
    return run


def stop_workers():
    """End every worker process (the bench calls it when its timing is done)."""
    for w in list(_WORKERS.values()):
        w.close()
    _WORKERS.clear()


class _Worker:
    def __init__(self, threads):
        ctx = mp.get_context("spawn")  # a fresh interpreter: nothing of this process's JAX or threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, threads), daemon=True)
        self.proc.start()
        child.close()
        ok, self.cpus = self.conn.recv()
        if not ok:
            self.close()
            raise ImportError(self.cpus)
        self.data = self.sent_order = None

    def alive(self):
        return self.proc.is_alive()

    def call(self, *msg):
        self.conn.send(msg)
        ok, value = self.conn.recv()
        if not ok:
            raise RuntimeError(f"the JAX worker failed:\n{value}")
        return value

    def load(self, x, y):
        if self.data is None or self.data[0] is not x or self.data[1] is not y:
            self.call("data", np.ascontiguousarray(x), np.ascontiguousarray(y))
            self.data, self.sent_order = (x, y), None

    def send_order(self, order):
        """Send ``order`` once (the bench walks the same one for every call of a cell)."""
        if self.sent_order is not order:
            self.call("order", np.asarray(order))
            self.sent_order = order

    def close(self):
        try:
            self.conn.send(("stop",))
        except (OSError, ValueError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# ----------------------------------------------------------------------------- the worker process


def _serve(conn, threads):
    try:
        cpus = _hold_to(threads)
        import jax  # noqa: F401  (after _hold_to: XLA reads its flags and CPUs as it loads)
    except BaseException as exc:  # ImportError, or a platform without sched_setaffinity
        conn.send((False, f"{type(exc).__name__}: {exc}"))
        return
    conn.send((True, cpus))
    state = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "stop":
            return
        try:
            conn.send((True, _handle(state, *msg)))
        except Exception as exc:  # reported to the bench, which raises it
            import traceback

            conn.send((False, "".join(traceback.format_exception(exc))))


def _hold_to(threads):
    """Bind this process to ``threads`` CPUs (one thread: XLA's Eigen pool off too); returns the CPUs."""
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    allowed = sorted(os.sched_getaffinity(0))
    if threads < len(allowed):
        os.sched_setaffinity(0, allowed[:threads])
    return len(os.sched_getaffinity(0))


def _handle(state, kind, *args):
    import jax
    import jax.numpy as jnp

    if kind == "data":
        state["x"], state["y"] = jnp.asarray(args[0]), jnp.asarray(args[1])
        state.pop("fns", None)
    elif kind == "order":
        state["order"] = args[0]
    elif kind == "net":
        weights, lr = args
        state["p"] = [(jnp.asarray(w), jnp.asarray(b)) for w, b in weights]
        if state.get("lr") != lr:
            state["lr"] = lr
            state.pop("fns", None)
    elif kind == "run":
        start, n_steps, batch_size, keep = args
        if "fns" not in state:
            state["fns"] = _compiled(state["x"], state["y"], state["lr"])
        scan, one = state["fns"]
        idx = state["order"][start:start + n_steps * batch_size]
        full = len(idx) // batch_size
        before = _thread_ticks()
        w0, c0 = time.perf_counter(), time.process_time()
        p = state["p"]
        if full:
            p = scan(p, jnp.asarray(idx[:full * batch_size].reshape(full, batch_size)))
        if len(idx) > full * batch_size:
            p = one(p, jnp.asarray(idx[full * batch_size:]))
        p = jax.block_until_ready(p)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if not keep:
            state["p"] = p
        ticks = [t - before.get(tid, 0) for tid, t in _thread_ticks().items()]
        share = max(ticks) / sum(ticks) if sum(ticks) > 0 else 1.0
        return -(-len(idx) // batch_size), wall, cpu, share
    else:
        raise ValueError(f"unknown message {kind!r}")
    return None


def _compiled(xj, yj, lr):
    """(scan, one): the epoch as one ``jax.jit``-compiled ``lax.scan`` over (steps, batch) row
    indices, and a single step (a ragged last batch); ReLU MLP, mean cross-entropy, plain SGD."""
    import jax
    import jax.numpy as jnp

    def loss_fn(p, xb, yb):
        h = xb
        for i, (w, b) in enumerate(p):
            h = h @ w + b
            if i < len(p) - 1:
                h = jax.nn.relu(h)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), yb[:, None], axis=1))

    def step(p, idx):
        g = jax.grad(loss_fn)(p, xj[idx], yj[idx])
        return jax.tree_util.tree_map(lambda a, da: a - lr * da, p, g), None

    return jax.jit(lambda p, idx: jax.lax.scan(step, p, idx)[0]), jax.jit(lambda p, idx: step(p, idx)[0])


def _thread_ticks():
    """{thread id: user + system clock ticks} of this process's threads (Linux; {} elsewhere)."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return out
