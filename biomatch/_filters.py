"""Image filters of the extraction stages, without scipy.ndimage.

Written by hand because importing ``scipy.ndimage`` costs about 0.2 s, two
thirds of the 0.3 s cold-start budget of a one-shot ``biomatch extract``
(scipy 1.17's array-API layer clones the numpy namespace on import). The
loops (separable filters, connected components, hole filling, the exact
distance transform) are C++ in :mod:`biomatch._native`; the binary
morphology of the small block grids and the order statistics are numpy.

Each function computes what its scipy.ndimage namesake computes for the
arguments extraction uses (boundary modes ``reflect`` = half-sample
symmetric, ``nearest``, ``constant`` 0; 4-connectivity; float64 arithmetic
along each axis, the input's float type between axes), which
``tests/test_filters.py`` checks against scipy itself.
"""

from __future__ import annotations

import numpy as np

_MODES = {"reflect": 0, "nearest": 1, "constant": 2}


def gaussian_kernel(sigma: float, order: int, radius: int) -> np.ndarray:
    """Sampled Gaussian (order 0) or its first derivative (order 1) on -radius..radius, from the Gaussian's
    samples normalised to sum 1."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    phi = phi / phi.sum()
    if order == 0:
        return phi
    if order == 1:
        return -x / (sigma * sigma) * phi
    raise ValueError(f"derivative order must be 0 or 1, got {order}")


def _float(a) -> np.ndarray:
    a = np.asarray(a)
    return np.ascontiguousarray(a if a.dtype in (np.float32, np.float64) else a.astype(np.float64))


def _symmetry(weights: np.ndarray) -> int:
    """1 symmetric, -1 antisymmetric, 0 neither (the pairs of taps are then summed separately)."""
    r = weights.size // 2
    near, far = weights[:r], weights[r + 1:][::-1]
    eps = np.finfo(np.float64).eps
    if np.all(np.abs(far - near) <= eps):
        return 1
    if np.all(np.abs(far + near) <= eps):
        return -1
    return 0


def gaussian_filter(a: np.ndarray, sigma: float, order: tuple[int, int] = (0, 0), truncate: float = 4.0,
                    mode: str = "reflect") -> np.ndarray:
    """Gaussian smoothing (order 0) or derivative (order 1) of a 2-D array, axis 0 then axis 1.

    The kernel reaches ``int(truncate * sigma + 0.5)`` pixels each side; sums are in double precision, the
    result between and after the axes in the input's float type (float64 for other types).
    """
    from . import _native

    if mode not in _MODES:
        raise ValueError(f"boundary mode must be one of {', '.join(_MODES)}, got {mode!r}")
    radius = int(truncate * float(sigma) + 0.5)
    out = _float(a)
    for axis, k in enumerate(order):
        # correlation with the reversed kernel: the derivative of a rising edge is positive
        weights = np.ascontiguousarray(gaussian_kernel(float(sigma), k, radius)[::-1])
        out = _native.correlate_axis(out, weights, axis, _MODES[mode], _symmetry(weights))
    return out


def uniform_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size`` x ``size`` box (reflect boundary), axis 0 then axis 1: a running sum per line."""
    from . import _native

    out = _float(a)
    for axis in (0, 1):
        out = _native.box_axis(out, int(size), axis)
    return out


def _shift_or(a: np.ndarray, structure: np.ndarray, erode: bool) -> np.ndarray:
    """Binary dilation (or erosion) by a symmetric structuring element; outside the image counts as 0."""
    h, w = a.shape
    ry, rx = structure.shape[0] // 2, structure.shape[1] // 2
    e = np.pad(a, ((ry, ry), (rx, rx)))
    out = np.ones_like(a) if erode else np.zeros_like(a)
    for dy, dx in zip(*np.nonzero(structure)):
        window = e[dy:dy + h, dx:dx + w]
        out = (out & window) if erode else (out | window)
    return out


def binary_closing(a: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Dilation then erosion by a symmetric ``structure`` (outside the image is background)."""
    return _shift_or(_shift_or(np.asarray(a, bool), structure, erode=False), structure, erode=True)


def binary_opening(a: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """Erosion then dilation by a symmetric ``structure`` (outside the image is background)."""
    return _shift_or(_shift_or(np.asarray(a, bool), structure, erode=True), structure, erode=False)


def label(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components: labels 1..n (int32) in raster order of their first pixel, and n."""
    from . import _native

    labels, n = _native.label4(np.ascontiguousarray(binary, dtype=np.uint8))
    return labels, int(n)


def largest_region(binary: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected region of ``binary`` (the first in raster order on a tie); None when it has none."""
    labels, n = label(binary)
    if n == 0:
        return None
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def fill_holes(binary: np.ndarray) -> np.ndarray:
    """``binary`` with every background region not 4-connected to the image edge filled."""
    from . import _native

    return _native.fill_holes(np.ascontiguousarray(binary, dtype=np.uint8)).astype(bool)


def distance_to_zero(binary: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (float64) of every pixel to the nearest zero pixel."""
    from . import _native

    return _native.distance_to_zero(np.ascontiguousarray(binary, dtype=np.uint8))


def percentile(values: np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation between order statistics, in the values' float
    type: numpy's default method, equal to ``np.percentile`` or within one unit in the last place.

    Here rather than ``np.percentile`` because that imports ``numpy.ma`` on first use (20 ms of cold start).
    """
    s = np.sort(np.asarray(values).ravel())
    if s.size == 0:
        raise ValueError("percentile of no values")
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    position = (s.size - 1) * (q / 100.0)
    lo = int(np.floor(position))
    hi = min(lo + 1, s.size - 1)
    t = s.dtype.type(position - lo)
    a, b = s[lo], s[hi]
    # interpolated from the nearer order statistic, as numpy does
    return float(a + (b - a) * t) if t < 0.5 else float(b - (b - a) * (s.dtype.type(1) - t))


def median(values: np.ndarray) -> float:
    """The median (mean of the two middle values for an even count, in the values' own float type)."""
    s = np.sort(np.asarray(values).ravel())
    if s.size == 0:
        raise ValueError("median of no values")
    k = s.size // 2
    return float(s[k]) if s.size % 2 else float((s[k - 1] + s[k]) / s.dtype.type(2))
