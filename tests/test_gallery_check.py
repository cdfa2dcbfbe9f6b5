"""Gallery.check / `biomatch check`, online backup and restore, corrupt stores and templates."""

from __future__ import annotations

import json
import random
import sqlite3
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biomatch.search import SearchParams
from biomatch.cli import main as cli_main
from biomatch.errors import BiomatchError, GalleryError, TemplateError
from biomatch.gallery import Gallery
from biomatch.template import Template


#: Searches go through the FAISS shortlist and the feature file even for these small galleries.
INDEXED = SearchParams(exhaustive_max_fingers=0)


@pytest.fixture(scope="module")
def mated():
    from biomatch.synthetic import template_batch

    ts = next(template_batch(30, 2, seed=29)).templates()
    return ts[0::2], ts[1::2]


@pytest.fixture
def filled(tmp_path, mated, monkeypatch):
    gal, probes = mated
    store = tmp_path / "b.db"
    with Gallery.open(store, params=INDEXED) as g:
        for i in range(10):
            g.enroll(f"s{i}", {i % 10 + 1: gal[i]}, gallery="local", operator="desk", originals={None: b"TX%d" % i})
        g.search({1: probes[0]}, galleries=["local"], operator="desk")
    return store


def test_check_passes_on_a_sound_store(filled, capsys):
    with Gallery.open(filled, params=INDEXED) as g:
        g.delete("s3", gallery="local", operator="desk")
        rep = g.check()
    assert rep["ok"], rep["problems"]
    assert rep["galleries"]["local"]["fingers"] == rep["galleries"]["local"]["indexed_fingers"] == 9
    assert rep["audit_records"] == 12
    assert cli_main(["check", "--store", str(filled), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_check_finds_each_kind_of_inconsistency(filled, capsys):
    con = sqlite3.connect(filled)
    gid = con.execute("SELECT id FROM galleries").fetchone()[0]
    con.execute("INSERT INTO subjects(gallery_id, subject, created, updated) VALUES (?, 'ghost', 'x', 'x')", (gid,))
    con.execute("UPDATE audit SET record = replace(record, 'desk', 'DESK') WHERE seq = 2")
    con.commit()
    con.close()
    feat = sqlite3.connect(f"{filled}.features")
    feat.execute("INSERT INTO rows(sha256, data) VALUES ('deadbeef', x'00')")
    feat.commit()
    feat.close()
    with Gallery.open(filled, params=INDEXED) as g:
        g.index("local").remove([1])  # an enrolled finger missing from the index
        rep = g.check()
    text = "\n".join(rep["problems"])
    assert not rep["ok"]
    assert "'ghost' has no fingers" in text
    assert "audit record 2" in text
    assert "not indexed" in text
    assert "deletion incomplete" in text
    assert cli_main(["check", "--store", str(filled)]) == 1
    assert "problem:" in capsys.readouterr().err


def test_online_backup_while_searching_and_enrolling_then_restore(filled, mated, tmp_path, capsys):
    gal, probes = mated
    stop, errors, counts = threading.Event(), [], {"search": 0, "enrol": 0}
    with Gallery.open(filled, params=INDEXED) as g:

        def searcher(k):
            while not stop.is_set():
                try:
                    g.search({k % 10 + 1: probes[k]}, galleries=["local"], operator="desk")
                    counts["search"] += 1
                except Exception as exc:  # noqa: BLE001 - counted
                    errors.append(exc)

        def enroller():
            i = 10
            while not stop.is_set() and i < 30:
                try:
                    g.enroll(f"s{i}", {i % 10 + 1: gal[i]}, gallery="local", operator="desk")
                    counts["enrol"] += 1
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
                i += 1

        threads = [threading.Thread(target=searcher, args=(k,)) for k in (2, 5)] + [threading.Thread(target=enroller)]
        for th in threads:
            th.start()
        copies = [g.backup(tmp_path / f"copy{k}.db") for k in range(3)]
        stop.set()
        for th in threads:
            th.join()
        live = set(g.subjects(gallery="local"))
    assert errors == [] and counts["search"] > 0
    assert all(c["audit_records"] > 0 for c in copies)
    with pytest.raises(GalleryError, match="exists"):
        Gallery.open(filled, params=INDEXED).backup(tmp_path / "copy0.db")
    restored = tmp_path / "restored.db"
    res = Gallery.restore(tmp_path / "copy2.db", restored)
    assert res["audit_records"] == copies[2]["audit_records"]
    with Gallery.open(restored, params=INDEXED) as g:
        rep = g.check()
        assert rep["ok"], rep["problems"]
        assert set(g.subjects(gallery="local")) <= live
        assert g.search({6: probes[5]}, galleries=["local"], operator="desk")[0].subject == "s5"
    with pytest.raises(GalleryError, match="exists"):
        Gallery.restore(tmp_path / "copy1.db", restored)
    # the CLI: backup, then restore over the store (its index and feature files are dropped)
    assert cli_main(["backup", str(tmp_path / "cli.db"), "--store", str(filled)]) == 0
    assert cli_main(["restore", str(tmp_path / "cli.db"), "--store", str(filled)]) == 1  # exists, no --force
    assert cli_main(["restore", str(tmp_path / "cli.db"), "--store", str(filled), "--force", "--json"]) == 0
    capsys.readouterr()
    assert not (tmp_path / "b.db.local.faiss").exists()
    with Gallery.open(filled, params=INDEXED) as g:
        assert g.check()["ok"]


def test_restore_refuses_a_broken_backup(tmp_path, filled):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(GalleryError, match="bad.db"):
        Gallery.restore(bad, tmp_path / "new.db")
    assert not (tmp_path / "new.db").exists()


def test_corrupt_store_file_gives_biomatch_errors(filled, mated, tmp_path):
    _, probes = mated
    with Gallery.open(filled, params=INDEXED):
        pass  # checkpointed on close: every row lives in the main file
    clean = filled.read_bytes()
    rng = random.Random(5)
    outcomes = set()
    for trial in range(12):
        data = bytearray(clean)
        for _ in range(rng.choice([1, 8, 64])):
            at = rng.randrange(100, len(data))  # past the SQLite header's magic
            data[at] = rng.randrange(256)
        path = tmp_path / f"corrupt{trial}.db"
        path.write_bytes(bytes(data))
        try:
            with Gallery.open(path, params=INDEXED) as g:
                g.search({1: probes[0]}, galleries=["local"], operator="desk")
                rep = g.check()
                outcomes.add("ok" if rep["ok"] else "problems")
        except BiomatchError:
            outcomes.add("error")
    assert outcomes <= {"ok", "problems", "error"} and outcomes - {"ok"}
    path = tmp_path / "garbage.db"
    path.write_bytes(b"\x00" * 4096 + b"SQLite format 3\x00" * 10)
    with pytest.raises(GalleryError, match="garbage.db"):
        Gallery.open(path, params=INDEXED)


def test_corrupt_template_row_is_named(filled, mated):
    _, probes = mated
    con = sqlite3.connect(filled)
    fid = con.execute("SELECT id FROM fingers ORDER BY id LIMIT 1").fetchone()[0]
    con.execute("UPDATE fingers SET template = substr(template, 1, 30) WHERE id = ?", (fid,))
    con.commit()
    con.close()
    for path in filled.parent.glob("b.db.*"):
        path.unlink()  # force a rebuild from the rows
    with Gallery.open(filled, params=INDEXED) as g:
        with pytest.raises(TemplateError, match=f"store finger {fid}"):
            g.search({1: probes[0]}, galleries=["local"], operator="desk")
        rep = g.check()
        assert not rep["ok"] and any(f"store finger {fid}" in p for p in rep["problems"])
        assert g.subjects(gallery="local")  # the handle stays usable


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_biomatch_template_bytes_fuzz(mated, data):
    """Any mutation of biomatch's own template format gives a Template or a TemplateError."""
    gal, _ = mated
    raw = bytearray(data.draw(st.sampled_from(gal[:5])).to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "count"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "flip" and raw:
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "truncate":
            del raw[at:]
        elif kind == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
        elif len(raw) >= 16:
            raw[14:16] = data.draw(st.sampled_from([b"\xff\xff", b"\x00\x00", b"\x01\x04"]))  # minutia count
    try:
        Template.from_bytes(bytes(raw))
    except TemplateError:
        pass
