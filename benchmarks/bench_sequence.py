"""Booking intake benchmark: slap segmentation accuracy, sequence-check detection and time per ten-print.

    python benchmarks/bench_sequence.py [--slaps 60] [--subjects 3] [--all-swaps] [--segmentation-only] [--json OUT]

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
    args = ap.parse_args(argv)
    data = Path(os.environ.get("BIOMATCH_REFERENCE_DATA", ROOT.parent / "shared" / "data"))
    if args.plot_real:
        plot_real_slaps(args.plot_real, data)
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
