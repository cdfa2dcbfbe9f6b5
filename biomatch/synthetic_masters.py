"""Master fingers of the synthetic image generator (SFinGe-like): the fingerprint area, the class
and singular points, the orientation field (Sherlock-Monro zero-pole model with Vizcaya-Gerhardt
bends; analytic flow for arches), the ridge-period map, the master ridge pattern grown by iterative
Gabor filtering, small ridge features, and the master minutiae (crossing number on the thinned
master). :func:`make_finger` puts them together; :mod:`biomatch.synthetic_impressions` renders
impressions of the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BiomatchError
from .synthetic_params import (AREA_BOTTOM_CAP_PX, AREA_HALF_WIDTH_PX, AREA_RECT_HALF_PX, AREA_TOP_CAP_PX,
                               CLASS_PROBABILITIES, FINGER_CLASSES, IMAGE_HEIGHT_PX, IMAGE_STREAM, IMAGE_WIDTH_PX,
                               PPI, check_count, check_seed, keyed_rng)
from .template import Template

# ridge period
RIDGE_PERIOD_PX = (7.5, 10.0)  # per-finger base period at 500 ppi
PERIOD_ABOVE_CORE_PX = 0.8  # widening of the period above the core
PERIOD_MIN_PX, PERIOD_MAX_PX, PERIOD_STEP_PX = 6.0, 13.0, 0.5

# Gabor growth
N_ORIENT_BINS = 32
GABOR_SIZE_PX = 17
GABOR_SIGMA_ACROSS = 0.45  # x period
GABOR_SIGMA_ALONG = 0.55  # x period
GROWTH_ITERATIONS = 9
GROWTH_GAIN = 2.5
SEED_SPACING_PX = 26.0  # mean spacing of the initial random seeds

# small ridge features added to the grown pattern:
# (name, share, on a ridge?, length range in periods, half-width in periods)
SMALL_FEATURES_PER_FINGER = 7.0  # Poisson mean
SMALL_FEATURES = (
    ("break", 0.35, True, (0.5, 1.0), 0.4),
    ("island", 0.30, False, (0.4, 2.5), 0.14),
    ("bridge", 0.20, False, (0.35, 0.5), 0.6),
    ("lake", 0.15, True, (1.5, 3.0), 0.07),
)

# master minutiae
MINUTIA_BORDER_PX = 12  # master minutiae closer than this to the area edge are dropped
MINUTIA_MIN_DISTANCE_PX = 5.0  # clusters closer than this are dropped (thinning artefacts)
#: The sense of a master minutia's direction is read this far along its ridge line (px):
#: within the first ridge period (7-12 px) on either side; farther, the ridge line leaves a fork's opening.
DIRECTION_SAMPLE_MIN_PX = 2
DIRECTION_SAMPLE_MAX_PX = 6


# ---------------------------------------------------------------------------
# orientation model
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Singularities:
    cls: str
    cores: np.ndarray  # (n, 2) x, y image frame
    deltas: np.ndarray  # (m, 2)
    bends: np.ndarray  # (n + m, 9) Vizcaya-Gerhardt offsets (rad) at 9 knots
    arch: tuple = ()  # (xc, y_top, amplitude_px, width_px) for arches


def _draw_class(rng) -> str:
    return FINGER_CLASSES[int(rng.choice(len(FINGER_CLASSES), p=CLASS_PROBABILITIES))]


def _draw_singularities(rng, cls: str, cx: float, cy: float, top: float) -> _Singularities:
    core_y = cy - rng.uniform(10.0, 45.0)
    core_x = cx + rng.normal(0.0, 12.0)
    cores: list = []
    deltas: list = []
    arch: tuple = ()
    if cls in ("left_loop", "right_loop"):
        side = 1.0 if cls == "left_loop" else -1.0  # left loop: delta right of the core (image)
        cores = [(core_x - side * rng.uniform(0, 25), core_y)]
        deltas = [(core_x + side * rng.uniform(60.0, 100.0), core_y + rng.uniform(85.0, 125.0))]
    elif cls == "whorl":
        a = rng.normal(0.0, 0.35)
        d = rng.uniform(12.0, 38.0)
        cores = [(core_x - 0.5 * d * np.sin(a), core_y - 0.5 * d * np.cos(a)),
                 (core_x + 0.5 * d * np.sin(a), core_y + 0.5 * d * np.cos(a))]
        dy = rng.uniform(80.0, 120.0)
        deltas = [(core_x - rng.uniform(65.0, 105.0), core_y + dy + rng.normal(0, 10)),
                  (core_x + rng.uniform(65.0, 105.0), core_y + dy + rng.normal(0, 10))]
    elif cls == "tented_arch":
        cores = [(core_x, core_y)]
        deltas = [(core_x + rng.normal(0.0, 4.0), core_y + rng.uniform(30.0, 55.0))]
    else:
        arch = (core_x, top, rng.uniform(1.0, 1.8), rng.uniform(55.0, 80.0))
    n = len(cores) + len(deltas)
    bends = rng.normal(0.0, 0.12, size=(n, 9))
    bends[:, 8] = bends[:, 0]
    return _Singularities(cls, np.array(cores, float).reshape(-1, 2), np.array(deltas, float).reshape(-1, 2), bends, arch)


_KNOTS = np.linspace(-np.pi, np.pi, 9)


def _bent_arg(dx, dy, bend):
    """Vizcaya-Gerhardt: the argument of z - s (y up) through a piecewise-linear bend."""
    a = np.arctan2(-dy, dx)
    return a + np.interp(a, _KNOTS, bend)


def _orientation(sing: _Singularities, x, y):
    """Ridge orientation (radians, y up, mod pi) at points x, y (image frame)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if sing.cls == "arch":
        xc, top, amp, width = sing.arch
        # ridges y_up = c + amp * depth * exp(-u^2/2): slope of that family
        depth = np.clip(1.0 - (y - top) / 330.0, 0.05, 1.0) * width
        u = (x - xc) / width
        slope = -amp * depth * u * np.exp(-0.5 * u * u) / width
        return np.mod(np.arctan(slope), np.pi)
    theta = np.zeros(np.broadcast(x, y).shape)
    k = 0
    for cxy in sing.cores:
        theta += 0.5 * _bent_arg(x - cxy[0], y - cxy[1], sing.bends[k])
        k += 1
    for dxy in sing.deltas:
        theta -= 0.5 * _bent_arg(x - dxy[0], y - dxy[1], sing.bends[k])
        k += 1
    return np.mod(theta, np.pi)


# ---------------------------------------------------------------------------
# fingerprint area
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Area:
    cx: float
    cy: float
    half_width: float
    top_cap: float
    bottom_cap: float
    rect_half: float

    @property
    def top(self) -> float:
        return self.cy - self.rect_half - self.top_cap

    def inside(self, x, y):
        """Signed inside-ness: > 0 inside (in pixels, approximately distance to the edge)."""
        dx = np.abs(x - self.cx)
        dy = y - self.cy
        up = dy < -self.rect_half
        down = dy > self.rect_half
        ey = np.where(up, (-dy - self.rect_half) / self.top_cap, np.where(down, (dy - self.rect_half) / self.bottom_cap, 0.0))
        ex = dx / self.half_width
        r = np.sqrt(ex * ex + ey * ey)
        scale = np.where(up, min(self.half_width, self.top_cap), np.where(down, min(self.half_width, self.bottom_cap), self.half_width))
        return (1.0 - r) * scale


def _draw_area(rng, width: int, height: int) -> _Area:
    return _Area(
        cx=width / 2 + rng.normal(0, 5),
        cy=height / 2 + rng.normal(0, 8) - 10,
        half_width=rng.uniform(*AREA_HALF_WIDTH_PX),
        top_cap=rng.uniform(*AREA_TOP_CAP_PX),
        bottom_cap=rng.uniform(*AREA_BOTTOM_CAP_PX),
        rect_half=rng.uniform(*AREA_RECT_HALF_PX),
    )


# ---------------------------------------------------------------------------
# Gabor bank and growth
# ---------------------------------------------------------------------------
_BANK_CACHE: dict = {}


def _period_bins() -> np.ndarray:
    return np.arange(PERIOD_MIN_PX, PERIOD_MAX_PX + 1e-9, PERIOD_STEP_PX)


def gabor_bank() -> np.ndarray:
    """float32 (N_ORIENT_BINS, n_periods, K, K): unit response to the matching ridge wave."""
    bank = _BANK_CACHE.get("bank")
    if bank is not None:
        return bank
    periods = _period_bins()
    r = GABOR_SIZE_PX // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    bank = np.zeros((N_ORIENT_BINS, periods.size, GABOR_SIZE_PX, GABOR_SIZE_PX), np.float32)
    for i in range(N_ORIENT_BINS):
        t = (i + 0.5) * np.pi / N_ORIENT_BINS  # ridge direction, y up
        ux, uy = np.cos(t), -np.sin(t)  # along the ridge, image frame
        along = xx * ux + yy * uy
        across = -xx * uy + yy * ux
        for j, p in enumerate(periods):
            env = np.exp(-0.5 * ((across / (GABOR_SIGMA_ACROSS * p)) ** 2 + (along / (GABOR_SIGMA_ALONG * p)) ** 2))
            wave = np.cos(2 * np.pi * across / p)
            k = env * wave
            k -= env * (k.sum() / env.sum())  # zero DC
            k /= np.sum(k * wave)  # unit gain on the matching wave
            bank[i, j] = k
    _BANK_CACHE["bank"] = bank
    return bank


def _add_small_features(rng, pattern, theta, period, inside):
    """Cut breaks and lakes into ridges, put islands and bridges into valleys (in place).

    Gabor growth only makes the dislocations the flow needs, whose directions
    are coherent over a region and alike between fingers; real ridges also
    carry short features whose two minutiae face each other (ridge breaks,
    dots and short ridges, enclosures, bridges). Counts and sizes in
    :data:`SMALL_FEATURES`.
    """
    h, w = pattern.shape
    n = int(rng.poisson(SMALL_FEATURES_PER_FINGER))
    kinds = rng.choice(len(SMALL_FEATURES), size=n, p=[f[1] for f in SMALL_FEATURES])
    ys, xs = np.nonzero(inside > 2 * MINUTIA_BORDER_PX)
    if ys.size == 0:
        return
    r = GABOR_SIZE_PX
    wy, wx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    for kind in kinds:
        name, _, on_ridge, length, width = SMALL_FEATURES[kind]
        for _ in range(20):  # find a pixel on the centre of a ridge (or valley)
            k = int(rng.integers(ys.size))
            y, x = int(ys[k]), int(xs[k])
            v = pattern[y, x]
            if (v > 0.9) if on_ridge else (v < -0.9):
                break
        else:
            continue
        t = float(theta[y, x])
        p = float(period[y, x])
        ux, uy = np.cos(t), -np.sin(t)
        along = wx * ux + wy * uy
        across = -wx * uy + wy * ux
        half = 0.5 * rng.uniform(*length) * p
        mask = (np.abs(along) <= half) & (np.abs(across) <= width * p)
        y0, y1, x0, x1 = max(0, y - r), min(h, y + r + 1), max(0, x - r), min(w, x + r + 1)
        m = mask[y0 - (y - r) : y1 - (y - r), x0 - (x - r) : x1 - (x - r)]
        win = pattern[y0:y1, x0:x1]
        if on_ridge:
            win[m & (win > -0.5)] = -1.0
        else:
            win[m & (win < 0.5)] = 1.0


def _grow_master(rng, theta, period, inside):
    """Grow the master ridge pattern (float32 in [-1, 1], > 0 on ridges)."""
    from ._synthetic_kernels import gabor_step

    h, w = theta.shape
    bank = gabor_bank()
    obin = (np.floor(theta / (np.pi / N_ORIENT_BINS)).astype(np.int16)) % N_ORIENT_BINS
    pbin = np.clip(np.rint((period - PERIOD_MIN_PX) / PERIOD_STEP_PX), 0, bank.shape[1] - 1).astype(np.int16)
    active = (inside > -GABOR_SIZE_PX).astype(np.uint8)
    n_seeds = max(4, int(active.sum() / SEED_SPACING_PX**2))
    src = np.zeros((h, w), np.float32)
    ys, xs = np.nonzero(inside > 4)
    pick = rng.choice(ys.size, size=n_seeds, replace=False)
    src[ys[pick], xs[pick]] = rng.choice(np.array([-1.0, 1.0], np.float32), size=n_seeds) * 30.0
    dst = np.zeros_like(src)
    for _ in range(GROWTH_ITERATIONS):
        gabor_step(src, dst, bank, obin, pbin, active)
        np.clip(dst * GROWTH_GAIN, -1.0, 1.0, out=src)
    return src


def _period_map(rng, sing: _Singularities, area: _Area, xx, yy):
    """Ridge period (px) per pixel: base period, wider above the core, smooth random wobble."""
    base = rng.uniform(*RIDGE_PERIOD_PX)
    if sing.cores.size:
        core_y = float(sing.cores[:, 1].min())
    else:
        core_y = area.cy - 30.0
    above = 1.0 / (1.0 + np.exp((yy - (core_y - 25.0)) / 18.0))
    # smooth wobble: a few random low-frequency cosines
    wobble = np.zeros_like(xx)
    for _ in range(3):
        kx, ky = rng.normal(0, 1.0 / 150.0, size=2)
        wobble += np.cos(2 * np.pi * (kx * xx + ky * yy) + rng.uniform(0, 2 * np.pi))
    period = base + PERIOD_ABOVE_CORE_PX * above + 0.25 * wobble
    return np.clip(period, PERIOD_MIN_PX, PERIOD_MAX_PX)


# ---------------------------------------------------------------------------
# master minutiae (crossing number on the thinned master)
# ---------------------------------------------------------------------------
_NB = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _sample_bilinear(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``image`` at fractional (y, x), bilinear, clamped to the frame."""
    h, w = image.shape
    y = np.clip(y, 0.0, h - 1.0)
    x = np.clip(x, 0.0, w - 1.0)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2)
    fy, fx = y - y0, x - x0
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _minutia_directions(pattern, theta, ys, xs, kinds) -> np.ndarray:
    """Direction of each master minutia: the ridge line through it, in the sense of the standard.

    An ending points along its ridge, away from the end; a bifurcation points
    into the fork's opening, along the valley that ends between its arms. So
    along the ridge line, an ending's side is ridge (pattern > 0) and a
    bifurcation's side is valley, within the first ridge period. The sense is
    read from the continuous master pattern on both sides of the minutia:
    tracing the thinned master's branches instead got about one bifurcation in
    six backwards (junction pixels of an 8-connected skeleton are T-shaped, so
    the three traced branch directions do not point at the fork).
    """
    t = theta[ys, xs].astype(np.float64)
    uy, ux = -np.sin(t), np.cos(t)  # image frame, y down
    reach = np.arange(DIRECTION_SAMPLE_MIN_PX, DIRECTION_SAMPLE_MAX_PX + 1, dtype=np.float64)
    p = pattern.astype(np.float64)

    def side(sign):
        return _sample_bilinear(p, ys[:, None] + sign * reach * uy[:, None],
                                xs[:, None] + sign * reach * ux[:, None]).mean(axis=1)

    forward_is_ridge = side(1.0) > side(-1.0)
    forward = np.where(kinds == 1, forward_is_ridge, ~forward_is_ridge)
    return np.where(forward, t, t + np.pi)


def _master_minutiae(pattern, inside, theta):
    """Minutiae of the binary master: structured MINUTIA_DTYPE array (quality 100)."""
    from ._synthetic_kernels import thin_zhang_suen

    h, w = pattern.shape
    ridge = ((pattern > 0) & (inside > 0)).astype(np.uint8)
    skel = thin_zhang_suen(ridge.copy())
    p = np.pad(skel, 1)
    nbs = [p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w].astype(np.int16) for dy, dx in _NB]
    cn = sum(np.abs(nbs[i] - nbs[(i + 1) % 8]) for i in range(8)) // 2
    cand = (skel == 1) & ((cn == 1) | (cn == 3)) & (inside > MINUTIA_BORDER_PX)
    ys, xs = np.nonzero(cand)
    kinds = np.where(cn[ys, xs] == 1, 1, 2).astype(np.uint8)
    # drop clusters (two minutiae closer than MINUTIA_MIN_DISTANCE_PX): thinning artefacts
    if ys.size > 1:
        d2 = (ys[:, None] - ys[None, :]) ** 2 + (xs[:, None] - xs[None, :]) ** 2
        np.fill_diagonal(d2, 1 << 30)
        keep = d2.min(axis=1) >= MINUTIA_MIN_DISTANCE_PX**2
        ys, xs, kinds = ys[keep], xs[keep], kinds[keep]
    angles = _minutia_directions(pattern, theta, ys, xs, kinds)
    from .template import make_minutiae

    return make_minutiae(xs.astype(float), ys.astype(float), angles, kinds, np.full(ys.size, 100))


@dataclass(frozen=True)
class MasterFinger:
    """A synthetic finger: its master ridge pattern and what generated it.

    Attributes
    ----------
    index : int
        Finger number (0-based) under ``seed``.
    seed : int
    finger_class : str
        One of :data:`FINGER_CLASSES`.
    pattern : ndarray of float32, shape (H, W)
        Master ridge pattern in [-1, 1], > 0 on ridges, 0 outside the area.
    inside : ndarray of float32, shape (H, W)
        Approximate signed distance (px) to the fingerprint area edge, > 0 inside.
    orientation : ndarray of float32, shape (H, W)
        Ridge orientation, radians mod pi, counter-clockwise with y up.
    period : ndarray of float32, shape (H, W)
        Ridge period in pixels.
    minutiae : ndarray of MINUTIA_DTYPE, shape (n,)
        Master minutiae in the master frame.
    singularities : dict
        ``{"cores": [[x, y], ...], "deltas": [...]}`` in the master frame.
    """

    index: int
    seed: int
    finger_class: str
    pattern: np.ndarray
    inside: np.ndarray
    orientation: np.ndarray
    period: np.ndarray
    minutiae: np.ndarray
    singularities: dict

    def template(self) -> Template:
        """The master minutiae as a Template (master frame)."""
        h, w = self.pattern.shape
        return Template(self.minutiae, w, h, PPI, 0, 100)


def make_finger(index: int, seed: int = 0, *, width: int = IMAGE_WIDTH_PX, height: int = IMAGE_HEIGHT_PX, finger_class: str | None = None) -> MasterFinger:
    """Generate master finger ``index`` (0-based) for ``seed``.

    The finger depends only on (seed, index), never on how many fingers are made.
    """
    seed = check_seed(seed)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or int(index) < 0:
        raise BiomatchError(f"finger index must be a non-negative integer, got {index!r}")
    width = check_count(width, "width", 2000)
    height = check_count(height, "height", 2000)
    if width < 160 or height < 160:
        raise BiomatchError(f"image size {width}x{height} too small for a finger (at least 160x160 px)")
    if finger_class is not None and finger_class not in FINGER_CLASSES:
        raise BiomatchError(f"finger_class must be one of {', '.join(FINGER_CLASSES)}, got {finger_class!r}")
    rng = keyed_rng(seed, IMAGE_STREAM, int(index), 0)
    area = _draw_area(rng, width, height)
    cls = _draw_class(rng)
    if finger_class is not None:
        cls = finger_class
    sing = _draw_singularities(rng, cls, area.cx, area.cy, area.top)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    inside = area.inside(xx, yy)
    theta = _orientation(sing, xx, yy)
    period = _period_map(rng, sing, area, xx, yy)
    pattern = _grow_master(rng, theta, period, inside)
    _add_small_features(rng, pattern, theta, period, inside)
    pattern[inside <= 0] = 0.0
    minutiae = _master_minutiae(pattern, inside, theta)
    return MasterFinger(
        index=int(index),
        seed=seed,
        finger_class=cls,
        pattern=pattern,
        inside=inside.astype(np.float32),
        orientation=theta.astype(np.float32),
        period=period.astype(np.float32),
        minutiae=minutiae,
        singularities={"cores": sing.cores.round(1).tolist(), "deltas": sing.deltas.round(1).tolist()},
    )
