"""Shortlisting: merge the k-NN neighbours of index parts, vote, pick the subjects to rescore."""

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


def shortlist_subjects(per_probe: Mapping, n_probes: int) -> list:
    """Subjects to rescore, from the :class:`Neighbours` of each probe finger (one implementation).

    Per probe finger the :data:`SHORTLIST_FINGERS` gallery fingers with the most
    votes (:func:`biomatch.index.vote_totals`; ties by subject id, then
    position); a subject's votes are the sum over its fingers of each finger's
    best vote over the probe fingers; the ``max(SHORTLIST_SUBJECTS_MIN,
    SHORTLIST_SUBJECTS // n_probes)`` subjects with the most votes, ties by
    subject id. Bit-identical for equal inputs whatever their order.
    """
    from ..index import vote_totals

    best: dict[tuple, float] = {}
    for pos in sorted(per_probe):
        nb = per_probe[pos]
        finger = nb.subject * 16 + nb.partition  # orders as (subject id, position)
        fingers, totals = vote_totals(nb.rows, nb.dist, finger, nb.abin, nb.probe_bins)
        for t in np.lexsort((fingers, -totals))[:SHORTLIST_FINGERS]:
            key = (str(nb.names[fingers[t] >> 4]), int(fingers[t] & 15))
            best[key] = max(best.get(key, 0.0), float(totals[t]))
    votes: dict[str, float] = collections.defaultdict(float)
    for key in sorted(best):
        votes[key[0]] += best[key]
    cap = max(SHORTLIST_SUBJECTS_MIN, SHORTLIST_SUBJECTS // max(1, n_probes))
    return sorted(votes, key=lambda s: (-votes[s], s))[:cap]
