"""Standard formats: ISO/IEC 19794-2 and ANSI INCITS 378 minutiae records, ANSI/NIST-ITL transactions.

Public API
----------
load_template(path_or_bytes, view=0) -> Template
    ISO/IEC 19794-2:2005/2011, ANSI INCITS 378-2004/2009 or biomatch bytes,
    detected from the content.
read_templates(path_or_bytes) -> list of Template
    Every finger view.
read_record(path_or_bytes) -> MinutiaeRecord
    The record with view numbers, impression types, extended data.
write_iso(templates, version="2005"), write_ansi(templates, version="2004") -> bytes
write_record(record_or_templates, format) -> bytes

Every problem with the input raises :class:`~biomatch.errors.FormatError`
naming the file, the record and the field.
"""

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
