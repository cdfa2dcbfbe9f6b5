"""One FVC dataset lister and one reference-data lookup, for biomatch.bench and benchmarks/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from biomatch import bench
from biomatch.errors import BiomatchError

sys.path.append(str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed; appended, so the installed biomatch (with its built _native) still comes first

from benchmarks import datasets  # noqa: E402


def _fvc(folder: Path, fingers=(101, 102), impressions=(1, 2, 3)) -> Path:
    folder.mkdir(parents=True)
    for f in fingers:
        for i in impressions:
            (folder / f"{f}_{i}.tif").write_bytes(b"")
    (folder / "readme.txt").write_text("not an image")
    return folder


def test_reference_data_lookup_is_the_environment_then_the_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv(bench.REFERENCE_DATA_ENV, str(tmp_path))
    assert bench.reference_data_dir() == tmp_path == datasets.reference_data_dir()
    monkeypatch.setenv(bench.REFERENCE_DATA_ENV, str(tmp_path / "missing"))
    beside = Path(bench.__file__).resolve().parents[2] / "shared" / "data"
    assert bench.reference_data_dir() == (beside if beside.is_dir() else None)


def test_one_lister_for_bench_and_benchmarks(tmp_path):
    db = _fvc(tmp_path / "fvc2002_b" / "DB2_B")
    listed = bench.list_dataset(db)
    samples = datasets.list_samples(db)
    assert [(s.db, s.finger, s.impression, s.path, s.ppi) for s in samples] == \
           [(s.db, s.finger, s.impression, s.path, s.ppi) for s in listed]
    assert [(s.finger, s.impression) for s in samples] == [(f, i) for f in (101, 102) for i in (1, 2, 3)]
    assert {s.ppi for s in samples} == {569.0} == {bench.fvc_ppi(db)}  # the one resolution table
    assert samples[0].vendor_template_path == db / "101_1.iso"
    assert datasets.list_samples(tmp_path / "fvc2002_b") == []  # the competition folder holds no images itself
    assert {s.db for s in bench.list_dataset(tmp_path / "fvc2002_b")} == {"DB2_B"}  # ... its databases do
    assert bench.fvc_ppi(tmp_path / "x" / "DB1_B") == bench.DEFAULT_PPI
    (tmp_path / "empty").mkdir()
    with pytest.raises(BiomatchError, match="no FVC-style"):
        bench.list_dataset(tmp_path / "empty")
