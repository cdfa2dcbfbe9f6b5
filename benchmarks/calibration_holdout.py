"""Is the calibration's estimated FMR right on impostors it was not fitted on?

Fits :class:`biomatch.calibration.Calibration` on the non-mated scores of half
of the fingers (probe finger split, so no finger is on both sides) and, at the
scores the fit says have FMR 1e-2, 1e-3, 3e-4 and 1e-4, counts the false
matches among the other half's non-mated scores. The last targets lie in the
fitted tail (below 1/n of the fitting half for the smallest), where only the
count with its Clopper-Pearson interval (widened by the subject design
effect, since impostor scores cluster by finger) can say whether the extrapolation
holds. Then swaps the halves.

Usage::

    python -m benchmarks.calibration_holdout --scores REPORT_DIR/scores.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from biomatch import bench
from biomatch import evaluation as ev
from biomatch.calibration import Calibration

TARGETS_FMR = (1e-2, 1e-3, 3e-4, 1e-4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scores", type=Path, required=True, help="scores file (probe, reference, score, mated)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    scores = bench.read_scores(args.scores)
    _, i, _, is_ = scores.split()
    subjects = np.unique(is_)
    rng = np.random.default_rng(args.seed)
    side_a = set(rng.permutation(subjects)[: subjects.size // 2])
    in_a = np.array([s in side_a for s in is_])
    for name, fit_mask in (("A->B", in_a), ("B->A", ~in_a)):
        fit, test = i[fit_mask], i[~fit_mask]
        cal = Calibration.fit(fit, source=f"{args.scores} half {name[0]}", matcher_version="holdout")
        print(f"{name}: fitted on {fit.size} non-mated scores (tail above {cal.tail_threshold:.4g}, shape "
              f"{cal.tail_shape:.3g}), tested on {test.size}")
        for f in TARGETS_FMR:
            t = cal.threshold_for(f)
            errors = test >= t
            k = int(np.count_nonzero(errors))
            deff = ev.design_effect(errors, is_[~fit_mask])
            lo, hi = ev.clopper_pearson(k, test.size, design_effect=deff)
            verdict = "consistent" if lo <= f <= hi else ("over-estimates" if f > hi else "UNDER-estimates")
            print(f"   estimated FMR {f:g} at score {t:.4g}: held-out {k}/{test.size} = {k / test.size:.3g} "
                  f"[{lo:.3g}, {hi:.3g}] (design effect {deff:.2f}) -> {verdict}")


if __name__ == "__main__":
    main()
