"""Shared fixtures: where the reference data lives, the synthetic sample, tmp stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_data_dir() -> Path | None:
    """The real data folder: $BIOMATCH_REFERENCE_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("BIOMATCH_REFERENCE_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def reference_data() -> Path:
    path = reference_data_dir()
    if path is None:
        pytest.skip("reference data absent: set BIOMATCH_REFERENCE_DATA or place it in ../shared/data")
    return path


@pytest.fixture(scope="session")
def fvc2002(reference_data) -> Path:
    path = reference_data / "fvc2002_b"
    if not path.is_dir():
        pytest.skip(f"FVC2002 B sets absent from {reference_data}")
    return path


@pytest.fixture(scope="session")
def formats_data(reference_data) -> Path:
    path = reference_data / "formats"
    if not path.is_dir():
        pytest.skip(f"format samples absent from {reference_data}")
    return path


@pytest.fixture(scope="session")
def synthetic_sample() -> Path:
    path = REPO_ROOT / "data" / "synthetic"
    if not any(path.glob("*_*.png")):
        pytest.skip("data/synthetic sample not generated yet")
    return path
