"""Enrolment, update and deletion of subjects."""

from __future__ import annotations

import collections
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Mapping


from .. import audit as _audit
from ..errors import GalleryError
from ..template import Template
from .checks import (
    check_batch,
    check_context,
    check_enrolment,
    check_fingers,
    check_gallery_name,
    check_metadata,
    check_operator,
    check_position,
    check_subject,
    check_transaction_id,
)
from .impressions import audit_impressions, check_impression_number, check_impressions, check_sources
from .migrate import PRIMARY_SOURCE
#: Fingers enrolled per transaction by :meth:`Gallery.enroll_many`.
BULK_BATCH = 500
#: Threads preparing a batch of :meth:`Gallery.enroll_many` (descriptors, rescoring rows, index
#: codes): the descriptor kernel and the hulls release the GIL, so fingers are prepared side by side.
ENROL_THREADS = max(1, min(4, os.cpu_count() or 1))
DELETE_BATCH = 500


class EnrolmentMixin:
    """Enrol, update and delete subjects (part of :class:`Gallery`)."""

    # -- enrolment ------------------------------------------------------------
    def enroll(
        self,
        subject_id: str,
        fingers: Mapping,
        *,
        gallery: str = "default",
        operator: str | None = None,
        metadata: dict | None = None,
        transaction_id: str | None = None,
        originals: Mapping | None = None,
        keep_originals: bool = True,
        context: dict | None = None,
        impressions=None,
        sources: dict | None = None,
    ) -> int:
        """Enrol a new subject.

        Parameters
        ----------
        subject_id : str
        fingers : dict of int -> Template, template bytes/path, image path or 2-D uint8 array
            Keyed by FGP position 0-10. Images are extracted.
        gallery : str
            Created on first enrolment.
        operator : str, optional
            Who enrols (default: the login name).
        metadata : dict, optional
            JSON-ready data kept with the subject.
        transaction_id : str, optional
            Caller's transaction id (e.g. the ANSI/NIST TCN) for the audit.
        originals : dict of (int or None) -> bytes, optional
            Original images or transactions to keep (key: position, None for a whole transaction).
        keep_originals : bool
            Keep the bytes of image files given in ``fingers``.
        context : dict, optional
            JSON-ready facts for the audit record (e.g. ``{"ori": ..., "tcn": ...}``); no biometric data.
        impressions : list of Impression(position, number, finger, source), optional
            Extra impressions of fingers given in ``fingers`` (numbers 1..MAX_IMPRESSION, each
            its own finger row; a search scores a finger as the best of its impressions). The
            audit record lists them (position, number, source, template hash).
        sources : dict of int -> str, optional
            Where the primary prints come from (e.g. ``"rolled"``); default ``"primary"``.

        Returns
        -------
        int
            The audit record's sequence number.

        Raises
        ------
        GalleryError, TemplateError
            Nothing is stored when any input is bad (an impression number out of range or
            given twice, an impression of a finger without a primary print, ...) or the subject exists.
        """
        subject_id, operator, transaction_id, meta_text, checked, extra, ctx = check_enrolment(
            subject_id, fingers, gallery, operator, transaction_id, metadata, originals, context)
        srcs = check_sources(sources, checked)
        imps = check_impressions(impressions, set(checked))
        prepared = self._prepare(checked)
        prepared_imps = self._prepare(imps)
        with self._write() as con:
            gid, gen = self._gallery_row(con, gallery, create=True)
            if con.execute("SELECT 1 FROM subjects WHERE gallery_id = ? AND subject = ?", (gid, subject_id)).fetchone():
                raise GalleryError(f"subject_id: {subject_id!r} is already enrolled in gallery {gallery!r} (use update)")
            now = _audit.utc_now()
            sid = con.execute(
                "INSERT INTO subjects(gallery_id, subject, metadata, created, updated) VALUES (?, ?, ?, ?, ?)",
                (gid, subject_id, self._seal_metadata(con, gallery, subject_id, meta_text), now, now),
            ).lastrowid
            added = self._insert_fingers(con, sid, prepared, gid, gen + 1, srcs,
                                         {k: (prepared_imps[k], imps[k][1]) for k in imps})
            self._insert_originals(con, sid, checked if keep_originals else {}, extra)
            con.execute("UPDATE galleries SET generation = ? WHERE id = ?", (gen + 1, gid))
            rec = _audit.append(
                con,
                "enroll",
                operator,
                {
                    "transaction_id": transaction_id,
                    "gallery": gallery,
                    "subject": subject_id,
                    "fingers": {str(p): prepared[p]["sha256"] for p in sorted(prepared)},
                    **({"sources": {str(p): srcs[p] for p in sorted(srcs)}} if sources else {}),
                    **({"impressions": audit_impressions(prepared_imps, imps)} if imps else {}),
                    "context": ctx,
                    "software": _audit.software(),
                },
            )
        self._index_added(gallery, gen, added)
        return rec["seq"]

    def enroll_transaction(
        self,
        subject_id: str,
        transaction,
        *,
        gallery: str = "default",
        operator: str | None = None,
        metadata: dict | None = None,
        transaction_id: str | None = None,
        override: bool = False,
        keep_original: bool = True,
        context: dict | None = None,
        keep_slap_impressions: bool = False,
    ) -> int:
        """Enrol a ten-print booking after the sequence check and the quality gate (:func:`biomatch.sequence.intake`).

        A transaction whose rolled boxes hold other fingers (matched against
        its slaps), or whose rolled prints must be re-taken, is refused with
        the reasons unless ``override``; the audit record's context holds
        ``intake``: what was checked, each box's verdict, the quality
        decisions and whether a refusal was overridden. Fingers without a
        rolled print are enrolled from their slap segment. Each finger's source is
        recorded (``"rolled"``, ``"type-9"``, ``"slap 13"``, ...).

        Parameters
        ----------
        transaction : Transaction, bytes, str or os.PathLike
            The ANSI/NIST-ITL transaction (kept as the subject's original unless ``keep_original`` is False).
        override : bool
            Enrol even when the check or the gate would refuse.
        keep_slap_impressions : bool
            Also store each slap segment the quality gate accepted (and that is not a finger's
            primary print already) as an extra impression of its finger, source ``"slap 13"``
            etc., numbered 1.. per finger in slap order; later searches score a finger as the
            best of its impressions. The audit record lists the impressions stored. Default False.

        Returns
        -------
        int
            The audit record's sequence number.

        Raises
        ------
        GalleryError
            Refused (the message lists the reasons); nothing is stored.
        """
        from ..formats import Transaction, read_transaction
        from ..formats._common import load_source
        from ..sequence import intake

        if isinstance(transaction, Transaction):
            raw, tx = transaction.to_bytes(), transaction
        else:
            raw, name = load_source(transaction, None, "transaction")
            tx = read_transaction(raw, name=name)
        if not isinstance(keep_slap_impressions, bool):
            raise GalleryError(f"keep_slap_impressions: expected True or False, got {keep_slap_impressions!r}")
        decision = intake(tx, override=override)
        if not decision.accepted:
            raise GalleryError(f"{tx.name}: enrolment refused ({'; '.join(decision.refused_reasons)}); "
                               "re-take the prints or override")
        impressions, numbers = [], collections.Counter()
        if keep_slap_impressions:
            for pos, source, t in decision.slap_impressions:
                numbers[pos] += 1
                impressions.append((pos, numbers[pos], t, source))
        intake_audit = {**decision.audit, "slap_impressions_kept": bool(keep_slap_impressions)}
        ctx = {"ori": tx.ori, "tcn": tx.tcn, "tot": tx.tot, **(context or {}), "intake": intake_audit}
        return self.enroll(subject_id, decision.fingers, gallery=gallery, operator=operator, metadata=metadata,
                           transaction_id=transaction_id or tx.tcn or None,
                           originals={None: raw} if keep_original else None, context=ctx,
                           impressions=impressions or None, sources=decision.sources)

    def enroll_many(
        self,
        subjects: Iterable,
        *,
        gallery: str = "default",
        operator: str | None = None,
        transaction_id: str | None = None,
        progress=None,
    ) -> int:
        """Enrol many subjects, :data:`BULK_BATCH` fingers per transaction (one audit record each).

        Parameters
        ----------
        subjects : iterable of (subject_id, fingers) or (subject_id, fingers, metadata)
        progress : callable(int), optional
            Called with the number of subjects committed after each batch.

        Returns
        -------
        int
            Subjects enrolled. A bad subject raises before its batch is committed;
            earlier batches stay enrolled.
        """
        check_gallery_name(gallery)
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        total = 0
        batch: list = []
        n_fingers = 0
        with ThreadPoolExecutor(ENROL_THREADS, thread_name_prefix="biomatch-enrol") as pool:

            def commit():
                # the batch's fingers prepared side by side, in order (the first failure raises)
                prepared = list(pool.map(self._prepare, [checked for _, checked, _ in batch]))
                done = self._commit_batch([(*b, p) for b, p in zip(batch, prepared)], gallery, operator,
                                          transaction_id)
                if progress is not None:
                    progress(len(batch))
                return done

            for item in subjects:
                if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                    raise GalleryError(
                        "subjects: each item must be (subject_id, fingers) or (subject_id, fingers, metadata)")
                sid = check_subject(item[0])
                checked = check_fingers(item[1], f"fingers of {sid!r}")
                meta_text = check_metadata(item[2] if len(item) == 3 else None)
                batch.append((sid, checked, meta_text))
                n_fingers += len(checked)
                if n_fingers >= BULK_BATCH:
                    total += commit()
                    batch, n_fingers = [], 0
            if batch:
                total += commit()
        return total

    def _commit_batch(self, batch, gallery, operator, transaction_id) -> int:
        with self._write() as con:
            gid, gen = self._gallery_row(con, gallery, create=True)
            now = _audit.utc_now()
            added = []
            seen = set()
            state = self._metadata_state(con)
            for sid, checked, meta_text, prepared in batch:
                if sid in seen or con.execute(
                    "SELECT 1 FROM subjects WHERE gallery_id = ? AND subject = ?", (gid, sid)
                ).fetchone():
                    raise GalleryError(f"subject_id: {sid!r} is already enrolled in gallery {gallery!r}")
                seen.add(sid)
                rowid = con.execute(
                    "INSERT INTO subjects(gallery_id, subject, metadata, created, updated) VALUES (?, ?, ?, ?, ?)",
                    (gid, sid, self._seal_metadata(con, gallery, sid, meta_text, state), now, now),
                ).lastrowid
                added += self._insert_fingers(con, rowid, prepared, gid, gen + 1)
                self._insert_originals(con, rowid, checked, {})
                _audit.append(
                    con,
                    "enroll",
                    operator,
                    {
                        "transaction_id": transaction_id,
                        "gallery": gallery,
                        "subject": sid,
                        "fingers": {str(p): prepared[p]["sha256"] for p in sorted(prepared)},
                        "software": _audit.software(),
                    },
                )
            con.execute("UPDATE galleries SET generation = ? WHERE id = ?", (gen + 1, gid))
        self._index_added(gallery, gen, added)
        return len(batch)

    def _prepare(self, checked) -> dict:
        """Template bytes, hash and index codes of validated fingers (outside any transaction)."""
        from ..descriptors import encode
        from ..index import finger_codes
        from ..scoring import pack

        out = {}
        for pos, (given, _) in checked.items():
            data = given.to_bytes()
            # descriptors, rescoring rows and codes from the template *as stored* (the binary
            # form quantizes): a store rebuilt from its bytes then scores exactly as before
            t = Template.from_bytes(data, name=f"finger {pos}")
            out[pos] = {
                "template": t,
                "bytes": data,
                "sha256": hashlib.sha256(data).hexdigest(),
                "codes": finger_codes(encode(t)),
                "packed": pack([t]),
            }
        return out

    def _insert_fingers(self, con, sid: int, prepared: dict, gid: int, generation: int, sources=None,
                        extras=None) -> list:
        """Finger rows of prepared primary prints (position -> :meth:`_prepare` entry; ``sources``: position
        -> source) and extra impressions (``extras``: (position, number) -> (entry, source))."""
        rows = [(pos, 0, (sources or {}).get(pos, PRIMARY_SOURCE), prepared[pos]) for pos in sorted(prepared)]
        rows += [(pos, n, source, p) for (pos, n), (p, source) in sorted((extras or {}).items())]
        added = []
        for pos, impression, source, p in rows:
            t = p["template"]
            fid = self._insert_finger(con, sid, pos, p["bytes"], p["sha256"], len(t), t.quality, gid, generation,
                                      impression, source)
            added.append((fid, pos, p["codes"], t, p["sha256"], p["packed"]))
        return added

    def _insert_finger(self, con, sid: int, pos: int, data: bytes, sha: str, n_minutiae: int, quality: int,
                       gid: int, generation: int, impression: int = 0, source: str = PRIMARY_SOURCE) -> int:
        """One finger row (template sealed) and its 'add' change; returns the finger id."""
        fid = con.execute(
            "INSERT INTO fingers(subject_id, position, impression, source, template, sha256, n_minutiae, quality) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (sid, pos, impression, source, self._seal_finger(con, sid, pos, data, impression), sha, n_minutiae,
             quality),
        ).lastrowid
        con.execute(
            "INSERT INTO changes(gallery_id, generation, op, finger_id, position) VALUES (?, ?, 'add', ?, ?)",
            (gid, generation, fid, pos),
        )
        return fid

    def _insert_originals(self, con, sid: int, checked: dict, extra: dict) -> None:
        rows = [(pos, "image", original) for pos, (_, original) in checked.items() if original is not None]
        rows += [(pos, "transaction" if pos is None else "image", data) for pos, data in extra.items()]
        self._insert_original_rows(con, sid, rows)

    def _insert_original_rows(self, con, sid: int, rows) -> None:
        """Originals [(position or None, kind, bytes)] of a subject, sealed."""
        for pos, kind, data in rows:
            con.execute(
                "INSERT INTO originals(subject_id, position, kind, data) VALUES (?, ?, ?, ?)",
                (sid, pos, kind, self._seal_original(con, sid, pos, kind, data)),
            )

    # -- update / delete -------------------------------------------------------
    def update(
        self,
        subject_id: str,
        fingers: Mapping | None = None,
        *,
        gallery: str = "default",
        operator: str | None = None,
        metadata: dict | None = None,
        remove_positions: Iterable[int] = (),
        transaction_id: str | None = None,
        impressions=None,
        keep_impressions: bool = True,
        sources: dict | None = None,
    ) -> int:
        """Replace or add fingers of an enrolled subject, remove some, add extra impressions, or replace its metadata.

        ``fingers`` replaces (or adds) primary prints. A replaced primary keeps the finger's
        extra impressions by default (they are other prints of the same finger);
        ``keep_impressions=False`` drops them with it. ``remove_positions`` removes a finger
        with all its impressions. ``impressions`` (as :meth:`enroll`) adds extra impressions
        of fingers that have a primary print after the update; an impression number the
        finger already holds (and keeps) is refused. ``sources`` as :meth:`enroll`.

        Returns the audit record's sequence number. Raises GalleryError for an
        unknown subject or gallery; nothing changes on bad input.
        """
        subject_id = check_subject(subject_id)
        check_gallery_name(gallery)
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        checked = check_fingers(fingers) if fingers is not None else {}
        removing = sorted({check_position(p, "remove_positions") for p in remove_positions})
        if not isinstance(keep_impressions, bool):
            raise GalleryError(f"keep_impressions: expected True or False, got {keep_impressions!r}")
        if not checked and not removing and metadata is None and not impressions:
            raise GalleryError("update: nothing to change (give fingers, impressions, remove_positions or metadata)")
        if set(checked) & set(removing):
            raise GalleryError(f"remove_positions: {sorted(set(checked) & set(removing))} are also given in fingers")
        meta_text = check_metadata(metadata)
        srcs = check_sources(sources, checked)
        imps = check_impressions(impressions, None)  # whose primary prints exist is known inside the transaction
        prepared = self._prepare(checked)
        prepared_imps = self._prepare(imps)
        with self._write() as con:
            gid, gen = self._require_gallery(con, gallery)
            sid = self._require_subject(con, gid, gallery, subject_id)
            rows = {(pos, imp): (fid, source) for fid, pos, imp, source in con.execute(
                "SELECT id, position, impression, source FROM fingers WHERE subject_id = ?", (sid,))}
            shas = dict(con.execute("SELECT id, sha256 FROM fingers WHERE subject_id = ?", (sid,)).fetchall())
            primaries = {pos for pos, imp in rows if imp == 0}
            missing = [p for p in removing if p not in primaries]
            if missing:
                raise GalleryError(f"remove_positions: subject {subject_id!r} has no finger at {missing}")
            if len(primaries - set(removing) | set(checked)) == 0:
                raise GalleryError(f"remove_positions: would leave subject {subject_id!r} without fingers (use delete)")
            dropping = {(pos, imp) for pos, imp in rows
                        if pos in removing or (pos in checked and (imp == 0 or not keep_impressions))}
            for key in sorted(imps):
                if key[0] not in primaries - set(removing) | set(checked):
                    raise GalleryError(f"impressions: impression {key[1]} of finger {key[0]}, but subject {subject_id!r} "
                                       f"has no primary print at position {key[0]}; nothing was changed")
                if key in rows and key not in dropping:
                    raise GalleryError(f"impressions: subject {subject_id!r} already holds impression {key[1]} of "
                                       f"finger {key[0]} (source {rows[key][1]!r}); nothing was changed")
            removed = []
            for pos, imp in sorted(dropping):
                fid = rows[(pos, imp)][0]
                con.execute("DELETE FROM fingers WHERE id = ?", (fid,))
                if imp == 0:
                    con.execute("DELETE FROM originals WHERE subject_id = ? AND position = ?", (sid, pos))
                con.execute(
                    "INSERT INTO changes(gallery_id, generation, op, finger_id, position) VALUES (?, ?, 'del', ?, ?)",
                    (gid, gen + 1, fid, pos),
                )
                removed.append(fid)
            added = self._insert_fingers(con, sid, prepared, gid, gen + 1, srcs,
                                         {k: (prepared_imps[k], imps[k][1]) for k in imps})
            self._insert_originals(con, sid, checked, {})
            if metadata is not None:
                con.execute("UPDATE subjects SET metadata = ? WHERE id = ?",
                            (self._seal_metadata(con, gallery, subject_id, meta_text), sid))
            con.execute("UPDATE subjects SET updated = ? WHERE id = ?", (_audit.utc_now(), sid))
            con.execute("UPDATE galleries SET generation = ? WHERE id = ?", (gen + 1, gid))
            rec = _audit.append(
                con,
                "update",
                operator,
                {
                    "transaction_id": transaction_id,
                    "gallery": gallery,
                    "subject": subject_id,
                    "fingers": {str(p): prepared[p]["sha256"] for p in sorted(prepared)},
                    "removed_positions": removing,
                    **({"impressions": audit_impressions(prepared_imps, imps)} if imps else {}),
                    **({"impressions_dropped": [f"{p}.{i}" for p, i in sorted(dropping) if i > 0]}
                       if any(i > 0 for _, i in dropping) else {}),
                    "metadata_replaced": metadata is not None,
                    "software": _audit.software(),
                },
            )
        self._forget(removed)
        self._drop_features([shas[f] for f in removed])
        # replaced biometric data goes as deleted data does: the index file rewritten without the old codes,
        # the WAL (which holds the old pages) checkpointed and truncated
        self._index_changed(gallery, gen, added, removed, save=bool(removed))
        self._checkpoint()
        return rec["seq"]

    def remove_impression(self, subject_id: str, position: int, impression: int, *, gallery: str = "default",
                          operator: str | None = None, transaction_id: str | None = None) -> int:
        """Remove one extra impression (1..MAX_IMPRESSION) of an enrolled subject's finger, e.g. a wrong slap segment.

        As ``update(remove_positions=...)`` does for a whole finger: the row and its 'del'
        change in one transaction with an ``update`` audit record (``impressions_dropped``
        and ``removed_impression``: position, number, source, template hash), then the
        index entry and the rescoring rows go and the index file is rewritten. The primary
        print (impression 0) is refused: remove the finger with ``update(remove_positions=...)``
        or replace it with ``update(fingers=...)``. Returns the audit record's sequence
        number. Raises GalleryError naming what is wrong (unknown gallery, subject, finger
        or impression); nothing changes on bad input.
        """
        subject_id = check_subject(subject_id)
        check_gallery_name(gallery)
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        pos = check_position(position, "position")
        number = check_impression_number(impression, pos)
        with self._write() as con:
            gid, gen = self._require_gallery(con, gallery)
            sid = self._require_subject(con, gid, gallery, subject_id)
            held = {imp: (fid, source, sha) for fid, imp, source, sha in con.execute(
                "SELECT id, impression, source, sha256 FROM fingers WHERE subject_id = ? AND position = ?", (sid, pos))}
            if not held:
                raise GalleryError(f"position: subject {subject_id!r} has no finger at {pos}; nothing was changed")
            if number not in held:
                extra = sorted(i for i in held if i > 0)
                raise GalleryError(f"impression: subject {subject_id!r} holds no impression {number} of finger {pos} "
                                   f"(extra impressions held: {extra or 'none'}); nothing was changed")
            fid, source, sha = held[number]
            con.execute("DELETE FROM fingers WHERE id = ?", (fid,))
            con.execute(
                "INSERT INTO changes(gallery_id, generation, op, finger_id, position) VALUES (?, ?, 'del', ?, ?)",
                (gid, gen + 1, fid, pos),
            )
            con.execute("UPDATE subjects SET updated = ? WHERE id = ?", (_audit.utc_now(), sid))
            con.execute("UPDATE galleries SET generation = ? WHERE id = ?", (gen + 1, gid))
            rec = _audit.append(con, "update", operator, {
                "transaction_id": transaction_id, "gallery": gallery, "subject": subject_id, "fingers": {},
                "removed_positions": [], "impressions_dropped": [f"{pos}.{number}"],
                "removed_impression": {"position": pos, "impression": number, "source": source, "sha256": sha},
                "metadata_replaced": False, "software": _audit.software(),
            })
        self._forget([fid])
        self._drop_features([sha])
        # as update: the index file rewritten without the removed codes, the WAL checkpointed and truncated
        self._index_changed(gallery, gen, [], [fid], save=True)
        self._checkpoint()
        return rec["seq"]

    def delete(self, subject_id: str, *, gallery: str = "default", operator: str | None = None,
               transaction_id: str | None = None, context: dict | None = None) -> int:
        """Delete a subject for good: its rows, originals and index entries.

        The audit keeps only that the deletion happened (subject id, gallery,
        operator, time). SQLite runs with ``secure_delete`` (freed pages are
        zeroed) and the WAL is checkpointed; the gallery's index file is
        rewritten at once. Returns the audit record's sequence number.
        """
        subject_id = check_subject(subject_id)
        check_gallery_name(gallery)
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        ctx = check_context(context)
        with self._write() as con:
            gid, gen = self._require_gallery(con, gallery)
            sid = self._require_subject(con, gid, gallery, subject_id)
            fingers, rec = self._delete_rows(con, gid, gen, [(sid, subject_id)], gallery, operator,
                                             transaction_id, ctx)
        self._deleted(gallery, gen, fingers, save=True)
        # readers (other threads or processes) can block it: the WAL copy goes at the next full checkpoint
        self._checkpoint()
        return rec["seq"]

    def _delete_rows(self, con, gid: int, gen: int, rows: list, gallery: str, operator: str, transaction_id,
                     ctx) -> tuple[list, dict]:
        """Delete subjects ``rows`` [(subjects.id, subject id)] inside the caller's write transaction:
        their derived rows, a 'del' change per finger, the rows (cascading to fingers and originals),
        the generation bump and one audit record per subject. Returns (fingers [(id, position,
        sha256)], the last audit record)."""
        sids = [r[0] for r in rows]
        fingers = []
        for i in range(0, len(sids), 400):  # SQL IN lists under older SQLite's 999-parameter limit
            part = sids[i : i + 400]
            q = ",".join("?" * len(part))
            fingers += con.execute(f"SELECT id, position, sha256 FROM fingers WHERE subject_id IN ({q})", part).fetchall()
        # derived rows go before the commit too: a kill between the commit and the drop after it
        # would otherwise leave them behind (a row missing for a still-enrolled finger is recomputed)
        gone = set(sids)
        shared = {sha for _, _, sha in fingers
                  if any(r[0] not in gone for r in con.execute("SELECT subject_id FROM fingers WHERE sha256 = ?", (sha,)))}
        with self._feat_lock:
            self._featstore.delete(sorted({sha for _, _, sha in fingers} - shared))
        con.executemany(
            "INSERT INTO changes(gallery_id, generation, op, finger_id, position) VALUES (?, ?, 'del', ?, ?)",
            [(gid, gen + 1, fid, pos) for fid, pos, _ in fingers],
        )
        con.executemany("DELETE FROM subjects WHERE id = ?", [(sid,) for sid in sids])  # cascades
        con.execute("UPDATE galleries SET generation = ? WHERE id = ?", (gen + 1, gid))
        rec = None
        for _, subject in rows:
            rec = _audit.append(con, "delete", operator, {"transaction_id": transaction_id, "gallery": gallery,
                                                         "subject": subject, "context": ctx})
        return fingers, rec

    def _deleted(self, gallery: str, gen_before: int, fingers: list, save: bool) -> None:
        """After a deletion committed: caches, derived rows written back meanwhile, the index."""
        removed = [f for f, _, _ in fingers]
        self._forget(removed)
        self._drop_features([sha for _, _, sha in fingers])
        self._index_changed(gallery, gen_before, [], removed, save=save)

    def delete_many(self, subject_ids, *, gallery: str = "default", operator: str | None = None,
                    transaction_id: str | None = None, context: dict | None = None,
                    batch: int = DELETE_BATCH) -> int:
        """Delete many subjects for good, as :meth:`delete` each, ``batch`` subjects per transaction.

        One audit record per subject (as :meth:`delete`); the index file is
        rewritten once at the end instead of once per subject (a 1 GB file at a
        million fingers), so a kill mid-way leaves the deleted subjects' codes
        in the index file on disk until the next save, never in a search (the
        index is caught up from the store's changes when loaded). Every id is
        checked (each enrolled in ``gallery``, none twice) before anything is
        deleted. Returns the number of subjects deleted.
        """
        check_gallery_name(gallery)
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        ctx = check_context(context)
        check_batch(batch)
        if isinstance(subject_ids, str):
            raise GalleryError("subject_ids: expected a collection of subject ids, got one string")
        ids = [check_subject(s) for s in subject_ids]
        if len(set(ids)) != len(ids):
            dup = next(s for s, n in collections.Counter(ids).items() if n > 1)
            raise GalleryError(f"subject_ids: {dup!r} is given twice")
        con = self._con()
        gid, _ = self._require_gallery(con, gallery)
        enrolled: set = set()
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = ",".join("?" * len(part))
            enrolled.update(r[0] for r in con.execute(
                f"SELECT subject FROM subjects WHERE gallery_id = ? AND subject IN ({q})", [gid, *part]))
        missing = [s for s in ids if s not in enrolled]
        if missing:
            raise GalleryError(f"subject_id: {missing[0]!r} is not enrolled in gallery {gallery!r}"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        for i in range(0, len(ids), batch):
            part = ids[i : i + batch]
            with self._write() as con:
                gid, gen = self._require_gallery(con, gallery)
                q = ",".join("?" * len(part))
                rows = con.execute(f"SELECT id, subject FROM subjects WHERE gallery_id = ? AND subject IN ({q})",
                                   [gid, *part]).fetchall()
                if len(rows) != len(part):  # deleted by another writer since the check
                    gone = sorted(set(part) - {s for _, s in rows})
                    raise GalleryError(f"subject_id: {gone[0]!r} is not enrolled in gallery {gallery!r}")
                fingers, _ = self._delete_rows(con, gid, gen, rows, gallery, operator, transaction_id, ctx)
            self._deleted(gallery, gen, fingers, save=False)
        if ids:
            with self._index_lock:  # one rewrite of the index file, without the deleted codes
                if gallery in self._indexes or self._index_path(gallery).exists():
                    self._save_index(self.index(gallery), gallery)
                    self._dirty.discard(gallery)
            self._checkpoint()
        return len(ids)
