"""Ranking: the one candidate order of a search (single store and sharded gallery).

A subject's score for a probe finger is the best over the compared fingers (a finger's
impressions, :func:`best_impressions`, the one grouping rule); per-finger raw scores become
FMRs through the calibration, corrected for a best of k impressions (:func:`fmr_of_best`),
a subject's FMR is Fisher's
combination of its fingers' (``FMR = P(chi2_2k >= -2 sum ln p_i)``), candidates are ordered by
it, the threshold applies in the FMR domain, FPIR ``= 1 - (1 - FMR)^N`` for the N subjects
searched; plus the audit record of a search. No SQL, no Ray, no I/O.

The order and the threshold use the estimates; what a candidate reports does not go below
what the calibration supports: per-finger and fused FMRs under the calibration's floor are
reported as the floor with ``fmr_is_bound`` (:meth:`biomatch.calibration.Calibration.bound`;
the fusion's independence assumption cannot be checked by the impostor scores either), and
the FPIR is computed from the reported FMR.
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple

import numpy as np

from .._validate import check_int
from ..errors import CalibrationError, GalleryError
from .results import Candidate, FingerScore, json_float

#: Smallest FMR used in logarithms (Fisher fusion).
FMR_FLOOR = 1e-300


def fisher_fmr(fmrs: np.ndarray) -> float:
    """Fisher's combination of k independent FMRs: P(chi2_2k >= -2 sum ln p)."""
    if len(fmrs) == 1:  # the common single-finger case, without array overhead
        p0 = float(fmrs[0])
        return p0 if math.isnan(p0) else min(max(p0, FMR_FLOOR), 1.0)
    if len(fmrs) == 0 or np.any(np.isnan(fmrs)):
        return float("nan")
    p = np.clip(np.asarray(fmrs, dtype=np.float64), FMR_FLOOR, 1.0)
    # chi2 survival with 2k degrees of freedom in closed form: e^{-x/2} sum_{j<k} (x/2)^j / j!
    half = -np.sum(np.log(p))
    k = p.size
    term = 1.0
    total = 1.0
    for j in range(1, k):
        term *= half / j
        total += term
    return float(min(1.0, math.exp(-half) * total))


#: Largest candidate list a search may ask for.
MAX_CANDIDATES = 1000


def fmr_of_best(fmrs: np.ndarray, k) -> np.ndarray:
    """FMR of the best of k independent impostor comparisons, each of FMR p: ``1 - (1 - p)^k``.

    A subject's finger score is the best over its k impressions of that finger
    (:func:`best_impressions`), so an impostor gets k tries: at the same raw score the
    chance of a false match is about k times the single-comparison FMR ``p`` (for small
    p). The calibration is fitted on single comparisons; this is the correction, per
    finger, before fusion. k = 1 leaves ``p`` as it is. float64 arrays of one shape.
    """
    p = np.asarray(fmrs, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = -np.expm1(k * np.log1p(-np.clip(p, 0.0, 1.0)))
    return np.where(np.isnan(p), np.nan, np.where(k <= 1, p, out))


def best_impressions(ppos: int, targets: list, scores) -> dict:
    """The one rule that turns one probe finger's comparisons into each subject's finger score.

    ``targets`` lists (subject key, finger reference, enrolled position) in the order compared
    (a subject's fingers by position, each position's impressions by finger id); ``scores``
    the raw scores, aligned. A subject's score is its best comparison (the first on a tie), so
    an extra impression of a finger can only raise it. Returns {subject key: ((probe position,
    position, score, finger reference), k)}, k the subject's impressions of the winning position
    that were compared (the tries an impostor had at that finger: :func:`fmr_of_best`). A probe
    of unknown position (0) compared with several positions keeps k to the winning position's
    impressions: the best over positions is not corrected (as before impressions existed).
    """
    best: dict = {}
    tries: dict = {}
    for (key, ref, pos), s in zip(targets, scores):
        tries[(key, pos)] = tries.get((key, pos), 0) + 1
        if key not in best or s > best[key][2]:
            best[key] = (ppos, pos, float(s), ref)
    return {key: (b, tries[(key, b[1])]) for key, b in best.items()}


class Rescored(NamedTuple):
    """One subject rescored against the probe: what every store (single or shard) hands to :func:`rank`.

    ``per`` lists (probe position, enrolled position, raw score, finger reference) per compared
    finger; the finger reference (a store's finger id) is opaque here and only passed back.
    ``comparisons`` (aligned with ``per``; None: all 1) is how many impressions each score is
    the best of (:func:`best_impressions`).
    """

    gallery: str
    subject: str
    per: list
    comparisons: tuple | None = None


class Ranked(NamedTuple):
    """A ranked subject: its rescoring, per-finger FMRs and fused FMR (Fisher)."""

    gallery: str
    subject: str
    per: list
    fmrs: np.ndarray
    fused: float

    @property
    def score(self) -> float:
        """Fused raw score: the sum of the per-finger raw scores."""
        return float(sum(s for _, _, s, _ in self.per))


def check_max_candidates(max_candidates) -> int:
    """The candidate list length L of a search (1..MAX_CANDIDATES)."""
    return check_int(max_candidates, "max_candidates", 1, MAX_CANDIDATES, error=GalleryError)


def threshold_value(value) -> float:
    """A raw single-finger score in [0, 1] from a number or a :class:`biomatch.calibration` threshold."""
    v = getattr(value, "value", value)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(float(v)):
        raise GalleryError(f"threshold: expected a raw score (number) or a Threshold, got {value!r}")
    v = float(v)
    if not 0.0 <= v <= 1.0:
        raise GalleryError(f"threshold: raw scores lie in [0, 1], got {v}")
    return v


def search_threshold(threshold, configured: Iterable, cal) -> float | None:
    """The raw threshold a search applies: ``threshold`` if given, else the lowest configured
    threshold of the searched galleries (None when none is); refused without a calibration."""
    if threshold is None:
        values = [v for v in configured if v is not None]
        threshold = min(values) if values else None
    thr = None if threshold is None else threshold_value(threshold)
    if thr is not None and cal is None:
        raise CalibrationError("threshold: no calibration in the store and no default calibration installed")
    return thr


def fmr_of(cal, scores) -> np.ndarray:
    """Estimated FMRs of raw scores under ``cal`` (NaN without a calibration), float64, shape (n,)."""
    if cal is None:
        return np.full(len(scores), np.nan)
    return np.asarray(cal.fmr(np.asarray(scores, dtype=np.float64)), dtype=np.float64).ravel()


def rank(rescored: Iterable[Rescored], cal, thr: float | None, max_candidates: int) -> list[Ranked]:
    """The candidate order of a search: the one ranking of a single store and of a sharded gallery.

    Each per-finger raw score becomes its FMR under ``cal`` (one calibration call for the
    whole search; elementwise, so the order of the rows does not matter), corrected for the
    best of k impressions (:func:`fmr_of_best`, k from ``comparisons``); a subject's FMR is
    Fisher's combination of its fingers' (:func:`fisher_fmr`). Order: fused FMR (NaN last),
    then summed raw score (higher first), gallery, subject. With a threshold ``thr`` (raw
    single-finger score) only subjects whose fused FMR is at most the threshold's FMR stay.
    The first ``max_candidates`` are returned.
    """
    rows = [r if isinstance(r, Rescored) else Rescored(*r) for r in rescored]
    all_fmrs = fmr_of(cal, [s for r in rows for _, _, s, _ in r.per])
    tries = [k for r in rows for k in (r.comparisons or (1,) * len(r.per))]
    if any(k > 1 for k in tries):
        all_fmrs = fmr_of_best(all_fmrs, np.asarray(tries, dtype=np.float64))
    ranked = []
    start = 0
    for r in rows:
        fmrs = all_fmrs[start : start + len(r.per)]
        start += len(r.per)
        ranked.append(Ranked(r.gallery, r.subject, r.per, fmrs, fisher_fmr(fmrs)))
    ranked.sort(key=lambda r: (r.fused if not math.isnan(r.fused) else 2.0, -sum(s for _, _, s, _ in r.per),
                               r.gallery, r.subject))
    if thr is not None:
        thr_fmr = float(fmr_of(cal, [thr])[0])
        ranked = [r for r in ranked if r.fused <= thr_fmr]
    return ranked[:max_candidates]


def reported_fmr(cal, fmr: float) -> tuple[float, bool]:
    """(FMR as reported, is it a bound): the calibration's floor where the estimate is below it."""
    if cal is None or math.isnan(fmr):
        return float(fmr), False
    return cal.bound(float(fmr))


def candidates(ranked: list[Ranked], n_subjects: int, pairs: list, *, cal) -> list[Candidate]:
    """Candidates (rank 1 first) of ranked subjects; ``pairs[i][j]``: the minutia pairs of
    subject i's j-th compared finger; FMRs as ``cal`` supports them (:func:`reported_fmr`);
    FPIR for the ``n_subjects`` searched."""
    from ..calibration import fpir_from_fmr

    out = []
    for i, r in enumerate(ranked):
        fingers = []
        for j, ((pp, pos, s, _), f) in enumerate(zip(r.per, r.fmrs)):
            fmr, bound = reported_fmr(cal, f)
            fingers.append(FingerScore(pp, pos, float(s), fmr, pairs[i][j], fmr_is_bound=bound))
        fingers = tuple(fingers)
        fused, bound = reported_fmr(cal, r.fused)
        fpir = float(fpir_from_fmr(fused, max(n_subjects, 1))) if not math.isnan(fused) else float("nan")
        out.append(Candidate(i + 1, r.subject, r.gallery, r.score, fused, fpir, fingers, fmr_is_bound=bound))
    return out


def decision(thr: float | None, found: list) -> str:
    """The search's decision as audited: a candidate list, or hit / no-hit under a threshold."""
    return "candidates" if thr is None else ("hit" if found else "no-hit")


def audit_payload(*, transaction_id, probe_hashes: dict, galleries: list, n_subjects: int, max_candidates: int,
                  thr, decision: str, context, software: dict, calibration, found: list, **extra) -> dict:
    """The audit record of a search (one shape for a single store and a sharded gallery; the
    sharded one adds what it searched in ``extra``). Holds no biometric data: probe template
    hashes, gallery names, subject ids, scores."""
    record = {
        "transaction_id": transaction_id,
        "probe": {str(p): h for p, h in sorted(probe_hashes.items())},
        "galleries": galleries,
        "gallery_subjects": n_subjects,
        "max_candidates": int(max_candidates),
        "threshold": thr,
        "decision": decision,
        "context": context,
        "software": software,
        "calibration": calibration,
    }
    record.update(extra)
    record["candidates"] = [
        {"rank": c.rank, "gallery": c.gallery, "subject": c.subject, "score": round(c.score, 6), "fmr": json_float(c.fmr),
         "fmr_is_bound": bool(c.fmr_is_bound)}
        for c in found
    ]
    return record
