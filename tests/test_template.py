"""Template: validation, immutability, compact binary form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biomatch import MINUTIA_DTYPE, Template, TemplateError
from biomatch.template import make_minutiae


def _template(n=5, **kw):
    rng = np.random.default_rng(0)
    m = make_minutiae(rng.uniform(0, 300, n), rng.uniform(0, 400, n), rng.uniform(0, 6.28, n), rng.integers(0, 3, n), rng.integers(0, 101, n))
    args = dict(width=300, height=400, ppi=500, position=2, quality=70)
    args.update(kw)
    return Template(m, **args)


def test_fields_and_immutability():
    t = _template()
    assert t.minutiae.dtype == MINUTIA_DTYPE
    assert len(t) == 5
    with pytest.raises(ValueError):
        t.minutiae["x"][0] = 1.0
    with pytest.raises(AttributeError):
        t.width = 10


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(position=11), "finger position"),
        (dict(position=-1), "finger position"),
        (dict(ppi=100), "ppi"),
        (dict(ppi=5000), "ppi"),
        (dict(quality=101), "quality"),
        (dict(width=0), "image size"),
    ],
)
def test_bad_attributes_are_named(kw, message):
    with pytest.raises(TemplateError, match=message):
        _template(**kw)


def test_minutiae_outside_image_rejected():
    m = make_minutiae([10, 500], [10, 10], [0, 0])
    with pytest.raises(TemplateError, match="outside"):
        Template(m, 300, 400)


def test_non_finite_minutiae_rejected():
    m = make_minutiae([10, np.nan], [10, 10], [0, 0])
    with pytest.raises(TemplateError, match="non-finite"):
        Template(m, 300, 400)


def test_bad_type_code_rejected():
    m = make_minutiae([10], [10], [0], [7])
    with pytest.raises(TemplateError, match="type"):
        Template(m, 300, 400)


def test_empty_template_allowed():
    t = Template(np.zeros(0, MINUTIA_DTYPE), 300, 400)
    assert len(t) == 0
    assert Template.from_bytes(t.to_bytes()) == t


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 299.75), st.floats(0, 399.75), st.floats(0, 6.28), st.integers(0, 2), st.integers(0, 100)
        ),
        max_size=60,
    ),
    st.integers(0, 10),
    st.integers(0, 100),
)
def test_binary_round_trip_within_quantisation(rows, position, quality):
    m = np.array(rows, dtype=MINUTIA_DTYPE) if rows else np.zeros(0, MINUTIA_DTYPE)
    t = Template(m, 300, 400, 569.0, position, quality)
    back = Template.from_bytes(t.to_bytes())
    assert (back.width, back.height, back.ppi, back.position, back.quality) == (300, 400, 569.0, position, quality)
    assert len(back) == len(t)
    assert np.all(np.abs(back.minutiae["x"] - t.minutiae["x"]) <= 0.125 + 1e-6)
    assert np.all(np.abs(back.minutiae["y"] - t.minutiae["y"]) <= 0.125 + 1e-6)
    dang = np.angle(np.exp(1j * (back.minutiae["angle"].astype(float) - t.minutiae["angle"])))
    assert np.all(np.abs(dang) <= np.pi / 65536 + 1e-6)
    assert np.array_equal(back.minutiae["type"], t.minutiae["type"])
    # a second round trip is exact: the form is canonical
    assert back.to_bytes() == Template.from_bytes(back.to_bytes()).to_bytes()


def test_corrupt_bytes_named():
    data = bytearray(_template().to_bytes())
    with pytest.raises(TemplateError, match="too short"):
        Template.from_bytes(data[:10], name="t.bmt")
    bad_magic = bytes(b"XYZ") + bytes(data[3:])
    with pytest.raises(TemplateError, match="not a biomatch template"):
        Template.from_bytes(bad_magic)
    future = bytearray(data)
    future[3] = 99
    with pytest.raises(TemplateError, match="version 99"):
        Template.from_bytes(bytes(future))
    with pytest.raises(TemplateError, match="need"):
        Template.from_bytes(bytes(data[:-3]))
    flipped = bytearray(data)
    flipped[25] ^= 0x40
    with pytest.raises(TemplateError, match="checksum"):
        Template.from_bytes(bytes(flipped))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_template_error(blob):
    try:
        Template.from_bytes(blob)
    except TemplateError:
        pass
