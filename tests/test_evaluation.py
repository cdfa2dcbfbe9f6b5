"""biomatch.evaluation: 1:1 and 1:N metrics, intervals, tune(); cross-checked against pyeer
and against slow obvious references on synthetic score distributions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import biomatch as bm
from biomatch import evaluation as ev
from biomatch.errors import BiomatchError, CalibrationError

try:
    import pyeer.eer_info as pyeer_stats
except ImportError:  # pragma: no cover - the test extra installs it
    pyeer_stats = None
needs_pyeer = pytest.mark.skipif(pyeer_stats is None, reason="pyeer not installed (pip install pyeer)")


def _synthetic(seed: int, n_mated: int = 300, n_nonmated: int = 3000, rounded: bool = False):
    rng = np.random.default_rng(seed)
    g = rng.normal(40.0, 10.0, n_mated)
    i = rng.gamma(2.0, 5.0, n_nonmated)
    if rounded:  # many ties, as with integer-valued matchers
        g, i = np.round(g), np.round(i)
    return g, i


# --------------------------------------------------------------------------- slow references
def _ref_rates(g, i, t):
    return sum(s >= t for s in i) / len(i), sum(s < t for s in g) / len(g)


def _ref_candidates(g, i):
    c = sorted(set(g) | set(i))
    return c + [np.nextafter(c[-1], np.inf)]


def _ref_fnmr_at_fmr(g, i, target):
    for t in _ref_candidates(g, i):  # ascending: first that meets the target is the smallest
        fmr, fnmr = _ref_rates(g, i, t)
        if fmr <= target:
            return t, fmr, fnmr
    raise AssertionError("unreachable")


def _ref_eer(g, i):
    cands = _ref_candidates(g, i)
    rates = [_ref_rates(g, i, t) for t in cands]
    t1 = max(k for k, (fm, fnm) in enumerate(rates) if fnm <= fm)
    t2 = min(k for k, (fm, fnm) in enumerate(rates) if fnm >= fm)
    fm1, fnm1 = rates[t1]
    fm2, fnm2 = rates[t2]
    if fm1 + fnm1 <= fm2 + fnm2:
        lo, hi = fnm1, fm1
    else:
        lo, hi = fm2, fnm2
    return (lo + hi) / 2, lo, hi


# --------------------------------------------------------------------------- pyeer cross-checks
@needs_pyeer
@pytest.mark.parametrize("seed,rounded", [(0, False), (1, True), (2, True), (3, False)])
def test_eer_matches_pyeer(seed, rounded):
    g, i = _synthetic(seed, rounded=rounded)
    stats = pyeer_stats.get_eer_stats(g.tolist(), i.tolist())
    e = ev.eer(g, i)
    assert e.eer == pytest.approx(stats.eer, abs=1e-12)
    assert e.low == pytest.approx(stats.eer_low, abs=1e-12)
    assert e.high == pytest.approx(stats.eer_high, abs=1e-12)


@needs_pyeer
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_fmr_and_operating_points_match_pyeer(seed):
    # continuous scores, n_nonmated a multiple of 1000: FMR 1% and 0.1% are attained exactly,
    # where pyeer's nearest-FMR rule and our smallest-threshold rule coincide
    g, i = _synthetic(seed, n_nonmated=5000)
    stats = pyeer_stats.get_eer_stats(g.tolist(), i.tolist())
    assert ev.zero_fmr(g, i).fnmr == pytest.approx(stats.fmr0)
    assert ev.fmr100(g, i).fnmr == pytest.approx(stats.fmr100)
    assert ev.fmr1000(g, i).fnmr == pytest.approx(stats.fmr1000)


@needs_pyeer
def test_error_curve_matches_pyeer_roc():
    from pyeer.eer_stats import calculate_roc

    g, i = _synthetic(5, rounded=True)
    thr, fmr, fnmr = calculate_roc(g, i)
    c = ev.error_curve(g, i)
    np.testing.assert_allclose(c.thresholds[:-1], thr)
    np.testing.assert_allclose(c.fmr[:-1], fmr)
    np.testing.assert_allclose(c.fnmr[:-1], fnmr)
    assert c.fmr[-1] == 0 and c.fnmr[-1] == 1  # the extra "reject all" threshold


# --------------------------------------------------------------------------- references
@settings(max_examples=40, deadline=None)
@given(
    g=st.lists(st.integers(0, 30), min_size=1, max_size=40),
    i=st.lists(st.integers(0, 30), min_size=1, max_size=60),
    target=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.3]),
)
def test_operating_point_and_eer_match_reference(g, i, target):
    g = np.asarray(g, float)
    i = np.asarray(i, float)
    t, fmr, fnmr = _ref_fnmr_at_fmr(list(g), list(i), target)
    op = ev.fnmr_at_fmr(g, i, target)
    assert (op.threshold, op.fmr, op.fnmr) == (t, pytest.approx(fmr), pytest.approx(fnmr))
    assert op.false_matches == round(fmr * i.size)
    eer, lo, hi = _ref_eer(list(g), list(i))
    e = ev.eer(g, i)
    assert (e.eer, e.low, e.high) == (pytest.approx(eer), pytest.approx(lo), pytest.approx(hi))


def test_tie_rule_accepts_equal_scores():
    # accept when score >= threshold: a non-mated score equal to the threshold is a false match
    assert ev.fmr_at([1.0, 2.0, 3.0], 2.0) == pytest.approx(2 / 3)
    assert ev.fnmr_at([1.0, 2.0, 3.0], 2.0) == pytest.approx(1 / 3)
    # FNMR@FMR picks the smallest threshold with FMR <= target: here just above the top impostor
    op = ev.fnmr_at_fmr([5.0, 6.0, 7.0], [1.0, 2.0, 3.0, 4.0], 0.0)
    assert op.threshold == 5.0 and op.fnmr == 0.0 and op.false_matches == 0


def test_det_points_monotone():
    g, i = _synthetic(7)
    fmr, fnmr = ev.det_points(g, i)
    assert np.all(np.diff(fmr) <= 0) and np.all(np.diff(fnmr) >= 0)
    assert fmr[0] == 1.0 and fnmr[-1] == 1.0


def test_measurable_follows_rule_of_three():
    g, i = _synthetic(0, n_nonmated=2999)
    assert not ev.fmr1000(g, i).measurable
    assert ev.fmr100(g, i).measurable
    assert ev.min_comparisons_for(1e-3) == 3000
    assert ev.rule_of_three(300) == pytest.approx(0.01)


# --------------------------------------------------------------------------- intervals
def test_clopper_pearson_known_values():
    lo, hi = ev.clopper_pearson(5, 100)
    assert lo == pytest.approx(0.01643, abs=1e-4) and hi == pytest.approx(0.11284, abs=1e-4)
    assert ev.clopper_pearson(0, 1000) == (0.0, pytest.approx(0.003))


def test_subject_bootstrap_wider_than_binomial_for_clustered_errors():
    # all errors come from 3 of 100 subjects: resampling subjects must show the clustering
    subjects = np.repeat(np.arange(100), 50)
    errors = np.isin(subjects, [3, 40, 77]) & (np.arange(subjects.size) % 5 == 0)
    lo, hi = ev.subject_bootstrap_rate_ci(errors, subjects, seed=1)
    cp_lo, cp_hi = ev.clopper_pearson(int(errors.sum()), errors.size)
    assert lo <= errors.mean() <= hi
    assert hi - lo > cp_hi - cp_lo
    # no error at all: rule of three upper bound
    assert ev.subject_bootstrap_rate_ci(np.zeros(600, bool), np.repeat(np.arange(6), 100)) == (0.0, 0.005)


def test_subject_bootstrap_ci_of_eer_contains_estimate():
    g, i = _synthetic(3, n_mated=280, n_nonmated=2800)
    gs = np.repeat(np.arange(10), 28)
    is_ = np.repeat(np.arange(10), 280)
    lo, hi = ev.subject_bootstrap_ci(lambda a, b: ev.eer(a, b).eer, g, i, gs, is_, replicates=100)
    assert lo <= ev.eer(g, i).eer <= hi and lo < hi


def test_paired_subject_bootstrap_of_a_change():
    g, i = _synthetic(3, n_mated=280, n_nonmated=2800)
    gs = np.repeat(np.arange(10), 28)
    is_ = np.repeat(np.arange(10), 280)
    metric = lambda a, b: ev.eer(a, b).eer  # noqa: E731
    # a system compared with itself changes nothing, in every replicate
    assert ev.paired_subject_bootstrap_ci(metric, g, i, g, i, gs, is_, replicates=50) == (0.0, 0.0)
    # genuine scores pulled down: the EER rises, and the paired interval holds the change and excludes 0
    worse = g - 0.5 * np.std(g)
    change = metric(worse, i) - metric(g, i)
    lo, hi = ev.paired_subject_bootstrap_ci(metric, g, i, worse, i, gs, is_, replicates=200)
    assert 0 < lo <= change <= hi
    # the paired interval is narrower than the unpaired spread of the two systems' own intervals
    a_lo, a_hi = ev.subject_bootstrap_ci(metric, g, i, gs, is_, replicates=200)
    b_lo, b_hi = ev.subject_bootstrap_ci(metric, worse, i, gs, is_, replicates=200)
    assert hi - lo < (b_hi - a_lo) - (b_lo - a_hi)
    with pytest.raises(CalibrationError, match="same comparisons"):
        ev.paired_subject_bootstrap_ci(metric, g, i, g[:-1], i, gs, is_)


# --------------------------------------------------------------------------- 1:N
def test_cmc_fpir_fnir():
    ranks = np.array([1, 1, 2, 0, 5, 1])
    np.testing.assert_allclose(ev.cmc(ranks, 3), [3 / 6, 4 / 6, 4 / 6])
    scores = np.array([9.0, 2.0, 8.0, -np.inf, 7.0, 6.0])
    assert ev.fnir(ranks, scores, 5.0, rank=1) == pytest.approx(1 - 2 / 6)
    assert ev.fnir(ranks, scores, 0.0, rank=10) == pytest.approx(1 / 6)
    assert ev.fpir([1.0, 5.0, 7.0, -np.inf], 5.0) == 0.5


def test_identification_from_matrix():
    s = np.array([[9.0, 1.0, 3.0], [2.0, 4.0, 8.0], [5.0, 5.0, 0.0]])
    ranks, mate, top = ev.identification_from_matrix(s, ["a", "b", "z"], ["a", "b", "c"])
    np.testing.assert_array_equal(ranks, [1, 2])  # 'z' is not enrolled
    np.testing.assert_array_equal(mate, [9.0, 4.0])
    np.testing.assert_array_equal(top, [3.0, 8.0, 5.0])


# --------------------------------------------------------------------------- tune
def test_tune_selects_raw_count_threshold():
    g, i = _synthetic(11, n_nonmated=4000)
    t = bm.tune(g, i, target_fmr=1e-3)
    ref_t, ref_fmr, ref_fnmr = _ref_fnmr_at_fmr(list(g), list(i), 1e-3)
    assert t.value == ref_t and t.fmr == pytest.approx(ref_fmr) and t.fnmr == pytest.approx(ref_fnmr)
    assert t.false_matches == int(np.sum(i >= t.value)) <= 4
    assert t.n_nonmated == 4000 and t.n_mated == 300 and t.target_fmr == 1e-3
    assert t.ci_method == "clopper-pearson"
    assert t.fmr_ci[0] <= t.fmr <= t.fmr_ci[1]
    with pytest.raises(Exception):
        t.value = 0.0  # frozen
    assert ev.Threshold.from_dict(t.to_dict()) == t


def test_tune_with_subjects_uses_design_effect():
    # errors concentrated in a few fingers: the interval widens by the design effect
    rng = np.random.default_rng(12)
    g = rng.normal(40, 10, 300)
    i = rng.gamma(2.0, 5.0, 3000)
    subj = np.repeat(np.arange(30), 100)
    i[subj < 2] += 25.0  # two "lookalike" fingers produce most high impostor scores
    plain = bm.tune(g, i, target_fmr=1e-2)
    t = bm.tune(g, i, target_fmr=1e-2, mated_subjects=np.repeat(np.arange(30), 10), nonmated_subjects=subj)
    assert t.value == plain.value and t.fmr == plain.fmr
    assert t.ci_method == "clopper-pearson+design-effect" and t.fmr_design_effect > 2
    assert t.fmr_ci[0] < plain.fmr_ci[0] and t.fmr_ci[1] > plain.fmr_ci[1]
    assert t.fmr_ci[0] <= t.fmr <= t.fmr_ci[1]
    with pytest.raises(CalibrationError, match="both or neither"):
        bm.tune(g, i, target_fmr=1e-2, nonmated_subjects=subj)


def test_design_effect_reference():
    errors = np.array([1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], bool)
    subjects = np.repeat([0, 1, 2, 3], 3)
    p, n = errors.mean(), errors.size
    a = np.array([2, 0, 1, 0.0])
    v = 4 / 3 * np.sum((a - p * 3) ** 2) / n**2
    assert ev.design_effect(errors, subjects) == pytest.approx(max(1.0, v / (p * (1 - p) / n)))
    assert ev.design_effect(np.zeros(10, bool), np.arange(10)) == 1.0
    # one trial per subject: only the S/(S-1) small-sample factor
    assert ev.design_effect(np.arange(100) % 10 == 0, np.arange(100)) == pytest.approx(100 / 99)


def test_prediction_interval_wider_than_confidence_interval():
    lo, hi = ev.fmr_prediction_interval(5, 5760, 5760)
    cp = ev.clopper_pearson(5, 5760)
    assert lo <= cp[0] and hi > cp[1]
    # simulation: binomial truth, the measured held-out rate falls inside >= 95 % of the time
    rng = np.random.default_rng(0)
    inside = 0
    for _ in range(400):
        k = rng.binomial(5000, 1e-3)
        kb = rng.binomial(5000, 1e-3)
        lo, hi = ev.fmr_prediction_interval(k, 5000, 5000)
        inside += lo <= kb / 5000 <= hi
    assert inside / 400 >= 0.93


def test_tune_refuses_unsupported_target():
    g, i = _synthetic(0, n_nonmated=3000)
    with pytest.raises(CalibrationError, match="300000"):
        bm.tune(g, i, target_fmr=1e-5)
    bm.tune(g, i, target_fmr=1e-3)  # 3000 >= 3/1e-3


def test_tune_one_to_n():
    g, i = _synthetic(4, n_nonmated=20000)
    t = bm.tune(g, i, target_fpir=0.05, gallery_size=100)
    assert t.gallery_size == 100 and t.target_fmr == pytest.approx(1 - 0.95 ** 0.01)
    assert t.fpir == pytest.approx(1 - (1 - t.fmr) ** 100) and t.fpir <= 0.05
    assert t.fpir_ci[0] <= t.fpir <= t.fpir_ci[1]
    with pytest.raises(CalibrationError, match="needs at least"):
        bm.tune(g, i, target_fpir=0.01, gallery_size=100_000)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(target_fmr=0.0), "target_fmr"),
        (dict(target_fmr=1.5), "target_fmr"),
        (dict(target_fmr="x"), "target_fmr"),
        (dict(), "exactly one"),
        (dict(target_fmr=0.01, target_fpir=0.01, gallery_size=5), "exactly one"),
        (dict(target_fpir=0.01), "gallery_size"),
        (dict(target_fpir=0.01, gallery_size=0), "gallery_size"),
        (dict(target_fmr=0.01, gallery_size=10), "gallery_size"),
    ],
)
def test_tune_bad_arguments(kwargs, match):
    g, i = _synthetic(0)
    with pytest.raises(CalibrationError, match=match):
        bm.tune(g, i, **kwargs)


@pytest.mark.parametrize(
    "mated,nonmated,match",
    [
        ([], [1.0] * 500, "mated: no scores"),
        ([1.0, float("nan")], [1.0] * 500, "mated: 1 scores are NaN"),
        ([[1.0, 2.0]], [1.0] * 500, "mated: expected a 1-D"),
        ([1.0], ["a"], "nonmated: expected numbers"),
    ],
)
def test_bad_scores(mated, nonmated, match):
    with pytest.raises(CalibrationError, match=match):
        bm.tune(mated, nonmated, target_fmr=0.1)
    assert issubclass(CalibrationError, BiomatchError)


def test_bad_one_to_n_inputs():
    with pytest.raises(CalibrationError, match="mate_ranks"):
        ev.cmc(np.array([1.5, 2.0]), 3)
    with pytest.raises(CalibrationError, match="max_rank"):
        ev.cmc(np.array([1, 2]), 0)
    with pytest.raises(CalibrationError, match="mate_scores"):
        ev.fnir(np.array([1, 2]), np.array([1.0]), 0.5)
    with pytest.raises(CalibrationError, match="scores: expected shape"):
        ev.identification_from_matrix(np.zeros((2, 2)), ["a"], ["a", "b"])
    with pytest.raises(CalibrationError, match="subjects"):
        ev.subject_bootstrap_rate_ci(np.ones(4, bool), [1, 2])
