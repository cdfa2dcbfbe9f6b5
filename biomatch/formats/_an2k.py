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

The layers: :mod:`._an2k_records` (splitting and encoding records),
:mod:`._an2k_images` (Type-4/14 finger images, image transactions),
:mod:`._an2k_type9` (Type-9 minutiae, response transactions); this module
reads a whole transaction into a :class:`Transaction`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from ..errors import FormatError
# the ANSI/NIST-ITL constants (FS, BINARY_TYPES, COMPRESSIONS, ...) stay importable from here
from ._an2k_images import (COMPRESSIONS, MAX_IMAGE_PIXELS, MIN_SCANNING_PPMM, TransactionImage, type4_image,
                           type14_image, write_image_transaction)
from ._an2k_records import (BINARY_TYPES, DEFAULT_PPI, FS, GS, KNOWN_VERSIONS, MAX_RECORDS, MM_PER_INCH, RS, US,
                            encode_records, record_content, split_records)
from ._an2k_type9 import MAX_MINUTIAE_PER_RECORD, TransactionTemplate, type9_template, write_transaction
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
        return encode_records(self.content)

    def image(self, position: int) -> TransactionImage | None:
        """The first image of a finger position, or None."""
        for img in self.images:
            if position in img.positions:
                return img
        return None


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
    records = split_records(data, name)
    type1 = records[0]
    images = []
    by_idc: dict = {}
    for rec in records[1:]:
        if rec.type == 4:
            img = type4_image(rec, type1, decode_images)
        elif rec.type == 14:
            img = type14_image(rec, decode_images)
        else:
            continue
        images.append(img)
        by_idc.setdefault(img.idc, img)
    template_records = []
    templates: dict = {}
    for rec in records[1:]:
        if rec.type != 9:
            continue
        tt = type9_template(rec, type1, by_idc)
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
        content=tuple(record_content(r) for r in records),
    )
