"""Ranking: fusion of per-finger FMRs (Fisher), candidate order, FPIR."""

from __future__ import annotations

import math

import numpy as np

#: Smallest FMR used in logarithms (Fisher fusion).
FMR_FLOOR = 1e-300


def fisher_fmr(fmrs: np.ndarray) -> float:
    """Fisher's combination of k independent FMRs: P(chi2_2k >= -2 sum ln p)."""
    if len(fmrs) == 1:  # the common single-finger case, without array overhead
        p0 = float(fmrs[0])
        return p0 if math.isnan(p0) else min(max(p0, FMR_FLOOR), 1.0)
    if len(fmrs) == 0 or np.any(np.isnan(fmrs)):
        return float("nan")
    p = np.clip(np.asarray(fmrs, dtype=np.float64), FMR_FLOOR, 1.0)
    # chi2 survival with 2k degrees of freedom in closed form: e^{-x/2} sum_{j<k} (x/2)^j / j!
    half = -np.sum(np.log(p))
    k = p.size
    term = 1.0
    total = 1.0
    for j in range(1, k):
        term *= half / j
        total += term
    return float(min(1.0, math.exp(-half) * total))
