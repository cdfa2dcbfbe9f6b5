"""Micro-benchmarks (pytest-benchmark): the scoring kernel, descriptor encoding, compare_many on
20,000 templates, one search of a 10,000-finger gallery.

Run from the repository root (numba on one thread, as the issue's figures are per core)::

    NUMBA_NUM_THREADS=1 python -m pytest benchmarks/micro --benchmark-storage=benchmarks/baselines \\
        --benchmark-timer=time.process_time --benchmark-compare --benchmark-group-by=name

``--benchmark-compare`` compares with the newest run saved under
``benchmarks/baselines/<machine>/`` (``--benchmark-compare=0001`` a given
one); ``--benchmark-autosave`` saves this run there. Figures per operation
are in ``extra_info`` (comparisons/s). With ``time.process_time`` the
times are the process's CPU seconds (all its threads), which load on a
shared machine inflates far less than wall clock; baseline 0001 was saved in
wall clock, 0002 in CPU time.
``BIOMATCH_MICRO_QUICK=1`` shrinks every workload (what the CI runs, through
tests/test_micro_benchmarks.py, without timing).
"""

from __future__ import annotations

import os


def _info(benchmark, **kv):
    benchmark.extra_info.update(kv, load_average_1min=round(os.getloadavg()[0], 2))


def test_scoring_kernel(benchmark, matching):
    """score_batch over packed rows: 8 probes x every FVC2002 B vendor template (320)."""
    benchmark.pedantic(matching.kernel, rounds=7, warmup_rounds=1)
    _info(benchmark, comparisons=matching.kernel_comparisons, source=matching.source,
          comparisons_per_s=round(matching.kernel_comparisons / benchmark.stats.stats.median))


def test_descriptor_encoding(benchmark, matching):
    """MCC cylinders of fresh templates (done once per template at enrolment)."""
    benchmark.pedantic(matching.encode, rounds=5, warmup_rounds=1)
    _info(benchmark, templates=len(matching.to_encode),
          ms_per_template=round(1000 * benchmark.stats.stats.median / len(matching.to_encode), 3))


def test_compare_many_packed(benchmark, matching):
    """bm.compare_many(probe, bm.pack(gallery)): the gallery packed once, reused."""
    benchmark.pedantic(matching.compare_many_packed, rounds=5, warmup_rounds=1)
    n = len(matching.gallery)
    _info(benchmark, gallery=n, source=matching.source, comparisons_per_s=round(n / benchmark.stats.stats.median))


def test_compare_many_list(benchmark, matching):
    """bm.compare_many(probe, [templates]): rows cached on the templates, concatenated per call."""
    benchmark.pedantic(matching.compare_many_list, rounds=5, warmup_rounds=1)
    n = len(matching.gallery)
    _info(benchmark, gallery=n, source=matching.source, comparisons_per_s=round(n / benchmark.stats.stats.median))


def test_search_single_finger(benchmark, search):
    """Gallery.search of one finger (shortlist, rescoring, audit record) on a synthetic gallery."""
    benchmark.pedantic(search.search, rounds=15, warmup_rounds=2)
    _info(benchmark, fingers=search.fingers, ms=round(1000 * benchmark.stats.stats.median, 2))
