"""Synthetic slaps: four fingers (or two thumbs) pressed at once, in hand layout, with ground-truth boxes.

Built on the public image generator (:func:`biomatch.synthetic.make_finger`,
:func:`biomatch.synthetic.make_impression`): every finger of a synthetic
subject is a master finger, its slap fingertip one impression of it (turned
upright by the impression's own drawn rotation, then by the hand's tilt and
the finger's splay), pasted where a hand puts it: right four fingers index to
little from left to right, left four little to index, both thumbs left then
right; the middle finger's tip highest, the little finger's lowest. Below
each fingertip, after a crease gap, a fainter middle phalanx (part of another
impression of the same finger) makes the segmentation tell tips from lower
joints, as on real slaps.

The ground truth of each fingertip is its :class:`~biomatch.slap.RotatedBox`:
the tight box, along the finger's axis, of the print's contact area as the
generator drew it (``Impression.contact`` at least
:data:`TRUTH_CONTACT_MIN`, the level at which the generator's own
ground-truth minutiae count; holes filled). Only the darkening inside the
contact area (and a soft rim of :data:`CONTACT_RIM_PX`) is pasted, so the
slap's paper is clean: an impression's own background (its smooth mottle and
sensor noise) is not part of the print. :func:`compose_slap`, which has no
contact map for real fingertip images, takes the ink's extent instead (gray
darkening above :data:`INK_DARKENING_GRAY` once smoothed).

:func:`rolled_print` gives another impression of the same finger, for
constructing ten-print transactions whose rolled boxes can be checked
against the slaps.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import BiomatchError
from .slap import SLAP_FINGERS, RotatedBox
from .synthetic import make_finger, make_impression

__all__ = ["SyntheticSlap", "make_slap", "compose_slap", "rolled_print", "finger_master"]

#: Resolution of every synthetic image.
PPI = 500.0
#: Impression indices (mod 8 protocol of biomatch.synthetic) used for slap tips, middle phalanges, rolled prints.
SLAP_IMPRESSION = 0
PHALANX_IMPRESSION = 9
ROLLED_IMPRESSION = 8
#: Tip height of each finger below the middle finger's, in finger heights (index, middle, ring, little; thumbs).
TIP_DROP_HEIGHTS = {2: 0.12, 3: 0.0, 4: 0.07, 5: 0.38, 7: 0.12, 8: 0.0, 9: 0.07, 10: 0.38, 1: 0.0, 6: 0.0}
#: Contact strength (0-1) from which a pixel is part of the print: the truth box is the extent of this area.
TRUTH_CONTACT_MIN = 0.5
#: Darkening is pasted where the contact is above zero, fading out over this many pixels beyond.
CONTACT_RIM_PX = 3
#: Pixels kept around the truth box in a pasted patch (the contact's soft edge below TRUTH_CONTACT_MIN).
PATCH_MARGIN_PX = 8
#: Real fingertip images (compose_slap): smoothed darkening (gray levels) above which a pixel is ink.
INK_DARKENING_GRAY = 12.0
#: Middle phalanx: share of the fingertip's height kept, contrast relative to the tip.
PHALANX_HEIGHT_SHARE = 0.55
PHALANX_CONTRAST = 0.55
#: Background gray of the slap and its noise (gray levels).
BACKGROUND_GRAY = 225.0
NOISE_SD_GRAY = 4.0
#: Margin around the hand, pixels.
MARGIN_PX = 40


@dataclass(frozen=True, eq=False)
class SyntheticSlap:
    """A synthetic slap image and its truth.

    Attributes
    ----------
    pixels : ndarray of uint8, shape (h, w)
    position : int
        Slap position code (13, 14 or 15).
    ppi : float
    boxes : dict of int to RotatedBox
        Finger position -> true fingertip box.
    subject, seed : int
        Whose fingers these are (see :func:`finger_master`).
    tilt_deg : float
    """

    pixels: np.ndarray = field(repr=False)
    position: int
    ppi: float
    boxes: dict
    subject: int
    seed: int
    tilt_deg: float


@functools.lru_cache(maxsize=64)
def finger_master(subject: int, finger: int, seed: int = 0, size: tuple = (300, 400)):
    """The master finger of ``finger`` (FGP 1-10) of synthetic ``subject`` (cached; same for the same arguments)."""
    if not 1 <= int(finger) <= 10:
        raise BiomatchError(f"finger position {finger!r} is not 1-10")
    if int(subject) < 0:
        raise BiomatchError(f"subject {subject!r} must be a non-negative integer")
    return make_finger(int(subject) * 10 + int(finger) - 1, seed, width=int(size[0]), height=int(size[1]))


def _darkening(pixels: np.ndarray, contact: np.ndarray | None = None) -> np.ndarray:
    """Darkening below the paper (float32), kept only on the print: inside ``contact`` (> 0, with a soft
    rim of CONTACT_RIM_PX) when given, else where the smoothed darkening is ink (and its rim)."""
    from scipy import ndimage as ndi

    pixels = np.asarray(pixels, dtype=np.float32)
    background = ndi.maximum_filter(ndi.gaussian_filter(pixels, 2.0), 25)  # the paper between ridges
    dark = np.clip(background - pixels, 0.0, 255.0)
    if contact is not None:
        area = ndi.binary_dilation(contact > 0.0, iterations=CONTACT_RIM_PX)
        return dark * ndi.gaussian_filter(area.astype(np.float32), CONTACT_RIM_PX / 2.0)
    ink = ndi.binary_fill_holes(ndi.gaussian_filter(dark, 4.0) > INK_DARKENING_GRAY)
    dark *= ndi.gaussian_filter(ndi.binary_dilation(ink, iterations=4).astype(np.float32), 1.5)
    return dark


def _upright(impression) -> tuple:
    """(darkening, contact) of an impression, both turned back by its drawn rotation."""
    from scipy import ndimage as ndi

    angle = float(impression.params.get("rotation_deg", 0.0))
    # make_impression turns the master clockwise (as displayed) by rotation_deg; ndi.rotate turns counter-clockwise
    dark = ndi.rotate(_darkening(impression.pixels, impression.contact), angle, reshape=True, order=1,
                      mode="constant", cval=0.0)
    contact = ndi.rotate(impression.contact, angle, reshape=True, order=1, mode="constant", cval=0.0)
    return dark, contact


def _extent(area: np.ndarray, what: str):
    """(x0, y0, x1, y1) of the largest part of a bool mask, holes filled."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(ndi.binary_fill_holes(area))
    if n == 0:
        raise BiomatchError(f"synthetic impression holds no {what}")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    ys, xs = np.nonzero(labels == int(np.argmax(sizes)))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _ink_extent(dark: np.ndarray):
    from scipy import ndimage as ndi

    return _extent(ndi.gaussian_filter(dark, 4.0) > INK_DARKENING_GRAY, "ink")


def _patch(dark: np.ndarray, box, margin: int) -> np.ndarray:
    """dark[y0-margin:y1+margin, x0-margin:x1+margin] of box (x0, y0, x1, y1), zero beyond the array."""
    x0, y0, x1, y1 = box
    out = np.zeros((y1 - y0 + 2 * margin, x1 - x0 + 2 * margin), dtype=np.float32)
    h, w = dark.shape
    sy0, sx0 = max(0, y0 - margin), max(0, x0 - margin)
    sy1, sx1 = min(h, y1 + margin), min(w, x1 + margin)
    out[sy0 - (y0 - margin) : sy1 - (y0 - margin), sx0 - (x0 - margin) : sx1 - (x0 - margin)] = dark[sy0:sy1, sx0:sx1]
    return out


def _paste(canvas: np.ndarray, dark: np.ndarray, centre_xy, angle_deg: float) -> None:
    """Add ``dark`` (upright patch) onto canvas, its centre at centre_xy, rotated by angle_deg (clockwise)."""
    from scipy import ndimage as ndi

    h, w = canvas.shape
    ph, pw = dark.shape
    t = math.radians(angle_deg)
    cos, sin = math.cos(t), math.sin(t)
    half = int(math.ceil(math.hypot(ph, pw) / 2)) + 2
    x0, y0 = int(centre_xy[0]) - half, int(centre_xy[1]) - half
    yy, xx = np.mgrid[max(0, y0) : min(h, y0 + 2 * half), max(0, x0) : min(w, x0 + 2 * half)].astype(np.float64)
    dx, dy = xx - centre_xy[0], yy - centre_xy[1]
    # canvas offset -> patch frame: across = d . (cos, sin), down = d . (-sin, cos)
    a = dx * cos + dy * sin + (pw - 1) / 2.0
    d = -dx * sin + dy * cos + (ph - 1) / 2.0
    values = ndi.map_coordinates(dark, [d, a], order=1, mode="constant", cval=0.0)
    region = canvas[max(0, y0) : min(h, y0 + 2 * half), max(0, x0) : min(w, x0 + 2 * half)]
    np.maximum(region, values, out=region)


def _rotate_point(x, y, cx, cy, angle_deg):
    t = math.radians(angle_deg)
    dx, dy = x - cx, y - cy
    return cx + dx * math.cos(t) - dy * math.sin(t), cy + dx * math.sin(t) + dy * math.cos(t)


def make_slap(subject: int = 0, position: int = 13, seed: int = 0, *, tilt_deg: float = 0.0, gap_px: float = 40.0,
              splay_deg=None, missing=(), finger_size: tuple = (300, 400), phalanges: bool = True,
              noise_seed: int | None = None) -> SyntheticSlap:
    """Draw a synthetic slap of ``subject``'s fingers.

    Parameters
    ----------
    subject : int
        Synthetic subject (its finger ``p`` is master ``subject*10 + p-1`` of ``seed``).
    position : int
        13 right four, 14 left four, 15 both thumbs.
    tilt_deg : float
        Hand tilt from upright, degrees, positive when the fingertips lean right.
    gap_px : float
        Space between neighbouring fingertips (pixels at 500 ppi), may be negative (touching).
    splay_deg : sequence of float, optional
        Extra tilt of each finger, left to right (default none).
    missing : iterable of int
        Finger positions left off (amputated).
    finger_size : (int, int)
        Width and height of each master finger, pixels (at least 160).
    phalanges : bool
        Draw a middle phalanx below each tip.

    Returns
    -------
    SyntheticSlap
    """
    if position not in (13, 14, 15):
        raise BiomatchError(f"synthetic slap position {position!r} must be 13, 14 or 15")
    fingers = SLAP_FINGERS[position]
    missing = {int(p) for p in missing}
    if splay_deg is None:
        splay_deg = [0.0] * len(fingers)
    if len(splay_deg) != len(fingers):
        raise BiomatchError(f"splay_deg: {len(splay_deg)} values for {len(fingers)} fingers")
    tips, phalanx = {}, {}
    for p in fingers:
        master = finger_master(subject, p, seed, tuple(finger_size))
        dark, contact = _upright(make_impression(master, SLAP_IMPRESSION))
        tips[p] = _patch(dark, _extent(contact >= TRUTH_CONTACT_MIN, "contact area"), PATCH_MARGIN_PX)
        if phalanges:
            lower, lower_contact = _upright(make_impression(master, PHALANX_IMPRESSION))
            lx0, ly0, lx1, ly1 = _extent(lower_contact >= TRUTH_CONTACT_MIN, "contact area")
            keep = int((ly1 - ly0) * PHALANX_HEIGHT_SHARE)
            mid = (ly0 + ly1) // 2
            phalanx[p] = lower[mid - keep // 2 : mid + keep // 2, lx0:lx1] * PHALANX_CONTRAST

    pixels, boxes = _lay_out(tips, phalanx, position, float(finger_size[1]), tilt_deg, gap_px, splay_deg, missing,
                             PATCH_MARGIN_PX, np.random.default_rng([int(seed), int(subject), int(position),
                                                    0 if noise_seed is None else int(noise_seed) + 1]))
    return SyntheticSlap(pixels=pixels, position=position, ppi=PPI, boxes=boxes, subject=int(subject), seed=int(seed),
                         tilt_deg=float(tilt_deg))


def _lay_out(tips: dict, phalanx: dict, position: int, fh: float, tilt_deg: float, gap_px: float, splay_deg, missing,
             margin: int, rng) -> tuple:
    """Paste upright darkening patches in hand layout; (uint8 slap, finger position -> true tip box).

    Each tip patch holds its truth box centred, ``margin`` pixels inside the patch on every side."""
    fingers = SLAP_FINGERS[position]
    # layout of the upright hand: finger axes left to right (gaps between the truth boxes), tips at their heights
    widths = [tips[p].shape[1] - 2 * margin for p in fingers]
    gap = float(gap_px) if position != 15 else float(gap_px) + 0.4 * fh
    xs, x = [], 0.0
    for w in widths:
        xs.append(x + w / 2.0)
        x += w + gap
    hand_w = x - gap
    placed = []  # (position, centre x, centre y, patch, angle, is_tip)
    for i, p in enumerate(fingers):
        if p in missing:
            continue
        tip = tips[p]
        tip_h = tip.shape[0] - 2 * margin
        top = TIP_DROP_HEIGHTS[p] * fh
        cy = top + tip_h / 2.0
        placed.append((p, xs[i], cy, tip, splay_deg[i], True))
        if p in phalanx:
            crease = 0.12 * fh
            ph = phalanx[p]
            # the phalanx continues along the finger's own axis (splay) below the crease
            dist = tip_h / 2.0 + crease + ph.shape[0] / 2.0
            t = math.radians(splay_deg[i])
            placed.append((p, xs[i] - dist * math.sin(t), cy + dist * math.cos(t), ph, splay_deg[i], False))
    hand_cx, hand_cy = hand_w / 2.0, fh
    # rotate the layout by the hand tilt about the hand centre, then fit a canvas around it
    rotated = []
    for p, cx, cy, patch, splay, is_tip in placed:
        rx, ry = _rotate_point(cx, cy, hand_cx, hand_cy, tilt_deg)
        rotated.append((p, rx, ry, patch, splay + tilt_deg, is_tip))
    corners = []
    for p, cx, cy, patch, angle, _ in rotated:
        box = RotatedBox(cx, cy, patch.shape[1], patch.shape[0], angle)
        corners.append(box.corners())
    corners = np.concatenate(corners)
    ox, oy = corners[:, 0].min() - MARGIN_PX, corners[:, 1].min() - MARGIN_PX
    w = int(math.ceil(corners[:, 0].max() - ox + MARGIN_PX))
    h = int(math.ceil(corners[:, 1].max() - oy + MARGIN_PX))
    dark_canvas = np.zeros((h, w), dtype=np.float32)
    boxes = {}
    for p, cx, cy, patch, angle, is_tip in rotated:
        cx, cy = cx - ox, cy - oy
        _paste(dark_canvas, patch, (cx, cy), angle)
        if is_tip:
            boxes[p] = RotatedBox(cx, cy, float(patch.shape[1] - 2 * margin), float(patch.shape[0] - 2 * margin),
                                  float(angle))
    gray = BACKGROUND_GRAY - dark_canvas + NOISE_SD_GRAY * rng.standard_normal((h, w)).astype(np.float32)
    pixels = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return pixels, boxes


def compose_slap(tips: dict, position: int, *, tilt_deg: float = 0.0, gap_px: float = 40.0, seed: int = 0) -> tuple:
    """A slap made of given fingertip images (e.g. real plain impressions), in hand layout.

    Parameters
    ----------
    tips : dict of int to ndarray of uint8
        Finger position -> an upright fingertip image (ridges dark, light background), all at one resolution.
    position : int
        13, 14 or 15; ``tips`` must hold every finger of that slap.

    Returns
    -------
    (ndarray of uint8, dict of int to RotatedBox)
        The slap and each fingertip's true box (the ink of its image).
    """
    if position not in (13, 14, 15):
        raise BiomatchError(f"slap position {position!r} must be 13, 14 or 15")
    patches = {}
    for p in SLAP_FINGERS[position]:
        if p not in tips:
            raise BiomatchError(f"compose_slap: no fingertip image for finger {p} of slap {position}")
        dark = _darkening(tips[p])
        x0, y0, x1, y1 = _ink_extent(dark)
        patches[p] = dark[y0:y1, x0:x1]
    fh = float(np.median([t.shape[0] for t in patches.values()])) * 1.1
    return _lay_out(patches, {}, position, fh, tilt_deg, gap_px, [0.0] * len(SLAP_FINGERS[position]), set(), 0,
                    np.random.default_rng([int(seed), int(position)]))


def rolled_print(subject: int, finger: int, seed: int = 0, *, finger_size: tuple = (300, 400),
                 impression: int = ROLLED_IMPRESSION) -> np.ndarray:
    """Another impression (uint8 image, 500 ppi) of the finger a slap shows: the "rolled" box of a ten-print card."""
    return make_impression(finger_master(subject, finger, seed, tuple(finger_size)), impression).pixels
