"""`biomatch demo`: the README's first set-up command, on the shipped synthetic sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from biomatch.cli import main
from biomatch.gallery import Gallery

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "synthetic"


@pytest.fixture()
def small_sample(tmp_path):
    """Three fingers x three impressions of the shipped sample."""
    out = tmp_path / "sample"
    out.mkdir()
    for finger in (1, 2, 3):
        for imp in (1, 2, 3):
            shutil.copy(SAMPLE / f"{finger}_{imp}.png", out)
    return out


def _run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_demo_enrols_first_impressions_and_searches_the_rest(small_sample, tmp_path, capsys):
    store = tmp_path / "demo.db"
    code, out, err = _run(capsys, "demo", "--data", small_sample, "--store", store, "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["enrolled"] == 3 and res["reused"] == 0
    assert len(res["probes"]) == 6  # impressions 2 and 3 of each finger
    assert {p["mate"] for p in res["probes"]} == {"sample-1", "sample-2", "sample-3"}
    # mates of synthetic impressions of the same finger are found at rank 1
    assert res["rank1"] == 1.0
    assert all(0.0 <= p["mate_fmr"] < 1e-2 for p in res["probes"])
    with Gallery.open(store) as g:
        assert sorted(g.subjects(gallery="default")) == ["sample-1", "sample-2", "sample-3"]
        actions = [r["action"] for r in g.audit_records()]
    assert actions.count("search") == 6


def test_demo_twice_reuses_the_enrolled_subjects(small_sample, tmp_path, capsys):
    store = tmp_path / "demo.db"
    assert _run(capsys, "demo", "--data", small_sample, "--store", store)[0] == 0
    code, out, _ = _run(capsys, "demo", "--data", small_sample, "--store", store, "--json")
    assert code == 0
    res = json.loads(out)
    assert res["enrolled"] == 0 and res["reused"] == 3
    with Gallery.open(store) as g:
        assert len(g.subjects(gallery="default")) == 3


def test_demo_text_output_summarises(small_sample, tmp_path, capsys):
    code, out, _ = _run(capsys, "demo", "--data", small_sample, "--store", tmp_path / "d.db")
    assert code == 0
    assert "6 searches: rank-1 100.0 %" in out


def test_demo_missing_folder_is_one_error_line(tmp_path, capsys):
    code, out, err = _run(capsys, "demo", "--data", tmp_path / "nowhere", "--store", tmp_path / "d.db")
    assert code == 1
    assert err.count("\n") == 1 and "nowhere" in err and "no such folder" in err
    assert not (tmp_path / "d.db").exists()


def test_demo_folder_without_second_impressions(tmp_path, capsys):
    data = tmp_path / "one"
    data.mkdir()
    shutil.copy(SAMPLE / "1_1.png", data)
    code, _, err = _run(capsys, "demo", "--data", data, "--store", tmp_path / "d.db")
    assert code == 1 and "no second impressions" in err
