"""The booking intake benchmark's --extra-impressions run in its quick form (one synthetic subject)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # appended: the installed biomatch (with its built _native) stays first

from benchmarks import bench_sequence  # noqa: E402


def test_extra_impressions_quick_form(tmp_path, capsys):
    out = tmp_path / "extra.json"
    assert bench_sequence.main(["--extra-impressions", "--subjects", "1", "--probes", "1", "--no-fvc",
                                "--json", str(out)]) == 0
    doc = json.loads(out.read_text())["extra_impressions"]
    without, kept = doc["without"], doc["with_slap_impressions"]
    assert doc["subjects"] == 1 and doc["probes"] + doc["probes_not_extracted"] == 10
    assert without["extra_impressions"] == 0 and without["fingers"] == 10
    # the three synthetic slaps give every finger a segment; those the gate accepts are kept
    assert 0 < kept["extra_impressions"] <= 10 and kept["fingers"] == 10 + kept["extra_impressions"]
    for r in (without, kept):
        assert 0.0 <= r["hit_rate_at_fmr"] <= 1.0 and 0.0 <= r["rank1_hit_rate"] <= 1.0
    # the same probes against the same subjects: a kept impression can only raise a mate's score
    assert kept["mate_score_mean"] >= without["mate_score_mean"]
