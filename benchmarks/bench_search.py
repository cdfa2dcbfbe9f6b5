"""1:N search benchmark: latency, memory, enrolment rate and rank-1 against gallery size.

Gallery fingers come from :func:`biomatch.synthetic.template_batch` (impression
0 of each synthetic finger, enrolled at position 0 so that every probe
searches the whole gallery - the worst case); probes are impression 1 of the
first ``--probes`` fingers (their mates are enrolled). Real probes too
(``--real-probes``, default FVC2002 DB1_B..DB3_B under the reference data):
impression 1 of each real finger joins the synthetic gallery and impressions
2..8 are searched (210 probes), the probe set the identification issue asks
for ("real FVC2002 images as probes and mates"); synthetic probes stay as the
harder set (template-level synthetic mates score lower than real ones). For
each size it reports:

- enrolment rate from templates (``Gallery.enroll_many``: validation,
  descriptors, index codes, SQLite insert, audit record);
- index bytes per finger in memory (the compact lists' blocks: codes, direction bins,
  delta-varint ids; plus the IVF centroids) and in the file a save writes;
- warm single-finger search latency, median and 90th percentile, of the
  whole ``Gallery.search`` call (index shortlist, rescoring, pairs of the
  candidates, the audit record written and fsynced);
- rank-1 of index + rescoring, and rank-1 of exhaustive rescoring of the
  whole gallery on the first ``--exhaustive-probes`` synthetic probes and on
  every real probe (the baseline, measured in the same run or kept with a
  kept store: it does not depend on the index), with their difference in
  points and the probes each one finds that the other does not;
- optionally ten-print search (``--tenprint-subjects``): 10-finger subjects,
  mated 10-finger probes and non-mated ones; rank-1 and FNIR at the FPIR the
  non-mated count supports.

Threads: numba is limited to ``--threads`` (default 2); FAISS uses
:data:`biomatch.index.FAISS_THREADS` (1) per search. On a shared machine
pin the process (``taskset -c 0,1``) to measure "2 cores".

Run::

    python -m benchmarks.bench_search --sizes 10000 100000 --out benchmarks/results/search.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


#: Real probe folders searched by default (under the reference data).
DEFAULT_REAL_PROBES = ("fvc2002_b/DB1_B", "fvc2002_b/DB2_B", "fvc2002_b/DB3_B")


def _templates(n_fingers: int, seed: int, impressions: int = 2):
    from biomatch.synthetic import template_batch

    from biomatch.gallery.checks import MIN_TEMPLATE_MINUTIAE

    gallery, probes = [], []
    for block in template_batch(n_fingers, impressions, seed=seed):
        ts = block.templates()
        for k, t in enumerate(ts):
            (gallery if block.impression[k] == 0 else probes).append((int(block.finger[k]), t))
    # a synthetic impression under the template minimum is refused at enrolment and search: left out,
    # with the probes of a finger whose gallery impression is left out (they would have no mate)
    gallery = [(f, t) for f, t in gallery if len(t) >= MIN_TEMPLATE_MINUTIAE]
    kept = {f for f, _ in gallery}
    probes = [(f, t) for f, t in probes if f in kept and len(t) >= MIN_TEMPLATE_MINUTIAE]
    return gallery, probes


def _real_sets(specs: list[str]) -> tuple[dict, list]:
    """Real FVC fingers: ({subject: impression-1 template}, [(subject, probe template)] of impressions 2..8)."""
    import biomatch as bm
    from biomatch.io import read_image

    from .datasets import list_samples, reference_data_dir

    root = reference_data_dir()
    mates, probes = {}, []
    for spec in specs:
        folder = root / spec
        if not folder.is_dir():
            raise SystemExit(f"--real-probes: {folder} is not a folder")
        for s in list_samples(folder):
            subject = f"real-{spec.replace('/', '-')}-{s.finger}"
            t = bm.extract(read_image(s.path, ppi=s.ppi))
            if s.impression == 1:
                mates[subject] = t
            else:
                probes.append((subject, t))
    return mates, [p for p in probes if p[0] in mates]


def _search_all(g, probes: list) -> tuple[np.ndarray, list, list]:
    """Ranks of the mate (0: not in the 10 candidates), wall and CPU seconds per search."""
    lat, cpu, ranks = [], [], []
    for subject, t in probes:
        t0, c0 = time.perf_counter(), time.process_time()
        cands = g.search({0: t}, galleries=["bench"], max_candidates=10, operator="bench")
        lat.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        names = [c.subject for c in cands]
        ranks.append(names.index(subject) + 1 if subject in names else 0)
    return np.array(ranks), lat, cpu


def _latency(out: dict, prefix: str, lat: list, cpu: list) -> None:
    out[f"{prefix}search_ms_median"] = round(1e3 * statistics.median(lat), 1)
    out[f"{prefix}search_ms_p90"] = round(1e3 * float(np.percentile(lat, 90)), 1)
    # CPU seconds of the process per search (all its threads): what the search costs the
    # machine, whatever else runs on it; wall latency is inflated on a loaded machine
    out[f"{prefix}search_cpu_ms_median"] = round(1e3 * statistics.median(cpu), 1)


def bench_size(n: int, n_probes: int, n_exhaustive: int, seed: int, workdir: Path, build_only: bool = False,
               real: tuple[dict, list] | None = None) -> dict:
    from biomatch import scoring
    from biomatch.gallery import Gallery
    from biomatch.gallery import features as gallery_features

    t0 = time.perf_counter()
    gallery, probes = _templates(n, seed)
    gen_s = time.perf_counter() - t0
    probes = [(f"f{f}", t) for f, t in probes if f < n_probes][:n_probes]
    mates, real_probes = real if real else ({}, [])
    store = workdir / f"bench_{n}_seed{seed}.db"
    build_log = store.with_suffix(".build.json")  # enrolment figures of a kept store (--keep-stores)
    out: dict = {"fingers": n, "fingers_enrolled": len(gallery), "generate_s": round(gen_s, 2)}
    with Gallery.open(store) as g:
        enrolled = set(g.subjects(gallery="bench")) if "bench" in g.galleries() else set()
        if build_log.exists() and sum(1 for s in enrolled if s.startswith("f")) == len(gallery):
            out.update(json.loads(build_log.read_text()), store_reused=True)
        else:
            t0 = time.perf_counter()
            g.enroll_many(((f"f{f}", {0: t}) for f, t in gallery), gallery="bench", operator="bench")
            enrol_s = time.perf_counter() - t0
            build = {"enrol_fingers_per_s": round(len(gallery) / enrol_s, 1), "enrol_s": round(enrol_s, 1)}
            build_log.write_text(json.dumps(build))
            out.update(build)
        # the real mates join the synthetic gallery (kept stores keep them for the next run)
        new = [(s, {0: t}) for s, t in sorted(mates.items()) if s not in enrolled]
        if new:
            g.enroll_many(new, gallery="bench", operator="bench")
        out["real_mates"] = len(mates)
        t0 = time.perf_counter()
        idx = g.index("bench")
        out["index_ready_s"] = round(time.perf_counter() - t0, 2)
        out["index"] = idx.describe()
        out["index_bytes_per_finger"] = round(idx.memory_bytes() / (len(gallery) + len(mates)), 1)
        sized = store.with_suffix(".index-size.tmp")  # the index file as a save writes it
        idx.save(sized, "bench")
        out["index_file_bytes_per_finger"] = round(sized.stat().st_size / (len(gallery) + len(mates)), 1)
        sized.unlink()
        if build_only:
            return out
        for _, t in probes[:3]:  # warm-up (numba dispatch, caches)
            g.search({0: t}, galleries=["bench"], max_candidates=10, operator="bench")
        ranks, lat, cpu = _search_all(g, probes)
        _latency(out, "", lat, cpu)
        out["load_average"] = round(os.getloadavg()[0], 2)
        out["probes"] = len(probes)
        out["rank1_index"] = round(100.0 * float(np.mean(ranks == 1)), 2)
        out["rank10_index"] = round(100.0 * float(np.mean(ranks >= 1)), 2)
        if real_probes:
            real_ranks, rlat, rcpu = _search_all(g, real_probes)
            _latency(out, "real_", rlat, rcpu)
            out["real_probes"] = len(real_probes)
            out["real_rank1_index"] = round(100.0 * float(np.mean(real_ranks == 1)), 2)
        out["feature_cache_fingers"] = gallery_features.FEATURE_CACHE_FINGERS
        out["store_bytes"] = g.stats()["store_bytes"]
    if n_exhaustive <= 0:  # no baseline asked (at 1,000,000 fingers it costs an hour of packing)
        return out
    # baseline: exhaustive rescoring of the whole gallery (synthetic fingers and real mates), same
    # probes: the first n_exhaustive synthetic probes and every real probe, in one pass over the packs
    sub = probes[:n_exhaustive] + real_probes
    gal_templates = [t for _, t in gallery] + [mates[s] for s in sorted(mates)]
    gal_ids = [f"f{f}" for f, _ in gallery] + sorted(mates)
    # the baseline does not depend on the index: a kept store keeps it too (same matcher, gallery, probes)
    cache = store.with_suffix(".exhaustive.json")
    key = {"matcher": scoring.MATCHER_VERSION, "gallery": len(gal_ids),
           "probes": [f"{s}:{hashlib.sha256(t.to_bytes()).hexdigest()[:16]}" for s, t in sub]}
    cached = json.loads(cache.read_text()) if cache.exists() else None
    t0 = time.perf_counter()
    if cached is not None and cached.get("key") == key:
        best, exh_s = [tuple(b) for b in cached["best"]], cached["seconds"]
        out["exhaustive_reused"] = True
    else:
        best = [(-1.0, "")] * len(sub)
        chunk = 5000
        for lo in range(0, len(gal_templates), chunk):
            packed = scoring.pack(gal_templates[lo : lo + chunk])
            for i, (_, t) in enumerate(sub):
                s = scoring.score_packed(t, packed)
                j = int(np.argmax(s))
                if s[j] > best[i][0]:
                    best[i] = (float(s[j]), gal_ids[lo + j])
            del packed
        exh_s = time.perf_counter() - t0
        cache.write_text(json.dumps({"key": key, "best": best, "seconds": exh_s}))
    hits = np.array([best[i][1] == subject for i, (subject, _) in enumerate(sub)])
    k = min(n_exhaustive, len(probes))
    out["exhaustive_ms_per_probe"] = round(1e3 * exh_s / max(len(sub), 1), 1)
    for prefix, ex, idx_hits in (("", hits[:k], ranks[:k] == 1),
                                 ("real_", hits[k:], real_ranks == 1 if real_probes else np.zeros(0, bool))):
        if not ex.size:
            continue
        out[f"{prefix}exhaustive_probes"] = int(ex.size)
        out[f"{prefix}rank1_exhaustive"] = round(100.0 * float(np.mean(ex)), 2)
        out[f"{prefix}rank1_index_same_probes"] = round(100.0 * float(np.mean(idx_hits)), 2)
        out[f"{prefix}rank1_gap_points"] = round(out[f"{prefix}rank1_exhaustive"] - out[f"{prefix}rank1_index_same_probes"], 2)
        # probes the index loses and exhaustive rescoring finds, and the reverse
        out[f"{prefix}index_misses_exhaustive_hits"] = int(np.sum(ex & ~idx_hits))
        out[f"{prefix}index_hits_exhaustive_misses"] = int(np.sum(~ex & idx_hits))
    return out


def bench_tenprint(n_subjects: int, n_mated: int, n_nonmated: int, seed: int, workdir: Path) -> dict:
    """10-finger subjects from consecutive synthetic fingers; mated and non-mated 10-finger probes."""
    from biomatch.gallery import Gallery

    total = (n_subjects + n_nonmated) * 10
    gallery, probes = _templates(total, seed + 1)
    gal = dict(gallery)
    prb = dict(probes)
    store = workdir / f"tenprint_{n_subjects}_seed{seed}.db"  # a kept store is reused (--keep-stores)
    out = {"subjects": n_subjects, "mated_searches": n_mated, "nonmated_searches": n_nonmated}
    with Gallery.open(store) as g:
        held = set(g.subjects(gallery="tp")) if "tp" in g.galleries() else set()
        g.enroll_many(
            ((f"s{s}", {p: gal[s * 10 + p - 1] for p in range(1, 11)}) for s in range(n_subjects) if f"s{s}" not in held),
            gallery="tp", operator="bench",
        )
        g.index("tp")
        mated_top, mated_fpir, lat = [], [], []
        for s in range(n_mated):
            t0 = time.perf_counter()
            c = g.search({p: prb[s * 10 + p - 1] for p in range(1, 11)}, galleries=["tp"], max_candidates=10, operator="bench")
            lat.append(time.perf_counter() - t0)
            mated_top.append(bool(c) and c[0].subject == f"s{s}")
            mate = [x for x in c if x.subject == f"s{s}"]
            mated_fpir.append(mate[0].fpir if mate else 1.0)
        non_fpir = []
        for s in range(n_subjects, n_subjects + n_nonmated):
            c = g.search({p: prb[s * 10 + p - 1] for p in range(1, 11)}, galleries=["tp"], max_candidates=1, operator="bench")
            non_fpir.append(c[0].fpir if c else 1.0)
    out["rank1"] = round(100.0 * float(np.mean(mated_top)), 2)
    out["search_ms_median"] = round(1e3 * statistics.median(lat), 1)
    # FNIR at the operating point where the measured FPIR (non-mated top candidate at or below it) is target
    non = np.sort(np.array(non_fpir))
    for target in (0.001, 0.01):
        k = int(np.floor(target * len(non)))
        if k < 1:
            out[f"fnir_at_fpir_{target:g}"] = None
            out[f"fnir_at_fpir_{target:g}_note"] = f"needs >= {int(np.ceil(1 / target))} non-mated searches"
            continue
        thr = non[k - 1]  # accept when candidate fpir < thr: k-1 of the non-mated searches would be hits
        out[f"fnir_at_fpir_{target:g}"] = round(100.0 * float(np.mean(np.array(mated_fpir) >= thr)), 2)
    out["fnir_at_predicted_fpir_0.001"] = round(100.0 * float(np.mean(np.array(mated_fpir) > 0.001)), 2)
    out["nonmated_predicted_fpir_below_0.001"] = round(100.0 * float(np.mean(non <= 0.001)), 2)
    return out


def _plot(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["fingers"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].plot(n, [r["search_ms_median"] for r in rows], "o-", label="median")
    ax[0].plot(n, [r["search_ms_p90"] for r in rows], "s--", label="p90")
    ax[0].set(xscale="log", xlabel="enrolled fingers", ylabel="search latency (ms)", title="single-finger search")
    ax[0].axhline(100, color="grey", lw=0.8, ls=":", label="target at 100k")
    ax[0].set_ylim(bottom=0)
    ax[0].legend()
    ax[1].plot(n, [r["index_bytes_per_finger"] for r in rows], "o-")
    ax[1].axhline(2048, color="grey", lw=0.8, ls=":")
    ax[1].set(xscale="log", xlabel="enrolled fingers", ylabel="index bytes / finger", title="index memory (target 2 KB)",
              ylim=(0, 2300))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--probes", type=int, default=100)
    ap.add_argument("--exhaustive-probes", type=int, default=50)
    ap.add_argument("--tenprint-subjects", type=int, default=0)
    ap.add_argument("--tenprint-mated", type=int, default=50)
    ap.add_argument("--tenprint-nonmated", type=int, default=100)
    ap.add_argument("--real-probes", nargs="*", default=list(DEFAULT_REAL_PROBES),
                    help="Real FVC folders (under the reference data): impression 1 of each finger joins the "
                         "gallery, impressions 2..8 are searched; given alone: the default folders; "
                         "none: synthetic probes only.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep-stores", type=Path, default=None,
                    help="Keep the gallery stores in this folder and reuse them on later runs (same size and seed).")
    ap.add_argument("--build-only", action="store_true", help="Enrol and index (with --keep-stores), no searches.")
    ap.add_argument("--replot", type=Path, default=None, help="Only redraw --plot from this JSON report.")
    args = ap.parse_args(argv)
    if args.replot:
        _plot(json.loads(args.replot.read_text())["sizes"], args.plot or args.replot.with_suffix(".png"))
        return 0

    import numba

    # FAISS runs single-threaded per search (biomatch.index.FAISS_THREADS); numba rescoring gets --threads
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    report = {"threads": args.threads, "cpu_count": os.cpu_count(), "sizes": []}
    import contextlib

    keep = args.keep_stores is not None
    if keep:
        args.keep_stores.mkdir(parents=True, exist_ok=True)
    place = contextlib.nullcontext(str(args.keep_stores)) if keep else tempfile.TemporaryDirectory(dir=args.workdir)
    with place as tmp:
        folders = args.real_probes or list(DEFAULT_REAL_PROBES)  # the flag alone means the defaults, not none
        real = _real_sets(folders) if folders != ["none"] else None
        for n in args.sizes:
            row = bench_size(n, args.probes, args.exhaustive_probes, args.seed, Path(tmp), build_only=args.build_only,
                             real=real)
            report["sizes"].append(row)
            print(json.dumps(row), flush=True)
        if args.tenprint_subjects:
            report["tenprint"] = bench_tenprint(args.tenprint_subjects, args.tenprint_mated, args.tenprint_nonmated,
                                                args.seed, Path(tmp))
            print(json.dumps({"tenprint": report["tenprint"]}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    if args.plot:
        _plot(report["sizes"], args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
