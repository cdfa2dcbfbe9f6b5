"""Booking intake benchmark: slap segmentation accuracy, sequence-check detection and time per ten-print.

    python benchmarks/bench_sequence.py [--slaps 60] [--subjects 3] [--all-swaps] [--segmentation-only] [--json OUT]
    python benchmarks/bench_sequence.py --extra-impressions [--subjects 3] [--probes 3] [--no-fvc] [--json OUT]

1. Segmentation: synthetic slaps (right four, left four, both thumbs in turn;
   slap k of subject k // 3; master fingers 300x400 px at 500 ppi), hand tilt
   uniform in +-20 degrees, gaps between fingertips 20-60 px (seed 0: the
   default 60 slaps are always the same 200 fingers); a finger is within
   tolerance when every corner of its box is within 15 px of the truth box's
   (the contact area, see biomatch.synthetic_slap).
2. Sequence check: constructed ten-print transactions (Type-14 PNG records
   via write_image_transaction): rolled boxes 1-10 and slaps 13/14/15 of
   the same fingers, other impressions. Subjects: synthetic (rolled =
   another impression of the master finger) and real ones made of an FVC
   "B" database (its fingers 101-110 are positions 1-10, impression 1 the
   rolled box, impression 2 the plain fingertip composed into the slaps:
   pairs of different impressions, areas and distortions). For each: the
   unswapped card (a "fail" is a false alarm), every swap of neighbouring
   boxes of one hand and of the thumbs (or, with --all-swaps, every pair on
   one hand), and the hand swap (1-5 <-> 6-10). A swap is detected when the
   transaction verdict is "fail".
3. Time: wall time of bm.sequence_check per transaction (reading, segmenting
   three slaps, extracting 20 prints, matching), on this machine's cores.

--extra-impressions (instead of 1-3): the hit rate of later searches with and
without the slap segments kept as extra impressions. Every subject (the
synthetic ones and, with the shared data, one per FVC "B" database of
EXTRA_FVC_SETS, made as for the sequence check: impression 1 rolled,
impression 2 in the slaps) is enrolled from its ten-print card with
Gallery.enroll_transaction(override=True), once without and once with
keep_slap_impressions, into two stores of the same subjects. Probes are
single fingers, position known, of other impressions: FVC impressions 3 ..
2 + --probes, synthetic impressions 1 .. --probes (the rolled box is 8, the
slap 0). Reported per store: rank-1 hit rate (the mate first), the hit rate
at a calibrated FMR (the mate's fused FMR at most HIT_FMR, under the
store's default calibration, corrected for the best of k impressions), and
the mean mate score.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import biomatch as bm  # noqa: E402
from biomatch.formats import write_image_transaction  # noqa: E402
from biomatch.slap import SLAP_FINGERS, segment_slap  # noqa: E402
from biomatch.synthetic_slap import compose_slap, make_slap, rolled_print  # noqa: E402

TOLERANCE_PX = 15.0
#: The FVC "B" databases a ten-print subject is made of for --extra-impressions (one subject each), with their resolution.
EXTRA_FVC_SETS = (("fvc2002_b", "DB1_B", 500.0), ("fvc2002_b", "DB2_B", 569.0), ("fvc2002_b", "DB3_B", 500.0),
                  ("fvc2002_b", "DB4_B", 500.0), ("fvc2000_b", "DB1_B", 500.0), ("fvc2000_b", "DB2_B", 500.0),
                  ("fvc2000_b", "DB3_B", 500.0), ("fvc2000_b", "DB4_B", 500.0))
#: Fused FMR at or below which a mate counts as a hit for --extra-impressions' "hit rate at FMR".
HIT_FMR = 1e-4
FVC_SETS = (("fvc2002_b", "DB1_B", 500.0), ("fvc2002_b", "DB3_B", 500.0), ("fvc2000_b", "DB1_B", 500.0),
            ("fvc2000_b", "DB3_B", 500.0))


def segmentation_accuracy(n_slaps: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    errors, found, total = [], 0, 0
    for k in range(n_slaps):
        position = (13, 14, 15)[k % 3]
        # seed 0 is the development set; other seeds draw other subjects and noise (held-out sets)
        slap = make_slap(k // 3 + 1000 * seed, position, tilt_deg=float(rng.uniform(-20, 20)),
                         gap_px=float(rng.uniform(20, 60)), noise_seed=k + 1000 * seed)
        seg = segment_slap(slap.pixels, position, slap.ppi, extract=False)
        for p, truth in slap.boxes.items():
            total += 1
            s = seg.segment(p)
            if s is None:
                errors.append(np.inf)
                continue
            found += 1
            errors.append(float(np.abs(s.box.corners() - truth.corners()).max()))
    e = np.array(errors)
    return {"slaps": n_slaps, "fingers": total, "found": found, "within_15px": float(np.mean(e <= TOLERANCE_PX)),
            "corner_error_px_median": float(np.median(e)), "corner_error_px_p90": float(np.percentile(e, 90))}


def _swaps(all_swaps: bool) -> list:
    hands = ((2, 3, 4, 5), (7, 8, 9, 10))
    pairs = [(1, 6)]
    for h in hands:
        pairs += list(itertools.combinations(h, 2)) if all_swaps else list(zip(h, h[1:]))
    return pairs


def _card(rolled: dict, slaps: dict, ppi: float) -> bytes:
    images = [{"position": f, "pixels": rolled[f], "ppi": ppi, "impression": 1} for f in sorted(rolled)]
    images += [{"position": p, "pixels": px, "ppi": ppi} for p, px in sorted(slaps.items())]
    return write_image_transaction(images, ori="BENCH", tcn="SEQ")


def synthetic_subject(subject: int):
    slaps = {p: make_slap(100 + subject, p, tilt_deg=float(6 * (subject % 3) - 6), gap_px=35.0).pixels for p in (13, 14, 15)}
    rolled = {f: rolled_print(100 + subject, f) for f in range(1, 11)}
    return f"synthetic-{subject}", rolled, slaps, 500.0


def fvc_subject(data: Path, year: str, db: str, ppi: float):
    from PIL import Image

    folder = data / year / db
    rolled = {f: np.asarray(Image.open(folder / f"{100 + f}_1.tif").convert("L")) for f in range(1, 11)}
    plain = {f: np.asarray(Image.open(folder / f"{100 + f}_2.tif").convert("L")) for f in range(1, 11)}
    slaps = {p: compose_slap({f: plain[f] for f in SLAP_FINGERS[p]}, p, tilt_deg=5.0, gap_px=30.0)[0] for p in (13, 14, 15)}
    return f"{year}/{db}", rolled, slaps, ppi


def sequence_detection(subjects, all_swaps: bool) -> dict:
    times, rows = [], []
    for name, rolled, slaps, ppi in subjects:
        cases = [("none", rolled)]
        for a, b in _swaps(all_swaps):
            cases.append((f"swap {a}-{b}", {**rolled, a: rolled[b], b: rolled[a]}))
        cases.append(("hands", {f: rolled[f + 5] if f <= 5 else rolled[f - 5] for f in range(1, 11)}))
        for label, boxes in cases:
            data = _card(boxes, slaps, ppi)
            t0 = time.perf_counter()
            check = bm.sequence_check(data)
            times.append(time.perf_counter() - t0)
            rows.append({"subject": name, "case": label, "verdict": check.verdict,
                         "swapped": [(b.position, b.swapped_with) for b in check.boxes if b.verdict == "swapped"],
                         "matched": sum(b.verdict == "match" for b in check.boxes)})
            print(f"{name:22s} {label:10s} {check.verdict:11s} matched {rows[-1]['matched']:2d} "
                  f"swapped {rows[-1]['swapped']}  {times[-1]:.2f} s", flush=True)
    clean = [r for r in rows if r["case"] == "none"]
    singles = [r for r in rows if r["case"].startswith("swap")]
    hands = [r for r in rows if r["case"] == "hands"]
    return {
        "transactions": len(rows),
        "false_alarms": sum(r["verdict"] == "fail" for r in clean), "unswapped": len(clean),
        "single_swaps_detected": sum(r["verdict"] == "fail" for r in singles), "single_swaps": len(singles),
        "hand_swaps_detected": sum(r["verdict"] == "fail" for r in hands), "hand_swaps": len(hands),
        "unswapped_matched_boxes_mean": float(np.mean([r["matched"] for r in clean])) if clean else None,
        "seconds_per_transaction_median": float(np.median(times)), "seconds_per_transaction_max": float(np.max(times)),
        "rows": rows,
    }


def fvc_probes(data: Path, year: str, db: str, ppi: float, n: int) -> list:
    """(subject, position, image, ppi) of impressions 3 .. 2 + n of an FVC "B" database's fingers."""
    from PIL import Image

    folder = data / year / db
    return [(f"{year}/{db}", f, np.asarray(Image.open(folder / f"{100 + f}_{k}.tif").convert("L")), ppi)
            for f in range(1, 11) for k in range(3, 3 + n)]


def synthetic_probes(subject: int, n: int) -> list:
    """(subject, position, image, ppi) of impressions 1 .. n of a synthetic subject's fingers."""
    return [(f"synthetic-{subject}", f, rolled_print(100 + subject, f, impression=k), 500.0)
            for f in range(1, 11) for k in range(1, 1 + n)]


def _hit_rates(rows) -> dict:
    n = max(len(rows), 1)
    return {"probes": len(rows), "rank1_hits": sum(r[1] for r in rows), "rank1_hit_rate": sum(r[1] for r in rows) / n,
            "hit_rate_at_fmr": sum(r[2] for r in rows) / n,
            "mate_score_mean": float(np.mean([r[3] for r in rows])) if rows else None}


def extra_impressions(subjects, probes, store_dir: Path) -> dict:
    """Hit rates of single-finger probes with and without the slap segments kept as extra impressions."""
    from biomatch.errors import TemplateError

    templates, skipped = [], 0
    for name, pos, pixels, ppi in probes:
        try:
            templates.append((name, pos, bm.extract(pixels, ppi=ppi, position=pos)))
        except TemplateError:
            skipped += 1
    out = {"subjects": len(subjects), "probes": len(templates), "probes_not_extracted": skipped, "hit_fmr": HIT_FMR}
    for keep in (False, True):
        label = "with_slap_impressions" if keep else "without"
        t0 = time.perf_counter()
        with bm.Gallery.open(store_dir / f"{label}.db") as g:
            for name, rolled, slaps, ppi in subjects:
                g.enroll_transaction(name, _card(rolled, slaps, ppi), override=True, keep_original=False,
                                     keep_slap_impressions=keep, operator="bench")
            stats = g.stats()["galleries"]["default"]
            rows = []  # (kind, rank-1 hit, hit at HIT_FMR, mate score)
            for name, pos, t in templates:
                found = g.search({pos: t}, max_candidates=len(subjects), operator="bench")
                mate = next((c for c in found if c.subject == name), None)
                rows.append(("synthetic" if name.startswith("synthetic") else "fvc", bool(found) and found[0].subject == name,
                             mate is not None and mate.fmr <= HIT_FMR, mate.score if mate is not None else 0.0))
        out[label] = {"fingers": stats["fingers"], "extra_impressions": stats["extra_impressions"],
                      **_hit_rates(rows), "seconds": round(time.perf_counter() - t0, 1)}
        for kind in ("synthetic", "fvc"):
            part = [r for r in rows if r[0] == kind]
            if part:
                out[label][kind] = _hit_rates(part)
        print(label, json.dumps(out[label]), flush=True)
    return out


def plot_real_slaps(path: Path, data: Path) -> None:
    """Draw the boxes segment_slap finds on the shared real slaps (type4-slaps.an2k) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tx = bm.read_transaction(data / "formats" / "libbiomeval_test_data" / "type4-slaps.an2k")
    images = sorted(tx.images, key=lambda im: (im.position not in (13, 14), im.position))
    widths = [im.width for im in images]
    fig, axes = plt.subplots(1, len(images), figsize=(18, 4.2), gridspec_kw={"width_ratios": widths})
    for ax, im in zip(axes, images):
        seg = segment_slap(im, 0)
        ax.imshow(im.pixels, cmap="gray", vmin=0, vmax=255)
        for s in seg.segments:
            k = np.vstack([s.box.corners(), s.box.corners()[:1]])
            ax.plot(k[:, 0], k[:, 1], "-", color="red", lw=1.5)
            ax.text(s.box.cx, s.box.cy, f"{s.position}\nq{s.quality} m{len(s.template) if s.template else 0}",
                    color="red", fontsize=9, ha="center", va="center", weight="bold")
        ax.set_title(f"slap {im.position}: tilt {seg.tilt_deg:.1f} deg, missing {list(seg.missing) or 'none'}", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slaps", type=int, default=60, help="synthetic slaps for the segmentation accuracy (60: 200 fingers)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic slap set: 0 the development set, others held out")
    ap.add_argument("--segmentation-only", action="store_true", help="only the segmentation accuracy")
    ap.add_argument("--subjects", type=int, default=3, help="synthetic ten-print subjects")
    ap.add_argument("--no-fvc", action="store_true", help="skip the FVC-made subjects")
    ap.add_argument("--all-swaps", action="store_true", help="every pair of boxes on one hand, not only neighbours")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--plot-real", type=Path, help="only draw the segmentation of the shared real slaps into this PNG")
    ap.add_argument("--extra-impressions", action="store_true",
                    help="only the hit rates with and without slap segments kept as extra impressions")
    ap.add_argument("--probes", type=int, default=3, help="--extra-impressions: probe impressions per finger")
    args = ap.parse_args(argv)
    data = Path(os.environ.get("BIOMATCH_REFERENCE_DATA", ROOT.parent / "shared" / "data"))
    if args.plot_real:
        plot_real_slaps(args.plot_real, data)
        return 0
    if args.extra_impressions:
        import tempfile

        subjects = [synthetic_subject(s) for s in range(args.subjects)]
        probes = [p for s in range(args.subjects) for p in synthetic_probes(s, args.probes)]
        if not args.no_fvc and data.is_dir():
            sets = [s for s in EXTRA_FVC_SETS if (data / s[0] / s[1]).is_dir()]
            subjects += [fvc_subject(data, *s) for s in sets]
            probes += [p for s in sets for p in fvc_probes(data, *s, min(args.probes, 6))]
        out = {"cpus": os.cpu_count(), "load_avg": os.getloadavg()[0]}
        with tempfile.TemporaryDirectory() as d:
            out["extra_impressions"] = extra_impressions(subjects, probes, Path(d))
        out["load_avg_end"] = os.getloadavg()[0]
        print(json.dumps(out, indent=2))
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        return 0

    out = {"cpus": os.cpu_count(), "load_avg": os.getloadavg()[0]}
    bm.sequence_check  # noqa: B018 - resolve the lazy import before timing
    out["segmentation"] = segmentation_accuracy(args.slaps, args.seed)
    print(json.dumps(out["segmentation"]), flush=True)
    if args.segmentation_only:
        if args.json:
            args.json.write_text(json.dumps(out, indent=2))
        return 0
    subjects = [synthetic_subject(s) for s in range(args.subjects)]
    if not args.no_fvc and data.is_dir():
        subjects += [fvc_subject(data, *s) for s in FVC_SETS]
    # warm the numba kernels so the first transaction's time is not compilation
    bm.sequence_check(_card(subjects[0][1], subjects[0][2], subjects[0][3]))
    out["sequence"] = sequence_detection(subjects, args.all_swaps)
    out["load_avg_end"] = os.getloadavg()[0]
    summary = {k: v for k, v in out["sequence"].items() if k != "rows"}
    print(json.dumps({**{k: out[k] for k in ("cpus", "load_avg", "load_avg_end")}, "segmentation": out["segmentation"],
                      "sequence": summary}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
