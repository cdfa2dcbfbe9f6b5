"""The main job on the embedded defaults: enrol a sample, search every probe against it.

``biomatch demo`` (and :func:`run_demo`) takes a folder of FVC-style
``FINGER_IMPRESSION`` images (default: the synthetic sample in
``data/synthetic/`` that :mod:`biomatch.synthetic` made), enrols the first
impression of every finger as one subject of a gallery in a SQLite store
(default ``./biomatch.db``), then searches every other impression against
that gallery exactly as a booking station would (``Gallery.search``, audited)
and reports where each mate ranked, with its score and estimated false match
rate. Running it twice reuses the subjects already enrolled.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from .errors import BiomatchError

__all__ = ["DEFAULT_DATA", "DemoProbe", "run_demo"]

#: The sample shipped with the repository (relative to the working directory).
DEFAULT_DATA = Path("data/synthetic")
#: Audit operator of the demo's requests.
DEMO_OPERATOR = "biomatch-demo"
#: Candidates returned per search.
DEMO_CANDIDATES = 5


@dataclass(frozen=True)
class DemoProbe:
    """Outcome of one demo search: the probe, its mate's rank (None: not in the list), the top candidate."""

    probe: str
    mate: str
    mate_rank: int | None
    mate_score: float | None
    mate_fmr: float | None
    top_subject: str | None
    top_score: float | None
    top_fmr: float | None
    mate_fmr_is_bound: bool = False  # the FMRs as a search reports them: the calibration's floor, a bound
    top_fmr_is_bound: bool = False

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


def _subject_id(sample) -> str:
    return f"{sample.db}-{sample.finger}"


def run_demo(data=DEFAULT_DATA, store="biomatch.db", *, gallery: str = "default", progress=None) -> dict:
    """Enrol the first impression of every finger of ``data`` and search all the others.

    Parameters
    ----------
    data : path-like
        Folder of ``FINGER_IMPRESSION.ext`` images (FVC layout).
    store : path-like
        SQLite gallery store, created when absent.
    gallery : str
        Gallery to enrol into and search.
    progress : callable(int), optional
        Called with 1 after each image extracted and each search.

    Returns
    -------
    dict
        ``store``, ``gallery``, ``enrolled`` (new subjects), ``reused``
        (subjects already there), ``probes`` (list of :class:`DemoProbe`
        dicts), ``rank1`` (fraction of probes whose mate ranked first),
        ``median_mate_fmr`` and ``failure_to_enrol`` (image names).
    """
    from .bench import list_dataset, extract_all
    from .gallery import Gallery

    data = Path(data)
    if not data.is_dir():
        raise BiomatchError(
            f"{data}: no such folder; run the demo from the repository root (it holds data/synthetic/) "
            "or pass --data DIR (e.g. one made by `biomatch synth images`)"
        )
    samples = list_dataset(data)
    templates, failures, _ = extract_all(samples, progress)
    failed = {f["image"] for f in failures}
    first = {}
    for s, t in zip(samples, templates):
        if s.name not in failed and _subject_id(s) not in first:
            first[_subject_id(s)] = (s, t)
    with Gallery.open(store) as g:
        present = set(g.subjects(gallery=gallery)) if gallery in g.galleries() else set()
        new = [(sid, {0: t}) for sid, (s, t) in first.items() if sid not in present]
        enrolled = g.enroll_many(new, gallery=gallery, operator=DEMO_OPERATOR) if new else 0
        enrolled_images = {s.name for s, _ in first.values()}
        probes = []
        for s, t in zip(samples, templates):
            if s.name in enrolled_images or s.name in failed:
                continue
            mate = _subject_id(s)
            cands = g.search({0: t}, galleries=[gallery], max_candidates=DEMO_CANDIDATES, operator=DEMO_OPERATOR)
            hit = next((c for c in cands if c.subject == mate), None)
            top = cands[0] if cands else None
            probes.append(DemoProbe(
                probe=s.name, mate=mate,
                mate_rank=hit.rank if hit else None,
                mate_score=float(hit.score) if hit else None,
                mate_fmr=float(hit.fmr) if hit else None,
                top_subject=top.subject if top else None,
                top_score=float(top.score) if top else None,
                top_fmr=float(top.fmr) if top else None,
                mate_fmr_is_bound=bool(hit and hit.fmr_is_bound),
                top_fmr_is_bound=bool(top and top.fmr_is_bound),
            ))
            if progress:
                progress(1)
    if not probes:
        raise BiomatchError(f"{data}: no second impressions to search (need FINGER_IMPRESSION files with 2+ impressions)")
    mate_fmrs = [p.mate_fmr for p in probes if p.mate_fmr is not None and not math.isnan(p.mate_fmr)]
    bounds = [p.mate_fmr for p in probes if p.mate_fmr_is_bound]
    median = statistics.median(mate_fmrs) if mate_fmrs else None
    return {
        "data": str(data),
        "store": str(store),
        "gallery": gallery,
        "enrolled": enrolled,
        "reused": len(first) - enrolled,
        "probes": [p.to_dict() for p in probes],
        "rank1": sum(p.mate_rank == 1 for p in probes) / len(probes),
        "median_mate_fmr": median,
        # every bound is the calibration's floor: a median at it is a bound too
        "median_mate_fmr_is_bound": bool(bounds) and median is not None and median <= max(bounds),
        "failure_to_enrol": sorted(failed),
    }
