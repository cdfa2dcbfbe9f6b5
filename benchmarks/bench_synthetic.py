"""Benchmark of biomatch.synthetic: speed, realism against FVC2002, ground-truth recovery.

Run ``python -m benchmarks.bench_synthetic`` (add ``--quick`` for a smaller run).
Prints one section per measurement:

* image generation time on one core (median per master finger, per
  impression, and per image amortised over the impressions of a finger);
* template-level generation rate (fingers per second for ``template_batch``,
  extrapolated to 1,000,000 fingers, and Template objects per second);
* realism: minutiae count and image quality from ``biomatch.extract`` on the
  synthetic images vs FVC2002 DB1_B..DB3_B (real sensors) and DB4_B (SFinGe);
* recovery of the known master minutiae by ``biomatch.extract`` (precision
  and recall at 15 px / 30 degrees, one-to-one Hungarian pairing);
* EER of ``biomatch.compare_many`` with the FVC protocol (all genuine pairs,
  all cross-finger first-impression impostor pairs), when the matcher exists.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

MATCH_DISTANCE_PX = 15.0
MATCH_ANGLE_DEG = 30.0


def _ref_dir() -> Path | None:
    env = os.environ.get("BIOMATCH_REFERENCE_DATA")
    for p in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[1].parent / "shared" / "data"]:
        if p.is_dir():
            return p
    return None


def pair_minutiae(found, truth, max_dist=MATCH_DISTANCE_PX, max_angle_deg=MATCH_ANGLE_DEG) -> int:
    """Number of one-to-one pairs (Hungarian on distance) within the distance and angle tolerances."""
    from benchmarks.extractor_agreement import pair_records

    return int(pair_records(found, truth, max_dist, np.radians(max_angle_deg))[0].size)


def eer(genuine, impostor) -> float:
    g = np.sort(np.asarray(genuine, float))
    i = np.sort(np.asarray(impostor, float))
    thr = np.unique(np.concatenate([g, i]))
    fnmr = np.searchsorted(g, thr, side="left") / g.size
    fmr = 1.0 - np.searchsorted(i, thr, side="left") / i.size
    k = np.argmin(np.abs(fnmr - fmr))
    return float((fnmr[k] + fmr[k]) / 2)


def bench_images(n_fingers: int, n_impressions: int, seed: int):
    from biomatch import synthetic as S

    S.make_impression(S.make_finger(10_000, seed), 0)  # compile numba kernels, build the Gabor bank
    t_master, t_imp, images = [], [], {}
    for f in range(n_fingers):
        t0 = time.perf_counter()
        m = S.make_finger(f, seed)
        t_master.append(time.perf_counter() - t0)
        for j in range(n_impressions):
            t0 = time.perf_counter()
            imp = S.make_impression(m, j)
            t_imp.append(time.perf_counter() - t0)
            images[(f, j)] = imp
    per_image = [(tm + sum(t_imp[f * n_impressions : (f + 1) * n_impressions])) / n_impressions for f, tm in enumerate(t_master)]
    print(f"## image generation, one core ({n_fingers} fingers x {n_impressions} impressions, 300x400 at 500 ppi)")
    print(f"master finger (orientation, growth, minutiae): median {np.median(t_master):.3f} s")
    print(f"impression (distortion, rendering, truth):     median {np.median(t_imp):.3f} s")
    print(f"per image, master amortised over {n_impressions}:        median {np.median(per_image):.3f} s  (target <= 0.5 s)")
    print(f"per image with one impression per master:      median {np.median(t_master) + np.median(t_imp):.3f} s")
    return images


def bench_templates(n_fingers: int, seed: int):
    from biomatch import synthetic as S

    next(S.template_batch(1, 2, seed))
    t0 = time.perf_counter()
    n_t = n_m = 0
    for tb in S.template_batch(n_fingers, 2, seed):
        n_t += len(tb)
        n_m += tb.minutiae.size
    dt = time.perf_counter() - t0
    tb = next(S.template_batch(4096, 2, seed))
    t1 = time.perf_counter()
    objs = tb.templates()
    dt_obj = (time.perf_counter() - t1) / len(objs)
    print(f"\n## template level, one core ({n_fingers} fingers x 2 impressions)")
    print(f"template_batch: {dt:.2f} s = {n_fingers / dt:,.0f} fingers/s; 1,000,000 fingers x 2 impressions extrapolated: {dt / n_fingers * 1e6:.0f} s")
    print(f"mean minutiae per impression: {n_m / n_t:.1f}")
    print(f"Template objects: {1 / dt_obj:,.0f} per s (1,000,000 x 2 as objects: +{2e6 * dt_obj:.0f} s)")


def _stats(values) -> str:
    v = np.asarray(values, float)
    return f"median {np.median(v):5.1f}  IQR [{np.percentile(v, 25):5.1f}, {np.percentile(v, 75):5.1f}]  n={v.size}"


def bench_realism(images, max_real: int):
    import biomatch as bm

    print("\n## realism: biomatch.extract on synthetic vs FVC2002 B (minutiae count, image quality 0-100)")
    syn_templates = {}
    counts, quals, prec, rec = [], [], [], []
    for key, imp in images.items():
        t = bm.extract(imp.pixels, ppi=500)
        syn_templates[key] = t
        counts.append(len(t))
        quals.append(t.quality)
        n = pair_minutiae(t.minutiae, imp.truth.minutiae)
        prec.append(n / max(len(t), 1))
        rec.append(n / max(len(imp.truth), 1))
    print(f"{'synthetic':10s} minutiae {_stats(counts)} | quality {_stats(quals)}")
    real_templates = {}
    ref = _ref_dir()
    if ref is None:
        print("reference data absent: real comparison skipped")
    else:
        for db in ("DB1_B", "DB2_B", "DB3_B", "DB4_B"):
            folder = ref / "fvc2002_b" / db
            files = sorted(folder.glob("*.tif"))[:max_real]
            ppi = 569.0 if db == "DB2_B" else 500.0
            ts = {}
            for p in files:
                f, i = p.stem.split("_")
                ts[(int(f), int(i))] = bm.extract(p, ppi=ppi)
            real_templates[db] = ts
            c = [len(t) for t in ts.values()]
            q = [t.quality for t in ts.values()]
            note = " (SFinGe v2.51)" if db == "DB4_B" else ""
            print(f"{db:10s} minutiae {_stats(c)} | quality {_stats(q)}{note}")
    truth_counts = [len(imp.truth) for imp in images.values()]
    print(f"\n## recovery of the master minutiae (ground truth) at {MATCH_DISTANCE_PX:g} px / {MATCH_ANGLE_DEG:g} deg")
    print(f"truth minutiae per image: {_stats(truth_counts)}")
    tp = sum(p * len(syn_templates[k]) for p, k in zip(prec, images))
    print(f"precision: pooled {tp / max(sum(counts), 1):.3f}, median per image {np.median(prec):.3f}")
    print(f"recall:    pooled {tp / max(sum(truth_counts), 1):.3f}, median per image {np.median(rec):.3f}")
    return syn_templates, real_templates


def _fvc_eer(templates: dict, compare_many) -> tuple[float, int, int]:
    fingers = sorted({f for f, _ in templates})
    gen, imp = [], []
    for f in fingers:
        ks = sorted(k for k in templates if k[0] == f)
        for a, b in combinations(ks, 2):
            gen.append(float(compare_many(templates[a], [templates[b]])[0]))
    firsts = [templates[min(k for k in templates if k[0] == f)] for f in fingers]
    for a, b in combinations(range(len(firsts)), 2):
        imp.append(float(compare_many(firsts[a], [firsts[b]])[0]))
    # all cross-finger pairs (every impression of a finger against every impression of the others)
    keys = sorted(templates)
    cross = []
    for a in keys:
        others = [templates[b] for b in keys if b[0] > a[0]]
        if others:
            cross.extend(np.asarray(compare_many(templates[a], others), float).tolist())
    return eer(gen, imp), len(gen), len(imp), eer(gen, cross), len(cross), gen, cross


def bench_eer(syn_templates, real_templates):
    import biomatch as bm

    print("\n## EER of biomatch.compare_many, FVC protocol (genuine: all impression pairs; impostor: first impressions)")
    try:
        compare_many = bm.compare_many
    except AttributeError:
        print("biomatch.compare_many not available: EER skipped")
        return
    rows = [("synthetic", syn_templates)] + list(real_templates.items())
    for name, ts in rows:
        e, ng, ni, e2, nc, gen, cross = _fvc_eer(ts, compare_many)
        g = np.asarray(gen)
        c = np.asarray(cross)
        print(f"{name:10s} EER {100 * e:5.2f} % ({ng} gen, {ni} imp) | all-cross EER {100 * e2:5.2f} % ({nc} imp) | "
              f"genuine median {np.median(g):.3f} p10 {np.percentile(g, 10):.3f} | impostor median {np.median(c):.3f} p99 {np.percentile(c, 99):.3f}")


def bench_template_scores(n_fingers: int, seed: int):
    """Template level: genuine/impostor scores of compare_many on synthetic mated templates."""
    import biomatch as bm
    from biomatch import synthetic as S

    try:
        compare_many = bm.compare_many
    except AttributeError:
        return
    tb = next(S.template_batch(n_fingers, 8, seed))
    ts = {(int(tb.finger[k]), int(tb.impression[k])): tb.template(k) for k in range(len(tb))}
    e, ng, ni, e2, nc, gen, cross = _fvc_eer(ts, compare_many)
    g, c = np.asarray(gen), np.asarray(cross)
    print(f"{'templates':10s} EER {100 * e:5.2f} % ({ng} gen, {ni} imp) | all-cross EER {100 * e2:5.2f} % ({nc} imp) | "
          f"genuine median {np.median(g):.3f} p10 {np.percentile(g, 10):.3f} | impostor median {np.median(c):.3f} p99 {np.percentile(c, 99):.3f}"
          f"  (template level, {n_fingers} fingers x 8, no images)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fingers", type=int, default=20)
    ap.add_argument("--score-fingers", type=int, default=60, help="template-level fingers (x 8) for the score comparison")
    ap.add_argument("--impressions", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--template-fingers", type=int, default=100_000)
    ap.add_argument("--max-real", type=int, default=80, help="images per FVC DB (80 = all)")
    ap.add_argument("--quick", action="store_true", help="5 fingers x 4, 20k template fingers, 20 real per DB, 10 score fingers")
    ap.add_argument("--no-extract", action="store_true", help="speed only")
    args = ap.parse_args(argv)
    if args.quick:
        args.fingers, args.impressions, args.template_fingers, args.max_real, args.score_fingers = 5, 4, 20_000, 20, 10
    images = bench_images(args.fingers, args.impressions, args.seed)
    bench_templates(args.template_fingers, args.seed)
    if not args.no_extract:
        syn, real = bench_realism(images, args.max_real)
        bench_eer(syn, real)
        bench_template_scores(args.score_fingers, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
