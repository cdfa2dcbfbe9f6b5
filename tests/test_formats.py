"""ISO/IEC 19794-2, ANSI INCITS 378 and ANSI/NIST-ITL readers and writers."""

from __future__ import annotations

import math
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

import biomatch as bm
from biomatch.errors import FormatError
from biomatch.formats import FormatWarning, read_record, write_record

MINUTIAE_FILES = [
    "biomdi_sampledata_fingerminutia/ANSI-INCITS-378_2004/Appendix-B2_Example.raw",
    "biomdi_sampledata_fingerminutia/ISO-19794-2_2005/Appendix-C2_Example.raw",
    "libbiomeval_test_data/fmr.ansi2004",
    "libbiomeval_test_data/fmr.ansi2007",
    "libbiomeval_test_data/fmr.iso2005",
]
EXPECTED_FORMAT = {
    "Appendix-B2_Example.raw": "ansi2004",
    "Appendix-C2_Example.raw": "iso2005",
    "fmr.ansi2004": "ansi2004",
    "fmr.ansi2007": "ansi2009",
    "fmr.iso2005": "iso2005",
}


def _read_quiet(source, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FormatWarning)
        return read_record(source, **kw)


@pytest.mark.parametrize("rel", MINUTIAE_FILES)
def test_sample_minutiae_records_parse_and_round_trip(formats_data, rel):
    path = formats_data / rel
    record = _read_quiet(path)
    assert record.format == EXPECTED_FORMAT[path.name]
    assert len(record.views) >= 1
    again = write_record(record, record.format)
    if path.name != "Appendix-C2_Example.raw":  # its record length field is off by one
        assert again == path.read_bytes()
    assert _read_quiet(again) == record


def test_fvc2002_vendor_templates_load_in_record_frame(fvc2002):
    files = sorted(fvc2002.glob("DB*_B/*.iso"))
    assert len(files) == 320  # 4 DBs x 10 fingers x 8 impressions
    for f in files:
        t = bm.load_template(f)
        assert (t.width, t.height) == (300, 400)  # SecuGen frame, not remapped
        assert t.ppi == pytest.approx(197 * 2.54)
        assert len(t) > 5
        assert t.minutiae["x"].max() < 300 and t.minutiae["y"].max() < 400
        assert bm.load_template(t.to_iso()) == t
        assert write_record(read_record(f), "iso2005") == f.read_bytes()
