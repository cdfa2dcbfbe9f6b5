"""ANSI/NIST-ITL finger image records: Type-14 finger segment positions and image transactions.

* Reading 14.021 FSP (FGP, left, right, top, bottom, pixels) and 14.025 ASEG
  (FGP, number of points, x1, y1, ...) of a slap into (position, polygon)
  pairs (:attr:`TransactionImage.segments`).
* Writing a transaction of Type-14 PNG finger images, with those fields for
  slaps (:func:`write_image_transaction`).
* The Type-1 record and the text checks that this writer and
  :func:`write_transaction` share.
"""

from __future__ import annotations

import datetime as _dt
import re
import warnings

import numpy as np

from ..errors import FormatError
from ..io import DEFAULT_PPI
from ..template import MAX_PPI, MIN_PPI
from ._common import FormatWarning

__all__ = ["read_segments", "write_image_transaction", "type1_message", "check_text", "int_item"]


def int_item(rec, label: str, text: str, lo: int, hi: int) -> int:
    """An integer item of a field in lo..hi (``rec.fail`` names the field otherwise)."""
    try:
        value = int(text)
    except ValueError:
        rec.fail(label, f"{text[:20]!r} is not a number")
    if not lo <= value <= hi:
        rec.fail(label, f"{value} outside {lo}..{hi}")
    return value


def read_segments(rec, width: int, height: int) -> tuple:
    """14.021 FSP (FGP, left, right, top, bottom) and 14.025 ASEG (FGP, NOP, x1, y1, ...): position -> polygon.

    A segment that is malformed or empty is skipped with a FormatWarning: the
    image stays usable (the slap can be segmented again).
    """
    found: dict = {}
    for sf in rec.items(21):
        try:
            if len(sf) != 5:
                rec.fail("14.021 FSP", f"a segment has {len(sf)} items, expected 5 (FGP, left, right, top, bottom)")
            pos = int_item(rec, "14.021 FSP FGP", sf[0], 1, 10)
            left, right = (int_item(rec, "14.021 FSP x", it, 0, width) for it in sf[1:3])
            top, bottom = (int_item(rec, "14.021 FSP y", it, 0, height) for it in sf[3:5])
            if left >= right or top >= bottom:
                rec.fail("14.021 FSP", f"finger {pos}: box {left}-{right} x {top}-{bottom} is empty")
        except FormatError as exc:
            warnings.warn(f"{exc}; segment skipped", FormatWarning, stacklevel=4)
            continue
        found[pos] = ((left, top), (right, top), (right, bottom), (left, bottom))
    for sf in rec.items(25):
        try:
            pos = int_item(rec, "14.025 ASEG FGP", sf[0], 1, 10)
            n = int_item(rec, "14.025 ASEG NOP", sf[1] if len(sf) > 1 else "", 3, 99)
            if len(sf) != 2 + 2 * n:
                rec.fail("14.025 ASEG", f"finger {pos}: {len(sf) - 2} coordinates for {n} points")
            xs = [int_item(rec, "14.025 ASEG x", it, 0, width) for it in sf[2::2]]
            ys = [int_item(rec, "14.025 ASEG y", it, 0, height) for it in sf[3::2]]
        except FormatError as exc:
            warnings.warn(f"{exc}; segment skipped", FormatWarning, stacklevel=4)
            continue
        found[pos] = tuple(zip(xs, ys))
    return tuple(sorted(found.items()))


SAFE_TEXT = re.compile(r"^[\x20-\x7e]*$")


def check_text(value, field_name: str, max_len: int = 99) -> str:
    text = "" if value is None else str(value)
    if not SAFE_TEXT.match(text) or len(text) > max_len:
        raise FormatError(f"write_transaction: {field_name} {text[:30]!r} must be printable ASCII of at most {max_len} characters")
    return text


def type1_message(caller: str, tot, ori, tcn, dai, date):
    """A ``nistitl.Message`` whose Type-1 record holds the checked VER 0500, TOT, DAT (default today, UTC), DAI, ORI, TCN."""
    import nistitl

    tot = check_text(tot, "TOT", 16)
    ori = check_text(ori, "ORI", 99)
    tcn = check_text(tcn, "TCN", 99)
    dai = check_text(ori if dai is None else dai, "DAI", 99)
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d")
    if not re.fullmatch(r"\d{8}", str(date)):
        raise FormatError(f"{caller}: date {date!r} must be YYYYMMDD")
    msg = nistitl.Message()
    r1 = msg[0]
    r1.VER = "0500"
    r1.TOT = tot
    r1.DAT = str(date)
    r1.DAI = dai
    r1.ORI = ori
    r1.TCN = tcn
    return msg


def write_image_transaction(images, *, tot: str = "CAR", ori: str, tcn: str, dai: str | None = None,
                            date: str | None = None) -> bytes:
    """Write a transaction of finger images: a Type-1 record and one Type-14 record (PNG) per image.

    Parameters
    ----------
    images : sequence of dict
        Each with ``position`` (FGP 0-15), ``pixels`` (2-D uint8), ``ppi``,
        optional ``impression`` (14.003 IMP, default 0 plain live-scan) and
        ``segments``: for a slap, (finger position, polygon) pairs (polygon:
        vertices x, y in pixels), written as 14.021 FSP (the envelope box) and
        14.025 ASEG (the polygon), which :func:`read_transaction` reads back
        into ``TransactionImage.segments``.
    tot, ori, tcn, dai, date : str
        Type-1 fields as in :func:`write_transaction`.

    Returns
    -------
    bytes
    """
    import io

    import nistitl
    from PIL import Image

    images = list(images)
    if not 1 <= len(images) <= 99:
        raise FormatError(f"write_image_transaction: {len(images)} images, expected 1-99")
    msg = type1_message("write_image_transaction", tot, ori, tcn, dai, date)
    date = msg[0].DAT
    for idc, img in enumerate(images, start=1):
        where = f"write_image_transaction: image {idc - 1}"
        pixels = np.asarray(img.get("pixels"))
        if pixels.ndim != 2 or pixels.dtype != np.uint8 or min(pixels.shape) < 1:
            raise FormatError(f"{where}: pixels must be a non-empty 2-D uint8 array")
        pos = img.get("position")
        if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)) or not 0 <= int(pos) <= 15:
            raise FormatError(f"{where}: finger position {pos!r} is not an FGP code 0-15")
        ppi = float(img.get("ppi", DEFAULT_PPI))
        if not MIN_PPI <= ppi <= MAX_PPI:
            raise FormatError(f"{where}: resolution {ppi:g} ppi outside {MIN_PPI:g}-{MAX_PPI:g}")
        h, w = pixels.shape
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        r14 = nistitl.AsciiRecord(14)
        r14.IDC = idc
        fields = {3: str(int(img.get("impression", 0))), 4: "biomatch", 5: str(date), 6: str(w), 7: str(h),
                  8: "1", 9: str(int(round(ppi))), 10: str(int(round(ppi))), 11: "PNG", 12: "8", 13: str(int(pos))}
        segments = list(img.get("segments", ()))
        if segments:
            fsp, aseg = [], []
            for fpos, polygon in segments:
                poly = np.clip(np.rint(np.asarray(polygon, dtype=np.float64)), 0, [w, h]).astype(np.int64)
                if poly.ndim != 2 or poly.shape[1] != 2 or not 3 <= len(poly) <= 99 or not 1 <= int(fpos) <= 10:
                    raise FormatError(f"{where}: segment {fpos!r} needs a finger position 1-10 and 3-99 vertices")
                fsp.append([str(int(fpos)), str(poly[:, 0].min()), str(poly[:, 0].max()), str(poly[:, 1].min()),
                            str(poly[:, 1].max())])
                aseg.append([str(int(fpos)), str(len(poly))] + [str(v) for xy in poly for v in xy])
            fields[21] = fsp
            fields[25] = aseg
        for tag, value in sorted(fields.items()):
            r14 += nistitl.Field(14, tag, value)
        r14.DATA = buf.getvalue()
        msg += r14
    return msg.NIST
