"""Fixtures of the micro-benchmarks (pytest-benchmark); see test_micro.py for the command."""

from __future__ import annotations

import pytest

from benchmarks.micro.workloads import Matching, Search, Sizes


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    return Sizes.from_env()


@pytest.fixture(scope="session")
def matching(sizes) -> Matching:
    return Matching(sizes)


@pytest.fixture(scope="session")
def search(sizes):
    s = Search(sizes)
    yield s
    s.close()
