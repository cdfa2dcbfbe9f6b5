"""The MCC kernel's shortcuts change no bit: ``encode_cylinders`` (each neighbour added to the cells of
the grid window around it; hull test skipped for cells surely near the hull, and for outline segments
surely beyond the margin) against the direct scan of the definition (every cell tests the whole hull
outline and scans every neighbour), both compiled by numba so the same floating-point operations are
compared."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from biomatch import descriptors as d
from biomatch._descriptor_kernels import _near_hull, _wrap_pi, encode_cylinders


@njit(cache=False)
def direct_cylinders(xy, theta, hull, cell_uv, cell_word, cell_bit, n_dir, plane_words, bit_words, radius,
                     cell_size, sigma_s, sigma_d, psi_threshold, hull_margin, min_valid_fraction, min_neighbours):
    """The definition, scanned: for every cell of every minutia, the hull test and every other minutia."""
    n = xy.shape[0]
    n_cells = cell_uv.shape[0]
    bits = np.zeros((n, bit_words), dtype=np.uint64)
    mask = np.zeros((n, plane_words), dtype=np.uint64)
    valid = np.zeros(n, dtype=np.bool_)
    delta_d = 2.0 * math.pi / n_dir
    norm_s = 1.0 / (sigma_s * math.sqrt(2.0 * math.pi))
    inv_2s2 = 1.0 / (2.0 * sigma_s * sigma_s)
    reach2 = (3.0 * sigma_s) ** 2
    neigh_r2 = (radius + 3.0 * sigma_s) ** 2
    sq2sd = sigma_d * math.sqrt(2.0)
    cd = np.zeros((n, n_dir))
    acc = np.zeros(n_dir)
    h = hull.shape[0]
    ring = np.empty((h + 1 if h > 0 else 0, 2))
    for e in range(ring.shape[0]):
        ring[e] = hull[e % h]
    mid = np.zeros((h, 2))
    no_pruning = np.full(h, np.inf)
    for m in range(n):
        c = math.cos(theta[m])
        s = math.sin(theta[m])
        count = 0
        for t in range(n):
            if t == m:
                continue
            dx = xy[t, 0] - xy[m, 0]
            dy = xy[t, 1] - xy[m, 1]
            if dx * dx + dy * dy <= neigh_r2:
                count += 1
            dth = _wrap_pi(theta[t] - theta[m])
            for k in range(n_dir):
                alpha = _wrap_pi(-math.pi + (k + 0.5) * delta_d - dth)
                cd[t, k] = 0.5 * (math.erf((alpha + 0.5 * delta_d) / sq2sd) - math.erf((alpha - 0.5 * delta_d) / sq2sd))
        n_valid_cells = 0
        for ci in range(n_cells):
            u = cell_uv[ci, 0] * cell_size
            v = cell_uv[ci, 1] * cell_size
            px = xy[m, 0] + c * u - s * v
            py = xy[m, 1] + s * u + c * v
            if not _near_hull(px, py, ring, hull_margin, mid, no_pruning):
                continue
            n_valid_cells += 1
            mask[m, cell_word[ci]] |= np.uint64(1) << np.uint64(cell_bit[ci])
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


def _both(xy, theta):
    hull = d._convex_hull(xy)
    args = (xy, theta, hull, d.CELL_UV, d._CELL_WORD, d._CELL_BIT, d.N_DIRECTIONAL, d.PLANE_WORDS,
            d.DESCRIPTOR_WORDS, d.RADIUS_PX, d.CELL_SIZE_PX, d.SIGMA_S_PX, d.SIGMA_D_RAD, d.PSI_THRESHOLD,
            d.HULL_MARGIN_PX, d.MIN_VALID_CELL_FRACTION, d.MIN_NEIGHBOURS)
    return encode_cylinders(*args), direct_cylinders(*args)


def _assert_same(xy, theta):
    (b, m, v), (rb, rm, rv) = _both(np.ascontiguousarray(xy, dtype=np.float64), np.asarray(theta, dtype=np.float64))
    np.testing.assert_array_equal(m, rm)
    np.testing.assert_array_equal(v, rv)
    np.testing.assert_array_equal(b, rb)
    return b, m, v


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 70),
    spread=st.sampled_from([15.0, 60.0, 150.0, 300.0, 600.0]),
    aspect=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    grid=st.booleans(),
)
def test_kernel_bits_identical_to_the_direct_scan(n, spread, aspect, seed, grid):
    """Random sets: dense to sparse, round to flat (near collinear), on a pixel grid or not."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-spread, spread, (n, 2)) * np.array([1.0, aspect])
    xy[:, 1] -= 400.0  # y up: the frame's rows are negative
    if grid:
        xy = np.round(xy)  # coincident and aligned minutiae, as on a pixel grid
    theta = rng.uniform(-math.pi, math.pi, n)
    _assert_same(xy, theta)


def test_real_shaped_templates_identical_and_not_trivial():
    """Print-like templates (30-60 minutiae over 300 x 400 px): bits are set and match."""
    rng = np.random.default_rng(7)
    for n in (30, 45, 60):
        xy = np.stack([rng.uniform(20, 280, n), -rng.uniform(20, 380, n)], axis=1)
        b, m, v = _assert_same(xy, rng.uniform(-math.pi, math.pi, n))
        assert v.sum() > n // 3 and np.unpackbits(b.view(np.uint8)).sum() > 10 * n
        # minutiae near the hull have some invalid cells: the hull shortcut is not all there is
        assert np.unpackbits(m.view(np.uint8)).sum() < n * d.N_CELLS
