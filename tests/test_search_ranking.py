"""biomatch.search.ranking: the one candidate order of a single store and a sharded gallery."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from biomatch.errors import CalibrationError, GalleryError
from biomatch.search import ranking
from biomatch.search.ranking import Rescored, fisher_fmr, rank


class _Cal:
    """A stand-in calibration: FMR = exp(-50 * score), elementwise."""

    @staticmethod
    def fmr(scores):
        return np.exp(-50.0 * np.asarray(scores, dtype=np.float64))


def _row(gallery, subject, *scores):
    return Rescored(gallery, subject, [(p, p, s, 100 + p) for p, s in enumerate(scores, start=1)])


def test_order_is_fused_fmr_then_summed_score_gallery_subject():
    rows = [_row("b", "x", 0.10), _row("a", "y", 0.10), _row("a", "x", 0.10), _row("a", "z", 0.02, 0.02),
            _row("a", "w", 0.30)]
    got = rank(rows, _Cal(), None, 10)
    assert [(r.gallery, r.subject) for r in got][:4] == [("a", "w"), ("a", "x"), ("a", "y"), ("b", "x")]
    assert got[-1].subject == "z"  # two weak fingers: a larger fused FMR than one strong one
    assert got[0].fused == pytest.approx(math.exp(-15.0))
    assert got[-1].fused == pytest.approx(fisher_fmr(np.exp(-50.0 * np.array([0.02, 0.02]))))
    assert got[-1].score == pytest.approx(0.04)
    assert [r.subject for r in rank(rows, _Cal(), None, 2)] == ["w", "x"]


def test_threshold_in_the_fmr_domain_and_no_calibration():
    rows = [_row("a", "s1", 0.2), _row("a", "s2", 0.05), _row("a", "s3", 0.04, 0.04)]
    assert [r.subject for r in rank(rows, _Cal(), 0.05, 10)] == ["s1", "s2"]  # one finger: score >= threshold
    nan = rank(rows, None, None, 10)  # no calibration: FMRs NaN, order by summed raw score
    assert all(math.isnan(r.fused) for r in nan) and [r.subject for r in nan] == ["s1", "s3", "s2"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 30), st.lists(st.floats(0, 0.4), min_size=1, max_size=3)),
                min_size=1, max_size=25, unique_by=lambda t: (t[0], t[1])), st.randoms())
def test_rank_does_not_depend_on_row_order(items, rnd):
    rows = [_row(g, f"s{n:02d}", *scores) for g, n, scores in items]
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    key = [(r.gallery, r.subject, r.fused) for r in rank(rows, _Cal(), None, 10)]
    assert key == [(r.gallery, r.subject, r.fused) for r in rank(shuffled, _Cal(), None, 10)]


def test_argument_checks():
    assert ranking.check_max_candidates(5) == 5
    for bad in (0, 1001, True, 2.0, "3"):
        with pytest.raises(GalleryError, match="max_candidates: expected an integer 1..1000"):
            ranking.check_max_candidates(bad)
    assert ranking.search_threshold(None, [None, 0.3, 0.2], _Cal()) == 0.2  # the lowest configured
    assert ranking.search_threshold(0.5, [0.2], _Cal()) == 0.5 and ranking.search_threshold(None, [None], None) is None
    with pytest.raises(CalibrationError, match="no calibration"):
        ranking.search_threshold(0.1, [], None)
    with pytest.raises(GalleryError, match=r"threshold: raw scores lie in \[0, 1\]"):
        ranking.search_threshold(1.5, [], _Cal())
