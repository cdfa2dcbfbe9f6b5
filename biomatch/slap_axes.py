"""Finger axes on a slap: each finger's direction from its fingertip to its middle phalanx.

A fingertip's outline says little about its finger's direction (a partial
or round print has any principal axis), and the columns cut across the
fingers at one hand tilt cut a finger badly when that tilt is off. The
finger's own axis is anatomy: the line from the fingertip's centre to the
centre of the middle phalanx below it. :func:`phalanx_axis` finds the
phalanx's centre by a mean shift along the finger: the foreground below the
tip, within half the tip's width of the current axis, gives a new axis
through its centre, until the axis stops moving.
"""

from __future__ import annotations

import math

import numpy as np

#: The middle phalanx is looked for from this share of the tip's length below the tip's bottom, over this many
#: tip lengths (the crease between them is narrow; the phalanx is about as long as the tip).
PHALANX_FROM_LENGTHS = 0.1
PHALANX_REACH_LENGTHS = 0.9
#: Across the axis, the phalanx is looked for within this share of the tip's width either side.
PHALANX_BAND_WIDTHS = 0.5
#: The phalanx must cover at least this share of its search band to be taken as one (else: no axis).
PHALANX_MIN_FILL = 0.25
#: Percentile of the smoothed gray (over the slap, or around a tip) taken as the paper's level.
PAPER_PERCENTILE = 95.0
#: Mean-shift steps, and the change (degrees) below which the axis has settled.
AXIS_STEPS = 8
AXIS_SETTLED_DEG = 0.05
#: How far (degrees) a finger's axis may be from the hand tilt it starts from.
AXIS_MAX_TURN_DEG = 30.0


def _frame(xs, ys, angle_deg):
    t = math.radians(angle_deg)
    return xs * math.cos(t) + ys * math.sin(t), -xs * math.sin(t) + ys * math.cos(t)


def ink_weight(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each pixel's darkening below the paper (``gray``'s PAPER_PERCENTILE) as a share of the foreground's median
    darkening, 0..1: the ink, light prints included, without the texture window's spread."""
    dark = float(np.percentile(gray, PAPER_PERCENTILE)) - gray
    level = float(np.median(dark[mask])) if mask.any() else 0.0
    if level <= 0:
        return mask.astype(np.float64)
    return np.clip(dark / level, 0.0, 1.0)


def phalanx_axis(weight: np.ndarray, part, tilt: float):
    """(angle degrees, phalanx ink) of the finger whose tip ink is ``part`` (xs, ys), or None.

    ``weight`` is the slap's ink (:func:`ink_weight`); ``tilt`` the hand
    tilt to start from. The tip's centre is the centre of its ink's box
    along the axis; the phalanx is the ink in the band below it (see the
    module)."""
    xs, ys = part
    if xs.size == 0:
        return None
    # the search band ends PHALANX_FROM + PHALANX_REACH tip lengths below the tip, turned at most AXIS_MAX_TURN_DEG
    reach = (PHALANX_FROM_LENGTHS + PHALANX_REACH_LENGTHS + 0.5) * max(xs.max() - xs.min(), ys.max() - ys.min()) + 2.0
    x0, y0 = max(0, int(xs.min() - reach)), max(0, int(ys.min() - reach))
    x1, y1 = int(xs.max() + reach) + 1, int(ys.max() + reach) + 1
    window = weight[y0:y1, x0:x1]
    my, mx = np.nonzero(window > 0)
    w = window[my, mx].astype(np.float64)
    mx = mx + x0
    my = my + y0
    mx = mx.astype(np.float64)
    my = my.astype(np.float64)
    angle = float(tilt)
    count = 0.0
    for _ in range(AXIS_STEPS):
        pu, pv = _frame(xs, ys, angle)
        u0, u1, v0, v1 = pu.min(), pu.max() + 1.0, pv.min(), pv.max() + 1.0
        width, length = u1 - u0, v1 - v0
        uc = (u0 + u1) / 2.0
        vc = (v0 + v1) / 2.0
        mu, mv = _frame(mx, my, angle)
        lo = v1 + PHALANX_FROM_LENGTHS * length
        hi = lo + PHALANX_REACH_LENGTHS * length
        sel = (mv >= lo) & (mv < hi) & (np.abs(mu - uc) <= PHALANX_BAND_WIDTHS * width)
        count = float(w[sel].sum())
        if count < PHALANX_MIN_FILL * (hi - lo) * 2 * PHALANX_BAND_WIDTHS * width:
            return None
        du = float(np.average(mu[sel], weights=w[sel])) - uc
        dv = float(np.average(mv[sel], weights=w[sel])) - vc
        # the phalanx lies on +v (toward the palm): a lateral offset du turns the axis by atan(du / dv)
        turn = -math.degrees(math.atan2(du, dv))
        new = angle + turn
        if abs(new - tilt) > AXIS_MAX_TURN_DEG:
            return None
        settled = abs(turn) < AXIS_SETTLED_DEG
        angle = new
        if settled:
            break
    return angle, count


def pooled_tilt(weight: np.ndarray, parts: list, coarse: float, hand: float) -> float:
    """The hand tilt: the median of ``hand`` (the hand's own estimate) and the phalanx axes of the fingers
    (:func:`phalanx_axis`, each searched from the ``coarse`` tilt); ``hand`` when no finger shows a phalanx.

    The estimates err independently (the hand's from the foreground's shape and the tips' boxes, each
    finger's from its own tip and phalanx), and the median drops the one finger whose phalanx search caught
    a neighbour."""
    angles = [hand]
    for part in parts:
        axis = phalanx_axis(weight, part, coarse) if part is not None else None
        if axis is not None:
            angles.append(axis[0])
    return float(np.median(angles))
