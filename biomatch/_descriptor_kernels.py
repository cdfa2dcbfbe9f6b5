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
def _near_hull(px, py, hull, margin):
    """True when (px, py) lies inside the convex polygon ``hull`` (counter-clockwise,
    shape (h, 2)) or within ``margin`` of its outline."""
    h = hull.shape[0]
    if h == 0:
        return False
    if h >= 3:
        inside = True
        for e in range(h):
            ax = hull[e, 0]
            ay = hull[e, 1]
            bx = hull[(e + 1) % h, 0]
            by = hull[(e + 1) % h, 1]
            if (bx - ax) * (py - ay) - (by - ay) * (px - ax) < 0.0:
                inside = False
                break
        if inside:
            return True
    for e in range(h):
        f = (e + 1) % h
        if _segment_distance(px, py, hull[e, 0], hull[e, 1], hull[f, 0], hull[f, 1]) <= margin:
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
    cd = np.zeros((n, n_dir))
    acc = np.zeros(n_dir)
    for m in range(n):
        xm = xy[m, 0]
        ym = xy[m, 1]
        c = math.cos(theta[m])
        s = math.sin(theta[m])
        # directional contribution of each neighbour to each direction layer
        count = 0
        for t in range(n):
            if t == m:
                continue
            dx = xy[t, 0] - xm
            dy = xy[t, 1] - ym
            if dx * dx + dy * dy <= neigh_r2:
                count += 1
            dth = _wrap_pi(theta[t] - theta[m])
            for k in range(n_dir):
                phi = -math.pi + (k + 0.5) * delta_d
                alpha = _wrap_pi(phi - dth)
                cd[t, k] = 0.5 * (math.erf((alpha + 0.5 * delta_d) / sq2sd) - math.erf((alpha - 0.5 * delta_d) / sq2sd))
        n_valid_cells = 0
        for ci in range(n_cells):
            u = cell_uv[ci, 0] * cell_size
            v = cell_uv[ci, 1] * cell_size
            # rotate the base with the minutia direction
            px = xm + c * u - s * v
            py = ym + s * u + c * v
            if not _near_hull(px, py, hull, hull_margin):
                continue
            n_valid_cells += 1
            w = cell_word[ci]
            b = np.uint64(1) << np.uint64(cell_bit[ci])
            mask[m, w] |= b
            for k in range(n_dir):
                acc[k] = 0.0
            for t in range(n):
                if t == m:
                    continue
                dx = xy[t, 0] - px
                dy = xy[t, 1] - py
                d2 = dx * dx + dy * dy
                if d2 > reach2:
                    continue
                g = norm_s * math.exp(-d2 * inv_2s2)
                for k in range(n_dir):
                    acc[k] += g * cd[t, k]
            for k in range(n_dir):
                if acc[k] > psi_threshold:
                    pos = ci * n_dir + k
                    bits[m, pos // 64] |= np.uint64(1) << np.uint64(pos % 64)
        valid[m] = n_valid_cells >= min_valid_fraction * n_cells and count >= min_neighbours
    return bits, mask, valid
