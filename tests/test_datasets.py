"""Tests for fastnn.datasets: real data, synthetic IDX files, corruption, download, lookup."""

import gzip
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from fastnn import datasets
from fastnn.datasets import (
    ChecksumError,
    DatasetError,
    DatasetNotFoundError,
    DatasetSpec,
    DownloadError,
    IDXFormatError,
    LabelError,
    TruncatedFileError,
    dataset_info,
    load_dataset,
)

STEMS = list(datasets.FILES.values())


# ---------------------------------------------------------------- helpers
def _expected(arrays, split):
    img, lab = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    return img.reshape(len(img), -1).astype(np.float64) / 255.0, lab.astype(np.int64)


def _register_fake(monkeypatch, name, directory, n_classes=4, mirrors=None):
    """Register ``name`` as a named dataset whose SHA table matches ``directory``'s files."""
    sha = {}
    for stem in STEMS:
        gz = directory / (stem + ".gz")
        raw = gzip.decompress(gz.read_bytes()) if gz.exists() else (directory / stem).read_bytes()
        sha[stem] = hashlib.sha256(raw).hexdigest()
    monkeypatch.setitem(datasets.DATASETS, name, DatasetSpec(name, n_classes, sha))
    monkeypatch.setitem(datasets.MIRRORS, name, list(mirrors or []))
    return sha


def _files_in(directory):
    return sorted(p.name for p in Path(directory).iterdir()) if Path(directory).exists() else []


# ---------------------------------------------------------------- real data
def _real_dir(name):
    """Where the real data set is found offline (FASTNN_DATA, the cache, or for MNIST the
    copy shipped with fastnn); skips with a reason when it is nowhere."""
    try:
        return dataset_info(name, download=False).directory
    except DatasetNotFoundError:
        pytest.skip(f"real {name} data absent: set FASTNN_DATA to a directory holding "
                    f"{name}/ with the four gzipped IDX files")


def _check_real(x_tr, y_tr, x_te, y_te):
    assert x_tr.shape == (60000, 784) and x_te.shape == (10000, 784)
    assert y_tr.shape == (60000,) and y_te.shape == (10000,)
    for x in (x_tr, x_te):
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable
        assert x.min() == 0.0 and x.max() == 1.0
    assert y_tr.dtype == np.int64 and y_te.dtype == np.int64


def test_mnist_real():
    directory = _real_dir("mnist")
    (x_tr, y_tr), (x_te, y_te) = load_dataset("mnist")
    _check_real(x_tr, y_tr, x_te, y_te)
    counts = np.bincount(y_tr, minlength=10)
    assert counts[0] == 5923 and counts[1] == 6742 and counts.sum() == 60000
    assert np.bincount(y_te, minlength=10).sum() == 10000
    # Independent reference: the raw bytes after the 16-byte header, scaled by 255.
    raw = gzip.decompress((directory / "t10k-images-idx3-ubyte.gz").read_bytes())
    ref = np.frombuffer(raw, np.uint8, offset=16).reshape(10000, 784)
    np.testing.assert_array_equal(np.rint(x_te * 255).astype(np.uint8), ref)
    info = dataset_info("mnist")
    assert (info.n_classes, info.image_shape, info.n_features) == (10, (28, 28), 784)
    assert info.source in ("FASTNN_DATA", "cache", "package")


def test_kmnist_real():
    _real_dir("kmnist")
    (x_tr, y_tr), (x_te, y_te) = load_dataset("KMNIST")
    _check_real(x_tr, y_tr, x_te, y_te)
    np.testing.assert_array_equal(np.bincount(y_tr, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_te, minlength=10), [1000] * 10)


def test_mnist_from_repo_data(isolated_data_env, monkeypatch):
    # A source checkout: no fastnn/data/ in the package, the files in the repository's data/.
    package_root = Path(datasets.__file__).resolve().parent
    repo_root = package_root.parent
    assert not (package_root / "data").exists(), "MNIST is tracked only under the top-level data/mnist/"
    assert all((repo_root / "data" / "mnist" / (s + ".gz")).is_file() for s in STEMS)
    monkeypatch.setattr(datasets, "_REPO_ROOT", repo_root)
    monkeypatch.setattr(datasets, "_PACKAGE_ROOT", package_root)
    info = dataset_info("mnist", download=False)
    assert info.source == "package" and info.directory == repo_root / "data" / "mnist"
    (x_tr, y_tr), (x_te, y_te) = load_dataset("mnist", download=False)
    _check_real(x_tr, y_tr, x_te, y_te)
    assert np.bincount(y_tr)[1] == 6742


# ---------------------------------------------------------------- synthetic directories
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_custom_directory_loads(tmp_path, write_tiny_idx, gz):
    arrays = write_tiny_idx(tmp_path / "d", n_train=20, n_test=10, rows=5, cols=4,
                            n_classes=4, gz=gz)
    (x_tr, y_tr), (x_te, y_te) = load_dataset(tmp_path / "d")
    for x, y, split, n in ((x_tr, y_tr, "train", 20), (x_te, y_te, "test", 10)):
        ref_x, ref_y = _expected(arrays, split)
        assert x.shape == (n, 20) and x.dtype == np.float32 and x.flags.c_contiguous
        assert y.shape == (n,) and y.dtype == np.int64
        np.testing.assert_allclose(x, ref_x, rtol=1e-7, atol=0)
        np.testing.assert_array_equal(y, ref_y)
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0
    info = dataset_info(str(tmp_path / "d"))
    assert (info.name, info.source, info.n_train, info.n_test, info.image_shape,
            info.n_features, info.n_classes) == ("d", "path", 20, 10, (5, 4), 20, 4)


def test_other_image_size_and_class_count(tmp_path, write_tiny_idx):
    write_tiny_idx(tmp_path, n_train=30, n_test=7, rows=3, cols=7, n_classes=6)
    info = dataset_info(tmp_path)
    assert (info.image_shape, info.n_features, info.n_classes) == ((3, 7), 21, 6)
    (x_tr, _), _ = load_dataset(tmp_path)
    assert x_tr.shape == (30, 21)


def test_returned_arrays_are_fresh_copies(tiny_idx_dir):
    (x1, y1), _ = load_dataset(tiny_idx_dir)
    x1[:] = -5.0
    y1[:] = 99
    (x2, y2), _ = load_dataset(tiny_idx_dir)
    assert x2.min() == 0.0 and y2.max() == 3


def test_file_replaced_on_disk_is_reread(tmp_path, write_tiny_idx):
    write_tiny_idx(tmp_path, n_train=20)
    assert load_dataset(tmp_path)[0][0].shape[0] == 20
    write_tiny_idx(tmp_path, n_train=24)
    assert load_dataset(tmp_path)[0][0].shape[0] == 24


def test_unknown_name_and_missing_files(tmp_path, tiny_idx_dir):
    with pytest.raises(DatasetNotFoundError, match="neither a known dataset.*mnist"):
        load_dataset("no-such-dataset")
    (tiny_idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing t10k-labels-idx1-ubyte"):
        load_dataset(tiny_idx_dir)


# Each corruption: (label, role to damage, function bytes -> bytes on the decompressed
# IDX content or None for gz-level damage, expected exception, message fragments).
def _truncate_gz(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_gzip(path):
    path.write_bytes(gzip.decompress(path.read_bytes()))


def _edit_idx(fn):
    def apply(path):
        path.write_bytes(gzip.compress(fn(gzip.decompress(path.read_bytes()))))
    return apply


def _set_byte(i, v):
    return _edit_idx(lambda b: b[:i] + bytes([v]) + b[i + 1:])


CORRUPTIONS = {
    "truncated_gzip": ("train_images", _truncate_gz, TruncatedFileError,
                       ["train-images-idx3-ubyte.gz", "truncated"]),
    "not_gzip": ("test_images", _not_gzip, IDXFormatError,
                 ["t10k-images-idx3-ubyte.gz", "not a valid gzip"]),
    "wrong_magic": ("train_labels", _set_byte(0, 0x1F), IDXFormatError,
                    ["train-labels-idx1-ubyte.gz", "bad IDX magic", "1f 00 08 01"]),
    "wrong_dtype": ("train_images", _set_byte(2, 0x0D), IDXFormatError,
                    ["train-images-idx3-ubyte.gz", "dtype code 0x0D", "float32", "0x08"]),
    "payload_short": ("test_images", _edit_idx(lambda b: b[:-3]), IDXFormatError,
                      ["t10k-images-idx3-ubyte.gz", "payload length", "shorter"]),
    "payload_long": ("train_labels", _edit_idx(lambda b: b + b"\x00"), IDXFormatError,
                     ["train-labels-idx1-ubyte.gz", "payload length", "trailing"]),
    "count_mismatch": ("train_labels",
                       _edit_idx(lambda b: b[:4] + (19).to_bytes(4, "big") + b[8:-1]),
                       LabelError, ["train-labels-idx1-ubyte.gz", "19 labels", "20 images"]),
    "label_out_of_range": ("test_labels", _edit_idx(lambda b: b[:-1] + b"\x07"), LabelError,
                           ["t10k-labels-idx1-ubyte.gz", "label 7", "out of range", "0..3"]),
    "class_never_in_train": ("train_labels",
                             _edit_idx(lambda b: b[:8] + bytes(x if x != 2 else 1
                                                               for x in b[8:])),
                             LabelError, ["train-labels-idx1-ubyte.gz", "[2]", "never occur"]),
    "labels_2d": ("test_labels",
                  _edit_idx(lambda b: bytes([0, 0, 8, 2]) + (5).to_bytes(4, "big")
                            + (2).to_bytes(4, "big") + b[8:]),
                  IDXFormatError, ["t10k-labels-idx1-ubyte.gz", "2 dimensions"]),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corruption_gives_specific_error(tiny_idx_dir, kind):
    role, damage, exc_type, fragments = CORRUPTIONS[kind]
    path = tiny_idx_dir / (datasets.FILES[role] + ".gz")
    damage(path)
    with pytest.raises(exc_type) as info:
        load_dataset(tiny_idx_dir)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert info.value.path.name == path.name
    assert isinstance(info.value, DatasetError) and isinstance(info.value, ValueError)


def test_checksum_mismatch_for_named_dataset(isolated_data_env, write_tiny_idx):
    # Valid IDX files, wrong content: only the SHA-256 can tell.
    data_dir = isolated_data_env / "explicit"
    write_tiny_idx(data_dir / "mnist", n_classes=10)
    with pytest.raises(ChecksumError) as info:
        load_dataset("mnist", data_dir=data_dir)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "SHA-256" in message
    assert datasets.DATASETS["mnist"].sha256["train-images-idx3-ubyte"] in message


def test_corrupt_high_priority_copy_is_not_skipped(isolated_data_env, write_tiny_idx,
                                                   monkeypatch):
    # A good copy in the packaged place, a different one in the (earlier) cache.
    packaged = isolated_data_env / "repo" / "data" / "synth"
    write_tiny_idx(packaged)
    _register_fake(monkeypatch, "synth", packaged)
    write_tiny_idx(isolated_data_env / "xdg_cache" / "fastnn" / "synth", seed=1)
    with pytest.raises(ChecksumError, match="xdg_cache/fastnn/synth/train-images"):
        load_dataset("synth", download=False)


# ---------------------------------------------------------------- lookup order
def test_search_order(isolated_data_env, write_tiny_idx, monkeypatch):
    root = isolated_data_env
    places = {
        "data_dir": root / "explicit" / "synth",
        "FASTNN_DATA": root / "env" / "synth",
        "cache": root / "xdg_cache" / "fastnn" / "synth",
        "package": root / "repo" / "fastnn" / "data" / "synth",
        "checkout": root / "repo" / "data" / "synth",
        "cwd": root / "cwd" / "data" / "synth",
    }
    for directory in places.values():
        write_tiny_idx(directory)  # identical content: only info.directory tells them apart
    _register_fake(monkeypatch, "synth", places["cache"])
    monkeypatch.setenv("FASTNN_DATA", str(root / "env"))

    def found(**kw):
        info = dataset_info("synth", download=False, **kw)
        return info.source, info.directory

    assert found(data_dir=root / "explicit") == ("data_dir", places["data_dir"])
    assert found() == ("FASTNN_DATA", places["FASTNN_DATA"])
    monkeypatch.delenv("FASTNN_DATA")
    assert found() == ("cache", places["cache"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "empty_cache"))
    assert found() == ("package", places["package"])  # an installed package's copy
    shutil.rmtree(root / "repo" / "fastnn")
    assert found() == ("package", places["checkout"])  # a source checkout's data/
    monkeypatch.setattr(datasets, "_REPO_ROOT", root / "elsewhere")
    assert found() == ("cwd", places["cwd"])
    monkeypatch.chdir(root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg_cache"))
    assert found() == ("cache", places["cache"])
    # data_dir may also hold the four files directly; <data_dir>/<name>/ wins over them.
    write_tiny_idx(root / "flat")
    assert found(data_dir=root / "flat") == ("data_dir", root / "flat")
    write_tiny_idx(root / "flat" / "synth")
    assert found(data_dir=root / "flat") == ("data_dir", root / "flat" / "synth")
    # A location with only some of the files is skipped (and reported if nothing is found).
    (places["cache"] / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as info:
        found()
    message = str(info.value)
    assert "missing t10k-labels-idx1-ubyte" in message and "Downloading is disabled" in message


def test_not_found_message_lists_places_and_fixes(isolated_data_env, monkeypatch):
    spec = DatasetSpec("synth", 4, {s: "0" * 64 for s in STEMS})
    monkeypatch.setitem(datasets.DATASETS, "synth", spec)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("synth", data_dir=isolated_data_env / "nowhere", download=False)
    assert not isinstance(info.value, DownloadError)
    message = str(info.value)
    root = str(isolated_data_env)
    for fragment in (f"{root}/nowhere/synth", "FASTNN_DATA: not set",
                     f"{root}/repo/data/synth", f"{root}/cwd/data/synth",
                     f"{root}/xdg_cache/fastnn/synth", "set FASTNN_DATA", "data_dir=",
                     "copy the four files"):
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ---------------------------------------------------------------- download
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def local_server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1 (ephemeral port); yields (base_url, root, log)."""
    root = tmp_path / "www"
    root.mkdir()
    log = []

    class Handler(_QuietHandler):
        def __init__(self, *args, **kw):
            super().__init__(*args, directory=str(root), **kw)

        def do_GET(self):
            log.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root, log
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_and_caches(isolated_data_env, write_tiny_idx, local_server,
                                      monkeypatch):
    base, www, log = local_server
    arrays = write_tiny_idx(www / "synth")
    _register_fake(monkeypatch, "synth", www / "synth", mirrors=[base + "synth/"])
    cache = isolated_data_env / "xdg_cache" / "fastnn" / "synth"

    (x_tr, y_tr), (x_te, y_te) = load_dataset("synth")
    assert sorted(log) == sorted(f"/synth/{s}.gz" for s in STEMS)
    assert _files_in(cache) == sorted(s + ".gz" for s in STEMS)  # no temp files left
    np.testing.assert_array_equal(y_te, _expected(arrays, "test")[1])
    np.testing.assert_allclose(x_tr, _expected(arrays, "train")[0], rtol=1e-7)
    assert dataset_info("synth").source == "cache"
    assert len(log) == 4  # the second lookup used the cache, not the server


def test_download_via_fastnn_mirror_env(isolated_data_env, write_tiny_idx, local_server,
                                        monkeypatch):
    base, www, log = local_server
    write_tiny_idx(www / "mirror" / "synth")
    _register_fake(monkeypatch, "synth", www / "mirror" / "synth",
                   mirrors=["http://127.0.0.1:1/unused/"])
    monkeypatch.setenv("FASTNN_MIRROR", base + "mirror")
    assert dataset_info("synth").source == "download"
    assert sorted(log) == sorted(f"/mirror/synth/{s}.gz" for s in STEMS)


def _flip_payload_byte(path):
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[-1] ^= 0x01  # still a well-formed IDX file: only the SHA-256 catches it
    path.write_bytes(gzip.compress(bytes(raw)))


@pytest.mark.parametrize("damage,fragment", [
    (_flip_payload_byte, "SHA-256"),
    (_truncate_gz, "truncated"),
    (lambda p: p.unlink(), "HTTP 404"),
], ids=["checksum", "truncated", "missing"])
def test_bad_download_caches_nothing(isolated_data_env, write_tiny_idx, local_server,
                                     monkeypatch, damage, fragment):
    base, www, _ = local_server
    write_tiny_idx(www / "synth")
    _register_fake(monkeypatch, "synth", www / "synth", mirrors=[base + "synth/"])
    damage(www / "synth" / "train-images-idx3-ubyte.gz")  # the first file fetched
    with pytest.raises(DownloadError) as info:
        load_dataset("synth")
    message = str(info.value)
    assert fragment in message and "train-images-idx3-ubyte.gz" in message
    assert _files_in(isolated_data_env / "xdg_cache" / "fastnn" / "synth") == []


def test_server_down(isolated_data_env, monkeypatch):
    with socket.socket() as s:  # grab a free port, then close it: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(datasets.DATASETS, "synth",
                        DatasetSpec("synth", 4, {s: "0" * 64 for s in STEMS}))
    monkeypatch.setitem(datasets.MIRRORS, "synth", [f"http://127.0.0.1:{port}/synth/"])
    with pytest.raises(DownloadError) as info:
        load_dataset("synth")
    message = str(info.value)
    for fragment in ("cannot connect", f"127.0.0.1:{port}", "Looked in", "FASTNN_DATA",
                     "data_dir=", str(isolated_data_env / "xdg_cache" / "fastnn" / "synth")):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert _files_in(isolated_data_env / "xdg_cache" / "fastnn" / "synth") == []


def test_interrupted_download_caches_nothing(isolated_data_env, monkeypatch):
    class ShortHandler(_QuietHandler):
        def do_GET(self):  # promise 1000 bytes, send 10, hang up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"\x00" * 8)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ShortHandler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        monkeypatch.setitem(datasets.DATASETS, "synth",
                            DatasetSpec("synth", 4, {s: "0" * 64 for s in STEMS}))
        monkeypatch.setitem(datasets.MIRRORS, "synth",
                            [f"http://127.0.0.1:{server.server_address[1]}/synth/"])
        with pytest.raises(DownloadError, match="ended after 10 of 1000 bytes"):
            load_dataset("synth")
    finally:
        server.shutdown()
        server.server_close()
    assert _files_in(isolated_data_env / "xdg_cache" / "fastnn" / "synth") == []
