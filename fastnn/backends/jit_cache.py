"""Numba's on-disk cache, keyed to the sources of the whole ``backends`` package.

Numba checks a cached function against its own source file only, but a compiled function
carries the code of every function it calls, also those in other files: editing
``jit_dense.py`` would leave the cached training loop of ``jit_loop.py`` running the old
dense kernels. ``install()`` (run when ``fastnn.backends`` is imported, before any kernel
is defined) puts two cache locators in front of Numba's own; for functions defined in this
package they stamp every cache entry with a digest of all the package's ``.py`` files
besides Numba's own stamp, so any edit here makes every entry of the package stale
(recompiled on next use, then cached again). Elsewhere Numba's behaviour is unchanged.
Where entries go is Numba's usual choice: ``NUMBA_CACHE_DIR`` if set, else ``__pycache__``.

Must not import any kernel module (they are defined after ``install()``).
"""

import functools
import hashlib
import os

from numba.core import caching

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
        return super().get_source_stamp(), _digest(self.package_dir)


class PackageUserProvidedLocator(_PackageStamp, caching.UserProvidedCacheLocator):
    """``NUMBA_CACHE_DIR`` is set: entries there, stamped with the package digest."""


class PackageInTreeLocator(_PackageStamp, caching.InTreeCacheLocator):
    """Entries in the package's ``__pycache__``, stamped with the package digest."""


def locators_for(package_dir):
    """The two locator classes for another directory (tests use a scratch package)."""
    attrs = {"package_dir": os.path.abspath(package_dir)}
    return [type("UserProvided", (PackageUserProvidedLocator,), attrs), type("InTree", (PackageInTreeLocator,), attrs)]


def install(locators=(PackageUserProvidedLocator, PackageInTreeLocator)):
    """Put ``locators`` first in Numba's locator list (once; idempotent)."""
    classes = caching.CacheImpl._locator_classes  # the list every cached function consults
    for cls in reversed(locators):
        if cls not in classes:
            classes.insert(0, cls)
