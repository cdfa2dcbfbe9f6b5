"""Evaluation metrics (ISO/IEC 19795-1, FVC, NIST FRVT/FpVTE style) and threshold tuning.

Conventions used everywhere in this module
------------------------------------------
* Scores are similarities: a comparison is **accepted when score >= threshold**.
  ``FMR(t) = #{non-mated s >= t} / n_nonmated``; ``FNMR(t) = #{mated s < t} / n_mated``.
* Candidate thresholds are the distinct observed scores (mated and non-mated)
  plus one value just above the highest score (reject everything). Between two
  consecutive observed scores FMR and FNMR are constant, so this set attains
  every achievable (FMR, FNMR) pair.
* **Tie rule** for an operating point at a target FMR: the threshold is the
  *smallest* candidate whose measured FMR is <= the target (lowest FNMR among
  the thresholds that meet the target). ZeroFMR is that rule with target 0.
* EER follows FVC2000 (Maio et al., PAMI 2002): ``t1`` = the largest candidate
  with FNMR <= FMR, ``t2`` = the smallest with FNMR >= FMR; the interval
  ``[EER_low, EER_high]`` is taken at whichever has the smaller FMR+FNMR, and
  the EER estimate is its midpoint.
* **Rule of three**: with n comparisons and no error observed, the one-sided
  95 % upper bound of the error rate is ~3/n. A target rate below ``3/n``
  therefore cannot be demonstrated: :func:`tune` refuses it, and reports mark
  ``FNMR@FMR=x`` as not measurable unless ``n_nonmated >= 3/x``.
* Confidence intervals of an error rate at a threshold: Clopper-Pearson
  (exact binomial, two-sided). It is also distribution-free for a threshold
  chosen between order statistics of the impostor scores: the true FMR just
  above the (k+1)-th highest of n impostor scores is Beta(k+1, n-k)
  distributed, whose upper quantile is the Clopper-Pearson upper bound, so the
  interval stays honest after the threshold was *selected* on the same data.
  Comparisons sharing a finger are correlated; with subject ids the counts are
  deflated by the design effect ``deff = V_subjects / V_binomial`` (the
  between-subject variance estimate of ISO/IEC 19795-1 for correlated
  attempts, over the binomial one, floored at 1): Clopper-Pearson on
  ``k/deff`` errors in ``n/deff`` trials. When no error is observed the
  interval is ``(0, 3/n_eff)`` (rule of three).
* The percentile **subject bootstrap** (resampling fingers with replacement,
  keeping all comparisons of each drawn finger -- Bolle, Ratha & Pankanti's
  "subsets bootstrap") is provided for any metric (EER intervals in reports),
  and paired (:func:`paired_subject_bootstrap_ci`) for the change of a metric
  between two systems scoring the same comparisons (e.g. before and after WSQ).
  :func:`tune` does not use it for the FMR: with the handful of errors left at
  a target FMR it ignores the threshold selection and undercovers (measured:
  87 % coverage of held-out FMR at 1e-3 on FVC2002 B, versus 90 % for the
  design-effect Clopper-Pearson interval).
* Prediction interval: the FMR that will be *measured* on m new impostor
  comparisons at the threshold varies more than the true FMR; it is bounded
  by the beta-binomial quantiles BetaBinom(m, k, n-k+1) (low) and
  BetaBinom(m, k+1, n-k) (high) on effective counts
  (:func:`fmr_prediction_interval`, :meth:`Threshold.fmr_prediction_interval`).
* 1:N (ISO/IEC 19795-1, NIST FRVT 1:N): for mated searches, ``mate_ranks``
  holds the 1-based rank of the mate in the candidate list (0 = not returned)
  and ``mate_scores`` its score; for non-mated searches, ``top_scores`` holds
  the highest candidate score (-inf when the list is empty).
  ``FPIR(N, T) = #{top_score >= T} / n_nonmated_searches``;
  ``FNIR(N, R, T) = #{not (1 <= rank <= R and score >= T)} / n_mated_searches``;
  ``CMC(k) = #{1 <= rank <= k} / n_mated_searches`` (rank-k hit rate).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .errors import CalibrationError

__all__ = [
    "ErrorCurve",
    "EER",
    "OperatingPoint",
    "Threshold",
    "error_curve",
    "fmr_at",
    "fnmr_at",
    "eer",
    "fnmr_at_fmr",
    "zero_fmr",
    "fmr100",
    "fmr1000",
    "fmr10000",
    "det_points",
    "rule_of_three",
    "min_comparisons_for",
    "clopper_pearson",
    "design_effect",
    "fmr_prediction_interval",
    "subject_bootstrap_rate_ci",
    "subject_bootstrap_ci",
    "paired_subject_bootstrap_ci",
    "cmc",
    "fpir",
    "fnir",
    "identification_from_matrix",
    "tune",
]

#: Confidence level of every interval unless told otherwise.
CONFIDENCE = 0.95
#: Bootstrap replicates for subject-resampling intervals.
BOOTSTRAP_REPLICATES = 2000
#: Upper bound constant of the rule of three (-ln 0.05 ~= 2.996, rounded as in ISO/IEC 19795-1).
RULE_OF_THREE = 3.0


# --------------------------------------------------------------------------- input checks
def _scores(values, name: str, *, allow_empty: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{name}: expected numbers, got {type(values).__name__}") from None
    if arr.ndim != 1:
        raise CalibrationError(f"{name}: expected a 1-D array of scores, got shape {arr.shape}")
    if arr.size == 0 and not allow_empty:
        raise CalibrationError(f"{name}: no scores")
    if np.isnan(arr).any():
        raise CalibrationError(f"{name}: {int(np.isnan(arr).sum())} scores are NaN")
    return arr


def _rate(value, name: str, *, allow_zero: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CalibrationError(f"{name}: expected a number in [0, 1), got {value!r}")
    v = float(value)
    if not (0.0 <= v < 1.0) or (v == 0.0 and not allow_zero):
        raise CalibrationError(f"{name}: expected a rate in {'[0' if allow_zero else '(0'}, 1), got {value!r}")
    return v


def _subjects(ids, n: int, name: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.size != n:
        raise CalibrationError(f"{name}: expected one subject id per score ({n}), got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------- 1:1 curves
@dataclass(frozen=True)
class ErrorCurve:
    """FMR and FNMR at every candidate threshold (ascending).

    Attributes
    ----------
    thresholds : numpy.ndarray of float64, shape (T,)
        Distinct observed scores, then one value above the highest (reject all).
    false_matches, false_non_matches : numpy.ndarray of int64, shape (T,)
        Counts at each threshold (accept when score >= threshold).
    n_mated, n_nonmated : int
    """

    thresholds: np.ndarray
    false_matches: np.ndarray
    false_non_matches: np.ndarray
    n_mated: int
    n_nonmated: int

    @property
    def fmr(self) -> np.ndarray:
        return self.false_matches / self.n_nonmated

    @property
    def fnmr(self) -> np.ndarray:
        return self.false_non_matches / self.n_mated


def error_curve(mated, nonmated) -> ErrorCurve:
    """Error counts at every candidate threshold, O(n log n).

    Parameters
    ----------
    mated, nonmated : array_like of float, shape (n_mated,), (n_nonmated,)
        Similarity scores of genuine and impostor comparisons.
    """
    g = np.sort(_scores(mated, "mated"))
    i = np.sort(_scores(nonmated, "nonmated"))
    thr = np.unique(np.concatenate([g, i]))
    top = thr[-1]
    above = np.nextafter(top, np.inf) if np.isfinite(top) else np.inf
    thr = np.append(thr, above)
    fm = i.size - np.searchsorted(i, thr, side="left")
    fnm = np.searchsorted(g, thr, side="left")
    return ErrorCurve(thr, fm.astype(np.int64), fnm.astype(np.int64), int(g.size), int(i.size))


def fmr_at(nonmated, threshold: float) -> float:
    """FMR at ``threshold``: fraction of non-mated scores >= threshold."""
    i = _scores(nonmated, "nonmated")
    return float(np.count_nonzero(i >= threshold) / i.size)


def fnmr_at(mated, threshold: float) -> float:
    """FNMR at ``threshold``: fraction of mated scores < threshold."""
    g = _scores(mated, "mated")
    return float(np.count_nonzero(g < threshold) / g.size)


@dataclass(frozen=True)
class EER:
    """FVC-style equal error rate: ``eer`` = midpoint of ``[low, high]`` at ``threshold``."""

    eer: float
    low: float
    high: float
    threshold: float


def eer(mated, nonmated) -> EER:
    """Equal error rate as FVC defines it (see the module notes)."""
    c = error_curve(mated, nonmated)
    fmr, fnmr = c.fmr, c.fnmr
    # FMR falls and FNMR rises with the threshold; t1 = last with FNMR <= FMR, t2 = first with FNMR >= FMR
    le = np.flatnonzero(fnmr <= fmr)
    ge = np.flatnonzero(fnmr >= fmr)
    t1 = le[-1] if le.size else 0
    t2 = ge[0] if ge.size else fmr.size - 1
    if fmr[t1] + fnmr[t1] <= fmr[t2] + fnmr[t2]:
        low, high, t = fnmr[t1], fmr[t1], t1
    else:
        low, high, t = fmr[t2], fnmr[t2], t2
    return EER(float((low + high) / 2), float(low), float(high), float(c.thresholds[t]))


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold with its measured rates and the counts behind them."""

    threshold: float
    fmr: float
    fnmr: float
    false_matches: int
    n_nonmated: int
    false_non_matches: int
    n_mated: int
    target_fmr: float

    @property
    def measurable(self) -> bool:
        """True when ``n_nonmated >= 3/target`` (rule of three); ZeroFMR is always reported."""
        return self.target_fmr == 0 or self.n_nonmated >= min_comparisons_for(self.target_fmr)


def _operating_point(c: ErrorCurve, target: float) -> OperatingPoint:
    # smallest threshold whose measured FMR <= target (fm counts fall with the index)
    ok = np.flatnonzero(c.false_matches <= target * c.n_nonmated * (1 + 1e-12))
    j = int(ok[0])  # the last threshold (reject all) always qualifies
    return OperatingPoint(
        float(c.thresholds[j]),
        float(c.false_matches[j] / c.n_nonmated),
        float(c.false_non_matches[j] / c.n_mated),
        int(c.false_matches[j]),
        c.n_nonmated,
        int(c.false_non_matches[j]),
        c.n_mated,
        float(target),
    )


def fnmr_at_fmr(mated, nonmated, target_fmr: float) -> OperatingPoint:
    """FNMR at the smallest threshold whose measured FMR <= ``target_fmr``.

    Check :attr:`OperatingPoint.measurable` before reporting: below ``3/n_nonmated``
    the target is not demonstrated by the data.
    """
    target = _rate(target_fmr, "target_fmr")
    return _operating_point(error_curve(mated, nonmated), target)


def zero_fmr(mated, nonmated) -> OperatingPoint:
    """ZeroFMR: the lowest FNMR at which no false match occurs."""
    return fnmr_at_fmr(mated, nonmated, 0.0)


def fmr100(mated, nonmated) -> OperatingPoint:
    """FMR100: FNMR at FMR <= 1 %."""
    return fnmr_at_fmr(mated, nonmated, 1e-2)


def fmr1000(mated, nonmated) -> OperatingPoint:
    """FMR1000: FNMR at FMR <= 0.1 %."""
    return fnmr_at_fmr(mated, nonmated, 1e-3)


def fmr10000(mated, nonmated) -> OperatingPoint:
    """FMR10000: FNMR at FMR <= 0.01 %."""
    return fnmr_at_fmr(mated, nonmated, 1e-4)


def det_points(mated, nonmated) -> tuple[np.ndarray, np.ndarray]:
    """(FMR, FNMR) at every candidate threshold, for a DET plot.

    Returns
    -------
    fmr, fnmr : numpy.ndarray of float64, shape (T,)
        FMR non-increasing, FNMR non-decreasing.
    """
    c = error_curve(mated, nonmated)
    return c.fmr, c.fnmr


# --------------------------------------------------------------------------- uncertainty
def rule_of_three(n: int) -> float:
    """95 % upper bound of an error rate when 0 errors were seen in ``n`` trials: ``3/n``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise CalibrationError(f"n: expected a positive number of trials, got {n!r}")
    return min(1.0, RULE_OF_THREE / int(n))


def min_comparisons_for(target_rate: float) -> int:
    """Fewest comparisons that can demonstrate ``target_rate``: ``ceil(3 / target)`` (rule of three)."""
    t = _rate(target_rate, "target", allow_zero=False)
    return int(math.ceil(RULE_OF_THREE / t - 1e-9))


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE, design_effect: float = 1.0) -> tuple[float, float]:
    """Exact two-sided binomial interval of ``k`` errors in ``n`` trials; ``(0, 3/n)`` when ``k == 0``.

    With ``design_effect`` d > 1 (correlated trials) it is computed on the
    effective counts ``k/d`` in ``n/d`` (beta quantiles accept real counts).
    """
    from scipy import stats

    if n < 1 or not 0 <= k <= n:
        raise CalibrationError(f"clopper_pearson: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    d = max(1.0, float(design_effect))
    ke, ne = k / d, n / d
    if k == 0:
        return 0.0, min(1.0, RULE_OF_THREE / ne)
    a = 1.0 - confidence
    low = float(stats.beta.ppf(a / 2, ke, ne - ke + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, ke + 1, ne - ke))
    return low, high


def design_effect(errors, subjects) -> float:
    """Variance inflation of an error rate from trials clustered by subject (>= 1).

    ``V_subjects = S/(S-1) * sum_i (a_i - p m_i)^2 / n^2`` (a_i errors in m_i
    trials of subject i, S subjects; the ISO/IEC 19795-1 variance for
    correlated attempts) over ``p (1 - p) / n``. 1 when no or only errors, or
    fewer than two subjects.

    Parameters
    ----------
    errors : array_like of bool, shape (n,)
    subjects : array_like, shape (n,)
    """
    e = np.asarray(errors, dtype=bool).ravel()
    sub = _subjects(subjects, e.size, "subjects")
    n = e.size
    p = e.mean() if n else 0.0
    if n == 0 or p in (0.0, 1.0):
        return 1.0
    _, inv = np.unique(sub, return_inverse=True)
    a = np.bincount(inv, weights=e.astype(np.float64))
    m = np.bincount(inv).astype(np.float64)
    if a.size < 2:
        return 1.0
    v_sub = a.size / (a.size - 1) * np.sum((a - p * m) ** 2) / n**2
    return float(max(1.0, v_sub / (p * (1 - p) / n)))


def fmr_prediction_interval(k: int, n: int, m: int, confidence: float = CONFIDENCE,
                            design_effect: float = 1.0) -> tuple[float, float]:
    """Interval for the FMR that m new impostor comparisons will show at a threshold with k of n false matches.

    Beta-binomial quantiles on effective counts: low from BetaBinom(m, k, n-k+1),
    high from BetaBinom(m, k+1, n-k) (the distribution of the true FMR at a
    threshold between the k-th and (k+1)-th highest impostor scores, mixed with
    the binomial noise of the m new comparisons).
    """
    from scipy import stats

    if n < 1 or not 0 <= k <= n or m < 1:
        raise CalibrationError(f"fmr_prediction_interval: need 0 <= k <= n, n >= 1, m >= 1; got k={k}, n={n}, m={m}")
    d = max(1.0, float(design_effect))
    ke, ne = k / d, n / d
    a = 1.0 - confidence
    low = 0.0 if k == 0 else float(stats.betabinom.ppf(a / 2, m, ke, ne - ke + 1)) / m
    high = 1.0 if k == n else float(stats.betabinom.ppf(1 - a / 2, m, ke + 1, ne - ke)) / m
    return low, high


def subject_bootstrap_rate_ci(
    errors,
    subjects,
    *,
    confidence: float = CONFIDENCE,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of an error rate, resampling subjects.

    Parameters
    ----------
    errors : array_like of bool, shape (n,)
        One flag per comparison (e.g. ``nonmated >= threshold``).
    subjects : array_like, shape (n,)
        Subject (finger) id of each comparison; for a pair, the probe's finger.
    """
    e = np.asarray(errors, dtype=bool).ravel()
    sub = _subjects(subjects, e.size, "subjects")
    if e.size == 0:
        raise CalibrationError("errors: no comparisons")
    if not e.any():
        return 0.0, rule_of_three(int(e.size))
    _, inv = np.unique(sub, return_inverse=True)
    n_sub = int(inv.max()) + 1
    err_per = np.bincount(inv, weights=e.astype(np.float64), minlength=n_sub)
    tot_per = np.bincount(inv, minlength=n_sub).astype(np.float64)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_sub, np.full(n_sub, 1.0 / n_sub), size=replicates).astype(np.float64)
    rates = (counts @ err_per) / np.maximum(counts @ tot_per, 1.0)
    return _percentile_interval(rates, confidence)


def subject_bootstrap_ci(
    metric,
    mated,
    nonmated,
    mated_subjects,
    nonmated_subjects,
    *,
    confidence: float = CONFIDENCE,
    replicates: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of any metric ``metric(mated, nonmated) -> float``.

    Subjects are drawn with replacement from the union of both id arrays; each
    drawn subject brings all its mated and non-mated comparisons (non-mated
    pairs belong to their probe's subject).
    """
    g = _scores(mated, "mated")
    i = _scores(nonmated, "nonmated")
    values = [metric(g[gi], i[ii]) for gi, ii in _subject_resamples(mated_subjects, nonmated_subjects, g.size, i.size,
                                                                     replicates, seed)]
    return _percentile_interval(values, confidence)


def paired_subject_bootstrap_ci(
    metric,
    mated_a,
    nonmated_a,
    mated_b,
    nonmated_b,
    mated_subjects,
    nonmated_subjects,
    *,
    confidence: float = CONFIDENCE,
    replicates: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the change ``metric(b) - metric(a)`` between two systems.

    Both systems scored the same comparisons in the same order (e.g. the same
    prints before and after WSQ compression), so every replicate draws the
    same subjects for both: the interval is that of the paired difference,
    much narrower than two separate intervals would suggest.
    """
    ga, ia = _scores(mated_a, "mated_a"), _scores(nonmated_a, "nonmated_a")
    gb, ib = _scores(mated_b, "mated_b"), _scores(nonmated_b, "nonmated_b")
    if ga.size != gb.size or ia.size != ib.size:
        raise CalibrationError(f"paired systems must score the same comparisons: {ga.size}/{ia.size} mated/non-mated "
                               f"against {gb.size}/{ib.size}")
    values = [metric(gb[gi], ib[ii]) - metric(ga[gi], ia[ii])
              for gi, ii in _subject_resamples(mated_subjects, nonmated_subjects, ga.size, ia.size, replicates, seed)]
    return _percentile_interval(values, confidence)


def _percentile_interval(values, confidence: float) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap replicates (percentile method)."""
    a = (1.0 - confidence) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))


def _subject_resamples(mated_subjects, nonmated_subjects, n_mated: int, n_nonmated: int, replicates: int, seed: int):
    """Index arrays (mated, non-mated) of each bootstrap replicate; subjects drawn with replacement."""
    gs = _subjects(mated_subjects, n_mated, "mated_subjects")
    is_ = _subjects(nonmated_subjects, n_nonmated, "nonmated_subjects")
    uniq, inv = np.unique(np.concatenate([gs, is_]).astype(str), return_inverse=True)
    g_inv, i_inv = inv[:n_mated], inv[n_mated:]
    g_order, i_order = np.argsort(g_inv, kind="stable"), np.argsort(i_inv, kind="stable")
    g_start = np.searchsorted(g_inv[g_order], np.arange(uniq.size + 1))
    i_start = np.searchsorted(i_inv[i_order], np.arange(uniq.size + 1))
    rng = np.random.default_rng(seed)
    for _ in range(replicates):
        draw = rng.integers(0, uniq.size, uniq.size)
        gi = np.concatenate([g_order[g_start[d]:g_start[d + 1]] for d in draw])
        ii = np.concatenate([i_order[i_start[d]:i_start[d + 1]] for d in draw])
        if gi.size and ii.size:
            yield gi, ii


# --------------------------------------------------------------------------- 1:N
def _ranks(mate_ranks, name: str = "mate_ranks") -> np.ndarray:
    r = np.asarray(mate_ranks)
    if r.ndim != 1 or r.size == 0 or not np.issubdtype(r.dtype, np.integer) or (r < 0).any():
        raise CalibrationError(f"{name}: expected a non-empty 1-D array of integer ranks >= 0 (0 = mate not returned)")
    return r.astype(np.int64)


def cmc(mate_ranks, max_rank: int) -> np.ndarray:
    """Cumulative match characteristic: rank-k hit rate for k = 1..max_rank.

    Returns
    -------
    numpy.ndarray of float64, shape (max_rank,)
    """
    r = _ranks(mate_ranks)
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise CalibrationError(f"max_rank: expected an integer >= 1, got {max_rank!r}")
    hits = np.bincount(r[(r >= 1) & (r <= max_rank)], minlength=max_rank + 1)[1:]
    return np.cumsum(hits) / r.size


def fpir(top_scores, threshold: float) -> float:
    """FPIR(N, T): fraction of non-mated searches whose top candidate scores >= T."""
    s = _scores(top_scores, "top_scores")
    return float(np.count_nonzero(s >= threshold) / s.size)


def fnir(mate_ranks, mate_scores, threshold: float, rank: int = 1) -> float:
    """FNIR(N, R, T): fraction of mated searches whose mate is not at rank <= R with score >= T."""
    r = _ranks(mate_ranks)
    s = _scores(mate_scores, "mate_scores")
    if s.size != r.size:
        raise CalibrationError(f"mate_scores: {s.size} scores for {r.size} ranks")
    hit = (r >= 1) & (r <= rank) & (s >= threshold)
    return float(1.0 - np.count_nonzero(hit) / r.size)


def identification_from_matrix(scores, probe_ids, gallery_ids):
    """Simulate 1:N searches from a full probe x gallery score matrix.

    Each probe is searched against the whole gallery (mated search when its id
    is enrolled) and against the gallery without its mate(s) (non-mated search,
    the "remove the mate" open-set simulation).

    Parameters
    ----------
    scores : array_like of float, shape (P, G)
    probe_ids : array_like, shape (P,)
    gallery_ids : array_like, shape (G,)
        Subject of each gallery entry (one entry per subject expected).

    Returns
    -------
    mate_ranks : numpy.ndarray of int64, shape (M,)
        1-based rank of the mate, for the M probes whose id is in the gallery.
    mate_scores : numpy.ndarray of float64, shape (M,)
    top_nonmated : numpy.ndarray of float64, shape (P,)
        Highest score among the non-mated gallery entries of each probe (-inf if none).
    """
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(probe_ids)
    gid = np.asarray(gallery_ids)
    if s.ndim != 2 or s.shape != (p.size, gid.size):
        raise CalibrationError(f"scores: expected shape ({p.size}, {gid.size}), got {s.shape}")
    mated = p[:, None] == gid[None, :]
    nonmated_scores = np.where(mated, -np.inf, s)
    top_nonmated = nonmated_scores.max(axis=1) if gid.size else np.full(p.size, -np.inf)
    has = mated.any(axis=1)
    mate_scores = np.where(mated, s, -np.inf).max(axis=1)[has]
    # rank = 1 + number of non-mated entries scoring strictly higher (ties resolved in the mate's favour)
    ranks = 1 + np.count_nonzero(nonmated_scores[has] > mate_scores[:, None], axis=1)
    return ranks.astype(np.int64), mate_scores, top_nonmated


# --------------------------------------------------------------------------- tuning
@dataclass(frozen=True)
class Threshold:
    """An operating threshold chosen from evidence.

    Attributes
    ----------
    value : float
        Accept a comparison when ``score >= value``.
    fmr : float
        FMR measured on the non-mated scores at ``value``.
    fmr_ci : tuple of float
        (low, high) confidence interval of the true FMR at ``value`` (``ci_method``, ``confidence``).
    fnmr : float
        FNMR measured on the mated scores at ``value``.
    fnmr_ci : tuple of float
    false_matches, n_nonmated, false_non_matches, n_mated : int
        The counts the rates came from.
    target_fmr : float
        Per-comparison FMR target (for the 1:N form, derived from ``target_fpir``).
    confidence : float
    ci_method : str
        ``"clopper-pearson"`` (comparisons treated as independent) or
        ``"clopper-pearson+design-effect"`` (subject ids given; the upper bound is the
        rule of three on the effective count when 0 errors).
    fmr_design_effect, fnmr_design_effect : float
        Variance inflation from comparisons sharing a subject (1 without subject ids).
    gallery_size, target_fpir, fpir, fpir_ci
        Set by the 1:N form: ``FPIR = 1 - (1 - FMR)^N`` (independent non-mated entries).
    """

    value: float
    fmr: float
    fmr_ci: tuple
    fnmr: float
    fnmr_ci: tuple
    false_matches: int
    n_nonmated: int
    false_non_matches: int
    n_mated: int
    target_fmr: float
    confidence: float
    ci_method: str
    fmr_design_effect: float = 1.0
    fnmr_design_effect: float = 1.0
    gallery_size: int | None = None
    target_fpir: float | None = None
    fpir: float | None = None
    fpir_ci: tuple | None = None

    def fmr_prediction_interval(self, m: int) -> tuple[float, float]:
        """Interval for the FMR that ``m`` new impostor comparisons will measure at ``value``."""
        return fmr_prediction_interval(self.false_matches, self.n_nonmated, m, self.confidence,
                                       self.fmr_design_effect)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        d = asdict(self)
        for k in ("fmr_ci", "fnmr_ci", "fpir_ci"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, doc: dict) -> "Threshold":
        """Inverse of :meth:`to_dict`."""
        try:
            d = dict(doc)
            for k in ("fmr_ci", "fnmr_ci", "fpir_ci"):
                if d.get(k) is not None:
                    d[k] = tuple(float(x) for x in d[k])
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"threshold: malformed record ({exc})") from None


def tune(
    mated,
    nonmated,
    *,
    target_fmr: float | None = None,
    target_fpir: float | None = None,
    gallery_size: int | None = None,
    mated_subjects=None,
    nonmated_subjects=None,
    confidence: float = CONFIDENCE,
) -> Threshold:
    """Choose the operating threshold that meets a false match target.

    1:1 form: ``tune(mated, nonmated, target_fmr=1e-4)``. 1:N form:
    ``tune(mated, nonmated, target_fpir=0.01, gallery_size=N)`` converts the
    target to a per-comparison FMR ``1 - (1 - FPIR)^(1/N)`` and reports
    ``fpir = 1 - (1 - fmr)^N`` (non-mated entries assumed independent).

    The threshold is the smallest observed score whose measured FMR is <= the
    target (see the module notes on candidates and ties).

    Parameters
    ----------
    mated, nonmated : array_like of float, shape (n_mated,), (n_nonmated,)
    target_fmr, target_fpir : float
        Exactly one of them, in (0, 1).
    gallery_size : int
        Gallery size N, required with ``target_fpir``.
    mated_subjects, nonmated_subjects : array_like, optional
        Subject (finger) id per score (for a non-mated pair, the probe's); when
        given, the Clopper-Pearson intervals use the effective counts after the
        design effect of the subject clustering (see the module notes).

    Raises
    ------
    CalibrationError
        Bad input, or ``n_nonmated < ceil(3 / target_fmr)``: with fewer impostor
        comparisons even zero observed false matches cannot show the target
        (rule of three), e.g. 3,000 scores support 1e-3 but not 1e-5.
    """
    from .calibration import fmr_from_fpir, fpir_from_fmr

    if (target_fmr is None) == (target_fpir is None):
        raise CalibrationError("tune: give exactly one of target_fmr (1:1) or target_fpir with gallery_size (1:N)")
    if target_fpir is not None:
        tp = _rate(target_fpir, "target_fpir", allow_zero=False)
        if gallery_size is None:
            raise CalibrationError("gallery_size: required with target_fpir")
        target = float(fmr_from_fpir(tp, gallery_size))
    else:
        if gallery_size is not None:
            raise CalibrationError("gallery_size: only meaningful with target_fpir")
        target = _rate(target_fmr, "target_fmr", allow_zero=False)
    if not 0.5 <= confidence < 1:
        raise CalibrationError(f"confidence: expected a level in [0.5, 1), got {confidence!r}")
    g = _scores(mated, "mated")
    i = _scores(nonmated, "nonmated")
    need = min_comparisons_for(target)
    if i.size < need:
        what = f"target_fpir {target_fpir:g} on a gallery of {gallery_size} (per-comparison FMR {target:.3g})" \
            if target_fpir is not None else f"target_fmr {target:g}"
        raise CalibrationError(
            f"nonmated: {i.size} impostor scores cannot support {what}; the rule of three needs at least "
            f"{need} (3/target) impostor comparisons"
        )
    op = _operating_point(error_curve(g, i), target)
    t = op.threshold
    if (mated_subjects is None) != (nonmated_subjects is None):
        raise CalibrationError("mated_subjects/nonmated_subjects: give both or neither")
    d_fm = d_fnm = 1.0
    method = "clopper-pearson"
    if mated_subjects is not None:
        d_fm = design_effect(i >= t, _subjects(nonmated_subjects, i.size, "nonmated_subjects"))
        d_fnm = design_effect(g < t, _subjects(mated_subjects, g.size, "mated_subjects"))
        method = "clopper-pearson+design-effect"
    fmr_ci = clopper_pearson(op.false_matches, op.n_nonmated, confidence, d_fm)
    fnmr_ci = clopper_pearson(op.false_non_matches, op.n_mated, confidence, d_fnm)
    extra = {}
    if target_fpir is not None:
        extra = dict(
            gallery_size=int(gallery_size),
            target_fpir=float(target_fpir),
            fpir=float(fpir_from_fmr(op.fmr, gallery_size)),
            fpir_ci=tuple(float(fpir_from_fmr(x, gallery_size)) for x in fmr_ci),
        )
    return Threshold(
        value=t,
        fmr=op.fmr,
        fmr_ci=tuple(float(x) for x in fmr_ci),
        fnmr=op.fnmr,
        fnmr_ci=tuple(float(x) for x in fnmr_ci),
        false_matches=op.false_matches,
        n_nonmated=op.n_nonmated,
        false_non_matches=op.false_non_matches,
        n_mated=op.n_mated,
        target_fmr=target,
        confidence=float(confidence),
        ci_method=method,
        fmr_design_effect=d_fm,
        fnmr_design_effect=d_fnm,
        **extra,
    )
