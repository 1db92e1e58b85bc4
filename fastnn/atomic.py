"""Atomic output files: write under a temporary name beside the target, rename when complete.

Every file fastnn writes (model, summary.json, history.csv, plots, sweep tables, bench
results) goes through :func:`atomic_write`, so a full disk, a read-only file system or an
interrupt never leaves a half-written or 0-byte file, nor a stray temporary file: either
the complete new file replaces the target (``os.replace``, atomic on POSIX), or the target
is untouched and the temporary file is removed. Failures raise :class:`OutputError`, an
``OSError`` whose message names the target file.
"""

import contextlib
import os
import tempfile

#: temporary files are ``.fastnn-<random>.tmp`` in the target's directory (same file
#: system, so the final rename is atomic; hidden, so a listing shows no half file)
TMP_PREFIX, TMP_SUFFIX = ".fastnn-", ".tmp"

# mkstemp creates 0600 files; finished files get the usual 0666 & ~umask. Read once here:
# os.umask can only be read by setting it, which is not safe while other threads create files.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class OutputError(OSError):
    """An output file could not be written; nothing was left behind. ``filename`` is the target."""

    def __str__(self):  # the message alone: it names the file and the reason already
        return self.strerror


def _error(path, exc):
    reason = exc.strerror or str(exc)
    return OutputError(exc.errno, f"cannot write {path}: {reason} (nothing was written)", path)


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_kwargs):
    """Open a temporary file for writing ``path``; rename it over ``path`` once the block ends.

    Parameters
    ----------
    path : str or os.PathLike
        The target. Missing parent directories are created.
    mode : str
        ``"wb"`` (default) or ``"w"``; ``open_kwargs`` (``newline``, ``encoding``) go to ``open``.

    Yields the open file object. If the block raises (or writing, closing or renaming
    fails), the temporary file is removed, ``path`` keeps its previous content, and an
    ``OSError`` is re-raised as :class:`OutputError` naming ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=directory)
    except OSError as exc:
        raise _error(path, exc) from None
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise _error(path, exc) from None
        raise


def write_bytes(path, data):
    """Atomically write ``data`` (bytes) to ``path``; returns ``path`` as a string."""
    with atomic_write(path) as f:
        f.write(data)
    return os.fspath(path)


def write_text(path, text):
    """Atomically write ``text`` (UTF-8) to ``path``; returns ``path`` as a string."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return os.fspath(path)
