"""biomatch: a fingerprint identification engine.

Extraction of minutiae from finger images, MCC-style local descriptors,
numba scoring, FAISS-indexed galleries with ten-print fusion, calibrated
scores (estimated false match rate) and a hash-chained audit trail.

``import biomatch`` stays light: heavy dependencies (numba, faiss,
matplotlib) load when the function that needs them is first used.
"""

from __future__ import annotations

import importlib

from .errors import (
    AuditError,
    BiomatchError,
    CalibrationError,
    FormatError,
    GalleryError,
    ImageError,
    TemplateError,
)
from .template import MINUTIA_DTYPE, MinutiaType, Template

__version__ = "0.1.0"

# public name -> module that defines it (loaded on first access)
_LAZY = {
    "read_image": "io",
    "FingerImage": "io",
    "extract": "extraction",
    "Extraction": "extraction",
    "load_template": "formats",
    "read_templates": "formats",
    "write_iso": "formats",
    "write_ansi": "formats",
    "read_transaction": "formats",
    "write_transaction": "formats",
    "Transaction": "formats",
    "read_record": "formats",
    "FormatWarning": "formats",
    "tune": "evaluation",
    "Threshold": "evaluation",
    "Calibration": "calibration",
    "verify": "scoring",
    "compare_many": "scoring",
    "pack": "scoring",
    "PackedTemplates": "scoring",
    "Match": "scoring",
    "Gallery": "gallery",
    "Candidate": "gallery",
    "Impression": "gallery",
    "segment_slap": "slap",
    "sequence_check": "sequence",
    "SearchParams": "gallery",
}

__all__ = [
    "__version__",
    "BiomatchError",
    "ImageError",
    "TemplateError",
    "FormatError",
    "GalleryError",
    "CalibrationError",
    "AuditError",
    "MINUTIA_DTYPE",
    "MinutiaType",
    "Template",
    *_LAZY,
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'biomatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
