"""Sharded search benchmark: latency and throughput with 1, 2, 4 shards on a local Ray cluster.

The gallery is ``--fingers`` synthetic fingers (impression 0 of
:func:`biomatch.synthetic.template_batch`, one finger per subject, position
0, so every probe searches the whole gallery - the worst case, as
``bench_search``); probes are impression 1 of the first ``--probes`` fingers
(their mates are enrolled). The same gallery is enrolled into a
single-machine store (the reference) and into a ``ray://`` gallery per shard
count. For each it reports:

- enrolment rate (``enroll_many``, templates streamed: memory stays flat at any size);
- per-shard index and store size, and the shard actors' resident memory (local cluster only);
- warm search latency of one probe at a time, median and 90th percentile, of the
  whole ``search`` call (fan-out, shortlist and rescoring on every shard,
  merge, pairs, the audit record written);
- throughput: probes per second with ``--clients`` concurrent searching threads;
- identical: probes whose candidate list (subjects, ranks, scores, FMRs,
  FPIRs, pairs) equals the single-machine list; rank-1 identical; rank-1 hit rate
  (all lists are identical at any size: every index shares the IVF centroids
  and the coordinator sets the lists visited; ``index_partitions`` of the
  reference row says whether the search was exhaustive or by IVF lists;
  see docs/scaleout.md).

Run (what fits in ~10 min on 2 cores; ``--fingers 1000000`` on a bigger machine)::

    python -m benchmarks.bench_distributed --fingers 20000 --shards 1 2 4 --out benchmarks/results/distributed.json

At a million fingers, start from a store kept by ``bench_search --keep-stores``
(its gallery ``bench`` holds the same synthetic fingers ``f<i>``, plus a few
real mates): ``--from-store STORE`` uses it as the reference and moves it onto
each shard count with ``ShardedGallery.import_store`` (enrolment rate is then
bench_search's, and ``import_s`` the migration's)::

    python -m benchmarks.bench_distributed --from-store STORES/bench_1000000_seed2026.db --probes 50 --shards 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _gallery(n: int, seed: int):
    from biomatch.synthetic import template_batch

    for block in template_batch(n, 1, seed=seed):
        for k, t in enumerate(block.templates()):
            yield f"f{int(block.finger[k])}", {0: t}


def _probes(n: int, seed: int) -> list:
    from biomatch.synthetic import template_batch

    out = []
    for block in template_batch(n, 2, seed=seed):
        ts = block.templates()
        out += [(int(block.finger[k]), t) for k, t in enumerate(ts) if block.impression[k] == 1]
    return out


def _rss_bytes(pid: int, field: str = "VmRSS") -> int | None:
    """A process's resident memory; ``RssAnon`` leaves out the memory-mapped store and feature files."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _measure(g, probes: list, clients: int, reference: list | None) -> dict:
    """Latency (sequential), throughput (``clients`` threads), rank-1 and identity with ``reference``."""
    def one(item):
        f, t = item
        return g.search({0: t}, galleries=["bench"], max_candidates=10, operator="bench")

    for item in probes[:3]:  # warm-up: numba dispatch, caches, index load on every shard
        one(item)
    lat, results = [], []
    for item in probes:
        t0 = time.perf_counter()
        results.append(one(item))
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, probes))
    wall = time.perf_counter() - t0
    out = {
        "search_ms_median": round(1e3 * statistics.median(lat), 1),
        "search_ms_p90": round(1e3 * float(np.percentile(lat, 90)), 1),
        "throughput_per_s": round(len(probes) / wall, 2),
        "clients": clients,
        "rank1": round(100.0 * float(np.mean([bool(r) and r[0].subject == f"f{f}" for (f, _), r in zip(probes, results)])), 2),
        "complete": all(getattr(r, "complete", True) for r in results),
    }
    if reference is not None:
        out["identical_lists"] = sum(list(a) == list(b) for a, b in zip(results, reference))
        out["identical_rank1"] = sum(bool(a) and bool(b) and a[0] == b[0] for a, b in zip(results, reference))
        out["probes"] = len(probes)
        # a subject in both lists must score the same: rescoring and fusion are the single-machine code
        same, common = 0, 0
        for a, b in zip(results, reference):
            ref = {c.subject: (c.score, c.fmr, c.fingers) for c in b}
            for c in a:
                if c.subject in ref:
                    common += 1
                    same += ref[c.subject] == (c.score, c.fmr, c.fingers)
        out["common_candidates"] = common
        out["common_candidates_identical"] = same
    return out, results


def bench(n: int, shard_counts: list, n_probes: int, clients: int, seed: int, workdir: Path,
          from_store: Path | None = None) -> dict:
    import ray

    import biomatch as bm

    probes = _probes(n_probes, seed)
    report: dict = {"fingers": n, "probes": len(probes), "runs": []}
    with bm.Gallery.open(from_store or workdir / "single.db") as g:
        t0 = time.perf_counter()
        if from_store is None:
            g.enroll_many(_gallery(n, seed), gallery="bench", operator="bench")
            row = {"shards": 0, "enrol_fingers_per_s": round(n / (time.perf_counter() - t0), 1)}
        else:
            n = report["fingers"] = g.stats()["galleries"]["bench"]["fingers"]
            row = {"shards": 0, "store": str(from_store)}
            # a first pass fills the rescoring rows a kept store lacks, which the shards then import:
            # both sides are then measured with the rows of these probes' shortlists at hand
            _measure(g, probes, clients, None)
        idx = g.index("bench")
        row["index_bytes_per_finger"] = round(idx.memory_bytes() / n, 1)
        # identical sharded results are guaranteed while every partition of the single store is flat
        row["index_partitions"] = idx.describe()["partitions"]
        row["store_bytes_per_finger"] = round(g.stats()["store_bytes"] / n, 1)
        m, reference = _measure(g, probes, clients, None)
        row.update(m)
    report["runs"].append(row)
    print(json.dumps(row), flush=True)
    for s in shard_counts:
        with bm.Gallery.open(f"ray://{workdir / f'sharded-{s}'}?shards={s}") as g:
            t0 = time.perf_counter()
            if from_store is None:
                g.enroll_many(_gallery(n, seed), gallery="bench", operator="bench")
                row = {"shards": s, "enrol_fingers_per_s": round(n / (time.perf_counter() - t0), 1)}
            else:  # the store moved onto the shards: codes and rows copied (ShardedGallery.import_store)
                g.import_store(from_store, gallery="bench", operator="bench")
                wall = time.perf_counter() - t0
                row = {"shards": s, "import_s": round(wall, 1), "import_fingers_per_s": round(n / wall, 1)}
            m, _ = _measure(g, probes, clients, reference)
            row.update(m)
            st = g.stats()
            row["fingers_per_shard"] = [x["galleries"]["bench"]["fingers"] for x in st["shard_stats"]]
            row["index_bytes_per_shard"] = [x["galleries"]["bench"]["index_loaded"]["memory_bytes"]
                                            for x in st["shard_stats"]]
            row["store_bytes_per_shard"] = [x["store_bytes"] for x in st["shard_stats"]]
            pids = ray.get([a.ping.remote() for a in g._actors])
            row["actor_rss_bytes"] = [_rss_bytes(p) for p in pids]
            row["actor_rss_anon_bytes"] = [_rss_bytes(p, "RssAnon") for p in pids]
        report["runs"].append(row)
        print(json.dumps(row), flush=True)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fingers", type=int, default=20_000)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--probes", type=int, default=50)
    ap.add_argument("--clients", type=int, default=4, help="Concurrent searching threads for the throughput figure.")
    ap.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all).")
    ap.add_argument("--address", default=None, help="Ray cluster to join (default: start a local one).")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--from-store", type=Path, default=None,
                    help="A kept store of gallery 'bench' (bench_search --keep-stores, same --seed) as the "
                         "single-machine reference, moved onto the shards by import_store instead of enrolling "
                         "--fingers anew (a 1M-finger enrolment takes ~40 min on 2 cores).")
    args = ap.parse_args(argv)
    if args.fingers < args.probes or args.probes < 1:
        ap.error("--probes must be 1..--fingers")

    import ray

    ray.init(address=args.address, num_cpus=args.cpus if args.address is None else None, include_dashboard=False,
             log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            t0 = time.perf_counter()
            report = bench(args.fingers, args.shards, args.probes, args.clients, args.seed, Path(tmp),
                           from_store=args.from_store)
            report["wall_s"] = round(time.perf_counter() - t0, 1)
    finally:
        ray.shutdown()
    report.update({"cpu_count": os.cpu_count(), "ray": ray.__version__,
                   "command": "python -m benchmarks.bench_distributed " + " ".join(argv or __import__("sys").argv[1:])})
    print(json.dumps({"wall_s": report["wall_s"]}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
