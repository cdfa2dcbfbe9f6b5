"""Protected data: owner-only files, real deletion, encryption at rest and key rotation."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import stat
import threading

import numpy as np
import pytest

from biomatch.search import SearchParams
from biomatch import index as index_mod
from biomatch.encryption import ENV_KEY, MAGIC, generate_key, key_id
from biomatch.errors import GalleryError
from biomatch.gallery import SCHEMA_VERSION, FeatureStore, Gallery
from biomatch.template import Template

pytest.importorskip("cryptography")

ORIGINAL = b"EBTS-ORIGINAL-" + bytes(range(256)) * 4  # long enough to spill into an overflow page


#: Searches go through the FAISS shortlist and the feature file even for these small galleries.
INDEXED = SearchParams(exhaustive_max_fingers=0)


@pytest.fixture(scope="module")
def mated():
    from biomatch.synthetic import template_batch

    ts = next(template_batch(30, 2, seed=23)).templates()
    return ts[0::2], ts[1::2]


def _files(folder):
    return sorted(p for p in folder.iterdir() if p.is_file())


def _raw(folder) -> dict:
    return {p.name: p.read_bytes() for p in _files(folder)}


def _as_enrolled(t):
    """The template as the store holds it at position 1."""
    return Template(np.array(t.minutiae), t.width, t.height, t.ppi, 1, t.quality)


def _secrets(t) -> dict:
    """Byte strings that give a template away: its bytes, its minutia records, its index codes and feature rows."""
    from biomatch.descriptors import encode
    from biomatch.index import finger_codes
    from biomatch.scoring import pack

    t = _as_enrolled(t)
    data = t.to_bytes()
    codes = finger_codes(encode(t)).codes
    return {
        "template": data,
        "minutiae": data[16:40],  # the first three (x, y, angle, type, quality) records
        "codes": [bytes(c) for c in codes[:8]],
        "features": FeatureStore._dump(pack([t]))[-64:],
    }


def _found(raw: dict, secrets: dict) -> list:
    hits = []
    for name, blob in raw.items():
        for what, s in secrets.items():
            for needle in s if isinstance(s, list) else [s]:
                if needle in blob:
                    hits.append((name, what))
    return sorted(set(hits))


def _enrol_and_search(g, gal, probes, n=6):
    for i in range(n):
        g.enroll(f"s{i}", {1: gal[i]}, gallery="local", operator="desk", originals={None: ORIGINAL + bytes([i])})
    for i in range(n):
        assert g.search({1: probes[i]}, galleries=["local"], operator="desk")[0].subject == f"s{i}"
    g.flush()


def test_every_file_is_owner_only_even_with_an_open_umask(tmp_path, mated, monkeypatch):
    gal, probes = mated
    temp_modes = []
    real_replace = os.replace

    def spy_replace(src, dst):  # the index temp file, just before it is renamed into place
        if str(src).startswith(str(tmp_path)):
            temp_modes.append(stat.S_IMODE(os.stat(src).st_mode))
        return real_replace(src, dst)

    monkeypatch.setattr(index_mod.os, "replace", spy_replace)
    old = os.umask(0)
    try:
        store = tmp_path / "booking.db"
        with Gallery.open(store, params=INDEXED) as g:
            _enrol_and_search(g, gal, probes, n=3)
            files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in _files(tmp_path)}
    finally:
        os.umask(old)
    assert {"booking.db", "booking.db-wal", "booking.db-shm", "booking.db.local.faiss", "booking.db.features",
            "booking.db.features-wal", "booking.db.features-shm"} <= set(files)
    assert files == {name: 0o600 for name in files}
    assert temp_modes and set(temp_modes) == {0o600}


def test_delete_leaves_no_trace_in_any_file(tmp_path, mated):
    gal, probes = mated
    store = tmp_path / "booking.db"
    victim = _secrets(gal[0])
    with Gallery.open(store, params=INDEXED) as g:
        _enrol_and_search(g, gal, probes, n=4)
        before = _found(_raw(tmp_path), {**victim, "original": ORIGINAL + b"\x00"})
        # the test can fail: every kind of trace is there before the deletion
        assert {w for _, w in before} == {"template", "minutiae", "codes", "features", "original"}
        g.delete("s0", gallery="local", operator="desk")
        assert _found(_raw(tmp_path), {**victim, "original": ORIGINAL + b"\x00"}) == []
        assert g.search({1: probes[1]}, galleries=["local"], operator="desk")[0].subject == "s1"
    assert _found(_raw(tmp_path), {**victim, "original": ORIGINAL + b"\x00"}) == []
    with Gallery.open(store, params=INDEXED) as g:
        assert g.subjects(gallery="local") == ["s1", "s2", "s3"]


def test_encrypted_store_reveals_nothing_biometric(tmp_path, mated):
    gal, probes = mated
    key = generate_key()
    plain_dir, enc_dir = tmp_path / "plain", tmp_path / "enc"
    plain_dir.mkdir()
    enc_dir.mkdir()
    secrets = {f"s{i}.{k}": v for i in range(3) for k, v in _secrets(gal[i]).items()}
    secrets["original"] = ORIGINAL
    with Gallery.open(plain_dir / "b.db", params=INDEXED) as g:
        _enrol_and_search(g, gal, probes, n=3)
    assert len(_found(_raw(plain_dir), secrets)) > 10  # control: a plaintext store shows them
    with Gallery.open(enc_dir / "b.db", key=key, params=INDEXED) as g:
        assert g.encrypted
        _enrol_and_search(g, gal, probes, n=3)
        assert _found(_raw(enc_dir), secrets) == []
    assert _found(_raw(enc_dir), secrets) == []
    con = sqlite3.connect(enc_dir / "b.db")
    blobs = [r[0] for r in con.execute("SELECT template FROM fingers")] + [r[0] for r in con.execute("SELECT data FROM originals")]
    con.close()
    assert blobs and all(b[:4] == MAGIC and b[4:12].hex() == key_id(key) for b in blobs)
    with Gallery.open(enc_dir / "b.db", key=base64.b64encode(key).decode(), params=INDEXED) as g:  # base64 text works too
        assert g.get("s1", gallery="local").fingers[1].to_bytes() == _as_enrolled(gal[1]).to_bytes()
        assert g.originals("s2", gallery="local") == [(None, "transaction", ORIGINAL + b"\x02")]
        assert g.search({1: probes[2]}, galleries=["local"], operator="desk")[0].subject == "s2"


def test_missing_or_wrong_key_is_refused_and_changes_nothing(tmp_path, mated, monkeypatch):
    gal, _ = mated
    store = tmp_path / "b.db"
    key = generate_key()
    with Gallery.open(store, key=key) as g:
        g.enroll("s0", {1: gal[0]}, gallery="local", operator="desk")
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(tmp_path)}
    with pytest.raises(GalleryError, match="encrypted"):
        Gallery.open(store)
    with pytest.raises(GalleryError, match="wrong key"):
        Gallery.open(store, key=generate_key())
    with pytest.raises(GalleryError, match="16, 24 or 32 bytes"):
        Gallery.open(store, key=b"short")
    with pytest.raises(GalleryError, match=ENV_KEY):
        monkeypatch.setenv(ENV_KEY, "not base64!")
        Gallery.open(store)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(tmp_path)} == digest
    monkeypatch.setenv(ENV_KEY, base64.b64encode(key).decode())
    with Gallery.open(store) as g:
        assert g.subjects(gallery="local") == ["s0"]


def test_key_rotation_while_searching(tmp_path, mated):
    gal, probes = mated
    store = tmp_path / "b.db"
    old, new = generate_key(), generate_key()
    with Gallery.open(store, key=old, params=INDEXED) as g:
        for i in range(12):
            g.enroll(f"s{i}", {1: gal[i]}, gallery="local", operator="desk", originals={1: ORIGINAL})
        g.search({1: probes[0]}, galleries=["local"], operator="desk")
        stop, errors, hits = threading.Event(), [], []

        def searcher(k):
            while not stop.is_set():
                try:
                    hits.append(g.search({1: probes[k]}, galleries=["local"], operator="desk")[0].subject == f"s{k}")
                except Exception as exc:  # noqa: BLE001 - counted
                    errors.append(exc)

        threads = [threading.Thread(target=searcher, args=(k,)) for k in (3, 7)]
        for th in threads:
            th.start()
        result = g.rotate_key(new, batch=3, operator="admin")
        g.enroll("late", {1: gal[12]}, gallery="local", operator="desk")
        stop.set()
        for th in threads:
            th.join()
        assert errors == [] and hits and all(hits)
        assert result == {"key_id": key_id(new), "previous_key_id": key_id(old), "templates": 12, "originals": 12,
                          "metadata": 0}
        phases = [r["phase"] for r in g.audit_records() if r["action"] == "key_rotation"]
        assert phases == ["start", "done"]
    con = sqlite3.connect(store)
    kids = {bytes(r[0][4:12]).hex() for r in con.execute("SELECT template FROM fingers UNION ALL SELECT data FROM originals")}
    con.close()
    assert kids == {key_id(new)}
    with pytest.raises(GalleryError, match="wrong key"):
        Gallery.open(store, key=old, params=INDEXED)
    with Gallery.open(store, key=new, params=INDEXED) as g:
        assert g.search({1: probes[5]}, galleries=["local"], operator="desk")[0].subject == "s5"
        assert len(g.subjects(gallery="local")) == 13


def test_rotate_key_encrypts_a_plaintext_store(tmp_path, mated):
    gal, probes = mated
    store = tmp_path / "b.db"
    secrets = {k: v for k, v in _secrets(gal[0]).items() if k != "features"}
    with Gallery.open(store, params=INDEXED) as g:
        _enrol_and_search(g, gal, probes, n=3)
    key = generate_key()
    with Gallery.open(store, key=key, params=INDEXED) as g:
        assert g.rotate_key(key)["templates"] == 3
        assert g.search({1: probes[0]}, galleries=["local"], operator="desk")[0].subject == "s0"
    assert _found(_raw(tmp_path), {**secrets, "original": ORIGINAL}) == []


# ----------------------------------------------------------------------------
# issue 23: what an independent attack found
# ----------------------------------------------------------------------------


def _swap_rows(store, a: str, b: str) -> None:
    """With plain sqlite3 and no key: swap the template, sha256, n_minutiae and quality of two subjects' rows."""
    con = sqlite3.connect(store)
    rows = {s: con.execute("SELECT fingers.id, template, sha256, n_minutiae, quality FROM fingers JOIN subjects "
                           "ON subjects.id = fingers.subject_id WHERE subject = ?", (s,)).fetchone() for s in (a, b)}
    for mine, theirs in ((a, b), (b, a)):
        con.execute("UPDATE fingers SET template = ?, sha256 = ?, n_minutiae = ?, quality = ? WHERE id = ?",
                    (*rows[theirs][1:], rows[mine][0]))
    con.commit()
    con.close()


def test_encrypted_rows_swapped_without_the_key_do_not_decrypt_and_check_says_so(tmp_path, mated):
    gal, probes = mated
    store = tmp_path / "b.db"
    key = generate_key()
    with Gallery.open(store, key=key, params=INDEXED) as g:
        _enrol_and_search(g, gal, probes, n=3)
        assert g.check()["ok"]
    _swap_rows(store, "s0", "s1")
    for derived in tmp_path.glob("b.db.*"):  # force every read through the swapped rows
        derived.unlink()
    with Gallery.open(store, key=key, params=INDEXED) as g:
        report = g.check()
        assert not report["ok"]
        assert any("decryption failed" in p and "moved from another row" in p for p in report["problems"]), report
        with pytest.raises(GalleryError, match="decryption failed"):
            g.get("s0", gallery="local")
        # the attack's payoff - s0's probe answered with s1 - is impossible: the search fails instead
        with pytest.raises(GalleryError, match="decryption failed"):
            g.search({1: probes[0]}, galleries=["local"], operator="desk")


def test_a_renamed_subject_row_no_longer_decrypts(tmp_path, mated):
    gal, _ = mated
    store = tmp_path / "b.db"
    with Gallery.open(store, key=(key := generate_key())) as g:
        for i in range(2):
            g.enroll(f"s{i}", {1: gal[i]}, gallery="local", operator="desk", originals={1: ORIGINAL})
    con = sqlite3.connect(store)
    con.execute("UPDATE subjects SET subject = 'tmp' WHERE subject = 's0'")
    con.execute("UPDATE subjects SET subject = 's0' WHERE subject = 's1'")
    con.execute("UPDATE subjects SET subject = 's1' WHERE subject = 'tmp'")
    con.commit()
    con.close()
    with Gallery.open(store, key=key) as g:
        problems = g.check()["problems"]
        assert sum("decryption failed" in p for p in problems) == 4  # two templates, two originals
        with pytest.raises(GalleryError, match="decryption failed"):
            g.originals("s0", gallery="local")


def test_update_leaves_no_trace_of_the_replaced_template(tmp_path, mated):
    gal, probes = mated
    store = tmp_path / "booking.db"
    victim = _secrets(gal[0])
    with Gallery.open(store, params=INDEXED) as g:
        _enrol_and_search(g, gal, probes, n=3)
        assert {w for _, w in _found(_raw(tmp_path), victim)} >= {"template", "minutiae", "codes"}
        g.update("s0", {1: gal[5]}, gallery="local", operator="desk")
        assert _found(_raw(tmp_path), victim) == []
        assert g.search({1: probes[5]}, galleries=["local"], operator="desk")[0].subject == "s0"
    assert _found(_raw(tmp_path), victim) == []


def test_a_garbage_schema_version_is_a_gallery_error(tmp_path):
    store = tmp_path / "b.db"
    with Gallery.open(store):
        pass
    con = sqlite3.connect(store)
    con.execute("UPDATE meta SET value = 'abc' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(GalleryError, match=rf"b\.db: store schema version 'abc', this build reads {SCHEMA_VERSION}"):
        Gallery.open(store)


def test_folders_and_the_audit_export_are_owner_only(tmp_path):
    old = os.umask(0)
    try:
        store = tmp_path / "new" / "deeper" / "b.db"
        with Gallery.open(store) as g:
            g.set_threshold(0.5, operator="admin")
            out = tmp_path / "audit.jsonl"
            out.write_text("old\n")
            os.chmod(out, 0o666)
            assert g.export_audit(out) == 1
            assert g.export_audit(tmp_path / "fresh.jsonl") == 1
    finally:
        os.umask(old)
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "new", tmp_path / "new" / "deeper",
                                                          tmp_path / "audit.jsonl", tmp_path / "fresh.jsonl")}
    assert modes == {tmp_path / "new": 0o700, tmp_path / "new" / "deeper": 0o700,
                     tmp_path / "audit.jsonl": 0o600, tmp_path / "fresh.jsonl": 0o600}
    assert (tmp_path / "audit.jsonl").read_text().count("\n") == 1


def test_check_while_another_process_writes_reports_no_false_fault(tmp_path, mated, monkeypatch):
    from biomatch.gallery import transfer

    gal, _ = mated
    store = tmp_path / "b.db"
    with Gallery.open(store) as g:
        for i in range(3):
            g.enroll(f"s{i}", {1: gal[i]}, gallery="local", operator="desk")
    writer = Gallery.open(store)  # another handle: its own connections and lock, as another process has
    checker = Gallery.open(store)
    real_index = Gallery.index
    enrolled = iter(range(3, 12))

    def index_then_someone_writes(self, name="default"):
        idx = real_index(self, name)
        if self is checker:  # between the index catching up and the check's snapshot, a writer commits
            writer.enroll(f"s{next(enrolled)}", {1: gal[len(writer.subjects(gallery='local'))]}, gallery="local",
                          operator="desk")
        return idx

    try:
        monkeypatch.setattr(Gallery, "index", index_then_someone_writes)
        monkeypatch.setattr(transfer, "CHECK_ATTEMPTS", 2)
        report = checker.check()
        assert report["problems"] == [] and report["busy"]
        assert any("store busy" in w for w in report["warnings"])
        monkeypatch.setattr(Gallery, "index", real_index)  # quiet again: a clean, complete check
        report = checker.check()
        assert report["ok"] and not report.get("busy") and report["galleries"]["local"]["indexed_fingers"] == 5
    finally:
        writer.close()
        checker.close()


@pytest.mark.parametrize("attack", ["swap template rows", "swap subject names", "swap subject of the finger rows",
                                    "swap sha256 only"])
def test_moved_rows_never_answer_for_another_subject_even_from_the_derived_files(tmp_path, mated, attack):
    """The derived files (index, feature rows found by the row's sha256) are left in place: a search must not
    answer s0's probe with s1 at s0's score, whichever columns were moved without the key."""
    gal, probes = mated
    store = tmp_path / "b.db"
    key = generate_key()
    with Gallery.open(store, key=key) as g:
        for i in range(3):
            g.enroll(f"s{i}", {1: gal[i]}, gallery="local", operator="desk")
        assert g.search({1: probes[0]}, galleries=["local"], operator="desk")[0].subject == "s0"
    con = sqlite3.connect(store)
    fid = {s: f for s, f in con.execute("SELECT subject, fingers.id FROM fingers JOIN subjects ON subjects.id = subject_id")}
    if attack == "swap template rows":
        con.close()
        _swap_rows(store, "s0", "s1")
    else:
        if attack == "swap subject names":
            swaps = [("UPDATE subjects SET subject = ? WHERE subject = ?", v) for v in (("t", "s0"), ("s0", "s1"), ("s1", "t"))]
        elif attack == "swap subject of the finger rows":
            sid = dict(con.execute("SELECT subject, id FROM subjects"))
            swaps = [("UPDATE fingers SET subject_id = ? WHERE id = ?", v)
                     for v in ((-1, fid["s0"]), (sid["s0"], fid["s1"]), (sid["s1"], fid["s0"]))]
        else:
            sha = dict(con.execute("SELECT id, sha256 FROM fingers"))
            swaps = [("UPDATE fingers SET sha256 = ? WHERE id = ?", v) for v in ((sha[fid["s1"]], fid["s0"]), (sha[fid["s0"]], fid["s1"]))]
        con.execute("PRAGMA foreign_keys=OFF")
        for sql, values in swaps:
            con.execute(sql, values)
        con.commit()
        con.close()
    with Gallery.open(store, key=key) as g:
        try:
            hits = g.search({1: probes[0]}, galleries=["local"], operator="desk")
        except GalleryError as exc:
            assert "decryption failed" in str(exc) or "does not match its recorded SHA-256" in str(exc)
        else:
            assert hits[0].subject == "s0" or hits[0].score < 0.03, [(h.subject, h.score) for h in hits]
        assert not g.check()["ok"]


# -- subject metadata encryption (opt-in) -------------------------------------------------------------------------
SECRET_META = {"name": "Ada Example", "case": "CASE-4711"}


def _metadata_column(store) -> dict:
    con = sqlite3.connect(store)
    try:
        return dict(con.execute("SELECT subject, metadata FROM subjects"))
    finally:
        con.close()


def test_encrypted_metadata_is_sealed_bound_padded_and_read_back(tmp_path, mated):
    gal, _ = mated
    store = tmp_path / "b.db"
    key = generate_key()
    with Gallery.open(store, key=key, encrypt_metadata=True) as g:
        assert g.metadata_encrypted
        g.enroll("s0", {1: gal[0]}, gallery="local", operator="desk", metadata=SECRET_META)
        g.enroll("s1", {1: gal[1]}, gallery="local", operator="desk")  # no metadata: sealed too (null)
        g.enroll_many([("s2", {1: gal[2]}, {"name": "Bo"})], gallery="local", operator="desk")
        g.update("s1", gallery="local", operator="desk", metadata={"name": "Cyrus Longname"})
        assert g.check()["metadata_encryption"] == "on" and g.check()["ok"]
    column = _metadata_column(store)
    assert all(isinstance(v, bytes) and v.startswith(MAGIC) for v in column.values()), column
    assert len({len(v) for v in column.values()}) == 1  # padded: short metadata values are the same length
    assert _found(_raw(tmp_path), {"meta": [b"Ada Example", b"CASE-4711", b"Cyrus Longname"]}) == []
    with Gallery.open(store, key=key) as g:  # the store keeps the setting: no flag needed
        assert g.metadata_encrypted
        assert [g.get(s, gallery="local").metadata for s in ("s0", "s1", "s2")] == [SECRET_META, {"name": "Cyrus Longname"}, {"name": "Bo"}]
        g.enroll("s3", {1: gal[3]}, gallery="local", operator="desk", metadata={"late": True})
    assert _metadata_column(store)["s3"].startswith(MAGIC)


def test_swapped_or_cleared_metadata_is_refused_and_check_says_so(tmp_path, mated):
    gal, _ = mated
    store = tmp_path / "b.db"
    key = generate_key()
    with Gallery.open(store, key=key, encrypt_metadata=True) as g:
        for i in range(3):
            g.enroll(f"s{i}", {1: gal[i]}, gallery="local", operator="desk", metadata={"who": i})
    column = _metadata_column(store)
    con = sqlite3.connect(store)
    con.execute("UPDATE subjects SET metadata = ? WHERE subject = 's0'", (column["s1"],))
    con.execute("UPDATE subjects SET metadata = ? WHERE subject = 's1'", (column["s0"],))
    con.execute("UPDATE subjects SET metadata = ? WHERE subject = 's2'", ('{"who": "forged"}',))  # written without the key
    con.commit()
    con.close()
    with Gallery.open(store, key=key) as g:
        with pytest.raises(GalleryError, match=r"metadata of subject 's0' \(local\): decryption failed"):
            g.get("s0", gallery="local")
        with pytest.raises(GalleryError, match=r"metadata of subject 's2' \(local\): not encrypted in a store that encrypts"):
            g.get("s2", gallery="local")
        report = g.check()
        assert not report["ok"]
        assert sum("metadata of subject" in p for p in report["problems"]) == 3, report["problems"]


def test_switching_metadata_encryption_off_without_the_key_is_caught(tmp_path, mated):
    gal, _ = mated
    store = tmp_path / "b.db"
    key = generate_key()
    with Gallery.open(store, key=key, encrypt_metadata=True) as g:
        g.enroll("s0", {1: gal[0]}, gallery="local", operator="desk", metadata={"who": 0})
        other = Gallery.open(tmp_path / "other.db", key=key)  # same key, metadata in clear: its key check differs
        other.close()
    check = sqlite3.connect(tmp_path / "other.db").execute("SELECT key, value FROM meta WHERE key LIKE 'key_check:%'").fetchone()
    con = sqlite3.connect(store)
    con.execute("UPDATE meta SET value = ? WHERE key = ?", (check[1], check[0]))  # try to switch it off
    con.commit()
    con.close()
    with Gallery.open(store, key=key) as g:  # a key check sealed under the same key opens: the audit log tells
        problems = g.check()["problems"]
        assert any("metadata encryption was turned on" in p and "key check was replaced" in p for p in problems), problems
    con = sqlite3.connect(store)
    con.execute("UPDATE meta SET value = ? WHERE key = ?", ("00" * 40, check[0]))  # a forged one does not open
    con.commit()
    con.close()
    with pytest.raises(GalleryError, match="key check failed"):
        Gallery.open(store, key=key)


def test_bad_metadata_encryption_requests_are_refused_with_the_reason(tmp_path, mated, monkeypatch):
    gal, _ = mated
    monkeypatch.delenv(ENV_KEY, raising=False)
    with pytest.raises(GalleryError, match="encrypt_metadata: metadata encryption needs a key"):
        Gallery.open(tmp_path / "a.db", encrypt_metadata=True)
    assert not (tmp_path / "a.db").exists()  # refused before the store is created
    with pytest.raises(GalleryError, match="encrypt_metadata: expected True, False or None, got str"):
        Gallery.open(tmp_path / "a.db", key=generate_key(), encrypt_metadata="yes")
    with pytest.raises(GalleryError, match="encrypt_metadata: not supported for ray://"):
        Gallery.open("ray://x?shards=2", encrypt_metadata=True)
    key = generate_key()
    with Gallery.open(tmp_path / "b.db", key=key) as g:
        g.enroll("s0", {1: gal[0]}, gallery="local", operator="desk", metadata={"who": 0})
    with pytest.raises(GalleryError, match="already holds 1 subjects whose metadata is in clear.*rotate_key"):
        Gallery.open(tmp_path / "b.db", key=key, encrypt_metadata=True)
    with Gallery.open(tmp_path / "c.db", key=key, encrypt_metadata=True):
        pass
    with pytest.raises(GalleryError, match="encrypts subject metadata; that cannot be turned off"):
        Gallery.open(tmp_path / "c.db", key=key, encrypt_metadata=False)
    with Gallery.open(tmp_path / "c.db", key=key) as g:
        with pytest.raises(GalleryError, match="encrypt_metadata: expected True or False, got int"):
            g.rotate_key(key, encrypt_metadata=1)


def test_rotate_key_seals_metadata_already_there_and_reseals_it_under_the_new_key(tmp_path, mated):
    gal, _ = mated
    store = tmp_path / "b.db"
    old, new = generate_key(), generate_key()
    with Gallery.open(store) as g:  # a plaintext store with metadata
        g.enroll("s0", {1: gal[0]}, gallery="local", operator="desk", metadata=SECRET_META)
        g.enroll("s1", {1: gal[1]}, gallery="local", operator="desk")
    with Gallery.open(store, key=old) as g:
        assert not g.metadata_encrypted
        out = g.rotate_key(old, encrypt_metadata=True, operator="admin")
        assert out["metadata"] == 2 and g.metadata_encrypted
        assert g.check()["metadata_encryption"] == "on"
        assert _metadata_column(store)["s0"].startswith(MAGIC + bytes.fromhex(key_id(old)))
        assert g.rotate_key(new, operator="admin")["metadata"] == 2  # re-sealed under the new key
        assert g.get("s0", gallery="local").metadata == SECRET_META and g.get("s1", gallery="local").metadata is None
        assert g.check()["ok"]
    assert {v[len(MAGIC):len(MAGIC) + 8].hex() for v in _metadata_column(store).values()} == {key_id(new)}
    assert _found(_raw(tmp_path), {"meta": [b"Ada Example", b"CASE-4711"]}) == []
    with Gallery.open(store, key=new) as g:
        assert g.get("s0", gallery="local").metadata == SECRET_META


def test_encrypted_metadata_travels_through_import_backup_and_restore(tmp_path, mated):
    gal, _ = mated
    src, dest, plain = tmp_path / "src.db", tmp_path / "dest.db", tmp_path / "plain.db"
    k_src, k_dest = generate_key(), generate_key()
    with Gallery.open(src, key=k_src, encrypt_metadata=True) as g:
        g.enroll("s0", {1: gal[0]}, gallery="local", operator="desk", metadata=SECRET_META)
        g.enroll("s1", {1: gal[1]}, gallery="local", operator="desk")
        g.backup(tmp_path / "copy.db")
    with Gallery.open(dest, key=k_dest, encrypt_metadata=True) as g:  # sealed again under this store's key and row
        assert g.import_from(src, gallery="local", source_key=k_src, operator="admin") == 2
        assert g.get("s0", gallery="local").metadata == SECRET_META and g.check()["ok"]
    assert _metadata_column(dest)["s0"].startswith(MAGIC + bytes.fromhex(key_id(k_dest)))
    with Gallery.open(plain) as g:  # a store that keeps metadata in clear gets it in clear
        g.import_from(src, gallery="local", source_key=k_src, operator="admin")
        assert g.get("s0", gallery="local").metadata == SECRET_META
    assert _metadata_column(plain)["s1"] is None
    Gallery.restore(tmp_path / "copy.db", tmp_path / "restored.db")
    with Gallery.open(tmp_path / "restored.db", key=k_src) as g:
        assert g.metadata_encrypted and g.get("s0", gallery="local").metadata == SECRET_META
        assert g.check()["ok"]
