"""Per-data-set preparation, paid once per data set instead of once per ``fit`` call.

Before training, ``fit`` checks ``x`` (converts it to C-contiguous float32, or the model's float64, and scans it for
NaN/inf), looks whether it holds raw 0-255 pixels (for a warning), and lets the backend
precompute what it trains faster from (``prepare_inputs``: the Numba backend's one-byte
pixel codes). On MNIST's 60,000 x 784 that is about 130 ms, a quarter of a batch-128 epoch;
``fit`` on the same arrays again (more epochs, the estimator's ``partial_fit``, a sweep over
hyperparameters in one process) reuses it from here and starts training within a few ms.

The rule (when a cached preparation is reused)
----------------------------------------------
A preparation is reused for ``x`` when all of these hold:

* it is the same ``ndarray`` object (held by weak reference, so a new array that happens to
  get a freed array's ``id`` never matches, and the entry goes when the array does), prepared
  for the same training dtype (a float32 and a float64 model each have their own entry);
* with the same shape, dtype, strides and data address (a resize or a new buffer misses);
* and the same fingerprint of its values: every byte of arrays up to ``FULL_HASH_BYTES``,
  else ``SAMPLE_ROWS`` whole rows spread evenly over the array plus ``SAMPLE_VALUES`` values
  at positions that depend only on the shape (about 0.1 ms for MNIST).

NumPy keeps no modification counter, and hashing every byte of a 188 MB float32 data set
costs about as much as preparing it again, so large arrays get the sampled fingerprint.
It catches the in-place changes a data set goes through in practice (scaling, centring,
normalising, shuffling rows, filling it with other data: each changes every sampled row),
but not a change to a few values. After editing a few values of a large array in place,
call ``forget(x)`` (or fit on a copy); fastnn never changes ``x`` itself.

Nothing here changes results: the cached values are exactly what the first preparation
computed from the same bytes.
"""

import functools
import hashlib
import weakref
from collections import OrderedDict

import numpy as np

#: arrays up to this size are fingerprinted in full
FULL_HASH_BYTES = 1 << 20
#: larger ones: this many whole rows, evenly spread, plus this many single values
SAMPLE_ROWS = 16
SAMPLE_VALUES = 4096
#: data sets kept (least recently used dropped first); each holds its checked copy (when x
#: needed converting) and the backends' prepared inputs (MNIST's byte codes: 47 MB)
MAX_ENTRIES = 4

_ENTRIES = OrderedDict()  # (id(x), training dtype) -> _Entry
#: calls that did the preparation (not a cache hit), for tests and ``fastnn-bench``
counts = {"check": 0, "inputs": 0}


class _Entry:
    __slots__ = ("ref", "signature", "fingerprint", "checked", "raw_pixels", "inputs", "__weakref__")

    def __init__(self, ref, signature, fingerprint, checked, raw_pixels):
        self.ref, self.signature, self.fingerprint = ref, signature, fingerprint
        self.checked = checked  # the converted copy, or None when x itself is already what training takes
        self.raw_pixels = raw_pixels
        self.inputs = {}  # backend name -> backend.prepare_inputs(checked x)


def _signature(x):
    return x.shape, x.dtype.str, x.strides, x.__array_interface__["data"][0]


def fingerprint(x):
    """Bytes that change when ``x``'s values change (see the module docstring for how far)."""
    h = hashlib.blake2b(digest_size=16)
    if x.nbytes <= FULL_HASH_BYTES:
        h.update(np.ascontiguousarray(x).view(np.uint8).tobytes())
        return h.digest()
    rows, sample_rows, sample_cols = _sample_positions(*x.shape)
    h.update(np.ascontiguousarray(x[rows]).tobytes())
    h.update(np.ascontiguousarray(x[sample_rows, sample_cols]).tobytes())
    return h.digest()


@functools.lru_cache(maxsize=16)
def _sample_positions(n, d):
    """(whole rows, value rows, value columns) that ``fingerprint`` reads from an (n, d) array."""
    flat = np.random.default_rng(n * 1_000_003 + d).integers(0, n * d, SAMPLE_VALUES)
    return np.unique(np.linspace(0, n - 1, SAMPLE_ROWS).astype(np.int64)), flat // d, flat % d


def _lookup(x, key):
    entry = _ENTRIES.get(key)
    if entry is None or entry.ref() is not x:
        return None
    if entry.signature != _signature(x) or entry.fingerprint != fingerprint(x):
        forget(x)  # changed in place: prepare again
        return None
    _ENTRIES.move_to_end(key)
    return entry


def _drop(key, entry):
    if _ENTRIES.get(key) is entry:
        del _ENTRIES[key]


class Prepared:
    """A checked data set: ``x`` (C-contiguous, the training dtype), ``raw_pixels`` (what the raw-pixel
    check said), and ``inputs(backend)``: ``backend.prepare_inputs(x)``, computed once."""

    def __init__(self, x, raw_pixels, entry=None):
        self.x, self.raw_pixels, self._entry = x, raw_pixels, entry

    def inputs(self, backend):
        cache = self._entry.inputs if self._entry is not None else {}
        if backend.NAME not in cache:
            counts["inputs"] += 1
            cache[backend.NAME] = backend.prepare_inputs(self.x)
        return cache[backend.NAME]


def prepare(x, name, n_features, check, raw_pixels, dtype=np.float32):
    """``Prepared`` data set ``x``: ``check(x, name, n_features, dtype)`` (``validation.check_x``,
    which raises on bad input) and ``raw_pixels(checked x)``, from the cache when ``x`` was
    prepared for ``dtype`` before and is unchanged (see the rule above)."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or (n_features is not None and x.shape[1] != n_features):
        checked = check(x, name, n_features, dtype)  # not cacheable (a list ...), or an error to raise
        counts["check"] += 1
        return Prepared(checked, raw_pixels(checked))
    key = (id(x), np.dtype(dtype).str)
    entry = _lookup(x, key)
    if entry is None:
        checked = check(x, name, n_features, dtype)
        counts["check"] += 1
        entry = _Entry(None, _signature(x), fingerprint(x), None if checked is x else checked, raw_pixels(checked))
        entry.ref = weakref.ref(x, lambda _, key=key, e=entry: _drop(key, e))
        _ENTRIES[key] = entry
        while len(_ENTRIES) > MAX_ENTRIES:
            _ENTRIES.popitem(last=False)
    # never hold x itself: the entry must not keep the caller's array alive
    return Prepared(x if entry.checked is None else entry.checked, entry.raw_pixels, entry)


def forget(x=None):
    """Drop the cached preparation of ``x`` (every data set's with no argument): call it after
    changing a few values of a large array in place (see the module docstring)."""
    if x is None:
        _ENTRIES.clear()
    else:
        for key in [key for key in _ENTRIES if key[0] == id(x)]:
            del _ENTRIES[key]
