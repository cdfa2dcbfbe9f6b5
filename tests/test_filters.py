"""biomatch._filters (extraction's scipy-free filters) against scipy.ndimage itself, on random images."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from biomatch import _filters as flt

shapes = st.tuples(st.integers(1, 70), st.integers(1, 70))


def _image(seed: int, shape, dtype=np.float32) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(dtype)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1),
       case=st.sampled_from([(1.0, (0, 1), 3.0, "reflect"), (1.0, (1, 0), 3.0, "reflect"), (3.5, (0, 0), 2.5, "nearest"),
                             (2.0, (0, 0), 2.5, "constant"), (1.0, (0, 0), 4.0, "nearest")]))
def test_gaussian_filter_is_scipys(shape, seed, case):
    sigma, order, truncate, mode = case
    for dtype in (np.float32, np.float64):
        a = _image(seed, shape, dtype)
        ours = flt.gaussian_filter(a, sigma, order=order, truncate=truncate, mode=mode)
        theirs = ndi.gaussian_filter(a, sigma, order=order, truncate=truncate, mode=mode)
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), size=st.sampled_from([4, 5, 17]))
def test_uniform_filter_is_scipys(shape, seed, size):
    for dtype in (np.float32, np.float64):
        a = _image(seed, shape, dtype)
        ours, theirs = flt.uniform_filter(a, size), ndi.uniform_filter(a, size)
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)


@settings(max_examples=60, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), density=st.floats(0.05, 0.95))
def test_binary_operations_are_scipys(shape, seed, density):
    b = np.random.default_rng(seed).random(shape) < density
    r = np.arange(-2, 3)
    disk = (r[:, None] ** 2 + r[None, :] ** 2) <= 4
    np.testing.assert_array_equal(flt.binary_closing(b, disk), ndi.binary_closing(b, disk))
    np.testing.assert_array_equal(flt.binary_opening(b, disk), ndi.binary_opening(b, disk))
    labels, n = flt.label(b)
    ref_labels, ref_n = ndi.label(b)
    assert n == ref_n
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(flt.fill_holes(b), ndi.binary_fill_holes(b))
    if not b.all():
        np.testing.assert_array_equal(flt.distance_to_zero(b), ndi.distance_transform_edt(b))


def test_largest_region_and_its_absence():
    b = np.zeros((6, 9), bool)
    b[0, 0:2] = True  # 2 px
    b[3:5, 4:8] = True  # 8 px
    np.testing.assert_array_equal(flt.largest_region(b), (flt.label(b)[0] == 2))
    assert flt.largest_region(np.zeros((4, 4), bool)) is None
    # a hole (4-connected to nothing outside) is filled, a bay open to the edge is not
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False
    ring[0, 4] = False
    filled = flt.fill_holes(ring)
    assert filled[2, 2] and not filled[0, 4]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(0, 2**31 - 1), q=st.sampled_from([5.0, 50.0, 95.0]))
def test_percentile_and_median_agree_with_numpy(n, seed, q):
    for dtype in (np.float32, np.float64):
        a = _image(seed, (n,), dtype)
        ours, theirs = flt.percentile(a, q), float(np.percentile(a, q))
        assert ours == pytest.approx(theirs, rel=2 * float(np.finfo(dtype).eps), abs=0)
        assert flt.median(a) == float(np.median(a))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="boundary mode"):
        flt.gaussian_filter(np.zeros((4, 4), np.float32), 1.0, mode="wrap")
    with pytest.raises(ValueError, match="derivative order"):
        flt.gaussian_filter(np.zeros((4, 4), np.float32), 1.0, order=(2, 0))
    with pytest.raises(ValueError, match="no values"):
        flt.percentile(np.zeros(0), 50)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), axis=st.sampled_from([0, 1]),
       mode=st.sampled_from(["reflect", "nearest", "constant"]))
def test_native_correlation_of_a_kernel_with_no_symmetry_is_scipys(shape, seed, axis, mode):
    from biomatch import _native

    a = _image(seed, shape, np.float64)
    weights = np.random.default_rng(seed + 1).normal(size=7)
    assert flt._symmetry(weights) == 0
    ours = _native.correlate_axis(a, weights, axis, flt._MODES[mode], 0)
    np.testing.assert_allclose(ours, ndi.correlate1d(a, weights, axis=axis, mode=mode), rtol=1e-12, atol=1e-9)
