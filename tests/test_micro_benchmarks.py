"""The micro-benchmarks (benchmarks/micro) in their quick form: every workload runs once and
gives the answers it should. Nothing is timed here (timing is the benchmarks' job)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks.micro.workloads import Matching, Search, Sizes  # noqa: E402

import biomatch as bm  # noqa: E402
from biomatch import scoring as sc  # noqa: E402


@pytest.fixture(scope="module")
def matching():
    return Matching(Sizes.quick())


def test_kernel_workload_scores_what_the_public_api_scores(matching):
    out = matching.kernel()
    assert out.shape == (len(matching.probes), len(matching.templates))
    for k, p in enumerate(matching.probes):
        np.testing.assert_array_equal(out[k], sc.score_packed(p, matching.packed_real))
    # each probe is one of the templates: its own column is the self score, the row maximum
    for k, p in enumerate(matching.probes):
        j = next(i for i, t in enumerate(matching.templates) if t is p)
        assert out[k, j] == out[k].max() > 0.5


def test_compare_many_workloads_agree(matching):
    packed, listed = matching.compare_many_packed(), matching.compare_many_list()
    assert packed.shape == (Sizes.quick().compare_many_gallery,)
    np.testing.assert_array_equal(packed, listed)
    n = min(len(matching.templates), packed.size)
    np.testing.assert_array_equal(packed[:n], matching.kernel()[0, :n])


def test_encode_workload_encodes_fresh_templates(matching):
    assert matching.encode() == sum(bm.pack([t]).offsets[1] for t in matching.to_encode) > 0


def test_search_workload_finds_mates():
    s = Search(Sizes.quick())
    try:
        assert s.fingers == Sizes.quick().search_gallery
        ranks = []
        for _ in range(len(s.probes)):
            subject, hits = s.search()
            assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
            ranks.append(next((h.rank for h in hits if h.subject == subject), None))
        assert sum(r == 1 for r in ranks) >= len(ranks) // 2
    finally:
        s.close()
