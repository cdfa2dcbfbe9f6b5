"""ISO/IEC 19794-2, ANSI INCITS 378 and ANSI/NIST-ITL readers and writers."""

from __future__ import annotations

import json
import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import biomatch as bm
from biomatch.errors import FormatError
from biomatch.formats import (
    FormatWarning,
    detect_format,
    read_record,
    read_templates,
    read_transaction,
    write_record,
    write_transaction,
)
from biomatch.template import Template, make_minutiae

from conftest import reference_data_dir

ANSI_EXAMPLE = "biomdi_sampledata_fingerminutia/ANSI-INCITS-378_2004/Appendix-B2_Example.raw"
ISO_EXAMPLE = "biomdi_sampledata_fingerminutia/ISO-19794-2_2005/Appendix-C2_Example.raw"
MINUTIAE_FILES = [
    ANSI_EXAMPLE,
    ISO_EXAMPLE,
    "libbiomeval_test_data/fmr.ansi2004",
    "libbiomeval_test_data/fmr.ansi2007",
    "libbiomeval_test_data/fmr.iso2005",
]
EXPECTED_FORMAT = {
    "Appendix-B2_Example.raw": "ansi2004",
    "Appendix-C2_Example.raw": "iso2005",
    "fmr.ansi2004": "ansi2004",
    "fmr.ansi2007": "ansi2007",  # the 2007-draft layout of INCITS 378's revision (20-byte header)
    "fmr.iso2005": "iso2005",
}
# (images, Type-9 templates) per transaction; records without finger data are ignored.
TRANSACTIONS = {
    "libbiomeval_test_data/type3.an2k": (0, 0),
    "libbiomeval_test_data/type4-slaps.an2k": (4, 0),
    "libbiomeval_test_data/type9-13.an2k": (0, 1),
    "libbiomeval_test_data/type9-15.an2k": (0, 1),
    "libbiomeval_test_data/type9-efs.an2k": (0, 8),
    "libbiomeval_test_data/type9.an2k": (0, 1),
    "nbis_an2kconvert_testdata/face_jpb_DOM_GMT_DCS.an2": (0, 0),
    "nbis_an2kconvert_testdata/sign_raw.an2": (0, 0),
    "nbis_an2kconvert_testdata/sign_vec.an2": (0, 0),
    "nbis_an2kconvert_testdata/type_3_wvu.an2": (0, 0),
    "nbis_an2kconvert_testdata/type_5_wvu.an2": (0, 0),
    "nbis_an2kconvert_testdata/type_6_wvu.an2": (0, 0),
    "nbis_an2kconvert_testdata/valid1.1.an2": (1, 0),
    "nbis_an2kconvert_testdata/valid1.10.an2": (0, 0),
    "nbis_an2kconvert_testdata/valid1.11.an2": (2, 0),
    "nbis_an2kconvert_testdata/valid1.13.an2": (0, 0),
    "nbis_an2kconvert_testdata/valid1.14.an2": (1, 1),
    "nbis_an2kconvert_testdata/valid1.15.an2": (0, 0),  # its Type-9 is for FGP 28, not a finger
    "nbis_an2kconvert_testdata/valid1.16.an2": (2, 0),
    "nbis_an2kconvert_testdata/valid1.2.an2": (1, 0),
    "nbis_an2kconvert_testdata/valid1.3.an2": (0, 0),
    "nbis_an2kconvert_testdata/valid1.4.an2": (0, 0),
    "nbis_an2kconvert_testdata/valid1.5.an2": (0, 0),
    "nbis_an2kconvert_testdata/valid1.6.an2": (0, 0),
    "nbis_an2kconvert_testdata/valid1.7.an2": (1, 0),
    "nbis_an2kconvert_testdata/valid1.8.an2": (3, 0),
    "nbis_an2kconvert_testdata/valid1.9.an2": (2, 0),
}

#: The other files of the formats folder: finger images read by biomatch.io, and
#: the one file in an encoding biomatch does not claim (with the exact reason).
IMAGES = {"libbiomeval_test_data/img.wsq": (256, 256), "libbiomeval_test_data/img.jp2": (908, 1007)}
EXPECTED_FAILURES = {
    "nbis_an2kconvert_testdata/All-Supported-Records-test-comp.xml":
        "looks like the XML (NIEM) encoding of ANSI/NIST-ITL; only the traditional encoding is supported",
}
#: Transactions whose bytes differ from what biomatch writes back, and why (their content reads back equal).
NOT_BYTE_IDENTICAL = {
    "libbiomeval_test_data/type9-13.an2k": "a repeated 2.034 and a 13.005 tag inside the Type-9 record are skipped",
    **{f"nbis_an2kconvert_testdata/valid1.{i}.an2": "tags written with 2 digits (1.09) or short text fields tagged x.999 (skipped)"
       for i in range(1, 17) if i != 12},
}


def _all_reference_files() -> list:
    root = reference_data_dir()
    if root is None or not (root / "formats").is_dir():
        return ["<reference data absent>"]
    return sorted(p.relative_to(root / "formats").as_posix() for p in (root / "formats").rglob("*") if p.is_file())


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FormatWarning)
        return fn(*args, **kw)


def degrees(t: Template) -> np.ndarray:
    return np.degrees(t.minutiae["angle"].astype(np.float64))


# ----------------------------------------------------------------------------
# sample files
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("rel", _all_reference_files())
def test_every_reference_file_parses(formats_data, rel):
    """Every file of the formats folder is one we read (or listed, with the exact reason we refuse it)."""
    path = formats_data / rel
    if rel in EXPECTED_FAILURES:
        with pytest.raises(FormatError) as err:
            read_transaction(path)
        assert str(err.value) == f"{path}: {EXPECTED_FAILURES[rel]}"
    elif rel in MINUTIAE_FILES:
        assert quiet(read_record, path).format == EXPECTED_FORMAT[path.name]
    elif rel in TRANSACTIONS:
        assert quiet(read_transaction, path).records
    elif rel in IMAGES:
        from biomatch.io import read_image

        img = read_image(path)
        assert img.pixels.shape[::-1] == IMAGES[rel] and img.pixels.dtype == np.uint8
    else:
        pytest.fail(f"{rel}: a new reference file; classify it in tests/test_formats.py")


@pytest.mark.parametrize("rel", sorted(TRANSACTIONS))
def test_sample_transactions_round_trip(formats_data, rel):
    """read -> write -> read gives the same transaction; conforming files come back byte for byte."""
    path = formats_data / rel
    tr = quiet(read_transaction, path, decode_images=False)  # pixels are checked by the test above
    data = tr.to_bytes()
    again = quiet(read_transaction, data, decode_images=False)
    assert again == tr and again.content == tr.content
    assert again.templates == tr.templates
    assert [(i.position, i.compression, i.data) for i in again.images] == [(i.position, i.compression, i.data) for i in tr.images]
    assert again.to_bytes() == data
    if rel in NOT_BYTE_IDENTICAL:
        assert data != path.read_bytes()
    else:
        assert data == path.read_bytes()


@pytest.mark.parametrize("rel", MINUTIAE_FILES)
def test_sample_minutiae_records_parse_and_round_trip(formats_data, rel):
    path = formats_data / rel
    record = quiet(read_record, path)
    assert record.format == EXPECTED_FORMAT[path.name]
    assert len(record.views) >= 2
    again = write_record(record, record.format)
    if path.name != "Appendix-C2_Example.raw":  # its record length field is off by one (340 for 341 bytes)
        assert again == path.read_bytes()
    assert quiet(read_record, again) == record
    assert quiet(read_templates, path) == record.templates


def test_nist_worked_examples_decode_to_their_values(formats_data):
    """ANSI 378-2004 Annex B.2 and ISO 19794-2:2005 Annex C.2 encode the same two views."""
    ansi = read_record(formats_data / ANSI_EXAMPLE)
    with pytest.warns(FormatWarning, match="declares 340 bytes"):
        iso = read_record(formats_data / ISO_EXAMPLE)
    assert ansi.header["product_owner"] == 0x42 and ansi.header["product_type"] == 0x11
    for rec in (ansi, iso):
        assert rec.header["device_id"] == 0xB5 and rec.header["equipment_certification"] == 0
        v1, v2 = rec.views
        assert [(v.position_code, v.view, v.impression, v.template.quality, len(v.template)) for v in rec.views] == [
            (7, 0, 0, 90, 27),  # left index, 27 minutiae, quality 90
            (2, 0, 0, 70, 22),  # right index, 22 minutiae, quality 70
        ]
        for v in rec.views:
            assert (v.template.width, v.template.height) == (512, 512)
            assert v.template.ppi == pytest.approx(197 * 2.54)  # 197 px/cm
        assert v1.extended == ()
        assert v2.extended == ((1, bytes([1, 1, 20, 12, 5, 7, 5])),)  # ridge counts, 4-neighbour method
        m = v1.template.minutiae
        assert (m["x"][0], m["y"][0], m["type"][0], m["quality"][0]) == (100, 14, 1, 90)
        assert (m["x"][2], m["y"][2], m["type"][2]) == (55, 18, 2)
        m = v2.template.minutiae
        assert (m["x"][-1], m["y"][-1], m["type"][-1], m["quality"][-1]) == (125, 73, 2, 40)
    # the first minutia's bytes (40 64 00 0e 38 5a / 40 64 00 0e 50 5a): angle 56 x 2 deg, 80 x 360/256 deg
    raw_a = (formats_data / ANSI_EXAMPLE).read_bytes()[30:36]
    raw_i = (formats_data / ISO_EXAMPLE).read_bytes()[28:34]
    assert (raw_a, raw_i) == (bytes.fromhex("40 64 00 0e 38 5a"), bytes.fromhex("40 64 00 0e 50 5a"))
    assert ansi.views[1].template.minutiae[0].tolist()[:2] == iso.views[1].template.minutiae[0].tolist()[:2]
    # angles: ANSI in 2-degree units, ISO in 360/256 units
    assert degrees(ansi.views[0].template)[:3] == pytest.approx([112.0, 86.0, 22.0], abs=1e-3)
    assert degrees(iso.views[0].template)[:3] == pytest.approx([112.5, 84.375, 22.5], abs=1e-3)
    for va, vi in zip(ansi.views, iso.views):
        ma, mi = va.template.minutiae, vi.template.minutiae
        for name in ("x", "y", "type", "quality"):
            assert np.array_equal(ma[name], mi[name])
        diff = (degrees(va.template) - degrees(vi.template) + 180) % 360 - 180
        assert np.abs(diff).max() < 2.0  # within one unit of each encoding


def test_fvc2002_vendor_templates_load_in_record_frame(fvc2002):
    files = sorted(fvc2002.glob("DB*_B/*.iso"))
    assert len(files) == 320  # 4 DBs x 10 fingers x 8 impressions
    for f in files:
        t = bm.load_template(f)
        assert (t.width, t.height) == (300, 400)  # SecuGen frame, not remapped
        assert t.ppi == pytest.approx(197 * 2.54)
        assert len(t) > 5
        assert t.minutiae["x"].max() < 300 and t.minutiae["y"].max() < 400
        assert bm.load_template(bm.write_iso(t)) == t
        assert write_record(read_record(f), "iso2005") == f.read_bytes()


@pytest.mark.parametrize("rel", sorted(TRANSACTIONS))
def test_every_sample_transaction_parses(formats_data, rel):
    tr = quiet(read_transaction, formats_data / rel)
    n_images, n_templates = TRANSACTIONS[rel]
    assert len(tr.images) == n_images
    assert len(tr.template_records) == n_templates
    assert tr.records and tr.version
    for img in tr.images:
        assert img.pixels.dtype == np.uint8 and img.pixels.shape == (img.height, img.width)
        assert 250 <= img.ppi <= 2000
        assert img.pixels.std() > 1
    for tt in tr.template_records:
        assert tt.template.position == tt.position
        assert len(tt.template) > 0


def test_transaction_header_and_images(formats_data):
    tr = read_transaction(formats_data / "libbiomeval_test_data/type4-slaps.an2k")
    assert (tr.tot, tr.ori, tr.tcn) == ("AMN", "MDNISTIMG", "jck t4 slaps")
    assert [(i.position, i.impression, i.compression, i.width, i.height) for i in tr.images] == [
        (14, 2, "WSQ20", 1608, 1000),
        (12, 2, "WSQ20", 412, 1000),
        (11, 2, "WSQ20", 392, 1000),
        (13, 2, "WSQ20", 1572, 1000),
    ]
    assert tr.images[0].ppi == pytest.approx(500, abs=0.5)
    assert tr.image(12) is tr.images[1] and tr.image(3) is None
    lazy = read_transaction(formats_data / "libbiomeval_test_data/type4-slaps.an2k", decode_images=False)
    assert all(i.pixels is None for i in lazy.images)
    jpeg = quiet(read_transaction, formats_data / "nbis_an2kconvert_testdata/valid1.7.an2")
    assert jpeg.images[0].compression == "JPEGB" and jpeg.images[0].position == 19


def test_legacy_type9_matches_the_incits_record_it_came_from(formats_data):
    """type9.an2k carries view 3 of fmr.ansi2004 in the legacy 9.012 encoding.

    x must agree to one 0.01 mm unit and the direction exactly (at 19.69 px/mm, direction
    flipped by 180 degrees); y is measured from the bottom of an image whose
    height the transaction does not give, so y + y' is constant.
    """
    with pytest.warns(FormatWarning, match="no image record"):
        tr = read_transaction(formats_data / "libbiomeval_test_data/type9.an2k")
    legacy = tr.templates[0]
    view = quiet(read_record, formats_data / "libbiomeval_test_data/fmr.ansi2004").views[2].template
    a, b = legacy.minutiae, view.minutiae
    assert len(a) == len(b) == 28
    assert np.abs(a["x"] - b["x"]).max() < 0.2  # one 0.01 mm unit
    assert np.array_equal(a["type"], b["type"])
    assert np.abs((degrees(legacy) - degrees(view) + 180) % 360 - 180).max() < 1e-3
    ysum = (legacy.height - a["y"]) + b["y"]
    assert ysum.std() < 0.2


def test_efs_minutiae(formats_data):
    tr = quiet(read_transaction, formats_data / "libbiomeval_test_data/type9-efs.an2k")
    assert sorted(tr.templates) == [2, 3, 4, 5, 7, 8, 9, 10]
    first = tr.template_records[0]
    assert first.block == "efs" and first.position == 8 and len(first.template) == 60
    m = first.template.minutiae
    # 9.331 first minutia: 1908,41 (0.01 mm from the ROI corner) theta 186, ridge ending;
    # 9.300 places the ROI 3661 (0.01 mm) right of the image's left edge, 0 below its top
    px = 500 / 25.4 / 100
    assert m["x"][0] == pytest.approx((3661 + 1908) * px, abs=1e-3) and m["y"][0] == pytest.approx(41 * px, abs=1e-3)
    assert degrees(first.template)[0] == pytest.approx(186, abs=1e-3) and m["type"][0] == 1


# ----------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------


@st.composite
def quantized_templates(draw, angle_units=256, position=None):
    w = draw(st.integers(50, 800))
    h = draw(st.integers(50, 800))
    n = draw(st.integers(0, 60))
    x = draw(st.lists(st.integers(0, w - 1), min_size=n, max_size=n))
    y = draw(st.lists(st.integers(0, h - 1), min_size=n, max_size=n))
    codes = draw(st.lists(st.integers(0, angle_units - 1), min_size=n, max_size=n))
    types = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    qual = draw(st.lists(st.integers(0, 100), min_size=n, max_size=n))
    ppcm = draw(st.sampled_from([99, 118, 197, 394]))
    pos = draw(st.integers(0, 10)) if position is None else position
    angle = np.asarray(codes, dtype=np.float64) * (2 * math.pi / angle_units)
    return Template(make_minutiae(x, y, angle, types, qual), w, h, ppcm * 2.54, pos, draw(st.integers(0, 100)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantized_templates(256), st.sampled_from(["2005", "2011"]))
def test_iso_round_trip(t, version):
    data = bm.write_iso(t, version=version)
    assert bm.load_template(data) == t
    assert read_record(data).format == "iso" + version
    assert write_record(read_record(data), "iso" + version) == data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(quantized_templates(180), st.sampled_from(["2004", "2009", "2007"]))
def test_ansi_round_trip(t, version):
    data = bm.write_ansi(t, version)
    assert bm.load_template(data) == t
    assert read_record(data).format == "ansi" + version
    assert write_record(read_record(data), "ansi" + version) == data


@settings(max_examples=20, deadline=None)
@given(st.lists(quantized_templates(180), min_size=1, max_size=4))
def test_transaction_round_trip(templates):
    by_pos = {i + 1: Template(t.minutiae.copy(), t.width, t.height, t.ppi, i + 1, t.quality) for i, t in enumerate(templates)}
    data = write_transaction(by_pos, ori="WV0000000", tcn="T-1", tcr="REQ-9", date="20261122")
    tr = read_transaction(data)
    assert (tr.tot, tr.ori, tr.tcn) == ("RES", "WV0000000", "T-1")
    assert tr.templates == by_pos
    assert all(tt.block == "incits378" for tt in tr.template_records)
    assert read_transaction(write_transaction(tr.templates, ori="WV0000000", tcn="T-1", tcr="REQ-9", date="20261122")).templates == by_pos


def test_transaction_keeps_whole_ppi():
    t = Template(make_minutiae([10], [20], [1.0], [1], [0]), 100, 100, 500, 2)
    assert read_transaction(write_transaction({2: t}, ori="O", tcn="T")).templates[2].ppi == 500
    u = Template(t.minutiae.copy(), 100, 100, 197 * 2.54, 2)
    assert read_transaction(write_transaction({2: u}, ori="O", tcn="T")).templates[2].ppi == pytest.approx(197 * 2.54)


def test_written_legacy_block_matches_the_incits_block():
    import nistitl

    t = Template(make_minutiae([10, 200, 399], [5, 150, 299], [0.0, math.pi / 3, 6.0], [1, 2, 0], [9, 50, 0]), 400, 300, 500, 4)
    data = write_transaction({4: t}, ori="O", tcn="T", date="20261122")
    msg = nistitl.Message()
    msg.parse(data)
    r9 = msg[1]
    assert r9._4 == "S" and r9._10 == "3"
    for tag in range(126, 138):  # keep only the legacy block
        del r9[tag]
    legacy = quiet(read_transaction, msg.NIST)
    assert legacy.template_records[0].block == "legacy"
    u = legacy.templates[4]
    px = 500 / 25.4 / 100  # one 0.01 mm unit in pixels
    assert np.abs(u.minutiae["x"] - t.minutiae["x"]).max() <= px
    assert np.abs((u.height - u.minutiae["y"]) - (t.height - t.minutiae["y"])).max() <= px
    assert np.abs((degrees(u) - degrees(t) + 180) % 360 - 180).max() <= 0.5
    assert np.array_equal(u.minutiae["type"], t.minutiae["type"])


def test_multi_view_write_and_select():
    a = Template(make_minutiae([10, 20], [30, 40], [0.0, math.pi / 2], [1, 2], [50, 60]), 100, 120, 500, 2, 80)
    b = Template(make_minutiae([5], [6], [math.pi], [1], [0]), 100, 120, 500, 2, 40)
    data = bm.write_iso([a, b])
    rec = read_record(data)
    assert [(v.position_code, v.view) for v in rec.views] == [(2, 0), (2, 1)]  # second view of finger 2
    assert bm.load_template(data, view=1) == quiet(bm.load_template, bm.write_iso(b))
    with pytest.raises(FormatError, match="view 2 requested but the record holds 2 view"):
        bm.load_template(data, view=2)
    c = Template(make_minutiae([5], [6], [0.0]), 200, 120, 500, 3)
    with pytest.raises(FormatError, match="one image size per record"):
        bm.write_iso([a, c])
    assert len(read_templates(bm.write_iso([a, c], version="2011"))) == 2  # 2011 has per-view sizes


def test_ansi2009_layouts():
    t = Template(make_minutiae([3, 40], [4, 50], [0.0, math.pi], [1, 2], [10, 20]), 64, 80, 500, 9, 77)
    final = bm.write_ansi(t, "2009")
    draft = bm.write_ansi(t, "2007")
    assert len(final) == len(draft) + 1  # 21- vs 20-byte header, same views
    assert final[20:] == draft[19:] and read_record(final).format == "ansi2009" and read_record(draft).format == "ansi2007"
    amended = final[:4] + b"035\x00" + final[8:]  # INCITS 378-2009/AM1 version number
    rec = read_record(amended)
    assert rec.format == "ansi2009" and rec.templates == read_record(final).templates
    assert write_record(rec, "ansi2009") == amended


def test_cross_format_conversion_keeps_minutiae():
    t = quiet(bm.load_template, bm.write_ansi(Template(make_minutiae([1, 299], [2, 399], [0.1, 6.2], [1, 2], [7, 99]), 300, 400, 500, 7)))
    for version in ("2005", "2011"):
        u = bm.load_template(bm.write_iso(t, version))
        assert np.array_equal(u.minutiae[["x", "y", "type", "quality"]], t.minutiae[["x", "y", "type", "quality"]])
        diff = (degrees(u) - degrees(t) + 180) % 360 - 180
        assert np.abs(diff).max() <= 360 / 256 / 2 + 1e-4


def test_biomatch_bytes_load():
    t = Template(make_minutiae([10.25], [20.5], [1.0], [1], [3]), 64, 64, 500, 4)
    assert bm.load_template(t.to_bytes()) == Template.from_bytes(t.to_bytes())
    assert bm.load_template(t.to_bytes()).minutiae["x"][0] == 10.25
    with pytest.raises(FormatError, match="checksum"):
        bm.load_template(t.to_bytes()[:-1] + b"\x00")


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------


def _iso_one_view(minutia: bytes = b"\x40\x0a\x00\x14\x20\x32", count: int = 1, ext: bytes = b"\x00\x00") -> bytes:
    body = struct.pack(">BBBB", 1, 0, 60, count) + minutia + ext
    header = struct.pack(">HHHHHBB", 0, 100, 120, 197, 197, 1, 0)
    return b"FMR\x00 20\x00" + struct.pack(">I", 12 + len(header) + len(body)) + header + body


def test_malformed_extended_data():
    bad_ext = b"\x00\x10\x00\x01\x00\x20" + bytes(12)  # area length 32 > block length 16
    # last view, record length consistent: skipped with a warning, kept verbatim for rewriting
    data = _iso_one_view(ext=bad_ext)
    with pytest.warns(FormatWarning, match="extended data block is malformed"):
        rec = read_record(data)
    assert rec.views[0].extras["extended_raw"] == bad_ext
    assert write_record(rec, "iso2005") == data
    # any other view: its end cannot be known, so the record is refused
    two = bytearray(data)
    two[22] = 2  # number of finger views (byte 22 of the ISO 2005 header)
    view = data[24:]
    two = bytes(two[:24]) + view + view
    two = two[:8] + struct.pack(">I", len(two)) + two[12:]
    with pytest.raises(FormatError, match="view 0: field 'extended data area 0 length': 32 bytes does not fit"):
        quiet(read_record, two)


# ----------------------------------------------------------------------------
# records as real systems write them
# ----------------------------------------------------------------------------
def _ansi2004_one_view(version: bytes = b" 20\x00", ext: bytes = b"\x00\x00", minutiae=((10, 20, 45, 1, 60), (50, 80, 90, 2, 40))) -> bytes:
    """A hand-made ANSI INCITS 378-2004 record: 26-byte header (2-byte length), one view."""
    body = struct.pack(">BBBB", 2, 0, 70, len(minutiae))
    for x, y, a, kind, q in minutiae:
        body += struct.pack(">HHBB", (kind << 14) | x, y, a, q)
    body += ext
    total = 26 + len(body)
    header = struct.pack(">HHHHHHHHBB", total, 0x0033, 0x0001, 0, 200, 240, 197, 197, 1, 0)
    return b"FMR\x00" + version + header + body


def test_ansi2004_version_020_reads_as_20():
    """SDKs write ANSI INCITS 378-2004 with the version bytes '020\\0' as well as ' 20\\0': both read the same."""
    std, sdk = _ansi2004_one_view(), _ansi2004_one_view(version=b"020\x00")
    assert detect_format(sdk) == "fmr20"
    rec_std, rec_sdk = read_record(std), read_record(sdk)
    assert rec_sdk.format == rec_std.format == "ansi2004"
    a, b = bm.load_template(std), bm.load_template(sdk)
    np.testing.assert_array_equal(a.minutiae, b.minutiae)
    assert (len(b), b.position, b.width, b.height, b.minutiae["x"].tolist()) == (2, 2, 200, 240, [10, 50])


@pytest.mark.parametrize("padding", [1, 3, 64])
@pytest.mark.parametrize("make", ["iso", "ansi"])
def test_zero_padding_after_the_record_is_read_with_a_warning(make, padding):
    data = _iso_one_view() if make == "iso" else _ansi2004_one_view()
    padded = data + bytes(padding)
    with pytest.warns(FormatWarning, match=f"{padding} zero bytes of padding after the record's {len(data)} bytes"):
        t = bm.load_template(padded)
    np.testing.assert_array_equal(t.minutiae, quiet(bm.load_template, data).minutiae)
    # the header counting the padding too is the same record
    counted = bytearray(padded)
    if make == "iso":
        counted[8:12] = struct.pack(">I", len(padded))
    else:
        counted[8:10] = struct.pack(">H", len(padded))
    with pytest.warns(FormatWarning, match="zero bytes of padding"):
        assert len(bm.load_template(bytes(counted))) == len(t)


def test_extended_data_blocks_are_read():
    """Extended data (ridge counts, core/delta, vendor areas) in both 2004/2005 layouts: kept, minutiae unchanged."""
    ridge_counts = struct.pack(">HH", 0x0001, 4 + 7) + bytes([1, 1, 0, 1, 5, 0, 1])
    vendor = struct.pack(">HH", 0x0102, 4 + 3) + b"abc"
    block = ridge_counts + vendor
    ext = struct.pack(">H", len(block)) + block  # the block length counts the areas, not itself
    for data in (_iso_one_view(ext=ext), _ansi2004_one_view(ext=ext), _ansi2004_one_view(version=b"020\x00", ext=ext)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a well-formed block reads without a warning
            rec = read_record(data)
        (view,) = rec.views
        assert [t for t, _ in view.extended] == [0x0001, 0x0102]
        assert dict(view.extended)[0x0102] == b"abc"
        assert len(bm.load_template(data)) >= 1
    # extended data then zero padding: both handled
    with pytest.warns(FormatWarning, match="padding"):
        assert [t for t, _ in read_record(_ansi2004_one_view(ext=ext) + bytes(8)).views[0].extended] == [1, 0x0102]


def test_handmade_iso_record_is_valid():
    t = bm.load_template(_iso_one_view())
    assert (len(t), t.position, t.quality, t.minutiae["x"][0], t.minutiae["y"][0]) == (1, 1, 60, 10, 20)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "is empty"),
        (b"GIF89a....", "not a finger minutiae record"),
        (b"1.001:20\x1d1.002:0400\x1c", "read it with read_transaction"),
        (b"FMR\x00 99\x00" + bytes(20), "field 'version'"),
        (_iso_one_view()[:-3], "truncated|fields end"),
        (_iso_one_view() + b"\x01", "fields end after"),
        (_iso_one_view() + b"\x00\x00\x07", "fields end after"),  # not padding: a non-zero byte
        (_iso_one_view(count=200), "truncated"),
        (_iso_one_view(b"\x40\xc8\x00\x14\x20\x32"), "minutia 0: field 'x/y': \\(200, 20\\) lies outside the 100x120 image"),
        (_iso_one_view(b"\xc0\x0a\x00\x14\x20\x32"), "field 'type': code 3 is reserved"),
        (_iso_one_view(b"\x40\x0a\x00\x14\x20\xc8"), "field 'quality': 200 outside 0-100"),
    ],
)
def test_bad_minutiae_records_raise_format_error(data, message):
    with pytest.raises(FormatError, match=message):
        quiet(bm.load_template, data)


def test_bad_record_messages_name_file_and_field(tmp_path):
    path = tmp_path / "probe.iso"
    path.write_bytes(_iso_one_view(b"\x40\xc8\x00\x14\x20\x32"))
    with pytest.raises(FormatError) as err:
        bm.load_template(path)
    text = str(err.value)
    assert str(path) in text and "ISO/IEC 19794-2:2005" in text and "view 0" in text and "x/y" in text
    with pytest.raises(FormatError, match="file not found"):
        bm.load_template(tmp_path / "absent.iso")
    with pytest.raises(FormatError, match="is a directory"):
        bm.load_template(tmp_path)
    with pytest.raises(FormatError, match="must be a path or bytes"):
        bm.load_template(12345)


def test_ansi_angle_out_of_range_and_bad_versions():
    t = Template(make_minutiae([1], [2], [0.0], [1], [0]), 10, 10, 500, 1)
    data = bytearray(bm.write_ansi(t))
    data[26 + 4 + 4] = 180  # first minutia's angle byte: 180 x 2 degrees is out of range
    with pytest.raises(FormatError, match="'angle': 180 exceeds 179"):
        bm.load_template(bytes(data), name="probe")
    with pytest.raises(FormatError, match="version"):
        bm.write_iso(t, version="2020")
    with pytest.raises(FormatError, match="version"):
        bm.write_ansi(t, version="2011")


def test_iso2011_bad_minutia_size():
    data = bytearray(bm.write_iso(Template(make_minutiae([1], [2], [0.0], [1], [5]), 10, 10, 500, 1), version="2011"))
    flags_at = data.index(bytes([0x60]))  # minutia field length 6, ending type 0
    data[flags_at] = 0x70
    with pytest.raises(FormatError, match="must be 5 or 6"):
        bm.load_template(bytes(data))


def _text_record(rtype: int, text: str) -> bytes:
    # LEN counts the whole record, itself and the trailing separator included
    for guess in range(len(text) + 8, len(text) + 20):
        rec = f"{rtype}.001:{guess}\x1d{text}\x1c"
        if len(rec.encode("latin-1")) == guess:
            return rec.encode("latin-1")
    raise AssertionError


def _transaction(type9_fields: str, cnt="1\x1f1\x1e9\x1f01", version="0500") -> bytes:
    t1 = _text_record(1, f"1.002:{version}\x1d1.003:{cnt}\x1d1.004:CAR\x1d1.008:ORI1\x1d1.009:TCN1")
    t9 = _text_record(9, "9.002:01\x1d9.003:0\x1d9.004:S\x1d" + type9_fields)
    return t1 + t9


GOOD_T9 = "9.006:02\x1d9.010:1\x1d9.012:001\x1f01000200090\x1f0\x1fA"


def test_handmade_transaction_is_valid():
    tr = quiet(read_transaction, _transaction(GOOD_T9))
    t = tr.templates[2]
    assert len(t) == 1 and t.minutiae["type"][0] == 1
    assert degrees(t)[0] == pytest.approx(270.0, abs=1e-3)  # 90 away from the ridge -> 270 along it


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00\x00\x10hello", "not an ANSI/NIST-ITL transaction"),
        (_transaction(GOOD_T9)[:-5], "9.001 LEN"),
        (_transaction(GOOD_T9) + b"junk", "bytes follow the last record"),
        (_transaction(GOOD_T9, cnt="1\x1f2\x1e9\x1f01"), "says 2 records follow but lists 1"),
        (_transaction(GOOD_T9, cnt="1\x1f2\x1e9\x1f01\x1e4\x1f02"), "Type-4\\): missing"),
        (_transaction(GOOD_T9, cnt="1\x1f999999\x1e" + "\x1e".join(["9\x1f01"] * 5)), "says 999999 records"),
        (_transaction(GOOD_T9.replace("9.010:1", "9.010:2")), "9.012 MRC: holds 1 minutiae but 9.010 MIN says 2"),
        (_transaction(GOOD_T9.replace("01000200090", "0100020090")), "is not XXXXYYYYTTT"),
        (_transaction(GOOD_T9.replace("00090", "00390")), "theta: 390 outside"),
        (_transaction(GOOD_T9.replace("9.010:1", "9.010:x")), "9.010 MIN: 'x' is not a number"),
    ],
)
def test_bad_transactions_raise_format_error(data, message):
    with pytest.raises(FormatError, match=message):
        quiet(read_transaction, data)


def test_unsupported_and_bad_images_name_the_record():
    t4 = bytes([0, 1, 255, 255, 255, 255, 255, 0]) + struct.pack(">HH", 200, 200)

    def with_type4(gca: int, image: bytes) -> bytes:
        body = t4 + bytes([gca]) + image
        rec4 = struct.pack(">IB", 5 + len(body), 1) + body
        return _text_record(1, "1.002:0400\x1d1.003:1\x1f1\x1e4\x1f01\x1d1.004:CAR\x1d1.008:O\x1d1.009:T") + rec4

    with pytest.raises(FormatError, match=r"record 1 \(Type-4\): field CGA: compression JPEGL"):
        read_transaction(with_type4(3, b"\xff\xd8"))
    with pytest.raises(FormatError, match="GCA: compression code 9"):
        read_transaction(with_type4(9, b""))
    with pytest.raises(FormatError, match="needs 40000 bytes, found 5"):
        read_transaction(with_type4(0, b"12345"))
    with pytest.raises(FormatError, match="WSQ marker"):
        read_transaction(with_type4(1, b"not wsq"))
    raw = np.tile(np.arange(200, dtype=np.uint8), (200, 1))
    img = read_transaction(with_type4(0, raw.tobytes())).images[0]
    assert np.array_equal(img.pixels, raw) and img.position == 1


def test_write_transaction_rejects_bad_values():
    t = Template(make_minutiae([1], [2], [0.0]), 10, 10, 500, 1)
    with pytest.raises(FormatError, match="ORI"):
        write_transaction({1: t}, ori="bad\x1dsep", tcn="1")
    with pytest.raises(FormatError, match="FGP code 0-10"):
        write_transaction({13: t}, ori="O", tcn="1")
    with pytest.raises(FormatError, match="expected a Template"):
        write_transaction({1: "x"}, ori="O", tcn="1")


def _type14_transaction(compression: str, image: bytes, width: int, height: int, *, slc="1", thps="500", fgp="3") -> bytes:
    import nistitl

    msg = nistitl.Message()
    msg.TOT = "CAR"
    msg[0].ORI = "WV0000000"
    msg[0].TCN = "TCN-14"
    r14 = nistitl.AsciiRecord(14)
    r14.IDC = 1
    for tag, value in {3: "1", 4: "SRC", 5: "20261122", 6: str(width), 7: str(height), 8: slc, 9: thps, 10: thps,
                       11: compression, 12: "8", 13: fgp}.items():
        r14 += nistitl.Field(14, tag, value)
    r14.DATA = image
    msg += r14
    return msg.NIST


def _ridges(width=240, height=260) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return (np.sin(xx / 3.0 + yy / 7.0) * 90 + 128).astype(np.uint8)


@pytest.mark.parametrize("compression, fmt", [("PNG", "PNG"), ("JP2L", "JPEG2000"), ("NONE", None)])
def test_type14_compressions(compression, fmt):
    import io

    from PIL import Image

    pixels = _ridges()
    if fmt is None:
        data = pixels.tobytes()
    else:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt, **({"irreversible": False} if fmt == "JPEG2000" else {}))
        data = buf.getvalue()
    tr = read_transaction(_type14_transaction(compression, data, 240, 260, slc="2", thps="394"))
    img = tr.images[0]
    assert (img.record_type, img.position, img.impression, img.compression) == (14, 3, 1, compression)
    assert img.ppi == pytest.approx(394 * 2.54)
    assert np.array_equal(img.pixels, pixels)  # all three are lossless
    assert (tr.tot, tr.ori, tr.tcn) == ("CAR", "WV0000000", "TCN-14")


def test_jpeg2000_without_decoder_is_named(monkeypatch):
    from biomatch.formats import _an2k_images

    monkeypatch.setattr(_an2k_images, "_pillow_has_jpeg2000", lambda: False)
    with pytest.raises(FormatError, match="14.011 CGA|field CGA: compression JP2 is not supported"):
        read_transaction(_type14_transaction("JP2", b"\x00\x00\x00\x0cjP  ", 240, 260))


def test_type14_bad_fields():
    with pytest.raises(FormatError, match="14.011 CGA: compression 'GIF' is not supported"):
        read_transaction(_type14_transaction("GIF", b"GIF89a", 240, 260))
    # a size bomb is refused from the header, before any decoding
    with pytest.raises(FormatError, match="image size 99999x99999 exceeds the limit"):
        read_transaction(_type14_transaction("PNG", b"\x89PNG", 99999, 99999))
    with pytest.raises(FormatError, match="14.013 FGP: 'x' is not a finger position code"):
        read_transaction(_type14_transaction("NONE", _ridges().tobytes(), 240, 260, fgp="x"))
    with pytest.raises(FormatError, match=r"image data \(PNG\)"):
        read_transaction(_type14_transaction("PNG", b"\x89PNG\r\n\x1a\n" + bytes(40), 240, 260))


def test_xml_encoding_is_named(formats_data):
    with pytest.raises(FormatError, match="XML \\(NIEM\\) encoding"):
        read_transaction(formats_data / "nbis_an2kconvert_testdata/All-Supported-Records-test-comp.xml")


def test_finger_positions_and_resolution_defaults():
    base = bytearray(_iso_one_view())
    base[24] = 13  # four-finger slap code
    with pytest.raises(FormatError, match="code 13 \\(plain right four fingers\\) is not a single finger"):
        bm.load_template(bytes(base))
    base[24] = 200
    with pytest.raises(FormatError, match="code 200 is not a finger position code"):
        bm.load_template(bytes(base))
    base[24] = 12  # plain left thumb reads as the left thumb, and is written back as 12
    rec = read_record(bytes(base))
    assert rec.views[0].template.position == 6 and write_record(rec, "iso2005") == bytes(base)
    base[18:22] = bytes(4)  # resolution 0 px/cm
    with pytest.warns(FormatWarning, match="assuming 500 ppi"):
        assert bm.load_template(bytes(base)).ppi == 500


# ----------------------------------------------------------------------------
# detection, versions, blocks not covered by the sample files
# ----------------------------------------------------------------------------


def test_detect_format_from_bytes():
    t = Template(make_minutiae([1], [2], [0.0], [1], [0]), 10, 10, 500, 1)
    assert [detect_format(b) for b in (bm.write_iso(t), bm.write_ansi(t), bm.write_iso(t, "2011"), bm.write_ansi(t, "2009"))] == [
        "fmr20", "fmr20", "fmr30", "fmr30"]
    assert [read_record(b).format for b in (bm.write_iso(t), bm.write_ansi(t), bm.write_iso(t, "2011"), bm.write_ansi(t, "2009"))] == [
        "iso2005", "ansi2004", "iso2011", "ansi2009"]
    assert detect_format(t.to_bytes()) == "biomatch"
    assert detect_format(write_transaction({1: t}, ori="O", tcn="T")) == "an2k"
    assert detect_format(b"FMR\x00 99\x00") == "fmr?" and detect_format(b"\x89PNG") is None


@pytest.mark.parametrize("version, message", [
    ("0700", "1.002 VER: '0700' is not a known ANSI/NIST-ITL version"),
    ("", "1.002 VER: '' is not a known"),
])
def test_unknown_transaction_version(version, message):
    for known in ("0200", "0201", "0300", "0400", "0500", "0501", "0502"):
        assert quiet(read_transaction, _transaction(GOOD_T9, version=known)).version == known
    with pytest.raises(FormatError, match=message):
        read_transaction(_transaction(GOOD_T9, version=version))


def test_handmade_incits_type9_block():
    """9.126-9.137 as an encoder other than ours writes it: pixels, top-left origin, 2-degree units."""
    fields = ("9.006:07\x1d9.126:27\x1f513\x1d9.128:512\x1d9.129:480\x1d9.130:2\x1d9.131:197\x1d9.132:197\x1d"
              "9.133:0\x1d9.134:07\x1d9.135:90\x1f0\x1f0\x1d9.136:2\x1d"
              "9.137:1\x1f100\x1f14\x1f56\x1f1\x1f90\x1e2\x1f511\x1f479\x1f179\x1f2\x1f0")
    tr = read_transaction(_transaction(fields))
    tt = tr.template_records[0]
    t = tt.template
    assert (tt.block, tt.position, t.width, t.height, t.quality) == ("incits378", 7, 512, 480, 90)
    assert t.ppi == pytest.approx(197 * 2.54)
    assert t.minutiae[["x", "y", "type", "quality"]].tolist() == [(100, 14, 1, 90), (511, 479, 2, 0)]
    assert degrees(t) == pytest.approx([112.0, 358.0], abs=1e-3)
    with pytest.raises(FormatError, match="9.137 FMD minutia 1 x: 512 outside 0..511"):
        read_transaction(_transaction(fields.replace("\x1f511\x1f", "\x1f512\x1f")))
    with pytest.raises(FormatError, match="9.137 FMD minutia 0 angle: 180 outside 0..179"):
        read_transaction(_transaction(fields.replace("\x1f56\x1f", "\x1f180\x1f")))
    with pytest.raises(FormatError, match="9.137 FMD: holds 2 minutiae but 9.136 NOM says 3"):
        read_transaction(_transaction(fields.replace("9.136:2", "9.136:3")))


@pytest.mark.parametrize("compression", ["JPEGB", "JP2", "WSQ20"])
def test_type14_lossy_compressions(compression):
    import io

    from PIL import Image

    pixels = _ridges(256, 256)
    buf = io.BytesIO()
    if compression == "WSQ20":
        import wsq  # noqa: F401  (registers the WSQ codec with Pillow)

        Image.fromarray(pixels).save(buf, "WSQ")
    elif compression == "JPEGB":
        Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    else:
        Image.fromarray(pixels).save(buf, "JPEG2000")  # irreversible (lossy) wavelet by default
    img = read_transaction(_type14_transaction(compression, buf.getvalue(), 256, 256, fgp="7")).images[0]
    assert (img.position, img.compression, img.pixels.shape, img.ppi) == (7, compression, (256, 256), 500)
    assert np.abs(img.pixels.astype(int) - pixels).mean() < 12  # lossy, but the same picture


def test_transaction_errors_name_file_record_and_field(tmp_path):
    path = tmp_path / "booking.eft"
    path.write_bytes(_transaction(GOOD_T9.replace("00090", "00390")))
    with pytest.raises(FormatError) as err:
        quiet(read_transaction, path)
    assert str(err.value).startswith(f"{path}: record 1 (Type-9): field 9.012 MRC minutia 0 theta: 390 outside")


# ----------------------------------------------------------------------------
# the vendor templates beside the FVC2002 images
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("db", ["DB1_B", "DB2_B", "DB3_B", "DB4_B"])
def test_fvc2002_vendor_minutiae_land_on_our_minutiae(fvc2002, db):
    """Mapped back to the image (x*W/300, y*H/400), the vendor's minutiae lie where biomatch finds minutiae.

    Median distance to our nearest minutia is a few pixels; the unmapped
    300x400 coordinates (or a flipped y axis) lie tens of pixels away. Directions
    agree too (ISO angle convention read correctly).
    """
    mapped, raw, flipped, turn = [], [], [], []
    for finger in range(101, 111):
        image = fvc2002 / db / f"{finger}_1.tif"
        ours = bm.extract(image, ppi=500)
        vendor = bm.load_template(image.with_suffix(".iso"))
        w, h = ours.width, ours.height
        sx, sy = w / 300, h / 400
        vx, vy = vendor.minutiae["x"] * sx, vendor.minutiae["y"] * sy
        ox, oy = ours.minutiae["x"], ours.minutiae["y"]

        def nearest(x, y):
            d = np.hypot(x[:, None] - ox[None, :], y[:, None] - oy[None, :])
            return d.min(axis=1), d.argmin(axis=1)

        d, j = nearest(vx, vy)
        mapped.append(d)
        raw.append(nearest(vendor.minutiae["x"].astype(float), vendor.minutiae["y"].astype(float))[0])
        flipped.append(nearest(vx, h - 1 - vy)[0])
        va = vendor.minutiae["angle"].astype(float)
        va = np.arctan2(np.sin(va) * sy, np.cos(va) * sx)
        close = d < 4
        turn.append(np.abs((np.degrees(va[close] - ours.minutiae["angle"][j[close]]) + 180) % 360 - 180))
    mapped, raw, flipped, turn = (np.concatenate(a) for a in (mapped, raw, flipped, turn))
    assert np.median(mapped) < 5
    assert np.median(raw) > 2 * np.median(mapped) + 4 and np.median(flipped) > 2 * np.median(mapped) + 4
    assert np.median(turn) < 20


# ----------------------------------------------------------------------------
# a booking transaction with a corrupt finger enrols nothing
# ----------------------------------------------------------------------------


def _booking_template(position: int, n: int = 10, seed: int = 0) -> Template:
    """A small booking template with enough minutiae to enrol (gallery.checks.MIN_TEMPLATE_MINUTIAE)."""
    rng = np.random.default_rng(seed + position)
    return Template(make_minutiae(rng.integers(10, 190, n), rng.integers(10, 230, n), rng.uniform(0, 6.2, n),
                                  rng.integers(1, 3, n), rng.integers(40, 80, n)), 200, 240, 500, position)


def _booking_with_corrupt_third_finger() -> bytes:
    import nistitl

    fingers = {p: _booking_template(p) for p in (2, 3, 7)}
    msg = nistitl.Message()
    msg.parse(write_transaction(fingers, tot="CAR", ori="WV0000001", tcn="BOOK-3", date="20261122"))
    r9 = msg[3]  # the third finger's Type-9 record
    assert r9._134 == "7"
    rows = [list(r) for r in r9._137]
    rows[1][2] = "999"  # minutia 1's y outside the 240-pixel image
    r9._137 = rows
    return msg.NIST


def test_corrupt_third_finger_enrols_nothing(tmp_path, capsys):
    from biomatch.cli import main

    store = str(tmp_path / "booking.db")
    good = tmp_path / "earlier.eft"
    t = _booking_template(1)
    good.write_bytes(write_transaction({1: t}, tot="CAR", ori="WV0000001", tcn="BOOK-1", date="20261122"))
    bad = tmp_path / "booking.eft"
    bad.write_bytes(_booking_with_corrupt_third_finger())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["enroll", "earlier", "--ebts", str(good), "--store", store, "--json"]) == 0
        capsys.readouterr()
        assert main(["enroll", "booked", "--ebts", str(bad), "--store", store]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"{bad}: record 3 (Type-9): field 9.137 FMD minutia 1 y: 999 outside 0..239" in err
        assert main(["search", "--ebts", str(bad), "--store", store]) == 1
        assert "record 3 (Type-9)" in capsys.readouterr().err
    with bm.Gallery.open(store) as g:
        assert g.subjects() == ["earlier"]  # nothing of the bad booking, the earlier one untouched
        records = g.audit_records()
        assert [(r["action"], r["context"]["tcn"]) for r in records] == [("enroll", "BOOK-1")]
        assert json.dumps(records[0]["context"]).count("WV0000001") == 1


def test_ebts_enrols_type9_templates_and_image_only_fingers(tmp_path, fvc2002, capsys):
    """One booking: finger 2 as Type-9 minutiae, finger 3 only as a Type-14 image; both are enrolled."""
    import nistitl
    from PIL import Image

    from biomatch.cli import main

    pixels = np.asarray(Image.open(fvc2002 / "DB1_B" / "101_1.tif").convert("L"))
    t2 = _booking_template(2)
    msg = nistitl.Message()
    msg.parse(write_transaction({2: t2}, tot="CAR", ori="WV0000002", tcn="BOOK-2", date="20261122"))
    r14 = nistitl.AsciiRecord(14)
    r14.IDC = 2
    for tag, value in {3: "0", 4: "SRC", 5: "20261122", 6: str(pixels.shape[1]), 7: str(pixels.shape[0]), 8: "1",
                       9: "500", 10: "500", 11: "NONE", 12: "8", 13: "3"}.items():
        r14 += nistitl.Field(14, tag, value)
    r14.DATA = pixels.tobytes()
    msg += r14
    path = tmp_path / "booking.eft"
    path.write_bytes(msg.NIST)
    store = str(tmp_path / "b.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["enroll", "bk2", "--ebts", str(path), "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["positions"] == [2, 3]
    with bm.Gallery.open(store) as g:
        (record,) = g.audit_records()
        assert (record["context"]["ori"], record["context"]["tcn"], record["transaction_id"]) == ("WV0000002", "BOOK-2", "BOOK-2")
