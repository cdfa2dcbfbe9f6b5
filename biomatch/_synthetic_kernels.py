"""Numba kernels of :mod:`biomatch.synthetic` (arrays in, arrays out, no validation).

Only :mod:`biomatch.synthetic` calls these; it validates its inputs.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def gabor_step(src, dst, bank, obin, pbin, active):
    """One contextual filtering step: dst[y, x] = <bank[obin, pbin], src window>.

    Parameters
    ----------
    src : float32 (H, W)
        Current pattern.
    dst : float32 (H, W)
        Output; pixels where ``active`` is 0 are left untouched.
    bank : float32 (n_orient, n_period, K, K)
        Oriented Gabor kernels, K odd.
    obin, pbin : int16 (H, W)
        Orientation / period bin of each pixel.
    active : uint8 (H, W)
        Pixels to filter.
    """
    h, w = src.shape
    k = bank.shape[2]
    r = k // 2
    for y in range(h):
        for x in range(w):
            if active[y, x] == 0:
                continue
            ker = bank[obin[y, x], pbin[y, x]]
            acc = np.float32(0.0)
            if y >= r and y < h - r and x >= r and x < w - r:
                for dy in range(k):
                    row = src[y + dy - r]
                    krow = ker[dy]
                    for dx in range(k):
                        acc += krow[dx] * row[x + dx - r]
            else:
                for dy in range(k):
                    yy = y + dy - r
                    if yy < 0 or yy >= h:
                        continue
                    for dx in range(k):
                        xx = x + dx - r
                        if xx < 0 or xx >= w:
                            continue
                        acc += ker[dy, dx] * src[yy, xx]
            dst[y, x] = acc


@njit(cache=True, nogil=True)
def thin_zhang_suen(img):
    """Zhang-Suen thinning of a binary image (uint8 0/1), in place; returns it.

    Written here because scikit-image is not a runtime dependency of biomatch.
    """
    h, w = img.shape
    changed = True
    marks = np.empty((h * w, 2), dtype=np.int32)
    while changed:
        changed = False
        for step in range(2):
            n = 0
            for y in range(1, h - 1):
                for x in range(1, w - 1):
                    if img[y, x] == 0:
                        continue
                    p2 = img[y - 1, x]
                    p3 = img[y - 1, x + 1]
                    p4 = img[y, x + 1]
                    p5 = img[y + 1, x + 1]
                    p6 = img[y + 1, x]
                    p7 = img[y + 1, x - 1]
                    p8 = img[y, x - 1]
                    p9 = img[y - 1, x - 1]
                    b = p2 + p3 + p4 + p5 + p6 + p7 + p8 + p9
                    if b < 2 or b > 6:
                        continue
                    a = 0
                    if p2 == 0 and p3 == 1:
                        a += 1
                    if p3 == 0 and p4 == 1:
                        a += 1
                    if p4 == 0 and p5 == 1:
                        a += 1
                    if p5 == 0 and p6 == 1:
                        a += 1
                    if p6 == 0 and p7 == 1:
                        a += 1
                    if p7 == 0 and p8 == 1:
                        a += 1
                    if p8 == 0 and p9 == 1:
                        a += 1
                    if p9 == 0 and p2 == 1:
                        a += 1
                    if a != 1:
                        continue
                    if step == 0:
                        if p2 * p4 * p6 != 0 or p4 * p6 * p8 != 0:
                            continue
                    else:
                        if p2 * p4 * p8 != 0 or p2 * p6 * p8 != 0:
                            continue
                    marks[n, 0] = y
                    marks[n, 1] = x
                    n += 1
            for i in range(n):
                img[marks[i, 0], marks[i, 1]] = 0
            if n > 0:
                changed = True
    return img
