"""Numba's on-disk cache, keyed to the sources of the whole ``backends`` package.

Numba checks a cached function against its own source file only, but a compiled function
carries the code of every function it calls, also those in other files: editing
``jit_dense.py`` would leave the cached training loop of ``jit_loop.py`` running the old
dense kernels. ``install()`` (run when ``fastnn.backends`` is imported, before any kernel
is defined) puts two cache locators in front of Numba's own; for functions defined in this
package they stamp every cache entry with a digest of all the package's ``.py`` files
besides Numba's own stamp, so any edit here makes every entry of the package stale
(recompiled on next use, then cached again). Elsewhere Numba's behaviour is unchanged.
The CPU target needs no stamp of its own: Numba's index already keys every entry by
the CPU name and features it compiled for (``codegen.magic_tuple``), so each target
keeps its own entries. Only a BLAS first layer (``target.TARGET.first_layer``, which
``FASTNN_FIRST_LAYER`` can force on any CPU) marks the digest.
Where entries go is Numba's usual choice: ``NUMBA_CACHE_DIR`` if set, else ``__pycache__``.

Saving an entry is made safe for several processes at once (``fastnn.compile_ahead`` compiles
in two): Numba picks the data file's name from the index it has read, so two processes adding
different signatures of one function could both pick the same name and one would load the
other's machine code. ``install()`` wraps Numba's save of this package's entries in an
exclusive lock on a file in the cache folder (POSIX ``flock``; elsewhere unlocked).

Must not import any kernel module (they are defined after ``install()``).
"""

import contextlib
import functools
import hashlib
import os

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: saves stay unlocked (compile_ahead is off there)
    fcntl = None

from numba.core import caching

from .target import TARGET

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def sources_digest(directory=PACKAGE_DIR):
    """SHA-256 (hex) over the names and bytes of the ``.py`` files directly in ``directory``."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py"):
            with open(os.path.join(directory, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _digest(directory):
    return sources_digest(directory)


class _PackageStamp:
    """Locator mixin: only for files directly in ``package_dir``; stamp = (Numba's, package digest)."""

    package_dir = PACKAGE_DIR

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != cls.package_dir:
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        # a BLAS first layer (FASTNN_FIRST_LAYER=blas, or a CPU without vectors) compiles other code
        blas = "+blas-first-layer" if TARGET.first_layer == "blas" else ""
        return super().get_source_stamp(), _digest(self.package_dir) + blas


class PackageUserProvidedLocator(_PackageStamp, caching.UserProvidedCacheLocator):
    """``NUMBA_CACHE_DIR`` is set: entries there, stamped with the package digest."""


class PackageInTreeLocator(_PackageStamp, caching.InTreeCacheLocator):
    """Entries in the package's ``__pycache__``, stamped with the package digest."""


def locators_for(package_dir):
    """The two locator classes for another directory (tests use a scratch package)."""
    attrs = {"package_dir": os.path.abspath(package_dir)}
    return [type("UserProvided", (PackageUserProvidedLocator,), attrs), type("InTree", (PackageInTreeLocator,), attrs)]


LOCK_NAME = ".fastnn-save.lock"


@contextlib.contextmanager
def save_lock(cache_dir):
    """Exclusive lock (held while the block runs) on ``cache_dir``'s lock file; no-op without flock."""
    if fcntl is None:
        yield
        return
    fd = os.open(os.path.join(cache_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _is_package_stamp(stamp):
    return isinstance(stamp, tuple) and len(stamp) == 2 and isinstance(stamp[1], str)


def _locked(save):
    @functools.wraps(save)
    def locked_save(self, key, data):
        if not _is_package_stamp(self._source_stamp):  # another library's entry: Numba's own behaviour
            return save(self, key, data)
        with save_lock(self._cache_path):  # the index is read, a name picked and both written under it
            return save(self, key, data)
    locked_save.fastnn_locked = True
    return locked_save


def install(locators=(PackageUserProvidedLocator, PackageInTreeLocator)):
    """Put ``locators`` first in Numba's locator list and lock saves of their entries (once; idempotent)."""
    classes = caching.CacheImpl._locator_classes  # the list every cached function consults
    for cls in reversed(locators):
        if cls not in classes:
            classes.insert(0, cls)
    if not getattr(caching.IndexDataCacheFile.save, "fastnn_locked", False):
        caching.IndexDataCacheFile.save = _locked(caching.IndexDataCacheFile.save)
