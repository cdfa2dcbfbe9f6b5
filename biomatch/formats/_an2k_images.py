"""ANSI/NIST-ITL finger image records: reading Type-4 and Type-14 images, Type-14 finger segment
positions, and writing image transactions.

* Reading a Type-4 record (binary header: IMP, FGP, ISR, HLL, VLL, GCA) or a
  Type-14 record (tagged fields, 14.999 DATA) into a :class:`TransactionImage`,
  decoding the image (WSQ via :mod:`biomatch.io`, PNG/JPEG/JPEG 2000 via
  Pillow, raw) after its declared size is checked against the pixel limit.
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
from dataclasses import dataclass, field

import numpy as np

from .. import io as _io
from ..errors import FormatError, ImageError
from ..io import DEFAULT_PPI
from ..template import MAX_PPI, MIN_PPI
from ._an2k_records import MM_PER_INCH, Record, int_item, native_ppi, ppi_checked
from ._common import FormatWarning

__all__ = ["TransactionImage", "COMPRESSIONS", "type4_image", "type14_image", "read_segments",
           "write_image_transaction", "type1_message", "check_text"]

#: 19.69 px/mm: the ANSI/NIST "minimum scanning resolution" of Type-4 ISR 0 (500 ppi).
MIN_SCANNING_PPMM = 19.69
#: Largest image (pixels) decoded from a record, checked before decoding: the
#: same bound as image files (one limit, owned by biomatch.io).
MAX_IMAGE_PIXELS = _io.MAX_IMAGE_PIXELS
COMPRESSIONS = {0: "NONE", 1: "WSQ20", 2: "JPEGB", 3: "JPEGL", 4: "JP2", 5: "JP2L", 6: "PNG"}
_CGA_ALIASES = {"WSQ": "WSQ20", "WSQ20": "WSQ20", "NONE": "NONE", "JPEGB": "JPEGB", "JPEGL": "JPEGL",
                "JP2": "JP2", "JP2L": "JP2L", "PNG": "PNG", "JPEG": "JPEGB"}


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


def _check_image_size(rec: Record, width: int, height: int):
    if width <= 0 or height <= 0:
        rec.fail("HLL/VLL", f"image size {width}x{height} is empty")
    if width * height > MAX_IMAGE_PIXELS:
        rec.fail("HLL/VLL", f"image size {width}x{height} exceeds the limit of {MAX_IMAGE_PIXELS} pixels")


def _pillow_has_jpeg2000() -> bool:
    from PIL import features

    return bool(features.check("jpg_2000"))


def _decode(rec: Record, compression: str, data: bytes, width: int, height: int, ppi: float, bpx: int = 8,
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


def type4_image(rec: Record, type1: Record, decode: bool) -> TransactionImage:
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
        native = native_ppi(type1)
        if native is None:
            rec.fail("4.005 ISR", "says native resolution but 1.011 NSR holds none")
        ppi = native
    ppi = ppi_checked(rec, ppi, "scanning")
    _check_image_size(rec, width, height)
    compression = COMPRESSIONS[gca]
    data = rec.data[13:]
    # a Type-4 header is binary and fixed: a WSQ frame that disagrees with it is corruption, not vendor habit
    pixels = _decode(rec, compression, data, width, height, ppi, exact_size=True) if decode else None
    if pixels is not None:
        height, width = pixels.shape
    return TransactionImage(4, rec.idc, positions[0] if positions else 0, positions, impression, ppi, width, height,
                            compression, data, pixels)


def _scale_ppi(rec: Record, slc_tag: int, h_tag: int, what: str) -> float:
    slc = rec.number(slc_tag, "SLC", required=False, lo=0, hi=2, default=0)
    if slc in (1, 2):
        hps = rec.number(h_tag, "THPS", lo=1, hi=100000)
        ppi = hps if slc == 1 else hps * 2.54
        return ppi_checked(rec, float(ppi), what)
    warnings.warn(f"{rec.where}: field {rec.type}.{slc_tag:03d} SLC gives no resolution; assuming {DEFAULT_PPI:g} ppi",
                  FormatWarning, stacklevel=4)
    return DEFAULT_PPI


def type14_image(rec: Record, decode: bool) -> TransactionImage:
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
