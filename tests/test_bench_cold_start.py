"""The cold-start benchmark runs in its quick form and reports every case (no timing asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed; appended, so the installed biomatch (with its built _native) still comes first
from benchmarks import bench_cold_start  # noqa: E402


def test_quick_run_reports_every_case(tmp_path, capsys):
    if not bench_cold_start.DEFAULT_IMAGE.is_file():
        pytest.skip(f"{bench_cold_start.DEFAULT_IMAGE} absent (../shared/data not mounted)")
    out = tmp_path / "cold.json"
    assert bench_cold_start.main(["--runs", "1", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    for key in ("python_s", "import_s", "import_scipy_ndimage_s", "import_extract_s"):
        assert summary[key] > 0
    assert summary["import_extract_s"] > summary["import_s"]


def test_bad_runs_is_refused_naming_the_option():
    with pytest.raises(SystemExit):
        bench_cold_start.main(["--runs", "0"])
