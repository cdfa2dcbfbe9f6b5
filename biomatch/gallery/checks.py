"""Argument checks of the gallery API: names, subjects, positions, fingers, metadata, context."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np

from .._validate import check_int
from ..errors import FormatError, GalleryError, TemplateError
from ..template import FINGER_POSITIONS, Template
MAX_BATCH = 500

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MAX_SUBJECT_LEN = 128
#: File name endings of template files, for finding files in a folder only: whether a file is a
#: template or an image is told by its content (:func:`biomatch.formats.is_template`).
TEMPLATE_SUFFIXES = {".bmt", ".iso", ".ist", ".ansi", ".378", ".fmr"}
#: Fewest minutiae of a template that is enrolled or searched. The global stage of the matcher
#: normalises by at least 12 minutiae (scoring.OVERLAP_MIN_MINUTIAE): with fewer than 8 a genuine
#: pair cannot score as one, and a handful of minutiae agree with some part of almost any print,
#: so such a template is refused (with its count and this minimum) rather than stored as if usable.
MIN_TEMPLATE_MINUTIAE = 8
#: Finger quality (0-100) below which an enrolled or searched template is flagged (a
#: TemplateQualityWarning), not refused. 0 is not held against a template: many records (the
#: FVC2002 vendor ISO files among them) write 0 for "not reported".
LOW_TEMPLATE_QUALITY = 20


class TemplateQualityWarning(UserWarning):
    """A template at or above the minimum count but of low reported finger quality."""


def check_gallery_name(name, field_name: str = "gallery") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise GalleryError(
            f"{field_name}: {name!r} is not a valid gallery name (1-64 characters: letters, digits, '.', '_', '-', "
            "starting with a letter or digit)"
        )
    return name


def check_subject(subject_id) -> str:
    if not isinstance(subject_id, str) or not subject_id.strip() or len(subject_id) > _MAX_SUBJECT_LEN:
        raise GalleryError(f"subject_id: expected a non-empty string of at most {_MAX_SUBJECT_LEN} characters, got {subject_id!r}")
    if not subject_id.isprintable():
        raise GalleryError(f"subject_id: {subject_id!r} holds non-printable characters")
    return subject_id


def check_position(pos, field_name: str) -> int:
    if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)) or int(pos) not in FINGER_POSITIONS:
        raise GalleryError(f"{field_name}: finger position {pos!r} is not an ANSI/NIST-ITL FGP code 0-10")
    return int(pos)


def check_operator(operator) -> str:
    if operator is None:
        try:
            return getpass.getuser()
        except Exception:  # no login name available (containers)
            return "unknown"
    if not isinstance(operator, str) or not operator.strip() or len(operator) > 256:
        raise GalleryError(f"operator: expected a non-empty string, got {operator!r}")
    return operator


def check_transaction_id(tid):
    if tid is not None and (not isinstance(tid, str) or len(tid) > 256):
        raise GalleryError(f"transaction_id: expected a string of at most 256 characters, got {tid!r}")
    return tid


def as_template(value, position: int, name: str) -> tuple[Template, bytes | None]:
    """A Template at ``position`` from a Template, template file/bytes, image file or array; plus original bytes."""
    original = None
    if isinstance(value, Template):
        t = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        from ..formats import load_template

        t = load_template(bytes(value), name=name)
    elif isinstance(value, (str, os.PathLike)):
        from ..formats import is_template

        path = Path(value)
        try:
            template_file = is_template(path)  # by content, whatever the file is called (the CLI's rule too)
        except FormatError as exc:
            raise GalleryError(f"{name}: {exc}") from None
        if template_file:
            from ..formats import load_template

            t = load_template(path, name=f"{name} ({path})")
        else:
            from ..extraction import extract

            try:
                original = path.read_bytes()
            except OSError as exc:
                raise GalleryError(f"{name}: cannot read {path} ({exc.strerror or exc})") from None
            t = extract(path, position=position)
    elif isinstance(value, np.ndarray):
        from ..extraction import extract

        t = extract(value, position=position)
    else:
        raise GalleryError(f"{name}: expected a Template, template bytes, a file path or an image array, got {type(value).__name__}")
    if t.position not in (0, position):
        raise GalleryError(f"{name}: the template says finger position {t.position}, the key says {position}")
    if t.position != position:
        t = Template(np.array(t.minutiae), t.width, t.height, t.ppi, position, t.quality)
    check_template_minimum(t, name)
    return t, original


def check_template_minimum(t: Template, name: str) -> None:
    """Refuse a template with fewer than MIN_TEMPLATE_MINUTIAE minutiae; flag one of low quality."""
    if len(t) < MIN_TEMPLATE_MINUTIAE:
        raise TemplateError(f"{name}: template has {len(t)} minutiae, fewer than the {MIN_TEMPLATE_MINUTIAE} an "
                            "enrolled or searched print needs (re-capture or re-extract it)")
    if 0 < t.quality < LOW_TEMPLATE_QUALITY:
        import warnings

        warnings.warn(f"{name}: low finger quality {t.quality} (below {LOW_TEMPLATE_QUALITY}); "
                      "matching this print is less reliable", TemplateQualityWarning, stacklevel=4)


def check_fingers(fingers, field_name: str = "fingers") -> dict[int, tuple[Template, bytes | None]]:
    if not isinstance(fingers, Mapping):
        raise GalleryError(f"{field_name}: expected a dict of finger position -> template/image, got {type(fingers).__name__}")
    if not fingers:
        raise GalleryError(f"{field_name}: no fingers given")
    out = {}
    for pos, value in fingers.items():
        p = check_position(pos, f"{field_name}[{pos!r}]")
        out[p] = as_template(value, p, f"{field_name}[{p}]")
    return out


class Enrolment(NamedTuple):
    """Checked arguments of an enrolment (see :func:`check_enrolment`)."""

    subject_id: str
    operator: str
    transaction_id: str | None
    metadata: str | None  # JSON text
    fingers: dict  # position -> (Template, original image bytes or None)
    originals: dict  # position (None: a transaction) -> bytes
    context: dict | None


def check_enrolment(subject_id, fingers, gallery, operator, transaction_id, metadata, originals, context) -> Enrolment:
    """The one set of rules for an enrolment's arguments (:meth:`Gallery.enroll` and a sharded
    gallery's); raises GalleryError or TemplateError naming the bad argument."""
    subject_id = check_subject(subject_id)
    check_gallery_name(gallery)
    return Enrolment(subject_id, check_operator(operator), check_transaction_id(transaction_id), check_metadata(metadata),
                      check_fingers(fingers), check_originals(originals), check_context(context))


def template_hash(t: Template) -> str:
    return hashlib.sha256(t.to_bytes()).hexdigest()


def check_galleries(galleries) -> list[str] | None:
    """The galleries a search names: None (all), one name, or a list (duplicates dropped, order kept)."""
    if galleries is None:
        return None
    if isinstance(galleries, str):
        galleries = [galleries]
    names = list(dict.fromkeys(check_gallery_name(g, "galleries") for g in galleries))
    if not names:
        raise GalleryError("galleries: empty list")
    return names


def check_metadata(metadata):
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise GalleryError(f"metadata: expected a dict, got {type(metadata).__name__}")
    try:
        return json.dumps(metadata, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"metadata: not JSON-serialisable ({exc})") from None


def check_batch(batch) -> int:
    """Subjects per transaction of a bulk change: one SQL ``IN`` list each (SQLite builds before
    3.32 take at most 999 parameters a statement)."""
    return check_int(batch, "batch", 1, MAX_BATCH, error=GalleryError)


def check_context(context):
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise GalleryError(f"context: expected a dict, got {type(context).__name__}")
    try:
        return json.loads(json.dumps(dict(context), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"context: not JSON-serialisable ({exc})") from None


def check_originals(originals) -> dict:
    if originals is None:
        return {}
    if not isinstance(originals, Mapping):
        raise GalleryError(f"originals: expected a dict of position -> bytes, got {type(originals).__name__}")
    out = {}
    for pos, data in originals.items():
        p = None if pos is None else check_position(pos, f"originals[{pos!r}]")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise GalleryError(f"originals[{pos!r}]: expected bytes, got {type(data).__name__}")
        out[p] = bytes(data)
    return out
