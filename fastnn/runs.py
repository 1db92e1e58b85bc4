"""Output folders that hold one run, checked before any training time is spent.

``check_writable_dir`` creates a folder and proves it writable (a read-only file system, a
path under a regular file or a folder without write permission fail here, with the path in
the message). ``RunLock`` makes sure only one process writes a run folder: an exclusive
``flock`` on ``.fastnn-lock``, which holds the owner's pid. The kernel drops the lock when
its owner dies, however it dies, so a lock file left by a dead process is simply taken
over. ``run_files`` / ``clear_run`` say what a previous run left and remove exactly that.
``check_path_template`` checks a ``str.format`` path template against the fields that will
exist (``ModelCheckpoint``).
"""

import errno
import os
import re
import shutil
import string
import tempfile

from .atomic import TMP_PREFIX, TMP_SUFFIX

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; the lock file is still written
    fcntl = None

LOCK_FILE = ".fastnn-lock"
#: what fastnn-train writes into a run folder (a previous run is exactly these)
RUN_OUTPUTS = ("model.fastnn", "best.fastnn", "summary.json", "history.csv", "loss.png", "accuracy.png", "confusion_matrix.png")
#: epoch-log keys besides the metrics (see ``Sequential.fit``)
EPOCH_LOG_EXTRAS = ["seconds", "samples_per_second", "lr"]


class RunFolderError(OSError):
    """The output folder cannot be used: not writable, busy, or holding another run."""


def check_writable_dir(path, what):
    """Create ``path`` (with parents) if needed and prove it writable with a probe file."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".fastnn-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise RunFolderError(f"{what} {path!r} is a file, not a folder; choose a folder") from None
    except NotADirectoryError:
        raise RunFolderError(f"{what} {path!r} lies under a regular file, not a folder; choose another path") from None
    except OSError as exc:
        reason = "the file system is read-only" if exc.errno == errno.EROFS else exc.strerror or str(exc)
        raise RunFolderError(f"{what} {path!r} is not writable ({reason}); choose another folder") from None
    return path


class RunLock:
    """Exclusive use of a run folder by this process (``with RunLock(folder):`` or acquire/release)."""

    def __init__(self, folder):
        self.folder, self.path, self.fd = os.fspath(folder), os.path.join(os.fspath(folder), LOCK_FILE), None

    def acquire(self):
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise RunFolderError(f"the run folder {self.folder!r} is in use by another fastnn process (pid "
                                     f"{owner}); wait for it to finish or choose another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file its previous owner unlinked while we opened it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def run_files(folder):
    """The outputs of a previous fastnn-train run in ``folder`` (names, sorted)."""
    return sorted(name for name in os.listdir(folder) if name in RUN_OUTPUTS)


def _temporary(name):
    """Whether ``name`` is a temporary file of an unfinished write (``fastnn.atomic``'s, or an older
    fastnn's ``*.json.tmp``)."""
    return (name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)) or name.endswith(".json.tmp")


def remove_temporaries(folder):
    """Remove the temporary files of writes that never finished: a process killed (SIGKILL, power
    loss) between writing a file and renaming it leaves one. Only for a locked folder, whose
    writers are all gone. Returns the names removed."""
    names = sorted(name for name in os.listdir(folder) if _temporary(name))
    for name in names:
        os.unlink(os.path.join(folder, name))
    return names


def clear_run(folder):
    """Remove a previous run's outputs and stray temporary files; other files stay."""
    remove_temporaries(folder)
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name in RUN_OUTPUTS:
            os.unlink(path)
        elif name == "backup" and os.path.isdir(path):
            shutil.rmtree(path)


def check_path_template(what, template, fields):
    """Check a ``str.format`` path template whose named fields must come from ``fields``
    (``epoch`` is an int, the others floats); returns the path it gives for epoch 1."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"{what} {template!r} is not a valid template ({exc}); write fields as {{epoch:02d}} "
                         f"and a literal brace as {{{{ or }}}}") from None
    allowed = ["epoch"] + [f for f in fields if f != "epoch"]
    for name in names:
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if base not in allowed:
            hint = " (val_ fields need validation: pass validation_split or validation_data)" \
                if base.startswith("val_") else ""
            raise ValueError(f"{what} {template!r} uses the field {{{base}}}, which this run will not have{hint}; "
                             f"available: {', '.join('{' + f + '}' for f in allowed)}")
    try:
        return template.format(epoch=1, **{f: 0.5 for f in allowed if f != "epoch"})
    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"{what} {template!r} cannot be formatted ({exc}); e.g. {{epoch:02d}} or "
                         f"{{val_loss:.3f}}") from None
