"""Extra impressions of a subject's fingers: the schema and its migration, enrolment, update,
delete, search (best of a finger's impressions), import, check, bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import numpy as np
import pytest

import biomatch as bm
from biomatch.errors import GalleryError
from biomatch.gallery import SCHEMA_VERSION, Gallery, Impression
from biomatch.gallery import migrate as migrate_mod
from biomatch.search import SearchParams

#: Searches go through the FAISS shortlist even for these small galleries.
INDEXED = SearchParams(exhaustive_max_fingers=0)

#: The finger table as schema 1 wrote it (one row per subject and position).
V1_FINGERS = """
CREATE TABLE fingers_v1(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    position INTEGER NOT NULL CHECK(position BETWEEN 0 AND 10),
    template BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    n_minutiae INTEGER NOT NULL,
    quality INTEGER NOT NULL,
    UNIQUE(subject_id, position)
)"""


@pytest.fixture(scope="module")
def prints():
    """30 synthetic fingers x 3 impressions: list of 3 lists of templates."""
    from biomatch.synthetic import template_batch

    ts = next(template_batch(30, 3, seed=23)).templates()
    return [ts[0::3], ts[1::3], ts[2::3]]


def _downgrade_to_v1(path) -> None:
    """Turn a schema-2 store holding primary prints only into the schema-1 store an older build wrote."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA foreign_keys=OFF")
    con.execute("BEGIN")
    con.execute(V1_FINGERS)
    con.execute("INSERT INTO fingers_v1 SELECT id, subject_id, position, template, sha256, n_minutiae, quality "
                "FROM fingers ORDER BY id")
    seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'fingers'").fetchone()[0]
    con.execute("DROP TABLE fingers")
    con.execute("ALTER TABLE fingers_v1 RENAME TO fingers")
    con.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'fingers'", (seq,))
    con.execute("CREATE INDEX fingers_subject ON fingers(subject_id)")
    con.execute("CREATE INDEX fingers_sha ON fingers(sha256)")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def _v1_store(path, prints, n=6):
    """A schema-1 store: n subjects with fingers 1 and 2, the last subject enrolled then deleted
    (so the AUTOINCREMENT counter is ahead of the largest id)."""
    with Gallery.open(path) as g:
        for s in range(n):
            g.enroll(f"s{s}", {1: prints[0][s], 2: prints[0][s + n]}, gallery="local", operator="desk")
        g.delete(f"s{n - 1}", gallery="local", operator="desk")
    _downgrade_to_v1(path)


def _columns(path) -> list:
    con = sqlite3.connect(path)
    try:
        return [r[1] for r in con.execute("PRAGMA table_info(fingers)")]
    finally:
        con.close()


# -- schema and migration -------------------------------------------------------------------------
def test_a_schema_1_store_is_migrated_with_a_backup_and_an_audit_record(tmp_path, prints):
    path = tmp_path / "old.db"
    _v1_store(path, prints)
    con = sqlite3.connect(path)
    ids_before = con.execute("SELECT id, position, sha256 FROM fingers ORDER BY id").fetchall()
    counter_before = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'fingers'").fetchone()[0]
    con.close()
    assert "impression" not in _columns(path) and counter_before > ids_before[-1][0]
    with Gallery.open(path) as g:
        assert g.verify_audit() > 0
        rec = g.audit_records()[-1]
        assert rec["action"] == "migrate" and (rec["from_version"], rec["to_version"]) == (1, SCHEMA_VERSION)
        assert rec["rows"] == {"fingers_1_to_2": len(ids_before)}
        backup = rec["backup"]
        got = g.get("s0", gallery="local")
        assert set(got.fingers) == {1, 2} and got.impressions == {} and got.sources == {1: "primary", 2: "primary"}
        assert g.search({1: prints[1][0]}, galleries=["local"], operator="desk")[0].subject == "s0"
        # ids never reused: the next finger gets an id above the old counter
        g.enroll("new", {3: prints[0][20]}, gallery="local", operator="desk")
        new_id = g._con().execute("SELECT max(id) FROM fingers").fetchone()[0]
    assert new_id > counter_before
    assert {"impression", "source"} <= set(_columns(path))
    con = sqlite3.connect(path)
    assert con.execute("SELECT id, position, sha256 FROM fingers WHERE id <= ? ORDER BY id",
                       (ids_before[-1][0],)).fetchall() == ids_before
    assert {r[0] for r in con.execute("SELECT DISTINCT impression FROM fingers")} == {0}
    con.close()
    # the backup is the old store as it was, owner-only
    assert os.path.basename(backup).startswith("old.db.schema-v1.") and backup.endswith(".backup")
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
    bcon = sqlite3.connect(backup)
    assert bcon.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "1"
    assert bcon.execute("SELECT id, position, sha256 FROM fingers ORDER BY id").fetchall() == ids_before
    bcon.close()
    # opened again: nothing more to migrate
    with Gallery.open(path) as g:
        assert [r["action"] for r in g.audit_records()].count("migrate") == 1


def test_a_migration_failing_part_way_leaves_the_old_store_intact(tmp_path, prints, monkeypatch):
    path = tmp_path / "old.db"
    _v1_store(path, prints)
    con = sqlite3.connect(path)
    before = con.execute("SELECT * FROM fingers ORDER BY id").fetchall()
    audit_before = con.execute("SELECT count(*) FROM audit").fetchone()[0]
    con.close()

    def crash(con, n):
        assert con.execute("SELECT count(*) FROM fingers_v2").fetchone()[0] == n > 0  # half-way: copied
        raise RuntimeError("power cut")

    monkeypatch.setattr(migrate_mod, "copy_done", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        Gallery.open(path)
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "1"
    assert con.execute("SELECT * FROM fingers ORDER BY id").fetchall() == before
    assert "impression" not in _columns(path)
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'fingers_v2'").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM audit").fetchone()[0] == audit_before
    con.close()
    monkeypatch.undo()  # the next open migrates
    with Gallery.open(path) as g:
        assert g.get("s1", gallery="local").fingers.keys() == {1, 2}
        assert g.audit_records()[-1]["action"] == "migrate"


def test_a_newer_or_unknown_schema_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "b.db"
    with Gallery.open(path):
        pass
    for version in (str(SCHEMA_VERSION + 1), "0", "abc"):
        con = sqlite3.connect(path)
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
        con.commit()
        con.close()
        with pytest.raises(GalleryError, match=rf"b\.db: store schema version '{version}', this build reads "
                                               rf"{SCHEMA_VERSION} \(a newer or unknown schema"):
            Gallery.open(path)
        assert not list(tmp_path.glob("*.backup"))


def test_a_read_only_handle_does_not_migrate(tmp_path, prints):
    path = tmp_path / "old.db"
    _v1_store(path, prints, n=2)
    with pytest.raises(GalleryError, match="schema version '1', this build reads .* open the store writable once"):
        Gallery.open(path, mode="read")
    assert "impression" not in _columns(path)


# -- enrolment, get, bad input ------------------------------------------------------------------
def test_enrol_extra_impressions_get_and_audit(tmp_path, prints):
    with Gallery.open(tmp_path / "b.db") as g:
        seq = g.enroll("a", {2: prints[0][0], 3: prints[0][1]}, gallery="local", operator="desk",
                       sources={2: "rolled"},
                       impressions=[Impression(2, 1, prints[1][0], "slap 13"), (3, 2, prints[1][1], "plain")])
        rec = g.audit_records(since=seq)[0]
        got = g.get("a", gallery="local")
        stats = g.stats()["galleries"]["local"]
    assert set(got.fingers) == {2, 3} and got.sources == {2: "rolled", 3: "primary"}
    assert [(n, s) for n, s, _ in got.impressions[2]] == [(1, "slap 13")]
    assert [(n, s) for n, s, _ in got.impressions[3]] == [(2, "plain")]
    stored = got.impressions[2][0][2]
    assert stored.position == 2 and np.allclose(stored.minutiae["x"], prints[1][0].minutiae["x"], atol=0.5)
    assert [(i["position"], i["impression"], i["source"]) for i in rec["impressions"]] == [(2, 1, "slap 13"),
                                                                                         (3, 2, "plain")]
    assert rec["sources"] == {"2": "rolled", "3": "primary"}
    assert stats["fingers"] == 4 and stats["extra_impressions"] == 2


@pytest.mark.parametrize("impressions, message", [
    ([(2, 0, "P1", "plain")], r"impressions\[0\]: impression number 0 of finger 2 is out of range 1-9"),
    ([(2, 10, "P1", "plain")], r"impressions\[0\]: impression number 10 of finger 2 is out of range"),
    ([(2, True, "P1", "plain")], r"impression number True"),
    ([(2, 1, "P1", "plain"), (2, 1, "P2", "slap 13")], r"impressions\[1\]: impression 1 of finger 2 is given twice"),
    ([(4, 1, "P1", "plain")], r"impressions\[0\]: impression 1 of finger 4, but the subject has no primary print"),
    ([(11, 1, "P1", "plain")], r"impressions\[0\]: finger position 11 is not"),
    ([(2, 1, "P1", "Slap/13")], r"impressions\[0\]: source 'Slap/13' is not"),
    ([(2, 1)], r"impressions\[0\]: expected Impression"),
    ({2: "P1"}, r"impressions: expected a list of Impression"),
])
def test_bad_impressions_are_refused_naming_what_is_wrong(tmp_path, prints, impressions, message):
    subs = {"P1": prints[1][0], "P2": prints[2][0]}
    if isinstance(impressions, list):
        impressions = [tuple(subs.get(v, v) if isinstance(v, str) and v in subs else v for v in it) for it in impressions]
    with Gallery.open(tmp_path / "b.db") as g:
        g.enroll("keep", {2: prints[0][5]}, gallery="local", operator="desk")
        n_audit = g.verify_audit()
        with pytest.raises(GalleryError, match=message):
            g.enroll("a", {2: prints[0][0]}, gallery="local", operator="desk", impressions=impressions)
        assert g.subjects(gallery="local") == ["keep"] and g.verify_audit() == n_audit
        assert g.get("keep", gallery="local").fingers.keys() == {2}


# -- update and delete ---------------------------------------------------------------------------
def _rows(g, subject):
    return sorted(g._con().execute(
        "SELECT position, impression, source, sha256 FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
        "WHERE subject = ?", (subject,)).fetchall())


def test_update_keeps_or_drops_the_extra_impressions(tmp_path, prints):
    with Gallery.open(tmp_path / "b.db", params=INDEXED) as g:
        g.enroll("a", {2: prints[0][0], 3: prints[0][1]}, gallery="local", operator="desk",
                 impressions=[(2, 1, prints[1][0], "slap 13"), (3, 1, prints[1][1], "slap 13")])
        kept = _rows(g, "a")
        g.update("a", {2: prints[2][0]}, gallery="local", operator="desk")  # default: the extra ones stay
        rows = _rows(g, "a")
        assert [r[:2] for r in rows] == [(2, 0), (2, 1), (3, 0), (3, 1)] and rows[1] == kept[1] and rows[0] != kept[0]
        seq = g.update("a", {3: prints[2][1]}, gallery="local", operator="desk", keep_impressions=False)
        assert [r[:2] for r in _rows(g, "a")] == [(2, 0), (2, 1), (3, 0)]
        assert g.audit_records(since=seq)[0]["impressions_dropped"] == ["3.1"]
        # add one to an existing finger; a number it holds is refused, as is one without a primary
        g.update("a", gallery="local", operator="desk", impressions=[(3, 1, prints[1][1], "plain")])
        before = _rows(g, "a")
        with pytest.raises(GalleryError, match=r"already holds impression 1 of finger 2 \(source 'slap 13'\)"):
            g.update("a", gallery="local", operator="desk", impressions=[(2, 1, prints[1][5], "plain")])
        with pytest.raises(GalleryError, match=r"impression 1 of finger 7, but subject 'a' has no primary print"):
            g.update("a", gallery="local", operator="desk", impressions=[(7, 1, prints[1][5], "plain")])
        with pytest.raises(GalleryError, match="keep_impressions: expected True or False"):
            g.update("a", {2: prints[2][0]}, gallery="local", operator="desk", keep_impressions="no")
        assert _rows(g, "a") == before
        # removing a finger removes its impressions; the index follows every change
        g.update("a", gallery="local", operator="desk", remove_positions=[2])
        assert [r[:2] for r in _rows(g, "a")] == [(3, 0), (3, 1)]
        held = g.index("local").finger_ids()
        ids = {r[0] for r in g._con().execute("SELECT id FROM fingers")}
        assert set().union(*held.values()) == ids
        assert not g.check()["problems"]


def test_delete_removes_every_impression_and_its_index_entries(tmp_path, prints):
    with Gallery.open(tmp_path / "b.db", params=INDEXED) as g:
        g.enroll("a", {2: prints[0][0]}, gallery="local", operator="desk",
                 impressions=[(2, 1, prints[1][0], "slap 13"), (2, 2, prints[2][0], "plain")])
        g.enroll("b", {2: prints[0][1]}, gallery="local", operator="desk")
        assert sum(len(v) for v in g.index("local").finger_ids().values()) == 4
        g.delete("a", gallery="local", operator="desk")
        assert _rows(g, "a") == [] and g._con().execute("SELECT count(*) FROM fingers").fetchone()[0] == 1
        assert sum(len(v) for v in g.index("local").finger_ids().values()) == 1
        assert g.search({2: prints[1][0]}, galleries=["local"], operator="desk")[0].subject == "b"


def _finger_ids(g) -> tuple:
    """(finger ids the gallery's index holds, finger ids the store holds)."""
    held = g.index("local").finger_ids()
    return set().union(*held.values()), {r[0] for r in g._con().execute("SELECT id FROM fingers")}


def test_remove_impression_removes_one_extra_impression_from_store_index_and_searches(tmp_path, prints):
    from biomatch.scoring import verify

    path = tmp_path / "b.db"
    probe = {2: prints[1][0]}  # the very print stored as impression 1 of subject a's finger 2
    with Gallery.open(path, params=INDEXED) as g:
        g.enroll("a", {2: prints[0][0], 3: prints[0][1]}, gallery="local", operator="desk",
                 impressions=[(2, 1, prints[1][0], "slap 13"), (2, 2, prints[2][0], "plain"),
                              (3, 1, prints[1][1], "slap 14")])
        for s in range(2, 8):
            g.enroll(f"s{s}", {2: prints[0][s]}, gallery="local", operator="desk")
        before = {c.subject: c.score for c in g.search(probe, galleries=["local"], max_candidates=10, operator="d")}
        gone_sha = [r[3] for r in _rows(g, "a") if r[:2] == (2, 1)][0]
        seq = g.remove_impression("a", 2, 1, gallery="local", operator="desk", transaction_id="TCN-9")
        rec = g.audit_records(since=seq)[0]
        got = g.get("a", gallery="local")
        after = {c.subject: c.score for c in g.search(probe, galleries=["local"], max_candidates=10, operator="d")}
        stats = g.stats()["galleries"]["local"]  # before anything else loads or saves the index
        index_ids, store_ids = _finger_ids(g)
        report = g.check()
    assert [r[:3] for r in _rows_of(path, "a")] == [(2, 0, "primary"), (2, 2, "plain"), (3, 0, "primary"),
                                                   (3, 1, "slap 14")]
    assert [(n, src) for n, src, _ in got.impressions[2]] == [(2, "plain")] and set(got.fingers) == {2, 3}
    assert rec["action"] == "update" and rec["operator"] == "desk" and rec["transaction_id"] == "TCN-9"
    assert rec["subject"] == "a" and rec["impressions_dropped"] == ["2.1"] and rec["removed_positions"] == []
    assert rec["removed_impression"] == {"position": 2, "impression": 1, "source": "slap 13",
                                         "sha256": gone_sha}
    assert index_ids == store_ids and len(store_ids) == 4 + 6
    assert stats["index_file_generation"] == stats["generation"]  # the file rewritten without the removed codes
    assert report["problems"] == [] and report["galleries"]["local"]["extra_impressions"] == 2
    # the search no longer sees impression 1: a's score is now the best of what it still holds
    best_left = max(verify(probe[2], got.fingers[2]).score, verify(probe[2], got.impressions[2][0][2]).score)
    assert after["a"] < before["a"] and after["a"] == pytest.approx(best_left, abs=1e-6)
    with Gallery.open(path, params=INDEXED) as g:
        again = {c.subject: c.score for c in g.search(probe, galleries=["local"], max_candidates=10, operator="d")}
        assert again["a"] == pytest.approx(after["a"], abs=1e-9) and _finger_ids(g)[0] == store_ids


def _rows_of(path, subject):
    con = sqlite3.connect(path)
    try:
        return sorted(con.execute(
            "SELECT position, impression, source, sha256 FROM fingers JOIN subjects ON subjects.id = "
            "fingers.subject_id WHERE subject = ?", (subject,)).fetchall())
    finally:
        con.close()


@pytest.mark.parametrize("subject, position, impression, gallery, message", [
    ("a", 2, 0, "local", r"impression: impression number 0 of finger 2 is out of range 1-9 \(0 is the primary "
                         r"print: remove the finger with update\(remove_positions=\[2\]\) or replace it"),
    ("a", 2, 3, "local", r"impression: subject 'a' holds no impression 3 of finger 2 \(extra impressions held: "
                         r"\[1, 2\]\); nothing was changed"),
    ("a", 3, 1, "local", r"holds no impression 1 of finger 3 \(extra impressions held: none\)"),
    ("a", 2, 10, "local", r"impression: impression number 10 of finger 2 is out of range 1-9"),
    ("a", 2, True, "local", r"impression: impression number True"),
    ("a", 5, 1, "local", r"position: subject 'a' has no finger at 5; nothing was changed"),
    ("a", 11, 1, "local", r"position: finger position 11 is not"),
    ("nobody", 2, 1, "local", r"subject_id: 'nobody' is not enrolled in gallery 'local'"),
    ("a", 2, 1, "elsewhere", r"elsewhere"),
])
def test_remove_impression_refuses_bad_input_naming_it_and_changes_nothing(tmp_path, prints, subject, position,
                                                                           impression, gallery, message):
    with Gallery.open(tmp_path / "b.db", params=INDEXED) as g:
        g.enroll("a", {2: prints[0][0], 3: prints[0][1]}, gallery="local", operator="desk",
                 impressions=[(2, 1, prints[1][0], "slap 13"), (2, 2, prints[2][0], "plain")])
        rows, n_audit, ids = _rows(g, "a"), g.verify_audit(), _finger_ids(g)
        with pytest.raises(GalleryError, match=message):
            g.remove_impression(subject, position, impression, gallery=gallery, operator="desk")
        assert _rows(g, "a") == rows and g.verify_audit() == n_audit and _finger_ids(g) == ids


def test_cli_update_remove_impression(tmp_path, prints, capsys):
    from biomatch.cli import main

    path = tmp_path / "b.db"
    with Gallery.open(path) as g:
        g.enroll("a", {2: prints[0][0]}, gallery="local", operator="desk", impressions=[(2, 1, prints[1][0], "plain")])
    capsys.readouterr()
    assert main(["update", "a", "--remove-impression", "2.1", "--gallery", "local", "--store", str(path),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["removed_impression"] == {"position": 2, "impression": 1} and out["audit_seq"] > 0
    assert [r[:2] for r in _rows_of(path, "a")] == [(2, 0)]
    for argv, message in ((["--remove-impression", "2.1"], "holds no impression 1 of finger 2"),
                          (["--remove-impression", "2"], "--remove-impression: expected POS.N"),
                          (["--remove-impression", "2.0"], "0 is the primary print"),
                          (["--remove-impression", "2.1", "--remove", "2"], "give it on its own")):
        assert main(["update", "a", *argv, "--gallery", "local", "--store", str(path)]) == 1
        assert message in capsys.readouterr().err
    assert [r[:2] for r in _rows_of(path, "a")] == [(2, 0)]


# -- encryption, import, check ---------------------------------------------------------------------
def test_an_encrypted_impression_is_bound_to_its_number(tmp_path, prints):
    pytest.importorskip("cryptography")
    from biomatch.encryption import generate_key

    key, new = generate_key(), generate_key()
    with Gallery.open(tmp_path / "b.db", key=key) as g:
        g.enroll("a", {2: prints[0][0]}, gallery="local", operator="desk", impressions=[(2, 1, prints[1][0], "plain")])
        g.rotate_key(new, operator="admin")  # re-sealed bound to (position, impression) again
    with Gallery.open(tmp_path / "b.db", key=new) as g:
        got = g.get("a", gallery="local")
        assert got.impressions[2][0][2].position == 2
        con = g._con()
        (p_id, p_blob), (e_id, e_blob) = con.execute("SELECT id, template FROM fingers ORDER BY impression").fetchall()
        with g._write() as wcon:  # swap the two ciphertexts: neither decrypts in the other's row
            wcon.execute("UPDATE fingers SET template = ? WHERE id = ?", (e_blob, p_id))
            wcon.execute("UPDATE fingers SET template = ? WHERE id = ?", (p_blob, e_id))
        problems = g.check()["problems"]
        assert any(f"store finger {p_id}" in p for p in problems) and any(f"store finger {e_id}" in p for p in problems)


def test_import_carries_the_impressions_and_check_verifies_them(tmp_path, prints):
    src_path = tmp_path / "src.db"
    with Gallery.open(src_path) as src:
        src.enroll("a", {2: prints[0][0]}, gallery="g", operator="desk", sources={2: "rolled"},
                   impressions=[(2, 1, prints[1][0], "slap 13"), (2, 3, prints[2][0], "plain")])
        src.enroll("b", {4: prints[0][1]}, gallery="g", operator="desk")
        want = _rows(src, "a")
    assert [r[:3] for r in want] == [(2, 0, "rolled"), (2, 1, "slap 13"), (2, 3, "plain")]
    with Gallery.open(tmp_path / "dst.db", params=INDEXED) as dst:
        assert dst.import_from(src_path, gallery="h", source_gallery="g", operator="m") == 2
        assert _rows(dst, "a") == want
        rec = [r for r in dst.audit_records() if r["action"] == "import" and r["subject"] == "a"][0]
        assert set(rec["fingers"]) == {"2", "2.1", "2.3"}
        assert dst.search({2: prints[2][0]}, galleries=["h"], operator="m")[0].subject == "a"
        report = dst.check()
        assert report["problems"] == [] and report["galleries"]["h"]["extra_impressions"] == 2
        # an extra impression whose primary is gone (written behind the API's back) is a problem
        with dst._write() as con:
            con.execute("DELETE FROM fingers WHERE impression = 0 AND position = 2")
        assert any("subject 'a' has 2 extra impression(s) of finger 2 without a primary print" in p
                   for p in dst.check()["problems"])



# -- search ------------------------------------------------------------------------------------------
@pytest.fixture
def calibration():
    rng = np.random.default_rng(0)
    return bm.Calibration.fit(np.clip(rng.gamma(2.0, 0.01, size=2000), 0, 1), source="test", matcher_version="test")


def _gallery_with_extras(g, prints, n=20):
    """Subject s<i> enrolled with impression 0 of finger i at position 2, impression 1 as an extra one."""
    for s in range(n):
        g.enroll(f"s{s}", {2: prints[0][s]}, gallery="local", operator="desk",
                 impressions=[(2, 1, prints[1][s], "slap 13")])


@pytest.mark.parametrize("params", [SearchParams(), INDEXED], ids=["exhaustive", "indexed"])
def test_a_finger_scores_as_its_best_impression_and_its_fmr_counts_the_tries(tmp_path, prints, calibration, params):
    from biomatch.scoring import verify

    n = 20
    with Gallery.open(tmp_path / "b.db", params=params) as g:
        g.set_calibration(calibration, operator="admin")
        _gallery_with_extras(g, prints, n)
        for s in range(0, n, 4):
            probe = prints[2][s]
            top = g.search({2: probe}, galleries=["local"], max_candidates=3, operator="desk")[0]
            rec = g.get(f"s{s}", gallery="local")  # the templates as stored (the binary form quantizes)
            best = max(verify(probe, rec.fingers[2]).score, verify(probe, rec.impressions[2][0][2]).score)
            assert top.subject == f"s{s}" and top.score == pytest.approx(best, abs=1e-6)
            p = float(calibration.fmr(np.array([top.score]))[0])
            want = 1 - (1 - p) ** 2  # the best of two impressions: two tries for an impostor
            f = top.fingers[0]
            assert f.fmr_is_bound or f.fmr == pytest.approx(want, rel=1e-9)
            assert want > p or p == 0


def test_an_extra_impression_only_raises_a_mates_score(tmp_path, prints):
    n = 20
    with Gallery.open(tmp_path / "one.db") as one, Gallery.open(tmp_path / "two.db") as two:
        for s in range(n):
            one.enroll(f"s{s}", {2: prints[0][s]}, gallery="local", operator="desk")
        _gallery_with_extras(two, prints, n)
        for s in range(n):
            probe = {2: prints[2][s]}
            a = {c.subject: c.score for c in one.search(probe, galleries=["local"], max_candidates=n, operator="d")}
            b = {c.subject: c.score for c in two.search(probe, galleries=["local"], max_candidates=n, operator="d")}
            assert b[f"s{s}"] >= a[f"s{s}"] - 1e-9


def test_exhaustive_and_indexed_search_agree_with_impressions(tmp_path, prints):
    with Gallery.open(tmp_path / "b.db") as g:
        _gallery_with_extras(g, prints, 25)
        g.enroll("x", {3: prints[0][26]}, gallery="local", operator="desk",
                 impressions=[(3, 1, prints[1][26], "plain"), (3, 2, prints[1][27], "plain")])
    with Gallery.open(tmp_path / "b.db") as ex, Gallery.open(tmp_path / "b.db", params=INDEXED) as ix:
        for probe in ({2: prints[2][3]}, {0: prints[2][26]}, {2: prints[2][7], 3: prints[2][26]}):
            a = ex.search(probe, galleries=["local"], max_candidates=5, operator="d")
            b = ix.search(probe, galleries=["local"], max_candidates=5, operator="d")
            assert [(c.subject, round(c.score, 9)) for c in a][:1] == [(c.subject, round(c.score, 9)) for c in b][:1]


def test_rank_corrects_a_best_of_k_score_and_best_impressions_is_the_grouping_rule(calibration):
    from biomatch.search.ranking import Rescored, best_impressions, fmr_of, fmr_of_best, rank

    s = 0.03  # inside the calibrated range: p well above the floor
    p = float(fmr_of(calibration, [s])[0])
    assert 1e-3 < p < 0.5
    one, three = (rank([Rescored("g", "a", [(2, 2, s, 1)], comps)], calibration, None, 1)[0]
                  for comps in (None, (3,)))
    assert one.fmrs[0] == pytest.approx(p) and three.fmrs[0] == pytest.approx(1 - (1 - p) ** 3)
    assert three.fused > one.fused
    assert np.allclose(fmr_of_best(np.array([0.0, 1e-12, 0.2, np.nan]), np.array([4, 4, 1, 2])),
                       [0.0, 4e-12, 0.2, np.nan], equal_nan=True, rtol=1e-6)
    # per subject the best comparison, k its impressions of the winning position
    targets = [("a", 10, 2), ("a", 11, 2), ("a", 12, 3), ("b", 20, 2)]
    got = best_impressions(0, targets, [0.1, 0.4, 0.3, 0.2])
    assert got == {"a": ((0, 2, 0.4, 11), 2), "b": ((0, 2, 0.2, 20), 1)}
