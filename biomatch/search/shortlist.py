"""Shortlisting: k-NN neighbours keyed by subject, merged over index parts, votes, the subjects to rescore."""

from __future__ import annotations

import collections
from typing import Mapping, NamedTuple

import numpy as np

#: Gallery fingers shortlisted per probe finger by descriptor votes. A longer list can only
#: find more mates; its length is what the latency budget allows (<= 100 ms at 100,000
#: fingers on 2 cores): at 100,000 fingers 800 rescored fingers cost ~25 ms more than 400
#: (76 vs 52 ms median) and kept every real FVC2002 mate the exhaustive search found
#: (rank-1 gap 0.95 -> 0.0 points; synthetic 14 -> 12).
SHORTLIST_FINGERS = 800
#: Subjects rescored per search (by summed votes over probe fingers), divided by
#: the number of probe fingers (fused evidence needs fewer), but at least SHORTLIST_SUBJECTS_MIN.
SHORTLIST_SUBJECTS = 800
SHORTLIST_SUBJECTS_MIN = 50


class Neighbours(NamedTuple):
    """FAISS k-NN of one probe finger's cylinders in a gallery, keyed independently of any store.

    Step 1 of a search (:meth:`Gallery._neighbours`); shards of a sharded
    gallery return it and the coordinator merges theirs
    (:func:`merge_neighbours`): entries refer to subjects by name, not by
    a store's row ids, so the tie rule (distance, then subject id, then the
    gallery minutia's direction bin) is the same on one store and on N.

    Attributes
    ----------
    probe_bins : ndarray of int64, shape (n_q,)
        Direction bins of the probe cylinders.
    rows, partition, dist, abin, subject : ndarray of int64, shape (n,)
        Probe cylinder, position partition (= the gallery finger's position),
        Hamming distance, the gallery minutia's direction bin, and the index in
        ``names`` of the subject owning the gallery finger.
    names : ndarray of object (str), shape (m,)
        Sorted subject ids.
    """

    probe_bins: np.ndarray
    rows: np.ndarray
    partition: np.ndarray
    dist: np.ndarray
    abin: np.ndarray
    subject: np.ndarray
    names: np.ndarray


def neighbours_of(raw, probe_bins: np.ndarray, owner: Mapping[int, str]) -> Neighbours:
    """One index's raw k-NN (:class:`biomatch.index.RawNeighbours`) keyed by subject id.

    ``owner`` maps a finger id to the subject holding it; a finger it lacks (deleted after
    the index saw it) votes for nobody. The neighbours are then chosen under the explicit
    tie rule (:func:`merge_neighbours`), as a sharded gallery chooses among its shards'.
    """
    from ..index import ANGLE_ID_BITS

    fid = raw.labels >> ANGLE_ID_BITS
    ufid, inv = np.unique(fid, return_inverse=True)
    names = np.array(sorted({owner[f] for f in ufid.tolist() if f in owner}), dtype=object)
    held = np.array([f in owner for f in ufid.tolist()], dtype=bool)
    subj = np.searchsorted(names, np.array([owner.get(f, "") for f in ufid.tolist()], dtype=object))
    keep = held[inv]
    nb = Neighbours(
        np.asarray(probe_bins, np.int64), raw.rows[keep], raw.partition[keep], raw.dist[keep],
        (raw.labels & ((1 << ANGLE_ID_BITS) - 1))[keep], subj[inv][keep].astype(np.int64), names,
    )
    return merge_neighbours([nb])


def merge_neighbours(parts: list) -> Neighbours:
    """The k nearest of every (probe cylinder, partition) over several :class:`Neighbours` of one probe.

    Each part must hold, per (cylinder, partition), every code at most as far
    as its k-th nearest (:meth:`biomatch.index.GalleryIndex.neighbours`);
    the result is then what one index holding all their codes gives under the
    explicit tie rule (:func:`biomatch.index.select_neighbours`, by subject id).
    """
    from ..index import K_NEIGHBOURS, select_neighbours

    names = np.unique(np.concatenate([np.asarray(p.names, dtype=object) for p in parts]))
    names = np.asarray(names, dtype=object)
    subject = np.concatenate([
        np.searchsorted(names, np.asarray(p.names, dtype=object)).astype(np.int64)[p.subject] if len(p.subject)
        else np.zeros(0, np.int64)
        for p in parts
    ])
    rows, partition, dist, abin = (np.concatenate([getattr(p, f) for p in parts]).astype(np.int64)
                                   for f in ("rows", "partition", "dist", "abin"))
    keep = select_neighbours(rows, partition, dist, subject, abin, K_NEIGHBOURS)
    return Neighbours(np.asarray(parts[0].probe_bins, np.int64), rows[keep], partition[keep], dist[keep],
                      abin[keep], subject[keep], names)


def top_fingers(nb: Neighbours, size: int) -> list[tuple[str, int, float]]:
    """The ``size`` gallery fingers with the most descriptor votes for one probe finger.

    Votes are :func:`biomatch.index.vote_totals` over the neighbours; ties by subject id, then
    position. Returns (subject id, position, votes), best first.
    """
    from ..index import vote_totals

    finger = nb.subject * 16 + nb.partition  # orders as (subject id, position)
    fingers, totals = vote_totals(nb.rows, nb.dist, finger, nb.abin, nb.probe_bins)
    return [(str(nb.names[fingers[t] >> 4]), int(fingers[t] & 15), float(totals[t]))
            for t in np.lexsort((fingers, -totals))[: max(0, int(size))]]


def shortlist_subjects(per_probe: Mapping, n_probes: int, params=None) -> list:
    """Subjects to rescore, from the :class:`Neighbours` of each probe finger (one implementation).

    Per probe finger the ``params.shortlist_fingers`` gallery fingers with the most
    votes (:func:`top_fingers`); a subject's votes are the sum over its fingers of each
    finger's best vote over the probe fingers; the ``max(shortlist_subjects_min,
    shortlist_subjects // n_probes)`` subjects with the most votes, ties by subject id.
    ``params`` is a :class:`biomatch.search.params.SearchParams` (default: the module
    constants). Bit-identical for equal inputs whatever their order.
    """
    if params is None:
        from .params import SearchParams

        params = SearchParams()
    best: dict[tuple, float] = {}
    for pos in sorted(per_probe):
        for subject, position, votes in top_fingers(per_probe[pos], params.shortlist_fingers):
            key = (subject, position)
            best[key] = max(best.get(key, 0.0), votes)
    votes: dict[str, float] = collections.defaultdict(float)
    for key in sorted(best):
        votes[key[0]] += best[key]
    cap = max(params.shortlist_subjects_min, params.shortlist_subjects // max(1, n_probes))
    return sorted(votes, key=lambda s: (-votes[s], s))[:cap]
