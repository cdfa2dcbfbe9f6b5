"""biomatch._hull: the monotone chain answers only where its hull is Qhull's, and then the same
vertices in the same counter-clockwise cycle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import ConvexHull

from biomatch._hull import hull_indices


def _same_cycle(a, b):
    a, b = list(a), list(b)
    if len(a) != len(b) or not a or a[0] not in b:
        return False
    k = b.index(a[0])
    return all(b[(k + i) % len(b)] == a[i] for i in range(len(a)))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(3, 80), spread=st.sampled_from([3.0, 30.0, 400.0]), seed=st.integers(0, 2**32 - 1),
       grid=st.booleans())
def test_vertices_are_qhulls(n, spread, seed, grid):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-spread, spread, (n, 2))
    if grid:
        xy = np.round(xy)  # repeated and collinear points
    idx, ok = hull_indices(xy)
    if ok:
        assert _same_cycle(idx, ConvexHull(xy).vertices)


def test_unclear_hulls_are_refused():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    idx, ok = hull_indices(square)
    assert ok and _same_cycle(idx, ConvexHull(square).vertices)
    for bad in (
        np.vstack([square, [[0.5, 0.0]]]),  # a point on an edge
        np.vstack([square, [[0.5, 1e-12]]]),  # within rounding of one
        np.vstack([square, [[1.0, 1.0]]]),  # a repeated vertex
        np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]),  # collinear
        square[:2],  # too few
    ):
        assert not hull_indices(bad)[1]


@pytest.mark.parametrize("n", [3, 30, 200])
def test_random_prints_are_answered(n):
    """Print-like sets (float coordinates) are almost always clear-cut: the fast path is used."""
    rng = np.random.default_rng(n)
    answered = 0
    for _ in range(20):
        xy = np.stack([rng.uniform(0, 300, n), -rng.uniform(0, 400, n)], axis=1)
        idx, ok = hull_indices(xy)
        if ok:
            answered += 1
            assert _same_cycle(idx, ConvexHull(xy).vertices)
    assert answered >= 18
