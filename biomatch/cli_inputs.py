"""The prints a verb is given: a template or image file (told by content), ``--finger POS=FILE``
specs, an ANSI/NIST-ITL transaction (``--ebts``), a folder of ``SUBJECT_POS.ext`` files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .errors import BiomatchError

PPI_OPT = typer.Option(None, "--ppi", help="Resolution of images that state none (default 500).")
FINGER_HELP = "POS=FILE: finger position (FGP 0-10) and an image or template file; repeatable."


def load_print(path: Path, ppi: Optional[float]):
    """A template file (ISO 19794-2 / ANSI 378 / biomatch, told by its content:
    :func:`biomatch.formats.is_template`, the library's rule) or an image to extract."""
    from .formats import is_template

    if is_template(path):
        from .formats import load_template

        return load_template(path), None
    from .extraction import extract_detailed

    result = extract_detailed(path, ppi=ppi)
    return result.template, result


def _parse_fingers(specs: list) -> dict:
    fingers = {}
    for spec in specs or []:
        pos, sep, path = spec.partition("=")
        if not sep or not pos.strip().isdigit():
            raise BiomatchError(f"--finger {spec!r}: expected POS=FILE with POS a finger position 0-10")
        p = int(pos)
        if p in fingers:
            raise BiomatchError(f"--finger {spec!r}: position {p} given twice")
        fingers[p] = Path(path)
    return fingers


def load_fingers(specs: list, ppi: Optional[float]) -> tuple[dict, dict]:
    """Templates and original image bytes of --finger POS=FILE specs; a file is a template or an image
    by its content (:func:`load_print`), whatever its name."""
    fingers, originals = {}, {}
    for pos, path in _parse_fingers(specs).items():
        template, extraction = load_print(path, ppi)
        fingers[pos] = template
        if extraction is not None:
            try:
                originals[pos] = path.read_bytes()
            except OSError as exc:
                raise BiomatchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return fingers, originals


#: ANSI/NIST-ITL record types the engine does not read, as a person would name them.
_UNSUPPORTED_RECORDS = {
    2: "user-defined descriptive text", 7: "user-defined image", 8: "signature image",
    10: "face, other body part or scar/mark/tattoo image", 11: "voice", 12: "forensic dental",
    13: "latent print", 15: "palm print", 16: "user-defined test image", 17: "iris image",
    18: "DNA", 19: "plantar (foot) print", 20: "source representation", 21: "associated context",
    22: "non-photographic imagery", 98: "information assurance", 99: "CBEFF biometric data",
}


def _unsupported_records(tx) -> list:
    """'Type-13 latent print record' for each record type of ``tx`` that the engine does not read."""
    types = sorted({t for t, _ in tx.records if t in _UNSUPPORTED_RECORDS})
    return [f"Type-{t} {_UNSUPPORTED_RECORDS[t]} record" for t in types]


def ebts_fingers(path: Path):
    """Fingers, transaction id and audit context from an ANSI/NIST-ITL transaction."""
    from .formats import read_transaction

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BiomatchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    tx = read_transaction(data, name=str(path))  # errors name the file, not 'transaction bytes'
    fingers = dict(tx.templates)
    # fingers sent as images only (no Type-9 for their position) are extracted here
    images = [img for img in tx.images if img.pixels is not None and img.position not in fingers and 0 <= img.position <= 10]
    if images:
        from .extraction import extract

        for img in images:
            fingers.setdefault(img.position, extract(img.pixels, ppi=img.ppi, position=img.position))
    unsupported = _unsupported_records(tx)
    if not fingers:
        if unsupported:
            raise BiomatchError(f"{path}: not supported: {', '.join(unsupported)} (this engine reads single-finger "
                                "images, Type-4/14, and minutiae, Type-9)")
        raise BiomatchError(f"{path}: the transaction holds no finger images or templates")
    if unsupported:
        import warnings

        warnings.warn(f"{path}: not supported, ignored: {', '.join(unsupported)}", stacklevel=2)
    return fingers, tx.tcn or None, {"ori": tx.ori, "tcn": tx.tcn, "tot": tx.tot, "source": path.name}, data


def folder_subjects(folder: Path) -> list:
    """SUBJECT_POS.ext files (POS an FGP code 0-10; other names: position 0), grouped by subject."""
    from .gallery.checks import TEMPLATE_SUFFIXES as _TEMPLATE_SUFFIXES

    image_suffixes = {".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".wsq", ".pgm"}
    groups: dict = {}
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.suffix.lower() not in image_suffixes | _TEMPLATE_SUFFIXES:
            continue
        subject, sep, pos = f.stem.rpartition("_")
        if not sep or not pos.isdigit() or int(pos) > 10:
            subject, pos = f.stem, "0"
        fingers = groups.setdefault(subject, {})
        if int(pos) in fingers:
            raise BiomatchError(f"{f}: subject {subject!r} already has a file for position {pos}")
        fingers[int(pos)] = f
    if not groups:
        raise BiomatchError(f"{folder}: no image or template files (SUBJECT_POS.ext) found")
    return sorted(groups.items())
