"""Numba kernels of :mod:`biomatch.descriptors` (Minutia Cylinder-Code).

Private: arrays and scalars in, arrays out, nothing validated. Only
``biomatch.descriptors`` calls them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _wrap_pi(a):
    """Angle difference wrapped into [-pi, pi)."""
    two_pi = 2.0 * math.pi
    a = (a + math.pi) % two_pi
    if a < 0.0:
        a += two_pi
    return a - math.pi


@njit(cache=True, nogil=True)
def _segment_distance(px, py, ax, ay, bx, by):
    dx = bx - ax
    dy = by - ay
    den = dx * dx + dy * dy
    t = 0.0
    if den > 0.0:
        t = ((px - ax) * dx + (py - ay) * dy) / den
        if t < 0.0:
            t = 0.0
        elif t > 1.0:
            t = 1.0
    qx = ax + t * dx - px
    qy = ay + t * dy - py
    return math.sqrt(qx * qx + qy * qy)


@njit(cache=True, nogil=True)
def _near_hull(px, py, ring, margin, edge_mid, edge_reach2):
    """True when (px, py) lies inside the convex polygon ``ring`` (counter-clockwise, closed: its
    first vertex repeated at the end, shape (h + 1, 2)) or within ``margin`` of its outline.

    The distance to a segment is left out when surely farther than ``margin``: ``edge_mid`` (h, 2)
    are the segments' midpoints and ``edge_reach2`` (h,) the squared distance from the midpoint
    beyond which a point is farther than ``margin`` from the segment (margin + half its length,
    enlarged for rounding; ``inf`` leaves nothing out)."""
    h = ring.shape[0] - 1
    if h <= 0:
        return False
    if h >= 3:
        inside = True
        for e in range(h):
            ax = ring[e, 0]
            ay = ring[e, 1]
            if (ring[e + 1, 0] - ax) * (py - ay) - (ring[e + 1, 1] - ay) * (px - ax) < 0.0:
                inside = False
                break
        if inside:
            return True
    for e in range(h):
        dx = px - edge_mid[e, 0]
        dy = py - edge_mid[e, 1]
        if dx * dx + dy * dy > edge_reach2[e]:
            continue
        if _segment_distance(px, py, ring[e, 0], ring[e, 1], ring[e + 1, 0], ring[e + 1, 1]) <= margin:
            return True
    return False


@njit(cache=True, nogil=True)
def encode_cylinders(
    xy,
    theta,
    hull,
    cell_uv,
    cell_word,
    cell_bit,
    n_dir,
    plane_words,
    bit_words,
    radius,
    cell_size,
    sigma_s,
    sigma_d,
    psi_threshold,
    hull_margin,
    min_valid_fraction,
    min_neighbours,
):
    """Bit-based cylinders of every minutia.

    Parameters
    ----------
    xy : float64 (n, 2)
        Positions in the 500 ppi, y-up frame.
    theta : float64 (n,)
        Directions, radians counter-clockwise.
    hull : float64 (h, 2)
        Convex hull of the positions, counter-clockwise.
    cell_uv : float64 (c, 2)
        Cell centres of the cylinder base in cell units, relative to the minutia.
    cell_word, cell_bit : int64 (c,)
        Where each cell's bit lives in the validity mask (``plane_words`` words).
    n_dir : int
        Direction layers; the value bit of cell c, layer k is bit c * n_dir + k
        of the ``bit_words`` uint64 words.

    Returns
    -------
    bits : uint64 (n, bit_words)
        Cell value bits (only inside valid cells).
    mask : uint64 (n, plane_words)
        Valid-cell bits of the base (shared by every direction plane).
    valid : bool (n,)
        Cylinder validity (enough valid cells and neighbours).
    """
    n = xy.shape[0]
    n_cells = cell_uv.shape[0]
    bits = np.zeros((n, bit_words), dtype=np.uint64)
    mask = np.zeros((n, plane_words), dtype=np.uint64)
    valid = np.zeros(n, dtype=np.bool_)
    delta_d = 2.0 * math.pi / n_dir
    norm_s = 1.0 / (sigma_s * math.sqrt(2.0 * math.pi))
    inv_2s2 = 1.0 / (2.0 * sigma_s * sigma_s)
    reach = 3.0 * sigma_s
    reach2 = reach * reach
    neigh_r2 = (radius + reach) * (radius + reach)
    sq2sd = sigma_d * math.sqrt(2.0)
    # The value of a cell sums, in increasing t, the contributions of the neighbours t within
    # ``reach`` of its centre. Each neighbour is taken once per minutia and added to the cells of
    # the grid window around it (the others are farther than reach): every cell gets the same
    # terms in the same order as a scan of every t for every cell, so the same bits.
    # Cell grid: cell_uv are (i - half, j - half) for the cells of a side x side grid.
    half = 0.0
    for ci in range(n_cells):
        half = max(half, -cell_uv[ci, 0], -cell_uv[ci, 1])
    side = int(round(2.0 * half)) + 1
    grid = np.full(side * side, -1, dtype=np.int64)
    cell_r = np.empty(n_cells)  # centre's distance from the minutia (px), whatever its direction
    far = 0.0
    for ci in range(n_cells):
        grid[int(round(cell_uv[ci, 1] + half)) * side + int(round(cell_uv[ci, 0] + half))] = ci
        cell_r[ci] = math.sqrt(cell_uv[ci, 0] ** 2 + cell_uv[ci, 1] ** 2) * cell_size
        far = max(far, cell_r[ci])
    # a neighbour farther than far + reach (+ 1 px for rounding) reaches no cell
    near_r2 = (far + reach + 1.0) * (far + reach + 1.0)
    win = reach / cell_size + 0.01  # window half-width in cells, with a margin for rounding
    h = hull.shape[0]
    ring = np.empty((h + 1 if h > 0 else 0, 2))  # the hull closed: its first vertex again at the end
    edge_mid = np.empty((h, 2))
    edge_reach2 = np.empty(h)
    for e in range(ring.shape[0]):
        ring[e, 0] = hull[e % h, 0]
        ring[e, 1] = hull[e % h, 1]
    for e in range(h):
        f = (e + 1) % h
        edge_mid[e, 0] = 0.5 * (hull[e, 0] + hull[f, 0])
        edge_mid[e, 1] = 0.5 * (hull[e, 1] + hull[f, 1])
        r = hull_margin + 0.5 * math.sqrt((hull[f, 0] - hull[e, 0]) ** 2 + (hull[f, 1] - hull[e, 1]) ** 2)
        edge_reach2[e] = (r * (1.0 + 1e-9) + 1e-6) ** 2
    cd = np.zeros(n_dir)
    acc = np.zeros((n_cells, n_dir))
    cx = np.empty(n_cells)
    cy = np.empty(n_cells)
    for m in range(n):
        xm = xy[m, 0]
        ym = xy[m, 1]
        c = math.cos(theta[m])
        s = math.sin(theta[m])
        for ci in range(n_cells):
            u = cell_uv[ci, 0] * cell_size
            v = cell_uv[ci, 1] * cell_size
            # the base rotated with the minutia direction
            cx[ci] = xm + c * u - s * v
            cy[ci] = ym + s * u + c * v
            for k in range(n_dir):
                acc[ci, k] = 0.0
        count = 0
        for t in range(n):
            if t == m:
                continue
            dx = xy[t, 0] - xm
            dy = xy[t, 1] - ym
            d2 = dx * dx + dy * dy
            if d2 <= neigh_r2:
                count += 1
            if d2 > near_r2:
                continue
            # directional contribution of t to each direction layer
            dth = _wrap_pi(theta[t] - theta[m])
            for k in range(n_dir):
                phi = -math.pi + (k + 0.5) * delta_d
                alpha = _wrap_pi(phi - dth)
                cd[k] = 0.5 * (math.erf((alpha + 0.5 * delta_d) / sq2sd) - math.erf((alpha - 0.5 * delta_d) / sq2sd))
            # t in the rotated base, in cells: the grid window within reach of it
            gu = (c * dx + s * dy) / cell_size + half
            gv = (c * dy - s * dx) / cell_size + half
            i0 = max(int(math.ceil(gu - win)), 0)
            i1 = min(int(math.floor(gu + win)), side - 1)
            j0 = max(int(math.ceil(gv - win)), 0)
            j1 = min(int(math.floor(gv + win)), side - 1)
            for gj in range(j0, j1 + 1):
                for gi in range(i0, i1 + 1):
                    ci = grid[gj * side + gi]
                    if ci < 0:
                        continue
                    ex = xy[t, 0] - cx[ci]
                    ey = xy[t, 1] - cy[ci]
                    e2 = ex * ex + ey * ey
                    if e2 > reach2:
                        continue
                    g = norm_s * math.exp(-e2 * inv_2s2)
                    for k in range(n_dir):
                        acc[ci, k] += g * cd[k]
        # cells surely valid without the hull test: with the minutia inside the hull at distance
        # D from its outline, a centre within D + hull_margin of the minutia is inside the hull or
        # within hull_margin of it (the segment from the minutia crosses the outline at least D
        # away); with it outside at distance D, one within hull_margin - D. 1 px margin for rounding
        sure_r = -1.0
        if h >= 3:
            d_out = math.inf
            for e in range(h):
                f = (e + 1) % h
                d_out = min(d_out, _segment_distance(xm, ym, hull[e, 0], hull[e, 1], hull[f, 0], hull[f, 1]))
            if _near_hull(xm, ym, ring, 0.0, edge_mid, edge_reach2):
                sure_r = d_out + hull_margin - 1.0
            else:
                sure_r = hull_margin - d_out - 1.0
        n_valid_cells = 0
        for ci in range(n_cells):
            if cell_r[ci] > sure_r and not _near_hull(cx[ci], cy[ci], ring, hull_margin, edge_mid, edge_reach2):
                continue
            n_valid_cells += 1
            mask[m, cell_word[ci]] |= np.uint64(1) << np.uint64(cell_bit[ci])
            for k in range(n_dir):
                if acc[ci, k] > psi_threshold:
                    pos = ci * n_dir + k
                    bits[m, pos // 64] |= np.uint64(1) << np.uint64(pos % 64)
        valid[m] = n_valid_cells >= min_valid_fraction * n_cells and count >= min_neighbours
    return bits, mask, valid
