"""Extraction benchmark on the real FVC2002 B images (issue 2).

For each database it reports, on one core and warm:

* the median time of :func:`biomatch.extract` per image (from decoded pixels,
  resampling to 500 ppi included) beside the median time of scikit-image's
  ``skeletonize`` on the same images (Otsu-binarised) in the same run, and the
  ratio of the two; for a like-for-like view of one stage, the median time of
  our own thinning kernel (``extraction.thin``) on the same binary images;
* agreement with the vendor ISO/IEC 19794-2 templates beside each image
  (SecuGen, extracted after a 300x400 resize and mapped back to the image
  frame by ``benchmarks.datasets.vendor_template``): precision and recall of
  our minutiae at 15 px and 30 degrees under a one-to-one (Hungarian)
  assignment, the mean signed and median absolute angle difference of
  position-matched pairs (checks the angle convention), and how minutia types
  agree;
* failures to enrol (images whose extraction raises an error, as
  ``biomatch bench`` counts them) and, apart, images enrolled with fewer than
  ``MIN_MINUTIAE`` minutiae (a stricter quality flag; such templates still match);
* times as wall clock and as the CPU time of one core (every library is
  pinned to one thread), so a loaded machine does not inflate the per-core figure.

Run::

    python -m benchmarks.bench_extraction            # DB1_B..DB3_B, all 80 images each
    python -m benchmarks.bench_extraction --limit 20 # quicker
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.datasets import REAL_DBS, fvc_db, vendor_template  # noqa: E402

MATCH_DISTANCE_PX = 15.0
MATCH_ANGLE_RAD = np.deg2rad(30.0)
MIN_MINUTIAE = 12


def assign(ours: np.ndarray, theirs: np.ndarray, max_angle: float = MATCH_ANGLE_RAD) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) within MATCH_DISTANCE_PX and ``max_angle`` (Hungarian on distance)."""
    from benchmarks.extractor_agreement import pair_records

    rows, cols = pair_records(ours, theirs, MATCH_DISTANCE_PX, max_angle)
    return list(zip(rows.tolist(), cols.tolist()))


def _median_time(fn, arg, repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this thread (seconds) over ``repeats`` calls.

    The CPU time is what one core spends, whatever else the machine runs (every
    library here is pinned to one thread above); the wall time is inflated on a
    loaded machine."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn(arg)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def run_db(db: str, limit: int | None, repeats: int) -> dict:
    from skimage.filters import threshold_otsu
    from skimage.morphology import skeletonize

    import biomatch
    from biomatch.io import read_image

    samples = fvc_db("fvc2002_b", db)[:limit]
    images = [read_image(s.path, ppi=s.ppi) for s in samples]
    biomatch.extract(images[0])  # warm: native module loaded, caches filled
    binaries = [im.pixels < threshold_otsu(im.pixels) for im in images]
    skeletonize(binaries[0])

    from biomatch.extraction import thin

    ours_t, skel_t, thin_t = [], [], []
    tp = n_ours = n_theirs = 0
    counts, failures, few, angle_diff = [], [], [], []
    types = np.zeros((3, 3), dtype=np.int64)  # ours x theirs, position-matched
    for sample, image, binary in zip(samples, images, binaries):
        ours_t.append(_median_time(biomatch.extract, image, repeats))
        skel_t.append(_median_time(skeletonize, binary, repeats))
        thin_t.append(_median_time(thin, binary, repeats))
        try:
            template = biomatch.extract(image)
        except biomatch.BiomatchError as exc:
            failures.append(f"{sample.path.name}: {exc}")
            continue
        counts.append(len(template))
        if len(template) < MIN_MINUTIAE:
            few.append(f"{sample.path.name}: only {len(template)} minutiae")
        vendor = vendor_template(sample, image.width, image.height).minutiae
        ours = template.minutiae
        tp += len(assign(ours, vendor))
        n_ours += len(ours)
        n_theirs += len(vendor)
        for i, j in assign(ours, vendor, max_angle=np.pi + 0.1):
            angle_diff.append(np.angle(np.exp(1j * (float(ours["angle"][i]) - float(vendor["angle"][j])))))
            types[ours["type"][i], vendor["type"][j]] += 1
    angle_diff = np.asarray(angle_diff)
    return {
        "db": db,
        "images": len(samples),
        "ours_ms": 1000 * float(np.median([w for w, _ in ours_t])),
        "ours_cpu_ms": 1000 * float(np.median([c for _, c in ours_t])),
        "skeletonize_ms": 1000 * float(np.median([w for w, _ in skel_t])),
        "skeletonize_cpu_ms": 1000 * float(np.median([c for _, c in skel_t])),
        "thin_ms": 1000 * float(np.median([w for w, _ in thin_t])),
        "precision": tp / max(n_ours, 1),
        "recall": tp / max(n_theirs, 1),
        "minutiae_median": float(np.median(counts)) if counts else 0.0,
        "minutiae_min": int(min(counts)) if counts else 0,
        "vendor_per_image": n_theirs / max(len(samples), 1),
        "angle_mean_deg": float(np.rad2deg(np.angle(np.mean(np.exp(1j * angle_diff))))) if angle_diff.size else float("nan"),
        "angle_median_abs_deg": float(np.rad2deg(np.median(np.abs(angle_diff)))) if angle_diff.size else float("nan"),
        "angle_flipped_share": float(np.mean(np.abs(angle_diff) > np.deg2rad(150))) if angle_diff.size else float("nan"),
        "types": types,
        "failures": failures,
        "few_minutiae": few,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dbs", default=",".join(REAL_DBS), help="comma-separated FVC2002 B databases")
    parser.add_argument("--limit", type=int, default=None, help="images per database (default all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per image (median taken)")
    args = parser.parse_args(argv)

    rows = [run_db(db, args.limit, args.repeats) for db in args.dbs.split(",")]
    print(
        f"{'db':6} {'imgs':>4} {'ours ms':>8} {'ours cpu':>8} {'skel ms':>8} {'skel cpu':>8} {'ratio':>6} {'thin ms':>7} "
        f"{'P@15/30':>8} {'R@15/30':>8} {'min/img':>7} {'vend/img':>8} {'dAng':>6} {'|dAng|':>6} {'flip':>5} "
        f"{'FTE':>4} {'<' + str(MIN_MINUTIAE):>4}"
    )
    for r in rows:
        print(
            f"{r['db']:6} {r['images']:4d} {r['ours_ms']:8.1f} {r['ours_cpu_ms']:8.1f} {r['skeletonize_ms']:8.1f} "
            f"{r['skeletonize_cpu_ms']:8.1f} {r['ours_cpu_ms'] / r['skeletonize_cpu_ms']:6.2f} {r['thin_ms']:7.2f} "
            f"{r['precision']:8.3f} {r['recall']:8.3f} {r['minutiae_median']:7.1f} {r['vendor_per_image']:8.1f} "
            f"{r['angle_mean_deg']:6.1f} {r['angle_median_abs_deg']:6.1f} {r['angle_flipped_share']:5.2f} "
            f"{len(r['failures']):4d} {len(r['few_minutiae']):4d}"
        )
    print("ratio: our extraction / scikit-image skeletonize, CPU time of one core, same images, same run")
    all_ms = [r["ours_ms"] for r in rows]
    all_cpu = [r["ours_cpu_ms"] for r in rows]
    print(f"median of per-DB median extraction times: wall {np.median(all_ms):.1f} ms, one core's CPU "
          f"{np.median(all_cpu):.1f} ms (target <= 60 ms); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for r in rows:
        t = r["types"]
        print(
            f"{r['db']}: types ours\\vendor (ending, bifurcation) among position-matched pairs: "
            f"E/E {t[1, 1]} E/B {t[1, 2]} B/E {t[2, 1]} B/B {t[2, 2]}; min minutiae {r['minutiae_min']}"
        )
        for f in r["failures"]:
            print(f"  failure to enrol (extraction refused the image): {f}")
        for f in r["few_minutiae"]:
            print(f"  enrolled with fewer than {MIN_MINUTIAE} minutiae: {f}")


if __name__ == "__main__":
    main()
