"""ANSI/NIST-ITL Type-9 minutiae records: reading the INCITS 378 block (9.126-9.150), the EFS
block (9.300 ROI, 9.331 minutiae) and the legacy block (9.010-9.012) into templates, and
writing response transactions (a Type-1 record and one Type-9 record per template). The
conventions of each block are listed in :mod:`._an2k`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..errors import FormatError, TemplateError
from ..template import MAX_PPI, MIN_PPI, Template, make_minutiae
from ._an2k_images import check_text, type1_message
from ._an2k_records import DEFAULT_PPI, MM_PER_INCH, Record, int_item, native_ppi, ppi_checked
from ._common import FormatWarning

__all__ = ["TransactionTemplate", "type9_template", "write_transaction"]

MAX_MINUTIAE_PER_RECORD = 1024


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


_PLAIN_THUMBS = {11: 1, 12: 6}


def _single_finger(code: int) -> int | None:
    if 0 <= code <= 10:
        return code
    return _PLAIN_THUMBS.get(code)


def _make_template(rec: Record, block: str, minutiae, width, height, ppi, position, quality=0) -> Template:
    try:
        return Template(minutiae, width, height, ppi, position, quality)
    except TemplateError as exc:
        raise FormatError(f"{rec.where}: {block} minutiae: {exc}") from None


def _incits_block(rec: Record) -> tuple[Template, int, int]:
    width = rec.number(128, "HLL", lo=1, hi=16383)
    height = rec.number(129, "VLL", lo=1, hi=16383)
    slc = rec.number(130, "SLC", required=False, lo=0, hi=2, default=2)
    ppi = DEFAULT_PPI
    if slc in (1, 2) and 131 in rec.fields:
        hps = rec.number(131, "THPS", lo=1, hi=100000)
        ppi = ppi_checked(rec, hps if slc == 1 else hps * 2.54, "9.131 THPS")
    else:
        warnings.warn(f"{rec.where}: fields 9.130/9.131 give no resolution; assuming {DEFAULT_PPI:g} ppi", FormatWarning, stacklevel=4)
    code = rec.number(134, "FGP", lo=0, hi=255)
    quality = 0
    fqd = rec.items(135)
    if fqd and fqd[0] and fqd[0][0].strip():
        quality = int_item(rec, "9.135 FQD", fqd[0][0], 0, 255)
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
        x[i] = int_item(rec, f"9.137 FMD minutia {i} x", row[1], 0, width - 1)
        y[i] = int_item(rec, f"9.137 FMD minutia {i} y", row[2], 0, height - 1)
        a[i] = int_item(rec, f"9.137 FMD minutia {i} angle", row[3], 0, 179) * (math.pi / 90.0)
        t[i] = int_item(rec, f"9.137 FMD minutia {i} type", row[4], 0, 2)
        q[i] = int_item(rec, f"9.137 FMD minutia {i} quality", row[5], 0, 100) if len(row) > 5 and row[5].strip() else 0
    return (_make_template(rec, "9.137", make_minutiae(x, y, a, t, q), width, height, ppi, 0, quality),
            code, rec.number(133, "FVW", required=False, lo=0, hi=255, default=0))


def _efs_block(rec: Record, ppi: float) -> Template:
    roi = rec.items(300)
    if not roi or len(roi[0]) < 2:
        rec.fail("9.300 ROI", "is missing or lacks width and height (needed for EFS minutiae)")
    r = roi[0]
    ewi = int_item(rec, "9.300 ROI width", r[0], 1, 50000)
    ehi = int_item(rec, "9.300 ROI height", r[1], 1, 50000)
    eho = int_item(rec, "9.300 ROI horizontal offset", r[2], 0, 500000) if len(r) > 2 and r[2].strip() else 0
    evo = int_item(rec, "9.300 ROI vertical offset", r[3], 0, 500000) if len(r) > 3 and r[3].strip() else 0
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
        mx = int_item(rec, f"9.331 MIN minutia {i} x", row[0], 0, ewi)
        my = int_item(rec, f"9.331 MIN minutia {i} y", row[1], 0, ehi)
        x[i] = min((eho + mx) * px_per_unit, width - 1)
        y[i] = min((evo + my) * px_per_unit, height - 1)
        a[i] = math.radians(int_item(rec, f"9.331 MIN minutia {i} theta", row[2], 0, 360) % 360)
        code = row[3].strip().upper()
        if code not in ("E", "B", "X"):
            rec.fail(f"9.331 MIN minutia {i} type", f"{code[:10]!r} is not E, B or X")
        t[i] = {"E": 1, "B": 2, "X": 0}[code]
    return _make_template(rec, "9.331", make_minutiae(x, y, a, t), width, height, ppi, 0)


def _legacy_block(rec: Record, ppi: float, size: tuple | None) -> Template:
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
        xs[i] = int_item(rec, f"9.012 MRC minutia {i} x", parts[0], 0, 99999) * px_per_unit
        ys[i] = int_item(rec, f"9.012 MRC minutia {i} y", parts[1], 0, 99999) * px_per_unit
        theta = int_item(rec, f"9.012 MRC minutia {i} theta", parts[2], 0, 359)
        a[i] = math.radians((theta + 180) % 360)  # legacy direction points away from the ridge ending
        if len(row) > 2 and row[2].strip():
            # checked (0-63) but not mapped: the legacy scale does not translate to 0-100 quality
            int_item(rec, f"9.012 MRC minutia {i} quality", row[2], 0, 63)
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


def type9_template(rec: Record, type1: Record, images: dict) -> TransactionTemplate | None:
    impression = rec.number(3, "IMP", required=False, lo=0, hi=99, default=0)
    image = images.get(rec.idc)
    if image is not None:
        ppi, size = image.ppi, (image.width, image.height)
    else:
        ppi, size = native_ppi(type1), None
        if ppi is None or not (MIN_PPI <= ppi <= MAX_PPI):
            ppi = DEFAULT_PPI
    if 136 in rec.fields or 137 in rec.fields:
        template, code, _view = _incits_block(rec)
        block = "incits378"
    else:
        fgp = rec.items(6)
        code = int_item(rec, "9.006 FGP", fgp[0][0], 0, 255) if fgp and fgp[0] and fgp[0][0].strip() else 0
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
