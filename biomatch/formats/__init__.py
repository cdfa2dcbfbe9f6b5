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
    write_transaction,
)
from ._common import FormatWarning
from ._minutiae import (
    FORMATS,
    FingerView,
    MinutiaeRecord,
    detect_format,
    load_template,
    read_record,
    read_templates,
    write_ansi,
    write_iso,
    write_record,
)

__all__ = [
    "Transaction",
    "TransactionImage",
    "TransactionTemplate",
    "read_transaction",
    "write_transaction",
    "FORMATS",
    "FormatWarning",
    "FingerView",
    "MinutiaeRecord",
    "detect_format",
    "load_template",
    "read_record",
    "read_templates",
    "write_ansi",
    "write_iso",
    "write_record",
]
