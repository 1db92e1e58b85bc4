"""Find, verify, download and parse IDX datasets (MNIST, KMNIST, any IDX directory).

The public entry points are :func:`load_dataset` and :func:`dataset_info`.

Where data is looked for, in order (the first location holding all four files wins):

1. ``data_dir`` if given: first ``data_dir/<name>/``, then ``data_dir`` itself.
2. ``$FASTNN_DATA/<name>/``.
3. The user cache: ``$XDG_CACHE_HOME/fastnn/<name>/``, else ``~/.cache/fastnn/<name>/``.
4. The packaged copy: ``fastnn/data/<name>/`` inside the installed package (MNIST ships
   in the wheel), or in a source checkout the repository's ``data/<name>/``.
5. ``./data/<name>/`` under the current working directory.
6. Otherwise the files are downloaded into the cache (base URL from :data:`MIRRORS`, or
   ``$FASTNN_MIRROR``), verified, and only then renamed into place.

A location that holds the files but fails verification raises; it is never skipped
silently. Every file is checked: IDX magic, dtype code (unsigned byte only), dimensions,
payload length, image/label counts, label range and, for the named datasets, the
SHA-256 of the decompressed bytes.

In-process cache: the verified uint8 contents of each file are kept (read-only, at most
12 files, keyed by resolved path, size and mtime) so repeated loads skip decompression
and hashing; every call still returns fresh, writable float32/int64 arrays, so one
caller's in-place edits can never reach another caller. :func:`clear_cache` frees it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import math
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "load_dataset",
    "dataset_info",
    "class_names",
    "clear_cache",
    "DatasetInfo",
    "DatasetSpec",
    "DATASETS",
    "MIRRORS",
    "FILES",
    "DatasetError",
    "DatasetNotFoundError",
    "DownloadError",
    "IDXFormatError",
    "TruncatedFileError",
    "LabelError",
    "ChecksumError",
]

# Role -> standard IDX file name (without .gz); identical for MNIST, KMNIST and friends.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_IDX_DTYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16",
               0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}
_DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 16


# ---------------------------------------------------------------- errors
class DatasetError(ValueError):
    """Base class for every dataset problem; ``path`` names the offending file or dir."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.path = None if path is None else Path(path)


class DatasetNotFoundError(DatasetError):
    """No location holds the dataset (and it could not or may not be downloaded)."""


class DownloadError(DatasetNotFoundError):
    """Not found locally and every download attempt failed; nothing was cached."""


class IDXFormatError(DatasetError):
    """The file is not a well-formed unsigned-byte IDX file (magic, dtype, dims, length)."""


class TruncatedFileError(IDXFormatError):
    """A gzip stream ends before its end-of-stream marker (interrupted copy/download)."""


class LabelError(DatasetError):
    """Labels disagree with the images (count) or with the class range."""


class ChecksumError(DatasetError):
    """A named dataset's file has the wrong SHA-256 (corrupt, or a different dataset)."""


# ---------------------------------------------------------------- registry
@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: class count, SHA-256 of each decompressed file, licence note, and
    the class names plots and tables show (empty: the class ids)."""

    name: str
    n_classes: int
    sha256: dict = field(default_factory=dict)  # file stem -> hex digest
    attribution: str = ""
    class_names: tuple = ()


DATASETS = {
    "mnist": DatasetSpec(
        "mnist", 10,
        {
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        "MNIST by Yann LeCun and Corinna Cortes, CC BY-SA 3.0",
    ),
    "kmnist": DatasetSpec(
        "kmnist", 10,
        {
            "train-images-idx3-ubyte": "7112ba9ec422d98de4885262d4a4dff14cc4fefb81c11ace8bf563a8255df5c3",
            "train-labels-idx1-ubyte": "2a16eeae62da984b8bd24fa32e31d47291f01dac3fe84d5594f304f71e7d374b",
            "t10k-images-idx3-ubyte": "76fbd229ce87db80dd281af5e6670de4ad0e42fb30a7bd643972994c47c1f42e",
            "t10k-labels-idx1-ubyte": "a11dc742be8e781a40a92f53d6a4957e7b7d36df2faa097659131ebfd8fd60c6",
        },
        '"KMNIST Dataset" by CODH, adapted from "Kuzushiji Dataset" by NIJL and others, '
        "doi:10.20676/00000341, CC BY-SA 4.0",
        # Romanised readings of the ten hiragana, in label order (KMNIST's classmap).
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}

# Base URLs tried in order; "<base><file>.gz" is fetched. $FASTNN_MIRROR overrides these
# (a base holding <name>/<file>.gz, or a template containing "{name}").
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/"],
    "kmnist": ["http://codh.rois.ac.jp/kmnist/dataset/kmnist/"],
}

# Module level so tests can point them elsewhere; never a hard-coded data path.
# _PACKAGE_ROOT/data/<name>/ is the copy a wheel ships (setup.py maps the repository's
# data/ there); _REPO_ROOT/data/<name>/ is the same files in a source checkout.
_PACKAGE_ROOT = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_ROOT.parent


@dataclass(frozen=True)
class DatasetInfo:
    """What a model or CLI needs to know about a loaded dataset.

    Attributes
    ----------
    name : str
        Dataset name (``"mnist"``, ``"kmnist"``, or the directory's base name).
    directory : pathlib.Path
        Directory the four files were read from.
    source : str
        Which lookup step found it: ``"data_dir"``, ``"FASTNN_DATA"``, ``"cache"``,
        ``"package"``, ``"cwd"``, ``"download"`` or ``"path"``.
    n_train, n_test : int
        Number of training / test images.
    image_shape : tuple of int
        ``(rows, cols)`` from the IDX header.
    n_features : int
        ``rows * cols``, the width of ``x``.
    n_classes : int
        10 for the named datasets; ``max(train label) + 1`` for a directory.
    class_names : tuple of str
        One label per class for plots and tables: KMNIST's romanised hiragana
        (``"o", "ki", ...``), otherwise the class ids as strings.
    """

    name: str
    directory: Path
    source: str
    n_train: int
    n_test: int
    image_shape: tuple
    n_features: int
    n_classes: int
    class_names: tuple = ()

    def record(self):
        """The JSON record a saved model keeps of its training data (``fastnn.io``):
        ``name``, ``path`` (the directory of a data set given by path, else None),
        ``n_features``, ``n_classes`` and ``image_shape``."""
        path = str(Path(self.directory).resolve()) if self.source == "path" else None  # usable from any cwd
        return {"name": self.name, "path": path,
                "n_features": self.n_features, "n_classes": self.n_classes,
                "image_shape": list(self.image_shape)}


# ---------------------------------------------------------------- public API
def load_dataset(name_or_path, data_dir=None, *, download=True):
    """Load an IDX dataset as float32 features in [0, 1] and int64 labels.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        ``"mnist"`` or ``"kmnist"`` (case-insensitive), or a directory holding the four
        standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``).
        A ``pathlib.Path`` or any string that is not a known name is treated as a path.
    data_dir : str or os.PathLike, optional
        Searched first for a named dataset: ``data_dir/<name>/``, then ``data_dir``
        itself. If neither holds the files, the rest of the lookup order follows (see
        the module docstring). Ignored when ``name_or_path`` is a directory.
    download : bool, default True
        For a named dataset found nowhere, download it into the user cache.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        ``x_*``: C-contiguous float32 of shape ``(n, rows*cols)``, pixel/255.
        ``y_*``: int64 of shape ``(n,)``. Fresh, writable arrays on every call.

    Raises
    ------
    DatasetError
        Or one of its subclasses; the message names the file, the problem and the fix.
    """
    _, arrays = _load_raw(name_or_path, data_dir, download)
    tr_img, tr_lab, te_img, te_lab = arrays
    return (_to_features(tr_img), tr_lab.astype(np.int64)), (
        _to_features(te_img), te_lab.astype(np.int64))


def dataset_info(name_or_path, data_dir=None, *, download=True):
    """Describe a dataset (counts, image shape, class count, where it was found).

    Takes the same arguments as :func:`load_dataset` and runs the same lookup and
    verification; the parsed files are cached in-process, so calling both is cheap.

    Returns
    -------
    DatasetInfo
    """
    info, _ = _load_raw(name_or_path, data_dir, download)
    return info


def clear_cache():
    """Drop the in-process cache of parsed, verified files (frees their memory)."""
    _read_idx_cached.cache_clear()


# ---------------------------------------------------------------- lookup
def _load_raw(name_or_path, data_dir, download):
    spec = _named_spec(name_or_path)
    if spec is None:
        directory = Path(os.fspath(name_or_path)).expanduser()
        if not directory.is_dir():
            known = ", ".join(sorted(DATASETS))
            raise DatasetNotFoundError(
                f"{os.fspath(name_or_path)!r} is neither a known dataset ({known}) nor an "
                "existing directory. Pass one of the names, or a directory holding the four "
                f"IDX files ({', '.join(FILES.values())}, optionally .gz).", directory)
        paths = _find_files(directory)
        if paths is None:
            raise DatasetNotFoundError(
                f"Directory {directory} does not hold all four IDX files: "
                f"{_describe_missing(directory)}. Expected {', '.join(FILES.values())} "
                "(each optionally .gz).", directory)
        name, source = directory.resolve().name, "path"
    else:
        name = spec.name
        paths, directory, source = _locate_named(spec, data_dir, download)

    arrays = [_read_idx_cached(*_cache_key(paths[role], spec)) for role in FILES]
    n_classes = _check_consistency(paths, arrays, spec)
    tr_img, _, te_img, _ = arrays
    info = DatasetInfo(name=name, directory=Path(directory), source=source,
                       n_train=tr_img.shape[0], n_test=te_img.shape[0],
                       image_shape=tuple(int(d) for d in tr_img.shape[1:]),
                       n_features=int(np.prod(tr_img.shape[1:])), n_classes=n_classes,
                       class_names=class_names(name if spec is not None else None, n_classes))
    return info, arrays


def class_names(name, n_classes):
    """Labels of classes 0..n_classes-1 for plots and tables: a named data set's names
    (KMNIST's romanised hiragana), else the ids as strings."""
    names = DATASETS[name].class_names if name in DATASETS else ()
    return tuple(names) if len(names) == n_classes else tuple(str(i) for i in range(n_classes))


def _named_spec(name_or_path):
    # Only a plain string can be a name; a Path is always a path ("./mnist" loads a dir).
    if isinstance(name_or_path, str) and name_or_path.lower() in DATASETS:
        return DATASETS[name_or_path.lower()]
    return None


def _candidates(name, data_dir):
    """(source label, directory or None, note) in lookup order."""
    out = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        out += [("data_dir", d / name, ""), ("data_dir", d, "")]
    else:
        out.append(("data_dir", None, "not given"))
    env = os.environ.get("FASTNN_DATA")
    if env:
        out.append(("FASTNN_DATA", Path(env).expanduser() / name, ""))
    else:
        out.append(("FASTNN_DATA", None, "not set"))
    out.append(("cache", _cache_dir(name), ""))
    out.append(("package", _packaged_dir(name), ""))
    out.append(("cwd", Path.cwd() / "data" / name, ""))
    return out


def _packaged_dir(name):
    """The copy shipped with fastnn: inside an installed package, else the checkout's data/."""
    bundled = _PACKAGE_ROOT / "data" / name
    return bundled if bundled.is_dir() else _REPO_ROOT / "data" / name


def _cache_dir(name):
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says to ignore empty or relative values.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fastnn" / name


def _locate_named(spec, data_dir, download):
    looked, seen = [], set()
    for source, directory, note in _candidates(spec.name, data_dir):
        if directory is None:
            looked.append(f"  - {source}: {note}")  # e.g. "FASTNN_DATA: not set"
            continue
        key = os.path.normcase(os.path.abspath(directory))
        if key in seen:
            continue
        seen.add(key)
        paths = _find_files(directory)
        if paths is not None:
            return paths, directory, source
        looked.append(f"  - {directory} ({source}): {_describe_missing(directory)}")

    cache = _cache_dir(spec.name)
    how = (
        f"To provide the files, either\n"
        f"  - set FASTNN_DATA to a directory holding {spec.name}/ with the four files,\n"
        f"  - pass data_dir=<directory holding them or a {spec.name}/ subfolder> "
        f"(--data-dir on the command line), or\n"
        f"  - copy the four files ({', '.join(f + '.gz' for f in FILES.values())}) into {cache}"
    )
    header = f"Dataset {spec.name!r} was not found. Looked in:\n" + "\n".join(looked)
    if not download:
        raise DatasetNotFoundError(f"{header}\nDownloading is disabled.\n{how}", cache)
    failures = _download(spec, cache)
    paths = _find_files(cache) if not failures else None
    if paths is None:
        urls = ", ".join(_mirror_bases(spec.name))
        raise DownloadError(
            f"{header}\nDownloading from {urls} failed:\n" + "\n".join(failures)
            + f"\nNo file that failed was kept.\n{how}", cache)
    return paths, cache, "download"


def _find_files(directory):
    """Map role -> path if all four files exist (raw preferred over .gz), else None."""
    paths = {}
    for role, stem in FILES.items():
        for cand in (directory / stem, directory / (stem + ".gz")):
            if cand.is_file():
                paths[role] = cand
                break
        else:
            return None
    return paths


def _describe_missing(directory):
    if not directory.is_dir():
        return "no such directory"
    missing = [s for s in FILES.values()
               if not (directory / s).is_file() and not (directory / (s + ".gz")).is_file()]
    return "missing " + ", ".join(missing)


# ---------------------------------------------------------------- parsing
def _cache_key(path, spec):
    st = path.stat()
    expected = spec.sha256.get(path.name.removesuffix(".gz")) if spec is not None else None
    # Size and mtime in the key: a file replaced on disk is re-read and re-verified.
    return str(path.resolve()), st.st_size, st.st_mtime_ns, expected


@functools.lru_cache(maxsize=12)
def _read_idx_cached(path, size, mtime_ns, expected_sha256):
    # Returns a read-only uint8 array; callers only ever derive fresh arrays from it, so
    # sharing it across calls cannot leak one caller's edits into another's data.
    return _read_idx(Path(path), expected_sha256)


#: deflate expands at most about 1032:1, so a .gz file whose IDX header implies more than
#: this many bytes per compressed byte cannot hold them: refused before inflating anything
MAX_DEFLATE_RATIO = 1032


def _read_idx(path, expected_sha256=None, gz=None, shown=None):
    """Read, decompress and verify one IDX file; return its read-only uint8 array, shape from header.

    The 16-byte (for 3-D) header is read and checked first; the payload is then read
    into one array of the size the header implies and never beyond it (a gzip stream
    that expands further is refused after a single extra byte). ``gz`` (default: by the
    ``.gz`` suffix) says whether ``path`` is gzip-compressed; ``shown`` names the file in
    messages (default ``path``).
    """
    shown = path if shown is None else shown
    gz = path.name.endswith(".gz") if gz is None else gz
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            return _read_idx_stream(f, shown, path.stat().st_size, gz, expected_sha256)
    except EOFError:
        raise TruncatedFileError(
            f"{shown}: gzip stream is truncated (file is {path.stat().st_size} bytes and ends before "
            "the end-of-stream marker). The copy or download was interrupted; delete the "
            "file and copy or download it again.", shown) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise IDXFormatError(
            f"{shown}: not a valid gzip file ({exc}). Expected a gzip-compressed IDX file; "
            "replace it with a good copy, or drop the .gz suffix if it is uncompressed.",
            shown) from None


def _read_exactly(f, n):
    """Up to ``n`` bytes from a file object (fewer only at its end)."""
    out = bytearray()
    while len(out) < n and (chunk := f.read(n - len(out))):
        out += chunk
    return bytes(out)


def _read_idx_stream(f, path, stored_size, gz, expected_sha256):
    fix = "Replace it with a good copy of the file."
    magic = _read_exactly(f, 4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise IDXFormatError(
            f"{path}: bad IDX magic: expected bytes 00 00 <dtype> <ndim>, found "
            f"{magic.hex(' ') or 'an empty file'}. This is not an IDX file. {fix}", path)
    code, ndim = magic[2], magic[3]
    if code != 0x08:
        raise IDXFormatError(
            f"{path}: IDX dtype code 0x{code:02X} ({_IDX_DTYPES.get(code, 'unknown')}); "
            "expected 0x08 (unsigned byte), the only pixel/label type fastnn reads. "
            f"Convert the data to unsigned bytes. {fix}", path)
    header_len = 4 + 4 * ndim
    dim_bytes = _read_exactly(f, 4 * ndim)
    if ndim == 0 or len(dim_bytes) < 4 * ndim:
        raise IDXFormatError(
            f"{path}: IDX header declares {ndim} dimensions, needing {header_len} header "
            f"bytes, but the file has {4 + len(dim_bytes)} bytes. {fix}", path)
    dims = tuple(int.from_bytes(dim_bytes[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    if dims[0] == 0:
        raise IDXFormatError(f"{path}: holds no items (header dims {dims}); every split needs at "
                             f"least one image and label. {fix}", path)
    if 0 in dims[1:]:
        raise IDXFormatError(f"{path}: declares items of shape {dims[1:]}, i.e. 0 pixels (header dims "
                             f"{dims}); an image needs at least one pixel. {fix}", path)
    payload = math.prod(dims)  # Python ints: a product that overflows 64 bits is caught below
    most = MAX_DEFLATE_RATIO * stored_size if gz else stored_size - header_len
    if payload > most:
        held = f"a gzip file of {stored_size} bytes can hold at most about {most}" if gz else \
            f"the file holds {stored_size - header_len}"
        raise IDXFormatError(
            f"{path}: payload length mismatch: header dims {dims} need {payload} payload bytes, but "
            f"{held} (shorter (truncated?) or a damaged header). {fix}", path)
    data = np.empty(payload, np.uint8)
    view, filled = memoryview(data), 0
    while filled < payload and (n := f.readinto(view[filled:filled + _CHUNK * 16])):
        filled += n
    if filled < payload or f.read(1):
        what = "shorter (truncated?)" if filled < payload else "longer (trailing bytes)"
        found = f"found {header_len + filled}" if filled < payload else "found more"
        raise IDXFormatError(
            f"{path}: payload length mismatch: header dims {dims} need {header_len + payload} bytes, "
            f"{found} ({what}). {fix}", path)
    if expected_sha256 is not None:
        digest = hashlib.sha256(magic + dim_bytes)
        digest.update(view)
        if digest.hexdigest() != expected_sha256:
            raise ChecksumError(
                f"{path}: SHA-256 of the decompressed bytes is {digest.hexdigest()}, expected "
                f"{expected_sha256}. The file is corrupt or belongs to a different "
                "dataset; delete it and copy or download the right one.", path)
    data.flags.writeable = False  # shared by the in-process cache
    return data.reshape(dims)


def _check_consistency(paths, arrays, spec):
    """Cross-file checks; returns the class count."""
    tr_img, tr_lab, te_img, te_lab = arrays
    for role, arr, want in zip(FILES, arrays, (3, 1, 3, 1)):
        if arr.ndim != want:
            kind = "images (n, rows, cols)" if want == 3 else "labels (n,)"
            raise IDXFormatError(
                f"{paths[role]}: has {arr.ndim} dimensions {arr.shape}; expected {want} for "
                f"{kind}. Check that the file is the right one for its name.", paths[role])
    for split, img, lab in (("train", tr_img, tr_lab), ("test", te_img, te_lab)):
        if img.shape[0] != lab.shape[0]:
            raise LabelError(
                f"{paths[split + '_labels']}: holds {lab.shape[0]} labels but "
                f"{paths[split + '_images'].name} holds {img.shape[0]} images; the counts "
                "must agree. One file is from a different dataset or split.",
                paths[split + "_labels"])
    if tr_img.shape[1:] != te_img.shape[1:]:
        raise IDXFormatError(
            f"{paths['test_images']}: image size {te_img.shape[1:]} differs from the "
            f"training images' {tr_img.shape[1:]} ({paths['train_images'].name}).",
            paths["test_images"])
    if spec is not None:
        n_classes = spec.n_classes
    else:
        n_classes = int(tr_lab.max()) + 1
        if n_classes < 2:
            raise LabelError(
                f"{paths['train_labels']}: every training label is 0, a single class; a classifier "
                "needs at least two classes (labels 0..K-1, K >= 2).", paths["train_labels"])
        counts = np.bincount(tr_lab, minlength=n_classes)
        absent = np.flatnonzero(counts == 0)
        if absent.size:
            raise LabelError(
                f"{paths['train_labels']}: max label {n_classes - 1} implies {n_classes} "
                f"classes, but classes {absent[:10].tolist()} never occur in training. "
                f"Labels must be 0..K-1 with every class present.", paths["train_labels"])
    for role, lab in (("train_labels", tr_lab), ("test_labels", te_lab)):
        if lab.size and int(lab.max()) >= n_classes:
            bad = int(np.flatnonzero(lab >= n_classes)[0])
            raise LabelError(
                f"{paths[role]}: label {int(lab[bad])} at index {bad} is out of range; "
                f"expected labels 0..{n_classes - 1} ({n_classes} classes).", paths[role])
    return n_classes


def _to_features(images):
    """uint8 (n, rows, cols) -> fresh C-contiguous float32 (n, rows*cols) in [0, 1]."""
    flat = images.reshape(images.shape[0], -1)
    out = np.empty(flat.shape, dtype=np.float32)
    # True division (not multiply by 1/255) keeps 255 -> exactly 1.0 and every value
    # correctly rounded.
    np.divide(flat, np.float32(255.0), out=out)
    return out


# ---------------------------------------------------------------- download
def _mirror_bases(name):
    env = os.environ.get("FASTNN_MIRROR")
    if env:
        return [env.format(name=name) if "{name}" in env else env.rstrip("/") + f"/{name}/"]
    return list(MIRRORS.get(name, []))


def _download(spec, cache):
    """Fetch each missing file into ``cache``; return a list of failure lines (empty = ok)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [f"  - cannot create cache directory {cache}: {exc}"]
    for stem in FILES.values():
        if (cache / stem).is_file() or (cache / (stem + ".gz")).is_file():
            continue
        errors = []
        for base in _mirror_bases(spec.name):
            url = base if base.endswith("/") else base + "/"
            url += stem + ".gz"
            try:
                _fetch_verified(url, cache / (stem + ".gz"), spec.sha256.get(stem))
                break
            # ValueError covers a malformed mirror URL and our own verification errors.
            except (OSError, ValueError, http.client.HTTPException) as exc:
                errors.append(f"  - {url}: {_short_reason(exc)}")
        else:
            # Stop at the first file no mirror could provide: when offline, trying the
            # other files only repeats the same error (and its timeout).
            return errors or [f"  - {stem}.gz: no download URL known for {spec.name!r}"]
    return []


def _short_reason(exc):
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({exc.reason})"
    return str(exc)


def _fetch_verified(url, dest, expected_sha256):
    """Stream ``url`` to a temp file beside ``dest``, verify it, then rename into place."""
    from tqdm.auto import tqdm  # imported lazily: only downloads need it

    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      leave=False) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and out.tell() != total:
                raise OSError(f"download ended after {out.tell()} of {total} bytes")
        # Full verification on the temp file: a later run must never trust a bad file.
        _verify_download(Path(tmp), dest, expected_sha256)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _verify_download(tmp, dest, expected_sha256):
    try:
        _read_idx(tmp, expected_sha256, gz=True, shown=dest)
    except DatasetError as exc:
        raise type(exc)(f"downloaded file failed verification and was discarded: {exc}",
                        dest) from None
