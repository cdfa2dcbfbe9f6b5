"""Soak run: searches and enrol/delete traffic against a large gallery for a long time.

Two threads search (impression 1 of enrolled synthetic fingers, position 0,
so every search covers the whole gallery) and one thread enrols a new subject
and deletes an older one of its own, in a loop, against a gallery of
``--fingers`` fingers (built once with ``Gallery.enroll_many`` and reused
when the store already holds it). It counts searches, enrolments, deletions
and errors, samples the resident set size every ``--sample-s`` seconds and,
at the end, reconciles the writer's acknowledged enrolments and deletions
with the audit log and the store (no enrolment lost, none duplicated) and
runs :meth:`biomatch.Gallery.check`.

Memory is judged after a warm-up (``--warmup-s``: the caches of rescoring
rows and templates, bounded in entries and bytes, fill during the first
searches; at 100,000 fingers the rows' LRU is full after about 20 searches)
on the trend of the anonymous RSS samples (``RssAnon``: mapped store pages are
page cache) taken after it: the median of the last
quarter against the median of the first quarter (single samples swing with
the transient buffers of a search or an index save). The run passes when
that growth is at most 10 %. The summary also gives the max, the first and
last samples and, on glibc, the heap's bytes in use (``mallinfo2``) at each
sample, which tell live data from freed memory the allocator kept.

Run::

    python -m benchmarks.soak --fingers 100000 --minutes 10 --store /tmp/soak.db --out /tmp/soak.json

Prints one JSON summary (also written to ``--out``); exit status 1 when any
error, reconciliation mismatch or RSS growth beyond 10 % (quarter medians
after the warm-up) was seen.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import threading
import time
import traceback
from pathlib import Path

from benchmarks._report import finish

GALLERY = "soak"


def heap_in_use() -> int | None:
    """Bytes the C heap has handed out and not had back (glibc ``mallinfo2().uordblks``), or None."""
    global _MALLINFO
    if _MALLINFO is None:
        try:
            import ctypes

            class _MI2(ctypes.Structure):
                _fields_ = [(n, ctypes.c_size_t) for n in
                            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

            f = ctypes.CDLL(None).mallinfo2
            f.restype = _MI2
            _MALLINFO = f
        except (OSError, AttributeError):
            _MALLINFO = False
    if _MALLINFO is False:
        return None
    m = _MALLINFO()
    return int(m.uordblks + m.hblkhd)


_MALLINFO = None


def rss_trend(samples: list, warmup_s: float) -> dict:
    """Median of the first and last quarters of the samples (t, bytes) taken at or after ``warmup_s``."""
    import statistics

    after = [b for t, b in samples if t >= warmup_s] or [b for _, b in samples]
    q = max(1, len(after) // 4)
    first, last = statistics.median(after[:q]), statistics.median(after[-q:])
    return {
        "samples_after_warmup": len(after),
        "first_quarter_median_mb": round(first / 2**20, 1),
        "last_quarter_median_mb": round(last / 2**20, 1),
        "max_mb": round(max(after) / 2**20, 1),
        "first_mb": round(after[0] / 2**20, 1),
        "last_mb": round(after[-1] / 2**20, 1),
        "growth": round((last - first) / first, 4) if first else 0.0,
    }


def rss_bytes() -> int:
    """Anonymous resident memory of this process (Linux /proc ``RssAnon``; ``VmRSS`` where absent).

    The store's memory-mapped pages (SQLite ``mmap_size``) count in VmRSS as
    they are read but are page cache, shared and reclaimable: a leak shows in
    the anonymous part (heap, arrays), which is what is judged."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                fields[key] = int(rest.split()[0]) * 1024
    return fields.get("RssAnon", fields.get("VmRSS", 0))


def build(store: Path, n: int, seed: int) -> dict:
    """Enrol impression 0 of ``n`` synthetic fingers unless the store already holds them."""
    from biomatch.gallery import Gallery
    from biomatch.gallery.checks import MIN_TEMPLATE_MINUTIAE
    from biomatch.synthetic import template_batch

    if store.exists():
        con = sqlite3.connect(store)
        try:
            have = con.execute(
                "SELECT count(*) FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
                "JOIN galleries ON galleries.id = subjects.gallery_id WHERE galleries.name = ? AND subject LIKE 'f%'",
                (GALLERY,),
            ).fetchone()[0]
        except sqlite3.Error:
            have = 0
        con.close()
        if have:  # a build (fingers under the template minimum are not enrolled, so it holds a few under n)
            return {"built": False, "fingers": have}
    t0 = time.perf_counter()

    skipped = 0

    def subjects():
        nonlocal skipped
        for block in template_batch(n, 1, seed=seed):
            for k, t in enumerate(block.templates()):
                if len(t) < MIN_TEMPLATE_MINUTIAE:  # refused at enrolment
                    skipped += 1
                    continue
                yield f"f{int(block.finger[k])}", {0: t}

    with Gallery.open(store) as g:
        g.enroll_many(subjects(), gallery=GALLERY, operator="soak-build")
        g.index(GALLERY)
    return {"built": True, "fingers": n - skipped, "skipped_under_minimum": skipped,
            "build_s": round(time.perf_counter() - t0, 1)}


def probes_for(n_probes: int, n: int, seed: int) -> list:
    """Second impressions of the first ``n_probes`` gallery fingers (same generator, same seed)."""
    from biomatch.gallery.checks import MIN_TEMPLATE_MINUTIAE
    from biomatch.synthetic import template_batch

    out = []
    for block in template_batch(min(n_probes, n), 2, seed=seed):
        for k, t in enumerate(block.templates()):
            if block.impression[k] == 1 and len(t) >= MIN_TEMPLATE_MINUTIAE:
                out.append((f"f{int(block.finger[k])}", t))
    return out


def run(store: Path, seconds: float, probes: list, writer_pool: list, sample_s: float, warmup_s: float) -> dict:
    from biomatch.gallery import Gallery

    stop = threading.Event()
    counts = {"searches": 0, "search_rank1": 0, "enrolments": 0, "deletions": 0}
    errors: list = []
    acked_enrol: list = []
    acked_delete: list = []
    lock = threading.Lock()
    rss = []
    g = Gallery.open(store)
    run_id = f"w{int(time.time())}-"  # this run's writer subjects (the store may hold earlier runs')
    first_seq = g.stats()["audit_records"] + 1

    def searcher(k: int):
        rng = random.Random(k)
        while not stop.is_set():
            subject, t = rng.choice(probes)
            try:
                cands = g.search({0: t}, galleries=[GALLERY], max_candidates=10, operator=f"soak-search-{k}")
                with lock:
                    counts["searches"] += 1
                    counts["search_rank1"] += bool(cands and cands[0].subject == subject)
            except Exception:  # noqa: BLE001 - every error is counted and reported
                errors.append(traceback.format_exc(limit=5))

    def writer():
        rng = random.Random(99)
        live: list = []
        i = 0
        while not stop.is_set():
            sid = f"{run_id}{i}"
            t = writer_pool[i % len(writer_pool)]
            try:
                g.enroll(sid, {0: t}, gallery=GALLERY, operator="soak-writer")
                acked_enrol.append(sid)
                live.append(sid)
                with lock:
                    counts["enrolments"] += 1
                if len(live) > 20 and rng.random() < 0.9:
                    victim = live.pop(rng.randrange(len(live)))
                    g.delete(victim, gallery=GALLERY, operator="soak-writer")
                    acked_delete.append(victim)
                    with lock:
                        counts["deletions"] += 1
            except Exception:  # noqa: BLE001
                errors.append(traceback.format_exc(limit=5))
            i += 1

    # warm the kernels and the index before the clock starts
    g.index(GALLERY)
    for _, t in probes[:3]:
        g.search({0: t}, galleries=[GALLERY], operator="soak-warmup")
    threads = [threading.Thread(target=searcher, args=(k,), daemon=True) for k in range(2)]
    threads.append(threading.Thread(target=writer, daemon=True))
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    heap = []
    load_start = os.getloadavg()
    while time.perf_counter() - t0 < seconds:
        now = round(time.perf_counter() - t0, 1)
        rss.append((now, rss_bytes()))
        h = heap_in_use()
        if h is not None:
            heap.append((now, h))
        time.sleep(min(sample_s, max(0.0, seconds - (time.perf_counter() - t0))))
    stop.set()
    for th in threads:
        th.join(timeout=120)
    elapsed = time.perf_counter() - t0
    rss.append((round(elapsed, 1), rss_bytes()))

    # reconcile with the audit log and the store
    audit = [r for r in g.audit_records(since=first_seq) if r.get("operator") == "soak-writer"]
    enrol_audit = [r["subject"] for r in audit if r["action"] == "enroll"]
    delete_audit = [r["subject"] for r in audit if r["action"] == "delete"]
    in_store = {s for s in g.subjects(gallery=GALLERY) if s.startswith(run_id)}
    expected_live = set(acked_enrol) - set(acked_delete)
    reconcile = {
        "acked_enrolments": len(acked_enrol),
        "audit_enrolments": len(enrol_audit),
        "duplicated_enrolments": len(enrol_audit) - len(set(enrol_audit)),
        "lost_enrolments": len(set(acked_enrol) - set(enrol_audit)),
        "unacked_in_audit": len(set(enrol_audit) - set(acked_enrol)),
        "acked_deletions": len(acked_delete),
        "audit_deletions": len(delete_audit),
        "store_matches_acks": in_store == expected_live,
    }
    check = g.check() if hasattr(g, "check") else None
    g.close()
    trend = rss_trend(rss, warmup_s)
    growth = trend["growth"]
    ok = (
        not errors
        and reconcile["duplicated_enrolments"] == 0
        and reconcile["lost_enrolments"] == 0
        and reconcile["unacked_in_audit"] == 0
        and reconcile["acked_deletions"] == reconcile["audit_deletions"]
        and reconcile["store_matches_acks"]
        and (check is None or check["ok"])
        and growth <= 0.10
    )
    return {
        "ok": ok,
        "seconds": round(elapsed, 1),
        **counts,
        "searches_per_s": round(counts["searches"] / elapsed, 2),
        "errors": len(errors),
        "first_errors": errors[:3],
        "reconcile": reconcile,
        "check_ok": None if check is None else check["ok"],
        "check_problems": None if check is None else check["problems"][:5],
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "warmup_s": warmup_s,
        "rss_trend": trend,
        "rss_growth": growth,
        "rss_mb_max_overall": round(max(b for _, b in rss) / 2**20, 1),
        "heap_in_use_trend": rss_trend(heap, warmup_s) if heap else None,
        "rss_samples_mb": [(t, round(b / 2**20, 1)) for t, b in rss],
        "heap_in_use_samples_mb": [(t, round(b / 2**20, 1)) for t, b in heap],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fingers", type=int, default=100_000, help="gallery size")
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length")
    parser.add_argument("--store", type=Path, required=True, help="SQLite store (reused when it holds the gallery)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="seconds of warm-up before the RSS samples judged (caches fill)")
    parser.add_argument("--build-only", action="store_true", help="build the gallery and stop")
    parser.add_argument("--out", type=Path, help="write the JSON summary here too")
    args = parser.parse_args(argv)

    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    summary = {"fingers_requested": args.fingers, "build": build(args.store, args.fingers, args.seed)}
    print(json.dumps(summary), flush=True)
    if args.build_only:
        return 0
    from biomatch.gallery.checks import MIN_TEMPLATE_MINUTIAE
    from biomatch.synthetic import template_batch

    probes = probes_for(args.probes, args.fingers, args.seed)
    pool = [t for block in template_batch(300, 1, seed=args.seed + 1) for t in block.templates()
            if len(t) >= MIN_TEMPLATE_MINUTIAE]
    summary.update(run(args.store, args.minutes * 60.0, probes, pool, args.sample_s, args.warmup_s))
    return finish(summary, args.out)


if __name__ == "__main__":
    sys.exit(main())
