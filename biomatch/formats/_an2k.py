"""ANSI/NIST-ITL transactions, traditional encoding: reading finger images and minutiae, writing responses.

Reading splits the transaction into records with a small bounded reader
written here rather than with ``nistitl.Message.parse``: on hostile input that
parser loops forever on a binary record whose length field is 0, and raises
KeyError/struct.error/ValueError on others, while a booking system needs every
problem reported as a :class:`~biomatch.errors.FormatError` naming the record
and field, and size fields checked before anything is allocated. Writing uses
``nistitl`` (``Message``/``AsciiRecord``/``Field``), which computes the LEN
and CNT fields.

Conventions (ANSI/NIST-ITL 1-2011 and earlier editions):

* Type-1: 1.002 VER, 1.003 CNT (record types and IDCs in order), 1.004 TOT,
  1.008 ORI, 1.009 TCN, 1.011 NSR (native scanning resolution, px/mm).
* Binary records (types 3-8): 4-byte length, 1-byte IDC. Type-4 header:
  IMP(1) FGP(6, 255 = unused) ISR(1) HLL(2) VLL(2) GCA(1), then the image;
  ISR 0 means the minimum scanning resolution 19.69 px/mm (500 ppi), 1 the
  native resolution of 1.011; GCA 0 none, 1 WSQ, 2 JPEGB, 3 JPEGL, 4 JP2,
  5 JP2L, 6 PNG.
* Type-14: 14.003 IMP, 14.006 HLL, 14.007 VLL, 14.008 SLC (1 ppi, 2 px/cm),
  14.009 THPS, 14.010 TVPS, 14.011 CGA, 14.012 BPX, 14.013 FGP, 14.999 DATA.
* Type-9 legacy block: 9.010 MIN, 9.012 MRC with "XXXXYYYYTTT": position in
  0.01 mm from the image's lower-left corner, direction in degrees pointing
  away from the ridge ending (180 degrees from the INCITS 378 direction).
* Type-9 INCITS 378 block: 9.128/9.129 image size, 9.130-9.132 scale,
  9.133 view, 9.134 FGP, 9.135 quality, 9.136 NOM, 9.137 FMD: index, x, y
  (pixels, top-left origin), angle in 2-degree units, type 0/1/2, quality.
* Type-9 EFS: 9.300 ROI (width, height, offsets in 0.01 mm), 9.331 minutiae:
  x, y in 0.01 mm from the ROI's top-left corner, direction in degrees as in
  INCITS 378 ("up the ridge" for endings), type E/B/X.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .. import io as _io
from ..errors import FormatError, ImageError, TemplateError
from ..template import MAX_PPI, MIN_PPI, Template, make_minutiae
from ._an2k_images import check_text, read_segments, type1_message, write_image_transaction
from ._an2k_images import int_item as _int_item
from ._common import FormatWarning, load_source

__all__ = [
    "Transaction",
    "TransactionImage",
    "TransactionTemplate",
    "read_transaction",
    "write_transaction",
    "write_image_transaction",
    "COMPRESSIONS",
]

FS, GS, RS, US = b"\x1c", b"\x1d", b"\x1e", b"\x1f"
MM_PER_INCH = 25.4
#: 19.69 px/mm: the ANSI/NIST "minimum scanning resolution" of Type-4 ISR 0 (500 ppi).
MIN_SCANNING_PPMM = 19.69
DEFAULT_PPI = 500.0
#: 1.002 VER values of the published editions: 1993 (0200), 1997 (0201), 2000 (0300),
#: 2007/2008 (0400), 2011 (0500) and its 2013/2015 updates (0501, 0502), 2025 (0600).
KNOWN_VERSIONS = ("0200", "0201", "0300", "0400", "0500", "0501", "0502", "0600")
#: Largest number of records a transaction may list in 1.003 (a ten-print with
#: palms, faces and features is well under 100).
MAX_RECORDS = 1000
#: Largest image (pixels) decoded from a record, checked before decoding: the
#: same bound as image files (one limit, owned by biomatch.io).
MAX_IMAGE_PIXELS = _io.MAX_IMAGE_PIXELS
MAX_MINUTIAE_PER_RECORD = 1024
BINARY_TYPES = (3, 4, 5, 6, 7, 8)
#: Records whose text fields end with a binary x.999 field.
_DATA_TAG = 999
COMPRESSIONS = {0: "NONE", 1: "WSQ20", 2: "JPEGB", 3: "JPEGL", 4: "JP2", 5: "JP2L", 6: "PNG"}
_CGA_ALIASES = {"WSQ": "WSQ20", "WSQ20": "WSQ20", "NONE": "NONE", "JPEGB": "JPEGB", "JPEGL": "JPEGL",
                "JP2": "JP2", "JP2L": "JP2L", "PNG": "PNG", "JPEG": "JPEGB"}
_FINGER_IMAGE_TYPES = (4, 14)
_LEN_TAG = re.compile(rb"(\d{1,3})\.0*1:(\d{1,12})[\x1d\x1c]")
_TAG = re.compile(rb"(\d{1,3})\.(\d{1,4}):")


@dataclass(frozen=True, eq=False)
class TransactionImage:
    """A finger image from a Type-4 or Type-14 record.

    Attributes
    ----------
    record_type, idc : int
        Where it came from.
    position : int
        First finger position code (FGP) of the record; ``positions`` holds all.
    impression : int
        Impression type code (0 live-scan plain, 1 live-scan rolled, ...).
    ppi : float
    width, height : int
        Declared size (checked against the decoded image).
    compression : str
        "NONE", "WSQ20", "JPEGB", "JPEGL", "JP2", "JP2L" or "PNG".
    data : bytes
        The image as stored.
    pixels : ndarray of uint8, shape (height, width), or None
        Decoded gray levels (None when read with ``decode_images=False``).
    segments : tuple of (int, tuple of (int, int))
        Finger segment positions of a Type-14 slap: (finger position, polygon
        vertices x, y in pixels), from 14.025 ASEG where given, else from
        14.021 FSP (the box left/right/top/bottom as 4 vertices). Empty when
        the record carries none.
    """

    record_type: int
    idc: int
    position: int
    positions: tuple
    impression: int
    ppi: float
    width: int
    height: int
    compression: str
    data: bytes = field(repr=False)
    pixels: np.ndarray | None = field(default=None, repr=False)
    segments: tuple = ()


@dataclass(frozen=True, eq=False)
class TransactionTemplate:
    """Minutiae of one Type-9 record: the template and where it came from.

    ``block`` is "incits378" (9.126-9.150), "efs" (9.331) or "legacy" (9.010-9.012).
    """

    idc: int
    position: int
    impression: int
    block: str
    template: Template


@dataclass(frozen=True, eq=False)
class Transaction:
    """An ANSI/NIST-ITL transaction.

    Attributes
    ----------
    version, tot, ori, tcn, date, dai : str
        Type-1 fields 1.002, 1.004, 1.008, 1.009, 1.005, 1.007.
    records : tuple of (int, int)
        (record type, IDC) of every record after Type-1, in order.
    images : tuple of TransactionImage
        Finger images of Type-4 and Type-14 records.
    template_records : tuple of TransactionTemplate
        Every Type-9 record that holds single-finger minutiae.
    templates : dict of int to Template
        Finger position -> Template (the first Type-9 record per position).
    name : str
        The file name (for messages).
    content : tuple
        Every record as read, for :meth:`to_bytes`: ``(type, fields, data)``
        with ``fields`` a tuple of (tag, raw value bytes) in file order (text
        records; LEN and the binary x.999 field excluded) and ``data`` the
        x.999 field or the binary record after its IDC byte. Two transactions
        are equal when their contents are.
    """

    version: str
    tot: str
    ori: str
    tcn: str
    date: str
    dai: str
    records: tuple
    images: tuple
    template_records: tuple
    templates: dict
    name: str = "transaction"
    content: tuple = field(default=(), repr=False)

    def __eq__(self, other):
        if not isinstance(other, Transaction):
            return NotImplemented
        return self.content == other.content

    __hash__ = None

    def to_bytes(self) -> bytes:
        """Encode the transaction again (traditional encoding), every record with the fields it was read with.

        Field tags are written in their canonical form (``9.012``, not
        ``9.12``) and the LEN fields recomputed; fields the reader skipped with
        a :class:`FormatWarning` (repeated tags, tags of another record type,
        short text fields tagged x.999) are not written. A file written by a
        conforming encoder comes back byte for byte; reading the result gives
        an equal Transaction.
        """
        if not self.content:
            raise FormatError(f"{self.name}: holds no records to encode (only read_transaction fills them)")
        return _encode_records(self.content)

    def image(self, position: int) -> TransactionImage | None:
        """The first image of a finger position, or None."""
        for img in self.images:
            if position in img.positions:
                return img
        return None


# ----------------------------------------------------------------------------
# record splitting
# ----------------------------------------------------------------------------


class _Record:
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


def _parse_text_record(data: bytes, start: int, rtype: int, index: int, name: str, expect: int | None) -> tuple[_Record, int]:
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
    rec = _Record(rtype, index, where)
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


def _parse_binary_record(data: bytes, start: int, rtype: int, index: int, name: str, expect: int) -> tuple[_Record, int]:
    where = f"{name}: record {index} (Type-{rtype})"
    if start + 5 > len(data):
        raise FormatError(f"{where}: field {rtype}.001 LEN: truncated, {len(data) - start} bytes left")
    length = int.from_bytes(data[start : start + 4], "big")
    minimum = 18 if rtype in (3, 4, 5, 6) else 5
    if length < minimum or start + length > len(data):
        raise FormatError(f"{where}: field {rtype}.001 LEN: {length} bytes does not fit (at least {minimum}, {len(data) - start} left)")
    rec = _Record(rtype, index, where)
    rec.idc = data[start + 4]
    rec.data = data[start + 5 : start + length]
    if rec.idc != expect:
        warnings.warn(f"{where}: IDC {rec.idc} differs from the {expect} listed in 1.003 CNT", FormatWarning, stacklevel=4)
    return rec, start + length


def _split(data: bytes, name: str) -> list:
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


def _record_content(rec: _Record) -> tuple:
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


def _encode_records(content: tuple) -> bytes:
    out = []
    for rtype, fields, data in content:
        if rtype in BINARY_TYPES:
            idc = int(dict(fields)[2])
            out.append((5 + len(data)).to_bytes(4, "big") + bytes([idc]) + data)
        else:
            out.append(_encode_text_record(rtype, fields, data))
    return b"".join(out)


# ----------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------


def _check_image_size(rec: _Record, width: int, height: int):
    if width <= 0 or height <= 0:
        rec.fail("HLL/VLL", f"image size {width}x{height} is empty")
    if width * height > MAX_IMAGE_PIXELS:
        rec.fail("HLL/VLL", f"image size {width}x{height} exceeds the limit of {MAX_IMAGE_PIXELS} pixels")


def _pillow_has_jpeg2000() -> bool:
    from PIL import features

    return bool(features.check("jpg_2000"))


def _decode(rec: _Record, compression: str, data: bytes, width: int, height: int, ppi: float, bpx: int = 8,
            *, exact_size: bool = False) -> np.ndarray:
    """Decoded pixels; with ``exact_size`` the compressed data's header must declare HLL x VLL (checked before decoding)."""
    from ..io import encoded_size, read_image

    label = f"{rec.where}: image data ({compression})"
    if compression == "NONE":
        if bpx != 8:
            rec.fail("BPX", f"uncompressed images with {bpx} bits per pixel are not supported (8 only)")
        if len(data) != width * height:
            rec.fail("DATA", f"uncompressed {width}x{height} image needs {width * height} bytes, found {len(data)}")
        source = np.frombuffer(data, dtype=np.uint8).reshape(height, width)
    elif compression == "JPEGL":
        rec.fail("CGA", "compression JPEGL (lossless JPEG) is not supported: no installed decoder reads it")
    elif compression in ("JP2", "JP2L") and not _pillow_has_jpeg2000():
        rec.fail("CGA", f"compression {compression} is not supported: this Pillow build lacks JPEG 2000 (OpenJPEG)")
    else:
        if compression == "WSQ20" and data[:2] != b"\xff\xa0":
            rec.fail("DATA", "declared WSQ but the data does not start with a WSQ marker")
        if exact_size:
            try:
                inner = encoded_size(data, label)
            except ImageError as exc:
                raise FormatError(str(exc)) from None
            if inner != (width, height):
                rec.fail("HLL/VLL", f"declare {width}x{height} but the {compression} data inside declares "
                                    f"{inner[0]}x{inner[1]} (corrupt record)")
        source = data
    try:
        # WSQ is decoded in a forked child by biomatch.io: a decoder crash becomes an ImageError
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = read_image(source, ppi=ppi, name=label, file_ppi_first=False).pixels
    except ImageError as exc:
        raise FormatError(str(exc)) from None
    except Exception as exc:  # a third-party decoder failing in a way biomatch.io does not map
        raise FormatError(f"{label}: cannot decode ({type(exc).__name__}: {exc})") from None
    if pixels.shape != (height, width):
        warnings.warn(f"{rec.where}: fields HLL/VLL declare {width}x{height} but the {compression} data holds "
                      f"{pixels.shape[1]}x{pixels.shape[0]}; the decoded size is used", FormatWarning, stacklevel=4)
    return pixels


def _ppi_checked(rec: _Record, ppi: float, what: str) -> float:
    if not (MIN_PPI <= ppi <= MAX_PPI):
        warnings.warn(f"{rec.where}: {what} resolution {ppi:g} ppi outside {MIN_PPI:g}-{MAX_PPI:g}; assuming {DEFAULT_PPI:g}",
                      FormatWarning, stacklevel=5)
        return DEFAULT_PPI
    return ppi


def _native_ppi(type1: _Record) -> float | None:
    raw = type1.fields.get(11)
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        return None
    return value * MM_PER_INCH if math.isfinite(value) and value > 0 else None


def _type4_image(rec: _Record, type1: _Record, decode: bool) -> TransactionImage:
    head = rec.data[:13]
    if len(head) < 13:
        rec.fail("4.003-4.008 header", f"truncated, {len(head)} of 13 bytes")
    impression = head[0]
    positions = tuple(b for b in head[1:7] if b != 255)
    isr = head[7]
    width = int.from_bytes(head[8:10], "big")
    height = int.from_bytes(head[10:12], "big")
    gca = head[12]
    if gca not in COMPRESSIONS:
        rec.fail("4.008 GCA", f"compression code {gca} is not one of {sorted(COMPRESSIONS)}")
    if isr not in (0, 1):
        rec.fail("4.005 ISR", f"{isr} is neither 0 (minimum) nor 1 (native resolution)")
    if isr == 0:
        ppi = MIN_SCANNING_PPMM * MM_PER_INCH
    else:
        native = _native_ppi(type1)
        if native is None:
            rec.fail("4.005 ISR", "says native resolution but 1.011 NSR holds none")
        ppi = native
    ppi = _ppi_checked(rec, ppi, "scanning")
    _check_image_size(rec, width, height)
    compression = COMPRESSIONS[gca]
    data = rec.data[13:]
    # a Type-4 header is binary and fixed: a WSQ frame that disagrees with it is corruption, not vendor habit
    pixels = _decode(rec, compression, data, width, height, ppi, exact_size=True) if decode else None
    if pixels is not None:
        height, width = pixels.shape
    return TransactionImage(4, rec.idc, positions[0] if positions else 0, positions, impression, ppi, width, height,
                            compression, data, pixels)


def _scale_ppi(rec: _Record, slc_tag: int, h_tag: int, what: str) -> float:
    slc = rec.number(slc_tag, "SLC", required=False, lo=0, hi=2, default=0)
    if slc in (1, 2):
        hps = rec.number(h_tag, "THPS", lo=1, hi=100000)
        ppi = hps if slc == 1 else hps * 2.54
        return _ppi_checked(rec, float(ppi), what)
    warnings.warn(f"{rec.where}: field {rec.type}.{slc_tag:03d} SLC gives no resolution; assuming {DEFAULT_PPI:g} ppi",
                  FormatWarning, stacklevel=4)
    return DEFAULT_PPI


def _type14_image(rec: _Record, decode: bool) -> TransactionImage:
    impression = rec.number(3, "IMP", lo=0, hi=99)
    width = rec.number(6, "HLL", lo=1, hi=99999)
    height = rec.number(7, "VLL", lo=1, hi=99999)
    _check_image_size(rec, width, height)
    ppi = _scale_ppi(rec, 8, 9, "transmitting")
    cga = (rec.text(11) or "").strip().upper()
    if cga not in _CGA_ALIASES:
        rec.fail("14.011 CGA", f"compression {cga[:20]!r} is not supported (NONE, WSQ20, JPEGB, JPEGL, JP2, JP2L, PNG)")
    compression = _CGA_ALIASES[cga]
    bpx = rec.number(12, "BPX", required=False, lo=1, hi=99, default=8)
    positions = []
    for sf in rec.items(13):
        for it in sf:
            try:
                positions.append(int(it))
            except ValueError:
                rec.fail("14.013 FGP", f"{it[:20]!r} is not a finger position code")
    if not positions:
        rec.fail("14.013 FGP", "is missing")
    if not rec.data:
        rec.fail("14.999 DATA", "holds no image data")
    segments = read_segments(rec, width, height)
    pixels = _decode(rec, compression, rec.data, width, height, ppi, bpx) if decode else None
    if pixels is not None:
        height, width = pixels.shape
    return TransactionImage(14, rec.idc, positions[0], tuple(positions), impression, ppi, width, height,
                            compression, rec.data, pixels, segments)


# ----------------------------------------------------------------------------
# Type-9 minutiae
# ----------------------------------------------------------------------------

_PLAIN_THUMBS = {11: 1, 12: 6}


def _single_finger(code: int) -> int | None:
    if 0 <= code <= 10:
        return code
    return _PLAIN_THUMBS.get(code)


def _make_template(rec: _Record, block: str, minutiae, width, height, ppi, position, quality=0) -> Template:
    try:
        return Template(minutiae, width, height, ppi, position, quality)
    except TemplateError as exc:
        raise FormatError(f"{rec.where}: {block} minutiae: {exc}") from None


def _incits_block(rec: _Record) -> tuple[Template, int, int]:
    width = rec.number(128, "HLL", lo=1, hi=16383)
    height = rec.number(129, "VLL", lo=1, hi=16383)
    slc = rec.number(130, "SLC", required=False, lo=0, hi=2, default=2)
    ppi = DEFAULT_PPI
    if slc in (1, 2) and 131 in rec.fields:
        hps = rec.number(131, "THPS", lo=1, hi=100000)
        ppi = _ppi_checked(rec, hps if slc == 1 else hps * 2.54, "9.131 THPS")
    else:
        warnings.warn(f"{rec.where}: fields 9.130/9.131 give no resolution; assuming {DEFAULT_PPI:g} ppi", FormatWarning, stacklevel=4)
    code = rec.number(134, "FGP", lo=0, hi=255)
    quality = 0
    fqd = rec.items(135)
    if fqd and fqd[0] and fqd[0][0].strip():
        quality = _int_item(rec, "9.135 FQD", fqd[0][0], 0, 255)
        quality = 0 if quality > 100 else quality
    count = rec.number(136, "NOM", lo=0, hi=MAX_MINUTIAE_PER_RECORD)
    rows = rec.items(137) if 137 in rec.fields else []
    if len(rows) != count:
        rec.fail("9.137 FMD", f"holds {len(rows)} minutiae but 9.136 NOM says {count}")
    x = np.zeros(count)
    y = np.zeros(count)
    a = np.zeros(count)
    t = np.zeros(count, dtype=np.uint8)
    q = np.zeros(count, dtype=np.uint8)
    for i, row in enumerate(rows):
        if len(row) < 5:
            rec.fail("9.137 FMD", f"minutia {i} has {len(row)} items, needs index, x, y, angle, type[, quality]")
        x[i] = _int_item(rec, f"9.137 FMD minutia {i} x", row[1], 0, width - 1)
        y[i] = _int_item(rec, f"9.137 FMD minutia {i} y", row[2], 0, height - 1)
        a[i] = _int_item(rec, f"9.137 FMD minutia {i} angle", row[3], 0, 179) * (math.pi / 90.0)
        t[i] = _int_item(rec, f"9.137 FMD minutia {i} type", row[4], 0, 2)
        q[i] = _int_item(rec, f"9.137 FMD minutia {i} quality", row[5], 0, 100) if len(row) > 5 and row[5].strip() else 0
    return (_make_template(rec, "9.137", make_minutiae(x, y, a, t, q), width, height, ppi, 0, quality),
            code, rec.number(133, "FVW", required=False, lo=0, hi=255, default=0))


def _efs_block(rec: _Record, ppi: float) -> Template:
    roi = rec.items(300)
    if not roi or len(roi[0]) < 2:
        rec.fail("9.300 ROI", "is missing or lacks width and height (needed for EFS minutiae)")
    r = roi[0]
    ewi = _int_item(rec, "9.300 ROI width", r[0], 1, 50000)
    ehi = _int_item(rec, "9.300 ROI height", r[1], 1, 50000)
    eho = _int_item(rec, "9.300 ROI horizontal offset", r[2], 0, 500000) if len(r) > 2 and r[2].strip() else 0
    evo = _int_item(rec, "9.300 ROI vertical offset", r[3], 0, 500000) if len(r) > 3 and r[3].strip() else 0
    px_per_unit = ppi / MM_PER_INCH / 100.0  # 0.01 mm units -> pixels
    width = max(1, int(math.ceil((eho + ewi) * px_per_unit)))
    height = max(1, int(math.ceil((evo + ehi) * px_per_unit)))
    rows = rec.items(331)
    if len(rows) > MAX_MINUTIAE_PER_RECORD:
        rec.fail("9.331 MIN", f"{len(rows)} minutiae, more than the limit {MAX_MINUTIAE_PER_RECORD}")
    n = len(rows)
    x, y, a = np.zeros(n), np.zeros(n), np.zeros(n)
    t = np.zeros(n, dtype=np.uint8)
    for i, row in enumerate(rows):
        if len(row) < 4:
            rec.fail("9.331 MIN", f"minutia {i} has {len(row)} items, needs x, y, theta, type")
        mx = _int_item(rec, f"9.331 MIN minutia {i} x", row[0], 0, ewi)
        my = _int_item(rec, f"9.331 MIN minutia {i} y", row[1], 0, ehi)
        x[i] = min((eho + mx) * px_per_unit, width - 1)
        y[i] = min((evo + my) * px_per_unit, height - 1)
        a[i] = math.radians(_int_item(rec, f"9.331 MIN minutia {i} theta", row[2], 0, 360) % 360)
        code = row[3].strip().upper()
        if code not in ("E", "B", "X"):
            rec.fail(f"9.331 MIN minutia {i} type", f"{code[:10]!r} is not E, B or X")
        t[i] = {"E": 1, "B": 2, "X": 0}[code]
    return _make_template(rec, "9.331", make_minutiae(x, y, a, t), width, height, ppi, 0)


def _legacy_block(rec: _Record, ppi: float, size: tuple | None) -> Template:
    count = rec.number(10, "MIN", lo=0, hi=MAX_MINUTIAE_PER_RECORD)
    rows = rec.items(12) if 12 in rec.fields else []
    if len(rows) != count:
        rec.fail("9.012 MRC", f"holds {len(rows)} minutiae but 9.010 MIN says {count}")
    px_per_unit = ppi / MM_PER_INCH / 100.0
    xs, ys, a = np.zeros(count), np.zeros(count), np.zeros(count)
    t = np.zeros(count, dtype=np.uint8)
    q = np.zeros(count, dtype=np.uint8)
    for i, row in enumerate(rows):
        if len(row) < 2:
            rec.fail("9.012 MRC", f"minutia {i} has {len(row)} items, needs index and XXXXYYYYTTT")
        xyt = row[1].strip()
        if len(xyt) == 11:
            parts = (xyt[:4], xyt[4:8], xyt[8:])
        elif len(xyt) == 13:
            parts = (xyt[:5], xyt[5:10], xyt[10:])
        else:
            rec.fail(f"9.012 MRC minutia {i}", f"position/direction {xyt[:20]!r} is not XXXXYYYYTTT")
        xs[i] = _int_item(rec, f"9.012 MRC minutia {i} x", parts[0], 0, 99999) * px_per_unit
        ys[i] = _int_item(rec, f"9.012 MRC minutia {i} y", parts[1], 0, 99999) * px_per_unit
        theta = _int_item(rec, f"9.012 MRC minutia {i} theta", parts[2], 0, 359)
        a[i] = math.radians((theta + 180) % 360)  # legacy direction points away from the ridge ending
        if len(row) > 2 and row[2].strip():
            # checked (0-63) but not mapped: the legacy scale does not translate to 0-100 quality
            _int_item(rec, f"9.012 MRC minutia {i} quality", row[2], 0, 63)
        if len(row) > 3:
            code = row[3].strip().upper()
            t[i] = {"A": 1, "B": 2}.get(code, 0)
    if size is None:
        width = int(math.ceil(xs.max())) + 1 if count else 1
        height = int(math.ceil(ys.max())) + 1 if count else 1
        warnings.warn(f"{rec.where}: no image record with IDC {rec.idc} gives the image size; the legacy minutiae "
                      f"(origin bottom-left) are placed in a {width}x{height} frame", FormatWarning, stacklevel=4)
    else:
        width, height = size
    y = height - ys
    if count and (xs.max() >= width + 1 or y.min() < -1):
        rec.fail("9.012 MRC", f"minutiae fall outside the {width}x{height} image of IDC {rec.idc}")
    y = np.clip(y, 0, height - 1)
    x = np.clip(xs, 0, width - 1)
    return _make_template(rec, "9.012", make_minutiae(x, y, a, t, q), width, height, ppi, 0)


def _type9(rec: _Record, type1: _Record, images: dict) -> TransactionTemplate | None:
    impression = rec.number(3, "IMP", required=False, lo=0, hi=99, default=0)
    image = images.get(rec.idc)
    if image is not None:
        ppi, size = image.ppi, (image.width, image.height)
    else:
        ppi, size = _native_ppi(type1), None
        if ppi is None or not (MIN_PPI <= ppi <= MAX_PPI):
            ppi = DEFAULT_PPI
    if 136 in rec.fields or 137 in rec.fields:
        template, code, _view = _incits_block(rec)
        block = "incits378"
    else:
        fgp = rec.items(6)
        code = _int_item(rec, "9.006 FGP", fgp[0][0], 0, 255) if fgp and fgp[0] and fgp[0][0].strip() else 0
        if 331 in rec.fields:
            block = "efs"
            efs_pos = rec.items(302)
            if efs_pos and efs_pos[0] and efs_pos[0][0].strip().isdigit():
                code = int(efs_pos[0][0])
        elif 12 in rec.fields or 10 in rec.fields:
            block = "legacy"
        else:
            warnings.warn(f"{rec.where}: no standard minutiae (9.010-9.012, 9.126-9.150, 9.331); record ignored",
                          FormatWarning, stacklevel=3)
            return None
        position = _single_finger(code)
        if position is None:
            warnings.warn(f"{rec.where}: finger position {code} is not a single finger; minutiae ignored", FormatWarning, stacklevel=3)
            return None
        template = _efs_block(rec, ppi) if block == "efs" else _legacy_block(rec, ppi, size)
    position = _single_finger(code)
    if position is None:
        warnings.warn(f"{rec.where}: finger position {code} is not a single finger; minutiae ignored", FormatWarning, stacklevel=3)
        return None
    template = Template(template.minutiae.copy(), template.width, template.height, template.ppi, position, template.quality)
    return TransactionTemplate(rec.idc, position, impression, block, template)


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------


def read_transaction(source, *, decode_images: bool = True, name: str | None = None) -> Transaction:
    """Read an ANSI/NIST-ITL transaction (traditional encoding).

    Parameters
    ----------
    source : str, os.PathLike or bytes
    decode_images : bool
        Decode finger images (WSQ via biomatch.io, PNG/JPEG/JPEG 2000 via
        Pillow, raw). With False, ``TransactionImage.pixels`` is None and only
        the record structure and image headers are checked.

    Returns
    -------
    Transaction

    Raises
    ------
    FormatError
        Naming the file, record and field: truncated records, LEN/CNT values
        that disagree with the data, unknown compression or an image that does
        not decode, minutiae outside the image, malformed numbers.
    """
    data, name = load_source(source, name, "transaction")
    records = _split(data, name)
    type1 = records[0]
    images = []
    by_idc: dict = {}
    for rec in records[1:]:
        if rec.type == 4:
            img = _type4_image(rec, type1, decode_images)
        elif rec.type == 14:
            img = _type14_image(rec, decode_images)
        else:
            continue
        images.append(img)
        by_idc.setdefault(img.idc, img)
    template_records = []
    templates: dict = {}
    for rec in records[1:]:
        if rec.type != 9:
            continue
        tt = _type9(rec, type1, by_idc)
        if tt is None:
            continue
        template_records.append(tt)
        if tt.position in templates and tt.position != 0:
            warnings.warn(f"{rec.where}: a second template for finger position {tt.position}; the first is kept in .templates",
                          FormatWarning, stacklevel=2)
        templates.setdefault(tt.position, tt.template)
    return Transaction(
        version=type1.text(2, "") or "",
        tot=type1.text(4, "") or "",
        ori=type1.text(8, "") or "",
        tcn=type1.text(9, "") or "",
        date=type1.text(5, "") or "",
        dai=type1.text(7, "") or "",
        records=tuple((r.type, r.idc) for r in records[1:]),
        images=tuple(images),
        template_records=tuple(template_records),
        templates=templates,
        name=name,
        content=tuple(_record_content(r) for r in records),
    )


def _scale_fields(ppi: float) -> dict:
    """9.130 SLC / 9.131 THPS / 9.132 TVPS in whichever unit states ``ppi`` exactly (px/cm as in INCITS 378 if both do)."""
    ppcm = ppi / 2.54
    if abs(ppcm - round(ppcm)) < 1e-6 or abs(ppi - round(ppi)) > 1e-6:
        return {130: "2", 131: str(int(round(ppcm))), 132: str(int(round(ppcm)))}
    return {130: "1", 131: str(int(round(ppi))), 132: str(int(round(ppi)))}


def _legacy_fields(t: Template, pos: int) -> dict:
    """Fields 9.005-9.012 for readers that know only the legacy block (empty if it cannot hold the template).

    Positions in 0.01 mm from the lower-left corner, direction in degrees
    pointing away from the ridge ending (INCITS 378 direction + 180).
    """
    m = t.minutiae
    units_per_px = 100.0 * MM_PER_INCH / t.ppi
    x = np.rint(m["x"].astype(np.float64) * units_per_px).astype(np.int64)
    y = np.rint((t.height - m["y"].astype(np.float64)) * units_per_px).astype(np.int64)
    theta = np.rint(np.degrees(m["angle"].astype(np.float64)) + 180.0).astype(np.int64) % 360
    if len(t) and (x.max() > 9999 or y.max() > 9999 or x.min() < 0 or y.min() < 0):
        return {}
    kind = {0: "D", 1: "A", 2: "B"}
    fields = {
        5: [["biomatch", "A"]],  # originating system, automatic encoding
        6: str(pos),
        7: [["T", "UN"]],  # pattern class: standard table, unknown
        10: str(len(t)),
        11: "0",  # no ridge counts
    }
    if len(t):
        fields[12] = [[f"{i + 1:03d}", f"{x[i]:04d}{y[i]:04d}{theta[i]:03d}", "0", kind[int(m["type"][i])]]
                      for i in range(len(t))]
    return fields


def write_transaction(templates, *, tot: str = "RES", ori: str, tcn: str, dai: str | None = None,
                      tcr: str | None = None, date: str | None = None, impression: int = 0) -> bytes:
    """Write a response transaction: a Type-1 record and one Type-9 record per template.

    Parameters
    ----------
    templates : Mapping[int, Template] or sequence of Template
        Finger position -> template (or templates carrying their positions).
    tot, ori, tcn, dai, tcr : str
        Type of transaction, originating agency, control number, destination
        agency (default: ``ori``), control reference (the request's TCN).
    date : str, optional
        1.005 DAT as YYYYMMDD (default: today, UTC).
    impression : int
        9.003 IMP written for every template.

    Returns
    -------
    bytes
        ANSI/NIST-ITL 1-2011 (1.002 VER 0500) traditional encoding. Each
        Type-9 carries the INCITS 378 block (9.126-9.137: pixels, top-left
        origin, 2-degree angles, quality), which :func:`read_transaction` reads
        back as the same template (coordinates rounded to whole pixels, angles
        to 2 degrees), and, for readers that know only it, the legacy block
        9.005-9.012 (0.01 mm from the lower-left corner; omitted, with 9.004
        FMT "U", when a coordinate exceeds its 4 digits).
    """
    import nistitl

    if isinstance(templates, Mapping):
        items = []
        for pos, t in templates.items():
            if not isinstance(t, Template):
                raise FormatError(f"write_transaction: position {pos!r}: expected a Template, got {type(t).__name__}")
            items.append((int(pos), t))
    else:
        items = []
        for i, t in enumerate(templates):
            if not isinstance(t, Template):
                raise FormatError(f"write_transaction: item {i}: expected a Template, got {type(t).__name__}")
            items.append((t.position, t))
    if len(items) > 99:
        raise FormatError(f"write_transaction: {len(items)} templates, at most 99 Type-9 records")
    for pos, t in items:
        if not 0 <= pos <= 10:
            raise FormatError(f"write_transaction: finger position {pos} is not an FGP code 0-10")
        if len(t) > 999:
            raise FormatError(f"write_transaction: position {pos}: {len(t)} minutiae, at most 999")
    if not 0 <= int(impression) <= 99:
        raise FormatError(f"write_transaction: impression {impression} outside 0-99")
    msg = type1_message("write_transaction", tot, ori, tcn, dai, date)
    r1 = msg[0]
    if tcr:
        r1.TCR = check_text(tcr, "TCR", 99)
    for idc, (pos, t) in enumerate(items, start=1):
        r9 = nistitl.AsciiRecord(9)
        r9.IDC = idc
        m = t.minutiae
        x = np.clip(np.rint(m["x"].astype(np.float64)).astype(np.int64), 0, t.width - 1)
        y = np.clip(np.rint(m["y"].astype(np.float64)).astype(np.int64), 0, t.height - 1)
        ang = np.rint(m["angle"].astype(np.float64) * (90.0 / math.pi)).astype(np.int64) % 180
        fields = {
            3: str(int(impression)),
            4: "S",
            **_legacy_fields(t, pos),
            126: [["27", "513", "0"]],  # CBEFF format owner (INCITS M1), format type, product id
            127: [["0", "0"]],
            128: str(t.width),
            129: str(t.height),
            **_scale_fields(t.ppi),
            133: "0",
            134: str(pos),
            135: [[str(t.quality), "0", "0"]],
            136: str(len(t)),
        }
        if len(t):
            fields[137] = [[str(i + 1), str(x[i]), str(y[i]), str(ang[i]), str(int(m["type"][i])), str(int(m["quality"][i]))]
                           for i in range(len(t))]
        if 10 not in fields:
            fields[4] = "U"  # coordinates beyond the legacy 4-digit range: INCITS 378 block only
        for tag, value in sorted(fields.items()):
            r9 += nistitl.Field(9, tag, value)
        msg += r9
    return msg.NIST
