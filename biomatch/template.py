"""The minutiae template: what extraction produces and matching consumes.

A :class:`Template` is immutable. Its minutiae are a structured NumPy array
(:data:`MINUTIA_DTYPE`) in the original image frame: ``x`` and ``y`` in pixels
with the origin at the top-left corner, ``angle`` in radians counter-clockwise
from the x axis (image x to the right, image y *up*, i.e. the direction of the
ridge as ISO/IEC 19794-2 defines it), ``type`` as in ISO/IEC 19794-2
(0 other, 1 ridge ending, 2 bifurcation) and ``quality`` 0-100 (0 unknown).

The compact binary form (``Template.to_bytes`` / ``Template.from_bytes``) is
versioned and checked field by field on load; it stores 8 bytes per minutia
(quarter-pixel coordinates, 16-bit angle), about the size of an ISO record.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from .errors import TemplateError

__all__ = [
    "MINUTIA_DTYPE",
    "MinutiaType",
    "Template",
    "make_minutiae",
    "FINGER_POSITIONS",
    "MIN_PPI",
    "MAX_PPI",
    "MAX_MINUTIAE",
]

MINUTIA_DTYPE = np.dtype(
    [
        ("x", np.float32),
        ("y", np.float32),
        ("angle", np.float32),
        ("type", np.uint8),
        ("quality", np.uint8),
    ]
)

#: ANSI/NIST-ITL finger position (FGP) codes a template may carry.
FINGER_POSITIONS = {
    0: "unknown",
    1: "right thumb",
    2: "right index",
    3: "right middle",
    4: "right ring",
    5: "right little",
    6: "left thumb",
    7: "left index",
    8: "left middle",
    9: "left ring",
    10: "left little",
}

MIN_PPI = 250.0
MAX_PPI = 2000.0
#: Largest minutiae count accepted from any source (ISO allows 255 per view).
MAX_MINUTIAE = 1024
MAX_IMAGE_SIDE_PX = 16383  # quarter-pixel coordinates must fit 16 bits

_TWO_PI = 2.0 * np.pi


class MinutiaType(IntEnum):
    """Minutia type codes of ISO/IEC 19794-2."""

    OTHER = 0
    ENDING = 1
    BIFURCATION = 2


def make_minutiae(x, y, angle, type=None, quality=None) -> np.ndarray:
    """Build a minutiae array of :data:`MINUTIA_DTYPE` from columns.

    Parameters
    ----------
    x, y : array_like of float, shape (n,)
        Position in pixels, original image frame, origin top-left.
    angle : array_like of float, shape (n,)
        Ridge direction in radians, counter-clockwise from the x axis; wrapped
        into [0, 2*pi).
    type : array_like of int, shape (n,), optional
        :class:`MinutiaType` codes; default 0 (other).
    quality : array_like of int, shape (n,), optional
        0-100; default 0 (unknown).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    out = np.zeros(n, dtype=MINUTIA_DTYPE)
    out["x"] = x
    out["y"] = np.asarray(y, dtype=np.float64).ravel()
    out["angle"] = np.mod(np.asarray(angle, dtype=np.float64).ravel(), _TWO_PI)
    if type is not None:
        out["type"] = np.asarray(type).ravel()
    if quality is not None:
        out["quality"] = np.asarray(quality).ravel()
    return out


def _check_minutiae(minutiae, width: int, height: int) -> np.ndarray:
    arr = np.asarray(minutiae)
    if arr.dtype != MINUTIA_DTYPE:
        try:
            arr = np.array(
                [tuple(m) for m in arr] if arr.dtype.names is None else arr.astype(MINUTIA_DTYPE),
                dtype=MINUTIA_DTYPE,
            )
        except (TypeError, ValueError) as exc:
            raise TemplateError(f"minutiae: cannot convert to the minutia dtype ({exc})") from None
    arr = np.ascontiguousarray(arr.ravel())
    if arr.size > MAX_MINUTIAE:
        raise TemplateError(f"minutiae: {arr.size} minutiae, more than the limit {MAX_MINUTIAE}")
    if arr.size:
        for name in ("x", "y", "angle"):
            if not np.all(np.isfinite(arr[name])):
                raise TemplateError(f"minutiae: field {name!r} holds a non-finite value")
        if np.any(arr["x"] < 0) or np.any(arr["x"] >= width + 1) or np.any(arr["y"] < 0) or np.any(arr["y"] >= height + 1):
            raise TemplateError(
                f"minutiae: coordinates fall outside the {width}x{height} image "
                f"(x in [{arr['x'].min():.1f}, {arr['x'].max():.1f}], y in [{arr['y'].min():.1f}, {arr['y'].max():.1f}])"
            )
        if np.any(arr["type"] > 2):
            raise TemplateError("minutiae: field 'type' must be 0 (other), 1 (ending) or 2 (bifurcation)")
        if np.any(arr["quality"] > 100):
            raise TemplateError("minutiae: field 'quality' must be 0-100")
        arr["angle"] = np.mod(arr["angle"], _TWO_PI).astype(np.float32)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Template:
    """Minutiae of one finger impression, immutable.

    Attributes
    ----------
    minutiae : ndarray of MINUTIA_DTYPE, shape (n,)
        Read-only; see the module docstring for units and conventions.
    width, height : int
        Size in pixels of the image the minutiae refer to.
    ppi : float
        Resolution of that image, pixels per inch.
    position : int
        ANSI/NIST-ITL finger position code, 0 (unknown) to 10.
    quality : int
        Image quality 0-100 (higher is better; 0 unknown).
    """

    minutiae: np.ndarray
    width: int
    height: int
    ppi: float = 500.0
    position: int = 0
    quality: int = 0
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        try:
            width, height = int(self.width), int(self.height)
        except (TypeError, ValueError):
            raise TemplateError(f"width/height must be integers, got {self.width!r}x{self.height!r}") from None
        if not (1 <= width <= MAX_IMAGE_SIDE_PX and 1 <= height <= MAX_IMAGE_SIDE_PX):
            raise TemplateError(f"image size {width}x{height} outside 1..{MAX_IMAGE_SIDE_PX} pixels")
        ppi = float(self.ppi)
        if not (MIN_PPI <= ppi <= MAX_PPI):
            raise TemplateError(f"ppi {ppi:g} outside the supported {MIN_PPI:g}-{MAX_PPI:g}")
        position = int(self.position)
        if position not in FINGER_POSITIONS:
            raise TemplateError(f"finger position {self.position!r} is not an FGP code 0-10")
        quality = int(self.quality)
        if not 0 <= quality <= 100:
            raise TemplateError(f"image quality {self.quality!r} outside 0-100")
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "height", height)
        object.__setattr__(self, "ppi", ppi)
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "quality", quality)
        object.__setattr__(self, "minutiae", _check_minutiae(self.minutiae, width, height))

    def __len__(self) -> int:
        return int(self.minutiae.size)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return (
            (self.width, self.height, self.ppi, self.position, self.quality)
            == (other.width, other.height, other.ppi, other.position, other.quality)
            and self.minutiae.shape == other.minutiae.shape
            and bool(np.all(self.minutiae == other.minutiae))
        )

    __hash__ = None  # mutable-looking array inside; compare by value, never hash

    def replace(self, **changes) -> "Template":
        """Return a copy with some attributes changed (validated again)."""
        values = dict(
            minutiae=self.minutiae,
            width=self.width,
            height=self.height,
            ppi=self.ppi,
            position=self.position,
            quality=self.quality,
        )
        values.update(changes)
        return Template(**values)

    def to_dict(self) -> dict:
        """A JSON-ready description (minutiae angles in degrees)."""
        m = self.minutiae
        return {
            "width": self.width,
            "height": self.height,
            "ppi": self.ppi,
            "position": self.position,
            "quality": self.quality,
            "minutiae": [
                {
                    "x": round(float(r["x"]), 2),
                    "y": round(float(r["y"]), 2),
                    "angle_deg": round(float(np.degrees(r["angle"])), 2),
                    "type": MinutiaType(int(r["type"])).name.lower(),
                    "quality": int(r["quality"]),
                }
                for r in m
            ],
        }

    # ------------------------------------------------------------------
    # compact binary form
    # ------------------------------------------------------------------
    # header: magic, version, width, height, ppi*100, position, quality, count
    _MAGIC = b"BMT"
    _VERSION = 1
    _HEADER = struct.Struct("<3sBHHIBBH")
    _RECORD = np.dtype([("x", "<u2"), ("y", "<u2"), ("angle", "<u2"), ("type", "u1"), ("quality", "u1")])

    def to_bytes(self) -> bytes:
        """Serialise to biomatch's compact versioned form (8 bytes/minutia + 20)."""
        m = self.minutiae
        rec = np.zeros(m.size, dtype=self._RECORD)
        rec["x"] = np.clip(np.rint(m["x"] * 4.0), 0, 65535)
        rec["y"] = np.clip(np.rint(m["y"] * 4.0), 0, 65535)
        rec["angle"] = np.rint(m["angle"] / _TWO_PI * 65536.0).astype(np.int64) % 65536
        rec["type"] = m["type"]
        rec["quality"] = m["quality"]
        header = self._HEADER.pack(
            self._MAGIC,
            self._VERSION,
            self.width,
            self.height,
            int(round(self.ppi * 100)),
            self.position,
            self.quality,
            m.size,
        )
        body = header + rec.tobytes()
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "template") -> "Template":
        """Parse the compact form, checking every field; raise TemplateError naming it."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TemplateError(f"{name}: template data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        hs = cls._HEADER.size
        if len(data) < hs + 4:
            raise TemplateError(f"{name}: {len(data)} bytes, too short for a biomatch template header")
        magic, version, width, height, ppi100, position, quality, count = cls._HEADER.unpack_from(data)
        if magic != cls._MAGIC:
            raise TemplateError(f"{name}: not a biomatch template (magic {magic!r})")
        if version != cls._VERSION:
            raise TemplateError(f"{name}: template version {version} is not supported (this build reads {cls._VERSION})")
        expected = hs + count * cls._RECORD.itemsize + 4
        if len(data) != expected:
            raise TemplateError(f"{name}: {count} minutiae need {expected} bytes, found {len(data)}")
        (crc,) = struct.unpack_from("<I", data, expected - 4)
        if crc != zlib.crc32(data[: expected - 4]):
            raise TemplateError(f"{name}: checksum mismatch, the template is corrupt")
        rec = np.frombuffer(data, dtype=cls._RECORD, count=count, offset=hs)
        minutiae = make_minutiae(
            rec["x"] / 4.0,
            rec["y"] / 4.0,
            rec["angle"] * (_TWO_PI / 65536.0),
            rec["type"],
            rec["quality"],
        )
        try:
            return cls(minutiae, width, height, ppi100 / 100.0, position, quality)
        except TemplateError as exc:
            raise TemplateError(f"{name}: {exc}") from None
