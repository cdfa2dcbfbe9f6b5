"""biomatch.calibration: fit, monotonicity, tail continuation, inverse, JSON round trip and validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import biomatch as bm
from biomatch import calibration as calmod
from biomatch.calibration import Calibration, fmr_from_fpir, fpir_from_fmr
from biomatch.errors import CalibrationError


@pytest.fixture(scope="module")
def gamma_cal():
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 5.0, 5000)
    return scores, Calibration.fit(scores, source="synthetic gamma(2, 5)", matcher_version="test-1",
                                   date="2026-01-01T00:00:00+00:00")


def test_fit_metadata(gamma_cal):
    scores, cal = gamma_cal
    assert cal.matcher_version == "test-1"
    assert cal.metadata["n_scores"] == 5000 and cal.metadata["source"] == "synthetic gamma(2, 5)"
    assert cal.metadata["date"] == "2026-01-01T00:00:00+00:00"
    assert cal.tail_probability == pytest.approx(0.05, abs=1e-3)
    assert bm.Calibration is Calibration


def test_fmr_follows_empirical_survival_in_body(gamma_cal):
    scores, cal = gamma_cal
    for q in (0.9, 0.5, 0.2, 0.1):
        t = np.quantile(scores, 1 - q)
        assert cal.fmr(t) == pytest.approx(np.mean(scores >= t), abs=2e-3)


def test_tail_continues_below_one_over_n(gamma_cal):
    scores, cal = gamma_cal
    top = scores.max()
    assert 0 < cal.fmr(top) < 10 / scores.size
    assert 0 < cal.fmr(top * 2) < cal.fmr(top)
    # gamma(2, 5) survival at large t: compare the tail estimate with the truth within a factor 5
    from scipy import stats

    for t in (45.0, 60.0):
        truth = stats.gamma(2.0, scale=5.0).sf(t)
        assert truth / 5 < cal.fmr(t) < truth * 5


def test_monotone_vectorised(gamma_cal):
    scores, cal = gamma_cal
    x = np.linspace(scores.min() - 5, scores.max() * 3, 20001)
    f = cal.fmr(x)
    assert f.shape == x.shape and f.dtype == np.float64
    assert np.all(np.diff(f) <= 0) and f[0] == 1.0 and np.all(f > 0)
    u = cal.tail_threshold
    # at u the estimate steps from #{s >= u}/n to #{s > u}/n: the empirical step of the tie at u
    assert cal.fmr(u) == pytest.approx(np.mean(scores >= u))
    assert cal.fmr(np.nextafter(u, np.inf)) == pytest.approx(np.mean(scores > u))
    assert isinstance(cal.fmr(3.0), float)
    assert np.isnan(cal.fmr(np.array([np.nan]))[0])


@settings(max_examples=30, deadline=None)
@given(st.floats(1e-7, 0.99))
def test_threshold_for_inverts_fmr(target):
    cal = _cached_cal()
    t = cal.threshold_for(target)
    assert cal.fmr(t) <= target * (1 + 1e-9)
    # smallest such score: slightly below it the FMR is above the target (or flat at the target)
    assert cal.fmr(t - 1e-6 * max(1.0, abs(t))) >= target * (1 - 1e-6)


_CAL = []


def _cached_cal():
    if not _CAL:
        rng = np.random.default_rng(2)
        _CAL.append(Calibration.fit(rng.normal(0, 1, 3000), source="normal", matcher_version="t"))
    return _CAL[0]


def test_heavy_tail_shape_fitted():
    rng = np.random.default_rng(3)
    cal = Calibration.fit(rng.pareto(3.0, 20000), source="pareto", matcher_version="t")
    assert 0.15 < cal.tail_shape < 0.6  # true shape 1/3


def test_bounded_tail_clipped_to_exponential():
    rng = np.random.default_rng(4)
    cal = Calibration.fit(rng.uniform(0, 1, 5000), source="uniform", matcher_version="t")
    assert cal.tail_shape == 0.0 and cal.fmr(1.5) > 0  # never claims FMR 0


def test_integer_scores_with_ties():
    # bozorth-like integer scores: many ties, the tail threshold moves down to keep enough exceedances
    rng = np.random.default_rng(5)
    scores = np.round(rng.gamma(2.0, 5.0, 3000))
    cal = Calibration.fit(scores, source="integers", matcher_version="t")
    assert cal.metadata["n_exceedances"] >= 150
    assert np.sum(scores > cal.tail_threshold) == cal.metadata["n_exceedances"]
    for t in (5.0, 10.0, 20.0):
        assert cal.fmr(t) == pytest.approx(np.mean(scores >= t), abs=0.03)
    x = np.linspace(0, 100, 5001)
    assert np.all(np.diff(cal.fmr(x)) <= 0)


def test_json_round_trip_and_file(tmp_path, gamma_cal):
    _, cal = gamma_cal
    again = Calibration.from_json(cal.to_json())
    assert again == cal
    x = np.linspace(0, 80, 500)
    np.testing.assert_array_equal(again.fmr(x), cal.fmr(x))
    path = cal.save(tmp_path / "cal.json")
    assert Calibration.load(path) == cal
    doc = json.loads(path.read_text())
    assert doc["format"] == "biomatch-calibration" and doc["format_version"] == 1


def _broken(doc, path, value):
    doc = json.loads(json.dumps(doc))
    obj = doc
    for key in path[:-1]:
        obj = obj[key]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    "path,value,match",
    [
        (("format",), "other", "format"),
        (("format_version",), 99, "format_version"),
        (("matcher_version",), "", "matcher_version"),
        (("fit", "n_scores"), KeyError, "fit.n_scores"),
        (("fit", "date"), 5, "fit.date"),
        (("body", "scores"), "x", "body.scores"),
        (("body", "fmr"), [0.5], "equal length"),
        (("tail", "scale"), -1.0, "tail.scale"),
        (("tail", "shape"), -0.2, "tail.shape"),
        (("tail", "probability"), 2.0, "tail.probability"),
        (("tail", "threshold"), float("nan"), "tail.threshold"),
        (("tail",), KeyError, "tail"),
    ],
)
def test_from_dict_validation(gamma_cal, path, value, match):
    _, cal = gamma_cal
    with pytest.raises(CalibrationError, match=match):
        Calibration.from_dict(_broken(cal.to_dict(), path, value))


def test_validation_of_order(gamma_cal):
    _, cal = gamma_cal
    doc = cal.to_dict()
    doc["body"]["scores"] = doc["body"]["scores"][::-1]
    with pytest.raises(CalibrationError, match="strictly increasing"):
        Calibration.from_dict(doc)
    doc = cal.to_dict()
    doc["body"]["fmr"][0], doc["body"]["fmr"][1] = 0.5, 1.0
    with pytest.raises(CalibrationError, match="non-increasing"):
        Calibration.from_dict(doc)
    with pytest.raises(CalibrationError, match="not valid JSON"):
        Calibration.from_json("{nope")
    with pytest.raises(CalibrationError, match="cannot read"):
        Calibration.load("/nonexistent/cal.json")


@pytest.mark.parametrize(
    "scores,kw,match",
    [
        (np.arange(50.0), {}, "at least 100"),
        (np.r_[np.arange(200.0), np.nan], {}, "NaN"),
        (np.r_[np.zeros(990), np.ones(10)], {}, "tail"),
        (np.arange(200.0), {"source": ""}, "source"),
        (np.arange(200.0), {"matcher_version": ""}, "matcher_version"),
    ],
)
def test_fit_refuses_bad_input(scores, kw, match):
    args = {"source": "s", "matcher_version": "m", **kw}
    with pytest.raises(CalibrationError, match=match):
        Calibration.fit(scores, **args)


def test_threshold_for_bad_input(gamma_cal):
    _, cal = gamma_cal
    for bad in (0.0, -1.0, 1.5, "x", float("nan")):
        with pytest.raises(CalibrationError, match="fmr"):
            cal.threshold_for(bad)


def test_fpir_conversion():
    assert fpir_from_fmr(1e-6, 1000) == pytest.approx(1 - (1 - 1e-6) ** 1000, rel=1e-12)
    assert fmr_from_fpir(fpir_from_fmr(1e-5, 5000), 5000) == pytest.approx(1e-5, rel=1e-9)
    np.testing.assert_allclose(fpir_from_fmr(np.array([0.0, 1.0]), 10), [0.0, 1.0])
    with pytest.raises(CalibrationError, match="gallery_size"):
        fpir_from_fmr(0.1, 0)
    cal = _cached_cal()
    t = cal.threshold_for_fpir(0.01, 100)
    assert cal.fpir(t, 100) == pytest.approx(0.01, rel=1e-6)


def test_default_calibration_absent_or_present(tmp_path, monkeypatch):
    monkeypatch.setattr(calmod, "DEFAULT_CALIBRATION_PATH", tmp_path / "missing.json")
    with pytest.raises(CalibrationError, match="no default calibration"):
        calmod.default_calibration()
    cal = _cached_cal()
    cal.save(tmp_path / "default.json")
    monkeypatch.setattr(calmod, "DEFAULT_CALIBRATION_PATH", tmp_path / "default.json")
    assert calmod.default_calibration() == cal


def test_shipped_default_calibration_is_valid():
    if not calmod.DEFAULT_CALIBRATION_PATH.exists():
        pytest.skip("biomatch/data/calibration_default.json not shipped yet")
    cal = calmod.default_calibration()
    x = np.linspace(cal.body_scores[0], cal.tail_threshold * 3 + 1, 1000)
    assert np.all(np.diff(cal.fmr(x)) <= 0)


# ---------------------------------------------------------------------------
# the FMR bound: no reported FMR below what the calibration supports
# ---------------------------------------------------------------------------
def test_fmr_floor_follows_the_scores_and_the_tail_check(gamma_cal):
    scores, cal = gamma_cal
    check = cal.metadata["tail_check"]
    assert check["test"] == "Kolmogorov-Smirnov" and check["exceedances"] == cal.metadata["n_exceedances"]
    assert cal.tail_validated is check["valid"] is True  # gamma exceedances are what a GPD describes
    assert cal.fmr_floor == pytest.approx(1 / (calmod.TAIL_EXTRAPOLATION_FACTOR * 5000))
    # a tail the model plainly does not describe (two tight clusters of exceedances) is not validated: 1/n
    rng = np.random.default_rng(4)
    body = rng.uniform(0, 1, 4000)
    tail = np.concatenate([rng.normal(2.0, 0.001, 150), rng.normal(9.0, 0.001, 50)])
    bad = Calibration.fit(np.concatenate([body, tail]), source="bimodal", matcher_version="t")
    assert not bad.tail_validated and bad.fmr_floor == pytest.approx(1 / 4200)
    # too few exceedances to validate, whatever the test says
    small = Calibration.fit(rng.gamma(2.0, 5.0, 300), source="small", matcher_version="t")
    assert small.metadata["n_exceedances"] < calmod.MIN_VALIDATED_EXCEEDANCES and not small.tail_validated
    assert small.fmr_floor == pytest.approx(1 / 300)


def test_a_calibration_without_tail_check_is_bounded_at_one_over_n(gamma_cal):
    _, cal = gamma_cal
    doc = cal.to_dict()
    del doc["fit"]["tail_check"]
    old = Calibration.from_dict(doc)
    assert not old.tail_validated and old.fmr_floor == pytest.approx(1 / 5000)
    # the check survives the JSON round trip
    assert Calibration.from_json(cal.to_json()).fmr_floor == cal.fmr_floor


@settings(max_examples=60, deadline=None)
@given(n=st.integers(100, 3000), seed=st.integers(0, 10_000),
       scores=st.lists(st.floats(-1e3, 1e6, allow_nan=False), min_size=1, max_size=20))
def test_no_reported_fmr_is_below_the_floor(n, seed, scores):
    """Property: whatever the impostor sample and the scores asked about, a reported FMR is
    >= the floor; it is flagged as a bound exactly where the estimate was below it."""
    rng = np.random.default_rng(seed)
    cal = Calibration.fit(rng.gamma(2.0, 5.0, n), source="prop", matcher_version="t")
    est = np.asarray(cal.fmr(scores))
    got, is_bound = cal.bounded_fmr(scores)
    assert np.all(got >= cal.fmr_floor)
    np.testing.assert_array_equal(is_bound, est < cal.fmr_floor)
    np.testing.assert_array_equal(got[~is_bound], est[~is_bound])
    one, one_bound = cal.bounded_fmr(float(scores[0]))
    assert isinstance(one, float) and one >= cal.fmr_floor and one_bound == bool(est[0] < cal.fmr_floor)


def test_nan_stays_nan_and_is_no_bound(gamma_cal):
    _, cal = gamma_cal
    v, b = cal.bounded_fmr(float("nan"))
    assert v != v and b is False


def test_verify_reports_the_default_calibrations_bound():
    """Match.fmr is never below the default calibration's floor; a print against itself says it is a bound."""
    from biomatch.template import MINUTIA_DTYPE, Template

    rng = np.random.default_rng(3)
    floor = calmod.default_calibration().fmr_floor

    def random_template(n=40):
        m = np.zeros(n, dtype=MINUTIA_DTYPE)
        m["x"], m["y"] = rng.uniform(40, 260, n), rng.uniform(40, 360, n)
        m["angle"], m["type"], m["quality"] = rng.uniform(0, 2 * np.pi, n), 1, 60
        return Template(m, 300, 400, 500.0, 1, 60)

    t = random_template()
    same = bm.verify(t, t)
    assert same.fmr_is_bound and same.fmr == pytest.approx(floor)
    assert same.to_dict()["fmr_is_bound"] is True
    assert calmod.format_fmr(same.fmr, same.fmr_is_bound).startswith("<= ")
    for _ in range(5):
        r = bm.verify(t, random_template())
        assert r.fmr >= floor and r.fmr_is_bound == (r.fmr == floor)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000),
       subjects=st.lists(st.lists(st.floats(0.0, 50.0, allow_nan=False), min_size=1, max_size=4), min_size=1, max_size=6))
def test_no_candidate_reports_an_fmr_below_the_floor(seed, subjects):
    """Property: the one ranking (single store and sharded gallery) reports no per-finger or fused FMR
    below the calibration's floor; a bound is flagged, and its FPIR is that of the floor."""
    from biomatch.search import ranking

    rng = np.random.default_rng(seed)
    cal = Calibration.fit(rng.gamma(2.0, 5.0, 500), source="prop", matcher_version="t")
    rescored = [ranking.Rescored("g", f"s{i}", [(p, p, s, None) for p, s in enumerate(scores)])
                for i, scores in enumerate(subjects)]
    ranked = ranking.rank(rescored, cal, None, 10)
    cands = ranking.candidates(ranked, len(subjects), [[()] * len(r.per) for r in ranked], cal=cal)
    floor = cal.fmr_floor
    for c, r in zip(cands, ranked):
        assert c.fmr >= floor and c.fmr_is_bound == (r.fused < floor)
        assert c.fpir == pytest.approx(fpir_from_fmr(c.fmr, len(subjects)))
        assert c.to_dict()["fmr_is_bound"] is c.fmr_is_bound
        for f, est in zip(c.fingers, r.fmrs):
            assert f.fmr >= floor and f.fmr_is_bound == (est < floor)
    # without a calibration nothing is bounded (NaN stays NaN)
    bare_ranked = ranking.rank(rescored, None, None, 10)
    bare = ranking.candidates(bare_ranked, len(subjects), [[()] * len(r.per) for r in bare_ranked], cal=None)
    assert all(c.fmr != c.fmr and not c.fmr_is_bound for c in bare)
