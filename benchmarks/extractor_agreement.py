"""How repeatable biomatch's minutiae are, and how far they agree with another extractor's.

EER moves by one genuine pair at a time (0.36 % on a DB of 280), so it is a
coarse guide when changing the extractor. This benchmark measures the
minutiae themselves, on every genuine pair of the FVC "B" sets:

* repeatability: put the two impressions of a finger in one frame and count
  the share of minutiae in their common area that have a mate in the other
  impression (within ``--tol-px`` and ``--tol-deg``). The rigid motion of each
  pair is estimated twice, independently: from the matcher's paired minutiae
  on the vendor ISO templates and on biomatch's own templates (least-squares
  rotation and translation, Kabsch). Only pairs where the two estimates agree
  (rotation within 5 deg, the print centre within 10 px) are used, so the
  alignment favours neither extractor. The vendor extractor's repeatability
  on the same pairs is the baseline.
* agreement with the vendor's minutiae, image by image: recall (share of the
  vendor minutiae inside the convex hull of biomatch's that biomatch also
  finds) and precision (the converse). The vendor extractor is not ground
  truth, so these are agreement figures, not error rates.

Run: ``python -m benchmarks.extractor_agreement [--competition fvc2002_b]
[--dbs DB1_B DB2_B DB3_B] [--json]``. Needs the reference data
(``../shared/data`` or ``$BIOMATCH_REFERENCE_DATA``).
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from benchmarks.accuracy_matching import load_templates

#: Agreement of two estimates of a pair's rigid motion, for the pair to be used.
MAX_ROTATION_DISAGREEMENT_DEG = 5.0
MAX_SHIFT_DISAGREEMENT_PX = 10.0
#: Fewest paired minutiae, and largest RMS residual, for a motion estimate.
MIN_ALIGNMENT_PAIRS = 5
MAX_ALIGNMENT_RMS_PX = 8.0


def _points(t) -> tuple[np.ndarray, np.ndarray]:
    """Minutia positions in a y-up frame (so angles and rotations agree) and angles."""
    m = t.minutiae
    return np.stack([m["x"], -m["y"]], axis=1).astype(np.float64), m["angle"].astype(np.float64)


def _rotation(phi: float) -> np.ndarray:
    return np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])


def _apply(motion, xy, ang):
    phi, shift = motion
    return xy @ _rotation(phi).T + shift, ang + phi


def rigid_motion(match, a, b):
    """(rotation rad, translation) taking ``a`` onto ``b`` from the matcher's pairs, or None."""
    if match.pairs.shape[0] < MIN_ALIGNMENT_PAIRS:
        return None
    pa, _ = _points(a)
    pb, _ = _points(b)
    p, q = pa[match.pairs[:, 0]], pb[match.pairs[:, 1]]
    pc, qc = p.mean(axis=0), q.mean(axis=0)
    h = (p - pc).T @ (q - qc)
    phi = math.atan2(h[0, 1] - h[1, 0], h[0, 0] + h[1, 1])
    motion = (phi, qc - _rotation(phi) @ pc)
    moved, _ = _apply(motion, p, np.zeros(len(p)))
    rms = float(np.sqrt(np.mean(np.sum((moved - q) ** 2, axis=1))))
    return motion if rms <= MAX_ALIGNMENT_RMS_PX else None


def motions_agree(m1, m2, centre: np.ndarray) -> bool:
    dphi = abs(math.remainder(m1[0] - m2[0], 2 * math.pi))
    c1 = _apply(m1, centre[None], np.zeros(1))[0][0]
    c2 = _apply(m2, centre[None], np.zeros(1))[0][0]
    return math.degrees(dphi) <= MAX_ROTATION_DISAGREEMENT_DEG and float(np.hypot(*(c1 - c2))) <= MAX_SHIFT_DISAGREEMENT_PX


def pair_mates(xy_a, ang_a, xy_b, ang_b, tol_px: float, tol_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into a, into b) of minutiae paired one to one within both tolerances.

    Hungarian assignment on distance, a pair outside the tolerances costing more
    than any set of pairs inside them: as many pairs as possible, then the least
    total distance. (The extraction and synthetic benchmarks pair with it too.)
    """
    from scipy.optimize import linear_sum_assignment

    if len(xy_a) == 0 or len(xy_b) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    d = np.hypot(*(xy_a[:, None, :] - xy_b[None, :, :]).transpose(2, 0, 1))
    da = np.abs(np.angle(np.exp(1j * (ang_a[:, None] - ang_b[None, :]))))
    ok = (d <= tol_px) & (da <= tol_rad)
    rows, cols = linear_sum_assignment(np.where(ok, d, 1e6))
    keep = ok[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


def count_mates(xy_a, ang_a, xy_b, ang_b, tol_px: float, tol_rad: float) -> int:
    """How many minutiae of a and b pair one to one within the tolerances."""
    return int(pair_mates(xy_a, ang_a, xy_b, ang_b, tol_px, tol_rad)[0].size)


def pair_records(a: np.ndarray, b: np.ndarray, tol_px: float, tol_rad: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pair_mates` on two minutia record arrays (``x``, ``y``, ``angle``) in one frame."""

    def points(m):
        return np.stack([m["x"], m["y"]], axis=1).astype(np.float64), m["angle"].astype(np.float64)

    return pair_mates(*points(a), *points(b), tol_px, tol_rad)


def inside_hull(xy: np.ndarray, hull_of: np.ndarray) -> np.ndarray:
    """Which points of ``xy`` lie in the convex hull of ``hull_of`` (none if it has < 3 points)."""
    from scipy.spatial import Delaunay, QhullError

    if len(hull_of) < 3 or len(xy) == 0:
        return np.zeros(len(xy), dtype=bool)
    try:
        # a small tolerance so that points on the hull (its own vertices) count as inside
        return Delaunay(hull_of).find_simplex(xy, tol=1e-6) >= 0
    except QhullError:  # collinear points: no area
        return np.zeros(len(xy), dtype=bool)


def repeatability(ta, tb, motion, tol_px, tol_rad) -> tuple[int, int]:
    """(mated minutiae, minutiae in the common area) for one genuine pair of one extractor.

    The common area is the intersection of the two convex hulls; a minutia with a
    mate counts as in it even when it lies just outside the other's hull (the
    hulls of two impressions never coincide exactly, and a mate proves overlap).
    """
    xa, aa = _points(ta)
    xb, ab = _points(tb)
    xa, aa = _apply(motion, xa, aa)
    ia, ib = pair_mates(xa, aa, xb, ab, tol_px, tol_rad)
    in_a = inside_hull(xa, xb)
    in_b = inside_hull(xb, xa)
    in_a[ia] = True
    in_b[ib] = True
    return 2 * int(ia.size), int(in_a.sum() + in_b.sum())


def agreement(ours, reference, tol_px, tol_rad) -> tuple[int, int, int, int]:
    """(mates, reference minutiae in our hull, mates, our minutiae in the reference hull) for one image."""
    xo, ao = _points(ours)
    xr, ar = _points(reference)
    r_in = inside_hull(xr, xo)
    o_in = inside_hull(xo, xr)
    recall_mates = count_mates(xo, ao, xr[r_in], ar[r_in], tol_px, tol_rad)
    precision_mates = count_mates(xo[o_in], ao[o_in], xr, ar, tol_px, tol_rad)
    return recall_mates, int(r_in.sum()), precision_mates, int(o_in.sum())


def measure_db(competition: str, db: str, tol_px: float, tol_deg: float) -> dict:
    from biomatch import verify
    from biomatch.errors import FormatError

    tol_rad = math.radians(tol_deg)
    try:
        vendor, labels = load_templates(competition, db, "vendor")
    except FormatError as exc:
        raise SystemExit(f"{competition} {db}: no vendor ISO templates beside the images ({exc}); FVC2002 B has them")
    ours, _ = load_templates(competition, db, "extract")
    n = len(labels)
    rep = {"extract": [0, 0], "vendor": [0, 0]}
    used = genuine = 0
    for i in range(n - 1):
        for j in range(i + 1, n):
            if labels[i] != labels[j]:
                continue
            genuine += 1
            m_v = rigid_motion(verify(vendor[i], vendor[j]), vendor[i], vendor[j])
            m_o = rigid_motion(verify(ours[i], ours[j]), ours[i], ours[j])
            if m_v is None or m_o is None:
                continue
            centre = np.array([vendor[i].width / 2.0, -vendor[i].height / 2.0])
            if not motions_agree(m_v, m_o, centre):
                continue
            used += 1
            for name, t in (("extract", ours), ("vendor", vendor)):
                mates, total = repeatability(t[i], t[j], m_v, tol_px, tol_rad)
                rep[name][0] += mates
                rep[name][1] += total
    agree = np.zeros(4, dtype=np.int64)
    for o, v in zip(ours, vendor):
        agree += agreement(o, v, tol_px, tol_rad)
    return {
        "db": db,
        "genuine_pairs": genuine,
        "aligned_pairs": used,
        "repeatability_extract": rep["extract"][0] / max(rep["extract"][1], 1),
        "repeatability_vendor": rep["vendor"][0] / max(rep["vendor"][1], 1),
        "recall_vs_vendor": float(agree[0] / max(agree[1], 1)),
        "precision_vs_vendor": float(agree[2] / max(agree[3], 1)),
        "minutiae_per_image_extract": float(np.mean([len(t.minutiae) for t in ours])),
        "minutiae_per_image_vendor": float(np.mean([len(t.minutiae) for t in vendor])),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--competition", default="fvc2002_b")
    ap.add_argument("--dbs", nargs="*", default=["DB1_B", "DB2_B", "DB3_B"])
    ap.add_argument("--tol-px", type=float, default=15.0)
    ap.add_argument("--tol-deg", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = [measure_db(args.competition, db, args.tol_px, args.tol_deg) for db in args.dbs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.competition}: mates within {args.tol_px:g} px and {args.tol_deg:g} deg")
    print(f"{'DB':7} {'aligned':>11} {'repeat ours':>11} {'repeat vendor':>13} {'recall':>7} {'precision':>9} {'n ours':>7} {'n vendor':>8}")
    for r in rows:
        print(
            f"{r['db']:7} {r['aligned_pairs']:>5}/{r['genuine_pairs']:<5} {r['repeatability_extract']:>11.3f}"
            f" {r['repeatability_vendor']:>13.3f} {r['recall_vs_vendor']:>7.3f} {r['precision_vs_vendor']:>9.3f}"
            f" {r['minutiae_per_image_extract']:>7.1f} {r['minutiae_per_image_vendor']:>8.1f}"
        )


if __name__ == "__main__":
    main()
