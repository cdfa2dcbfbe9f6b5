"""ANSI/NIST-ITL records, traditional encoding: splitting a transaction into its records and
encoding records back into bytes.

A small bounded reader written here rather than ``nistitl.Message.parse``
(see :mod:`._an2k`): the Type-1 record, 1.003 CNT, text records (tagged
fields split on the GS/RS/US separators) and binary records (types 3-8: a
4-byte length and a 1-byte IDC), every length and count checked against the
data before anything is allocated, every problem a
:class:`~biomatch.errors.FormatError` naming the record and field. Also the
field readers every record type uses (:meth:`Record.number`,
:func:`int_item`) and the resolution rules (:func:`ppi_checked`,
:func:`native_ppi`).
"""

from __future__ import annotations

import math
import re
import warnings

from ..errors import FormatError
from ..template import MAX_PPI, MIN_PPI
from ._common import FormatWarning

__all__ = ["Record", "split_records", "record_content", "encode_records", "int_item", "ppi_checked", "native_ppi",
           "FS", "GS", "RS", "US", "MM_PER_INCH", "DEFAULT_PPI", "KNOWN_VERSIONS", "MAX_RECORDS", "BINARY_TYPES"]

FS, GS, RS, US = b"\x1c", b"\x1d", b"\x1e", b"\x1f"
MM_PER_INCH = 25.4
#: Resolution assumed (with a FormatWarning) when a record states none or an absurd one.
DEFAULT_PPI = 500.0
#: 1.002 VER values of the published editions: 1993 (0200), 1997 (0201), 2000 (0300),
#: 2007/2008 (0400), 2011 (0500) and its 2013/2015 updates (0501, 0502), 2025 (0600).
KNOWN_VERSIONS = ("0200", "0201", "0300", "0400", "0500", "0501", "0502", "0600")
#: Largest number of records a transaction may list in 1.003 (a ten-print with
#: palms, faces and features is well under 100).
MAX_RECORDS = 1000
BINARY_TYPES = (3, 4, 5, 6, 7, 8)
#: Records whose text fields end with a binary x.999 field.
_DATA_TAG = 999
_LEN_TAG = re.compile(rb"(\d{1,3})\.0*1:(\d{1,12})[\x1d\x1c]")
_TAG = re.compile(rb"(\d{1,3})\.(\d{1,4}):")


class Record:
    """One record: type, IDC, text fields (tag -> raw bytes) and binary payload."""

    __slots__ = ("type", "idc", "fields", "data", "index", "where")

    def __init__(self, rtype: int, index: int, where: str):
        self.type = rtype
        self.idc = -1
        self.fields: dict = {}
        self.data = b""
        self.index = index
        self.where = where

    def fail(self, field_name: str, problem: str):
        raise FormatError(f"{self.where}: field {field_name}: {problem}")

    def text(self, tag: int, default: str | None = None) -> str | None:
        raw = self.fields.get(tag)
        if raw is None:
            return default
        return raw.decode("latin-1")

    def items(self, tag: int) -> list:
        """Subfields of a field, each a list of items (str)."""
        raw = self.fields.get(tag)
        if raw is None:
            return []
        return [[it.decode("latin-1") for it in sf.split(US)] for sf in raw.split(RS)]

    def number(self, tag: int, name: str, *, required: bool = True, lo=None, hi=None, default=None, real=False):
        raw = self.fields.get(tag)
        label = f"{self.type}.{tag:03d} {name}"
        if raw is None or raw.strip() == b"":
            if required:
                self.fail(label, "is missing")
            return default
        text = raw.split(RS)[0].split(US)[0].strip()
        try:
            value = float(text) if real else int(text)
        except ValueError:
            self.fail(label, f"{text[:20].decode('latin-1')!r} is not a number")
        if real and not math.isfinite(value):
            self.fail(label, f"{value} is not finite")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(label, f"{value} outside {lo}..{hi}")
        return value


def _parse_text_record(data: bytes, start: int, rtype: int, index: int, name: str, expect: int | None) -> tuple[Record, int]:
    where = f"{name}: record {index} (Type-{rtype})"
    m = _LEN_TAG.match(data, start)
    if not m:
        raise FormatError(f"{where}: field {rtype}.001 LEN: missing or malformed at byte {start}")
    if int(m.group(1)) != rtype:
        raise FormatError(f"{where}: field {rtype}.001 LEN: record starts with a Type-{int(m.group(1))} tag, but 1.003 CNT lists Type-{rtype}")
    length = int(m.group(2))
    if length < m.end() - start + 1 or start + length > len(data):
        raise FormatError(
            f"{where}: field {rtype}.001 LEN: {length} bytes does not fit the {len(data) - start} bytes left"
        )
    end = start + length
    if data[end - 1 : end] != FS:
        raise FormatError(f"{where}: field {rtype}.001 LEN: {length} bytes does not end at a record separator (truncated or wrong length)")
    rec = Record(rtype, index, where)
    pos = start
    body_end = end - 1
    while pos < body_end:
        t = _TAG.match(data, pos)
        if not t:
            raise FormatError(f"{where}: malformed field tag at byte {pos} ({data[pos:pos + 12]!r})")
        trec, tag = int(t.group(1)), int(t.group(2))
        vstart = t.end()
        gs = data.find(GS, vstart, body_end)
        if tag == _DATA_TAG and trec == rtype:
            # Some files carry short text fields tagged x.999 before the real data field
            # (NBIS test data does); those are followed by another x.999 tag.
            following = _TAG.match(data, gs + 1) if 0 <= gs - vstart <= 64 else None
            if not (following and data[vstart:gs].isascii() and int(following.group(1)) == rtype
                    and int(following.group(2)) == _DATA_TAG):
                rec.data = data[vstart:body_end]
                pos = body_end
                break
            warnings.warn(f"{where}: short text field tagged {rtype}.999 before the image data; ignored", FormatWarning, stacklevel=4)
            pos = gs + 1
            continue
        vend = body_end if gs < 0 else gs
        value = data[vstart:vend]
        pos = vend + 1
        if trec != rtype:
            warnings.warn(f"{where}: field tagged {trec}.{tag:03d} inside a Type-{rtype} record; ignored", FormatWarning, stacklevel=4)
            continue
        if tag in rec.fields:
            warnings.warn(f"{where}: field {rtype}.{tag:03d} appears twice; the first is used", FormatWarning, stacklevel=4)
            continue
        rec.fields[tag] = value
    if rtype != 1:
        idc = rec.fields.get(2)
        try:
            rec.idc = int(idc) if idc is not None else -1
        except ValueError:
            rec.fail(f"{rtype}.002 IDC", f"{idc[:20]!r} is not a number")
        if expect is not None and rec.idc != expect:
            warnings.warn(f"{where}: IDC {rec.idc} differs from the {expect} listed in 1.003 CNT", FormatWarning, stacklevel=4)
    return rec, end


def _parse_binary_record(data: bytes, start: int, rtype: int, index: int, name: str, expect: int) -> tuple[Record, int]:
    where = f"{name}: record {index} (Type-{rtype})"
    if start + 5 > len(data):
        raise FormatError(f"{where}: field {rtype}.001 LEN: truncated, {len(data) - start} bytes left")
    length = int.from_bytes(data[start : start + 4], "big")
    minimum = 18 if rtype in (3, 4, 5, 6) else 5
    if length < minimum or start + length > len(data):
        raise FormatError(f"{where}: field {rtype}.001 LEN: {length} bytes does not fit (at least {minimum}, {len(data) - start} left)")
    rec = Record(rtype, index, where)
    rec.idc = data[start + 4]
    rec.data = data[start + 5 : start + length]
    if rec.idc != expect:
        warnings.warn(f"{where}: IDC {rec.idc} differs from the {expect} listed in 1.003 CNT", FormatWarning, stacklevel=4)
    return rec, start + length


def split_records(data: bytes, name: str) -> list:
    """The records of a transaction, Type-1 first, each checked against 1.003 CNT."""
    m = _LEN_TAG.match(data, 0)
    if not m and data.lstrip()[:1] == b"<":
        raise FormatError(f"{name}: looks like the XML (NIEM) encoding of ANSI/NIST-ITL; only the traditional encoding is supported")
    if not m or m.group(1) != b"1":
        raise FormatError(f"{name}: not an ANSI/NIST-ITL transaction (it must start with field 1.001, found {data[:8]!r})")
    type1, pos = _parse_text_record(data, 0, 1, 0, name, None)
    cnt = type1.items(3)
    if not cnt:
        type1.fail("1.003 CNT", "is missing")
    try:
        listed = int(cnt[0][1]) if len(cnt[0]) > 1 else -1
    except ValueError:
        type1.fail("1.003 CNT", f"record count {cnt[0][1][:20]!r} is not a number")
    entries = []
    for i, sf in enumerate(cnt[1:], start=1):
        if len(sf) < 2:
            type1.fail("1.003 CNT", f"subfield {i} has {len(sf)} item(s), needs record type and IDC")
        try:
            entries.append((int(sf[0]), int(sf[1])))
        except ValueError:
            type1.fail("1.003 CNT", f"subfield {i} {US.decode().join(sf)[:20]!r} is not two numbers")
    if listed != len(entries):
        type1.fail("1.003 CNT", f"says {listed} records follow but lists {len(entries)}")
    version = type1.text(2)
    if version is None:
        type1.fail("1.002 VER", "is missing")
    if version.strip() not in KNOWN_VERSIONS:
        type1.fail("1.002 VER", f"{version[:20]!r} is not a known ANSI/NIST-ITL version ({', '.join(KNOWN_VERSIONS)})")
    if len(entries) > MAX_RECORDS or len(entries) * 5 > len(data) - pos:
        type1.fail("1.003 CNT", f"{len(entries)} records cannot fit in the {len(data) - pos} bytes left (limit {MAX_RECORDS})")
    records = [type1]
    for index, (rtype, idc) in enumerate(entries, start=1):
        if rtype == 1 or not 2 <= rtype <= 99:
            type1.fail("1.003 CNT", f"subfield {index} lists record type {rtype}, not a record type 2-99")
        if pos >= len(data):
            raise FormatError(f"{name}: record {index} (Type-{rtype}): missing, the transaction ends after {len(records)} records (1.003 CNT lists {len(entries)})")
        if rtype in BINARY_TYPES:
            rec, pos = _parse_binary_record(data, pos, rtype, index, name, idc)
        else:
            rec, pos = _parse_text_record(data, pos, rtype, index, name, idc)
        records.append(rec)
    if pos != len(data):
        raise FormatError(f"{name}: {len(data) - pos} bytes follow the last record listed in 1.003 CNT (lengths and counts disagree)")
    return records


def record_content(rec: Record) -> tuple:
    """(type, fields, data) of a record for :meth:`Transaction.to_bytes`."""
    if rec.type in BINARY_TYPES:
        return rec.type, ((2, str(rec.idc).encode()),), rec.data
    fields = tuple((tag, value) for tag, value in rec.fields.items() if tag != 1)
    return rec.type, fields, rec.data


def _encode_text_record(rtype: int, fields: tuple, data: bytes) -> bytes:
    body = GS.join(f"{rtype}.{tag:03d}:".encode() + value for tag, value in fields)
    if data:
        body += (GS if body else b"") + f"{rtype}.{_DATA_TAG:03d}:".encode() + data
    # LEN counts the whole record, its own digits included
    rest = GS + body + FS
    head = f"{rtype}.001:".encode()
    length = len(head) + len(rest)
    while len(head) + len(str(length)) + len(rest) != length:
        length = len(head) + len(str(length)) + len(rest)
    return head + str(length).encode() + rest


def encode_records(content: tuple) -> bytes:
    """The traditional encoding of records given as :func:`record_content` tuples (LEN recomputed)."""
    out = []
    for rtype, fields, data in content:
        if rtype in BINARY_TYPES:
            idc = int(dict(fields)[2])
            out.append((5 + len(data)).to_bytes(4, "big") + bytes([idc]) + data)
        else:
            out.append(_encode_text_record(rtype, fields, data))
    return b"".join(out)


def int_item(rec, label: str, text: str, lo: int, hi: int) -> int:
    """An integer item of a field in lo..hi (``rec.fail`` names the field otherwise)."""
    try:
        value = int(text)
    except ValueError:
        rec.fail(label, f"{text[:20]!r} is not a number")
    if not lo <= value <= hi:
        rec.fail(label, f"{value} outside {lo}..{hi}")
    return value


def ppi_checked(rec: Record, ppi: float, what: str) -> float:
    """``ppi``, or the default with a FormatWarning when it is outside the accepted range."""
    if not (MIN_PPI <= ppi <= MAX_PPI):
        warnings.warn(f"{rec.where}: {what} resolution {ppi:g} ppi outside {MIN_PPI:g}-{MAX_PPI:g}; assuming {DEFAULT_PPI:g}",
                      FormatWarning, stacklevel=5)
        return DEFAULT_PPI
    return ppi


def native_ppi(type1: Record) -> float | None:
    """The native scanning resolution of 1.011 NSR (px/mm) in ppi, or None when it states none."""
    raw = type1.fields.get(11)
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        return None
    return value * MM_PER_INCH if math.isfinite(value) and value > 0 else None
