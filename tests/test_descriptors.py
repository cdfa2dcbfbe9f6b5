"""Tests of biomatch.descriptors (bit-based Minutia Cylinder-Code)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf
from scipy.spatial import ConvexHull

from biomatch import descriptors as d
from biomatch.errors import TemplateError
from biomatch.template import Template, make_minutiae


def random_template(rng, n=30, width=300, height=400, ppi=500.0):
    """Minutiae spread over the frame with a minimum spacing of about 12 px."""
    pts = []
    while len(pts) < n:
        p = rng.uniform([20, 20], [width - 20, height - 20])
        if all(np.hypot(*(p - q)) > 12 for q in pts):
            pts.append(p)
    pts = np.array(pts)
    ang = rng.uniform(0, 2 * np.pi, n)
    return Template(make_minutiae(pts[:, 0], pts[:, 1], ang, rng.integers(1, 3, n)), width, height, ppi)


def reference_cylinders(template: Template):
    """Slow, obvious MCC: every cell, every neighbour, in plain NumPy."""
    m = template.minutiae
    s = d.DESCRIPTOR_PPI / template.ppi
    xy = np.stack([m["x"] * s, -m["y"] * s], axis=1).astype(np.float64)
    th = m["angle"].astype(np.float64)
    n = len(m)
    hull = xy[ConvexHull(xy).vertices]
    nd = d.N_DIRECTIONAL
    dd = 2 * np.pi / nd
    bits = np.zeros((n, nd, d.N_CELLS), bool)
    mask = np.zeros((n, d.N_CELLS), bool)
    valid = np.zeros(n, bool)

    def near_hull(p):
        e0, e1 = hull, np.roll(hull, -1, axis=0)
        cross = (e1[:, 0] - e0[:, 0]) * (p[1] - e0[:, 1]) - (e1[:, 1] - e0[:, 1]) * (p[0] - e0[:, 0])
        if np.all(cross >= 0):
            return True
        seg = e1 - e0
        t = np.clip(((p - e0) * seg).sum(1) / (seg * seg).sum(1), 0, 1)
        dist = np.hypot(*(e0 + t[:, None] * seg - p).T)
        return dist.min() <= d.HULL_MARGIN_PX

    for i in range(n):
        rot = np.array([[math.cos(th[i]), -math.sin(th[i])], [math.sin(th[i]), math.cos(th[i])]])
        centres = xy[i] + (d.CELL_UV * d.CELL_SIZE_PX) @ rot.T
        others = np.arange(n) != i
        dth = np.angle(np.exp(1j * (th[others] - th[i])))
        phi = -np.pi + (np.arange(nd) + 0.5) * dd
        alpha = np.angle(np.exp(1j * (phi[None, :] - dth[:, None])))
        cd = 0.5 * (erf((alpha + dd / 2) / (d.SIGMA_D_RAD * np.sqrt(2))) - erf((alpha - dd / 2) / (d.SIGMA_D_RAD * np.sqrt(2))))
        for c, p in enumerate(centres):
            if not near_hull(p):
                continue
            mask[i, c] = True
            dist = np.hypot(*(xy[others] - p).T)
            g = np.where(dist <= 3 * d.SIGMA_S_PX, np.exp(-(dist**2) / (2 * d.SIGMA_S_PX**2)) / (d.SIGMA_S_PX * np.sqrt(2 * np.pi)), 0.0)
            bits[i, :, c] = (g[:, None] * cd).sum(0) > d.PSI_THRESHOLD
        neigh = (np.hypot(*(xy[others] - xy[i]).T) <= d.RADIUS_PX + 3 * d.SIGMA_S_PX).sum()
        valid[i] = mask[i].sum() >= d.MIN_VALID_CELL_FRACTION * d.N_CELLS and neigh >= d.MIN_NEIGHBOURS
    return bits, mask, valid


def unpack(features):
    """Features -> bool (n, nd, cells) values, bool (n, cells) validity."""
    n = len(features)
    allb = np.unpackbits(features.bits, axis=1, bitorder="little")
    b = allb[:, : d.N_CELLS * d.N_DIRECTIONAL].reshape(n, d.N_CELLS, d.N_DIRECTIONAL).transpose(0, 2, 1)
    mk = np.unpackbits(features.mask, axis=1, bitorder="little")
    return b.astype(bool), mk[:, : d.N_CELLS].astype(bool)


def test_layout_fits_faiss_binary_indexes():
    assert d.DESCRIPTOR_BYTES % 8 == 0
    assert d.DESCRIPTOR_BYTES * 8 >= d.N_DIRECTIONAL * d.N_CELLS > d.DESCRIPTOR_BYTES * 8 - 64
    f = d.encode(random_template(np.random.default_rng(0)))
    assert f.bits.dtype == np.uint8 and f.bits.shape == (30, d.DESCRIPTOR_BYTES)
    assert f.mask.shape == (30, d.MASK_BYTES)
    assert f.valid.dtype == bool and f.valid.shape == (30,)
    assert f.xy.shape == (30, 2) and f.angle.shape == (30,)
    assert not f.bits.flags.writeable


def test_kernel_matches_numpy_reference():
    t = random_template(np.random.default_rng(1), n=18)
    f = d.encode(t)
    bits, mask = unpack(f)
    ref_bits, ref_mask, ref_valid = reference_cylinders(t)
    np.testing.assert_array_equal(mask, ref_mask)
    np.testing.assert_array_equal(f.valid, ref_valid)
    # float summation order may flip a bit sitting exactly on the threshold
    assert np.count_nonzero(bits != ref_bits) <= 2
    assert ref_bits.sum() > 100  # the reference is not trivially empty
    # bits only inside valid cells
    assert not np.any(bits & ~mask[:, None, :])


def test_padding_bits_are_zero():
    f = d.encode(random_template(np.random.default_rng(2)))
    allb = np.unpackbits(f.bits, axis=1, bitorder="little")
    assert not allb[:, d.N_CELLS * d.N_DIRECTIONAL :].any()
    mk = np.unpackbits(f.mask, axis=1, bitorder="little")
    assert not mk[:, d.N_CELLS :].any()


def _rigid(t: Template, angle, dx, dy, size=1000):
    m = t.minutiae
    c, s = math.cos(angle), math.sin(angle)
    x0, y0 = m["x"] - 150.0, -(m["y"] - 200.0)  # y up around the frame centre
    x = c * x0 - s * y0 + size / 2 + dx
    y = -(s * x0 + c * y0) + size / 2 + dy
    return Template(make_minutiae(x, y, m["angle"] + angle, m["type"], m["quality"]), size, size, t.ppi)


@settings(max_examples=10, deadline=None)
@given(angle=st.floats(-math.pi, math.pi), dx=st.floats(-100, 100), dy=st.floats(-100, 100))
def test_cylinders_invariant_to_rigid_motion(angle, dx, dy):
    t = random_template(np.random.default_rng(3))
    f0 = d.encode(t)
    f1 = d.encode(_rigid(t, angle, dx, dy))
    b0, m0 = unpack(f0)
    b1, m1 = unpack(f1)
    # the float32 template angles and rounding move a few cells across a boundary only
    assert np.mean(b0 != b1) < 0.01
    assert np.mean(m0 != m1) < 0.01
    assert np.mean(f0.valid != f1.valid) <= 0.05


def test_resolution_is_normalised_to_500_ppi():
    t = random_template(np.random.default_rng(4))
    m = t.minutiae
    t2 = Template(make_minutiae(m["x"] * 2, m["y"] * 2, m["angle"], m["type"]), 600, 800, 1000.0)
    b0, k0 = unpack(d.encode(t))
    b1, k1 = unpack(d.encode(t2))
    assert np.mean(b0 != b1) < 0.005 and np.mean(k0 != k1) < 0.005


@pytest.mark.parametrize("n", [0, 1, 2])
def test_tiny_templates_encode(n):
    t = Template(make_minutiae(np.arange(n) * 30.0 + 50, np.full(n, 100.0), np.zeros(n)), 300, 400)
    f = d.encode(t)
    assert f.bits.shape == (n, d.DESCRIPTOR_BYTES)
    assert f.n_valid == 0  # fewer than MIN_NEIGHBOURS other minutiae


def test_collinear_minutiae_do_not_break_the_hull():
    n = 8
    t = Template(make_minutiae(np.arange(n) * 20.0 + 20, np.full(n, 100.0), np.zeros(n)), 300, 400)
    f = d.encode(t)
    assert f.bits.shape == (n, d.DESCRIPTOR_BYTES)


def test_features_are_cached_on_the_template():
    t = random_template(np.random.default_rng(5))
    assert d.encode(t) is d.encode(t)


@pytest.mark.parametrize("bad", [None, "template.iso", np.zeros(3)])
def test_bad_input_names_the_parameter(bad):
    with pytest.raises(TemplateError, match="template"):
        d.encode(bad)
