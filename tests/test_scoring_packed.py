"""The packed fast path of biomatch.scoring: pack once, compare_many on the packed gallery.

Packed and unpacked paths must give the same scores bit for bit: the packed
rows are the same rows, scored by the same arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import biomatch as bm
from biomatch import descriptors as d
from biomatch import scoring as sc
from biomatch.errors import TemplateError
from biomatch.template import Template, make_minutiae

from test_descriptors import random_template  # noqa: E402 (tests dir is on sys.path)


def _fresh(t: Template) -> Template:
    """The same template with nothing cached on it."""
    return t.replace(minutiae=t.minutiae.copy())


@st.composite
def templates(draw, min_minutiae=0, max_minutiae=40):
    """Random templates: minutiae anywhere in the frame (duplicates, collinear and tiny sets
    included), random qualities (all 0, i.e. unreported, about a third of the time)."""
    n = draw(st.integers(min_minutiae, max_minutiae))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(120, 500)), int(rng.integers(120, 500))
    x, y = rng.uniform(0, width, n), rng.uniform(0, height, n)
    if n and draw(st.booleans()):
        x[: n // 3] = x[0]  # some collinear minutiae
    quality = rng.integers(1, 101, n) if draw(st.integers(0, 2)) else np.zeros(n, int)
    ppi = draw(st.sampled_from([500.0, 569.0, 1000.0]))
    return Template(make_minutiae(x, y, rng.uniform(0, 2 * np.pi, n), rng.integers(0, 3, n), quality), width, height, ppi)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(probe=templates(), gallery=st.lists(templates(), min_size=0, max_size=6))
def test_packed_and_unpacked_scores_are_identical(probe, gallery):
    """compare_many on a list, on a PackedTemplates, score_packed on subsets and verify one pair
    at a time all give exactly the same scores."""
    gallery = gallery + [_fresh(probe)]  # one mated (identical) template: a score far from 0
    want = np.array([bm.verify(probe, t).score for t in gallery], dtype=np.float64)
    listed = bm.compare_many(_fresh(probe), [_fresh(t) for t in gallery])
    packed = bm.pack([_fresh(t) for t in gallery])
    assert isinstance(packed, bm.PackedTemplates) and len(packed) == len(gallery)
    np.testing.assert_array_equal(listed, want)
    np.testing.assert_array_equal(bm.compare_many(probe, packed), want)
    # a packed gallery from Features, and a subset in another order
    from_features = sc.pack([d.encode(t) for t in gallery])
    order = np.arange(len(gallery))[::-1]
    np.testing.assert_array_equal(sc.score_packed(d.encode(probe), from_features, order), want[order])


def test_pack_once_reuses_each_templates_rows():
    """A template keeps its packed rows: packing it again, alone or in another gallery, uses them
    (no new rows), and a re-encode (new descriptor features) drops them."""
    rng = np.random.default_rng(40)
    gallery = [random_template(rng, n=int(rng.integers(12, 30))) for _ in range(5)]
    p1 = bm.pack(gallery)
    one = bm.pack([gallery[2]])
    assert bm.pack([gallery[2]]) is one  # the cached rows, not a new copy
    lo, hi = p1.offsets[2], p1.offsets[3]
    np.testing.assert_array_equal(one.bits, p1.bits[lo:hi])
    np.testing.assert_array_equal(one.geo, p1.geo[lo:hi])
    p2 = bm.pack(gallery[::-1])
    for f in ("bits", "mask", "maskx", "geo", "theta", "index", "hull_rank", "overlap_weight"):
        a, b = getattr(p1, f), getattr(p2, f)
        got = np.concatenate([b[p2.offsets[4 - t] : p2.offsets[5 - t]] for t in range(5)])
        np.testing.assert_array_equal(got, a)
    gallery[2]._cache.pop("features")  # as after a descriptor version change
    d.encode(gallery[2])
    assert "packed" not in gallery[2]._cache
    assert bm.pack([gallery[2]]) is not one


def test_empty_gallery_and_templates_without_valid_cylinders():
    rng = np.random.default_rng(41)
    probe = random_template(rng)
    empty = bm.pack([])
    assert len(empty) == 0 and empty.bits.shape == (0, d.DESCRIPTOR_BYTES // 8)
    assert bm.compare_many(probe, empty).shape == (0,)
    tiny = probe.replace(minutiae=probe.minutiae[:1].copy())
    packed = bm.pack([tiny, probe, tiny])
    np.testing.assert_array_equal(bm.compare_many(probe, packed), [0.0, bm.verify(probe, probe).score, 0.0])


def test_compare_many_rejects_what_is_not_a_gallery():
    rng = np.random.default_rng(42)
    a = random_template(rng)
    with pytest.raises(TemplateError, match="^templates:"):
        bm.compare_many(a, a)
    with pytest.raises(TemplateError, match="^templates:"):
        bm.compare_many(a, 3)
    with pytest.raises(TemplateError, match=r"^templates\[0\]"):
        bm.compare_many(a, ["a.iso"])
    with pytest.raises(TemplateError, match=r"^templates\[1\]"):
        bm.pack([a, "b.iso"])
