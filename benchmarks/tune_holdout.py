"""Does ``biomatch tune`` pick the raw-count threshold, and does its interval hold on unseen impostors?

Issue 5, "Measured": on FVC2002 B all-pairs scores, ``tune --target-fmr 1e-3``
must select the threshold the raw counts say, and the confidence interval must
contain the FMR measured on a disjoint half of the impostor pairs.

Usage::

    python -m benchmarks.tune_holdout                      # extract + score ../shared/data/fvc2002_b
    python -m benchmarks.tune_holdout --scores scores.csv  # or a scores file (probe, reference, score, mated)

It prints (1) the tuned threshold on all pairs next to a brute-force raw-count
search, (2) the fixed split (seed 0): interval from half A, FMR measured on
half B, (3) coverage over many random half splits, both directions, for the
interval tune reports (Clopper-Pearson with the subject design effect), plain
Clopper-Pearson, a subject bootstrap, and the prediction interval for the FMR
measured on m new comparisons (Threshold.fmr_prediction_interval). Coverage is the
honest figure: a 95 % interval should contain the other half's FMR in roughly
95 % of splits or more (the other half's FMR has its own sampling noise, so
coverage of the *measured* held-out FMR is typically lower than of the true FMR).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.datasets import reference_data_dir
from biomatch import bench
from biomatch import evaluation as ev

TARGET_FMR = 1e-3
N_SPLITS = 200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scores", type=Path, help="scores file instead of scoring the dataset")
    ap.add_argument("--dataset", type=Path, default=None, help="FVC folder (default ../shared/data/fvc2002_b)")
    ap.add_argument("--target-fmr", type=float, default=TARGET_FMR)
    ap.add_argument("--splits", type=int, default=N_SPLITS)
    ap.add_argument("--save-scores", type=Path, help="write the scores CSV here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    if args.scores:
        scores = bench.read_scores(args.scores)
    else:
        folder = args.dataset or reference_data_dir() / "fvc2002_b"
        scores, _ = bench.score_dataset(folder, "all")
    if args.save_scores:
        bench.write_scores(scores, args.save_scores)
    g, i, gs, is_ = scores.split()
    target = args.target_fmr

    # (1) full data: tune vs brute force over the observed scores
    t = bench.tune_scores(scores, target_fmr=target)
    cands = np.unique(np.r_[g, i])
    brute = next(c for c in cands if np.count_nonzero(i >= c) <= target * i.size)
    full = {"threshold": t.value, "brute_force_threshold": float(brute), "same": bool(t.value == brute),
            "false_matches": t.false_matches, "n_nonmated": t.n_nonmated, "fmr": t.fmr, "fmr_ci": t.fmr_ci,
            "fnmr": t.fnmr, "false_non_matches": t.false_non_matches, "n_mated": t.n_mated,
            "ci_method": t.ci_method}

    # (2) fixed split, seed 0; (3) coverage over random splits, both directions
    methods = ("clopper-pearson+design-effect", "clopper-pearson", "subject-bootstrap", "prediction-interval")

    def split_check(half):
        ta = ev.tune(g, i[half], target_fmr=target, mated_subjects=gs, nonmated_subjects=is_[half])
        m = int((~half).sum())
        fmr_b = float(np.mean(i[~half] >= ta.value))
        cis = {
            "clopper-pearson+design-effect": ta.fmr_ci,
            "clopper-pearson": ev.clopper_pearson(ta.false_matches, ta.n_nonmated),
            "subject-bootstrap": ev.subject_bootstrap_rate_ci(i[half] >= ta.value, is_[half], replicates=1000),
            "prediction-interval": ta.fmr_prediction_interval(m),
        }
        return ta, fmr_b, m, cis

    rng = np.random.default_rng(0)
    half0 = rng.permutation(i.size) < i.size // 2
    ta, fmr_b, m, cis = split_check(half0)
    fixed = {"threshold_A": ta.value, "fmr_A": ta.fmr, "false_matches_A": ta.false_matches, "n_A": ta.n_nonmated,
             "design_effect_A": ta.fmr_design_effect, "fmr_B": fmr_b, "n_B": m,
             "intervals": {k: {"ci": v, "inside": bool(v[0] <= fmr_b <= v[1])} for k, v in cis.items()}}
    hits = dict.fromkeys(methods, 0)
    total = 0
    for s in range(1, args.splits + 1):
        half = np.random.default_rng(s).permutation(i.size) < i.size // 2
        for h in (half, ~half):
            _, fb, _, cis = split_check(h)
            for k, v in cis.items():
                hits[k] += bool(v[0] <= fb <= v[1])
            total += 1
    coverage = {k: {"inside": hits[k], "splits": total, "rate": hits[k] / total} for k in methods}
    result = {"n_mated": int(g.size), "n_nonmated": int(i.size), "target_fmr": target, "full": full,
              "fixed_split_seed0": fixed, "coverage": coverage, "seconds": time.perf_counter() - t0}
    if args.json:
        print(json.dumps(result, indent=2, default=float))
        return
    print(f"{g.size} mated, {i.size} non-mated comparisons; target FMR {target:g}")
    print(f"all pairs: tune -> {t.value:.6g}, brute force -> {brute:.6g} ({'same' if full['same'] else 'DIFFERENT'}); "
          f"FMR {t.fmr:.4g} ({t.false_matches}/{t.n_nonmated}), {t.ci_method} CI "
          f"[{t.fmr_ci[0]:.4g}, {t.fmr_ci[1]:.4g}]; FNMR {t.fnmr:.4g} ({t.false_non_matches}/{t.n_mated})")
    f = fixed
    print(f"split seed 0: half A threshold {f['threshold_A']:.6g}, FMR_A {f['fmr_A']:.4g} ({f['false_matches_A']}/"
          f"{f['n_A']}, design effect {f['design_effect_A']:.2f}); FMR_B {f['fmr_B']:.4g} on {f['n_B']}")
    for method, r in f["intervals"].items():
        print(f"   {method:32s} [{r['ci'][0]:.4g}, {r['ci'][1]:.4g}] -> {'inside' if r['inside'] else 'OUTSIDE'}")
    for method, c in coverage.items():
        print(f"coverage of held-out FMR over {c['splits']} half splits, {method}: {c['inside']}/{c['splits']} = {c['rate']:.3f}")
    print(f"({result['seconds']:.1f} s)")


if __name__ == "__main__":
    main()
