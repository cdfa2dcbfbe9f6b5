"""The narrow API a sharded gallery (:mod:`biomatch.distributed`) calls on the stores it is made of.

A shard is an ordinary store; the coordinator is a store holding no subjects. Through these
methods (and the ordinary public ones: enroll, delete_many, import_from, ...) the sharded
gallery runs the three search steps apart, lists what a shard holds, keeps its own settings
and audit records, and never reads the schema itself.
"""

from __future__ import annotations

import re
from typing import Mapping

from .. import audit as _audit
from ..errors import GalleryError
from .checks import check_operator

#: Names of the settings a sharded gallery keeps in a store: "<owner>.<name>", apart from the
#: store's own meta keys (schema_version, created, key_current, key_check:...).
_SETTING_RE = re.compile(r"^[a-z]+\.[a-z_]+$")


def _setting_key(name) -> str:
    if not isinstance(name, str) or not _SETTING_RE.match(name):
        raise GalleryError(f"setting: {name!r} is not a setting name ('<owner>.<name>', lower case)")
    return name


class ShardMixin:
    """Search steps, contents and settings for :mod:`biomatch.distributed` (part of :class:`Gallery`)."""

    def subject_counts(self) -> dict[str, int]:
        """Subjects per gallery (counted once per gallery generation)."""
        con = self._con()
        return {name: self._n_subjects(con, gid, gen)
                for gid, name, gen in con.execute("SELECT id, name, generation FROM galleries").fetchall()}

    def search_neighbours(self, probes: Mapping, galleries=None, nprobe: Mapping | None = None) -> dict:
        """Step 1 of a search: the FAISS k-NN of every probe cylinder, ties complete, keyed by subject id.

        ``probes`` maps a position to a checked :class:`~biomatch.template.Template`;
        ``nprobe`` ({gallery: {position: IVF lists}}, decided for the whole sharded
        gallery) sets the lists visited. Galleries this store lacks are left out. Returns
        ``{"counts": {gallery: subjects}, "fingers": {gallery: fingers}, "neighbours":
        {gallery: {probe position: Neighbours}}, "sizes": {gallery: {position: codes}}}``.
        """
        con = self._con()
        counts = self.subject_counts()
        names = list(counts) if galleries is None else [g for g in galleries if g in counts]
        fingers, neighbours, sizes = {}, {}, {}
        for name in names:
            gid, _ = self._require_gallery(con, name)
            fingers[name], neighbours[name], sizes[name] = self._search_neighbours(
                con, name, gid, probes, (nprobe or {}).get(name))
        return {"counts": {n: counts[n] for n in names}, "fingers": fingers, "neighbours": neighbours, "sizes": sizes}

    def search_rescore(self, probes: Mapping, subjects: Mapping) -> list:
        """Step 3: ``{gallery: [subject ids] or None (all)}`` -> [(gallery, subject, per, comparisons)], ``per``
        the list of (probe position, position, raw score, finger id), ``comparisons`` the impressions each
        score is the best of, as :class:`biomatch.search.ranking.Rescored` holds them for ``rank``."""
        con = self._con()
        counts = self.subject_counts()
        rows = []
        for name, wanted in subjects.items():
            if name in counts:
                gid, _ = self._require_gallery(con, name)
                rows += self._search_rescore(con, name, gid, probes, wanted)
        return rows

    def search_pairs(self, probes: Mapping, wanted: list) -> list:
        """Minutia pairs of (probe position, finger id) comparisons (the fingers of final candidates)."""
        return [self._pairs(probes[pp], fid) for pp, fid in wanted]

    def subject_keys(self) -> list[tuple[str, str]]:
        """Every (gallery, subject) the store holds."""
        return self._con().execute(
            "SELECT galleries.name, subject FROM subjects JOIN galleries ON galleries.id = subjects.gallery_id"
        ).fetchall()

    def search_calibration(self) -> tuple:
        """(calibration or None, label for the audit) that a search of this store uses."""
        entry = self._calibration_entry()
        return entry[1], self._calibration_label(entry)

    def setting(self, name: str) -> str | None:
        """A setting another layer keeps in this store (``"<owner>.<name>"``), or None."""
        row = self._con().execute("SELECT value FROM meta WHERE key = ?", (_setting_key(name),)).fetchone()
        return row[0] if row else None

    def record(self, action: str | None, operator: str | None = None, fields: dict | None = None, *,
               settings: Mapping[str, str | None] | None = None) -> int | None:
        """In one write transaction: change settings (None deletes one) and append an audit record
        ``action`` with ``fields``; returns the record's sequence number (None without an action)."""
        keys = {_setting_key(k): v for k, v in (settings or {}).items()}
        with self._write() as con:
            for key, value in keys.items():
                if value is None:
                    con.execute("DELETE FROM meta WHERE key = ?", (key,))
                else:
                    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, str(value)))
            if action is None:
                return None
            return _audit.append(con, action, check_operator(operator), dict(fields or {}))["seq"]
