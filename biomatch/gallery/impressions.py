"""Extra impressions of a subject's fingers: what they are, their checks, and the rows that hold them.

A finger of an enrolled subject has a primary print (impression 0: the rolled print of a
booking, or whatever was enrolled as the finger) and may have extra impressions 1 ..
:data:`MAX_IMPRESSION` of the same finger (the plain print a booking's slap gave, ...), each
with its source (``"rolled"``, ``"plain"``, ``"slap 13"``, ...). Every impression is its own
finger row with its own finger id, indexed and rescored like any finger; a search scores a
subject's finger as the best of its impressions (:func:`biomatch.search.ranking.best_impressions`).
"""

from __future__ import annotations

import re
from typing import Iterable, NamedTuple

import numpy as np

from ..errors import GalleryError
from .checks import as_template, check_position
from .migrate import MAX_IMPRESSION, PRIMARY_SOURCE

_SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9 ._-]{0,39}$")


class Impression(NamedTuple):
    """An extra impression to enrol: finger ``position``, impression ``number`` (1..MAX_IMPRESSION),
    the print (Template, template bytes/path, image path or 2-D uint8 array) and its ``source``."""

    position: int
    number: int
    finger: object
    source: str = "plain"


def check_source(source, field_name: str) -> str:
    """A print's source: 1-40 characters, lower-case letters, digits, space, '.', '_', '-' (e.g. ``"slap 13"``)."""
    if not isinstance(source, str) or not _SOURCE_RE.match(source):
        raise GalleryError(f"{field_name}: source {source!r} is not 1-40 characters of lower-case letters, digits, "
                           "space, '.', '_' or '-' (e.g. 'rolled', 'plain', 'slap 13')")
    return source


def check_sources(sources, positions) -> dict:
    """Sources of the primary prints (position -> source); every position not given is :data:`PRIMARY_SOURCE`."""
    out = {p: PRIMARY_SOURCE for p in positions}
    if sources is None:
        return out
    if not isinstance(sources, dict):
        raise GalleryError(f"sources: expected a dict of finger position -> source, got {type(sources).__name__}")
    for pos, source in sources.items():
        p = check_position(pos, f"sources[{pos!r}]")
        if p not in out:
            raise GalleryError(f"sources[{p}]: no primary print is given at finger position {p}")
        out[p] = check_source(source, f"sources[{p}]")
    return out


def check_impression_number(n, position: int, field_name: str = "impression", hint: str | None = None) -> int:
    """An extra impression's number, 1..MAX_IMPRESSION; 0 (the primary print) and anything else refused naming it."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= MAX_IMPRESSION:
        if hint is None and not isinstance(n, bool) and isinstance(n, (int, np.integer)) and int(n) == 0:
            hint = (f"(0 is the primary print: remove the finger with update(remove_positions=[{position}]) "
                    "or replace it with update(fingers=...))")
        raise GalleryError(f"{field_name}: impression number {n!r} of finger {position} is out of range "
                           f"1-{MAX_IMPRESSION}" + (f" {hint}" if hint else ""))
    return int(n)


def check_impressions(impressions, primaries, field_name: str = "impressions") -> dict:
    """Checked extra impressions: {(position, number): (Template, source)}.

    ``primaries`` are the positions that will have a primary print (None: not checked here, the
    caller checks against the store). Raises GalleryError naming the item for a number out of
    range, a (position, number) given twice, or an impression of a finger without a primary print.
    """
    if impressions is None:
        return {}
    if isinstance(impressions, (str, bytes, dict)) or not isinstance(impressions, Iterable):
        raise GalleryError(f"{field_name}: expected a list of Impression(position, number, finger, source), "
                           f"got {type(impressions).__name__}")
    out: dict = {}
    for i, item in enumerate(impressions):
        name = f"{field_name}[{i}]"
        if not isinstance(item, tuple) or len(item) not in (3, 4):
            raise GalleryError(f"{name}: expected Impression(position, number, finger, source), got {item!r:.80}")
        imp = Impression(*item)
        pos = check_position(imp.position, name)
        n = check_impression_number(imp.number, pos, name, "(0 is the primary print, given in fingers)")
        if (pos, n) in out:
            raise GalleryError(f"{name}: impression {n} of finger {pos} is given twice")
        if primaries is not None and pos not in primaries:
            raise GalleryError(f"{name}: impression {n} of finger {pos}, but the subject has no primary print "
                               f"at position {pos}")
        source = check_source(imp.source, name)
        template, _ = as_template(imp.finger, pos, f"{name} (finger {pos}, impression {n})")
        out[(pos, n)] = (template, source)
    return out


def audit_impressions(prepared: dict, checked: dict) -> list:
    """The audit record's list of the extra impressions stored: position, number, source, template hash."""
    return [{"position": pos, "impression": n, "source": checked[(pos, n)][1], "sha256": prepared[(pos, n)]["sha256"]}
            for pos, n in sorted(prepared)]
