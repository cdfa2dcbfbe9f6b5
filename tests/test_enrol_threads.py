"""Bulk enrolment prepares each batch's fingers on several threads (ENROL_THREADS): the store it
writes is the one a single thread writes, batches and failures behave as before."""

from __future__ import annotations

import sqlite3

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::biomatch.gallery.checks.TemplateQualityWarning")

from biomatch.errors import GalleryError
from biomatch.gallery import Gallery
from biomatch.gallery import enrolment


@pytest.fixture(scope="module")
def templates():
    from biomatch.synthetic import template_batch

    return next(template_batch(30, 1, seed=5)).templates()


def _subjects(ts):
    # one to three fingers a subject, so that batches end inside a subject's fingers
    out, k = [], 0
    for s in range(12):
        n = 1 + s % 3
        out.append((f"s{s}", {p: ts[(k + p) % len(ts)] for p in range(n)}, {"n": n}))
        k += n
    return out


def _contents(path):
    con = sqlite3.connect(path)
    try:
        fingers = con.execute(
            "SELECT s.subject, f.position, f.sha256, f.n_minutiae, f.template FROM fingers f "
            "JOIN subjects s ON s.id = f.subject_id ORDER BY f.id").fetchall()
        changes = con.execute("SELECT generation, op, finger_id, position FROM changes ORDER BY rowid").fetchall()
    finally:
        con.close()
    feat = sqlite3.connect(str(path) + ".features")
    try:
        tables = [r[0] for r in feat.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        rows = {t: sorted(feat.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
    finally:
        feat.close()
    return fingers, changes, rows


def test_threads_write_the_store_one_thread_writes(tmp_path, templates, monkeypatch):
    monkeypatch.setattr(enrolment, "BULK_BATCH", 5)
    results, progress = [], []
    for threads in (1, 3):
        monkeypatch.setattr(enrolment, "ENROL_THREADS", threads)
        path = tmp_path / f"t{threads}.db"
        calls = []
        with Gallery.open(path) as g:
            assert g.enroll_many(_subjects(templates), gallery="g", operator="desk", progress=calls.append) == 12
            hits = g.search({0: templates[4]}, galleries=["g"], max_candidates=5, operator="desk")
        results.append((_contents(path), [(c.subject, round(c.score, 12)) for c in hits]))
        progress.append(calls)
    assert results[0] == results[1]
    assert progress[0] == progress[1] and sum(progress[0]) == 12 and len(progress[0]) > 2
    fingers, _, rows = results[0][0]
    assert len(fingers) == 24 and any(len(v) >= 20 for v in rows.values())  # rows were written
    assert results[0][1] and results[0][1][0][0] in {"s1", "s2", "s3"}  # template 4 is enrolled there


def test_a_bad_subject_stops_at_its_batch(tmp_path, templates, monkeypatch):
    monkeypatch.setattr(enrolment, "BULK_BATCH", 4)
    monkeypatch.setattr(enrolment, "ENROL_THREADS", 3)
    items = [(f"s{i}", {0: templates[i]}) for i in range(6)] + [("s0", {0: templates[7]})]  # s0 again
    with Gallery.open(tmp_path / "bad.db") as g:
        with pytest.raises(GalleryError, match="s0"):
            g.enroll_many(items, gallery="g", operator="desk")
        assert sorted(g.subjects(gallery="g")) == ["s0", "s1", "s2", "s3"]  # the first batch stays
