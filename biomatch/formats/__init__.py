"""Standard formats: ISO/IEC 19794-2 and ANSI INCITS 378 minutiae records, ANSI/NIST-ITL transactions.

Public API
----------
load_template(path_or_bytes, view=0) -> Template
    ISO/IEC 19794-2:2005/2011, ANSI INCITS 378-2004/2009 (also 2009/AM1 and
    the 2007-draft layout NIST libbiomeval reads) or biomatch bytes, detected
    from the content. Coordinates stay in the record's image frame.
read_templates(path_or_bytes) -> list of Template
    Every finger view.
read_record(path_or_bytes) -> MinutiaeRecord
    The record with view numbers, impression types, extended data.
write_iso(templates, version="2005"), write_ansi(templates, version="2004") -> bytes
write_record(record_or_templates, format) -> bytes
read_transaction(path_or_bytes) -> Transaction
    ANSI/NIST-ITL traditional encoding: .tot/.ori/.tcn, .images (Type-4/14
    finger images, decoded), .templates (position -> Template from Type-9);
    Transaction.to_bytes() writes it back (read, write, read gives an equal one).
is_template(path_or_bytes) -> bool
    Whether the content is a minutiae template record (ISO, ANSI, biomatch):
    the one rule by which the library and every CLI verb tell a template
    from an image, whatever the file is called.
write_transaction(templates, ori=..., tcn=...) -> bytes
    A response transaction with Type-1 and Type-9 records (INCITS 378 block,
    plus the legacy 9.005-9.012 block).

Not supported: the ISO/IEC 19794-2 card formats (compact and normal size,
headerless minutiae for on-card comparison), the XML encoding of ANSI/NIST-ITL.

Every problem with the input raises :class:`~biomatch.errors.FormatError`
naming the file, the record and the field.
"""

from ._an2k import (
    Transaction,
    TransactionImage,
    TransactionTemplate,
    read_transaction,
    write_image_transaction,
    write_transaction,
)
import os
from pathlib import Path

from ..errors import FormatError
from ._common import FormatWarning
from ._minutiae import FORMATS, FingerView, MinutiaeRecord, detect_format
from ._minutiae_read import load_template, read_record, read_templates
from ._minutiae_write import write_ansi, write_iso, write_record

__all__ = [
    "Transaction",
    "TransactionImage",
    "TransactionTemplate",
    "read_transaction",
    "write_transaction",
    "write_image_transaction",
    "FORMATS",
    "FormatWarning",
    "FingerView",
    "MinutiaeRecord",
    "detect_format",
    "is_template",
    "load_template",
    "read_record",
    "read_templates",
    "write_ansi",
    "write_iso",
    "write_record",
]

#: Bytes of a file's head that tell a template record from an image (detect_format's magics).
_HEAD_BYTES = 16


def is_template(source) -> bool:
    """Whether ``source`` (a path or bytes) holds a minutiae template record, by its first bytes.

    True for biomatch, ISO/IEC 19794-2 and ANSI INCITS 378 records (:func:`detect_format`);
    False for anything else (images, ANSI/NIST-ITL transactions), which is for the image
    decoder to read or refuse. Raises :class:`~biomatch.errors.FormatError` naming a path that
    cannot be read.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:_HEAD_BYTES])
    elif isinstance(source, (str, os.PathLike)):
        from ..io import read_file_head  # regular files only: a FIFO or a device is refused, not waited on

        head = read_file_head(source, _HEAD_BYTES, str(Path(source)), "a template or image file", error=FormatError)
    else:
        raise FormatError(f"source: expected a file path or bytes, got {type(source).__name__}")
    family = detect_format(head)
    return family is not None and family != "an2k"
