"""Gallery store: enrolment, search, fusion, update/delete, bad input, concurrency, persistence."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading

import numpy as np
import pytest

import biomatch as bm
from biomatch import gallery as gallery_mod
from biomatch.search import SearchParams
from biomatch.errors import AuditError, CalibrationError, GalleryError, TemplateError
from biomatch.gallery import Candidate, Gallery
from biomatch.gallery import features as gallery_features
from biomatch.search.ranking import fisher_fmr


@pytest.fixture(scope="module")
def mated():
    """40 synthetic fingers x 2 impressions: (gallery templates, probe templates)."""
    from biomatch.synthetic import template_batch

    block = next(template_batch(40, 2, seed=11))
    ts = block.templates()
    return ts[0::2], ts[1::2]


#: Searches go through the FAISS shortlist and the feature file even for these small galleries.
INDEXED = SearchParams(exhaustive_max_fingers=0)


@pytest.fixture
def store(tmp_path):
    return tmp_path / "booking.db"


@pytest.fixture
def calibration():
    rng = np.random.default_rng(0)
    scores = np.clip(rng.gamma(2.0, 0.01, size=2000), 0, 1)
    return bm.Calibration.fit(scores, source="test", matcher_version="test")


def _enrol_ten(g, mated, n_subjects=4, gallery="local"):
    """Subjects with 10 fingers each, positions 1-10, from consecutive synthetic fingers."""
    gal, _ = mated
    for s in range(n_subjects):
        g.enroll(f"subj-{s}", {p: gal[s * 10 + p - 1] for p in range(1, 11)}, gallery=gallery, operator="desk")


def test_create_store_mode_schema_and_wal(store):
    with Gallery.open(store) as g:
        assert g.galleries() == []
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    con = sqlite3.connect(store)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(gallery_mod.SCHEMA_VERSION)
    con.close()


def test_lazy_public_names():
    assert bm.Gallery is Gallery and bm.Candidate is Candidate


def test_enroll_get_subjects_stats(store, mated):
    gal, _ = mated
    with Gallery.open(store) as g:
        seq = g.enroll("s1", {2: gal[0], 7: gal[1]}, gallery="local", operator="desk", metadata={"name": "x"},
                       transaction_id="TCN-1")
        assert seq == 1
        rec = g.get("s1", gallery="local")
        assert set(rec.fingers) == {2, 7} and rec.metadata == {"name": "x"}
        assert rec.fingers[2].position == 2 and len(rec.fingers[2]) == len(gal[0])
        assert g.subjects(gallery="local") == ["s1"]
        st = g.stats()
        assert st["galleries"]["local"]["subjects"] == 1 and st["galleries"]["local"]["fingers"] == 2
        r = g.audit_records()[-1]
        assert r["action"] == "enroll" and r["transaction_id"] == "TCN-1" and r["operator"] == "desk"
        assert set(r["fingers"]) == {"2", "7"}


def test_single_finger_search_finds_mate_exhaustive_and_indexed(store, mated):
    gal, probes = mated
    with Gallery.open(store) as g:
        g.enroll_many([(f"s{i}", {0: t}) for i, t in enumerate(gal)], gallery="local", operator="desk")
    for exhaustive_max in (10_000, 0):  # whole-gallery rescoring, then the FAISS shortlist
        with Gallery.open(store, params=SearchParams(exhaustive_max_fingers=exhaustive_max)) as g:
            hits = 0
            for i in range(10):
                cands = g.search({0: probes[i]}, galleries=["local"], max_candidates=5, operator="desk")
                assert 1 <= len(cands) <= 5
                assert [c.rank for c in cands] == list(range(1, len(cands) + 1))
                assert all(a.score >= b.score for a, b in zip(cands, cands[1:])) or np.isnan(cands[0].fmr) is False
                hits += cands[0].subject == f"s{i}"
            assert hits >= 8


def test_candidate_is_frozen_with_finger_detail(store, mated):
    gal, probes = mated
    with Gallery.open(store) as g:
        g.enroll("a", {3: gal[0]}, gallery="local", operator="desk")
        c = g.search({3: probes[0]}, galleries=["local"], operator="desk")[0]
        with pytest.raises(Exception):
            c.score = 1.0
        f = c.fingers[0]
        assert (f.probe_position, f.position) == (3, 3)
        assert f.score == pytest.approx(c.score)
        assert len(f.pairs) > 0 and all(0 <= a < len(probes[0]) and 0 <= b < len(gal[0]) for a, b in f.pairs)
        assert f.pairs == tuple(map(tuple, bm.verify(probes[0], gal[0]).pairs.tolist()))
        json.dumps(c.to_dict())


def test_tenprint_fusion_same_positions(store, mated, calibration):
    gal, probes = mated
    with Gallery.open(store) as g:
        g.set_calibration(calibration, operator="admin")
        _enrol_ten(g, mated)
        probe = {p: probes[1 * 10 + p - 1] for p in range(1, 11)}  # subject 1's second impressions
        cands = g.search(probe, galleries=["local"], max_candidates=4, operator="desk")
        top = cands[0]
        assert top.subject == "subj-1"
        assert len(top.fingers) == 10
        assert all(f.probe_position == f.position for f in top.fingers)  # same positions when known
        assert top.score == pytest.approx(sum(f.score for f in top.fingers))
        # fused FMR (Fisher) is at least as strong as the best finger and in [0, 1]
        assert 0.0 <= top.fmr <= min(f.fmr for f in top.fingers) + 1e-12
        assert top.fpir >= top.fmr
        fmrs = [c.fmr for c in cands]
        assert fmrs == sorted(fmrs)


def test_unknown_position_is_best_of(store, mated):
    gal, probes = mated
    with Gallery.open(store) as g:
        g.enroll("x", {1: gal[5], 2: gal[6], 3: gal[7]}, gallery="local", operator="desk")
        c = g.search({0: probes[6]}, galleries=["local"], operator="desk")[0]
        assert c.fingers[0].position == 2  # the best of the subject's fingers


def test_fisher_single_finger_is_identity_and_monotone():
    f = fisher_fmr
    assert f(np.array([1e-3])) == pytest.approx(1e-3)
    assert f(np.array([1e-3, 1e-3])) < 1e-3
    assert f(np.array([1e-3, 0.5])) > f(np.array([1e-3, 1e-2]))
    assert f(np.array([1.0, 1.0])) == pytest.approx(1.0)


def test_threshold_decision_and_audit(store, mated, calibration):
    gal, probes = mated
    with Gallery.open(store) as g:
        g.set_calibration(calibration, operator="admin")
        g.enroll("a", {2: gal[0]}, gallery="local", operator="desk")
        g.enroll("b", {2: gal[1]}, gallery="local", operator="desk")
        seq = g.set_threshold(0.99, gallery="local", operator="admin")
        assert g.audit_records()[-1]["action"] == "threshold" and g.audit_records()[-1]["seq"] == seq
        assert g.search({2: probes[0]}, galleries=["local"], operator="desk") == []
        assert g.audit_records()[-1]["decision"] == "no-hit"
        hits = g.search({2: probes[0]}, galleries=["local"], threshold=0.0, operator="desk")
        assert [c.subject for c in hits][0] == "a"
        last = g.audit_records()[-1]
        assert last["decision"] == "hit" and last["threshold"] == 0.0
        assert last["candidates"][0]["subject"] == "a"
        assert set(last["probe"]) == {"2"} and len(last["probe"]["2"]) == 64  # sha256, not the template


def test_records_name_the_software_and_the_calibration(store, mated):
    """Enrolment, update and search records say which extractor / matcher made their
    templates and scores, and a search record which calibration made its FMRs."""
    from biomatch import __version__
    from biomatch.calibration import Calibration, default_calibration
    from biomatch.extraction import EXTRACTOR_VERSION
    from biomatch.scoring import MATCHER_VERSION

    gal, probes = mated
    software = {"biomatch": __version__, "extractor": EXTRACTOR_VERSION, "matcher": MATCHER_VERSION}
    with Gallery.open(store) as g:
        g.enroll("a", {2: gal[0]}, gallery="local", operator="desk")
        g.enroll_many([("b", {2: gal[1]})], gallery="local", operator="desk")
        g.update("a", {3: gal[2]}, gallery="local", operator="desk")
        g.search({2: probes[0]}, galleries=["local"], operator="desk")
        enrol, bulk, update, search = g.audit_records()[-4:]
        assert [r["action"] for r in (enrol, bulk, update, search)] == ["enroll", "enroll", "update", "search"]
        for r in (enrol, bulk, update, search):
            assert r["software"] == software
        assert search["calibration"] == f"default:{default_calibration().metadata['date']}"
        rng = np.random.default_rng(0)
        g.set_calibration(Calibration.fit(rng.uniform(0.0, 0.05, 2000), source="test", matcher_version=MATCHER_VERSION), operator="admin")
        g.search({2: probes[0]}, galleries=["local"], operator="desk")
        stored = g.audit_records()[-1]["calibration"]
        assert stored.startswith("store:") and stored != search["calibration"]


def test_threshold_needs_calibration(store, mated, monkeypatch):
    gal, probes = mated
    monkeypatch.setattr(Gallery, "_calibration_entry", lambda self: (None, None))
    with Gallery.open(store) as g:
        g.enroll("a", {2: gal[0]}, gallery="local", operator="desk")
        with pytest.raises(CalibrationError, match="threshold"):
            g.search({2: probes[0]}, threshold=0.1, operator="desk")


def test_search_several_galleries_and_default_all(store, mated):
    gal, probes = mated
    with Gallery.open(store) as g:
        g.enroll("a", {2: gal[0]}, gallery="local", operator="desk")
        g.enroll("b", {2: gal[1]}, gallery="national", operator="desk")
        c = g.search({2: probes[1]}, galleries=["local", "national"], operator="desk")
        assert c[0].subject == "b" and c[0].gallery == "national"
        assert {x.gallery for x in g.search({2: probes[0]}, operator="desk")} == {"local", "national"}


def test_update_replaces_finger_and_metadata(store, mated):
    gal, probes = mated
    with Gallery.open(store) as g:
        g.enroll("a", {2: gal[0]}, gallery="local", operator="desk", metadata={"v": 1})
        g.enroll("b", {2: gal[1]}, gallery="local", operator="desk")
        g.update("a", {2: gal[3], 4: gal[4]}, gallery="local", operator="desk", metadata={"v": 2})
        rec = g.get("a", gallery="local")
        assert set(rec.fingers) == {2, 4} and rec.metadata == {"v": 2}
        assert np.allclose(rec.fingers[2].minutiae["x"], gal[3].minutiae["x"], atol=0.25)  # quarter-pixel storage
        assert g.search({2: probes[3]}, galleries=["local"], operator="desk")[0].subject == "a"
        g.update("a", gallery="local", operator="desk", remove_positions=[4])
        assert set(g.get("a", gallery="local").fingers) == {2}
        assert g.audit_records()[-1]["action"] == "update"


def test_delete_is_true_deletion(store, mated, monkeypatch):
    gal, probes = mated
    with Gallery.open(store, params=INDEXED) as g:
        g.enroll("a", {2: gal[0]}, gallery="local", operator="desk", originals={None: b"EBTS-BYTES"})
        g.enroll("b", {2: gal[1]}, gallery="local", operator="desk")
        g.search({2: probes[0]}, galleries=["local"], operator="desk")  # builds and saves the index
        codes_before = g.index("local").ntotal
        g.delete("a", gallery="local", operator="desk", transaction_id="T-9")
        assert g.subjects(gallery="local") == ["b"]
        assert g.index("local").ntotal < codes_before
        assert all(c.subject != "a" for c in g.search({2: probes[0]}, galleries=["local"], operator="desk"))
        rec = [r for r in g.audit_records() if r["action"] == "delete"][0]
        assert rec["subject"] == "a" and rec["transaction_id"] == "T-9" and "fingers" not in rec
    con = sqlite3.connect(store)
    assert con.execute("SELECT count(*) FROM originals").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM fingers").fetchone()[0] == 1
    con.close()
    assert b"EBTS-BYTES" not in store.read_bytes()
    feat = sqlite3.connect(f"{store}.features")
    assert feat.execute("SELECT count(*) FROM rows").fetchone()[0] == 1  # derived rows of 'a' deleted too
    feat.close()
    # the saved index no longer holds subject a's fingers
    from biomatch.index import GalleryIndex

    idx = GalleryIndex.load(store.with_name(store.name + ".local.faiss"), "local")
    assert idx is not None and idx.ntotal == codes_before - (codes_before - idx.ntotal)
    with Gallery.open(store, params=INDEXED) as g:
        assert g.index("local").ntotal == idx.ntotal


def _snapshot(path):
    con = sqlite3.connect(path)
    out = {t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in ("galleries", "subjects", "fingers", "audit")}
    con.close()
    return out


@pytest.mark.parametrize(
    "call, error, field",
    [
        (lambda g, t: g.enroll("a", {11: t}, gallery="local"), GalleryError, r"fingers\[11\]"),
        (lambda g, t: g.enroll("a", {-1: t}, gallery="local"), GalleryError, r"fingers\[-1\]"),
        (lambda g, t: g.enroll("a", {"2": t}, gallery="local"), GalleryError, r"fingers\['2'\]"),
        (lambda g, t: g.enroll("a", {}, gallery="local"), GalleryError, "fingers: no fingers"),
        (lambda g, t: g.enroll("s0", {2: t}, gallery="local"), GalleryError, "already enrolled"),
        (lambda g, t: g.enroll("new", {2: t}, gallery="bad name!"), GalleryError, "gallery"),
        (lambda g, t: g.enroll("", {2: t}, gallery="local"), GalleryError, "subject_id"),
        (lambda g, t: g.enroll("new", {2: t, 3: "nope"}, gallery="local"), GalleryError, r"fingers\[3\]"),
        (lambda g, t: g.enroll("new", {2: t, 3: b"garbage"}, gallery="local"), bm.BiomatchError, r"fingers\[3\]"),
        (lambda g, t: g.enroll("new", {2: t.__class__(np.array(t.minutiae[:1]), t.width, t.height)}, gallery="local"),
         TemplateError, r"fingers\[2\]"),
        (lambda g, t: g.enroll("new", {2: t}, gallery="local", metadata={"x": object()}), GalleryError, "metadata"),
        (lambda g, t: g.delete("ghost", gallery="local"), GalleryError, "not enrolled"),
        (lambda g, t: g.delete("s0", gallery="nowhere"), GalleryError, "no gallery"),
        (lambda g, t: g.update("ghost", {2: t}, gallery="local"), GalleryError, "not enrolled"),
        (lambda g, t: g.update("s0", gallery="local", remove_positions=[2]), GalleryError, "without fingers"),
        (lambda g, t: g.search({2: t}, galleries=["nowhere"]), GalleryError, "no gallery"),
        (lambda g, t: g.search({2: t}, max_candidates=0), GalleryError, "max_candidates"),
        (lambda g, t: g.search({}), GalleryError, "probe_fingers"),
        (lambda g, t: g.set_threshold(3.0), GalleryError, "threshold"),
    ],
)
def test_bad_input_names_field_and_changes_nothing(store, mated, call, error, field):
    gal, _ = mated
    with Gallery.open(store) as g:
        g.enroll("s0", {2: gal[0]}, gallery="local", operator="desk")
        before = _snapshot(store)
        with pytest.raises(error, match=field):
            call(g, gal[1])
        assert _snapshot(store) == before
        assert g.verify_audit() == len(before["audit"])


def test_concurrent_searches_and_a_writer(store, mated, monkeypatch):
    gal, probes = mated
    with Gallery.open(store, params=INDEXED) as g:
        g.enroll_many([(f"s{i}", {0: gal[i]}) for i in range(20)], gallery="local", operator="desk")
        errors, results = [], {}

        def searcher(i):
            try:
                results[i] = g.search({0: probes[i]}, galleries=["local"], operator=f"t{i}")[0].subject
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def writer():
            try:
                for i in range(20, 26):
                    g.enroll(f"s{i}", {0: gal[i]}, gallery="local", operator="w")
            except Exception as exc:  # pragma: no cover
                errors.append(exc)

        threads = [threading.Thread(target=searcher, args=(i,)) for i in range(8)] + [threading.Thread(target=writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert sum(results[i] == f"s{i}" for i in range(8)) >= 6
        assert g.verify_audit() == 20 + 8 + 6
        assert len(g.subjects(gallery="local")) == 26
        assert g.search({0: probes[25]}, galleries=["local"], operator="x")[0].subject == "s25"


def test_second_handle_sees_committed_data_and_index_catches_up(store, mated, monkeypatch):
    gal, probes = mated
    with Gallery.open(store, params=INDEXED) as a, Gallery.open(store, params=INDEXED) as b:
        a.enroll_many([(f"s{i}", {0: gal[i]}) for i in range(10)], gallery="local", operator="a")
        assert b.search({0: probes[3]}, galleries=["local"], operator="b")[0].subject == "s3"
        a.enroll("s20", {0: gal[20]}, gallery="local", operator="a")  # b's loaded index is now stale
        assert b.search({0: probes[20]}, galleries=["local"], operator="b")[0].subject == "s20"
        a.delete("s3", gallery="local", operator="a")
        assert all(c.subject != "s3" for c in b.search({0: probes[3]}, galleries=["local"], operator="b"))
        assert a.verify_audit() == b.verify_audit()


def test_index_file_stale_or_foreign_is_rebuilt(store, mated, monkeypatch):
    gal, probes = mated
    path = store.with_name(store.name + ".local.faiss")
    with Gallery.open(store, params=INDEXED) as g:
        g.enroll_many([(f"s{i}", {0: gal[i]}) for i in range(10)], gallery="local", operator="a")
        n = g.index("local").ntotal
    assert path.exists()
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # corrupt a partition
    path.write_bytes(bytes(data))
    with Gallery.open(store, params=INDEXED) as g:
        assert g.index("local").ntotal == n
        assert g.search({0: probes[2]}, galleries=["local"], operator="a")[0].subject == "s2"
    path.write_bytes(b"not an index")
    with Gallery.open(store, params=INDEXED) as g:
        assert g.index("local").ntotal == n


def test_audit_tamper_detected_through_gallery(store, mated):
    gal, probes = mated
    with Gallery.open(store) as g:
        g.enroll("a", {2: gal[0]}, gallery="local", operator="desk")
        g.search({2: probes[0]}, operator="desk")
        assert g.verify_audit() == 2
    con = sqlite3.connect(store)
    text = con.execute("SELECT record FROM audit WHERE seq = 2").fetchone()[0]
    con.execute("UPDATE audit SET record = ? WHERE seq = 2", (text.replace('"desk"', '"someone-else"'),))
    con.commit()
    con.close()
    with Gallery.open(store) as g:
        with pytest.raises(AuditError, match="record 2"):
            g.verify_audit()


def test_open_rejects_non_store(tmp_path):
    bad = tmp_path / "x.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="x.db"):
        Gallery.open(bad)
    with pytest.raises(GalleryError, match="path"):
        Gallery.open(42)


def test_cli_enroll_search_delete_info_audit(tmp_path, mated, capsys):
    from biomatch.cli import main

    gal, probes = mated
    bulk = tmp_path / "bulk"
    bulk.mkdir()
    for i in range(3):
        (bulk / f"p{i}_2.bmt").write_bytes(gal[i].to_bytes())
    (tmp_path / "probe.bmt").write_bytes(probes[1].to_bytes())
    store = str(tmp_path / "s.db")
    assert main(["enroll", "--folder", str(bulk), "--store", store, "--gallery", "local", "--operator", "me", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["enrolled"] == 3
    assert main(["search", "-f", f"2={tmp_path / 'probe.bmt'}", "--store", store, "-L", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["candidates"][0]["subject"] == "p1" and len(out["candidates"]) == 2
    assert main(["delete", "p1", "--store", store, "--gallery", "local", "--json"]) == 0
    capsys.readouterr()
    assert main(["info", "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["galleries"]["local"]["subjects"] == 2
    assert main(["audit", "verify", "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] == 5
    assert main(["audit", "export", "--store", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["action"] for x in lines] == ["enroll"] * 3 + ["search", "delete"]
    assert main(["delete", "ghost", "--store", store, "--gallery", "local"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ghost" in err
    con = sqlite3.connect(store)
    con.execute("DELETE FROM audit WHERE seq = 2")
    con.commit()
    con.close()
    assert main(["audit", "verify", "--store", store]) == 1
    assert "audit record 2" in capsys.readouterr().err


def test_cli_ebts_enrol_and_search_audit_ori_tcn(tmp_path, formats_data, capsys):
    import warnings

    from biomatch.cli import main

    tx = formats_data / "libbiomeval_test_data" / "type9.an2k"
    if not tx.exists():
        pytest.skip("type9.an2k sample absent")
    store = str(tmp_path / "e.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["enroll", "bk1", "--ebts", str(tx), "--store", store, "--json"]) == 0
        assert main(["search", "--ebts", str(tx), "--store", store, "--json"]) == 0
    out = capsys.readouterr().out
    assert '"subject": "bk1"' in out
    with Gallery.open(store) as g:
        recs = g.audit_records()
        assert [r["action"] for r in recs] == ["enroll", "search"]
        assert all(r["context"]["ori"] and r["context"]["tcn"] == r["transaction_id"] for r in recs)
        assert g.get("bk1").originals[0][1] == "transaction"


def test_scores_identical_after_derived_files_are_lost(store, mated, calibration, monkeypatch):
    """Enrolment derives its rows and codes from the template as stored: a rebuild scores the same."""
    gal, probes = mated
    probe_sets = [{2: probes[i]} for i in range(0, 40, 7)] + [{0: probes[3], 2: probes[4]}]

    def run(g):
        return [g.search(p, galleries=["local"], max_candidates=8, operator="desk") for p in probe_sets]

    with Gallery.open(store, params=INDEXED) as g:
        g.set_calibration(calibration, operator="admin")
        g.enroll_many([(f"s{i}", {2 if i % 2 else 0: t}) for i, t in enumerate(gal)], gallery="local", operator="desk")
        g.enroll("late", {2: gal[5]}, gallery="local", operator="desk")
        before = run(g)
    derived = [store.with_name(store.name + ".features"), store.with_name(store.name + ".local.faiss")]
    assert all(p.exists() for p in derived)
    for p in derived:
        p.unlink()
    with Gallery.open(store, params=INDEXED) as g:
        after = run(g)
    assert after == before  # subjects, ranks, scores and FMRs bit for bit


def test_caches_are_bounded_in_bytes_not_only_entries(store, mated, monkeypatch):
    """The LRUs of rescoring rows and templates evict by bytes: rows of fingers with many
    minutiae are larger, and a count bound alone lets the memory drift up."""
    from biomatch.scoring import pack

    gal, probes = mated
    lru = gallery_mod.LRU(100, max_bytes=50_000)
    sizes = {}
    for i, t in enumerate(gal[:20]):
        e = pack([t])
        sizes[i] = gallery_features.nbytes(e)
        assert sizes[i] > sum(getattr(e, f).nbytes for f in e.__dataclass_fields__) - 1
        lru.put(i, e)
        assert lru.nbytes <= 50_000
    assert len(lru) < 20  # evicted by bytes, far below the entry bound
    assert lru.get(0) is None and lru.get(19) is not None  # oldest first
    assert lru.nbytes == sum(sizes[k] for k in lru._d)
    lru.pop(19)
    assert lru.nbytes == sum(sizes[k] for k in lru._d)
    # a row read back from the feature file is a view of its bytes: those count
    row = gallery_mod.FeatureStore._dump(pack([gal[0]]))
    view = gallery_mod.FeatureStore._load(row)
    assert gallery_features.nbytes(view) >= len(row)
    # a template counts its descriptors once they are cached on it
    t = bm.load_template(gal[1].to_bytes())
    bare = gallery_features.nbytes(t)
    from biomatch.descriptors import encode

    encode(t)
    assert gallery_features.nbytes(t) > bare + 1000
    # the gallery's own caches honour the byte bound through searches
    monkeypatch.setattr(gallery_features, "FEATURE_CACHE_BYTES", 60_000)
    with Gallery.open(store) as g:
        for i, t in enumerate(gal[:30]):
            g.enroll(f"s{i}", {1: t}, gallery="local")
        g.search({1: probes[3]}, galleries=["local"])
        assert 0 < g._packs.nbytes <= 60_000 and len(g._packs) < 30


def test_feature_rows_join_into_the_pack_of_their_templates(mated):
    """Serialised rescoring rows joined in one batch are scoring.pack of the templates; bad rows are refused."""
    import dataclasses

    from biomatch.scoring import pack

    gal, probes = mated
    rows = [gallery_mod.FeatureStore._dump(pack([t])) for t in gal[:12]]
    joined, whole = gallery_mod.FeatureStore.join(rows), pack(gal[:12])
    for f in dataclasses.fields(whole):
        a, b = getattr(joined, f.name), getattr(whole, f.name)
        assert a.dtype == b.dtype and np.array_equal(a, b), f.name
    assert joined.bits.flags.writeable
    # split rows (as the search's cache keeps them) join to the same batch; one split row is its template's pack
    split = [gallery_mod.FeatureStore.split(r) for r in rows]
    again = gallery_mod.FeatureStore.join(split[:5] + rows[5:])
    one = gallery_mod.FeatureStore.packed(split[3])
    for f in dataclasses.fields(whole):
        assert np.array_equal(getattr(again, f.name), getattr(whole, f.name)), f.name
        assert np.array_equal(getattr(one, f.name), getattr(pack([gal[3]]), f.name)), f.name
    assert len(gallery_mod.FeatureStore.join([])) == 0
    with pytest.raises(ValueError, match="length"):
        gallery_mod.FeatureStore.join([rows[0][:-8]])
    # rows of another layout (a field of another dtype) are refused, not silently converted
    p = pack([gal[0]])
    odd = gallery_mod.FeatureStore._dump(dataclasses.replace(p, theta=p.theta.astype(np.float32)))
    with pytest.raises(GalleryError, match="different layouts"):
        gallery_mod.FeatureStore.join([rows[0], odd])


def test_search_params_are_checked_frozen_and_used(store, mated):
    import dataclasses

    with pytest.raises(GalleryError, match=r"params\.ivf_nprobe: expected an integer 1\.\.2048"):
        SearchParams(ivf_nprobe=0)
    with pytest.raises(GalleryError, match=r"params\.shortlist_fingers"):
        SearchParams(shortlist_fingers=True)
    with pytest.raises(GalleryError, match="params: expected a biomatch.SearchParams"):
        Gallery.open(store, params={"exhaustive_max_fingers": 0})
    p = SearchParams(exhaustive_max_fingers=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.exhaustive_max_fingers = 5
    assert SearchParams() == SearchParams(exhaustive_max_fingers=gallery_mod.EXHAUSTIVE_MAX_FINGERS)
    gal, probes = mated

    def searches_through_the_index(g) -> bool:
        calls, knn = [], g._neighbours
        g._neighbours = lambda *a, **kw: calls.append(1) or knn(*a, **kw)
        assert g.search({0: probes[0]}, galleries=["local"], operator="desk")[0].subject == "s0"
        return bool(calls)

    with Gallery.open(store) as g:
        g.enroll_many([(f"s{i}", {0: gal[i]}) for i in range(12)], gallery="local", operator="desk")
        assert not searches_through_the_index(g)  # 12 fingers <= the default exhaustive limit
    with Gallery.open(store, params=p) as g:
        assert g.params is p and searches_through_the_index(g)
