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

This module holds the record model (:class:`MinutiaeRecord`, :class:`FingerView`), the layout
constants both directions share and :func:`detect_format`; :mod:`._minutiae_read` reads records
and :mod:`._minutiae_write` writes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..template import Template

__all__ = [
    "FORMATS",
    "FingerView",
    "MinutiaeRecord",
    "detect_format",
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
# layout constants the reader and the writer share
MAGIC = b"FMR\x00"
V20 = b" 20\x00"
#: " 20" as some SDKs write it in ANSI INCITS 378-2004 records: read as the same version.
V20_ZERO = b"020\x00"
V30 = b"030\x00"
V35 = b"035\x00"  # INCITS 378-2009/AM1-2010: the 2009 layout under its own version number
QUALITY_NOT_REPORTED = 254  # 2009/2011 special values: 254 not reported, 255 failed
ISO_ANGLE_UNITS = 256  # per full turn
ANSI_ANGLE_UNITS = 180  # 2-degree units
MINUTIA_6BYTE = np.dtype([("tx", ">u2"), ("ry", ">u2"), ("angle", "u1"), ("quality", "u1")])
MINUTIA_5BYTE = np.dtype([("tx", ">u2"), ("ry", ">u2"), ("angle", "u1")])


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


def detect_format(data: bytes) -> str | None:
    """Guess the record family from the first bytes.

    Returns ``"biomatch"``, ``"fmr20"`` (ISO 2005 or ANSI 2004), ``"fmr30"``
    (ISO 2011 or ANSI 2009), ``"an2k"`` (ANSI/NIST-ITL) or None.
    """
    head = bytes(data[:16])
    if head.startswith(b"BMT"):
        return "biomatch"
    if head.startswith(MAGIC):
        version = head[4:8]
        if version in (V20, V20_ZERO):
            return "fmr20"
        if version == V30:
            return "fmr30"
        if version == V35:
            return "fmr35"
        return "fmr?"
    if head.startswith(b"1.001:") or head.startswith(b"1.01:"):
        return "an2k"
    return None
