"""Reading ISO/IEC 19794-2 and ANSI INCITS 378 finger minutiae records (layouts in :mod:`._minutiae`).

The format is told by the version string, then by which layout accounts for every byte
(ISO 2005 and ANSI 2004 share one version string, as do ISO 2011, ANSI 2009 and the 2007
draft); every problem raises a :class:`~biomatch.errors.FormatError` naming the record, view and
field. :func:`read_record` gives the record, :func:`read_templates` its templates,
:func:`load_template` one of them (biomatch ``.bmt`` bytes are read too).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import FormatError, TemplateError
from ..template import MAX_PPI, MIN_PPI, Template, make_minutiae
from ._common import ByteReader, FormatWarning, load_source
from ._minutiae import (ANSI_ANGLE_UNITS, CM_PER_INCH, DEFAULT_PPI, FORMATS, ISO_ANGLE_UNITS, MAGIC, MINUTIA_5BYTE,
                        MINUTIA_6BYTE, QUALITY_NOT_REPORTED, FingerView, MinutiaeRecord, detect_format)

__all__ = ["read_record", "read_templates", "load_template"]

#: Largest coordinate or image size a 14-bit field holds.
_MAX_14BIT = 0x3FFF
#: ISO/ANSI finger position codes beyond the ten fingers: plain thumbs map to the thumb.
_PLAIN_THUMBS = {11: 1, 12: 6}
_MULTI_FINGER = {13: "plain right four fingers", 14: "plain left four fingers", 15: "plain thumbs"}


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
    rec = np.frombuffer(raw, dtype=MINUTIA_6BYTE if size == 6 else MINUTIA_5BYTE, count=count)
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
            quality[quality >= QUALITY_NOT_REPORTED] = 0
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
    if special and q >= QUALITY_NOT_REPORTED:
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
        minutiae = _read_minutiae(r, count, 6, ANSI_ANGLE_UNITS if ansi else ISO_ANGLE_UNITS,
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
        minutiae = _read_minutiae(r, count, 6, ANSI_ANGLE_UNITS, width, height, True, where)
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
        minutiae = _read_minutiae(rep, count, size, ISO_ANGLE_UNITS, width, height, True, where)
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
    if format is not None and bytes(data[:4]) != MAGIC:
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
