"""Benchmark suites behind ``biomatch bench`` and ``biomatch tune DIR``.

Datasets are FVC-style folders: ``FINGER_IMPRESSION.ext`` images (e.g.
``101_3.tif``), either directly in the folder (one database) or in its
sub-folders (several databases, e.g. ``fvc2002_b/DB1_B .. DB4_B``). A finger
number means something only inside its database, so subjects are named
``DB/FINGER``. Comparisons never cross databases.

Protocols (per database, F fingers x I impressions)
---------------------------------------------------
* genuine (both protocols): every unordered pair of impressions of a finger,
  ``F * C(I, 2)`` (FVC: 10 x 28 = 280); the lower impression is the probe.
* impostor ``fvc``: first impression of each finger against the first
  impression of every other finger, ``C(F, 2)`` (FVC: 45).
* impostor ``all``: every cross-finger pair of impressions, each unordered
  pair counted once (the matcher's score is taken with the lower
  (finger, impression) as probe): ``C(F*I, 2) - F*C(I, 2)``; for an FVC
  database ``C(80, 2) - 280 = 80 * 72 / 2 = 2,880`` (the data README's "2,800"
  undercounts: each impression has 72, not 70, impressions of other fingers).
  Symmetric pairs are counted once: the two directions of a pair are not
  independent evidence, so counting both would halve the apparent uncertainty.

Failure to enrol: an image whose extraction raises a biomatch error counts
toward ``failure_to_enrol`` and is compared as an empty template (score 0 with
every other template) -- the FVC convention that keeps the comparison count
fixed and counts the failure as errors.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import evaluation as ev
from .errors import BiomatchError, CalibrationError

__all__ = [
    "Sample",
    "ScoreSet",
    "list_dataset",
    "fvc_ppi",
    "reference_data_dir",
    "score_dataset",
    "read_scores",
    "write_scores",
    "accuracy_report",
    "identification_report",
    "speed_report",
    "compare_reports",
    "write_accuracy_outputs",
    "FNMR_AT_FMR_TARGETS",
    "json_default",
]

#: FMR targets of the "FNMR at FMR" rows (reported only when n_nonmated >= 3/target).
FNMR_AT_FMR_TARGETS = (1e-2, 1e-3, 1e-4)
#: FPIR targets of the identification suite.
FNIR_AT_FPIR_TARGETS = (1e-1, 1e-2)
#: Known resolutions of FVC databases that are not 500 ppi (from the data README).
KNOWN_PPI = {("fvc2002_b", "DB2_B"): 569.0, ("fvc2002", "DB2_A"): 569.0, ("fvc2002", "DB2_B"): 569.0}
DEFAULT_PPI = 500.0
#: Environment variable naming the reference data folder (real FVC images, format samples).
REFERENCE_DATA_ENV = "BIOMATCH_REFERENCE_DATA"
#: Subject-bootstrap replicates for the EER interval in reports.
EER_BOOTSTRAP_REPLICATES = 200

#: File names of an FVC-style database: FINGER_IMPRESSION.ext (e.g. 101_3.tif).
FVC_IMAGE_NAME = re.compile(r"^(\d+)_(\d+)\.(tif|tiff|png|bmp|jpg|jpeg|wsq)$", re.IGNORECASE)
_SUBJECT = re.compile(r"^(?P<subject>.*?\d+)_\d+(\.\w+)?$")


@dataclass(frozen=True)
class Sample:
    """One impression: database name, finger number, impression number, file, resolution."""

    db: str
    finger: int
    impression: int
    path: Path
    ppi: float

    @property
    def subject(self) -> str:
        return f"{self.db}/{self.finger}"

    @property
    def name(self) -> str:
        return f"{self.db}/{self.finger}_{self.impression}"


def reference_data_dir() -> Path | None:
    """The reference data folder: ``$BIOMATCH_REFERENCE_DATA``, else ``../shared/data`` beside a
    source checkout; None when neither is a folder (the data is never part of the package)."""
    env = os.environ.get(REFERENCE_DATA_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    return next((p for p in candidates if p.is_dir()), None)


def fvc_ppi(db_folder) -> float:
    """Resolution of an FVC database folder (``.../fvc2002_b/DB2_B``): :data:`KNOWN_PPI`, else 500."""
    db_folder = Path(db_folder)
    return KNOWN_PPI.get((db_folder.parent.name, db_folder.name), DEFAULT_PPI)


def list_dataset(folder, ppi: float | None = None) -> list[Sample]:
    """FVC-style samples in ``folder`` (or its sub-folders), sorted by db, finger, impression."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BiomatchError(f"{folder}: not a folder")
    dbs = [folder] if any(FVC_IMAGE_NAME.match(p.name) for p in folder.iterdir()) else sorted(
        p for p in folder.iterdir() if p.is_dir() and any(FVC_IMAGE_NAME.match(q.name) for q in p.iterdir())
    )
    out = []
    for db in dbs:
        db_ppi = ppi if ppi is not None else fvc_ppi(db)
        for path in db.iterdir():
            m = FVC_IMAGE_NAME.match(path.name)
            if m:
                out.append(Sample(db.name, int(m.group(1)), int(m.group(2)), path, float(db_ppi)))
    if not out:
        raise BiomatchError(f"{folder}: no FVC-style FINGER_IMPRESSION images (e.g. 101_1.tif) in it or its sub-folders")
    out.sort(key=lambda s: (s.db, s.finger, s.impression))
    return out


@dataclass
class ScoreSet:
    """Scored comparisons: one row per comparison.

    Attributes
    ----------
    probe, reference : list of str
    probe_subject, reference_subject : list of str
    score : numpy.ndarray of float64, shape (n,)
    mated : numpy.ndarray of bool, shape (n,)
    db : list of str
    """

    probe: list
    reference: list
    probe_subject: list
    reference_subject: list
    score: np.ndarray
    mated: np.ndarray
    db: list

    def split(self, db: str | None = None):
        """(mated scores, nonmated scores, mated subjects, nonmated subjects), optionally for one db."""
        keep = np.ones(self.score.size, bool) if db is None else np.array([d == db for d in self.db], bool)
        m = keep & self.mated
        n = keep & ~self.mated
        subj = np.asarray(self.probe_subject, dtype=object)
        return self.score[m], self.score[n], subj[m].astype(str), subj[n].astype(str)

    @property
    def dbs(self) -> list:
        return sorted(set(self.db))


def _pairs(samples: list[Sample], protocol: str):
    """Index pairs (probe, reference, mated) of one database under the protocol."""
    pairs = []
    for a in range(len(samples)):
        for b in range(a + 1, len(samples)):
            sa, sb = samples[a], samples[b]
            if sa.finger == sb.finger:
                pairs.append((a, b, True))
            elif protocol == "all" or (sa.impression == _first(samples, sa) and sb.impression == _first(samples, sb)):
                pairs.append((a, b, False))
    return pairs


def _first(samples, s):
    return min(x.impression for x in samples if x.finger == s.finger)


def extract_all(samples, progress=None):
    """Templates for every sample; failures become empty templates. Returns (templates, fte, times_s)."""
    import warnings

    from .extraction import extract
    from .template import MINUTIA_DTYPE, Template

    templates, failures, times = [], [], []
    for s in samples:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tpl = extract(s.path, ppi=s.ppi)
        except BiomatchError as exc:
            failures.append({"image": s.name, "error": str(exc)})
            tpl = Template(np.zeros(0, MINUTIA_DTYPE), 1, 1, s.ppi)
        times.append(time.perf_counter() - t0)
        templates.append(tpl)
        if progress:
            progress(1)
    return templates, failures, times


def score_dataset(folder, protocol: str = "all", ppi: float | None = None, progress=None):
    """Extract every image and score the protocol's comparisons.

    Parameters
    ----------
    folder : path
        FVC-style dataset folder.
    protocol : {"fvc", "all"}
    ppi : float, optional
        Resolution of every image (default: known FVC value or 500).
    progress : callable(int), optional
        Called with the number of images extracted / probes scored.

    Returns
    -------
    scores : ScoreSet
    info : dict
        ``n_images``, ``failure_to_enrol`` list, ``extract_s`` and ``compare_s`` timing lists.
    """
    from .scoring import compare_many

    if protocol not in ("fvc", "all"):
        raise BiomatchError(f"protocol: expected 'fvc' or 'all', got {protocol!r}")
    samples = list_dataset(folder, ppi)
    templates, failures, ext_times = extract_all(samples, progress)
    rows = dict(probe=[], reference=[], probe_subject=[], reference_subject=[], score=[], mated=[], db=[])
    cmp_times = []
    index = {id(s): k for k, s in enumerate(samples)}
    for db in sorted({s.db for s in samples}):
        members = [s for s in samples if s.db == db]
        by_probe: dict[int, list] = {}
        for a, b, mated in _pairs(members, protocol):
            by_probe.setdefault(a, []).append((b, mated))
        for a, refs in by_probe.items():
            pa = members[a]
            t0 = time.perf_counter()
            sc = compare_many(templates[index[id(pa)]], [templates[index[id(members[b])]] for b, _ in refs])
            cmp_times.append((time.perf_counter() - t0) / len(refs))
            for (b, mated), value in zip(refs, sc):
                pb = members[b]
                rows["probe"].append(pa.name)
                rows["reference"].append(pb.name)
                rows["probe_subject"].append(pa.subject)
                rows["reference_subject"].append(pb.subject)
                rows["score"].append(float(value))
                rows["mated"].append(bool(mated))
                rows["db"].append(db)
    scores = ScoreSet(rows["probe"], rows["reference"], rows["probe_subject"], rows["reference_subject"],
                      np.asarray(rows["score"], np.float64), np.asarray(rows["mated"], bool), rows["db"])
    info = {"n_images": len(samples), "failure_to_enrol": failures, "extract_s": ext_times,
            "compare_s": cmp_times, "templates": templates, "samples": samples}
    return scores, info


# --------------------------------------------------------------------------- scores files
_TRUE = {"1", "true", "yes", "y", "t", "mated", "genuine"}
_FALSE = {"0", "false", "no", "n", "f", "nonmated", "non-mated", "impostor"}


def _subject_of(name: str) -> str | None:
    m = _SUBJECT.match(name)
    return m.group("subject") if m else None


def _db_of(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""


def read_scores(path) -> ScoreSet:
    """Read a scores file (CSV with a header, or JSON: a list of objects or ``{"scores": [...]}``).

    Columns: ``probe``, ``reference``, ``score``, ``mated`` (1/0, true/false,
    yes/no), optional ``probe_subject``, ``reference_subject``. Without subject
    columns the subject is the probe name up to its last ``_IMPRESSION``
    (``DB1_B/101_3`` -> ``DB1_B/101``) when names follow that pattern.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read scores ({exc.strerror or exc})") from None
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise CalibrationError(f"{path}: not valid JSON ({exc})") from None
        records = doc.get("scores") if isinstance(doc, dict) else doc
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise CalibrationError(f"{path}: expected a list of {{probe, reference, score, mated}} objects")
    else:
        records = list(csv.DictReader(text.splitlines()))
    if not records:
        raise CalibrationError(f"{path}: no scores")
    missing = {"probe", "reference", "score", "mated"} - set(records[0])
    if missing:
        raise CalibrationError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    rows = dict(probe=[], reference=[], probe_subject=[], reference_subject=[], score=[], mated=[], db=[])
    for line, r in enumerate(records, start=2):
        try:
            score = float(r["score"])
        except (TypeError, ValueError):
            raise CalibrationError(f"{path}: row {line}: score {r['score']!r} is not a number") from None
        if score != score:
            raise CalibrationError(f"{path}: row {line}: score is NaN")
        mv = r["mated"]
        key = str(mv).strip().lower()
        if isinstance(mv, bool):
            mated = mv
        elif key in _TRUE:
            mated = True
        elif key in _FALSE:
            mated = False
        else:
            raise CalibrationError(f"{path}: row {line}: mated {mv!r} is not 1/0, true/false or yes/no")
        probe, ref = str(r["probe"]), str(r["reference"])
        ps = r.get("probe_subject") or _subject_of(probe)
        rs = r.get("reference_subject") or _subject_of(ref)
        rows["probe"].append(probe)
        rows["reference"].append(ref)
        rows["probe_subject"].append(ps)
        rows["reference_subject"].append(rs)
        rows["score"].append(score)
        rows["mated"].append(mated)
        rows["db"].append(r.get("db") or _db_of(probe))
    return ScoreSet(rows["probe"], rows["reference"], rows["probe_subject"], rows["reference_subject"],
                    np.asarray(rows["score"], np.float64), np.asarray(rows["mated"], bool), rows["db"])


def write_scores(scores: ScoreSet, path) -> Path:
    """Write a scores CSV readable by :func:`read_scores`."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["probe", "reference", "score", "mated", "probe_subject", "reference_subject", "db"])
        for k in range(scores.score.size):
            w.writerow([scores.probe[k], scores.reference[k], repr(float(scores.score[k])), int(scores.mated[k]),
                        scores.probe_subject[k], scores.reference_subject[k], scores.db[k]])
    return path


def has_subjects(scores: ScoreSet) -> bool:
    return all(s is not None for s in scores.probe_subject)


# --------------------------------------------------------------------------- accuracy
def _metrics(mated, nonmated, msub=None, nsub=None, bootstrap: bool = True) -> dict:
    if mated.size == 0 or nonmated.size == 0:
        raise CalibrationError("scores: need both mated and non-mated comparisons")
    e = ev.eer(mated, nonmated)
    z = ev.zero_fmr(mated, nonmated)
    out = {
        "n_mated": int(mated.size),
        "n_nonmated": int(nonmated.size),
        "eer": e.eer,
        "eer_low": e.low,
        "eer_high": e.high,
        "eer_threshold": e.threshold,
        "zero_fmr": z.fnmr,
        "zero_fmr_threshold": z.threshold,
    }
    if bootstrap and msub is not None and nsub is not None:
        out["eer_ci"] = list(ev.subject_bootstrap_ci(lambda g, i: ev.eer(g, i).eer, mated, nonmated, msub, nsub,
                                                     replicates=EER_BOOTSTRAP_REPLICATES))
    rows = []
    for target in FNMR_AT_FMR_TARGETS:
        op = ev.fnmr_at_fmr(mated, nonmated, target)
        rows.append({"target_fmr": target, "measurable": op.measurable,
                     "min_nonmated": ev.min_comparisons_for(target),
                     "threshold": op.threshold if op.measurable else None,
                     "fmr": op.fmr if op.measurable else None,
                     "fnmr": op.fnmr if op.measurable else None,
                     "false_matches": op.false_matches if op.measurable else None})
        name = {1e-2: "fmr100", 1e-3: "fmr1000", 1e-4: "fmr10000"}[target]
        out[name] = op.fnmr if op.measurable else None
    out["fnmr_at_fmr"] = rows
    return out


def accuracy_report(scores: ScoreSet, info: dict | None = None, *, protocol: str = "all", dataset: str = "") -> dict:
    """Accuracy metrics pooled over all databases and per database."""
    import biomatch

    g, i, gs, is_ = scores.split()
    subj_ok = has_subjects(scores)
    report = {
        "suite": "accuracy",
        "biomatch_version": biomatch.__version__,
        "matcher_version": _matcher_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "dataset": str(dataset),
        "protocol": protocol,
        "conventions": "accept when score >= threshold; FNMR@FMR at the smallest threshold with measured FMR <= "
                       "target, reported only when n_nonmated >= 3/target (rule of three); EER as FVC2000; "
                       "EER CI: subject bootstrap",
        **_metrics(g, i, gs if subj_ok else None, is_ if subj_ok else None),
    }
    if info is not None:
        fte = info["failure_to_enrol"]
        report["n_images"] = info["n_images"]
        report["failure_to_enrol"] = {"count": len(fte), "rate": len(fte) / max(info["n_images"], 1),
                                      "images": fte}
        report["timings"] = {
            "extract_median_ms": 1e3 * float(np.median(info["extract_s"])) if info["extract_s"] else None,
            "compare_median_us": 1e6 * float(np.median(info["compare_s"])) if info["compare_s"] else None,
        }
    if len(scores.dbs) > 1:
        report["databases"] = {}
        for db in scores.dbs:
            gd, idd, gsd, isd = scores.split(db)
            if gd.size and idd.size:
                report["databases"][db] = _metrics(gd, idd, bootstrap=False)
    return report


def _matcher_version() -> str | None:
    try:
        from .scoring import MATCHER_VERSION
    except ImportError:
        return None
    return MATCHER_VERSION


def write_accuracy_outputs(report: dict, scores: ScoreSet, out) -> dict:
    """Write report.json, report.csv, scores.csv, det.png, histogram.png into ``out``; return the paths."""
    from . import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    paths["report"] = out / "report.json"
    paths["report"].write_text(json.dumps(report, indent=2, default=json_default) + "\n")
    paths["csv"] = out / "report.csv"
    with paths["csv"].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["scope", "metric", "value"])
        scopes = [("all", report)] + list(report.get("databases", {}).items())
        for scope, m in scopes:
            for key in ("n_mated", "n_nonmated", "eer", "eer_low", "eer_high", "fmr100", "fmr1000",
                        "fmr10000", "zero_fmr"):
                w.writerow([scope, key, "" if m.get(key) is None else m[key]])
        if "failure_to_enrol" in report:
            w.writerow(["all", "failure_to_enrol_rate", report["failure_to_enrol"]["rate"]])
    paths["scores"] = write_scores(scores, out / "scores.csv")
    curves = {"all": scores.split()[:2]}
    for db in scores.dbs if len(scores.dbs) > 1 else []:
        curves[db] = scores.split(db)[:2]
    paths["det"] = plots.plot_det(curves, out / "det.png")
    g, i = curves["all"]
    paths["histogram"] = plots.plot_score_histogram(g, i, out / "histogram.png")
    return paths


def json_default(obj):
    """``json.dumps`` default for reports and CLI output: numpy scalars and arrays, paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


#: Report fields compared by --baseline: (key, label, lower is better).
BASELINE_FIELDS = (
    ("eer", "EER", True),
    ("fmr100", "FMR100", True),
    ("fmr1000", "FMR1000", True),
    ("fmr10000", "FMR10000", True),
    ("zero_fmr", "ZeroFMR", True),
)


def compare_reports(current: dict, baseline: dict) -> list[dict]:
    """Rows (metric, baseline, current, change) for the metrics both reports hold."""
    rows = []
    for key, label, lower in BASELINE_FIELDS:
        a, b = baseline.get(key), current.get(key)
        if a is None or b is None:
            continue
        rows.append({"metric": label, "baseline": a, "current": b, "change": b - a,
                     "better": (b < a) if lower else (b > a)})
    for key, label in (("extract_median_ms", "extract ms"), ("compare_median_us", "compare us")):
        a = (baseline.get("timings") or {}).get(key)
        b = (current.get("timings") or {}).get(key)
        if a and b:
            rows.append({"metric": label, "baseline": a, "current": b, "change": b - a, "better": b < a,
                         "ratio": b / a})
    fa = (baseline.get("failure_to_enrol") or {}).get("rate")
    fb = (current.get("failure_to_enrol") or {}).get("rate")
    if fa is not None and fb is not None:
        rows.append({"metric": "FTE", "baseline": fa, "current": fb, "change": fb - fa, "better": fb < fa})
    return rows


def load_report(path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BiomatchError(f"{path}: cannot read baseline report ({exc})") from None
    if not isinstance(doc, dict) or "eer" not in doc:
        raise BiomatchError(f"{path}: not a biomatch accuracy report (no 'eer')")
    return doc


# --------------------------------------------------------------------------- identification
def identification_report(folder, ppi: float | None = None, max_rank: int = 10, progress=None) -> dict:
    """Closed- and open-set identification from an FVC folder.

    Gallery: the first impression of every finger (all databases pooled, so the
    gallery size N is the total number of fingers). Probes: every other
    impression. Mated searches use the full gallery; non-mated searches use the
    gallery without the probe's mate (N-1 entries), as FRVT's open-set
    simulation does.
    """
    from .scoring import compare_many

    samples = list_dataset(folder, ppi)
    templates, failures, _ = extract_all(samples, progress)
    first = {}
    for k, s in enumerate(samples):
        if s.subject not in first or s.impression < samples[first[s.subject]].impression:
            first[s.subject] = k
    gal_idx = sorted(first.values())
    probe_idx = [k for k in range(len(samples)) if k not in set(gal_idx)]
    gallery = [templates[k] for k in gal_idx]
    matrix = np.empty((len(probe_idx), len(gal_idx)))
    for row, k in enumerate(probe_idx):
        matrix[row] = compare_many(templates[k], gallery)
    ranks, mate_scores, top_non = ev.identification_from_matrix(
        matrix, [samples[k].subject for k in probe_idx], [samples[k].subject for k in gal_idx])
    curve = ev.cmc(ranks, min(max_rank, len(gal_idx)))
    rows = []
    for target in FNIR_AT_FPIR_TARGETS:
        need = ev.min_comparisons_for(target)
        row = {"target_fpir": target, "measurable": top_non.size >= need, "min_nonmated_searches": need}
        if row["measurable"]:
            # smallest threshold (observed top score) whose FPIR <= target, same tie rule as 1:1
            cands = np.append(np.unique(top_non), np.nextafter(top_non.max(), np.inf))
            t = next(float(c) for c in cands if ev.fpir(top_non, c) <= target * (1 + 1e-12))
            row.update(threshold=t, fpir=ev.fpir(top_non, t), fnir=ev.fnir(ranks, mate_scores, t, rank=1))
        rows.append(row)
    return {
        "suite": "identification",
        "dataset": str(folder),
        "gallery_size": len(gal_idx),
        "n_mated_searches": int(ranks.size),
        "n_nonmated_searches": int(top_non.size),
        "failure_to_enrol": {"count": len(failures), "images": failures},
        "cmc": curve.tolist(),
        "rank1": float(curve[0]),
        "fnir_at_fpir": rows,
        "conventions": "rank = 1 + non-mated entries scoring strictly higher than the mate; non-mated "
                       "search = gallery without the mate; FPIR threshold = smallest top score with FPIR <= target",
    }


# --------------------------------------------------------------------------- speed
def speed_report(folder, ppi: float | None = None, n_images: int = 20, repeats: int = 5, store=None,
                 galleries=None) -> dict:
    """Median extraction time per image, comparison time per pair (compare_many, one probe vs all)
    and, with ``store``, median search time of the first probes against that gallery store."""
    from .scoring import compare_many

    samples = list_dataset(folder, ppi)[:max(2, n_images)]
    templates, failures, ext = extract_all(samples)
    per_cmp = []
    for _ in range(repeats):
        for probe in templates[:5]:
            t0 = time.perf_counter()
            compare_many(probe, templates)
            per_cmp.append((time.perf_counter() - t0) / len(templates))
    search = None
    if store is not None:
        from .gallery import Gallery

        with Gallery.open(store) as g:
            times = []
            for probe in templates[:10]:
                t0 = time.perf_counter()
                g.search({probe.position: probe}, galleries=galleries, max_candidates=10, operator="bench")
                times.append(time.perf_counter() - t0)
        search = {"store": str(store), "searches": len(times), "search_median_ms": 1e3 * float(np.median(times))}
    return {
        "search": search,
        "suite": "speed",
        "dataset": str(folder),
        "n_images": len(samples),
        "extract_median_ms": 1e3 * float(np.median(ext)),
        "compare_median_us": 1e6 * float(np.median(per_cmp)),
        "comparisons_per_s": float(1.0 / np.median(per_cmp)),
        "note": "extraction timed per image including decode; comparison = compare_many(probe, all templates) "
                "divided by the number of templates (packing included)",
    }


# --------------------------------------------------------------------------- tune / calibrate helpers
#: FMR targets listed in the operating point table of ``biomatch tune``.
TABLE_TARGETS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


def load_scores_source(source, *, protocol: str = "all", ppi: float | None = None, progress=None):
    """A scores file (CSV/JSON) or an FVC-style dataset folder (extracted and scored) -> (ScoreSet, info|None)."""
    source = Path(source)
    if source.is_dir():
        return score_dataset(source, protocol, ppi, progress)
    if not source.exists():
        raise BiomatchError(f"{source}: no such scores file or dataset folder")
    return read_scores(source), None


def tune_scores(scores: ScoreSet, *, target_fmr=None, target_fpir=None, gallery_size=None):
    """:func:`biomatch.evaluation.tune` on a ScoreSet, with subject ids when the names carry them."""
    g, i, gs, is_ = scores.split()
    kw = dict(mated_subjects=gs, nonmated_subjects=is_) if has_subjects(scores) else {}
    return ev.tune(g, i, target_fmr=target_fmr, target_fpir=target_fpir, gallery_size=gallery_size, **kw)


def operating_table(scores: ScoreSet, targets=TABLE_TARGETS) -> list[dict]:
    """One row per FMR target: the tuned threshold, or why the data cannot support it."""
    rows = []
    n = int((~scores.mated).sum())
    for target in targets:
        try:
            t = tune_scores(scores, target_fmr=target)
            rows.append({"target_fmr": target, "supported": True, **t.to_dict()})
        except CalibrationError:
            rows.append({"target_fmr": target, "supported": False, "n_nonmated": n,
                         "min_nonmated": ev.min_comparisons_for(target)})
    return rows


def write_threshold_config(threshold, path, *, source: str) -> Path:
    """Write (or update) a JSON config file's ``"threshold"`` entry with the tuned threshold and its provenance."""
    path = Path(path)
    doc = {}
    if path.exists():
        try:
            doc = json.loads(path.read_text(encoding="utf-8") or "{}")
        except ValueError as exc:
            raise BiomatchError(f"{path}: existing config is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise BiomatchError(f"{path}: existing config is not a JSON object")
    entry = threshold.to_dict()
    entry.update(source=source, matcher_version=_matcher_version(),
                 date=_dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
                 rule="accept when score >= value")
    doc["threshold"] = entry
    try:
        path.write_text(json.dumps(doc, indent=2, default=json_default) + "\n", encoding="utf-8")
    except OSError as exc:
        raise BiomatchError(f"{path}: cannot write config ({exc.strerror or exc})") from None
    return path
