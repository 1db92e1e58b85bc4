"""Augmentation kernels: compiled vs NumPy twins, exact geometry, seeding, field statistics."""

import gzip
import os
from pathlib import Path

import numba
import numpy as np
import pytest
from scipy import ndimage

from fastnn.backends import augment as A
from fastnn.backends import rng

H = W = 28


def _mnist_path():
    for root in (Path(__file__).resolve().parents[1] / "data", Path(os.environ.get("FASTNN_DATA", "/nonexistent"))):
        path = root / "mnist" / "train-images-idx3-ubyte.gz"
        if path.exists():
            return path
    return None


@pytest.fixture(scope="module")
def digits():
    """The first 64 real MNIST training images as float32 (64, 784) in [0, 1]."""
    path = _mnist_path()
    if path is None:
        pytest.skip("MNIST training images not found in data/mnist or $FASTNN_DATA/mnist")
    with gzip.open(path) as f:
        raw = f.read(16 + 64 * H * W)
    return (np.frombuffer(raw, np.uint8, offset=16).reshape(64, H * W) / 255.0).astype(np.float32)


def _both(x, rows, height, width, aug, seed, stream):
    out_nb = np.full((len(rows), height * width), np.nan, np.float32)
    out_np = np.full_like(out_nb, np.nan)
    out_serial = np.full_like(out_nb, np.nan)
    A.augment_rows(x, rows, height, width, aug, seed, stream, out_nb)
    A.augment_rows_serial(x, rows, height, width, aug, seed, stream, out_serial)
    A.augment_rows_numpy(x, rows, height, width, aug, seed, stream, out_np)
    np.testing.assert_array_equal(out_serial, out_nb)
    return out_nb, out_np


ALL = A.make_aug(shift=2, rotation=15, scale=0.1, elastic_alpha=34, elastic_sigma=4)


@pytest.mark.parametrize("aug", [
    A.make_aug(shift=2, rotation=15, scale=0.1),
    A.make_aug(elastic_alpha=34, elastic_sigma=4),
    ALL,
    A.make_aug(shift=3.5, rotation=40, scale=0.3, elastic_alpha=8, elastic_sigma=1.5),
], ids=["affine", "elastic", "all", "strong"])
def test_numba_matches_numpy_on_mnist(digits, aug):
    rows = np.array([3, 0, 63, 3, 17, 42, 5, 9], dtype=np.int64)
    out_nb, out_np = _both(digits, rows, H, W, aug, 11, 7)
    np.testing.assert_allclose(out_nb, out_np, rtol=0, atol=1e-5)
    # Not a trivial pass: the images did change.
    assert np.abs(out_nb - digits[rows]).max() > 0.3


def test_numba_matches_numpy_on_non_square_images():
    # 20 x 30 catches any height/width mix-up in the indexing.
    x = np.random.default_rng(0).random((5, 20 * 30)).astype(np.float32)
    rows = np.array([4, 1, 2], dtype=np.int64)
    out_nb, out_np = _both(x, rows, 20, 30, ALL, 3, 9)
    np.testing.assert_allclose(out_nb, out_np, rtol=0, atol=1e-5)


@pytest.mark.parametrize("aug", [
    np.array([0.0, 2, 15, 0.1, 34, 4, 0, 0]),  # switched off: components ignored
    np.array([1.0, 0, 0, 0, 0, 0, 0, 0]),       # on, but every transform is zero
    np.array([1.0, 0, 0, 0, 34, 0, 0, 0]),      # elastic needs both alpha and sigma
])
def test_identity_settings_copy_rows_exactly(digits, aug):
    rows = np.array([5, 2, 2, 40], dtype=np.int64)
    out_nb, out_np = _both(digits, rows, H, W, aug, 1, 2)
    np.testing.assert_array_equal(out_nb, digits[rows])
    np.testing.assert_array_equal(out_np, digits[rows])


@pytest.mark.parametrize("sample", [A.affine_sample, A.affine_sample_numpy])
def test_integer_shift_moves_pixels_exactly(digits, sample):
    img = digits[0].reshape(H, W)
    matrix, offset = A.affine_matrix(0.0, 1.0, 2.0, -3.0, H, W)  # content 2 down, 3 left
    out = np.empty_like(img)
    sample(img, matrix, offset, out)
    expected = np.zeros_like(img)
    expected[2:, : W - 3] = img[: H - 2, 3:]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("sample", [A.affine_sample, A.affine_sample_numpy])
@pytest.mark.parametrize("angle, k", [(90.0, 1), (-90.0, -1), (180.0, 2)])
def test_right_angle_rotation_matches_rot90(digits, sample, angle, k):
    img = digits[1].reshape(H, W)
    out = np.empty_like(img)
    sample(img, *A.affine_matrix(angle, 1.0, 0.0, 0.0, H, W), out)
    # Positive angles turn the content counter-clockwise, like np.rot90.
    np.testing.assert_allclose(out, np.rot90(img, k), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sample", [A.affine_sample, A.affine_sample_numpy])
def test_affine_sample_matches_scipy_bilinear(sample):
    img = np.random.default_rng(1).random((H, W)).astype(np.float32)
    matrix = np.array([[0.93, 0.31], [-0.22, 1.08]])  # rotation, scale and shear
    offset = np.array([-2.7, 1.35])
    out = np.empty_like(img)
    sample(img, matrix, offset, out)
    # grid-constant: neighbours outside the image count as 0, interpolated like any other.
    ref = ndimage.affine_transform(img.astype(np.float64), matrix, offset, order=1,
                                   mode="grid-constant", cval=0.0)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)


def test_draws_follow_the_documented_layout(digits):
    aug = A.make_aug(shift=2.5, rotation=20, scale=0.15)
    seed, stream, n = 123, 45, 6
    matrix, offset = A.sample_transforms(aug, seed, stream, n, H, W)
    k = rng.key(seed, stream)
    rows = np.arange(n, dtype=np.int64) * 5
    out = np.empty((n, H * W), np.float32)
    A.augment_rows(digits, rows, H, W, aug, seed, stream, out)
    for i in range(n):
        with np.errstate(over="ignore"):
            u = [float(rng.uniform(k, np.uint64(16 * i + j))) for j in range(4)]
        angle, scale = 20 * (2 * u[0] - 1), 1 + 0.15 * (2 * u[1] - 1)
        m, o = A.affine_matrix(angle, scale, 2.5 * (2 * u[2] - 1), 2.5 * (2 * u[3] - 1), H, W)
        np.testing.assert_allclose(matrix[i], m, rtol=0, atol=1e-12)
        np.testing.assert_allclose(offset[i], o, rtol=0, atol=1e-12)
        single = np.empty((H, W), np.float32)
        A.affine_sample(digits[rows[i]].reshape(H, W), matrix[i], offset[i], single)
        np.testing.assert_allclose(out[i], single.ravel(), rtol=0, atol=1e-6)


def test_elastic_field_is_documented_gaussian_smoothed_noise():
    alpha, sigma, seed, stream, n = 34.0, 4.0, 8, 3, 3
    aug = A.make_aug(elastic_alpha=alpha, elastic_sigma=sigma)
    field = A.elastic_field_numpy(aug, seed, stream, n, H, W)
    k = rng.key(seed, stream)
    for i in range(n):
        for ch in range(2):
            index = (A.ELASTIC_BASE + i * 2 * H * W + ch * H * W + np.arange(H * W)).astype(np.uint64)
            noise = 2.0 * rng.uniform(k, index).astype(np.float64).reshape(H, W) - 1.0
            ref = alpha * ndimage.gaussian_filter(noise, sigma, mode="constant", cval=0.0, truncate=4.0)
            np.testing.assert_allclose(field[i, ch], ref, rtol=0, atol=1e-10)


def test_elastic_field_is_smooth_and_of_the_documented_size():
    field = A.elastic_field_numpy(A.make_aug(elastic_alpha=34, elastic_sigma=4), 2, 5, 50, H, W)
    neighbour = np.abs(np.diff(field, axis=3)).mean()
    # Unsmoothed noise of the same RMS: neighbours differ by about 1.13 RMS on average.
    rms = np.sqrt((field ** 2).mean())
    assert neighbour < 0.25 * 1.13 * rms
    assert 1.0 < rms < 1.6  # ~ alpha * 0.163 / sigma = 1.38 px, a little less with zero padding


def test_same_key_repeats_and_other_keys_differ(digits):
    rows = np.array([7, 7, 8, 9], dtype=np.int64)
    out = [np.empty((4, H * W), np.float32) for _ in range(4)]
    for o, (seed, stream) in zip(out, [(4, 1), (4, 1), (4, 2), (5, 1)]):
        A.augment_rows(digits, rows, H, W, ALL, seed, stream, o)
    np.testing.assert_array_equal(out[0], out[1])
    assert np.abs(out[0] - out[2]).max() > 0.3
    assert np.abs(out[0] - out[3]).max() > 0.3
    # The same image twice in a batch gets two different transforms.
    assert np.abs(out[0][0] - out[0][1]).max() > 0.3


def test_sample_draws_depend_on_position_not_batch_size(digits):
    rows = np.arange(10, dtype=np.int64)
    full, head = np.empty((10, H * W), np.float32), np.empty((4, H * W), np.float32)
    A.augment_rows(digits, rows, H, W, ALL, 6, 6, full)
    A.augment_rows(digits, rows[:4], H, W, ALL, 6, 6, head)
    np.testing.assert_array_equal(full[:4], head)


def test_results_do_not_depend_on_thread_count(digits):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2")
    rows = np.arange(32, dtype=np.int64)
    outs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            o = np.empty((32, H * W), np.float32)
            A.augment_rows(digits, rows, H, W, ALL, 9, 9, o)
            outs.append(o)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_outputs_stay_in_unit_interval(digits):
    strong = A.make_aug(shift=4, rotation=45, scale=0.3, elastic_alpha=60, elastic_sigma=3)
    rows = np.arange(64, dtype=np.int64)
    out_nb, out_np = _both(digits, rows, H, W, strong, 0, 0)
    for out in (out_nb, out_np):
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert out.max() > 0.9  # strokes survive


def test_mass_roughly_preserved_by_small_transforms(digits):
    rows = np.arange(64, dtype=np.int64)
    out = np.empty((64, H * W), np.float32)
    # Shifts and rotations preserve area; bilinear resampling preserves ink up to edge effects.
    A.augment_rows(digits, rows, H, W, A.make_aug(shift=1, rotation=8), 3, 1, out)
    ratio = out.sum(1) / digits.sum(1)
    assert np.all(np.abs(ratio - 1) < 0.01), ratio
    # An elastic field stretches some strokes and squeezes others: preserved on average only.
    A.augment_rows(digits, rows, H, W, A.make_aug(elastic_alpha=8, elastic_sigma=3), 3, 1, out)
    ratio = out.sum(1) / digits.sum(1)
    assert np.all(np.abs(ratio - 1) < 0.25), ratio
    assert abs(ratio.mean() - 1) < 0.02


def test_zoom_scales_mass_by_its_square(digits):
    img = digits[2].reshape(H, W)  # digit well inside the frame: nothing leaves it
    out = np.empty_like(img)
    for scale in (0.8, 1.2):
        A.affine_sample(img, *A.affine_matrix(0.0, scale, 0.0, 0.0, H, W), out)
        assert out.sum() / img.sum() == pytest.approx(scale ** 2, rel=0.03)


def test_make_aug_sets_enabled_flag():
    assert A.make_aug()[0] == 0.0
    assert A.make_aug(elastic_alpha=34)[0] == 0.0  # no sigma: field off
    np.testing.assert_array_equal(A.make_aug(1, 2, 0.1, 3, 4), [1, 1, 2, 0.1, 3, 4, 0, 0])


@pytest.mark.parametrize("aug, match", [
    (np.zeros(7), "length 8"),
    ([2, 0, 0, 0, 0, 0, 0, 0], r"aug\[0\] \(enabled\)"),
    ([1, -1, 0, 0, 0, 0, 0, 0], r"aug\[1\] \(max_shift_px\) must be >= 0"),
    ([1, 0, 200, 0, 0, 0, 0, 0], r"max_rotation_deg\) must be in \[0, 180\]"),
    ([1, 0, 0, 1.0, 0, 0, 0, 0], r"max_scale\) must be in \[0, 1\)"),
    ([1, 0, 0, 0, np.nan, 0, 0, 0], "finite"),
    ([1, 0, 0, 0, 0, 0, 1, 0], r"image height, width"),
    ([1, 0, 0, 0, 0, 0, 2.5, 3], r"image height, width"),
])
def test_check_aug_rejects_bad_vectors(aug, match):
    with pytest.raises(ValueError, match=match):
        A.check_aug(aug)


def test_image_shape_from_aug_or_square():
    assert A.image_shape(A.make_aug(1), 784) == (28, 28)
    assert A.image_shape(A.make_aug(1, height=20, width=30), 600) == (20, 30)
    with pytest.raises(ValueError, match="not a 28x28 image"):
        A.image_shape(A.make_aug(1), 785)
