"""Synthetic fingerprints: images (SFinGe-like) and minutiae templates at scale.

Two levels, both deterministic for a seed (finger ``i`` is the same whatever
the number of fingers asked for):

**Images** (:func:`make_finger`, :func:`generate_images`), in the spirit of
SFinGe (Cappelli, Maio, Maltoni, "Synthetic fingerprint-image generation",
ICPR 2000; Handbook of Fingerprint Recognition, ch. 6):

1. fingerprint area: a rectangle closed by four elliptical caps;
2. class drawn in natural proportions (arch 3.7 %, tented arch 2.9 %, left
   loop 33.8 %, right loop 31.7 %, whorl 27.9 %; Wilson, Candela, Watson,
   "Neural network fingerprint classification", J. Artificial Neural
   Networks 1994, the figures SFinGe uses);
3. orientation field from the singular points by the Sherlock-Monro zero-pole
   model, each singularity's argument bent by a random piecewise-linear
   function (Vizcaya-Gerhardt); arches from an analytic arch flow;
4. ridge-period map (about 9 px at 500 ppi, wider above the core);
5. master ridge pattern grown from random seeds by iterative contextual
   filtering with oriented Gabor kernels (a precomputed bank indexed by
   orientation and period bin), saturated at each step;
6. master minutiae: crossing number on the thinned binary master;
7. impressions: displacement, rotation, Cappelli's plastic distortion
   (undistorted close-contact region, braked rigid shift outside it),
   pressure (ridge thickness, contact size), dry-skin specks and wet
   smudges, partial contact, noise, background; 8-bit gray, ridges dark,
   300x400 pixels at 500 ppi. Impression ``j`` follows the FVC2002
   acquisition protocol for ``j mod 8`` (plain, exaggerated displacement,
   exaggerated rotation, dry, wet). The master minutiae mapped into each
   impression that fall in its contact area are its ground truth.

**Templates** (:func:`template_batch`, :func:`generate_templates`): master
minutiae sets (jittered lattice for a minimum spacing, directions from the
same orientation model, ending/bifurcation mix) and mated impressions
(rigid motion, plastic distortion, crop and partial contact, missing and
spurious minutiae, position/angle jitter, type errors, quality), vectorised
over blocks of fingers. The extraction error model (missed and spurious
minutiae, position/angle/type errors) has a part that repeats on every
impression of a finger and a part drawn anew per impression; its sizes are
those measured with ``biomatch.extract`` on the synthetic images against
their ground truth (``benchmarks/bench_synthetic.py``).

Files follow the FVC layout: ``FINGER_IMPRESSION.png`` (FINGER and
IMPRESSION from 1) or ``FINGER_IMPRESSION.bmt`` (:meth:`Template.to_bytes`),
ground truth in ``truth/``, and a ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import BiomatchError
from .template import MINUTIA_DTYPE, Template

__all__ = [
    "GENERATOR_VERSION",
    "FINGER_CLASSES",
    "CLASS_PROBABILITIES",
    "MasterFinger",
    "Impression",
    "make_finger",
    "make_impression",
    "generate_images",
    "TemplateBlock",
    "template_batch",
    "generate_templates",
    "read_manifest",
]

GENERATOR_VERSION = "1.0"

# ---------------------------------------------------------------------------
# tuned constants (units in the names)
# ---------------------------------------------------------------------------
IMAGE_WIDTH_PX = 300
IMAGE_HEIGHT_PX = 400
PPI = 500.0

FINGER_CLASSES = ("arch", "tented_arch", "left_loop", "right_loop", "whorl")
#: Natural class frequencies (Wilson, Candela, Watson 1994), in FINGER_CLASSES order.
CLASS_PROBABILITIES = (0.037, 0.029, 0.338, 0.317, 0.279)

# fingerprint area (SFinGe shape: rectangle + 4 elliptical caps)
AREA_HALF_WIDTH_PX = (108.0, 130.0)
AREA_TOP_CAP_PX = (100.0, 130.0)
AREA_BOTTOM_CAP_PX = (60.0, 90.0)
AREA_RECT_HALF_PX = (70.0, 110.0)

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
TRACE_STEPS_PX = 8

# impressions
ROTATION_SD_DEG, ROTATION_MAX_DEG = 8.0, 20.0
TRANSLATION_SD_PX, TRANSLATION_MAX_PX = 20.0, 50.0
#: FVC2002 acquisition protocol (Maio et al., ICPR 2002), repeated every 8
#: impressions: 1-2 plain, 3-4 exaggerated displacement, 5-6 exaggerated
#: rotation, 7 dry, 8 wet. Per impression (index mod 8): translation and
#: rotation scale, pressure range.
IMPRESSION_PROTOCOL = (
    (1.0, 1.0, (0.0, 1.0)),
    (1.0, 1.0, (0.0, 1.0)),
    (2.2, 1.0, (0.0, 1.0)),
    (2.2, 1.0, (0.0, 1.0)),
    (1.0, 2.2, (0.0, 1.0)),
    (1.0, 2.2, (0.0, 1.0)),
    (1.0, 1.0, (0.0, 0.3)),
    (1.0, 1.0, (0.7, 1.0)),
)
CONTACT_RADIUS_PX = (35.0, 75.0)  # Cappelli close-contact region
DISTORTION_SHIFT_SD_PX = 15.0
DISTORTION_ROT_SD_DEG = 5.0
DISTORTION_BRAKE_PX = 60.0
TRUTH_CONTACT_MIN = 0.5

DEG = np.pi / 180.0


# ---------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------
_IMAGE_STREAM = 1
_TEMPLATE_STREAM = 2


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key))))


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise BiomatchError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_count(value, name: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BiomatchError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not 1 <= value <= maximum:
        raise BiomatchError(f"{name} must be 1..{maximum}, got {value}")
    return value


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


def _gabor_bank() -> np.ndarray:
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
    bank = _gabor_bank()
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


def _master_minutiae(pattern, inside, theta):
    """Minutiae of the binary master: structured MINUTIA_DTYPE array (quality 100)."""
    from ._synthetic_kernels import thin_zhang_suen, trace_direction

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
    angles = np.empty(ys.size)
    for i, (y, x) in enumerate(zip(ys, xs)):
        vx = vy = 0.0
        for dy, dx in _NB:
            yy, xx = y + dy, x + dx
            if 0 <= yy < h and 0 <= xx < w and skel[yy, xx]:
                ty, tx = trace_direction(skel, y, x, yy, xx, TRACE_STEPS_PX)
                n = np.hypot(tx, ty)
                if n > 0:
                    vx += tx / n
                    vy += ty / n
        # ending: along the ridge away from the end; bifurcation: towards the fork opening
        t = float(theta[y, x])
        ux, uy = np.cos(t), -np.sin(t)  # image frame
        angles[i] = t if ux * vx + uy * vy >= 0 else t + np.pi
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
    seed = _check_seed(seed)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or int(index) < 0:
        raise BiomatchError(f"finger index must be a non-negative integer, got {index!r}")
    width = _check_count(width, "width", 2000)
    height = _check_count(height, "height", 2000)
    if width < 160 or height < 160:
        raise BiomatchError(f"image size {width}x{height} too small for a finger (at least 160x160 px)")
    if finger_class is not None and finger_class not in FINGER_CLASSES:
        raise BiomatchError(f"finger_class must be one of {', '.join(FINGER_CLASSES)}, got {finger_class!r}")
    rng = _rng(seed, _IMAGE_STREAM, int(index), 0)
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


# ---------------------------------------------------------------------------
# impressions
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Impression:
    """One synthetic impression of a :class:`MasterFinger`.

    Attributes
    ----------
    pixels : ndarray of uint8, shape (H, W)
        Gray image at 500 ppi, ridges dark.
    truth : Template
        Master minutiae mapped into this image that fall in its contact area.
    finger, impression : int
        0-based finger index and 0-based impression index.
    params : dict
        The drawn acquisition parameters (for the manifest).
    ridge : ndarray of float32, shape (H, W), optional
        The master ridge pattern mapped into this impression, in [-1, 1], > 0 on
        ridges (before pressure, skin and sensor): the clean ridge map that an
        enhancement model is trained to recover.
    contact : ndarray of float32, shape (H, W), optional
        Contact strength 0-1 (the print's foreground); ground truth counts
        where it is at least :data:`TRUTH_CONTACT_MIN`.
    """

    pixels: np.ndarray
    truth: Template
    finger: int
    impression: int
    params: dict = field(default_factory=dict)
    ridge: np.ndarray | None = None
    contact: np.ndarray | None = None


@dataclass(frozen=True)
class _Motion:
    """Rigid motion + Cappelli plastic distortion, as a map master -> impression."""

    cx: float
    cy: float
    rot: float
    tx: float
    ty: float
    dc_x: float  # close-contact centre (master frame)
    dc_y: float
    dc_r: float  # close-contact radius
    d_rot: float  # rigid skin shift applied outside the contact region
    d_tx: float
    d_ty: float
    brake: float

    def _distort(self, x, y, sign=1.0):
        # Cappelli et al. 2001: v + (T(v) - v) * brake(distance outside the close-contact region)
        d = np.maximum(np.hypot(x - self.dc_x, y - self.dc_y) - self.dc_r, 0.0)
        b = sign * (1.0 - np.exp(-((d / self.brake) ** 2)))
        c, s = np.cos(self.d_rot), np.sin(self.d_rot)
        rx, ry = x - self.dc_x, y - self.dc_y
        tx = self.dc_x + c * rx - s * ry + self.d_tx
        ty = self.dc_y + s * rx + c * ry + self.d_ty
        return x + (tx - x) * b, y + (ty - y) * b

    def backward(self, qx, qy):
        """Impression pixel -> master point (the map used to render)."""
        c, s = np.cos(self.rot), np.sin(self.rot)
        ux, uy = qx - self.cx - self.tx, qy - self.cy - self.ty
        px = self.cx + c * ux + s * uy
        py = self.cy - s * ux + c * uy
        return self._distort(px, py, -1.0)

    def forward(self, mx, my, iterations: int = 12):
        """Master point -> impression pixel, inverting :meth:`backward` by fixed-point iteration."""
        c, s = np.cos(self.rot), np.sin(self.rot)

        def rigid(px, py):
            ux, uy = px - self.cx, py - self.cy
            return self.cx + c * ux - s * uy + self.tx, self.cy + s * ux + c * uy + self.ty

        qx, qy = rigid(mx, my)
        for _ in range(iterations):
            bx, by = self.backward(qx, qy)
            ex, ey = mx - bx, my - by
            gx, gy = rigid(self.cx + ex, self.cy + ey)
            qx, qy = qx + gx - self.cx - self.tx, qy + gy - self.cy - self.ty
        return qx, qy


def _smooth_noise(rng, shape, sigma):
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / (n.std() + 1e-6)


def make_impression(master: MasterFinger, impression: int) -> Impression:
    """Impression ``impression`` (0-based) of ``master``; depends only on (seed, finger, impression)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    if isinstance(impression, bool) or not isinstance(impression, (int, np.integer)) or int(impression) < 0:
        raise BiomatchError(f"impression index must be a non-negative integer, got {impression!r}")
    rng = _rng(master.seed, _IMAGE_STREAM, master.index, int(impression) + 1)
    kt, ks, pressure_range = IMPRESSION_PROTOCOL[int(impression) % len(IMPRESSION_PROTOCOL)]
    h, w = master.pattern.shape
    inside_idx = np.argwhere(master.inside > 0)
    cy, cx = inside_idx.mean(axis=0)
    motion = _Motion(
        cx=float(cx),
        cy=float(cy),
        rot=float(np.clip(rng.normal(0, ROTATION_SD_DEG * ks), -ROTATION_MAX_DEG * ks, ROTATION_MAX_DEG * ks) * DEG),
        tx=float(np.clip(rng.normal(0, TRANSLATION_SD_PX * kt), -TRANSLATION_MAX_PX * kt, TRANSLATION_MAX_PX * kt)),
        ty=float(np.clip(rng.normal(0, TRANSLATION_SD_PX * kt), -TRANSLATION_MAX_PX * kt, TRANSLATION_MAX_PX * kt)),
        dc_x=float(cx + rng.normal(0, 25)),
        dc_y=float(cy + rng.normal(0, 30)),
        dc_r=float(rng.uniform(*CONTACT_RADIUS_PX)),
        d_rot=float(rng.normal(0, DISTORTION_ROT_SD_DEG) * DEG),
        d_tx=float(rng.normal(0, DISTORTION_SHIFT_SD_PX)),
        d_ty=float(rng.normal(0, DISTORTION_SHIFT_SD_PX)),
        brake=DISTORTION_BRAKE_PX,
    )
    qy, qx = np.mgrid[0:h, 0:w].astype(np.float64)
    mx, my = motion.backward(qx, qy)
    coords = np.array([my, mx])
    ridge = map_coordinates(master.pattern, coords, order=1, mode="constant", cval=0.0).astype(np.float32)
    inside = map_coordinates(master.inside, coords, order=1, mode="constant", cval=-50.0).astype(np.float32)

    # contact: the pressed area is an ellipse inside the finger area, soft at its edge
    pressure = float(rng.uniform(*pressure_range))  # 0 light / dry .. 1 heavy / wet
    ex = motion.cx + motion.tx + rng.normal(0, 20)
    ey = motion.cy + motion.ty + rng.normal(0, 25)
    ax = (0.65 + 0.35 * pressure + rng.uniform(0.0, 0.25)) * (w * 0.42)
    ay = (0.60 + 0.35 * pressure + rng.uniform(0.0, 0.25)) * (h * 0.42)
    rr = np.sqrt(((qx - ex) / ax) ** 2 + ((qy - ey) / ay) ** 2)
    contact = np.clip((1.0 - rr) * 8.0, 0.0, 1.0) * np.clip(inside / 6.0, 0.0, 1.0)
    contact *= np.clip(1.0 + rng.uniform(0.2, 0.5) * _smooth_noise(rng, (h, w), 20.0), 0.0, 1.0)
    contact = contact.astype(np.float32)

    # ridge thickness: threshold moves with pressure (dry: thin broken ridges; wet: thick, merged)
    thr = 0.6 * (0.5 - pressure) + 0.35 * _smooth_noise(rng, (h, w), 6.0)
    ink = 1.0 / (1.0 + np.exp(-(ridge - thr) * 7.0))
    # skin condition: dry skin leaves white specks and breaks on the ridges, wet
    # skin smudges valleys shut in patches
    dryness = float(rng.uniform(0.0, 1.0) ** 1.5) if pressure_range[1] > 0.5 else float(rng.uniform(0.5, 1.0))
    specks = _smooth_noise(rng, (h, w), 1.0) > (2.6 - 1.7 * dryness)
    ink = np.where(specks, ink * 0.2, ink)
    wet = max(0.0, pressure - 0.5) * 2.0
    if wet > 0:
        smudge = np.clip((_smooth_noise(rng, (h, w), 8.0) - (2.0 - 1.2 * wet)) * 2.0, 0.0, 0.85)
        ink = np.maximum(ink, smudge)
    ink = ink * contact

    background = rng.uniform(185.0, 245.0) + 8.0 * _smooth_noise(rng, (h, w), 40.0)
    contrast = rng.uniform(140.0, 210.0) * (0.8 + 0.3 * pressure)
    gray = background - contrast * ink
    gray = gaussian_filter(gray.astype(np.float32), rng.uniform(0.6, 1.1))
    gray += (3.0 + 15.0 * rng.uniform() ** 2) * rng.standard_normal((h, w)).astype(np.float32)
    pixels = np.clip(np.rint(gray), 0, 255).astype(np.uint8)

    # ground truth: master minutiae mapped forward, kept where contact is solid
    m = master.minutiae
    fx, fy = motion.forward(m["x"].astype(np.float64), m["y"].astype(np.float64))
    step = 3.0
    gx, gy = motion.forward(m["x"] + step * np.cos(m["angle"]), m["y"] - step * np.sin(m["angle"]))
    ang = np.arctan2(-(gy - fy), gx - fx)
    ok = (fx >= 0) & (fx <= w - 1) & (fy >= 0) & (fy <= h - 1)
    ix = np.clip(np.rint(fx).astype(int), 0, w - 1)
    iy = np.clip(np.rint(fy).astype(int), 0, h - 1)
    ok &= contact[iy, ix] >= TRUTH_CONTACT_MIN
    from .template import make_minutiae

    truth_m = make_minutiae(fx[ok], fy[ok], ang[ok], m["type"][ok], np.full(int(ok.sum()), 100))
    truth = Template(truth_m, w, h, PPI, 0, 100)
    params = {
        "centre_px": [round(motion.cx, 3), round(motion.cy, 3)],
        "rotation_deg": round(motion.rot / DEG, 3),
        "translation_px": [round(motion.tx, 2), round(motion.ty, 2)],
        "distortion": {"centre": [round(motion.dc_x, 1), round(motion.dc_y, 1)], "radius_px": round(motion.dc_r, 1),
                       "rotation_deg": round(motion.d_rot / DEG, 3), "shift_px": [round(motion.d_tx, 2), round(motion.d_ty, 2)]},
        "pressure": round(pressure, 3),
        "dryness": round(dryness, 3),
    }
    return Impression(pixels=pixels, truth=truth, finger=master.index, impression=int(impression), params=params,
                      ridge=ridge, contact=contact)


# ---------------------------------------------------------------------------
# writing image sets
# ---------------------------------------------------------------------------
MAX_FINGERS = 10_000_000
MAX_IMPRESSIONS = 100


def _png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG", dpi=(PPI, PPI), optimize=False, compress_level=9)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _prepare_out(out) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "truth").mkdir(exist_ok=True)
    except OSError as exc:
        raise BiomatchError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    return out


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise BiomatchError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _write_finger(out: Path, f: int, n_impressions: int, seed: int):
    """Make finger f and its impressions, write them; return (name, finger info, file entries)."""
    master = make_finger(f, seed)
    name_f = str(f + 1)
    files: dict = {}
    data = master.template().to_bytes()
    _write(out / "truth" / f"{name_f}_master.bmt", data)
    files[f"truth/{name_f}_master.bmt"] = {"sha256": _sha256(data)}
    info = {
        "class": master.finger_class,
        "master_minutiae": int(master.minutiae.size),
        "singularities": master.singularities,
    }
    for j in range(n_impressions):
        imp = make_impression(master, j)
        stem = f"{name_f}_{j + 1}"
        png = _png_bytes(imp.pixels)
        _write(out / f"{stem}.png", png)
        truth = imp.truth.to_bytes()
        _write(out / "truth" / f"{stem}.bmt", truth)
        files[f"{stem}.png"] = {
            "sha256": _sha256(png),
            "pixels_sha256": _sha256(imp.pixels.tobytes()),
            "truth_minutiae": len(imp.truth),
            "params": imp.params,
        }
        files[f"truth/{stem}.bmt"] = {"sha256": _sha256(truth)}
    return name_f, info, files


def generate_images(out, n_fingers: int, n_impressions: int, seed: int = 0, *, first_finger: int = 0,
                    workers: int = 1, progress: Callable[[int], None] | None = None) -> dict:
    """Write ``n_fingers`` x ``n_impressions`` synthetic finger images into ``out``.

    Files: ``F_I.png`` (8-bit gray, 500 dpi in pHYs; F from ``first_finger + 1``,
    I from 1), ``truth/F_I.bmt`` (ground-truth minutiae of that image),
    ``truth/F_master.bmt`` (master minutiae) and ``manifest.json``.

    Parameters
    ----------
    workers : int
        Processes to use (1 = this one); the files do not depend on it.
    progress : callable(int), optional
        Called with the number of images just written.

    Returns
    -------
    dict
        The manifest that was written.
    """
    seed = _check_seed(seed)
    n_fingers = _check_count(n_fingers, "fingers", MAX_FINGERS)
    n_impressions = _check_count(n_impressions, "impressions", MAX_IMPRESSIONS)
    if isinstance(first_finger, bool) or not isinstance(first_finger, (int, np.integer)) or first_finger < 0:
        raise BiomatchError(f"first_finger must be a non-negative integer, got {first_finger!r}")
    workers = _check_count(workers, "workers", 256)
    out = _prepare_out(out)
    files: dict = {}
    fingers: dict = {}
    indices = range(int(first_finger), int(first_finger) + n_fingers)
    if workers == 1:
        results = (_write_finger(out, f, n_impressions, seed) for f in indices)
        pool = None
    else:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_write_finger, [out] * n_fingers, indices, [n_impressions] * n_fingers, [seed] * n_fingers)
    try:
        for name_f, info, finger_files in results:
            fingers[name_f] = info
            files.update(finger_files)
            if progress is not None:
                progress(n_impressions)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    manifest = {
        "generator": "biomatch.synthetic",
        "generator_version": GENERATOR_VERSION,
        "kind": "images",
        "seed": seed,
        "parameters": {
            "fingers": n_fingers,
            "first_finger": int(first_finger),
            "impressions": n_impressions,
            "width_px": IMAGE_WIDTH_PX,
            "height_px": IMAGE_HEIGHT_PX,
            "ppi": PPI,
            "class_probabilities": dict(zip(FINGER_CLASSES, CLASS_PROBABILITIES)),
        },
        "fingers": fingers,
        "files": files,
    }
    _write(out / "manifest.json", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest


def read_manifest(folder) -> dict:
    """Read ``manifest.json`` of a synthetic set."""
    path = Path(folder) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise BiomatchError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise BiomatchError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


# ---------------------------------------------------------------------------
# template level: vectorised over blocks of fingers
# ---------------------------------------------------------------------------
#: Fingers are generated in fixed blocks (finger i depends only on seed and i).
TEMPLATE_BLOCK_FINGERS = 1024
MASTER_MINUTIAE_RANGE = (30, 60)  # inclusive, per finger
LATTICE_CELLS = (10, 14)  # jittered lattice over the area box: min spacing >= 0.4 cell (~9 px)
LATTICE_JITTER = 0.6  # fraction of the cell the minutia may move in
ENDING_FRACTION = 0.55
TEMPLATE_AREA_HALF_HEIGHT_PX = (150.0, 178.0)
IMPRESSION_QUALITY_MEAN, IMPRESSION_QUALITY_SD = 62.0, 18.0
# Extraction error model, measured with biomatch.extract on synthetic images against their
# ground truth (benchmarks/bench_synthetic.py): recall ~0.71, ~4 spurious per image,
# position error ~2 px per axis, angle error ~3 deg rms, ~12 % type swaps.
MISSING_BASE, MISSING_PER_BAD = 0.08, 0.30  # P(missing) = base + per_bad * (1 - q/100)
# Part of the error repeats on every impression of a finger (the same hard minutia missed,
# the same crease read as a minutia, the same offset), part is new each time.
MISSING_HARD_SHARE = 0.35  # master minutiae an extractor tends to miss: P(missing) = P / share for them, 0 for the rest
SPURIOUS_BASE, SPURIOUS_PER_BAD, SPURIOUS_MAX = 0.5, 3.0, 20  # new spurious per impression (Poisson mean)
PERSISTENT_SPURIOUS_MEAN, PERSISTENT_SPURIOUS_MAX, PERSISTENT_SPURIOUS_SHOW = 3.0, 8, 0.6
BIAS_POS_PX, BIAS_ANGLE_DEG = 1.5, 2.5  # persistent per-minutia error (sd)
JITTER_POS_PX = (0.5, 0.8)  # per-impression sd = a + b * (1 - q/100)
JITTER_ANGLE_DEG = (1.0, 1.0)
TYPE_FLIP, TYPE_FLIP_IMPRESSION = 0.10, 0.03
BAD_REGIONS_BASE, BAD_REGIONS_PER_BAD, BAD_REGIONS_MAX = 0.5, 2.0, 4  # Poisson mean of bad patches
BAD_REGION_RADIUS_PX = (25.0, 60.0)
BAD_REGION_MISSING = 0.8  # P(missing) inside a bad patch
BAD_REGION_SHARE = 0.4  # share of the missing rate that the patches account for
BORDER_BAND_PX, BORDER_MISSING = 12.0, 0.8
SPURIOUS_EDGE_SHARE = 0.6
CONTACT_SEMI_AXES_PX = ((95.0, 135.0), (120.0, 175.0))


@dataclass(frozen=True)
class TemplateBlock:
    """Many templates in flat arrays (what :func:`template_batch` yields).

    Attributes
    ----------
    finger : ndarray of int64, shape (n,)
        0-based finger index of each template (file name uses ``finger + 1``).
    impression : ndarray of int16, shape (n,)
        0-based impression index.
    offsets : ndarray of int64, shape (n + 1,)
        Template k's minutiae are ``minutiae[offsets[k]:offsets[k + 1]]``.
    minutiae : ndarray of MINUTIA_DTYPE, shape (offsets[-1],)
    quality : ndarray of uint8, shape (n,)
        Image quality 0-100 of each impression.
    finger_class : ndarray of uint8, shape (n_fingers_in_block,)
        Index into :data:`FINGER_CLASSES` for fingers ``first .. first + n_fingers_in_block - 1``.
    master_counts : ndarray of int16, shape (n_fingers_in_block,)
    first : int
        First finger index of this block.
    width, height : int
    """

    finger: np.ndarray
    impression: np.ndarray
    offsets: np.ndarray
    minutiae: np.ndarray
    quality: np.ndarray
    finger_class: np.ndarray
    master_counts: np.ndarray
    first: int
    width: int = IMAGE_WIDTH_PX
    height: int = IMAGE_HEIGHT_PX

    def __len__(self) -> int:
        return int(self.finger.size)

    def template(self, k: int) -> Template:
        """Template k of this block."""
        m = self.minutiae[self.offsets[k] : self.offsets[k + 1]]
        return Template(m, self.width, self.height, PPI, 0, int(self.quality[k]))

    def templates(self) -> list:
        """All templates of this block as :class:`Template` objects."""
        return [self.template(k) for k in range(len(self))]


def _sm_orientation_batch(x, y, cores, core_ok, deltas, delta_ok):
    """Sherlock-Monro orientation at points (B, M) for per-finger singularities (B, 2, 2)."""
    theta = np.zeros_like(x)
    for k in range(cores.shape[1]):
        a = np.arctan2(-(y - cores[:, k, 1:2]), x - cores[:, k, 0:1])
        theta += np.where(core_ok[:, k : k + 1], 0.5 * a, 0.0)
    for k in range(deltas.shape[1]):
        a = np.arctan2(-(y - deltas[:, k, 1:2]), x - deltas[:, k, 0:1])
        theta -= np.where(delta_ok[:, k : k + 1], 0.5 * a, 0.0)
    return theta


def _template_masters(seed: int, block: int):
    """Master minutiae of one block: dict of (B, M) arrays."""
    B = TEMPLATE_BLOCK_FINGERS
    rng = _rng(seed, _TEMPLATE_STREAM, block, 0)
    W, H = IMAGE_WIDTH_PX, IMAGE_HEIGHT_PX
    cls = rng.choice(len(FINGER_CLASSES), size=B, p=CLASS_PROBABILITIES).astype(np.uint8)
    cx = W / 2 + rng.normal(0, 5, B)
    cy = H / 2 - 10 + rng.normal(0, 8, B)
    hw = rng.uniform(*AREA_HALF_WIDTH_PX, B)
    hh = rng.uniform(*TEMPLATE_AREA_HALF_HEIGHT_PX, B)
    # singularities (same model as the image level, without the bends)
    core = np.stack([cx + rng.normal(0, 12, B), cy - rng.uniform(10, 45, B)], axis=1)
    side = np.where(cls == 2, 1.0, -1.0)
    u = rng.uniform(0, 1, (B, 8))
    cores = np.zeros((B, 2, 2))
    deltas = np.zeros((B, 2, 2))
    core_ok = np.zeros((B, 2), bool)
    delta_ok = np.zeros((B, 2), bool)
    loop = (cls == 2) | (cls == 3)
    whorl = cls == 4
    tented = cls == 1
    arch = cls == 0
    # loops
    cores[:, 0] = core
    cores[loop, 0, 0] -= side[loop] * 25 * u[loop, 0]
    deltas[loop, 0, 0] = core[loop, 0] + side[loop] * (60 + 40 * u[loop, 1])
    deltas[loop, 0, 1] = core[loop, 1] + 85 + 40 * u[loop, 2]
    # whorls: two cores and two deltas
    d = 12 + 26 * u[:, 3]
    cores[whorl, 0, 1] = core[whorl, 1] - 0.5 * d[whorl]
    cores[whorl, 1, 0] = core[whorl, 0]
    cores[whorl, 1, 1] = core[whorl, 1] + 0.5 * d[whorl]
    dy = 80 + 40 * u[:, 4]
    deltas[whorl, 0] = np.stack([core[whorl, 0] - 65 - 40 * u[whorl, 5], core[whorl, 1] + dy[whorl]], axis=1)
    deltas[whorl, 1] = np.stack([core[whorl, 0] + 65 + 40 * u[whorl, 6], core[whorl, 1] + dy[whorl]], axis=1)
    # tented arches: delta right below the core
    deltas[tented, 0] = np.stack([core[tented, 0], core[tented, 1] + 30 + 25 * u[tented, 7]], axis=1)
    core_ok[:, 0] = ~arch
    core_ok[:, 1] = whorl
    delta_ok[:, 0] = ~arch
    delta_ok[:, 1] = whorl

    # jittered lattice over the area box, keep cells inside the elliptical area
    gx, gy = LATTICE_CELLS
    G = gx * gy
    ix = np.tile(np.arange(gx), gy)
    iy = np.repeat(np.arange(gy), gx)
    jit = rng.uniform(0.5 - LATTICE_JITTER / 2, 0.5 + LATTICE_JITTER / 2, (B, G, 2))
    px = cx[:, None] - hw[:, None] + (ix[None, :] + jit[..., 0]) * (2 * hw[:, None] / gx)
    py = cy[:, None] - hh[:, None] + (iy[None, :] + jit[..., 1]) * (2 * hh[:, None] / gy)
    inside = ((px - cx[:, None]) / hw[:, None]) ** 2 + ((py - cy[:, None]) / hh[:, None]) ** 2 < 0.92
    n = rng.integers(MASTER_MINUTIAE_RANGE[0], MASTER_MINUTIAE_RANGE[1] + 1, B)
    keys = rng.random((B, G))
    keys[~inside] = 2.0
    M = MASTER_MINUTIAE_RANGE[1]
    pick = np.argsort(keys, axis=1)[:, :M]
    rows = np.arange(B)[:, None]
    x = px[rows, pick]
    y = py[rows, pick]
    valid = (np.arange(M)[None, :] < n[:, None]) & inside[rows, pick]

    theta = _sm_orientation_batch(x, y, cores, core_ok, deltas, delta_ok)
    # arches: analytic arch flow (as at the image level)
    amp = rng.uniform(1.0, 1.8, B)[:, None]
    width = rng.uniform(55.0, 80.0, B)[:, None]
    top = (cy - hh)[:, None]
    depth = np.clip(1.0 - (y - top) / 330.0, 0.05, 1.0) * width
    uu = (x - core[:, 0:1]) / width
    theta_arch = np.arctan(-amp * depth * uu * np.exp(-0.5 * uu * uu) / width)
    theta = np.where(arch[:, None], theta_arch, theta)
    angle = theta + np.pi * (rng.random((B, M)) < 0.5) + rng.normal(0, 3 * DEG, (B, M))
    mtype = np.where(rng.random((B, M)) < ENDING_FRACTION, 1, 2).astype(np.uint8)
    count = valid.sum(axis=1).astype(np.int16)
    # persistent extraction errors: type read wrong, hard-to-see minutiae, offsets
    obs_type = np.where(rng.random((B, M)) < TYPE_FLIP, 3 - mtype, mtype).astype(np.uint8)
    hard = np.where(rng.random((B, M)) < MISSING_HARD_SHARE, 1.0 / MISSING_HARD_SHARE, 0.0)
    # persistent spurious minutiae (creases, scars, pores read as minutiae), inside the area
    P = PERSISTENT_SPURIOUS_MAX
    nps = np.minimum(rng.poisson(PERSISTENT_SPURIOUS_MEAN, B), P)
    r = np.sqrt(rng.random((B, P)))
    phi = rng.uniform(0, 2 * np.pi, (B, P))
    psx = cx[:, None] + 0.85 * hw[:, None] * r * np.cos(phi)
    psy = cy[:, None] + 0.85 * hh[:, None] * r * np.sin(phi)
    spur = np.zeros((B, M + P), bool)
    spur[:, M:] = True
    bias = rng.normal(0, 1, (B, M + P, 3)) * np.array([BIAS_POS_PX, BIAS_POS_PX, BIAS_ANGLE_DEG * DEG])
    return {
        "cls": cls,
        "x": np.concatenate([x, psx], axis=1),
        "y": np.concatenate([y, psy], axis=1),
        "angle": np.concatenate([angle, rng.uniform(0, 2 * np.pi, (B, P))], axis=1),
        "type": np.concatenate([obs_type, rng.integers(1, 3, (B, P)).astype(np.uint8)], axis=1),
        "valid": np.concatenate([valid, np.arange(P)[None, :] < nps[:, None]], axis=1),
        "hard": np.concatenate([hard, np.zeros((B, P))], axis=1),
        "spur": spur,
        "bias": bias,
        "count": count, "cx": cx, "cy": cy, "hw": hw, "hh": hh,
    }


def _template_impressions(seed: int, block: int, j: int, ms: dict):
    """Impression j of every finger of a block: padded (B, S) arrays and a validity mask."""
    B = TEMPLATE_BLOCK_FINGERS
    rng = _rng(seed, _TEMPLATE_STREAM, block, j + 1)
    W, H = IMAGE_WIDTH_PX, IMAGE_HEIGHT_PX
    x, y, a = ms["x"], ms["y"], ms["angle"]
    cx, cy = ms["cx"][:, None], ms["cy"][:, None]
    kt, ks, _ = IMPRESSION_PROTOCOL[j % len(IMPRESSION_PROTOCOL)]
    rot = np.clip(rng.normal(0, ROTATION_SD_DEG * ks, B), -ROTATION_MAX_DEG * ks, ROTATION_MAX_DEG * ks)[:, None] * DEG
    tx = np.clip(rng.normal(0, TRANSLATION_SD_PX * kt, B), -TRANSLATION_MAX_PX * kt, TRANSLATION_MAX_PX * kt)[:, None]
    ty = np.clip(rng.normal(0, TRANSLATION_SD_PX * kt, B), -TRANSLATION_MAX_PX * kt, TRANSLATION_MAX_PX * kt)[:, None]
    dcx = cx + rng.normal(0, 25, (B, 1))
    dcy = cy + rng.normal(0, 30, (B, 1))
    dcr = rng.uniform(*CONTACT_RADIUS_PX, (B, 1))
    drot = rng.normal(0, DISTORTION_ROT_SD_DEG, (B, 1)) * DEG
    dtx = rng.normal(0, DISTORTION_SHIFT_SD_PX, (B, 1))
    dty = rng.normal(0, DISTORTION_SHIFT_SD_PX, (B, 1))
    q = np.clip(rng.normal(IMPRESSION_QUALITY_MEAN, IMPRESSION_QUALITY_SD, (B, 1)), 5, 100)
    bad = 1.0 - q / 100.0

    def fwd(px, py):
        # Cappelli plastic distortion then rigid motion, master -> impression
        d = np.maximum(np.hypot(px - dcx, py - dcy) - dcr, 0.0)
        b = 1.0 - np.exp(-((d / DISTORTION_BRAKE_PX) ** 2))
        c, s = np.cos(drot), np.sin(drot)
        rx, ry = px - dcx, py - dcy
        px = px + (dcx + c * rx - s * ry + dtx - px) * b
        py = py + (dcy + s * rx + c * ry + dty - py) * b
        c, s = np.cos(rot), np.sin(rot)
        ux, uy = px - cx, py - cy
        return cx + c * ux - s * uy + tx, cy + s * ux + c * uy + ty

    fx, fy = fwd(x, y)
    gx, gy = fwd(x + 3.0 * np.cos(a), y - 3.0 * np.sin(a))
    fa = np.arctan2(-(gy - fy), gx - fx)
    # contact ellipse in the impression frame
    ex = cx + tx + rng.normal(0, 20, (B, 1))
    ey = cy + ty + rng.normal(0, 25, (B, 1))
    ax = rng.uniform(*CONTACT_SEMI_AXES_PX[0], (B, 1))
    ay = rng.uniform(*CONTACT_SEMI_AXES_PX[1], (B, 1))

    def in_contact(px, py):
        return (((px - ex) / ax) ** 2 + ((py - ey) / ay) ** 2 < 1.0) & (px >= 0) & (px < W) & (py >= 0) & (py < H)

    M = x.shape[1]
    keep = ms["valid"] & in_contact(fx, fy)
    p_miss = (MISSING_BASE + MISSING_PER_BAD * bad) * ms["hard"] * (1.0 - BAD_REGION_SHARE)
    # extraction fails in patches (smudge, dry area, low contrast), not minutia by minutia
    R = BAD_REGIONS_MAX
    n_bad = np.minimum(rng.poisson(BAD_REGIONS_BASE + BAD_REGIONS_PER_BAD * bad[:, 0]), R)
    rb = np.sqrt(rng.random((B, R)))
    pb = rng.uniform(0, 2 * np.pi, (B, R))
    bx = (ex + ax * rb * np.cos(pb))[:, :, None]
    by = (ey + ay * rb * np.sin(pb))[:, :, None]
    brad = rng.uniform(*BAD_REGION_RADIUS_PX, (B, R))[:, :, None]
    in_bad = (((fx[:, None, :] - bx) ** 2 + (fy[:, None, :] - by) ** 2 < brad**2)
              & (np.arange(R)[None, :, None] < n_bad[:, None, None])).any(axis=1)
    p_miss = np.where(in_bad, BAD_REGION_MISSING, p_miss)
    # extractors trim the border of the print: minutiae near the contact edge are mostly lost
    rr = np.sqrt(((fx - ex) / ax) ** 2 + ((fy - ey) / ay) ** 2)
    edge = np.minimum((1.0 - rr) * np.minimum(ax, ay), np.minimum(np.minimum(fx, W - 1 - fx), np.minimum(fy, H - 1 - fy)))
    p_miss = np.where(edge < BORDER_BAND_PX, BORDER_MISSING, p_miss)
    p_miss = np.where(ms["spur"], 1.0 - PERSISTENT_SPURIOUS_SHOW, p_miss)
    keep &= rng.random((B, M)) >= p_miss
    bias = ms["bias"]
    fx = fx + bias[..., 0] + rng.normal(0, 1, (B, M)) * (JITTER_POS_PX[0] + JITTER_POS_PX[1] * bad)
    fy = fy + bias[..., 1] + rng.normal(0, 1, (B, M)) * (JITTER_POS_PX[0] + JITTER_POS_PX[1] * bad)
    fa = fa + bias[..., 2] + rng.normal(0, 1, (B, M)) * (JITTER_ANGLE_DEG[0] + JITTER_ANGLE_DEG[1] * bad) * DEG
    ftype = np.where(rng.random((B, M)) < TYPE_FLIP_IMPRESSION, 3 - ms["type"], ms["type"]).astype(np.uint8)
    fq = np.clip(q + rng.normal(0, 12, (B, M)), 1, 100)
    # spurious minutiae, uniform in the contact ellipse
    S = SPURIOUS_MAX
    ns = np.minimum(rng.poisson(SPURIOUS_BASE + SPURIOUS_PER_BAD * bad[:, 0]), S)
    # new spurious minutiae: most near the edge of the contact area, the rest anywhere in it
    near_edge = rng.random((B, S)) < SPURIOUS_EDGE_SHARE
    r = np.sqrt(np.where(near_edge, rng.uniform(0.8**2, 1.0, (B, S)), rng.random((B, S))))
    phi = rng.uniform(0, 2 * np.pi, (B, S))
    sx = ex + ax * r * np.cos(phi)
    sy = ey + ay * r * np.sin(phi)
    skeep = (np.arange(S)[None, :] < ns[:, None]) & in_contact(sx, sy)
    sa = rng.uniform(0, 2 * np.pi, (B, S))
    stype = rng.integers(1, 3, (B, S)).astype(np.uint8)
    sq = np.clip(0.6 * q + rng.normal(0, 12, (B, S)), 1, 100)
    X = np.concatenate([fx, sx], axis=1)
    Y = np.concatenate([fy, sy], axis=1)
    A = np.concatenate([fa, sa], axis=1)
    T = np.concatenate([ftype, stype], axis=1)
    Q = np.concatenate([fq, sq], axis=1)
    K = np.concatenate([keep, skeep], axis=1)
    K &= (X >= 0) & (X < W) & (Y >= 0) & (Y < H)
    # shuffle each row so that the master order does not show
    order = np.argsort(np.where(K, rng.random(K.shape), 2.0), axis=1)
    rows = np.arange(B)[:, None]
    return (X[rows, order], Y[rows, order], A[rows, order], T[rows, order], Q[rows, order], K[rows, order],
            np.rint(q[:, 0]).astype(np.uint8))


def _template_block(seed: int, block: int, n_impressions: int) -> TemplateBlock:
    B = TEMPLATE_BLOCK_FINGERS
    ms = _template_masters(seed, block)
    parts = [_template_impressions(seed, block, j, ms) for j in range(n_impressions)]
    # finger-major order: (finger, impression)
    X = np.stack([p[0] for p in parts], axis=1).reshape(B * n_impressions, -1)
    Y = np.stack([p[1] for p in parts], axis=1).reshape(B * n_impressions, -1)
    A = np.stack([p[2] for p in parts], axis=1).reshape(B * n_impressions, -1)
    T = np.stack([p[3] for p in parts], axis=1).reshape(B * n_impressions, -1)
    Q = np.stack([p[4] for p in parts], axis=1).reshape(B * n_impressions, -1)
    K = np.stack([p[5] for p in parts], axis=1).reshape(B * n_impressions, -1)
    qual = np.stack([p[6] for p in parts], axis=1).reshape(-1)
    counts = K.sum(axis=1)
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = np.zeros(int(offsets[-1]), MINUTIA_DTYPE)
    flat["x"] = X[K]
    flat["y"] = Y[K]
    flat["angle"] = np.mod(A[K], 2 * np.pi)
    flat["type"] = T[K]
    flat["quality"] = np.rint(Q[K]).astype(np.uint8)
    first = block * B
    return TemplateBlock(
        finger=np.repeat(np.arange(first, first + B, dtype=np.int64), n_impressions),
        impression=np.tile(np.arange(n_impressions, dtype=np.int16), B),
        offsets=offsets,
        minutiae=flat,
        quality=qual,
        finger_class=ms["cls"],
        master_counts=ms["count"],
        first=first,
    )


def _slice_block(tb: TemplateBlock, lo: int, hi: int, n_impressions: int) -> TemplateBlock:
    """Fingers [lo, hi) (absolute indices) of a block."""
    a = (lo - tb.first) * n_impressions
    b = (hi - tb.first) * n_impressions
    off = tb.offsets[a : b + 1]
    return TemplateBlock(
        finger=tb.finger[a:b],
        impression=tb.impression[a:b],
        offsets=off - off[0],
        minutiae=tb.minutiae[off[0] : off[-1]],
        quality=tb.quality[a:b],
        finger_class=tb.finger_class[lo - tb.first : hi - tb.first],
        master_counts=tb.master_counts[lo - tb.first : hi - tb.first],
        first=lo,
    )


def template_batch(n_fingers: int, n_impressions: int = 2, seed: int = 0, *, first_finger: int = 0) -> Iterator[TemplateBlock]:
    """Yield synthetic mated templates for fingers ``first_finger .. first_finger + n_fingers - 1``.

    Fingers are generated in blocks of :data:`TEMPLATE_BLOCK_FINGERS`; finger
    ``i`` (and its impression ``j``) depends only on ``seed``, ``i`` and ``j``.
    Each yielded :class:`TemplateBlock` holds up to that many fingers, all
    their impressions in finger-major order, as flat arrays (no per-template
    objects: enrol from ``offsets``/``minutiae`` or call ``.templates()``).

    Parameters
    ----------
    n_fingers : int
        1 .. 10,000,000.
    n_impressions : int
        Impressions per finger, 1 .. 100.
    seed : int
    first_finger : int
        0-based index of the first finger (to generate a range in parallel).
    """
    seed = _check_seed(seed)
    n_fingers = _check_count(n_fingers, "fingers", MAX_FINGERS)
    n_impressions = _check_count(n_impressions, "impressions", MAX_IMPRESSIONS)
    if isinstance(first_finger, bool) or not isinstance(first_finger, (int, np.integer)) or first_finger < 0:
        raise BiomatchError(f"first_finger must be a non-negative integer, got {first_finger!r}")
    lo, hi = int(first_finger), int(first_finger) + n_fingers
    B = TEMPLATE_BLOCK_FINGERS
    for block in range(lo // B, (hi - 1) // B + 1):
        tb = _template_block(seed, block, n_impressions)
        a, b = max(lo, block * B), min(hi, (block + 1) * B)
        yield tb if (a, b) == (block * B, (block + 1) * B) else _slice_block(tb, a, b, n_impressions)


def generate_templates(out, n_fingers: int, n_impressions: int, seed: int = 0, *, first_finger: int = 0,
                       progress: Callable[[int], None] | None = None) -> dict:
    """Write synthetic templates ``F_I.bmt`` (F, I from 1) and ``manifest.json`` into ``out``.

    Returns the manifest (per-file sha256, class and master minutiae count of each finger).
    ``progress``, if given, is called with the number of templates just written.
    """
    seed = _check_seed(seed)
    n_fingers = _check_count(n_fingers, "fingers", MAX_FINGERS)
    n_impressions = _check_count(n_impressions, "impressions", MAX_IMPRESSIONS)
    out = _prepare_out(out)
    files: dict = {}
    fingers: dict = {}
    for tb in template_batch(n_fingers, n_impressions, seed, first_finger=first_finger):
        for k in range(len(tb)):
            data = tb.template(k).to_bytes()
            name = f"{int(tb.finger[k]) + 1}_{int(tb.impression[k]) + 1}.bmt"
            _write(out / name, data)
            files[name] = {"sha256": _sha256(data), "minutiae": int(tb.offsets[k + 1] - tb.offsets[k])}
        for i in range(tb.finger_class.size):
            fingers[str(tb.first + i + 1)] = {"class": FINGER_CLASSES[int(tb.finger_class[i])],
                                               "master_minutiae": int(tb.master_counts[i])}
        if progress is not None:
            progress(len(tb))
    manifest = {
        "generator": "biomatch.synthetic",
        "generator_version": GENERATOR_VERSION,
        "kind": "templates",
        "seed": seed,
        "parameters": {"fingers": n_fingers, "first_finger": int(first_finger), "impressions": n_impressions,
                       "width_px": IMAGE_WIDTH_PX, "height_px": IMAGE_HEIGHT_PX, "ppi": PPI,
                       "block_fingers": TEMPLATE_BLOCK_FINGERS,
                       "class_probabilities": dict(zip(FINGER_CLASSES, CLASS_PROBABILITIES))},
        "fingers": fingers,
        "files": files,
    }
    _write(out / "manifest.json", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest
