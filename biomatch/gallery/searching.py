"""Search orchestration of one store: neighbours, shortlist, rescoring, ranking, audit."""

from __future__ import annotations

import collections
import time
from typing import Iterable, Mapping

import numpy as np

from .. import audit as _audit
from ..search import ranking
from ..search.results import Candidate
from ..search.shortlist import neighbours_of, shortlist_subjects
from .checks import (
    check_context,
    check_fingers,
    check_galleries,
    check_operator,
    check_transaction_id,
    template_hash,
)
#: Seconds between two returns of the heap's free pages to the OS after searches
#: (:func:`biomatch.index.release_memory`; a few ms each).
RELEASE_INTERVAL_S = 2.0


class SearchMixin:
    """1:N search of a store (part of :class:`Gallery`)."""

    # -- search -------------------------------------------------------------------------------
    def search(
        self,
        probe_fingers: Mapping,
        *,
        galleries: Iterable[str] | None = None,
        max_candidates: int = 10,
        threshold=None,
        operator: str | None = None,
        transaction_id: str | None = None,
        context: dict | None = None,
    ) -> list[Candidate]:
        """Search probe fingers against one or more galleries.

        Parameters
        ----------
        probe_fingers : dict of int -> Template, template bytes/path, image path or array
            Keyed by FGP position (0 when unknown).
        galleries : list of str, optional
            Default: every gallery of the store.
        max_candidates : int
            Candidate list length L (1..1000).
        threshold : float or Threshold, optional
            Raw single-finger score; default the configured threshold (:meth:`set_threshold`).
            With a threshold only hits are returned (see the module docstring for multi-finger probes).
        operator, transaction_id : str, optional
            Recorded in the audit.
        context : dict, optional
            JSON-ready facts for the audit record (e.g. the transaction's ORI).

        Returns
        -------
        list of Candidate
            Best first.
        """
        probes = {p: t for p, (t, _) in check_fingers(probe_fingers, "probe_fingers").items()}
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        ctx = check_context(context)
        max_candidates = ranking.check_max_candidates(max_candidates)
        con = self._con()
        requested = check_galleries(galleries)
        if requested is None:
            names = self.galleries()
        else:
            names = requested
            for g in names:
                self._require_gallery(con, g)
        cal_entry = self._calibration_entry()
        cal = cal_entry[1]
        thr = ranking.search_threshold(threshold, [self.threshold(g) for g in names], cal)

        rescored: list = []
        n_subjects = 0
        for g in names:
            gid, generation = self._require_gallery(con, g)
            n_subjects += self._n_subjects(con, gid, generation)
            rescored += self._search_gallery(con, g, gid, probes)
        ranked = ranking.rank(rescored, cal, thr, max_candidates)
        pairs = [[self._pairs(probes[pp], fid) for pp, _, _, fid in r.per] for r in ranked]
        candidates = ranking.candidates(ranked, n_subjects, pairs, cal=cal)
        if self.read_only:  # nothing can be appended to a read-only store: say so rather than refuse to answer
            import warnings

            warnings.warn(f"{self.path}: read-only store: this search is not recorded in its audit log", UserWarning,
                          stacklevel=2)
        else:
            with self._write() as wcon:
                _audit.append(wcon, "search", operator, ranking.audit_payload(
                    transaction_id=transaction_id, probe_hashes={p: template_hash(t) for p, t in probes.items()},
                    galleries=names, n_subjects=n_subjects, max_candidates=max_candidates, thr=thr,
                    decision=ranking.decision(thr, candidates), context=ctx, software=_audit.software(),
                    calibration=self._calibration_label(cal_entry), found=candidates))
        self._release_memory()
        return candidates

    def _release_memory(self) -> None:
        """Return the heap's free pages after a search's transient arrays, at most every RELEASE_INTERVAL_S."""
        now = time.monotonic()
        if now - self._released >= RELEASE_INTERVAL_S:
            self._released = now
            from ..index import release_memory

            release_memory()

    def _search_gallery(self, con, gallery: str, gid: int, probes: dict) -> list:
        """Rescored subjects of one gallery: list of (gallery, subject, [(probe_pos, pos, score, finger_id)]).

        The three steps a sharded gallery runs apart (:mod:`biomatch.distributed`):
        :meth:`_neighbours` (FAISS k-NN of the probe cylinders), :func:`shortlist_subjects`
        (votes -> subjects), :meth:`_rescore`.
        """
        n_fingers = self._n_fingers(con, gid)
        if n_fingers == 0:
            return []
        idx = self.index(gallery) if n_fingers > self.params.exhaustive_max_fingers else None
        # one read snapshot from the shortlist's owners to the rescoring rows: a finger deleted
        # meanwhile by another thread is either wholly in this search or wholly out of it
        with self._snapshot(con):
            subjects = None  # exhaustive: every subject
            if idx is not None:
                subjects = shortlist_subjects(self._neighbours(con, probes, idx), len(probes), self.params)
                if not subjects:
                    return []
            return self._rescore(con, gallery, gid, probes, subjects)

    def _n_fingers(self, con, gid: int) -> int:
        """Fingers of a gallery, counted up to params.exhaustive_max_fingers + 1 (all a search needs to
        choose between exhaustive rescoring and the index; a full count costs O(N) per search)."""
        return con.execute(
            "SELECT count(*) FROM (SELECT 1 FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
            "WHERE gallery_id = ? LIMIT ?)", (gid, self.params.exhaustive_max_fingers + 1)
        ).fetchone()[0]

    def _search_neighbours(self, con, gallery: str, gid: int, probes: dict, nprobe=None) -> tuple[int, dict, dict]:
        """(fingers of the gallery, {probe position: Neighbours}, {position: codes}) - step 1 of a
        search, for a shard; ``nprobe`` ({position: IVF lists}, decided for the whole sharded
        gallery) as :meth:`biomatch.index.GalleryIndex.neighbours` takes it."""
        n_fingers = self._n_fingers(con, gid)
        if n_fingers == 0:
            return 0, {}, {}
        idx = self.index(gallery)
        with self._snapshot(con):
            return n_fingers, self._neighbours(con, probes, idx, nprobe), idx.sizes()

    def _search_rescore(self, con, gallery: str, gid: int, probes: dict, subjects) -> list:
        """Step 3 of a search, for a shard: :meth:`_rescore` in one read snapshot."""
        with self._snapshot(con):
            return self._rescore(con, gallery, gid, probes, subjects)

    def _neighbours(self, con, probes: dict, idx, nprobe=None) -> dict:
        """Per probe finger, the FAISS k-NN of its cylinders keyed by subject (see :class:`Neighbours`)."""
        from ..descriptors import encode
        from ..index import ANGLE_ID_BITS, K_NEIGHBOURS, probe_codes

        out = {}
        for pos, t in probes.items():
            codes = probe_codes(encode(t))
            raw = idx.neighbours(codes.codes, pos, K_NEIGHBOURS, nprobe)
            ufid = np.unique(raw.labels >> ANGLE_ID_BITS)
            out[pos] = neighbours_of(raw, codes.angle_bins, self._finger_subjects(con, ufid.tolist()))
        return out

    def _finger_subjects(self, con, finger_ids: list) -> dict:
        """finger id -> subject id (name) of the fingers still in the store."""
        out = {}
        for i in range(0, len(finger_ids), 500):
            part = finger_ids[i : i + 500]
            q = ",".join("?" * len(part))
            out.update(con.execute(
                f"SELECT fingers.id, subjects.subject FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
                f"WHERE fingers.id IN ({q})", part,
            ).fetchall())
        return out

    def _rescore(self, con, gallery: str, gid: int, probes: dict, subjects) -> list:
        """Rescore ``subjects`` (ids of this gallery; None: all) against the probe fingers.

        Returns list of (gallery, subject, [(probe_pos, pos, score, finger_id)], comparisons) as
        :class:`biomatch.search.ranking.Rescored`: per probe finger the best of the subject's
        compatible fingers, every impression included (:func:`biomatch.search.ranking.best_impressions`);
        subjects no longer enrolled are left out.
        """
        from ..descriptors import encode

        names: dict[int, str] = {}
        if subjects is None:
            names.update(con.execute("SELECT id, subject FROM subjects WHERE gallery_id = ?", (gid,)).fetchall())
        else:
            subjects = list(subjects)
            for i in range(0, len(subjects), 500):
                part = subjects[i : i + 500]
                q = ",".join("?" * len(part))
                names.update(con.execute(
                    f"SELECT id, subject FROM subjects WHERE gallery_id = ? AND subject IN ({q})", [gid, *part]
                ).fetchall())
        subject_ids = sorted(names, key=names.get)
        if not subject_ids:
            return []
        # fingers of the shortlisted subjects
        fingers_of: dict[int, list] = collections.defaultdict(list)
        for i in range(0, len(subject_ids), 500):
            part = subject_ids[i : i + 500]
            q = ",".join("?" * len(part))
            for fid, sid, pos in con.execute(
                    f"SELECT id, subject_id, position FROM fingers WHERE subject_id IN ({q}) ORDER BY id", part):
                fingers_of[sid].append((fid, pos))  # every impression of a finger is a row of its own
        # per probe finger: the compatible enrolled fingers to rescore
        from ..scoring import score_packed

        results = {sid: [] for sid in subject_ids}
        tries = {sid: [] for sid in subject_ids}  # per compared finger: the impressions its score is the best of
        for ppos, t in probes.items():
            targets = []
            for sid in results:
                for fid, pos in sorted(fingers_of.get(sid, ()), key=lambda f: f[1]):
                    if ppos == 0 or pos == 0 or pos == ppos:
                        targets.append((sid, fid, pos))  # (subject key, finger reference, position)
            if not targets:
                continue
            scores = score_packed(encode(t), self._packed_for(con, [fid for _, fid, _ in targets]))
            for sid, (b, k) in ranking.best_impressions(ppos, targets, scores).items():
                results[sid].append(b)
                tries[sid].append(k)
        return [(gallery, names[sid], per, tuple(tries[sid])) for sid, per in results.items() if per]
