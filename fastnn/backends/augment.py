"""Seeded on-the-fly image augmentation, identical in compiled code and NumPy.

Each sample of a batch gets a random affine map (rotation + isotropic scale +
translation about the image centre), optionally composed with a Simard-style
elastic displacement field, and is resampled bilinearly with zeros outside the
image. All randomness comes from the counter-based generator in ``rng.py``, so
a batch's augmentation depends only on (``seed``, ``stream``, position in the
batch, source pixels): the same in both backends and on any number of threads.

The ``aug`` vector (float64, length 8)
--------------------------------------
====  ==================  ==================================================
slot  name                meaning (0 disables that transform)
====  ==================  ==================================================
0     enabled             1: augment; 0: ``out`` is an exact copy of the rows
1     max_shift_px        translation ty, tx ~ U[-max_shift, max_shift] pixels
                          each (continuous, not rounded)
2     max_rotation_deg    angle ~ U[-max_rot, max_rot] degrees; positive turns
                          the content counter-clockwise as displayed (row 0 on top)
3     max_scale           zoom factor s ~ U[1 - max_scale, 1 + max_scale];
                          s > 1 enlarges the content; must be < 1
4     elastic_alpha       displacement scale, in pixels per unit of smoothed
                          noise (Simard et al. 2003: 34 with sigma 4)
5     elastic_sigma       Gaussian smoothing sigma of the elastic field, pixels
6, 7  height, width       image shape of a row (0, 0: a square image of
                          sqrt(n_features) pixels); used by train_steps
====  ==================  ==================================================

The elastic field is on only when both alpha > 0 and sigma > 0. It is
``d = alpha * (G_sigma * e)``, with ``e`` i.i.d. U[-1, 1) noise per pixel and per
component (dy, dx), and ``G_sigma`` the unit-sum Gaussian kernel truncated at
radius ``int(4 * sigma + 0.5)`` applied along rows then columns with zero
padding (``scipy.ndimage.gaussian_filter(e, sigma, mode='constant')``). On an
unbounded image its RMS would be ``alpha * 0.163 / sigma`` pixels per component
(1/sqrt(3) / (2 sqrt(pi) sigma)); the zero padding lowers that a little on
28x28: measured 1.29 px for (alpha, sigma) = (34, 4), 0.76 for (20, 4), 0.41
for (8, 3).

The transform (inverse mapping)
-------------------------------
In (row, col) coordinates with centre ``c = ((H-1)/2, (W-1)/2)``, output pixel
``o`` takes the value of the source at

    src(o) = M (o - c - t) + c + d(o),    M = (1/s) [[cos a, sin a], [-sin a, cos a]]

i.e. ``src = M o + offset + d(o)`` with ``offset = c - M (c + t)``, the convention
of ``scipy.ndimage.affine_transform``. Sampling is bilinear; each of the four
neighbours outside the image counts as 0 (scipy's ``mode='grid-constant'``).
Intermediates are float64 in both versions; outputs are float32. For inputs in
[0, 1] outputs stay in [0, 1] (convex combinations of pixels and zeros).

Random-number indices (key ``k = rng.key(seed, stream)``)
---------------------------------------------------------
Sample ``i`` (its position in ``rows``) uses index ``16*i + j`` for draw ``j``:
j=0 rotation, 1 scale, 2 shift_y, 3 shift_x (4..15 reserved). All four are drawn
whatever is enabled, so turning one transform on leaves the others unchanged.
Its elastic noise for component ``ch`` (0: dy, 1: dx) at flat pixel ``p`` uses
``ELASTIC_BASE + i*2*H*W + ch*H*W + p`` with ``ELASTIC_BASE = 2**40``; the two
ranges cannot meet for batches below 2**36 samples, and no index depends on the
batch size.

Suggested settings (checked by eye on grids of augmented digits)
-----------------------------------------------------------------
MNIST: ``make_aug(shift=2, rotation=15, scale=0.1, elastic_alpha=34,
elastic_sigma=4)`` still reads as handwriting; (3, 25, 0.2, 60, 4) starts
making ambiguous digits. KMNIST (characters fill the frame, dense strokes):
``make_aug(shift=2, rotation=10, scale=0.1, elastic_alpha=20, elastic_sigma=4)``;
alpha 34 smudges complex characters. Elastic alpha >= 100 at sigma 4 destroys
both.

Entry points
------------
``augment_rows`` (compiled, ``prange`` over samples), ``augment_rows_serial``
(compiled, one thread) and ``augment_rows_numpy`` (the vectorised reference)
have the same signature and results (to ~1e-6; the two compiled ones agree bit
for bit).
``affine_sample`` / ``affine_sample_numpy`` resample one image by a given map.
``make_aug`` and ``check_aug`` build and validate the vector at the Python
boundary; the kernels themselves do not validate.
"""

import functools

import numpy as np
from numba import njit, prange

from . import rng

# Slots of the aug vector.
AUG_ENABLED, AUG_SHIFT, AUG_ROTATION, AUG_SCALE, AUG_ELASTIC_ALPHA, AUG_ELASTIC_SIGMA = range(6)
AUG_LEN = 8
# Random-number layout.
DRAWS_PER_SAMPLE = 16
DRAW_ROTATION, DRAW_SCALE, DRAW_SHIFT_Y, DRAW_SHIFT_X = range(4)
ELASTIC_BASE = 1 << 40
GAUSS_TRUNCATE = 4.0  # kernel radius = int(GAUSS_TRUNCATE * sigma + 0.5), as in scipy

# The rng functions use only uint64 operators, so they compile as they are. Not
# cached themselves: they are inlined into the cached kernels below.
_mix = njit(rng.mix)
_U64_40 = np.uint64(40)
_INV_2_24 = np.float32(1.0 / (1 << 24))


@njit(inline="always")
def _uniform64(k, index):
    """rng.uniform(k, index) as float64 (index uint64)."""
    return np.float64(np.float32(_mix(k + index) >> _U64_40) * _INV_2_24)


# ---------------------------------------------------------------------------
# Shared formulas: plain NumPy operators, so the same source runs on arrays
# (NumPy reference) and, compiled, on scalars.


def _affine_params(u_rot, u_scale, u_ty, u_tx, max_shift, max_rot, max_scale, cy, cx):
    """Inverse-map coefficients (a, b, o0, o1), with M = [[a, b], [-b, a]], offset = (o0, o1).

    ``u_*`` are float64 uniforms in [0, 1) (scalars or arrays of one shape).
    """
    angle = (max_rot * (2.0 * u_rot - 1.0)) * (np.pi / 180.0)
    inv_s = 1.0 / (1.0 + max_scale * (2.0 * u_scale - 1.0))
    ty = max_shift * (2.0 * u_ty - 1.0)
    tx = max_shift * (2.0 * u_tx - 1.0)
    a = np.cos(angle) * inv_s
    b = np.sin(angle) * inv_s
    py = cy + ty
    px = cx + tx
    o0 = cy - (a * py + b * px)
    o1 = cx - (a * px - b * py)
    return a, b, o0, o1


def _gaussian_matrix(sigma, size):
    """Zero-padded Gaussian smoothing along an axis of length ``size``, as a (size, size) matrix.

    ``G[a, b] = g[b - a]`` for ``|b - a| <= radius`` (else 0), with the unit-sum taps
    ``g[t] ~ exp(-t**2 / (2 sigma**2))``, ``radius = int(4 sigma + 0.5)``. Symmetric, so
    ``(img @ G)`` smooths along rows and ``(G @ img)`` along columns.
    """
    radius = int(GAUSS_TRUNCATE * sigma + 0.5)
    g = np.empty(2 * radius + 1)
    total = 0.0
    for t in range(-radius, radius + 1):
        v = np.exp(-0.5 / (sigma * sigma) * (t * t))
        g[t + radius] = v
        total += v
    m = np.zeros((size, size))
    for a in range(size):
        for b in range(max(0, a - radius), min(size, a + radius + 1)):
            m[a, b] = g[b - a + radius] / total
    return m


_affine_params_nb = njit(_affine_params)
_gaussian_matrix_nb = njit(_gaussian_matrix)


# ---------------------------------------------------------------------------
# Compiled kernels.


@njit(cache=True)
def _resample(src, height, width, m00, m01, m10, m11, o0, o1, field, use_field, out):
    """Bilinear inverse-map resampling of one flat image ``src`` (H*W,) into ``out`` (H*W,).

    ``field`` is (2, H, W) float64 (dy, dx), read only when ``use_field``.
    """
    for r in range(height):
        for c in range(width):
            p = r * width + c
            sy = (m00 * r + m01 * c) + o0
            sx = (m10 * r + m11 * c) + o1
            if use_field:
                sy = sy + field[0, r, c]
                sx = sx + field[1, r, c]
            # Beyond these bounds all four neighbours are outside: value 0 (this
            # also keeps int() away from huge coordinates).
            if not (sy > -1.0 and sy < height and sx > -1.0 and sx < width):
                out[p] = 0.0
                continue
            y0 = np.floor(sy)
            x0 = np.floor(sx)
            fy = sy - y0
            fx = sx - x0
            iy = int(y0)
            ix = int(x0)
            p00 = 0.0
            p01 = 0.0
            p10 = 0.0
            p11 = 0.0
            if iy >= 0:
                if ix >= 0:
                    p00 = np.float64(src[iy * width + ix])
                if ix + 1 < width:
                    p01 = np.float64(src[iy * width + ix + 1])
            if iy + 1 < height:
                if ix >= 0:
                    p10 = np.float64(src[(iy + 1) * width + ix])
                if ix + 1 < width:
                    p11 = np.float64(src[(iy + 1) * width + ix + 1])
            v = (1.0 - fy) * ((1.0 - fx) * p00 + fx * p01) + fy * ((1.0 - fx) * p10 + fx * p11)
            out[p] = np.float32(v)


@njit(cache=True)
def _elastic_field(k, i, height, width, alpha, gh, gw, disp, tmp):
    """Write sample ``i``'s displacement field into ``disp`` (2, H, W) float64: [0] dy, [1] dx.

    ``gh`` (H, H) and ``gw`` (W, W) are the banded Gaussian smoothing matrices
    (``_gaussian_matrix``); ``tmp`` is (2, H, W) float64 scratch. Smoothing as
    two small matrix products (BLAS) is ~10x faster than loops over the taps.
    """
    hw = height * width
    base = np.uint64(ELASTIC_BASE) + np.uint64(i) * np.uint64(2 * hw)
    for ch in range(2):
        d = disp[ch]
        for r in range(height):
            for c in range(width):
                d[r, c] = 2.0 * _uniform64(k, base + np.uint64(ch * hw + r * width + c)) - 1.0
        # Rows then columns: d <- gh @ (d @ gw); both matrices are symmetric.
        np.dot(d, gw, tmp[ch])
        np.dot(gh, tmp[ch], d)
        for r in range(height):
            for c in range(width):
                d[r, c] = alpha * d[r, c]


@njit(cache=True)
def _augment_one(src, i, height, width, aug, k, gh, gw, scratch, out_row):
    """Augment one flat image ``src`` (H*W,) float32, batch position ``i``, into ``out_row``.

    ``gh``/``gw`` are the smoothing matrices and ``scratch`` a (2, 2, H, W) float64
    buffer when the elastic field is on; otherwise any arrays (unused).
    """
    base = np.uint64(i) * np.uint64(DRAWS_PER_SAMPLE)
    u_rot = _uniform64(k, base + np.uint64(DRAW_ROTATION))
    u_scale = _uniform64(k, base + np.uint64(DRAW_SCALE))
    u_ty = _uniform64(k, base + np.uint64(DRAW_SHIFT_Y))
    u_tx = _uniform64(k, base + np.uint64(DRAW_SHIFT_X))
    a, b, o0, o1 = _affine_params_nb(u_rot, u_scale, u_ty, u_tx, aug[AUG_SHIFT], aug[AUG_ROTATION],
                                     aug[AUG_SCALE], (height - 1) / 2.0, (width - 1) / 2.0)
    alpha = aug[AUG_ELASTIC_ALPHA]
    if alpha > 0.0 and aug[AUG_ELASTIC_SIGMA] > 0.0:
        _elastic_field(k, i, height, width, alpha, gh, gw, scratch[0], scratch[1])
        _resample(src, height, width, a, b, -b, a, o0, o1, scratch[0], True, out_row)
    else:
        _resample(src, height, width, a, b, -b, a, o0, o1, scratch[0], False, out_row)


@njit(cache=True)
def _setup(height, width, aug, n_scratch):
    """Smoothing matrices and an (n_scratch, 2, 2, H, W) scratch (empty-ish when the field is off)."""
    sigma = aug[AUG_ELASTIC_SIGMA]
    if aug[AUG_ELASTIC_ALPHA] > 0.0 and sigma > 0.0:
        gh = _gaussian_matrix_nb(sigma, height)
        gw = _gaussian_matrix_nb(sigma, width)
        return gh, gw, np.empty((n_scratch, 2, 2, height, width))
    return np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((n_scratch, 2, 2, 0, 0))


@njit(cache=True, parallel=True)
def augment_rows(x, rows, height, width, aug, seed, stream, out):
    """Augment the images ``x[rows]`` into ``out`` (compiled; callable from @njit code).

    Parameters
    ----------
    x : ndarray of float32, shape (N, height * width)
        Source images, row-major, C-contiguous. Not modified.
    rows : ndarray of int64, shape (n,)
        Which images to take; sample ``i`` of the batch is ``x[rows[i]]``.
    height, width : int
        Image size (28, 28 for MNIST).
    aug : ndarray of float64, shape (8,)
        Augmentation settings (module docstring); validate with ``check_aug``.
    seed, stream : int
        Non-negative; key of the random draws. Sample ``i`` uses indices 16*i + j
        and its elastic range (module docstring).
    out : ndarray of float32, shape (n, height * width)
        Overwritten with the augmented images. Must not alias ``x``.

    Notes
    -----
    ``prange`` over samples; each sample's result is independent of the thread
    count. Allocates one (n, 2, 2, H, W) float64 scratch per call when the
    elastic field is on, nothing per sample. ``augment_rows_serial`` is the
    same computation on the calling thread (for callers that are themselves
    inside a ``prange``, or batches too small to be worth waking threads).
    """
    n = rows.shape[0]
    if aug[AUG_ENABLED] == 0.0:
        for i in prange(n):
            out[i, :] = x[rows[i], :]
        return
    k = _mix(_mix(np.uint64(seed)) ^ np.uint64(stream))
    gh, gw, scratch = _setup(height, width, aug, n)
    for i in prange(n):
        _augment_one(x[rows[i]], i, height, width, aug, k, gh, gw, scratch[i], out[i])


@njit(cache=True)
def augment_rows_serial(x, rows, height, width, aug, seed, stream, out):
    """``augment_rows`` on the calling thread: same arguments, bit-identical results.

    Allocates one (1, 2, 2, H, W) float64 scratch per call when the elastic field is on.
    """
    n = rows.shape[0]
    if aug[AUG_ENABLED] == 0.0:
        for i in range(n):
            out[i, :] = x[rows[i], :]
        return
    k = _mix(_mix(np.uint64(seed)) ^ np.uint64(stream))
    gh, gw, scratch = _setup(height, width, aug, 1)
    for i in range(n):
        _augment_one(x[rows[i]], i, height, width, aug, k, gh, gw, scratch[0], out[i])


@njit(cache=True)
def affine_sample(image, matrix, offset, out):
    """out[o] = bilinear(image)[matrix @ o + offset], zeros outside (compiled).

    Parameters
    ----------
    image : ndarray of float32, shape (H, W), C-contiguous
    matrix : ndarray of float64, shape (2, 2)
        Maps output (row, col) to source (row, col), like scipy.ndimage.affine_transform.
    offset : ndarray of float64, shape (2,)
    out : ndarray of float32, shape (H, W), overwritten; must not alias ``image``.
    """
    height, width = image.shape
    _resample(image.ravel(), height, width, matrix[0, 0], matrix[0, 1], matrix[1, 0], matrix[1, 1],
              offset[0], offset[1], np.zeros((2, 0, 0)), False, out.ravel())


# ---------------------------------------------------------------------------
# NumPy reference.


def _bilinear_numpy(src, sy, sx, height, width):
    """Bilinear samples of flat images ``src`` (n, H*W) at float64 (sy, sx) (n, H*W); float32."""
    # Clipping only moves points that already read four outside neighbours.
    sy = np.clip(sy, -2.0, height + 1.0)
    sx = np.clip(sx, -2.0, width + 1.0)
    y0 = np.floor(sy)
    x0 = np.floor(sx)
    fy = sy - y0
    fx = sx - x0
    iy = y0.astype(np.int64)
    ix = x0.astype(np.int64)

    def pixel(yy, xx):
        ok = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        flat = np.where(ok, yy * width + xx, 0)
        return np.where(ok, np.take_along_axis(src, flat, axis=1).astype(np.float64), 0.0)

    p00, p01 = pixel(iy, ix), pixel(iy, ix + 1)
    p10, p11 = pixel(iy + 1, ix), pixel(iy + 1, ix + 1)
    v = (1.0 - fy) * ((1.0 - fx) * p00 + fx * p01) + fy * ((1.0 - fx) * p10 + fx * p11)
    return v.astype(np.float32)


def _grid(height, width):
    r, c = np.divmod(np.arange(height * width), width)
    return r.astype(np.float64), c.astype(np.float64)


def affine_sample_numpy(image, matrix, offset, out):
    """NumPy twin of ``affine_sample`` (same arguments, same results)."""
    height, width = image.shape
    r, c = _grid(height, width)
    sy = (matrix[0, 0] * r + matrix[0, 1] * c) + offset[0]
    sx = (matrix[1, 0] * r + matrix[1, 1] * c) + offset[1]
    out[...] = _bilinear_numpy(image.reshape(1, -1), sy[None], sx[None], height, width).reshape(height, width)


@functools.lru_cache(maxsize=16)
def _gaussian_matrix_cached(sigma, size):
    m = _gaussian_matrix(float(sigma), int(size))
    m.flags.writeable = False
    return m


def _uniforms(seed, stream, index):
    with np.errstate(over="ignore"):
        return rng.uniform(rng.key(seed, stream), index.astype(np.uint64)).astype(np.float64)


def affine_matrix(angle_deg, scale, shift_y, shift_x, height, width):
    """(matrix (2, 2), offset (2,)) float64 of the inverse map for one explicit transform.

    The content turns ``angle_deg`` counter-clockwise, is zoomed by ``scale`` and
    moved by (``shift_y``, ``shift_x``) pixels, about the image centre.
    """
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    inv_s = 1.0 / scale
    angle = angle_deg * (np.pi / 180.0)
    a, b = np.cos(angle) * inv_s, np.sin(angle) * inv_s
    py, px = cy + shift_y, cx + shift_x
    return np.array([[a, b], [-b, a]]), np.array([cy - (a * py + b * px), cx - (a * px - b * py)])


def sample_transforms(aug, seed, stream, n, height, width):
    """The affine maps ``augment_rows`` draws for samples 0..n-1.

    Returns
    -------
    matrix : ndarray of float64, shape (n, 2, 2)
    offset : ndarray of float64, shape (n, 2)
        ``src = matrix[i] @ (row, col) + offset[i]`` (before the elastic field).
    """
    base = np.arange(n, dtype=np.int64) * DRAWS_PER_SAMPLE
    u = [_uniforms(seed, stream, base + j) for j in (DRAW_ROTATION, DRAW_SCALE, DRAW_SHIFT_Y, DRAW_SHIFT_X)]
    a, b, o0, o1 = _affine_params(*u, aug[AUG_SHIFT], aug[AUG_ROTATION], aug[AUG_SCALE],
                                  (height - 1) / 2.0, (width - 1) / 2.0)
    matrix = np.stack([np.stack([a, b], -1), np.stack([-b, a], -1)], 1)
    return matrix, np.stack([o0, o1], -1)


def elastic_field_numpy(aug, seed, stream, n, height, width):
    """The elastic displacements ``augment_rows`` uses: float64 (n, 2, H, W), [:, 0] = dy, [:, 1] = dx.

    Zeros when the field is off (alpha or sigma is 0).
    """
    alpha, sigma = aug[AUG_ELASTIC_ALPHA], aug[AUG_ELASTIC_SIGMA]
    if not (alpha > 0.0 and sigma > 0.0):
        return np.zeros((n, 2, height, width))
    hw = height * width
    index = (ELASTIC_BASE + np.arange(n, dtype=np.int64)[:, None] * (2 * hw)
             + np.arange(2 * hw, dtype=np.int64)[None, :])
    noise = (2.0 * _uniforms(seed, stream, index) - 1.0).reshape(n, 2, height, width)
    smoothed = _gaussian_matrix_cached(sigma, height) @ (noise @ _gaussian_matrix_cached(sigma, width))
    return alpha * smoothed


def augment_rows_numpy(x, rows, height, width, aug, seed, stream, out):
    """NumPy reference of ``augment_rows``: same arguments, same results (to ~1e-6)."""
    n = rows.shape[0]
    if aug[AUG_ENABLED] == 0.0:
        out[...] = x[rows]
        return
    matrix, offset = sample_transforms(aug, seed, stream, n, height, width)
    r, c = _grid(height, width)
    sy = (matrix[:, 0, 0, None] * r + matrix[:, 0, 1, None] * c) + offset[:, 0, None]
    sx = (matrix[:, 1, 0, None] * r + matrix[:, 1, 1, None] * c) + offset[:, 1, None]
    if aug[AUG_ELASTIC_ALPHA] > 0.0 and aug[AUG_ELASTIC_SIGMA] > 0.0:
        disp = elastic_field_numpy(aug, seed, stream, n, height, width).reshape(n, 2, height * width)
        sy = sy + disp[:, 0]
        sx = sx + disp[:, 1]
    out[...] = _bilinear_numpy(x[rows], sy, sx, height, width)


# ---------------------------------------------------------------------------
# Python boundary.


def make_aug(shift=0.0, rotation=0.0, scale=0.0, elastic_alpha=0.0, elastic_sigma=0.0, height=0, width=0):
    """Build a validated aug vector; ``enabled`` is 1 when any transform is on.

    Parameters are ``max_shift_px``, ``max_rotation_deg``, ``max_scale``,
    ``elastic_alpha`` and ``elastic_sigma`` of the module docstring, and the image
    ``height`` and ``width`` (0, 0: square, inferred from the row length).
    """
    aug = np.array([0.0, shift, rotation, scale, elastic_alpha, elastic_sigma, height, width], dtype=np.float64)
    aug[AUG_ENABLED] = float(np.any(aug[1:4] != 0.0) or (elastic_alpha > 0 and elastic_sigma > 0))
    return check_aug(aug)


_NAMES = ("enabled", "max_shift_px", "max_rotation_deg", "max_scale", "elastic_alpha", "elastic_sigma")


def check_aug(aug):
    """Validate an aug vector; return it as a C-contiguous float64 array of length 8.

    Raises ValueError naming the slot, the allowed range and the value received.
    """
    a = np.ascontiguousarray(aug, dtype=np.float64)
    if a.shape != (AUG_LEN,):
        raise ValueError(f"aug must be a float vector of length {AUG_LEN} "
                         f"[enabled, max_shift_px, max_rotation_deg, max_scale, elastic_alpha, "
                         f"elastic_sigma, height, width]; got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"aug must be finite, got {a.tolist()}")
    if a[AUG_ENABLED] not in (0.0, 1.0):
        raise ValueError(f"aug[0] (enabled) must be 0 or 1, got {a[0]}")
    for j in range(1, 6):
        if a[j] < 0.0:
            raise ValueError(f"aug[{j}] ({_NAMES[j]}) must be >= 0 (0 disables it), got {a[j]}")
    if a[AUG_SCALE] >= 1.0:
        raise ValueError(f"aug[3] (max_scale) must be in [0, 1): scale is drawn from "
                         f"[1 - max_scale, 1 + max_scale]; got {a[AUG_SCALE]}")
    if a[AUG_ROTATION] > 180.0:
        raise ValueError(f"aug[2] (max_rotation_deg) must be in [0, 180], got {a[AUG_ROTATION]}")
    if a[AUG_ELASTIC_SIGMA] > 64.0:
        raise ValueError(f"aug[5] (elastic_sigma) must be in [0, 64] pixels, got {a[AUG_ELASTIC_SIGMA]}")
    if (a[6] == 0.0) != (a[7] == 0.0) or a[6] < 0 or a[7] < 0 or a[6] != int(a[6]) or a[7] != int(a[7]):
        raise ValueError(f"aug[6], aug[7] (image height, width) must be whole numbers >= 1, or both 0 for a "
                         f"square image; got {a[6]}, {a[7]}")
    return a


def image_shape(aug, n_features):
    """(height, width) of one row of ``n_features`` pixels, from aug[6:8] or a square."""
    h, w = int(aug[6]), int(aug[7])
    if h == 0:
        h = w = int(round(n_features ** 0.5))
    if h * w != n_features:
        raise ValueError(f"augmentation needs image rows: {n_features} features are not a {h}x{w} image; "
                         f"give the image shape (aug[6], aug[7]) or turn augmentation off")
    return h, w
