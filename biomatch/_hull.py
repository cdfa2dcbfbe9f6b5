"""Convex hull of a small 2-D point set (numba), for :mod:`biomatch.descriptors` and :mod:`biomatch.scoring`.

Private. Andrew's monotone chain, with the answer refused (``ok`` False) for
every input whose hull is not clear-cut in floating point: repeated points,
a point within rounding of a hull edge's line (collinear or nearly), or
fewer than 3 hull vertices. On the others the hull is the set of extreme
points, which is what Qhull returns too; callers fall back to
``scipy.spatial.ConvexHull`` when ``ok`` is False, so every answer is the
one Qhull gives (up to the starting vertex, which no caller depends on).
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Relative size (to the point set's extent) under which a turn or a distance to an edge is unclear.
_TOL = 1e-9


@njit(cache=True, nogil=True)
def _cross(xy, o, a, b):
    return (xy[a, 0] - xy[o, 0]) * (xy[b, 1] - xy[o, 1]) - (xy[a, 1] - xy[o, 1]) * (xy[b, 0] - xy[o, 0])


@njit(cache=True, nogil=True)
def hull_indices(xy):
    """(indices of the hull vertices, counter-clockwise from the lowest-x point; ok). ``xy``
    float64 (n, 2); when ``ok`` is False the indices mean nothing (ask Qhull)."""
    n = xy.shape[0]
    empty = np.zeros(0, dtype=np.int64)
    if n < 3:
        return empty, False
    # sort by (x, y): insertion sort (n is a template's minutiae)
    order = np.arange(n)
    for i in range(1, n):
        k = order[i]
        j = i - 1
        while j >= 0 and (xy[order[j], 0] > xy[k, 0] or (xy[order[j], 0] == xy[k, 0] and xy[order[j], 1] > xy[k, 1])):
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = k
    for i in range(1, n):
        if xy[order[i], 0] == xy[order[i - 1], 0] and xy[order[i], 1] == xy[order[i - 1], 1]:
            return empty, False  # a repeated point
    ext = 0.0
    for i in range(n):
        ext = max(ext, abs(xy[i, 0] - xy[order[0], 0]), abs(xy[i, 1] - xy[order[0], 1]))
    tol = _TOL * max(ext, 1.0)
    chain = np.empty(2 * n, dtype=np.int64)
    h = 0
    for i in range(n):  # lower chain
        p = order[i]
        while h >= 2 and _cross(xy, chain[h - 2], chain[h - 1], p) <= 0.0:
            h -= 1
        chain[h] = p
        h += 1
    low = h + 1
    for i in range(n - 2, -1, -1):  # upper chain
        p = order[i]
        while h >= low and _cross(xy, chain[h - 2], chain[h - 1], p) <= 0.0:
            h -= 1
        chain[h] = p
        h += 1
    h -= 1  # the first point again at the end
    if h < 3:
        return empty, False
    hull = chain[:h].copy()
    is_vertex = np.zeros(n, dtype=np.bool_)
    for e in range(h):
        is_vertex[hull[e]] = True
    # clear-cut: every other point, and every next vertex, at least tol inside each edge's line
    for e in range(h):
        a = hull[e]
        b = hull[(e + 1) % h]
        length = np.sqrt((xy[b, 0] - xy[a, 0]) ** 2 + (xy[b, 1] - xy[a, 1]) ** 2)
        for p in range(n):
            if p == a or p == b:
                continue
            if _cross(xy, a, b, p) <= tol * length:
                return empty, False
    return hull, True
