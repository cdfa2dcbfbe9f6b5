"""Search results: per-finger scores and candidates (frozen, JSON-ready), and a sharded search's list."""

from __future__ import annotations

import math
from dataclasses import dataclass


def json_float(v: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@dataclass(frozen=True)
class FingerScore:
    """One probe finger compared with one enrolled finger of a candidate.

    Attributes
    ----------
    probe_position, position : int
        FGP codes of the probe finger and of the enrolled finger it matched.
    score : float
        Raw similarity in [0, 1] (:mod:`biomatch.scoring`).
    fmr : float
        Estimated false match rate of ``score`` (NaN without calibration); the
        calibration's floor when the estimate is below what it supports
        (:attr:`biomatch.calibration.Calibration.fmr_floor`), then ``fmr_is_bound``.
    pairs : tuple of (int, int)
        The minutiae pairs the score rests on: (index in the probe's minutiae,
        index in the enrolled template's), as :attr:`biomatch.scoring.Match.pairs`.
    fmr_is_bound : bool
        True when ``fmr`` is an upper bound (FMR <= fmr), not an estimate.
    """

    probe_position: int
    position: int
    score: float
    fmr: float
    pairs: tuple = ()
    fmr_is_bound: bool = False

    def to_dict(self) -> dict:
        return {
            "probe_position": self.probe_position,
            "position": self.position,
            "score": round(self.score, 6),
            "fmr": json_float(self.fmr),
            "fmr_is_bound": bool(self.fmr_is_bound),
            "n_pairs": len(self.pairs),
            "pairs": [list(p) for p in self.pairs],
        }


@dataclass(frozen=True)
class Candidate:
    """One entry of a candidate list.

    Attributes
    ----------
    rank : int
        1-based.
    subject, gallery : str
    score : float
        Fused raw score: sum of the per-finger raw scores.
    fmr : float
        Estimated false match rate of the fused evidence (Fisher combination
        of the per-finger FMRs; :mod:`biomatch.search.ranking`). NaN without
        calibration. Never below what the calibration supports: an estimate
        below its floor is reported as the floor, with ``fmr_is_bound``.
    fpir : float
        Estimated false positive identification rate at this FMR for the
        number of subjects searched (a bound too when ``fmr_is_bound``).
    fingers : tuple of FingerScore
    fmr_is_bound : bool
        True when ``fmr`` (and ``fpir``) is an upper bound, not an estimate.
    """

    rank: int
    subject: str
    gallery: str
    score: float
    fmr: float
    fpir: float
    fingers: tuple = ()
    fmr_is_bound: bool = False

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "subject": self.subject,
            "gallery": self.gallery,
            "score": round(self.score, 6),
            "fmr": json_float(self.fmr),
            "fmr_is_bound": bool(self.fmr_is_bound),
            "fpir": json_float(self.fpir),
            "fingers": [f.to_dict() for f in self.fingers],
        }


class SearchResult(list):
    """A candidate list (``list`` of :class:`Candidate`, best first) plus what was searched.

    Attributes
    ----------
    missing_shards : tuple of int
        Shards that did not answer; their subjects were not searched.
    missing_subjects : int or None
        Subjects those shards held when last seen (None when never seen).
    searched_subjects : int
        Subjects searched (the N of the FPIR).
    complete : bool
        True when every shard answered.
    """

    def __init__(self, candidates=(), *, missing_shards=(), missing_subjects=0, searched_subjects=0):
        super().__init__(candidates)
        self.missing_shards = tuple(missing_shards)
        self.missing_subjects = missing_subjects
        self.searched_subjects = int(searched_subjects)

    @property
    def complete(self) -> bool:
        return not self.missing_shards

    @property
    def incomplete(self) -> bool:
        return bool(self.missing_shards)
