"""Crash safety with a real kill -9 of a child process during enrolment and during an index write."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time


from biomatch.search import SearchParams
from biomatch.gallery import Gallery

#: Searches go through the FAISS shortlist and the feature file even for these small galleries.
INDEXED = SearchParams(exhaustive_max_fingers=0)


CHILD = textwrap.dedent(
    """
    import sys, time
    from biomatch import audit, gallery
    from biomatch.gallery import Gallery
    from biomatch.synthetic import template_batch

    store, mode = sys.argv[1], sys.argv[2]
    ts = next(template_batch(60, 1, seed=3)).templates()
    if mode == "in-transaction":
        real_append = audit.append
        def slow_append(con, action, operator, fields):
            rec = real_append(con, action, operator, fields)
            if fields.get("subject") == "s5":
                print("IN-TX", flush=True)
                time.sleep(60)  # killed here: rows written, not committed
            return rec
        audit.append = slow_append
    g = Gallery.open(store)
    if mode == "index-write":
        g.enroll_many([(f"s{i}", {i % 10 + 1: ts[i]}) for i in range(30)], gallery="local", operator="child")
        g.index("local")
        print("READY", flush=True)
        while True:  # keep rewriting the index file until killed
            g.rebuild_index("local")
    for i in range(60):
        g.enroll(f"s{i}", {i % 10 + 1: ts[i]}, gallery="local", operator="child")
        if i % 7 == 0:
            g.flush()
        print(f"DONE s{i}", flush=True)
    time.sleep(60)
    """
)


def _run_child(store, mode, wait_for, timeout=60.0, delay_s=0.0):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(store), mode], stdout=subprocess.PIPE, text=True)
    done = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("DONE"):
                done.append(line.split()[1])
            if wait_for(line, done) or time.monotonic() > deadline:
                break
        time.sleep(delay_s)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return done


def _check_consistent(store, monkeypatch):
    """The store reopens, its audit verifies and its index matches the store."""
    con = sqlite3.connect(store)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    con.close()
    with Gallery.open(store, params=INDEXED) as g:
        n_audit = g.verify_audit()
        subjects = g.subjects(gallery="local")
        enrol_records = [r for r in g.audit_records() if r["action"] == "enroll"]
        assert sorted(r["subject"] for r in enrol_records) == sorted(subjects)  # audit exactly matches the store
        idx = g.index("local")
        fresh = g.rebuild_index("local")
        assert idx.ntotal == fresh.ntotal
        return subjects, n_audit


def test_kill_inside_the_enrolment_transaction(tmp_path, monkeypatch):
    store = tmp_path / "booking.db"
    done = _run_child(store, "in-transaction", lambda line, done: line == "IN-TX")
    assert done == [f"s{i}" for i in range(5)]
    subjects, _ = _check_consistent(store, monkeypatch)
    assert sorted(subjects) == sorted(done)  # s5 lost entirely, nothing else lost


def test_kill_at_a_random_point_loses_at_most_one(tmp_path, monkeypatch):
    store = tmp_path / "booking.db"
    done = _run_child(store, "loop", lambda line, done: len(done) >= 12)
    subjects, _ = _check_consistent(store, monkeypatch)
    assert set(done) <= set(subjects)  # every reported enrolment survived
    assert len(subjects) <= len(done) + 1  # at most the one in flight beyond them
    # and the store keeps working after the crash
    from biomatch.synthetic import template_batch

    t = next(template_batch(61, 1, seed=3)).templates()[60]
    with Gallery.open(store) as g:
        g.enroll("after", {1: t}, gallery="local", operator="test")
        assert g.search({1: t}, galleries=["local"], operator="test")[0].subject == "after"


def test_kill_during_index_write_leaves_a_usable_index(tmp_path, monkeypatch):
    store = tmp_path / "booking.db"
    _run_child(store, "index-write", lambda line, done: line == "READY", delay_s=0.7)
    subjects, _ = _check_consistent(store, monkeypatch)
    assert len(subjects) == 30
    from biomatch.index import GalleryIndex

    # the file in place is complete (old or new), never half written
    idx = GalleryIndex.load(store.with_name(store.name + ".local.faiss"), "local")
    assert idx is not None and idx.generation >= 1
    assert not list(tmp_path.glob(".*.tmp"))  # the dead writer's temp file was cleaned up by the next save


WRITER = textwrap.dedent(
    """
    import sys
    from biomatch.gallery import Gallery
    from biomatch.synthetic import template_batch

    store, first = sys.argv[1], int(sys.argv[2])
    ts = next(template_batch(first + 15, 1, seed=3)).templates()[first:]
    with Gallery.open(store) as g:
        for i, t in enumerate(ts):
            g.enroll(f"p{first + i}", {0: t}, gallery="local", operator=f"proc{first}")
            g.search({0: t}, galleries=["local"], operator=f"proc{first}")
    """
)


def test_two_processes_write_concurrently(tmp_path, monkeypatch):
    store = tmp_path / "booking.db"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(store), str(first)]) for first in (0, 15)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    subjects, n_audit = _check_consistent(store, monkeypatch)
    assert len(subjects) == 30 and n_audit == 60
