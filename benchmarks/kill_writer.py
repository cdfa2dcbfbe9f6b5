"""Crash benchmark: a writer process killed with SIGKILL at random points, many times.

Each round starts a writer child (forked from a forkserver that has biomatch
imported, so a round costs little more than the kill) on the same store.
The child opens the store, runs :meth:`biomatch.Gallery.check` on what the
previous child left and reports it, then enrols subjects (some with
originals, some in ``enroll_many`` batches), deletes some and flushes the
index now and then, reporting each call after it returns (acknowledged). The
parent kills it with SIGKILL after a random delay. After every kill the next
child's report must show: a consistent store (``check()["ok"]``: integrity,
index vs store, audit vs store, nothing half enrolled), every acknowledged
enrolment present unless acknowledged deleted, and nothing present beyond
the acknowledged ones except the single call in flight.

Run::

    python -m benchmarks.kill_writer --kills 100 --store /tmp/kill.db --out /tmp/kill.json
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from pathlib import Path

from benchmarks._report import finish

GALLERY = "local"


def child(store: str, seed: int, conn) -> None:
    """One writer: report the check, then write until killed."""
    from biomatch.gallery import searching as gallery_search
    from biomatch.gallery import Gallery
    from biomatch.synthetic import template_batch

    gallery_search.EXHAUSTIVE_MAX_FINGERS = 0  # searches and check go through the index file
    rng = random.Random(seed)
    ts = next(template_batch(40, 1, seed=seed % 1000)).templates()
    g = Gallery.open(store)
    rep = g.check()
    subjects = g.subjects(gallery=GALLERY) if GALLERY in g.galleries() else []
    conn.send(("report", {"ok": rep["ok"], "problems": rep["problems"][:5], "subjects": subjects}))
    live = list(subjects)
    i = 0
    while True:
        r = rng.random()
        if r < 0.15 and live:
            victim = live.pop(rng.randrange(len(live)))
            conn.send(("start-delete", victim))
            g.delete(victim, gallery=GALLERY, operator="killer")
            conn.send(("ack-delete", victim))
        elif r < 0.25:
            batch = [(f"c{seed}-{i}-{k}", {k + 1: ts[(i + k) % len(ts)]}) for k in range(3)]
            conn.send(("start-enrol", [b[0] for b in batch]))
            g.enroll_many(batch, gallery=GALLERY, operator="killer")
            conn.send(("ack-enrol", [b[0] for b in batch]))
            live += [b[0] for b in batch]
        else:
            sid = f"c{seed}-{i}"
            conn.send(("start-enrol", [sid]))
            g.enroll(sid, {i % 10 + 1: ts[i % len(ts)]}, gallery=GALLERY, operator="killer",
                     originals={None: os.urandom(64)} if rng.random() < 0.3 else None)
            conn.send(("ack-enrol", [sid]))
            live.append(sid)
        if rng.random() < 0.2:
            g.flush()  # an index file write the kill may interrupt
        i += 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--max-delay-s", type=float, default=1.5, help="kill uniformly within this after the first acknowledged write")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    for p in args.store.parent.glob(f"{args.store.name}*"):
        p.unlink()
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["biomatch.gallery", "biomatch.synthetic", "biomatch.index", "biomatch.scoring",
                                "biomatch.descriptors"])
    # by module name, not __main__, so that the forkserver's children can unpickle it
    target = importlib.import_module("benchmarks.kill_writer").child
    rng = random.Random(args.seed)
    acked: set = set()  # enrolled and not (acknowledged) deleted
    in_flight: set = set()  # the call the last kill interrupted
    deleted_in_flight: set = set()
    failures: list = []
    stats = {"kills": 0, "reopens_consistent": 0, "acked_enrolments": 0, "acked_deletions": 0, "lost": 0, "extra": 0}
    t0 = time.perf_counter()
    for round_ in range(args.kills + 1):
        parent, kid = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=target, args=(str(args.store), args.seed * 1000 + round_, kid), daemon=True)
        proc.start()
        kid.close()
        kind, rep = parent.recv()
        present = set(rep["subjects"])
        lost = acked - present - deleted_in_flight
        extra = present - acked - in_flight
        if rep["ok"] and not lost and not extra:
            stats["reopens_consistent"] += round_ > 0
        else:
            failures.append({"round": round_, "problems": rep["problems"], "lost": sorted(lost)[:5], "extra": sorted(extra)[:5]})
        stats["lost"] += len(lost)
        stats["extra"] += len(extra)
        acked = present  # the in-flight call either landed wholly or not at all
        if round_ == args.kills:
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            break
        in_flight, deleted_in_flight = set(), set()
        # the clock starts at the first acknowledged write (the child's kernels are warm by then)
        delay = rng.uniform(0.0, args.max_delay_s)
        deadline = time.monotonic() + 120.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not parent.poll(left):
                break
            kind, value = parent.recv()
            if kind == "ack-enrol" and deadline - time.monotonic() > delay + 1.0:
                deadline = time.monotonic() + delay
            if kind == "start-enrol":
                in_flight = set(value)
            elif kind == "ack-enrol":
                acked |= set(value)
                in_flight = set()
                stats["acked_enrolments"] += len(value)
            elif kind == "start-delete":
                deleted_in_flight = {value}
            elif kind == "ack-delete":
                acked.discard(value)
                deleted_in_flight = set()
                stats["acked_deletions"] += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        stats["kills"] += proc.exitcode == -signal.SIGKILL
        while True:  # messages sent just before the kill (a message cut by the kill ends it)
            try:
                if not parent.poll():
                    break
                kind, value = parent.recv()
            except (EOFError, OSError, ValueError):
                break
            if kind == "ack-enrol":
                acked |= set(value)
                in_flight = set()
                stats["acked_enrolments"] += len(value)
            elif kind == "ack-delete":
                acked.discard(value)
                deleted_in_flight = set()
                stats["acked_deletions"] += 1
            elif kind == "start-enrol":
                in_flight = set(value)
            elif kind == "start-delete":
                deleted_in_flight = {value}
        parent.close()
    summary = {**stats, "final_subjects": len(acked), "seconds": round(time.perf_counter() - t0, 1),
               "ok": not failures and stats["kills"] == args.kills, "failures": failures[:10]}
    return finish(summary, args.out)


if __name__ == "__main__":
    sys.exit(main())
