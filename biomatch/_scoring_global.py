"""Numba kernels of the global stage of :mod:`biomatch.scoring`: the overlap of two minutiae sets.

Private, as :mod:`biomatch._scoring_kernels` (arrays in, nothing validated):
the convex-hull overlap, the x-grid of the probe's minutiae and the count of
minutiae that agree under one candidate pair's rigid motion, used by
:func:`biomatch._scoring_kernels.score_one` / ``score_batch`` after the local
(LSS-R) stage. Apart from it because the local and global stages are separate
steps of the score; every kernel is ``nogil``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def gather_hull(geo, hull_rank, out):
    """Hull vertices of a template (rows with hull_rank >= 0, counter-clockwise) into out; returns how many."""
    h = 0
    for r in range(hull_rank.shape[0]):
        k = hull_rank[r]
        if k >= 0:
            out[k, 0] = geo[r, 0]
            out[k, 1] = geo[r, 1]
            h += 1
    return h


@njit(cache=True, nogil=True, error_model="numpy")
def _inside_convex(px, py, hull, h, margin):
    """True when (px, py) lies inside the counter-clockwise convex polygon hull[:h] enlarged by
    ``margin`` (each edge's half-plane moved out by margin; for h < 3 nothing is inside)."""
    if h < 3:
        return False
    for e in range(h):
        ax = hull[e, 0]
        ay = hull[e, 1]
        f = e + 1
        if f == h:
            f = 0
        ex = hull[f, 0] - ax
        ey = hull[f, 1] - ay
        cross = ex * (py - ay) - ey * (px - ax)
        if cross >= 0.0:
            continue
        if margin <= 0.0:
            return False
        if cross < -margin * math.sqrt(ex * ex + ey * ey):
            return False
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def _x_cell(v, agrid):
    """Cell of the x coordinate ``v`` in the grid ``agrid`` = (x0, cell width, cells): a
    non-decreasing function of v, clamped to the grid."""
    f = (v - agrid[0]) / agrid[1]
    if f <= 0.0:
        return 0
    last = agrid[2] - 1.0
    if f >= last:
        return int(last)
    return int(f)


@njit(cache=True, nogil=True, error_model="numpy")
def x_grid(geo, cell_px, agrid):
    """Rows of ``geo`` by x in cells of at least ``cell_px``, for :func:`_count_aligned`: returns
    (order (n,) rows by increasing x, start (cells + 1,): the rows of cell c are
    order[start[c]:start[c + 1]]); agrid (3,) receives x0, the cell width and the cell count."""
    n = geo.shape[0]
    order = np.argsort(geo[:, 0], kind="mergesort")
    x0 = geo[order[0], 0] if n > 0 else 0.0
    span = geo[order[n - 1], 0] - x0 if n > 0 else 0.0
    cell = max(cell_px, span / 1024.0, 1e-6)
    n_cells = int(span / cell) + 1
    agrid[0] = x0
    agrid[1] = cell
    agrid[2] = n_cells
    start = np.zeros(n_cells + 1, dtype=np.int64)
    for p in range(n):
        start[_x_cell(geo[order[p], 0], agrid) + 1] += 1
    for c in range(n_cells):
        start[c + 1] += start[c]
    return order, start


@njit(cache=True, nogil=True, error_model="numpy")
def _count_aligned(a_geo, b_geo, c, s, tx, ty, cx, cy, gparams, best_a, best_b, dist_a, dist_b, qb, a_order, a_start, agrid):
    """Minutiae pairs that agree once b is moved by the rigid motion
    p -> R(c, s) p + (tx, ty), counted one-to-one as mutual nearest neighbours.

    a_i and b_j agree when b_j moved lies within ``d0 + dk * r`` px of a_i (r =
    distance of their midpoint from the alignment centre (cx, cy): distortion
    grows away from it; at most ``dmax``) and their directions are within the
    angle tolerance. A pair counts when b_j is the nearest agreeing minutia of
    a_i and a_i that of b_j (ties: the lower row), so the count is symmetric
    (the inverse motion gives the same). Only the minutiae of a in the x cells
    within dmax of b_j moved are tried (``a_order``, ``a_start``, ``agrid``:
    :func:`x_grid` of a with cells of dmax). Scratch: best_a (na,), best_b
    (nb,) int, dist_a (na,), dist_b (nb,) float; qb receives b moved (x, y,
    cos, sin)."""
    na = a_geo.shape[0]
    nb = b_geo.shape[0]
    d0 = gparams[0]
    dk = gparams[1]
    dmax = gparams[2]
    cos_tol = gparams[3]
    big = 1e30
    for j in range(nb):
        x = b_geo[j, 0]
        y = b_geo[j, 1]
        qb[j, 0] = c * x - s * y + tx
        qb[j, 1] = s * x + c * y + ty
        qb[j, 2] = c * b_geo[j, 2] - s * b_geo[j, 3]
        qb[j, 3] = s * b_geo[j, 2] + c * b_geo[j, 3]
        best_b[j] = -1
        dist_b[j] = big
    for i in range(na):
        best_a[i] = -1
        dist_a[i] = big
    tol2 = d0 * d0
    for j in range(nb):
        qx = qb[j, 0]
        p0 = a_start[_x_cell(qx - dmax, agrid)]
        p1 = a_start[_x_cell(qx + dmax, agrid) + 1]
        for p in range(p0, p1):
            i = a_order[p]
            ax = a_geo[i, 0]
            ay = a_geo[i, 1]
            dx = ax - qx
            if dx > dmax or dx < -dmax:
                continue
            dy = ay - qb[j, 1]
            if dy > dmax or dy < -dmax:
                continue
            if a_geo[i, 2] * qb[j, 2] + a_geo[i, 3] * qb[j, 3] < cos_tol:
                continue
            d2 = dx * dx + dy * dy
            if dk != 0.0:
                mx = 0.5 * (ax + qx) - cx
                my = 0.5 * (ay + qb[j, 1]) - cy
                tol = d0 + dk * math.sqrt(mx * mx + my * my)
                if tol > dmax:
                    tol = dmax
                tol2 = tol * tol
            if d2 > tol2:
                continue
            if d2 < dist_a[i]:  # j ascending: the first of equals stays
                dist_a[i] = d2
                best_a[i] = j
            if d2 < dist_b[j] or (d2 == dist_b[j] and i < best_b[j]):
                dist_b[j] = d2
                best_b[j] = i
    m = 0
    for j in range(nb):
        i = best_b[j]
        if i >= 0 and best_a[i] == j:
            m += 1
    return m


@njit(cache=True, nogil=True, error_model="numpy")
def _agrees(ax, ay, ac, as_, bx, by, bc, bs, c, s, tx, ty, cx, cy, gparams):
    """Whether minutia a and minutia b moved by p -> R(c, s) p + (tx, ty) agree (see _count_aligned)."""
    qx = c * bx - s * by + tx
    qy = s * bx + c * by + ty
    if ac * (c * bc - s * bs) + as_ * (s * bc + c * bs) < gparams[3]:
        return False
    dx = ax - qx
    dy = ay - qy
    tol = gparams[0]
    if gparams[1] != 0.0:
        mx = 0.5 * (ax + qx) - cx
        my = 0.5 * (ay + qy) - cy
        tol = gparams[0] + gparams[1] * math.sqrt(mx * mx + my * my)
        if tol > gparams[2]:
            tol = gparams[2]
    return dx * dx + dy * dy <= tol * tol


@njit(cache=True, nogil=True, error_model="numpy")
def _pair_motion(a_geo, b_geo, i, j):
    """Rigid motion taking minutia j of b onto minutia i of a (position and direction): (c, s, tx, ty)."""
    c = a_geo[i, 2] * b_geo[j, 2] + a_geo[i, 3] * b_geo[j, 3]
    s = a_geo[i, 3] * b_geo[j, 2] - a_geo[i, 2] * b_geo[j, 3]
    tx = a_geo[i, 0] - (c * b_geo[j, 0] - s * b_geo[j, 1])
    ty = a_geo[i, 1] - (s * b_geo[j, 0] + c * b_geo[j, 1])
    return c, s, tx, ty


@njit(cache=True, nogil=True, error_model="numpy")
def _agreeing_candidates(cg, dcos, dsin, n_r, c, s, tx, ty, cx, cy, gparams, inl, base, beat):
    """Relaxation candidates (rows of ``cg``: a's x, y, cos, sin then b's) whose minutiae agree
    under the motion (c, s, tx, ty) centred on (cx, cy); their positions go to inl[base:];
    returns how many. Stops early, returning at most ``beat``, once the count cannot exceed
    ``beat`` (the caller only wants a count that does). ``dcos``, ``dsin``: each candidate's
    direction difference (as :func:`lssr_score` left them): a candidate whose direction
    difference is, less a rounding margin, beyond the angle tolerance of the motion's
    rotation cannot agree, and is passed over before the exact test."""
    n = 0
    cos_lo = gparams[3] - 1e-9
    for r in range(n_r):
        if n + (n_r - r) <= beat:
            return n
        if dcos[r] * c + dsin[r] * s < cos_lo:
            continue
        if _agrees(cg[r, 0], cg[r, 1], cg[r, 2], cg[r, 3], cg[r, 4], cg[r, 5], cg[r, 6], cg[r, 7], c, s, tx, ty, cx, cy,
                   gparams):
            inl[base + n] = r
            n += 1
    return n


@njit(cache=True, nogil=True, error_model="numpy")
def global_overlap_score(
    a_geo, a_w, a_hull, a_h, a_order, a_start, agrid, b_geo, b_w, b_hull_rank, cand_i, cand_j, sel, n_r, gparams, best_a,
    best_b, dist_a, dist_b, qb, hull_buf, inl, cg, dcos, dsin,
):
    """Global stage: the number of minutiae that agree under one rigid alignment,
    normalised by the minutiae of each template lying in the other's overlap.

    1. Each of the first ``gparams[4]`` relaxation candidates (one-to-one, by
       decreasing local similarity; ``sel[:n_r]``) proposes the rigid motion
       that superposes its two minutiae; its consensus is the number of
       candidates that agree under that motion (O(n_r) each, cut short once
       it cannot beat the best so far; ties keep the earlier proposal).
    2. The motion of the best proposal is refitted by least squares on the
       candidates that agree with it (centroid and rotation, Procrustes).
    3. m = minutiae pairs of the whole templates agreeing under the refitted
       motion (the proposal's own motion when fewer than 2 candidates agree).
    4. nA = the summed weights ``a_w`` (quality weights, 1 = full) of the
       minutiae of a inside the moved convex hull of b (enlarged by
       ``gparams[6]`` px), nB likewise with ``b_w``; m stays a count; the result is
       m^2 / (max(nA, m, n0) * max(nB, m, n0)) in [0, 1], n0 = ``gparams[5]``.

    Every step is symmetric in a and b (the inverse motion gives the same counts).
    ``cg``, ``dcos``, ``dsin``: the candidates' minutiae and direction differences as
    :func:`lssr_score` left them; ``a_order``, ``a_start``,
    ``agrid``: :func:`x_grid` of a with cells of ``gparams[2]``. Scratch: ``inl`` (at least 2 n_r).
    """
    na = a_geo.shape[0]
    nb = b_geo.shape[0]
    k_prop = min(int(gparams[4]), n_r)
    # each proposal's agreeing candidates go to inl[base:base + n_r]; the best's are kept
    # (base alternates between 0 and n_r; inl holds at least 2 n_r)
    best_q = -1
    best_cons = 0
    best_base = 0
    base = 0
    for q in range(k_prop):
        i = cand_i[sel[q]]
        j = cand_j[sel[q]]
        c, s, tx, ty = _pair_motion(a_geo, b_geo, i, j)
        cons = _agreeing_candidates(cg, dcos, dsin, n_r, c, s, tx, ty, a_geo[i, 0], a_geo[i, 1], gparams, inl, base, best_cons)
        if cons > best_cons:
            best_cons = cons
            best_q = q
            best_base = base
            base = n_r - base
    if best_q < 0:
        return 0.0
    i = cand_i[sel[best_q]]
    j = cand_j[sel[best_q]]
    c0, s0, tx0, ty0 = _pair_motion(a_geo, b_geo, i, j)
    cx0 = a_geo[i, 0]
    cy0 = a_geo[i, 1]
    # inliers of the best proposal (inl[best_base:best_base + n_in]); least-squares rigid motion over them
    n_in = best_cons
    mxa = 0.0
    mya = 0.0
    mxb = 0.0
    myb = 0.0
    for t in range(n_in):
        r = inl[best_base + t]
        mxa += cg[r, 0]
        mya += cg[r, 1]
        mxb += cg[r, 4]
        myb += cg[r, 5]
    best = -1
    bc, bs, btx, bty = c0, s0, tx0, ty0
    if n_in >= 2:
        mxa /= n_in
        mya /= n_in
        mxb /= n_in
        myb /= n_in
        sc = 0.0
        ss = 0.0
        for t in range(n_in):
            r = inl[best_base + t]
            ux = cg[r, 0] - mxa
            uy = cg[r, 1] - mya
            vx = cg[r, 4] - mxb
            vy = cg[r, 5] - myb
            sc += ux * vx + uy * vy
            ss += uy * vx - ux * vy
        ln = math.sqrt(sc * sc + ss * ss)
        if ln > 0.0:
            c = sc / ln
            s = ss / ln
            tx = mxa - (c * mxb - s * myb)
            ty = mya - (s * mxb + c * myb)
            best = _count_aligned(
                a_geo, b_geo, c, s, tx, ty, mxa, mya, gparams, best_a, best_b, dist_a, dist_b, qb, a_order, a_start, agrid
            )
            bc, bs, btx, bty = c, s, tx, ty
    if best < 0:  # no refit (a single inlier or degenerate): the proposal's own motion
        best = _count_aligned(
            a_geo, b_geo, c0, s0, tx0, ty0, cx0, cy0, gparams, best_a, best_b, dist_a, dist_b, qb, a_order, a_start, agrid
        )
    if best == 0:
        return 0.0
    margin = gparams[6]
    # b moved by the best alignment (qb), b's hull moved the same way
    for jb in range(nb):
        x = b_geo[jb, 0]
        y = b_geo[jb, 1]
        qb[jb, 0] = bc * x - bs * y + btx
        qb[jb, 1] = bs * x + bc * y + bty
    b_h = gather_hull(qb, b_hull_rank, hull_buf)
    n_ov_a = 0.0
    for ia in range(na):
        if _inside_convex(a_geo[ia, 0], a_geo[ia, 1], hull_buf, b_h, margin):
            n_ov_a += a_w[ia]
    n_ov_b = 0.0
    for jb in range(nb):
        if _inside_convex(qb[jb, 0], qb[jb, 1], a_hull, a_h, margin):
            n_ov_b += b_w[jb]
    n0 = gparams[5]
    fa = max(n_ov_a, float(best), n0)
    fb = max(n_ov_b, float(best), n0)
    return best * best / (fa * fb)
