"""Search of a sharded gallery: scatter the steps of a store's search, gather, rank once.

Step 1 (neighbours) and step 3 (rescoring) run on the shards through the shard API
(:mod:`biomatch.gallery.shard`); the coordinator merges the neighbours and shortlists with
:mod:`biomatch.search.shortlist` and ranks with :func:`biomatch.search.ranking.rank`, the
functions a single store calls.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

import numpy as np

from .. import audit as _audit
from ..errors import GalleryError
from ..gallery.checks import check_context, check_fingers, check_galleries, check_operator, check_transaction_id, template_hash
from ..search import ranking
from ..search.results import SearchResult
from ..search.shortlist import merge_neighbours, shortlist_subjects
from .placement import shard_of

_ON_MISSING = ("report", "raise")


class ShardedSearchMixin:
    """Scatter-gather search (part of :class:`~biomatch.distributed.ShardedGallery`)."""

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
        on_missing: str = "report",
    ) -> SearchResult:
        """Search every shard and merge (parameters and ranking as :meth:`Gallery.search`).

        Parameters
        ----------
        on_missing : {"report", "raise"}
            A shard that does not answer is listed in the result's
            ``missing_shards`` (``"report"``), or makes the search raise a
            :class:`GalleryError` (``"raise"``); either way the audit record names it.

        Returns
        -------
        SearchResult
            A list of Candidate, best first, with ``.complete`` and ``.missing_shards``.
        """
        probes = {p: t for p, (t, _) in check_fingers(probe_fingers, "probe_fingers").items()}
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        ctx = check_context(context)
        max_candidates = ranking.check_max_candidates(max_candidates)
        if on_missing not in _ON_MISSING:
            raise GalleryError(f"on_missing: expected one of {_ON_MISSING}, got {on_missing!r}")
        requested = check_galleries(galleries)
        self._check_open()
        answers, missing = self._step_neighbours(probes, requested)
        for k, ans in answers.items():
            self._last_counts[k] = ans["counts"]
        names = sorted({g for ans in answers.values() for g in ans["counts"]}) if requested is None else requested
        if requested is not None and not missing:
            for g in requested:
                if not any(g in ans["counts"] for ans in answers.values()):
                    raise GalleryError(f"gallery: no gallery named {g!r} in {self.path}")
        cal, cal_label = self._coord.search_calibration()
        thr = ranking.search_threshold(threshold, [self.threshold(g) for g in names], cal)
        n_subjects = sum(n for ans in answers.values() for g, n in ans["counts"].items() if g in names)
        lost = [self._last_counts.get(k) for k in missing]
        missing_subjects = None if any(c is None for c in lost) else sum(
            n for c in lost for g, n in c.items() if requested is None or g in names)
        plan = self._plan(answers, names, probes)
        rescored, late = self._gather({k: self._actors[k].call.remote("search_rescore", probes, w) for k, w in plan.items()})
        missing = sorted(set(missing) | set(late))
        owners, merged = self._merge_rescored(rescored)
        ranked = ranking.rank(merged, cal, thr, max_candidates)
        # minutia pairs of the final candidates only, from their owning shards
        want: dict[int, list] = defaultdict(list)
        for r in ranked:
            want[owners[(r.gallery, r.subject)]] += [(pp, fid) for pp, _, _, fid in r.per]
        got, late = self._gather({k: self._actors[k].call.remote("search_pairs", probes, w) for k, w in want.items()})
        missing = sorted(set(missing) | set(late))
        shard_pairs = {k: iter(v) for k, v in got.items()}
        pairs = []
        for r in ranked:
            k = owners[(r.gallery, r.subject)]
            pairs.append([next(shard_pairs[k]) if k in shard_pairs else () for _ in r.per])
        candidates = ranking.candidates(ranked, n_subjects, pairs, cal=cal)
        decision = ranking.decision(thr, candidates)
        if missing and on_missing == "raise":
            decision = "refused: shards missing"
        self._audit("search", operator, ranking.audit_payload(
            transaction_id=transaction_id, probe_hashes={p: template_hash(t) for p, t in probes.items()},
            galleries=names, n_subjects=n_subjects, max_candidates=max_candidates, thr=thr, decision=decision,
            context=ctx, software=_audit.software(), calibration=cal_label,
            found=[] if decision.startswith("refused") else candidates,
            shards=self.n_shards, missing_shards=missing, missing_subjects=missing_subjects))
        if missing and on_missing == "raise":
            raise GalleryError(
                f"{self.path}: shard(s) {missing} did not answer; {missing_subjects if missing_subjects is not None else 'an unknown number of'} "
                "subjects were not searched"
            )
        return SearchResult(candidates, missing_shards=missing, missing_subjects=missing_subjects,
                            searched_subjects=n_subjects)

    def _step_neighbours(self, probes: dict, requested):
        """Step 1 on every shard, with the gallery's index sizes (codes per position, all shards
        together) deciding exhaustive or IVF search as on one store (:func:`biomatch.index.nprobe_for`).

        The sizes of the previous search are used, and the step is run again in the rare case
        that the sizes the shards report now call for other lists (a partition crossed
        FLAT_MAX_CODES in between).
        """
        from ..index import nprobe_for

        def totals_of(answers):
            out: dict = defaultdict(lambda: defaultdict(int))
            for ans in answers.values():
                for g, sizes in ans.get("sizes", {}).items():
                    for pos, n in sizes.items():
                        out[g][pos] += int(n)
            return {g: dict(v) for g, v in out.items()}

        def lists(totals):
            p = self.params
            return {g: {pos: nprobe_for(n, p.flat_max_codes, p.ivf_nprobe) for pos, n in sizes.items()}
                    for g, sizes in totals.items()}

        def same_lists(now, used):
            return all(used.get(g, {}).get(pos) == n for g, sizes in lists(now).items() for pos, n in sizes.items())

        used = lists(self._code_totals)
        answers, missing = self._gather({k: a.call.remote("search_neighbours", probes, requested, used) for k, a in enumerate(self._actors)})
        now = totals_of(answers)
        if not same_lists(now, used):
            used.update(lists(now))
            answers, missing = self._gather({k: a.call.remote("search_neighbours", probes, requested, used)
                                             for k, a in enumerate(self._actors)})
            now = totals_of(answers)
        self._code_totals.update(now)
        return answers, missing

    def _plan(self, answers: dict, names: list, probes: dict) -> dict:
        """Which subjects each shard rescores: ``{shard: {gallery: [subject ids] or None (all)}}``.

        Exactly the single-machine rule (``Gallery.search``): a
        gallery of at most ``params.exhaustive_max_fingers`` fingers in all is rescored
        whole; a larger one rescores the subjects :func:`~biomatch.search.shortlist.shortlist_subjects`
        picks from the shards' k-NN lists merged per probe cylinder
        (:func:`~biomatch.search.shortlist.merge_neighbours`), each on the shard holding it.
        """
        plan: dict[int, dict] = defaultdict(dict)
        for g in names:
            holders = {k: ans for k, ans in answers.items() if ans["fingers"].get(g)}
            if not holders:
                continue
            if sum(ans["fingers"][g] for ans in holders.values()) <= self.params.exhaustive_max_fingers:
                for k in holders:
                    plan[k][g] = None
                continue
            # mid-rebalance a subject can sit on two shards: its owner's copy votes (else the lowest shard's)
            seen: dict[str, set] = defaultdict(set)
            for k, ans in holders.items():
                for nb in ans["neighbours"][g].values():
                    for name in nb.names:
                        seen[name].add(k)
            keeper = {}
            for name, ks in seen.items():
                if len(ks) == 1:  # the usual case: no hash needed
                    keeper[name] = next(iter(ks))
                    continue
                owner = shard_of(name, self.n_shards)
                keeper[name] = owner if owner in ks else min(ks)
            per_probe = {}
            for pos in probes:
                parts = []
                for k, ans in holders.items():
                    nb = ans["neighbours"][g].get(pos)
                    if nb is None:
                        continue
                    mine = np.array([keeper[n] == k for n in nb.names], dtype=bool)
                    if not mine.all():
                        keep = mine[nb.subject] if len(nb.subject) else np.zeros(0, bool)
                        nb = nb._replace(**{f: getattr(nb, f)[keep] for f in ("rows", "partition", "dist", "abin", "subject")})
                    parts.append(nb)
                if parts:
                    per_probe[pos] = merge_neighbours(parts)
            for subject in shortlist_subjects(per_probe, len(probes), self.params):
                plan[keeper[subject]].setdefault(g, []).append(subject)
        return dict(plan)

    def _merge_rescored(self, rescored: dict) -> tuple[dict, list]:
        """The shards' rescored subjects as one list for :func:`biomatch.search.ranking.rank`,
        and the shard each came from: ({(gallery, subject): shard}, [Rescored]).

        Mid-rebalance a subject can sit on two shards: its owner's copy is kept.
        """
        merged: dict = {}
        for k, rows_k in rescored.items():
            for gname, subject, *rest in rows_k:  # rest: per and the comparisons (ranking.Rescored)
                key = (gname, subject)
                if key not in merged or shard_of(subject, self.n_shards) == k:
                    merged[key] = (k, rest)
        owners = {key: k for key, (k, _) in merged.items()}
        return owners, [ranking.Rescored(g, subject, *rest) for (g, subject), (_, rest) in merged.items()]
