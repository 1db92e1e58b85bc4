"""``fastnn-sweep --scheduler``: a sweep's runs on a Dask distributed cluster.

The driver (``fastnn.sweep``) validates every run, skips finished ones and writes the
results table as for local runs; only the execution moves. Each run is one Dask task
that runs the same ``python -m fastnn.sweep_worker`` subprocess as a local run
(``sweep.run_one``), in a scratch folder under the worker's local directory, and
returns the run folder's files as bytes; the driver writes them into ``--out``
atomically. No shared file system is assumed.

Workers need the same fastnn installed, their own data (FASTNN_DATA, the cache, or a
download with checksums) and the ``threads`` resource: a run with ``--threads T``
holds T of it, so ``dask worker ADDRESS --nthreads 4 --resources threads=4`` runs four
one-thread runs at a time and never more threads than it declares.

Worker loss: the scheduler reruns a task whose worker died (up to its
``distributed.scheduler.allowed-failures``, 3 by default); the driver notes each loss
in the run's record, and a run the scheduler gives up on is reported as failed.
"""

import asyncio
import ctypes
import functools
import itertools
import os
import signal
import shutil
import socket
import tempfile
import threading
import time
import uuid

import distributed

from .sweep import _write_json, run_one, warm_up_kernels

RESOURCE = "threads"
#: how long the driver tries to reach the scheduler
CONNECT_SECONDS = 30.0
#: how long the driver waits for a worker that declares enough of the resource
WORKER_WAIT_SECONDS = 60.0


# on the worker ------------------------------------------------------------------------

_warm_lock = threading.Lock()
_warm_result = []  # (seconds, error) once this worker process has warmed up


def warm_up_once():
    """Compile the Numba kernels once per worker process; later calls return at once."""
    with _warm_lock:
        if not _warm_result:
            _warm_result.append(warm_up_kernels())
        return _warm_result[0]


def warm_up_status():
    """This worker's warm-up as ``(seconds, error)``, or None before it ran."""
    return _warm_result[0] if _warm_result else None


class WarmUp(distributed.WorkerPlugin):
    """Worker plugin: each worker (also one joining later) compiles the kernels on setup."""

    name = "fastnn-warm-up"

    async def setup(self, worker):
        # in a thread: a minute of compiling must not block the worker's event loop (heartbeats)
        await asyncio.get_running_loop().run_in_executor(None, warm_up_once)


try:  # resolved here, not in the forked child, where only the call itself should run
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None
PR_SET_PDEATHSIG = 1


def _die_with(parent_pid):
    """preexec_fn: SIGKILL this run when the worker thread that started it dies (Linux).

    A worker killed mid-run would otherwise leave its run training on as an orphan,
    beside the rerun the scheduler starts.
    """
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the worker died before the call above
        os._exit(1)


def _retarget(argv, run_dir):
    """The run's argv with its ``--out`` (the last option, as build_run_argv puts it) set to run_dir."""
    if len(argv) < 2 or argv[-2] != "--out":
        raise ValueError(f"the run's argv must end with --out DIR, got {argv[-2:]}")
    return [*argv[:-2], "--out", run_dir]


def _read_tree(root):
    """``{relative path: bytes}`` of every file under root."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def train_on_worker(name, argv, threads, timeout, tag, warm, hook=None):
    """Dask task: train one run in a scratch folder on this worker.

    ``hook(name)``, when given, runs first (tests use it to kill the worker).
    Returns ``(record, files)``: run_one's record with the driver's argv, the worker's
    address and host added, and the run folder's files as ``{relative path: bytes}``.
    """
    worker = distributed.get_worker()
    if warm:
        warm_up_once()
    scratch = tempfile.mkdtemp(prefix=f"fastnn-sweep-{tag}-", dir=worker.local_directory)
    try:
        if hook is not None:
            hook(name)
        run_dir = os.path.join(scratch, name)
        record = run_one(name, _retarget(argv, run_dir), run_dir, threads, timeout,
                         preexec_fn=functools.partial(_die_with, os.getpid()))
        files = _read_tree(run_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record.update(argv=argv, worker=worker.address, host=socket.gethostname())
    return record, files


def stop_runs(tag):
    """Kill this worker's run processes of the sweep ``tag`` (the driver was interrupted)."""
    import psutil  # a dependency of distributed

    killed = 0
    for child in psutil.Process().children(recursive=True):
        try:
            if any(f"fastnn-sweep-{tag}-" in part for part in child.cmdline()):
                child.kill()
                killed += 1
        except psutil.Error:  # already gone
            pass
    return killed


# on the driver ------------------------------------------------------------------------

def install_run(run_dir, record, files):
    """Write a run's files from a worker, then its record, into ``run_dir`` atomically.

    A staging folder beside run_dir is filled and renamed into place, so run_dir is
    never half written; the previous run_dir (an earlier, unfinished attempt) goes.
    """
    run_dir = os.path.abspath(run_dir)
    parent, base = os.path.split(run_dir)
    stage = os.path.join(parent, f".{base}.incoming-{uuid.uuid4().hex[:8]}")
    os.makedirs(stage)
    try:
        for rel, data in files.items():
            path = os.path.normpath(os.path.join(stage, rel))
            if os.path.isabs(rel) or not path.startswith(stage + os.sep):
                raise ValueError(f"run {record['run']!r}: the worker sent a file outside the run folder: {rel!r}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        _write_json(os.path.join(stage, "sweep_run.json"), record)
        old = None
        if os.path.lexists(run_dir):
            old = os.path.join(parent, f".{base}.old-{uuid.uuid4().hex[:8]}")
            os.rename(run_dir, old)
        os.rename(stage, run_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


class DaskExecutor:
    """Runs a sweep's runs as tasks on a Dask cluster (see the module docstring).

    Parameters
    ----------
    address, scheduler_file : str, optional
        The scheduler (``tcp://HOST:PORT``) or Dask's scheduler file; or pass ``client``.
    client : distributed.Client, optional
        An existing client (e.g. of a dask-jobqueue cluster); it is left open.
    threads : int
        Numba/BLAS threads per run, and the ``threads`` resource each run holds.
    timeout : float, optional
        Per-run wall-clock limit in seconds (on the worker).
    jobs : int, optional
        Most runs submitted at once (default: all).
    run_hook : callable, optional
        ``hook(run name)`` run in the task on the worker before training (tests).
    """

    def __init__(self, address=None, scheduler_file=None, client=None, threads=1, timeout=None, jobs=None,
                 run_hook=None):
        if jobs is not None and jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.address, self.scheduler_file, self.client = address, scheduler_file, client
        self.threads, self.timeout, self.jobs, self.run_hook = threads, timeout, jobs, run_hook
        self._own_client = client is None
        self.tag = uuid.uuid4().hex[:10]  # names this sweep's tasks and scratch folders
        self.warm = False
        self._runs = {}  # task key -> (future, name, run_dir)
        self._lost = {}  # run name -> [addresses of workers lost while it ran there]
        where = client.scheduler.address if client else address or f"the scheduler in {scheduler_file}"
        self.description = (f"Dask cluster at {where}, {threads} thread(s) per run "
                            f"(each holds {threads} of its worker's '{RESOURCE}' resource)")

    # -- connecting

    def _connect(self):
        where = self.address or f"the scheduler file {self.scheduler_file}"
        try:
            return distributed.Client(self.address, scheduler_file=self.scheduler_file, timeout=CONNECT_SECONDS,
                                      set_as_default=False)
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot reach the Dask scheduler at {where}: {exc}; start one with "
                          f"`dask scheduler` (see the README)") from None

    def _wait_for_workers(self, log):
        """Block until some worker declares ``threads`` of the resource; raise after a while."""
        deadline = time.monotonic() + WORKER_WAIT_SECONDS
        said = False
        while True:
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
            fit = [a for a, w in workers.items() if w.get("resources", {}).get(RESOURCE, 0) >= self.threads]
            if fit:
                return len(workers), len(fit)
            if time.monotonic() > deadline:
                declared = {a: w.get("resources", {}) for a, w in workers.items()}
                raise OSError(
                    f"no worker of the Dask scheduler at {self.client.scheduler.address} declares "
                    f"{RESOURCE}>={self.threads} (--threads {self.threads}) after {WORKER_WAIT_SECONDS:g} s; "
                    f"workers and their resources: {declared or 'none connected'}. Start workers with "
                    f"`dask worker {self.client.scheduler.address} --nthreads N --resources {RESOURCE}=N`")
            if not said:
                log(f"fastnn-sweep: waiting for a Dask worker with {RESOURCE}>={self.threads} "
                    f"({len(workers)} connected) ...")
                said = True
            time.sleep(1.0)

    def _on_event(self, event):
        _, msg = event
        if isinstance(msg, dict) and msg.get("action") == "remove-worker":
            for key in msg.get("processing-tasks", ()):
                if key in self._runs:
                    self._lost.setdefault(self._runs[key][1], []).append(msg.get("worker", "?"))

    def start(self, n_runs, warm_up, log):
        """Connect, check the workers' resources, and warm every worker up (when a run uses Numba)."""
        if self.client is None:
            self.client = self._connect()
        n_workers, n_fit = self._wait_for_workers(log)
        log(f"fastnn-sweep: {n_workers} Dask worker(s), {n_fit} with {RESOURCE}>={self.threads}")
        self.client.subscribe_topic("all", self._on_event)  # the scheduler's worker-removed events
        self.warm = warm_up and n_runs > 0
        if self.warm:
            self.client.register_plugin(WarmUp())  # returns when every worker has run its setup
            status = {a: s for a, s in self.client.run(warm_up_status).items() if s}
            slowest = max((seconds for seconds, _ in status.values()), default=0.0)
            log(f"fastnn-sweep: Numba kernels compiled once on each worker (slowest {slowest:.1f} s)")
            for address, (_, error) in status.items():
                if error:
                    log(f"fastnn-sweep: warning: compiling the Numba kernels failed on {address} ({error}); "
                        f"its runs compile their own")

    # -- running

    def _submit(self, name, argv, run_dir, order):
        key = f"fastnn-run-{name}-{self.tag}"
        fut = self.client.submit(train_on_worker, name, argv, self.threads, self.timeout, self.tag, self.warm,
                                 self.run_hook, key=key, pure=False, priority=-order,
                                 resources={RESOURCE: self.threads})
        self._runs[key] = (fut, name, run_dir)
        return fut

    def _record(self, fut, name, argv):
        """The run's record and files from its finished future; a failure becomes a failed record."""
        try:
            record, files = fut.result()
        except distributed.KilledWorker as exc:
            lost = self._lost.get(name, [])
            record, files = {"run": name, "argv": argv, "threads": self.threads, "status": "failed",
                             "error": f"lost: the worker running it died {len(lost) or 'several'} time(s) "
                                      f"(last {exc.last_worker.address if exc.last_worker else '?'}) and the "
                                      f"scheduler gave up (allowed-failures={exc.allowed_failures})"}, {}
        except Exception as exc:  # the task itself raised on the worker (e.g. fastnn not installed there)
            record, files = {"run": name, "argv": argv, "threads": self.threads, "status": "failed",
                             "error": f"the Dask task failed: {type(exc).__name__}: {exc}"}, {}
        record.setdefault("wall_seconds", 0.0)
        lost = self._lost.get(name)
        if lost:
            record["lost_workers"] = lost
            if record["status"] == "ok":
                record["note"] = f"rerun after its worker was lost ({', '.join(lost)})"
        return record, files

    def results(self, jobs):
        jobs = list(jobs)
        argv_of = {name: argv for name, argv, _ in jobs}
        pending = iter(enumerate(jobs))
        running = distributed.as_completed(loop=self.client.loop)
        for order, (name, argv, run_dir) in itertools.islice(pending, self.jobs or len(jobs)):
            running.add(self._submit(name, argv, run_dir, order))
        for fut in running:
            for order, (name, argv, run_dir) in itertools.islice(pending, 1):
                running.add(self._submit(name, argv, run_dir, order))
            _, name, run_dir = self._runs[fut.key]
            record, files = self._record(fut, name, argv_of[name])
            install_run(run_dir, record, files)
            fut.release()
            yield name, record

    def cancel(self):
        """Cancel the pending runs and kill this sweep's running ones on every worker."""
        if self.client is None:
            return
        self.client.cancel([fut for fut, _, _ in self._runs.values()])
        try:
            self.client.run(stop_runs, self.tag)
        except Exception:  # a worker that is gone has nothing left to stop
            pass

    def close(self):
        if self.client is None:
            return
        try:
            self.client.unsubscribe_topic("all")
        except Exception:
            pass
        if self._own_client:
            self.client.close()

