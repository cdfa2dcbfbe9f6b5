"""Workloads of the micro-benchmarks: each a setup and one callable to time.

``benchmarks/micro/test_micro.py`` times them with pytest-benchmark; the CI
(``tests/test_micro_benchmarks.py``) runs each once in the quick form
(``Sizes.quick()``), without pytest-benchmark and without timing anything, to
keep them working.

Data: the real FVC2002 DB1-4_B vendor templates (ISO records beside the
images) when the reference data is present, else synthetic templates
(:func:`biomatch.synthetic.template_batch`); the 1:N search always uses a
synthetic gallery (impression 0 of each finger enrolled, impression 1 of some
searched).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


#: Fewest minutiae of a synthetic finger in the searched gallery (a gallery refuses
#: templates with too few; this keeps the workload the same whatever its limit, up to 12).
MIN_MINUTIAE = 12


@dataclass(frozen=True)
class Sizes:
    #: templates in the compare_many gallery (the issue's figure: 20,000)
    compare_many_gallery: int = 20_000
    #: fingers in the searched gallery (the issue's micro figure: 10,000)
    search_gallery: int = 10_000
    #: templates encoded per round of the descriptor benchmark
    encode_templates: int = 64

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(compare_many_gallery=300, search_gallery=200, encode_templates=4)

    @classmethod
    def from_env(cls) -> "Sizes":
        """Quick when $BIOMATCH_MICRO_QUICK is set (not empty, not 0)."""
        return cls.quick() if os.environ.get("BIOMATCH_MICRO_QUICK", "") not in ("", "0") else cls()


def reference_fvc2002() -> Path | None:
    """FVC2002 B folder of the reference data ($BIOMATCH_REFERENCE_DATA or ../shared/data), or None."""
    root = Path(__file__).resolve().parents[2]
    env = os.environ.get("BIOMATCH_REFERENCE_DATA")
    for base in ([Path(env)] if env else []) + [root.parent / "shared" / "data"]:
        if (base / "fvc2002_b" / "DB1_B").is_dir():
            return base / "fvc2002_b"
    return None


def real_templates() -> tuple[list, str]:
    """(templates, source): FVC2002 DB1-4_B vendor templates, or 320 synthetic ones when absent."""
    if reference_fvc2002() is not None:
        try:
            from benchmarks.accuracy_matching import ALL_DBS, load_templates

            out = []
            for db in ALL_DBS:
                out.extend(load_templates("fvc2002_b", db, "vendor")[0])
            return out, "fvc2002_b vendor"
        except (ImportError, OSError, SystemExit):
            pass
    return synthetic_templates(320, seed=11), "synthetic"


def synthetic_templates(n: int, seed: int) -> list:
    from biomatch.synthetic import template_batch

    out = []
    for block in template_batch(max(1, -(-n // 2)), 2, seed=seed):
        out.extend(block.templates())
    return out[:n]


class Matching:
    """1:1 workloads: the scoring kernel, descriptor encoding, compare_many on a 20,000-template gallery."""

    def __init__(self, sizes: Sizes):
        from biomatch import descriptors, scoring

        self.templates, self.source = real_templates()
        self.probes = self.templates[::40][:8]
        self.packed_real = scoring.pack(self.templates)
        # the compare_many gallery: the real templates repeated (the same objects, so each
        # is encoded once; repetition does not change the kernel's work per comparison)
        reps = -(-sizes.compare_many_gallery // len(self.templates))
        self.gallery = (self.templates * reps)[: sizes.compare_many_gallery]
        self.packed_gallery = scoring.pack(self.gallery)
        self.to_encode = [t.replace(minutiae=t.minutiae.copy()) for t in self.templates[: sizes.encode_templates]]
        self._descriptors = descriptors
        self._scoring = scoring
        self._probe_rows = [scoring._packed_one(p, "probe") for p in self.probes]
        self._index = np.arange(len(self.packed_real), dtype=np.int64)

    def kernel(self) -> np.ndarray:
        """The scoring kernel (score_batch) alone: each probe against every real template, rows packed."""
        from biomatch._scoring_kernels import score_batch

        sc, d, p = self._scoring, self._descriptors, self.packed_real
        out = np.zeros((len(self._probe_rows), len(p)))
        for k, a in enumerate(self._probe_rows):
            score_batch(
                a.bits, a.mask, a.maskx, a.geo, a.theta, a.hull_rank, a.overlap_weight, p.bits, p.mask, p.maskx,
                p.geo, p.theta, p.hull_rank, p.overlap_weight, p.offsets, self._index, d.PLANE_WORDS,
                sc._MIN_COMMON_CELLS, sc._PARAMS, sc._COMPAT_TABLES, sc._GPARAMS, out[k],
            )
        return out

    @property
    def kernel_comparisons(self) -> int:
        return len(self._probe_rows) * len(self.packed_real)

    def encode(self) -> int:
        """Descriptor encoding (MCC cylinders) of fresh templates (nothing cached on them)."""
        n = 0
        for t in self.to_encode:
            t._cache.clear()
            n += self._descriptors.encode(t).n_valid
        return n

    def compare_many_packed(self) -> np.ndarray:
        """The public fast path: compare_many against a gallery packed once (bm.pack)."""
        import biomatch as bm

        return bm.compare_many(self.probes[0], self.packed_gallery)

    def compare_many_list(self) -> np.ndarray:
        """compare_many against the list of templates (their packed rows cached on them)."""
        import biomatch as bm

        return bm.compare_many(self.probes[0], self.gallery)


class Search:
    """1:N workload: one single-finger search of a synthetic gallery of ``sizes.search_gallery`` fingers."""

    def __init__(self, sizes: Sizes):
        import biomatch as bm
        from biomatch.synthetic import template_batch

        self._tmp = tempfile.TemporaryDirectory(prefix="biomatch-micro-")
        self.store = Path(self._tmp.name) / "micro.db"
        gallery, probes = [], []
        # synthetic fingers with too few minutiae for a gallery (it refuses them) are left out,
        # with their probes; the gallery is filled up to its size with more fingers
        seed = 29
        while len(gallery) < sizes.search_gallery:
            for block in template_batch(sizes.search_gallery, 2, seed=seed):
                for k, t in enumerate(block.templates()):
                    if len(t) >= MIN_MINUTIAE:
                        (gallery if block.impression[k] == 0 else probes).append((f"s{seed}f{block.finger[k]}", t))
            seed += 1
        gallery = gallery[: sizes.search_gallery]
        enrolled = {f for f, _ in gallery}
        self.fingers = len(gallery)
        self.gallery = bm.Gallery.open(self.store)
        with warnings.catch_warnings():  # low-quality synthetic prints: warned about, enrolled
            warnings.simplefilter("ignore")
            self.gallery.enroll_many(((f, {0: t}) for f, t in gallery), gallery="micro", operator="micro")
        self.probes = [(f, t) for f, t in probes if f in enrolled][:16]
        self._next = 0
        self.search()  # index built and kernels loaded before any timing

    def search(self):
        """One search (index shortlist, rescoring, audit record) of the next probe; returns (subject, hits)."""
        finger, probe = self.probes[self._next % len(self.probes)]
        self._next += 1
        hits = self.gallery.search({0: probe}, galleries=["micro"], max_candidates=10, operator="micro")
        return finger, hits

    def close(self) -> None:
        self.gallery.close()
        self._tmp.cleanup()
