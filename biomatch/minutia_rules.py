"""False-minutia rules: stage 9 of :mod:`biomatch.extraction`, with their constants.

Every distance is a multiple of the local ridge period, so the rules read the
same at every ridge density.
"""

from __future__ import annotations

import numpy as np

#: Candidates closer than this to the mask edge are dropped: there the edge
#: cuts ridges into endings ...
BORDER_PERIODS = 1.2
#: ... except, down to this distance, those the edge cannot have made: a
#: bifurcation, or an ending whose ridge would continue inwards (the point
#: GAP_AHEAD_PERIODS beyond its end lies no nearer the edge than the end).
#: On the synthetic tuning seeds 2027/2028 this keeps 1-2 points more of the
#: true minutiae within 20 px of the contact edge at 0.6 points of precision.
NEAR_BORDER_PERIODS = 0.6
GAP_AHEAD_PERIODS = 1.5
SHORT_RIDGE_PERIODS = 1.8
SPUR_PERIODS = 1.5
BRIDGE_PERIODS = 1.5
BROKEN_RIDGE_PERIODS = 1.6
MIN_SEPARATION_PERIODS = 0.5
#: Ridge clarity (local mean Gabor response) of well-defined ridges: the
#: bridge rule applies only below it, and minutia quality saturates there.
GOOD_CLARITY = 0.40


def near_border(raw: dict, border_distance: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Candidates the mask edge may have made (bool per row of ``raw``).

    Where the edge of the print cuts a ridge it leaves an ending whose ridge
    runs from the interior out to the edge: the gap beyond its end leads
    towards the edge. Such endings, and any candidate within
    :data:`NEAR_BORDER_PERIODS`, go; beyond that, a bifurcation or an ending
    whose gap lies no nearer the edge is kept up to :data:`BORDER_PERIODS`.
    """
    y, x, kind, angle = raw["y"], raw["x"], raw["type"], raw["angle"]
    h, w = border_distance.shape
    b = border_distance[y, x]
    reach = GAP_AHEAD_PERIODS * p
    # beyond the end: against the ridge's direction (angle is y up)
    gy = np.clip(np.rint(y + reach * np.sin(angle)).astype(np.int64), 0, h - 1)
    gx = np.clip(np.rint(x - reach * np.cos(angle)).astype(np.int64), 0, w - 1)
    inward = (kind == 2) | (border_distance[gy, gx] >= b)
    return (b <= BORDER_PERIODS * p) & ~(inward & (b > NEAR_BORDER_PERIODS * p))


def remove_false(
    raw: dict, mask: np.ndarray, border_distance: np.ndarray, period: np.ndarray, clarity: np.ndarray
) -> dict:
    """Drop false minutiae: border, short ridges, spurs, bridges/holes, broken ridges, clusters.

    All distances scale with the local ridge period. The bridge rule (two
    junctions linked by a short branch: a ladder rung or a hole) applies only
    where ridge clarity (``extraction.ridge_clarity``) is below :data:`GOOD_CLARITY`.
    On clear ridges such a link is the filter's faithful response to real
    ridge structure, not smudge, and removing it there cost real minutiae: on
    FVC2002 B, 36-62 % of the candidates the spur and bridge rules removed on
    clear ridges were in the vendor's templates too, 8-17 % on murky ones.
    (Spurs are found from both ends, so limiting the spur rule alone changes
    nothing.) The border rule is :func:`near_border`.
    """
    y, x, kind, br = raw["y"], raw["x"], raw["type"], raw["branches"]
    n = y.size
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return {k: v[keep] for k, v in raw.items()}
    h, w = mask.shape
    p = period[y, x].astype(np.float64)
    index = np.full((h, w), -1, dtype=np.int64)
    index[y, x] = np.arange(n)

    steps = br[:, :, 4]
    reason = br[:, :, 5]
    stop = index[br[:, :, 2].clip(0, h - 1), br[:, :, 3].clip(0, w - 1)]
    is_end = kind == 1
    # short ridge: an ending whose ridge ends again soon (both ends go)
    short = is_end & (reason[:, 0] == 2) & (steps[:, 0] < SHORT_RIDGE_PERIODS * p)
    murky = clarity[y, x] < GOOD_CLARITY  # where the bridge rule applies
    # spur: an ending whose ridge reaches a junction soon (both go)
    spur = is_end & (reason[:, 0] == 3) & (steps[:, 0] < SPUR_PERIODS * p)
    # bridge / hole: a bifurcation linked to another junction by a short branch, on murky ridges
    bridge = (murky & ~is_end)[:, None] & (reason == 3) & (steps < BRIDGE_PERIODS * p[:, None])
    bif_spur = (~is_end)[:, None] & (reason == 2) & (steps < SPUR_PERIODS * p[:, None])
    drop = short | spur | bridge.any(axis=1) | bif_spur.any(axis=1)
    partners = np.concatenate(
        [stop[short | spur, 0], stop[bridge], stop[bif_spur]]
    )
    keep &= ~drop
    partners = partners[partners >= 0]
    keep[partners] = False

    # broken ridge: two endings facing each other across a short gap
    ends = np.flatnonzero(keep & is_end)
    if ends.size > 1:
        pts = np.stack([x[ends], -y[ends]], axis=1).astype(np.float64)
        d = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
        ang = raw["angle"][ends]
        opposite = np.cos(ang[:, None] - ang[None, :]) < -0.5
        # each ending's ridge points away from the other one
        vx = pts[None, :, 0] - pts[:, None, 0]
        vy = pts[None, :, 1] - pts[:, None, 1]
        away = (np.cos(ang)[:, None] * vx + np.sin(ang)[:, None] * vy) < 0
        close = d < BROKEN_RIDGE_PERIODS * p[ends][:, None]
        pair = close & opposite & away & away.T
        np.fill_diagonal(pair, False)
        keep[ends[pair.any(axis=1)]] = False

    # clusters: minutiae closer than half a ridge period
    live = np.flatnonzero(keep)
    if live.size > 1:
        pts = np.stack([x[live], y[live]], axis=1).astype(np.float64)
        d = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        crowded = (d < MIN_SEPARATION_PERIODS * p[live][:, None]).any(axis=1)
        keep[live[crowded]] = False
    # last, so that a candidate the edge made still takes its partner along (a short ridge's other end)
    keep &= ~near_border(raw, border_distance, p)
    return {k: v[keep] for k, v in raw.items()}
