"""Writing ISO/IEC 19794-2 (2005, 2011) and ANSI INCITS 378 (2004, 2009, 2007 draft) finger minutiae
records (layouts in :mod:`._minutiae`) from templates or from a record read before: coordinates
rounded to whole pixels, angles to the format's unit, header fields of a record read from the same
format written back unchanged.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from ..errors import FormatError
from ..template import Template
from ._minutiae import (ANSI_ANGLE_UNITS, CM_PER_INCH, DEFAULT_PPI, FORMATS, ISO_ANGLE_UNITS, MAGIC, MINUTIA_5BYTE,
                        MINUTIA_6BYTE, QUALITY_NOT_REPORTED, V20, V30, V35, FingerView, MinutiaeRecord)

__all__ = ["write_record", "write_iso", "write_ansi"]


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
    units = ANSI_ANGLE_UNITS if fmt.startswith("ansi") else ISO_ANGLE_UNITS
    x = np.rint(m["x"].astype(np.float64)).astype(np.int64)
    y = np.rint(m["y"].astype(np.float64)).astype(np.int64)
    x = np.clip(x, 0, t.width - 1)
    y = np.clip(y, 0, t.height - 1)
    angle = np.rint(m["angle"].astype(np.float64) * (units / (2.0 * math.pi))).astype(np.int64) % units
    rec = np.zeros(m.size, dtype=MINUTIA_6BYTE if size == 6 else MINUTIA_5BYTE)
    rec["tx"] = (m["type"].astype(np.int64) << 14) | x
    rec["ry"] = y
    rec["angle"] = angle
    if size == 6:
        q = m["quality"].astype(np.int64)
        if fmt in ("iso2011",):
            q = np.where(q == 0, QUALITY_NOT_REPORTED, q)
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
            return MAGIC + V20 + struct.pack(">I", total) + tail + body
        total = 8 + 2 + 4 + len(tail) + len(body)
        if total <= 0xFFFF:
            return MAGIC + V20 + struct.pack(">H", total) + product + tail + body
        total += 4
        return MAGIC + V20 + struct.pack(">HI", 0, total) + product + tail + body
    if format in ("ansi2009", "ansi2007"):
        for i, v in enumerate(views):
            _check_writable(v, i, format)
            t = v.template
            ex = v.extras if "quality_owner" in v.extras else {}
            raw = ex.get("finger_quality_raw", QUALITY_NOT_REPORTED)
            q = t.quality if t.quality > 0 else (raw if raw in (0, 254, 255) else QUALITY_NOT_REPORTED)
            parts.append(struct.pack(">BBBBHHHHHHB", v.position_code, v.view, v.impression, q,
                                     int(ex.get("quality_owner", 0)), int(ex.get("quality_algorithm", 0)),
                                     t.width, t.height, _ppcm(t.ppi), _ppcm(t.ppi), len(t)))
            parts.append(_encode_minutiae(t, format))
            parts.append(_encode_extended(v, f"{FORMATS[format]} view {i}"))
        body = b"".join(parts)
        if format == "ansi2007":
            total = 20 + len(body)
            return MAGIC + V30 + struct.pack(">I", total) + product + struct.pack(">HBB", equipment, len(views), 0) + body
        cert = header.get("certification_byte")
        if cert is None:
            cert = 0x80 if header.get("equipment_certification") else 0
        version = header.get("version") if header.get("version") in (V30, V35) else V30
        total = 21 + len(body)
        return (MAGIC + version + struct.pack(">I", total) + product
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
            score = t.quality if t.quality > 0 else (first[0] if first[0] in (0, 254, 255) else QUALITY_NOT_REPORTED)
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
    return MAGIC + V30 + struct.pack(">IHB", total, len(views), cert_flag) + body


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
