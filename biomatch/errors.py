"""Exceptions raised by biomatch.

Every error that bad input can cause is a :class:`BiomatchError`; its message
names the input (file, record, field or parameter) and what is wrong with it,
so that the CLI can print it as one line and a booking system can log it.
"""

from __future__ import annotations

__all__ = [
    "BiomatchError",
    "ImageError",
    "TemplateError",
    "FormatError",
    "GalleryError",
    "CalibrationError",
    "AuditError",
]


class BiomatchError(Exception):
    """Base class of every error biomatch raises on purpose."""


class ImageError(BiomatchError, ValueError):
    """A finger image cannot be read or holds no usable print."""


class TemplateError(BiomatchError, ValueError):
    """A minutiae template is malformed or inconsistent."""


class FormatError(BiomatchError, ValueError):
    """A standard record (ISO/ANSI template, ANSI/NIST-ITL transaction) is malformed."""


class GalleryError(BiomatchError):
    """A gallery operation failed (unknown subject, bad finger position, store problem)."""


class CalibrationError(BiomatchError, ValueError):
    """Scores cannot support the requested calibration or threshold."""


class AuditError(BiomatchError):
    """The audit chain is broken: a record was edited, removed or reordered."""
