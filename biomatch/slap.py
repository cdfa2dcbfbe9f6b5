"""Slap segmentation: the fingers of a four-finger or two-thumb plain impression.

A booking station takes, beside the ten rolled prints, "slaps": the four
fingers of each hand pressed at once (ANSI/NIST-ITL position 13 right, 14
left) and the thumbs (11, 12 one each, 15 both). :func:`segment_slap` finds
the fingertips (distal phalanges) in such an image and returns each as an
upright crop with its finger position, its box (rotated with the hand) and
its quality. The pipeline, in the spirit of NIST NBIS ``nfseg``:

1. ``ridge_texture``: at :data:`TEXTURE_PPI`, the energy of a band-pass at
   the ridge frequency, weighted by its share of the band-pass energy one
   octave lower; ridges score high, handwriting, printed text, pen lines and
   hole punches (wide strokes) low.
2. ``foreground``: Otsu threshold of that map, an opening that removes thin
   strokes and lines, small components dropped.
3. ``hand_tilt``: the rotation (within :data:`MAX_TILT_DEG`) at which the
   print's darkening, projected across the fingers, is most sharply peaked
   (the paper in the finger gaps, which the texture window closes in the
   foreground mask, still shows in the gray).
4. ``finger_columns``: peaks of that profile, at least a finger's width
   apart, the strongest ones kept (as many as the slap holds).
5. ``fingertip``: in each column the topmost run of foreground along the
   finger axis, cut at the crease (the first gap) or at
   :data:`MAX_TIP_LENGTH_WIDTHS` finger widths.
6. ``tip_ink``: the print's own extent in each tip, since the texture
   window blurs the mask beyond the ink and a light print's texture falls
   below the global threshold before its ink ends: the gray smoothed over
   half a ridge period, its darkening below the paper around the tip (the
   95th percentile), the part darker than half the tip's plateau darkening
   (its upper quartile; the half-amplitude point of a blurred edge lies on
   the edge itself) that overlaps the tip's mask most, holes filled.
   ``finger_axis_tilt`` re-estimates the hand tilt from the principal axis
   of each column's foreground (fingertip and phalanx below it, averaged
   weighted by size and elongation), ``box_tilt`` refines it within
   :data:`TILT_REFINE_DEG` to the angle at which the ink parts' boxes are
   smallest in total; the hand tilt is the median of that estimate and each
   finger's own axis, from its tip to its middle phalanx
   (:func:`biomatch.slap_axes.pooled_tilt`); the boxes are the ink parts'
   extents at that tilt.
7. positions: left-to-right order of the hand (right hand: index .. little;
   left hand: little .. index; both thumbs: left, right). When fewer fingers
   than expected are found, the missing ones are placed where the spacing
   leaves a gap and the tip heights fit the hand's (middle highest, little
   lowest); they are named in :attr:`SlapSegmentation.missing`.

Each crop is then extracted (:func:`biomatch.extract`) unless asked not to:
the segment carries the template and its quality (0-100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import ImageError
from .slap_axes import PAPER_PERCENTILE, ink_weight, pooled_tilt
from .template import Template

__all__ = [
    "SLAP_POSITIONS",
    "SLAP_FINGERS",
    "RotatedBox",
    "SlapSegment",
    "SlapSegmentation",
    "segment_slap",
    "segmentation_from_record",
]

#: Slap position code -> finger positions in the image's left-to-right order.
SLAP_FINGERS = {
    11: (1,),
    12: (6,),
    13: (2, 3, 4, 5),
    14: (10, 9, 8, 7),
    15: (6, 1),
}
SLAP_POSITIONS = tuple(SLAP_FINGERS)
#: How far each fingertip sits below the middle finger's, in fingertip lengths (index, middle, ring, little),
#: used to tell which finger is missing.
TIP_DROP_LENGTHS = {2: 0.15, 3: 0.0, 4: 0.1, 5: 0.5, 7: 0.15, 8: 0.0, 9: 0.1, 10: 0.5}

#: Resolution of the texture analysis (ridge period about 4.5 px there).
TEXTURE_PPI = 250.0
#: Band-pass scales at TEXTURE_PPI: ridge band between the first two, the band below between the last two.
TEXTURE_SIGMAS_PX = (0.8, 2.0, 6.0)
#: Window (Gaussian sigma) over which texture energy is averaged, at TEXTURE_PPI.
TEXTURE_WINDOW_PX = 8.0
#: Opening radius that removes strokes, text lines and gaps narrower than about twice it.
OPENING_RADIUS_IN = 0.05
#: Foreground parts shorter than this (inches, up the image) are dropped: lines of printed text.
MIN_PART_HEIGHT_IN = 0.2
#: Reach (inches) within which the foreground shaved by that bar is given back.
REGROW_IN = 0.04
#: Smallest fingertip area kept, square inches (a child's fingertip is about 0.25 x 0.35 in).
MIN_TIP_AREA_SQIN = 0.06
#: Largest hand tilt, degrees either side of upright.
MAX_TILT_DEG = 45.0
#: Step of the coarse tilt search (refined to a sixth of it), degrees, and the prior against tilt (share of the score lost at MAX_TILT_DEG).
TILT_STEP_DEG = 3.0
TILT_PRIOR = 0.15
#: Percentile of the texture map taken as the background's level (a slap is mostly paper); below MIN_TEXTURE no print.
BACKGROUND_PERCENTILE = 30.0
MIN_TEXTURE = 3.0
#: Smallest distance between two finger axes, inches (a child's fingertip is about 0.25 in wide).
MIN_FINGER_SPACING_IN = 0.3
#: A column at least this wide (inches), or this many times the other columns' median width, holds two
#: fingers when fewer than expected were found.
SPLIT_WIDTH_IN = 0.75
SPLIT_WIDTH_SHARE = 1.5
#: Typical distance between finger axes on a four-finger slap, inches (to tell a gap of a missing finger).
FINGER_SPACING_IN = 0.8
#: A fingertip is cut at this many column widths below its top when no crease gap ends it first.
MAX_TIP_LENGTH_WIDTHS = 1.6
#: Along the finger, the foreground narrowing below this share of the tip's width is the crease; a narrowing
#: below CREASE_DIP_SHARE only is a shallow crease, cut at the bottom of the dip.
CREASE_WIDTH_SHARE = 0.35
CREASE_DIP_SHARE = 0.7
#: A dip of the ridge texture summed across the finger, this share of the tip's peak deep on both sides, is a crease.
CREASE_TEXTURE_DIP = 0.25
#: ... looked for from this many column widths below the tip's top (a fingertip is longer than wide).
TEXTURE_CREASE_FROM_WIDTHS = 0.8
#: How far the foreground mask reaches beyond the ink (the texture window), inches; boxes are shrunk by it.
MASK_SPREAD_IN = 0.018
#: The fingertip starts where the foreground is this share of the column's widest part across.
TIP_START_SHARE = 0.15
#: Across the finger, the crop keeps this much (inches) beside its box; further out it is blanked.
NEIGHBOUR_BLANK_MARGIN_IN = 0.03
#: Margin added around each crop, inches.
CROP_MARGIN_IN = 0.04
#: Size limits of a slap image, inches (width, height): four fingers, two thumbs, one thumb.
MIN_SLAP_SIZE_IN = {13: (1.2, 0.6), 14: (1.2, 0.6), 15: (0.6, 0.6), 11: (0.3, 0.4), 12: (0.3, 0.4)}
MAX_SLAP_SIDE_IN = 6.0


@dataclass(frozen=True)
class RotatedBox:
    """A box in the slap image, rotated with the finger.

    Attributes
    ----------
    cx, cy : float
        Centre, pixels of the slap image (origin top-left).
    width, height : float
        Across and along the finger, pixels.
    angle_deg : float
        Tilt of the finger axis from upright, degrees, positive when the
        fingertip leans to the right of the image (clockwise).
    """

    cx: float
    cy: float
    width: float
    height: float
    angle_deg: float

    def corners(self) -> np.ndarray:
        """Corners as float64 (4, 2) x, y: top-left, top-right, bottom-right, bottom-left of the upright finger."""
        t = math.radians(self.angle_deg)
        across = np.array([math.cos(t), math.sin(t)])
        up = np.array([math.sin(t), -math.cos(t)])
        c = np.array([self.cx, self.cy])
        hw, hh = self.width / 2.0, self.height / 2.0
        return np.array([c - hw * across + hh * up, c + hw * across + hh * up,
                         c + hw * across - hh * up, c - hw * across - hh * up])

    def bounds(self) -> tuple[int, int, int, int]:
        """Axis-aligned envelope (left, top, right, bottom), whole pixels (as in Type-14 FSP)."""
        k = self.corners()
        return (int(math.floor(k[:, 0].min())), int(math.floor(k[:, 1].min())),
                int(math.ceil(k[:, 0].max())), int(math.ceil(k[:, 1].max())))

    def to_dict(self) -> dict:
        return {"cx": round(self.cx, 1), "cy": round(self.cy, 1), "width": round(self.width, 1),
                "height": round(self.height, 1), "angle_deg": round(self.angle_deg, 2)}


@dataclass(frozen=True, eq=False)
class SlapSegment:
    """One fingertip found on a slap.

    Attributes
    ----------
    position : int
        Finger position (FGP 1-10).
    box : RotatedBox
        Where it lies in the slap image.
    crop : ndarray of uint8, shape (h, w)
        The fingertip, rotated upright, at the slap's resolution.
    ppi : float
    template : Template or None
        Minutiae of the crop (crop frame), None when extraction was skipped or found no print.
    quality : int or None
        ``template.quality`` (0-100, see :func:`biomatch.extraction.print_quality`).
    """

    position: int
    box: RotatedBox
    crop: np.ndarray = field(repr=False)
    ppi: float
    template: Template | None = field(default=None, repr=False)
    quality: int | None = None

    def to_dict(self) -> dict:
        return {"position": self.position, "box": self.box.to_dict(), "bounds": list(self.box.bounds()),
                "quality": self.quality, "minutiae": None if self.template is None else len(self.template)}


@dataclass(frozen=True, eq=False)
class SlapSegmentation:
    """Result of :func:`segment_slap`.

    Attributes
    ----------
    slap_position : int
        11-15.
    segments : tuple of SlapSegment
        In the image's left-to-right order.
    missing : tuple of int
        Finger positions the slap should hold but where no fingertip was found.
    tilt_deg : float
        Hand tilt (positive: fingertips lean right).
    """

    slap_position: int
    segments: tuple
    missing: tuple
    tilt_deg: float

    def segment(self, position: int) -> SlapSegment | None:
        for s in self.segments:
            if s.position == position:
                return s
        return None

    def to_dict(self) -> dict:
        return {"slap_position": self.slap_position, "tilt_deg": round(self.tilt_deg, 2),
                "segments": [s.to_dict() for s in self.segments], "missing": list(self.missing)}


# ---------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------
def _resample(gray: np.ndarray, factor: float) -> np.ndarray:
    from scipy import ndimage as ndi

    f = int(round(1.0 / factor))
    if f >= 1 and abs(1.0 / factor - f) < 1e-3:
        h, w = gray.shape
        return gray[: h // f * f, : w // f * f].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
    return ndi.zoom(gray, factor, order=1)


def ridge_texture(gray: np.ndarray) -> np.ndarray:
    """Ridge-texture strength at TEXTURE_PPI (float32, same shape): ridge-band energy times its share over the band below."""
    from scipy import ndimage as ndi

    ink = 255.0 - gray.astype(np.float32)
    s1, s2, s3 = (ndi.gaussian_filter(ink, s) for s in TEXTURE_SIGMAS_PX)
    ridge_band = ndi.gaussian_filter((s1 - s2) ** 2, TEXTURE_WINDOW_PX)
    lower_band = ndi.gaussian_filter((s2 - s3) ** 2, TEXTURE_WINDOW_PX)
    share = ridge_band / (ridge_band + lower_band + 1e-3)
    return (np.sqrt(ridge_band) * share).astype(np.float32)


def foreground(texture: np.ndarray, name: str) -> np.ndarray:
    """Bool mask of ridge texture at TEXTURE_PPI: share of the map's high percentile, closing, opening, small parts dropped."""
    from scipy import ndimage as ndi

    high = float(np.percentile(texture, 99))
    if high <= MIN_TEXTURE:
        raise ImageError(f"{name}: no ridge texture found: not a slap")
    # halfway (geometrically) between the background's level and the prints': light prints stay in
    low = max(float(np.percentile(texture, BACKGROUND_PERCENTILE)), 0.02 * high)
    mask = texture > math.sqrt(low * high)
    mask = ndi.binary_fill_holes(mask)  # smudged or blank patches inside a print
    r = max(1, int(round(OPENING_RADIUS_IN * TEXTURE_PPI)))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    mask = ndi.binary_opening(mask, xx * xx + yy * yy <= r * r)
    # lines of printed text on a card ("RIGHT FOUR FINGERS ...") are wide but short: open with a tall bar
    bar = max(1, int(round(MIN_PART_HEIGHT_IN * TEXTURE_PPI)))
    tall = ndi.binary_opening(mask, np.ones((bar, 1), dtype=bool))
    # give back the rounded edges of prints the bar shaved (within a few pixels of what it kept)
    g = max(1, int(round(REGROW_IN * TEXTURE_PPI)))
    yy, xx = np.mgrid[-g : g + 1, -g : g + 1]
    mask &= ndi.binary_dilation(tall, xx * xx + yy * yy <= g * g)
    labels, n = ndi.label(mask)
    if n == 0:
        raise ImageError(f"{name}: no ridge texture found: not a slap")
    sizes = np.bincount(labels.ravel())
    keep = sizes >= MIN_TIP_AREA_SQIN * TEXTURE_PPI**2
    keep[0] = False
    return keep[labels]


def _across_along(shape, tilt_deg: float):
    """Coordinates (u across the fingers, v along them, growing toward the palm) of every pixel."""
    t = math.radians(tilt_deg)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    u = xx * math.cos(t) + yy * math.sin(t)
    v = -xx * math.sin(t) + yy * math.cos(t)
    return u, v


def _axis_tilt(xs: np.ndarray, ys: np.ndarray):
    """(tilt degrees of the major axis from upright, elongation 0..1) of a pixel set."""
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, 1]
    if major[1] > 0:
        major = -major  # point up
    tilt = math.degrees(math.atan2(major[0], -major[1]))
    elongation = 1.0 - math.sqrt(max(evals[0], 0.0) / max(evals[1], 1e-9))
    return tilt, elongation


def hand_tilt(mask: np.ndarray, gray: np.ndarray) -> float:
    """Tilt (degrees) at which the print's darkening falls into the clearest columns across the fingers.

    Inside the foreground's convex hull each pixel weighs its darkening
    below the paper (``gray``: the smoothed slap at TEXTURE_PPI; paper its
    :data:`PAPER_PERCENTILE`), as a share of the foreground's median
    darkening, at most 1: the paper in a finger gap weighs nothing even where
    the texture window has closed the gap in the mask. For each candidate
    tilt that weighted profile across the fingers is compared with the
    profile of the hull (sum of squares, a ratio that grows as columns
    separate and does not depend on the hull's own shape); a mild prior
    (:data:`TILT_PRIOR`) prefers the upright hand when the profiles are
    alike (sparse prints, clutter).
    """
    from skimage.morphology import convex_hull_image

    small = mask[::2, ::2]
    if small.sum() < 3:
        return 0.0
    hull = convex_hull_image(small)
    weight = ink_weight(gray, mask)[::2, ::2]
    hy, hx = np.nonzero(hull)
    w = weight[hull].astype(np.float64)

    def score(tilt):
        t = math.radians(tilt)
        hu = hx * math.cos(t) + hy * math.sin(t)
        lo = hu.min()
        profile = np.bincount((hu - lo).astype(np.int64), weights=w)
        hull_profile = np.bincount((hu - lo).astype(np.int64)).astype(np.float64)
        return np.sum(profile**2) / np.sum(hull_profile**2) * (1.0 - TILT_PRIOR * (tilt / MAX_TILT_DEG) ** 2)

    coarse = np.arange(-MAX_TILT_DEG, MAX_TILT_DEG + 1e-9, TILT_STEP_DEG)
    best = float(coarse[int(np.argmax([score(t) for t in coarse]))])
    fine = np.arange(best - TILT_STEP_DEG, best + TILT_STEP_DEG + 1e-9, TILT_STEP_DEG / 6)
    fine = fine[np.abs(fine) <= MAX_TILT_DEG]
    return float(fine[int(np.argmax([score(t) for t in fine]))])


def finger_columns(u: np.ndarray, mask: np.ndarray, expected: int) -> list:
    """Intervals (u0, u1) across the fingers, one per finger found, left to right (at most ``expected``)."""
    from scipy import ndimage as ndi
    from scipy.signal import find_peaks

    uu = u[mask]
    lo = float(np.floor(uu.min()))
    profile = np.bincount((uu - lo).astype(np.int64)).astype(np.float64)
    profile = ndi.gaussian_filter1d(profile, 0.08 * TEXTURE_PPI)
    spacing = MIN_FINGER_SPACING_IN * TEXTURE_PPI
    peaks, _ = find_peaks(profile, distance=max(1, int(spacing)), prominence=0.05 * profile.max())
    if peaks.size == 0:
        return []
    # the strongest columns, as many as the slap holds, back in left-to-right order
    order = np.argsort(-profile[peaks], kind="stable")[:expected]
    peaks = np.sort(peaks[order])
    # neighbours that overlap in the profile (fingers close together, one lower) give one wide column:
    # split the widest at its deepest interior minimum while fingers are still missing
    peaks = list(peaks)
    while len(peaks) < expected:
        bounds = _column_bounds(profile, peaks)
        widths = [b - a for a, b in bounds]
        k = int(np.argmax(widths))
        others = [w for i, w in enumerate(widths) if i != k]
        if widths[k] < min(SPLIT_WIDTH_IN * TEXTURE_PPI, SPLIT_WIDTH_SHARE * np.median(others) if others else np.inf):
            break
        a, b = bounds[k]
        lo_i, hi_i = a + int(0.3 * (b - a)), a + int(0.7 * (b - a))
        cut = lo_i + int(np.argmin(profile[lo_i:hi_i]))
        left_peak = a + int(np.argmax(profile[a:cut]))
        right_peak = cut + int(np.argmax(profile[cut:b + 1]))
        peaks[k : k + 1] = [left_peak, right_peak]
    return [(lo + float(a), lo + float(b) + 1.0) for a, b in _column_bounds(profile, peaks)]


def _texture_crease(profile: np.ndarray, start: int, end: int, reach: int) -> int:
    """First row in start..end where the texture profile dips by CREASE_TEXTURE_DIP of its peak on both sides; else end."""
    from scipy import ndimage as ndi

    p = ndi.gaussian_filter1d(profile.astype(np.float64), 2.0)
    peak = float(p[: max(start, 1)].max()) if start > 0 else float(p.max())
    for i in range(max(start, 1), min(end, len(p) - 1)):
        if p[i] <= p[i - 1] and p[i] <= p[i + 1]:
            above = float(p[max(0, i - reach) : i].max())
            below = float(p[i + 1 : i + 1 + reach].max()) if i + 1 < len(p) else 0.0
            if min(above, below) - p[i] >= CREASE_TEXTURE_DIP * peak:
                return i
    return end


def _column_bounds(profile: np.ndarray, peaks: list) -> list:
    """(start, end) bins of each peak's column: from the minimum before it to the minimum after it, trimmed to 5 % of the peak."""
    out = []
    for i, p in enumerate(peaks):
        left = 0 if i == 0 else peaks[i - 1] + int(np.argmin(profile[peaks[i - 1] : p + 1]))
        right = len(profile) - 1 if i == len(peaks) - 1 else p + int(np.argmin(profile[p : peaks[i + 1] + 1]))
        seg = np.arange(left, right + 1)
        inside = seg[profile[seg] > 0.05 * profile[p]]
        out.append((int(inside.min()), int(inside.max())))
    return out


def fingertip(u: np.ndarray, v: np.ndarray, mask: np.ndarray, column: tuple, texture: np.ndarray | None = None):
    """(u0, u1, v0, v1) of the topmost fingertip in a column, or None when it is too small.

    The crease ends the tip: where the foreground narrows, or, when the mask
    bridges it, a clear dip of the ridge texture summed across the column."""
    u0, u1 = column
    sel = mask & (u >= u0) & (u < u1)
    vv = v[sel]
    uu = u[sel]
    if vv.size < MIN_TIP_AREA_SQIN * TEXTURE_PPI**2:
        return None
    vlo = float(np.floor(vv.min()))
    rows = (vv - vlo).astype(np.int64)
    width = np.bincount(rows).astype(np.float64)  # foreground width at each step along the finger
    # the tip starts where the foreground is a fair share of a finger wide (not at a pen stroke above it)
    top = int(np.argmax(width >= TIP_START_SHARE * width.max()))
    col_width = u1 - u0
    max_len = int(MAX_TIP_LENGTH_WIDTHS * col_width)
    # the tip's width: the widest part of its first finger-width of length
    tip_width = float(width[top : top + max(2, int(col_width))].max())
    end = min(len(width), top + max_len)
    # the crease: past half a finger width, the first place where the foreground narrows
    # below CREASE_WIDTH_SHARE of the tip's width, or else the bottom of the first dip
    start = top + int(0.5 * col_width)
    if texture is not None:
        crease_from = top + int(TEXTURE_CREASE_FROM_WIDTHS * col_width)
        end = min(end, _texture_crease(np.bincount(rows, weights=texture[sel]), crease_from, end, int(0.5 * col_width)))
    below = np.nonzero(width[start:end] < CREASE_WIDTH_SHARE * tip_width)[0]
    if below.size:
        end = start + int(below[0])
    else:
        dip = np.nonzero(width[start:end] < CREASE_DIP_SHARE * tip_width)[0]
        if dip.size:
            i = start + int(dip[0])
            while i + 1 < end and width[i + 1] <= width[i]:
                i += 1
            end = i
    in_tip = (rows >= top) & (rows < end)
    if int(in_tip.sum()) < MIN_TIP_AREA_SQIN * TEXTURE_PPI**2:
        return None
    ut = uu[in_tip]
    spread = MASK_SPREAD_IN * TEXTURE_PPI  # the texture window widens the mask beyond the ink
    return (float(np.percentile(ut, 0.5)) + spread, float(np.percentile(ut, 99.5)) + 1.0 - spread,
            vlo + top + spread, vlo + end - spread * (end == len(width) or not below.size))


def _assign_positions(slap: int, centres: list, tops: list, heights: list, missing_given: tuple) -> list:
    """Finger positions for the fingertips found (left to right), placing missing fingers where they fit best.

    Each way of leaving fingers out is scored by how far the spacing of the
    found tips is from the smallest spacing found (:data:`FINGER_SPACING_IN` when only one tip was) per slot and how far
    their tip heights are from the hand's (:data:`TIP_DROP_LENGTHS`), in
    fingertip lengths.
    """
    from itertools import combinations

    fingers = [p for p in SLAP_FINGERS[slap] if p not in missing_given]
    k = len(centres)
    if k >= len(fingers):
        return fingers[:k]
    free = [i for i, p in enumerate(SLAP_FINGERS[slap]) if p not in missing_given]
    spacings = np.diff(centres)
    # one slot's spacing: the smallest found (a larger one may span the missing finger)
    spacing = float(np.min(spacings)) if spacings.size else FINGER_SPACING_IN * TEXTURE_PPI
    length = float(np.median(heights))
    best, best_cost = None, math.inf
    for chosen in combinations(free, k):
        cost = 0.0
        for a in range(k - 1):
            cost += abs((centres[a + 1] - centres[a]) - (chosen[a + 1] - chosen[a]) * spacing) / spacing
        residual = np.array([tops[a] - TIP_DROP_LENGTHS.get(SLAP_FINGERS[slap][c], 0.0) * length
                             for a, c in enumerate(chosen)])
        cost += float(np.abs(residual - np.median(residual)).sum()) / length
        if cost < best_cost - 1e-9:
            best, best_cost = chosen, cost
    return [SLAP_FINGERS[slap][c] for c in best]


def _crop(pixels: np.ndarray, box: RotatedBox, margin_px: float, ppi: float) -> np.ndarray:
    """The box (plus margin) resampled upright from the slap, white outside the image and beside the box."""
    from scipy import ndimage as ndi

    w = int(round(box.width + 2 * margin_px))
    h = int(round(box.height + 2 * margin_px))
    t = math.radians(box.angle_deg)
    across = np.array([math.cos(t), math.sin(t)])
    down = np.array([-math.sin(t), math.cos(t)])
    jj, ii = np.mgrid[0:h, 0:w].astype(np.float64)
    a = ii - (w - 1) / 2.0
    d = jj - (h - 1) / 2.0
    x = box.cx + a * across[0] + d * down[0]
    y = box.cy + a * across[1] + d * down[1]
    out = ndi.map_coordinates(pixels.astype(np.float32), [y, x], order=1, mode="constant", cval=255.0)
    # beside the box lies the neighbouring finger: blank it, so that its minutiae do not join this crop's
    out[:, np.abs(a[0]) > box.width / 2.0 + NEIGHBOUR_BLANK_MARGIN_IN * ppi] = 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _check_inputs(image, position, ppi, name: str):
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or int(position) not in SLAP_FINGERS:
        raise ImageError(f"{name}: slap position {position!r} is not 11-15 (right/left thumb, right/left four, both thumbs)")
    pixels = np.asarray(image)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ImageError(f"{name}: expected a 2-D uint8 gray image, got {pixels.dtype} of shape {pixels.shape}")
    try:
        ppi = float(ppi)
    except (TypeError, ValueError):
        raise ImageError(f"{name}: ppi {ppi!r} is not a number") from None
    if not 250.0 <= ppi <= 2000.0:
        raise ImageError(f"{name}: resolution {ppi:g} ppi outside 250-2000 ppi")
    h, w = pixels.shape
    min_w, min_h = MIN_SLAP_SIZE_IN[int(position)]
    if w < min_w * ppi or h < min_h * ppi:
        raise ImageError(f"{name}: {w}x{h} px at {ppi:g} ppi is too small for slap position {int(position)} "
                         f"(at least {min_w:g} x {min_h:g} in)")
    if max(w, h) > MAX_SLAP_SIDE_IN * ppi:
        raise ImageError(f"{name}: {w}x{h} px at {ppi:g} ppi is larger than a slap ({MAX_SLAP_SIDE_IN:g} in a side at most)")
    return pixels, int(position), ppi


def segment_slap(image, position: int, ppi: float = 500.0, *, missing=(), extract: bool = True,
                 name: str = "slap") -> SlapSegmentation:
    """Find the fingertips on a slap image.

    Parameters
    ----------
    image : ndarray of uint8, shape (h, w), or a TransactionImage
        The slap, ridges dark. A TransactionImage gives its own pixels,
        position and resolution (``position``/``ppi`` are then ignored).
    position : int
        Slap position code: 13 right four fingers, 14 left four, 15 both
        thumbs, 11 / 12 right / left plain thumb.
    ppi : float
        Resolution of the image.
    missing : iterable of int
        Finger positions known to be absent (amputated, bandaged): they are
        not looked for.
    extract : bool
        Extract minutiae from each crop (``SlapSegment.template``/``quality``).
    name : str
        Input name for messages.

    Returns
    -------
    SlapSegmentation
        Fewer segments than the slap holds when fingers are missing; the
        missing positions are named.

    Raises
    ------
    ImageError
        Wrong position code or resolution, an image too small or too large
        for that slap, or no fingertip found (not a slap).
    """
    if hasattr(image, "pixels") and hasattr(image, "positions"):
        name = f"{name} (record {image.record_type}.{image.idc})"
        position, ppi, image = image.position, image.ppi, image.pixels
        if image is None:
            raise ImageError(f"{name}: image not decoded")
    pixels, position, ppi = _check_inputs(image, position, ppi, name)
    missing_given = tuple(int(p) for p in missing)
    for p in missing_given:
        if p not in SLAP_FINGERS[position]:
            raise ImageError(f"{name}: missing finger {p} is not on slap {position} (holds {SLAP_FINGERS[position]})")
    expected = len(SLAP_FINGERS[position]) - len(set(missing_given))

    scale = TEXTURE_PPI / ppi
    small = _resample(pixels.astype(np.float32), scale)
    texture = ridge_texture(small)
    mask = foreground(texture, name)
    gray = _smoothed(small)
    tilt = hand_tilt(mask, gray) if expected > 1 else _single_tilt(mask)
    u, v = _across_along(mask.shape, tilt)
    columns = finger_columns(u, mask, max(expected, 0)) if expected > 0 else []
    tips_raw = [fingertip(u, v, mask, c, texture) for c in columns]
    tips = [t for t in tips_raw if t is not None]
    if not tips and expected > 0:
        raise ImageError(f"{name}: no fingertip found on slap position {position}: not a slap")

    parts = [tip_ink(gray, u, v, mask, c, tip) for c, tip in zip(columns, tips_raw) if tip is not None]
    tilt = pooled_tilt(ink_weight(gray, mask), parts, tilt, box_tilt(parts, finger_axis_tilt(u, mask, columns, tilt)))
    tips = [part_box(part, tilt) for part in parts]
    t = math.radians(tilt)
    boxes = []
    for u0, u1, v0, v1 in tips:
        uc, vc = (u0 + u1) / 2.0, (v0 + v1) / 2.0
        # back from (u, v) at TEXTURE_PPI to x, y in the slap (pixel centres)
        xs = uc * math.cos(t) - vc * math.sin(t)
        ys = uc * math.sin(t) + vc * math.cos(t)
        boxes.append(RotatedBox(cx=(xs + 0.5) / scale - 0.5, cy=(ys + 0.5) / scale - 0.5,
                                width=(u1 - u0) / scale, height=(v1 - v0) / scale, angle_deg=tilt))
    centres = [(b0 + b1) / 2.0 for b0, b1, _, _ in tips]
    tops = [tv for _, _, tv, _ in tips]
    positions = _assign_positions(position, centres, tops, [v1 - v0 for _, _, v0, v1 in tips], missing_given)

    segments = []
    margin = CROP_MARGIN_IN * ppi
    for pos, box in zip(positions, boxes):
        crop = _crop(pixels, box, margin, ppi)
        template, quality = None, None
        if extract:
            template, quality = _extract_crop(crop, ppi, pos)
        segments.append(SlapSegment(position=pos, box=box, crop=crop, ppi=ppi, template=template, quality=quality))
    found = {s.position for s in segments}
    missing_out = tuple(p for p in SLAP_FINGERS[position] if p not in found)
    return SlapSegmentation(slap_position=position, segments=tuple(segments), missing=missing_out, tilt_deg=tilt)


def segmentation_from_record(image, *, extract: bool = True) -> SlapSegmentation:
    """The SlapSegmentation a Type-14 slap record states (14.021 FSP / 14.025 ASEG in ``image.segments``).

    Each polygon becomes the box along its first edge (the top edge of an
    upright finger); crops are cut and extracted as :func:`segment_slap` does.
    """

    segments = []
    for pos, polygon in image.segments:
        poly = np.asarray(polygon, dtype=np.float64)
        # the box along the polygon's first edge (top edge of an upright finger)
        dx, dy = poly[1] - poly[0]
        angle = math.degrees(math.atan2(dy, dx)) if len(poly) >= 2 and (dx or dy) else 0.0
        t = math.radians(angle)
        across = poly @ np.array([math.cos(t), math.sin(t)])
        along = poly @ np.array([-math.sin(t), math.cos(t)])
        uc, vc = (across.min() + across.max()) / 2, (along.min() + along.max()) / 2
        box = RotatedBox(cx=uc * math.cos(t) - vc * math.sin(t), cy=uc * math.sin(t) + vc * math.cos(t),
                         width=float(across.max() - across.min()), height=float(along.max() - along.min()),
                         angle_deg=angle)
        crop = _crop(image.pixels, box, CROP_MARGIN_IN * image.ppi, image.ppi)  # the same margin segment_slap gives
        template, quality = _extract_crop(crop, image.ppi, int(pos)) if extract else (None, None)
        segments.append(SlapSegment(position=int(pos), box=box, crop=crop, ppi=image.ppi, template=template,
                                    quality=quality))
    found = {s.position for s in segments}
    missing = tuple(p for p in SLAP_FINGERS.get(image.position, ()) if p not in found)
    return SlapSegmentation(slap_position=image.position, segments=tuple(segments), missing=missing, tilt_deg=0.0)


def _single_tilt(mask: np.ndarray) -> float:
    """Tilt of a single print: its principal axis (within MAX_TILT_DEG of upright)."""
    ys, xs = np.nonzero(mask)
    if xs.size < 3:
        return 0.0
    return float(np.clip(_axis_tilt(xs, ys)[0], -MAX_TILT_DEG, MAX_TILT_DEG))


def _extract_crop(crop: np.ndarray, ppi: float, position: int):
    from .extraction import extract

    try:
        template = extract(crop, ppi=ppi, position=position)
    except ImageError:
        return None, 0
    return template, int(template.quality)


#: Edge of a print: where its smoothed darkening below the paper falls to this share of the print's plateau, the
#: PLATEAU_PERCENTILE of the tip's darkening (the median is lowered by the contact's fading rim and light patches).
EDGE_DARKENING_SHARE = 0.5
PLATEAU_PERCENTILE = 75.0
#: Smoothing (Gaussian sigma, pixels at TEXTURE_PPI) of the gray before the darkening is measured: about half a ridge period.
EDGE_SMOOTH_PX = 2.0


def _smoothed(small):
    from scipy import ndimage as ndi

    return ndi.gaussian_filter(small, EDGE_SMOOTH_PX)


#: The fingers' axis estimate is refined within this many degrees, in steps of TILT_REFINE_STEP_DEG.
TILT_REFINE_DEG = 1.0
TILT_REFINE_STEP_DEG = 0.25


def finger_axis_tilt(u: np.ndarray, mask: np.ndarray, columns: list, tilt: float) -> float:
    """The hand tilt from the fingers' own axes: the principal axis of each column's foreground (fingertip and
    the phalanx below it, a long blob whose axis a fingertip's own shape barely moves), averaged over the
    columns weighted by pixel count times elongation (a round blob says little about its direction);
    ``tilt`` (the column estimate) when no column is large enough."""
    angles, weights = [], []
    for u0, u1 in columns:
        ys, xs = np.nonzero(mask & (u >= u0) & (u < u1))
        if xs.size < MIN_TIP_AREA_SQIN * TEXTURE_PPI**2:
            continue
        angle, elongation = _axis_tilt(xs, ys)
        angles.append(angle)
        weights.append(elongation * xs.size)
    if not angles or sum(weights) <= 0:
        return tilt
    return float(np.clip(np.average(angles, weights=weights), -MAX_TILT_DEG, MAX_TILT_DEG))


def box_tilt(parts, tilt):
    """The tilt (near ``tilt``) at which the tips' boxes along the fingers are smallest in total (a box along a
    finger's axis is its tightest)."""
    xys = [p for p in parts if p is not None]
    if not xys:
        return tilt
    best, best_area = tilt, math.inf
    for cand in np.arange(tilt - TILT_REFINE_DEG, tilt + TILT_REFINE_DEG + 1e-9, TILT_REFINE_STEP_DEG):
        if abs(cand) > MAX_TILT_DEG:
            continue
        t = math.radians(cand)
        area = 0.0
        for xs, ys in xys:
            uu = xs * math.cos(t) + ys * math.sin(t)
            vv = -xs * math.sin(t) + ys * math.cos(t)
            area += (uu.max() - uu.min() + 1) * (vv.max() - vv.min() + 1)
        if area < best_area - 1e-9:
            best, best_area = float(cand), area
    return best


def part_box(part, tilt):
    xs, ys = part
    t = math.radians(tilt)
    uu = xs * math.cos(t) + ys * math.sin(t)
    vv = -xs * math.sin(t) + ys * math.cos(t)
    # each pixel (centre at its coordinates) spans half a pixel either side
    return (float(uu.min()) - 0.5, float(uu.max()) + 0.5, float(vv.min()) - 0.5, float(vv.max()) + 0.5)


def tip_ink(gray, u, v, mask, column, tip):
    """Pixels (xs, ys at TEXTURE_PPI) of the print's ink in a coarse tip: its half-darkening area."""
    from scipy import ndimage as ndi

    u0, u1, v0, v1 = tip
    reach = MASK_SPREAD_IN * TEXTURE_PPI * 2 + 2
    c0, c1 = column
    region = (u >= max(c0, u0 - reach)) & (u < min(c1, u1 + reach)) & (v >= v0 - reach) & (v < v1 + reach)
    core = region & mask
    ys, xs = np.nonzero(core)
    fallback = (xs.astype(np.float64), ys.astype(np.float64))
    if core.sum() < MIN_TIP_AREA_SQIN * TEXTURE_PPI**2:
        return fallback
    paper = float(np.percentile(gray[region], PAPER_PERCENTILE))
    dark = paper - gray
    level = float(np.percentile(dark[core], PLATEAU_PERCENTILE))
    if level <= 0:
        return fallback
    ink = region & (dark >= EDGE_DARKENING_SHARE * level)
    labels, n = ndi.label(ink)
    if n == 0:
        return fallback
    overlap = np.bincount(labels[core], minlength=n + 1)
    overlap[0] = 0
    part = ndi.binary_fill_holes(labels == int(np.argmax(overlap)))
    if part.sum() < MIN_TIP_AREA_SQIN * TEXTURE_PPI**2:
        return fallback
    ys, xs = np.nonzero(part)
    return xs.astype(np.float64), ys.astype(np.float64)
