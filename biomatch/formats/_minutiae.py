"""ISO/IEC 19794-2 (2005, 2011) and ANSI INCITS 378 (2004, 2009) finger minutiae records.

Written by hand: no maintained Python library reads and writes these records
(the field uses NIST libbiomeval/biomdi in C/C++, FingerprintIO in Java).
Layouts follow the standards:

* common to all: minutiae are 6 bytes (2-bit type + 14-bit x, 2 reserved bits
  + 14-bit y, 1-byte angle, 1-byte quality), origin top-left, angle measured
  counter-clockwise from the x axis; type 00 other, 01 ridge ending,
  10 bifurcation; resolution in pixels per centimetre; an extended data block
  (2-byte total length, then areas of type-id(2) + length(2, header included)
  + data) follows each view's minutiae.
* ISO/IEC 19794-2:2005 (``FMR\\0`` `` 20\\0``): 24-byte header with a 4-byte
  record length; 4-byte view header (position, view<<4 | impression, quality,
  count); angle unit 360/256 degrees.
* ANSI INCITS 378-2004 (``FMR\\0`` `` 20\\0``): 26-byte header with a 2-byte
  record length (0 then a 4-byte length for records over 65535 bytes) and a
  CBEFF product id; views as in ISO 2005; angle unit 2 degrees (0-179).
* ANSI INCITS 378-2009 (``FMR\\0`` ``030\\0``, or ``035\\0`` after
  Amendment 1): 21-byte header (4-byte length, CBEFF product id, device
  certification byte, 2-byte device id, view count, reserved); each view
  carries its own image size, resolution, a full-byte view number and
  impression, and the finger-quality algorithm owner/id; angle unit 2 degrees.
  NIST libbiomeval also reads a 2007 draft of this revision ("ANSI 2007",
  its ``fmr.ansi2007`` sample): the same views behind a 20-byte header whose
  equipment field is ISO 2005's (4-bit certification, 12-bit device id);
  biomatch reads and writes it as ``"ansi2007"``.
* ISO/IEC 19794-2:2011 (``FMR\\0`` ``030\\0``): 15-byte general header
  (4-byte length, 2-byte representation count, certification flag); each
  representation has its own length, capture date-time, device ids, quality
  blocks, optional certification blocks, then position, view, resolution,
  impression, image size, minutia record size (5 or 6 bytes: without or with
  quality) and ending type; angle unit 360/256 degrees; quality 254 means
  "not reported", 255 "failed to compute".

In the :class:`~biomatch.template.Template` both angle units map to radians
with the same counter-clockwise convention; 2009/2011 quality 254/255 map to
0 (unknown) and back to 254 when written.
"""

from __future__ import annotations

import math
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, TemplateError
from ..template import MAX_PPI, MIN_PPI, Template, make_minutiae
from ._common import ByteReader, FormatWarning, load_source

__all__ = [
    "FORMATS",
    "FingerView",
    "MinutiaeRecord",
    "detect_format",
    "read_record",
    "read_templates",
    "load_template",
    "write_record",
    "write_iso",
    "write_ansi",
    "DEFAULT_PPI",
    "CM_PER_INCH",
]

FORMATS = {
    "iso2005": "ISO/IEC 19794-2:2005",
    "iso2011": "ISO/IEC 19794-2:2011",
    "ansi2004": "ANSI INCITS 378-2004",
    "ansi2009": "ANSI INCITS 378-2009",
    "ansi2007": "ANSI INCITS 378 2007-draft",
}

CM_PER_INCH = 2.54
#: Resolution assumed (with a FormatWarning) when a record states none or an absurd one.
DEFAULT_PPI = 500.0
_MAGIC = b"FMR\x00"
_V20 = b" 20\x00"
#: " 20" as some SDKs write it in ANSI INCITS 378-2004 records: read as the same version.
_V20_ZERO = b"020\x00"
_V30 = b"030\x00"
_V35 = b"035\x00"  # INCITS 378-2009/AM1-2010: the 2009 layout under its own version number
_MAX_14BIT = 0x3FFF
_QUALITY_NOT_REPORTED = 254  # 2009/2011 special values: 254 not reported, 255 failed
_ISO_ANGLE_UNITS = 256  # per full turn
_ANSI_ANGLE_UNITS = 180  # 2-degree units
_MINUTIA = np.dtype([("tx", ">u2"), ("ry", ">u2"), ("angle", "u1"), ("quality", "u1")])
_MINUTIA5 = np.dtype([("tx", ">u2"), ("ry", ">u2"), ("angle", "u1")])
#: ISO/ANSI finger position codes beyond the ten fingers: plain thumbs map to the thumb.
_PLAIN_THUMBS = {11: 1, 12: 6}
_MULTI_FINGER = {13: "plain right four fingers", 14: "plain left four fingers", 15: "plain thumbs"}


@dataclass(frozen=True, eq=False)
class FingerView:
    """One finger view of a minutiae record.

    Attributes
    ----------
    template : Template
        The minutiae in biomatch's convention (pixels of the record's image
        frame, radians counter-clockwise, quality 0-100).
    view : int
        View number of this finger (0-15; 0-255 in ANSI 378-2009).
    impression : int
        Impression type code (0 live-scan plain, 1 live-scan rolled, 2/3
        non-live-scan plain/rolled, 8 swipe, ...).
    position_code : int
        Finger position code as stored in the record (11/12, plain thumbs,
        read as template position 1/6).
    extended : tuple of (int, bytes)
        Extended data areas (type id, data), kept verbatim so that a record
        can be written back unchanged; biomatch does not interpret them.
    extras : dict
        Format-specific fields kept for rewriting (quality algorithm ids,
        capture date-time, device ids, certification blocks, ending type).
    """

    template: Template
    view: int = 0
    impression: int = 0
    position_code: int | None = None
    extended: tuple = ()
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.position_code is None:
            object.__setattr__(self, "position_code", self.template.position)

    def __eq__(self, other):
        if not isinstance(other, FingerView):
            return NotImplemented
        return (
            self.template == other.template
            and (self.view, self.impression, self.position_code, tuple(self.extended))
            == (other.view, other.impression, other.position_code, tuple(other.extended))
        )

    __hash__ = None


@dataclass(frozen=True, eq=False)
class MinutiaeRecord:
    """A parsed finger minutiae record.

    Attributes
    ----------
    format : str
        One of ``"iso2005"``, ``"iso2011"``, ``"ansi2004"``, ``"ansi2009"``,
        ``"ansi2007"`` (the 2007 draft layout NIST libbiomeval reads).
    views : tuple of FingerView
    header : dict
        Record-level fields kept for rewriting (CBEFF product id, capture
        equipment id and certification, certification flag).
    """

    format: str
    views: tuple
    header: dict = field(default_factory=dict)

    @property
    def templates(self) -> list:
        return [v.template for v in self.views]

    def __eq__(self, other):
        if not isinstance(other, MinutiaeRecord):
            return NotImplemented
        return self.format == other.format and tuple(self.views) == tuple(other.views)

    __hash__ = None


# ----------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------


def detect_format(data: bytes) -> str | None:
    """Guess the record family from the first bytes.

    Returns ``"biomatch"``, ``"fmr20"`` (ISO 2005 or ANSI 2004), ``"fmr30"``
    (ISO 2011 or ANSI 2009), ``"an2k"`` (ANSI/NIST-ITL) or None.
    """
    head = bytes(data[:16])
    if head.startswith(b"BMT"):
        return "biomatch"
    if head.startswith(_MAGIC):
        version = head[4:8]
        if version in (_V20, _V20_ZERO):
            return "fmr20"
        if version == _V30:
            return "fmr30"
        if version == _V35:
            return "fmr35"
        return "fmr?"
    if head.startswith(b"1.001:") or head.startswith(b"1.01:"):
        return "an2k"
    return None


def _ppi_from_ppcm(xres: int, yres: int, where: str) -> float:
    if xres != yres:
        warnings.warn(
            f"{where}: horizontal and vertical resolutions differ ({xres} and {yres} px/cm); using the horizontal one",
            FormatWarning,
            stacklevel=4,
        )
    ppi = xres * CM_PER_INCH
    if not (MIN_PPI <= ppi <= MAX_PPI):
        warnings.warn(
            f"{where}: resolution {xres} px/cm ({ppi:g} ppi) is missing or outside {MIN_PPI:g}-{MAX_PPI:g} ppi; "
            f"assuming {DEFAULT_PPI:g} ppi",
            FormatWarning,
            stacklevel=4,
        )
        ppi = DEFAULT_PPI
    return ppi


def _template_position(code: int, where: str) -> int:
    if 0 <= code <= 10:
        return code
    if code in _PLAIN_THUMBS:
        return _PLAIN_THUMBS[code]
    if code in _MULTI_FINGER:
        raise FormatError(
            f"{where}: field 'finger position': code {code} ({_MULTI_FINGER[code]}) is not a single finger; "
            "a minutiae template needs one finger (codes 0-12)"
        )
    raise FormatError(f"{where}: field 'finger position': code {code} is not a finger position code (0-15)")


def _read_minutiae(r: ByteReader, count: int, size: int, angle_units: int, width: int, height: int,
                   special_quality: bool, where: str) -> np.ndarray:
    raw = r.take(count * size, f"minutiae ({count} x {size} bytes)")
    rec = np.frombuffer(raw, dtype=_MINUTIA if size == 6 else _MINUTIA5, count=count)
    mtype = (rec["tx"] >> 14).astype(np.uint8)
    x = (rec["tx"] & _MAX_14BIT).astype(np.int64)
    y = (rec["ry"] & _MAX_14BIT).astype(np.int64)
    angle = rec["angle"].astype(np.int64)
    if size == 6:
        quality = rec["quality"].astype(np.int64)
    else:
        quality = np.zeros(count, dtype=np.int64)
    if count:
        bad = np.flatnonzero(mtype == 3)
        if bad.size:
            raise FormatError(f"{where}: minutia {bad[0]}: field 'type': code 3 is reserved (0 other, 1 ending, 2 bifurcation)")
        bad = np.flatnonzero((x >= width) | (y >= height))
        if bad.size:
            i = bad[0]
            raise FormatError(
                f"{where}: minutia {i}: field 'x/y': ({x[i]}, {y[i]}) lies outside the {width}x{height} image"
            )
        if angle_units < 256:
            bad = np.flatnonzero(angle >= angle_units)
            if bad.size:
                raise FormatError(
                    f"{where}: minutia {bad[0]}: field 'angle': {angle[bad[0]]} exceeds {angle_units - 1} (2-degree units)"
                )
        if special_quality:
            quality[quality >= _QUALITY_NOT_REPORTED] = 0
        bad = np.flatnonzero(quality > 100)
        if bad.size:
            raise FormatError(f"{where}: minutia {bad[0]}: field 'quality': {quality[bad[0]]} outside 0-100")
    return make_minutiae(x, y, angle * (2.0 * math.pi / angle_units), mtype, quality)


def _read_extended(r: ByteReader, where: str, tail_end: int | None = None) -> tuple[tuple, bytes | None]:
    """Read a view's extended data block; return (areas, None) or ((), raw block) when malformed.

    ``tail_end`` is where the view must end when that is known from a length
    field (last view of a record whose length field matches the input, or an
    ISO 2011 representation). There a malformed extended data block (area
    lengths that disagree with the block or record length, as in some
    real-world and NIST test files) is kept as raw bytes with a FormatWarning
    instead of failing: biomatch does not use extended data.
    """
    start = r.pos
    try:
        areas = _parse_extended(r, where)
        if tail_end is None or r.pos == tail_end:
            return areas, None
        if tail_end == len(r.data) and r.pos < tail_end and not any(r.data[r.pos:tail_end]):
            return areas, None  # zero padding after the record, counted in its length: the record reader warns
        problem = f"extended data block ends at byte {r.pos}, but the {'record' if tail_end == len(r.data) else 'representation'} ends at {tail_end}"
    except FormatError as exc:
        if tail_end is None or tail_end - start < 2:
            raise
        problem = str(exc).split(": field ", 1)[-1]
    warnings.warn(f"{where}: extended data block is malformed ({problem}); skipped, kept as raw bytes", FormatWarning, stacklevel=5)
    r.pos = tail_end
    return (), bytes(r.data[start:tail_end])


def _parse_extended(r: ByteReader, where: str) -> tuple:
    total = r.u16("extended data block length")
    r.need(total, "extended data block")
    end = r.pos + total
    areas = []
    while r.pos < end:
        sub = ByteReader(r.data, where, r.pos, end)
        type_id = sub.u16(f"extended data area {len(areas)} type")
        length = sub.u16(f"extended data area {len(areas)} length")
        if length < 4 or length > end - r.pos:
            raise FormatError(
                f"{where}: field 'extended data area {len(areas)} length': {length} bytes does not fit the "
                f"{end - r.pos} bytes left in the {total}-byte extended data block"
            )
        areas.append((type_id, bytes(r.data[r.pos + 4 : r.pos + length])))
        r.pos += length
    return tuple(areas)


def _finger_quality(q: int, where: str, special: bool) -> int:
    if special and q >= _QUALITY_NOT_REPORTED:
        return 0
    if q > 100:
        raise FormatError(f"{where}: field 'finger quality': {q} outside 0-100")
    return q


def _make_view(where, minutiae, width, height, ppi, code, quality, **kw) -> FingerView:
    position = _template_position(code, where)
    try:
        template = Template(minutiae, width, height, ppi, position, quality)
    except TemplateError as exc:
        raise FormatError(f"{where}: {exc}") from None
    return FingerView(template=template, position_code=code, **kw)


def _check_size(width: int, height: int, where: str) -> None:
    if not (1 <= width <= _MAX_14BIT and 1 <= height <= _MAX_14BIT):
        raise FormatError(f"{where}: field 'image size': {width}x{height} is outside 1..{_MAX_14BIT} pixels")


def _parse_fmr20(data: bytes, name: str, ansi: bool) -> tuple[MinutiaeRecord, int, int]:
    fmt = "ansi2004" if ansi else "iso2005"
    label = f"{name}: {FORMATS[fmt]} record"
    r = ByteReader(data, label)
    r.take(8, "format identifier")
    header = {}
    if ansi:
        declared = r.u16("record length")
        if declared == 0:
            declared = r.u32("record length (extended)")
        header["product_owner"] = r.u16("CBEFF product owner")
        header["product_type"] = r.u16("CBEFF product type")
    else:
        declared = r.u32("record length")
    equipment = r.u16("capture equipment")
    header["equipment_certification"] = equipment >> 12
    header["device_id"] = equipment & 0x0FFF
    width = r.u16("image width")
    height = r.u16("image height")
    xres = r.u16("x resolution")
    yres = r.u16("y resolution")
    nviews = r.u8("number of finger views")
    r.u8("reserved")
    _check_size(width, height, label)
    ppi = None
    views = []
    for i in range(nviews):
        where = f"{label}, view {i}"
        r.where = where
        code = r.u8("finger position")
        vi = r.u8("view number/impression type")
        quality = _finger_quality(r.u8("finger quality"), where, special=False)
        count = r.u8("number of minutiae")
        minutiae = _read_minutiae(r, count, 6, _ANSI_ANGLE_UNITS if ansi else _ISO_ANGLE_UNITS,
                                  width, height, False, where)
        last = i == nviews - 1 and declared == len(data)
        extended, raw = _read_extended(r, where, len(data) if last else None)
        if ppi is None:
            ppi = _ppi_from_ppcm(xres, yres, label)
        views.append(_make_view(where, minutiae, width, height, ppi, code, quality,
                                view=vi >> 4, impression=vi & 0x0F, extended=extended,
                                extras={"extended_raw": raw} if raw is not None else {}))
    if ppi is None:
        ppi = _ppi_from_ppcm(xres, yres, label)
    header.update(width=width, height=height, ppi=ppi)
    return MinutiaeRecord(fmt, tuple(views), header), declared, r.pos


def _parse_ansi2009(data: bytes, name: str, draft: bool = False) -> tuple[MinutiaeRecord, int, int]:
    fmt = "ansi2007" if draft else "ansi2009"
    label = f"{name}: {FORMATS[fmt]} record"
    r = ByteReader(data, label)
    r.take(8, "format identifier")
    declared = r.u32("record length")
    header = {"product_owner": r.u16("CBEFF product owner"), "product_type": r.u16("CBEFF product type")}
    if draft:
        equipment = r.u16("capture equipment")
        header["equipment_certification"] = equipment >> 12
        header["device_id"] = equipment & 0x0FFF
    else:
        cert = r.u8("device certification")
        header["certification_byte"] = cert
        header["equipment_certification"] = 1 if cert & 0x80 else 0
        header["device_id"] = r.u16("capture device id")
    nviews = r.u8("number of finger views")
    r.u8("reserved")
    views = []
    for i in range(nviews):
        where = f"{label}, view {i}"
        r.where = where
        code = r.u8("finger position")
        view = r.u8("view number")
        impression = r.u8("impression type")
        quality_raw = r.u8("finger quality")
        quality = _finger_quality(quality_raw, where, special=True)
        qvendor = r.u16("finger quality algorithm owner")
        qalgo = r.u16("finger quality algorithm id")
        width = r.u16("image width")
        height = r.u16("image height")
        xres = r.u16("x resolution")
        yres = r.u16("y resolution")
        _check_size(width, height, where)
        count = r.u8("number of minutiae")
        minutiae = _read_minutiae(r, count, 6, _ANSI_ANGLE_UNITS, width, height, True, where)
        last = i == nviews - 1 and declared == len(data)
        extended, raw = _read_extended(r, where, len(data) if last else None)
        ppi = _ppi_from_ppcm(xres, yres, where)
        views.append(_make_view(where, minutiae, width, height, ppi, code, quality, view=view,
                                impression=impression, extended=extended,
                                extras={"quality_owner": qvendor, "quality_algorithm": qalgo,
                                        "finger_quality_raw": quality_raw, "extended_raw": raw}))
    if not draft:
        header["version"] = bytes(data[4:8])
    return MinutiaeRecord(fmt, tuple(views), header), declared, r.pos


def _parse_iso2011(data: bytes, name: str) -> tuple[MinutiaeRecord, int, int]:
    label = f"{name}: {FORMATS['iso2011']} record"
    r = ByteReader(data, label)
    r.take(8, "format identifier")
    declared = r.u32("record length")
    nreps = r.u16("number of finger representations")
    cert_flag = r.u8("certification flag")
    if cert_flag > 1:
        r.fail("certification flag", f"{cert_flag} is neither 0 nor 1")
    # each representation needs at least 34 bytes; refuse absurd counts before looping
    if nreps * 34 > r.remaining:
        r.fail("number of finger representations", f"{nreps} representations cannot fit in {r.remaining} bytes")
    views = []
    for i in range(nreps):
        where = f"{label}, representation {i}"
        r.where = where
        start = r.pos
        length = r.u32("representation length")
        if length < 34 or length > r.remaining + 4:
            r.fail("representation length", f"{length} bytes does not fit the {r.remaining + 4} bytes left")
        rep = ByteReader(data, where, r.pos, start + length)
        extras = {"capture_datetime": rep.take(9, "capture date and time")}
        extras["device_technology"] = rep.u8("capture device technology")
        extras["device_vendor"] = rep.u16("capture device vendor")
        extras["device_type"] = rep.u16("capture device type")
        nq = rep.u8("number of quality blocks")
        blocks = []
        for j in range(nq):
            blocks.append((rep.u8(f"quality block {j} score"), rep.u16(f"quality block {j} owner"),
                           rep.u16(f"quality block {j} algorithm")))
        extras["quality_blocks"] = tuple(blocks)
        certs = []
        if cert_flag:
            nc = rep.u8("number of certification blocks")
            for j in range(nc):
                certs.append((rep.u16(f"certification block {j} authority"), rep.u8(f"certification block {j} scheme")))
        extras["certification_blocks"] = tuple(certs)
        code = rep.u8("finger position")
        view = rep.u8("representation number")
        xres = rep.u16("x resolution")
        yres = rep.u16("y resolution")
        impression = rep.u8("impression type")
        width = rep.u16("image width")
        height = rep.u16("image height")
        _check_size(width, height, where)
        flags = rep.u8("minutia field length/ridge ending type")
        size = flags >> 4
        if size not in (5, 6):
            rep.fail("minutia field length", f"{size} bytes per minutia, must be 5 or 6")
        extras["ending_type"] = flags & 0x0F
        count = rep.u8("number of minutiae")
        minutiae = _read_minutiae(rep, count, size, _ISO_ANGLE_UNITS, width, height, True, where)
        extended, extras["extended_raw"] = _read_extended(rep, where, rep.end)
        if rep.pos != rep.end:
            rep.fail("representation length", f"declares {length} bytes but its fields end after {rep.pos - start}")
        r.pos = rep.pos
        quality = 0
        if blocks:
            quality = _finger_quality(blocks[0][0], where, special=True)
        ppi = _ppi_from_ppcm(xres, yres, where)
        views.append(_make_view(where, minutiae, width, height, ppi, code, quality, view=view,
                                impression=impression, extended=extended, extras=extras))
    header = {"certification_flag": cert_flag}
    return MinutiaeRecord("iso2011", tuple(views), header), declared, r.pos


_PARSERS = {
    "iso2005": lambda d, n: _parse_fmr20(d, n, ansi=False),
    "ansi2004": lambda d, n: _parse_fmr20(d, n, ansi=True),
    "iso2011": _parse_iso2011,
    "ansi2009": _parse_ansi2009,
    "ansi2007": lambda d, n: _parse_ansi2009(d, n, draft=True),
}


def _try(fmt: str, data: bytes, name: str):
    """Parse as one format; return (record, problem or None, warnings raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            record, declared, consumed = _PARSERS[fmt](data, name)
        except FormatError as exc:
            return None, str(exc), []
    label = f"{name}: {FORMATS[fmt]} record"
    if consumed < len(data) and declared in (consumed, len(data)) and not any(data[consumed:]):
        # zero padding after the record (common in records that real systems write): read, with a warning
        caught.append(warnings.WarningMessage(
            f"{label}: {len(data) - consumed} zero bytes of padding after the record's {consumed} bytes; ignored",
            FormatWarning, __file__, 0))
        return record, None, caught
    if consumed != len(data):
        return None, f"{label}: field 'record length': the record's fields end after {consumed} bytes but the input holds {len(data)}", []
    if declared != len(data):
        return record, f"{label}: field 'record length': declares {declared} bytes but the record's fields hold {len(data)}", caught
    return record, None, caught


def read_record(source, *, format: str | None = None, name: str | None = None) -> MinutiaeRecord:
    """Read an ISO/IEC 19794-2 or ANSI INCITS 378 finger minutiae record.

    Parameters
    ----------
    source : str, os.PathLike or bytes
    format : {"iso2005", "iso2011", "ansi2004", "ansi2009", "ansi2007"}, optional
        Force a format; by default it is detected from the bytes (the version
        string, then which layout accounts for every byte).
    name : str, optional
        Label for messages (default: the file name).

    Raises
    ------
    FormatError
        Naming the file, record, view and field: truncation, lengths or counts
        that disagree, unknown versions, coordinates outside the image,
        reserved codes.
    """
    data, name = load_source(source, name, "minutiae record")
    return _read_record_bytes(data, name, format)


def _read_record_bytes(data: bytes, name: str, format: str | None = None) -> MinutiaeRecord:
    if format is not None:
        if format not in FORMATS:
            raise FormatError(f"format {format!r} is not one of {sorted(FORMATS)}")
        candidates = [format]
    else:
        kind = detect_format(data)
        if kind == "fmr20":
            candidates = ["iso2005", "ansi2004"]
        elif kind == "fmr30":
            candidates = ["iso2011", "ansi2009", "ansi2007"]
        elif kind == "fmr35":
            candidates = ["ansi2009"]
        elif kind == "fmr?":
            raise FormatError(f"{name}: field 'version': {bytes(data[4:8])!r} is not a known finger minutiae record "
                              "version (' 20' or '020' for ISO 2005/ANSI 2004, '030' for ISO 2011/ANSI 2009, "
                              "'035' for ANSI 2009/AM1)")
        elif kind == "an2k":
            raise FormatError(f"{name}: is an ANSI/NIST-ITL transaction, not a minutiae record; read it with read_transaction")
        else:
            raise FormatError(f"{name}: not a finger minutiae record (format identifier {bytes(data[:4])!r}, expected b'FMR\\x00')")
    if format is not None and bytes(data[:4]) != _MAGIC:
        raise FormatError(f"{name}: field 'format identifier': {bytes(data[:4])!r}, expected b'FMR\\x00'")
    results = [(fmt, *_try(fmt, data, name)) for fmt in candidates]
    chosen = None
    for fmt, record, problem, caught in results:
        if record is not None and problem is None:
            chosen = (record, caught)
            break
    else:
        for fmt, record, problem, caught in results:
            if record is not None:
                # Every byte is accounted for by the layout; only the length field disagrees
                # (the ISO 19794-2:2005 worked example itself does this). Keep the record, say so.
                chosen = (record, caught)
                warnings.warn(problem + "; using the record's fields", FormatWarning, stacklevel=3)
                break
    if chosen is None:
        raise FormatError(" | ".join(p for _, _, p, _ in results))
    for w in chosen[1]:
        warnings.warn(w.message, w.category, stacklevel=3)
    return chosen[0]


def read_templates(source, *, name: str | None = None) -> list:
    """Every finger view of a minutiae record (or a biomatch template) as a list of Template.

    Each Template carries its finger position; view numbers and impression
    types are in :func:`read_record`'s :class:`FingerView` objects.
    """
    data, name = load_source(source, name, "template")
    if detect_format(data) == "biomatch":
        return [_from_biomatch(data, name)]
    return _read_record_bytes(data, name).templates


def _from_biomatch(data: bytes, name: str) -> Template:
    try:
        return Template.from_bytes(data, name=name)
    except TemplateError as exc:
        raise FormatError(str(exc)) from None


def load_template(source, *, view: int = 0, name: str | None = None) -> Template:
    """Load one finger template from ISO 19794-2, ANSI 378 or biomatch bytes.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A file or its bytes; the format is detected from the content.
    view : int
        Which finger view of a multi-view record (0-based, in record order).

    Returns
    -------
    Template
        Coordinates in the record's own image frame (not remapped), angles in
        radians counter-clockwise, resolution from the record (500 ppi with a
        :class:`FormatWarning` when it states none or an absurd one).

    Raises
    ------
    FormatError
        Anything wrong with the bytes, or ``view`` beyond the record's views.
    """
    templates = read_templates(source, name=name)
    label = name or (str(source) if not isinstance(source, (bytes, bytearray, memoryview)) else "template bytes")
    if not isinstance(view, (int, np.integer)) or isinstance(view, bool):
        raise FormatError(f"{label}: view must be an integer, got {type(view).__name__}")
    if not templates:
        raise FormatError(f"{label}: field 'number of finger views': the record holds no finger view")
    if not 0 <= view < len(templates):
        raise FormatError(f"{label}: view {view} requested but the record holds {len(templates)} view(s)")
    return templates[int(view)]


# ----------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------


def _views_from(source, fmt: str) -> tuple[tuple, dict]:
    if isinstance(source, MinutiaeRecord):
        return tuple(source.views), dict(source.header)
    if isinstance(source, FingerView):
        return (source,), {}
    if isinstance(source, Template):
        return (FingerView(source),), {}
    try:
        items = list(source)
    except TypeError:
        raise FormatError(f"cannot write a {type(source).__name__} as {FORMATS[fmt]}; give Template(s) or a MinutiaeRecord") from None
    views = []
    counts: dict = {}
    for i, item in enumerate(items):
        if isinstance(item, FingerView):
            views.append(item)
        elif isinstance(item, Template):
            # number repeated fingers 0, 1, 2... as the standards ask
            n = counts.get(item.position, 0)
            counts[item.position] = n + 1
            views.append(FingerView(item, view=n))
        else:
            raise FormatError(f"item {i}: cannot write a {type(item).__name__} as {FORMATS[fmt]}; give Templates")
    return tuple(views), {}


def _encode_minutiae(t: Template, fmt: str, size: int = 6) -> bytes:
    m = t.minutiae
    units = _ANSI_ANGLE_UNITS if fmt.startswith("ansi") else _ISO_ANGLE_UNITS
    x = np.rint(m["x"].astype(np.float64)).astype(np.int64)
    y = np.rint(m["y"].astype(np.float64)).astype(np.int64)
    x = np.clip(x, 0, t.width - 1)
    y = np.clip(y, 0, t.height - 1)
    angle = np.rint(m["angle"].astype(np.float64) * (units / (2.0 * math.pi))).astype(np.int64) % units
    rec = np.zeros(m.size, dtype=_MINUTIA if size == 6 else _MINUTIA5)
    rec["tx"] = (m["type"].astype(np.int64) << 14) | x
    rec["ry"] = y
    rec["angle"] = angle
    if size == 6:
        q = m["quality"].astype(np.int64)
        if fmt in ("iso2011",):
            q = np.where(q == 0, _QUALITY_NOT_REPORTED, q)
        rec["quality"] = q
    return rec.tobytes()


def _encode_extended(view: FingerView, where: str) -> bytes:
    raw = view.extras.get("extended_raw")
    if raw is not None and not view.extended:
        return bytes(raw)  # a malformed block read as-is is written back as-is
    body = b"".join(struct.pack(">HH", int(t), len(d) + 4) + bytes(d) for t, d in view.extended)
    if len(body) > 0xFFFF or any(len(d) + 4 > 0xFFFF for _, d in view.extended):
        raise FormatError(f"{where}: extended data of {len(body)} bytes does not fit its 16-bit length")
    return struct.pack(">H", len(body)) + body


def _ppcm(ppi: float) -> int:
    return int(round(ppi / CM_PER_INCH))


def _check_writable(view: FingerView, index: int, fmt: str) -> str:
    where = f"{FORMATS[fmt]} view {index}"
    t = view.template
    if len(t) > 255:
        raise FormatError(f"{where}: {len(t)} minutiae, the format holds at most 255 per view")
    if not 0 <= view.position_code <= 255:
        raise FormatError(f"{where}: finger position code {view.position_code} does not fit a byte")
    limit = 255 if fmt in ("ansi2009", "ansi2007", "iso2011") else 15
    if not 0 <= view.view <= limit or not 0 <= view.impression <= limit:
        raise FormatError(f"{where}: view number {view.view} or impression {view.impression} out of range for this format")
    return where


def write_record(source, format: str) -> bytes:
    """Encode templates or a :class:`MinutiaeRecord` as a minutiae record.

    Parameters
    ----------
    source : Template, FingerView, MinutiaeRecord or sequence of Template/FingerView
    format : {"iso2005", "iso2011", "ansi2004", "ansi2009", "ansi2007"}

    Returns
    -------
    bytes
        The record. Coordinates are rounded to whole pixels, angles to the
        format's unit; header fields of a MinutiaeRecord read from the same
        format are written back unchanged.
    """
    if format not in FORMATS:
        raise FormatError(f"format {format!r} is not one of {sorted(FORMATS)}")
    views, header = _views_from(source, format)
    if isinstance(source, MinutiaeRecord) and source.format != format:
        header = {k: v for k, v in header.items() if k in ("product_owner", "product_type", "device_id", "equipment_certification")}
        if format in ("iso2005", "ansi2004", "ansi2007"):
            header["device_id"] = int(header.get("device_id", 0)) & 0x0FFF
    if len(views) > 255 and format != "iso2011":
        raise FormatError(f"{FORMATS[format]}: {len(views)} views, at most 255")
    equipment = ((int(header.get("equipment_certification", 0)) & 0xF) << 12) | (int(header.get("device_id", 0)) & 0x0FFF)
    product = struct.pack(">HH", int(header.get("product_owner", 0)) & 0xFFFF, int(header.get("product_type", 0)) & 0xFFFF)
    parts = []
    if format in ("iso2005", "ansi2004"):
        if views:
            t0 = views[0].template
            size = (t0.width, t0.height, _ppcm(t0.ppi))
            for i, v in enumerate(views):
                t = v.template
                if (t.width, t.height, _ppcm(t.ppi)) != size:
                    raise FormatError(
                        f"{FORMATS[format]} view {i}: image {t.width}x{t.height} at {t.ppi:g} ppi differs from view 0 "
                        f"({t0.width}x{t0.height} at {t0.ppi:g} ppi); this format has one image size per record"
                    )
        else:
            size = (int(header.get("width", 1)), int(header.get("height", 1)), _ppcm(header.get("ppi", DEFAULT_PPI)))
        for i, v in enumerate(views):
            _check_writable(v, i, format)
            t = v.template
            parts.append(struct.pack(">BBBB", v.position_code, (v.view << 4) | v.impression, t.quality, len(t)))
            parts.append(_encode_minutiae(t, format))
            parts.append(_encode_extended(v, f"{FORMATS[format]} view {i}"))
        body = b"".join(parts)
        tail = struct.pack(">HHHHHBB", equipment, size[0], size[1], size[2], size[2], len(views), 0)
        if format == "iso2005":
            total = 8 + 4 + len(tail) + len(body)
            return _MAGIC + _V20 + struct.pack(">I", total) + tail + body
        total = 8 + 2 + 4 + len(tail) + len(body)
        if total <= 0xFFFF:
            return _MAGIC + _V20 + struct.pack(">H", total) + product + tail + body
        total += 4
        return _MAGIC + _V20 + struct.pack(">HI", 0, total) + product + tail + body
    if format in ("ansi2009", "ansi2007"):
        for i, v in enumerate(views):
            _check_writable(v, i, format)
            t = v.template
            ex = v.extras if "quality_owner" in v.extras else {}
            raw = ex.get("finger_quality_raw", _QUALITY_NOT_REPORTED)
            q = t.quality if t.quality > 0 else (raw if raw in (0, 254, 255) else _QUALITY_NOT_REPORTED)
            parts.append(struct.pack(">BBBBHHHHHHB", v.position_code, v.view, v.impression, q,
                                     int(ex.get("quality_owner", 0)), int(ex.get("quality_algorithm", 0)),
                                     t.width, t.height, _ppcm(t.ppi), _ppcm(t.ppi), len(t)))
            parts.append(_encode_minutiae(t, format))
            parts.append(_encode_extended(v, f"{FORMATS[format]} view {i}"))
        body = b"".join(parts)
        if format == "ansi2007":
            total = 20 + len(body)
            return _MAGIC + _V30 + struct.pack(">I", total) + product + struct.pack(">HBB", equipment, len(views), 0) + body
        cert = header.get("certification_byte")
        if cert is None:
            cert = 0x80 if header.get("equipment_certification") else 0
        version = header.get("version") if header.get("version") in (_V30, _V35) else _V30
        total = 21 + len(body)
        return (_MAGIC + version + struct.pack(">I", total) + product
                + struct.pack(">BHBB", int(cert) & 0xFF, int(header.get("device_id", 0)) & 0xFFFF, len(views), 0) + body)
    # iso2011
    if len(views) > 0xFFFF:
        raise FormatError(f"{FORMATS[format]}: {len(views)} representations, at most 65535")
    cert_flag = int(header.get("certification_flag", 0)) if isinstance(source, MinutiaeRecord) and source.format == "iso2011" else 0
    if any(v.extras.get("certification_blocks") for v in views):
        cert_flag = 1
    for i, v in enumerate(views):
        where = _check_writable(v, i, format)
        t = v.template
        ex = v.extras if "capture_datetime" in v.extras else {}
        dt = bytes(ex.get("capture_datetime", b"\xff" * 9))
        if len(dt) != 9:
            raise FormatError(f"{where}: capture date-time must be 9 bytes")
        blocks = list(ex.get("quality_blocks", ()))
        if blocks:
            first = blocks[0]
            score = t.quality if t.quality > 0 else (first[0] if first[0] in (0, 254, 255) else _QUALITY_NOT_REPORTED)
            blocks[0] = (score, first[1], first[2])
        elif t.quality > 0:
            blocks = [(t.quality, 0, 0)]
        head = dt + struct.pack(">BHH", int(ex.get("device_technology", 0)), int(ex.get("device_vendor", 0)),
                                int(ex.get("device_type", 0)))
        head += struct.pack(">B", len(blocks)) + b"".join(struct.pack(">BHH", *map(int, b)) for b in blocks)
        if cert_flag:
            certs = ex.get("certification_blocks", ())
            head += struct.pack(">B", len(certs)) + b"".join(struct.pack(">HB", int(a), int(s)) for a, s in certs)
        size = 6 if np.any(t.minutiae["quality"] > 0) else 5
        head += struct.pack(">BBHHBHHBB", v.position_code, v.view, _ppcm(t.ppi), _ppcm(t.ppi), v.impression,
                            t.width, t.height, (size << 4) | (int(ex.get("ending_type", 0)) & 0x0F), len(t))
        rep = head + _encode_minutiae(t, format, size) + _encode_extended(v, where)
        parts.append(struct.pack(">I", len(rep) + 4) + rep)
    body = b"".join(parts)
    total = 15 + len(body)
    return _MAGIC + _V30 + struct.pack(">IHB", total, len(views), cert_flag) + body


def write_iso(source, version: str = "2005") -> bytes:
    """Write Template(s) (or a record) as an ISO/IEC 19794-2 record, ``version`` "2005" or "2011"."""
    version = str(version)
    if version not in ("2005", "2011"):
        raise FormatError(f"ISO/IEC 19794-2 version {version!r} is not supported (2005 or 2011)")
    return write_record(source, "iso" + version)


def write_ansi(source, version: str = "2004") -> bytes:
    """Write Template(s) (or a record) as an ANSI INCITS 378 record, ``version`` "2004" or "2009".

    "2007" writes the 2007-draft layout that NIST libbiomeval reads as "ANSI 2007".
    """
    version = str(version)
    if version not in ("2004", "2009", "2007"):
        raise FormatError(f"ANSI INCITS 378 version {version!r} is not supported (2004, 2009, or the 2007 draft)")
    return write_record(source, "ansi" + version)
