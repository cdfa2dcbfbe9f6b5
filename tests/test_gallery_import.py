"""Gallery.import_from (store to store, derived data copied) and Gallery.delete_many."""

from __future__ import annotations

import pytest

from biomatch.index import FLAT_MAX_CODES
from biomatch.search import SearchParams
from biomatch.errors import GalleryError
from biomatch.gallery import Gallery

#: Searches go through the FAISS shortlist and the feature file even for these small galleries.
INDEXED = SearchParams(exhaustive_max_fingers=0)


@pytest.fixture(scope="module")
def mated():
    """60 synthetic fingers x 2 impressions: (gallery templates, probe templates)."""
    from biomatch.synthetic import template_batch

    block = next(template_batch(60, 2, seed=23))
    ts = block.templates()
    return ts[0::2], ts[1::2]


def _subjects(gal):
    # positions 0 / 2 / 7 so that several index partitions are copied; two fingers for some subjects
    out = []
    for i, t in enumerate(gal):
        fingers = {(0, 2, 7)[i % 3]: t}
        if i % 5 == 0 and i + 1 < len(gal):
            fingers[3] = gal[(i + 1) % len(gal)]
        out.append((f"s{i:02d}", fingers, {"n": i}))
    return out


def _probes(probes):
    return [{(0, 2, 7)[i % 3]: probes[i]} for i in range(0, len(probes), 4)] + [{0: probes[1], 3: probes[5]}]


def _source(tmp_path, gal):
    """A source store holding ``_subjects(gal)`` in gallery "g"; returns (its path, a destination path)."""
    src_path = tmp_path / "src.db"
    with Gallery.open(src_path) as src:
        src.enroll_many(_subjects(gal), gallery="g", operator="desk")
    return src_path, tmp_path / "dst.db"


def _lists(g, probe_sets, gallery):
    return [g.search(p, galleries=[gallery], max_candidates=6, operator="t") for p in probe_sets]


def _comparable(results):
    # the enrolled-finger ids differ between stores: compare what a user sees of a candidate
    return [[(c.subject, c.rank, c.score, c.fmr, [(f.probe_position, f.position, f.score, f.pairs) for f in c.fingers])
             for c in r] for r in results]


def _plain_index(g, gallery):
    """(position, kind, IVF list, code bytes, direction bin, subject) of every indexed code: the index's content,
    finger ids aside."""
    idx = g.index(gallery)
    con = g._con()
    subject_of = dict(con.execute("SELECT fingers.id, subject FROM fingers JOIN subjects ON subjects.id = subject_id"))
    out = []
    for pos, part in idx._parts.items():
        for lst, ids, codes in part.entries():
            out += [(pos, part.kind, lst, codes[j].tobytes(), int(ids[j]) & 255, subject_of[int(ids[j]) >> 8])
                    for j in range(len(ids))]
    return sorted(out, key=repr)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_import_copies_everything_and_searches_the_same(tmp_path, mated, monkeypatch, kind):
    # through the FAISS shortlist; "ivf": partitions past the flat limit, codes copied list by list
    params = SearchParams(exhaustive_max_fingers=0, flat_max_codes=300 if kind == "ivf" else FLAT_MAX_CODES)
    gal, probes = mated
    src_path, dst_path = tmp_path / "src.db", tmp_path / "dst.db"
    with Gallery.open(src_path, params=params) as src:
        src.enroll_many(_subjects(gal), gallery="cch", operator="desk")
        src.enroll("with-original", {1: gal[3]}, gallery="cch", operator="desk", originals={None: b"EFT bytes"})
        src.delete("s07", gallery="cch", operator="desk")  # an index caught up past a deletion
        expected = _comparable(_lists(src, _probes(probes), "cch"))
        src_index = _plain_index(src, "cch")
        assert kind in {k for _, k, *_ in src_index}  # (a one-finger partition stays flat)
        src_subjects = src.subjects(gallery="cch")
    with Gallery.open(dst_path, params=params) as dst:
        dst.enroll("local-1", {2: gal[10]}, gallery="other", operator="desk")  # unrelated gallery, kept
        n = dst.import_from(src_path, gallery="cch", operator="migrate", batch=7)
        assert n == len(src_subjects)
        assert dst.subjects(gallery="cch") == src_subjects and dst.subjects(gallery="other") == ["local-1"]
        rec = dst.get("s10", gallery="cch")
        assert rec.metadata == {"n": 10} and set(rec.fingers) == {2, 3}
        assert dst.originals("with-original", gallery="cch") == [(None, "transaction", b"EFT bytes")]
        # the codes were copied, not recomputed, into the same lists: the same index content
        assert _plain_index(dst, "cch") == src_index
        assert _comparable(_lists(dst, _probes(probes), "cch")) == expected
        records = [r for r in dst.audit_records() if r["action"] == "import"]
        assert len(records) == n and records[0]["source"]["store"] == str(src_path)
        assert records[0]["operator"] == "migrate" and records[0]["fingers"]
        assert dst.verify_audit() == len(dst.audit_records())
        assert dst.check()["ok"]
    # the copied index file and feature rows survive a reopen and match a rebuild from the templates
    with Gallery.open(dst_path, params=params) as dst:
        assert _comparable(_lists(dst, _probes(probes), "cch")) == expected
        dst.rebuild_index("cch")
        assert _plain_index(dst, "cch") == src_index


def test_import_selected_subjects_into_an_existing_gallery(tmp_path, mated):
    gal, probes = mated
    src_path, dst_path = _source(tmp_path, gal[:30])
    with Gallery.open(dst_path) as dst:
        dst.enroll_many([(f"local{i}", {2: gal[30 + i]}) for i in range(10)], gallery="g", operator="desk")
        with Gallery.open(src_path) as src:  # an open Gallery as the source
            n = dst.import_from(src, gallery="g", select=lambda s: int(s[1:]) % 2 == 0, operator="m")
        assert n == 15
        assert dst.subjects(gallery="g") == sorted([f"local{i}" for i in range(10)] + [f"s{i:02d}" for i in range(0, 30, 2)])
        # the gallery's own fingers and the imported ones are all searchable; the index equals a rebuild
        before = _plain_index(dst, "g")
        dst.rebuild_index("g")
        assert _plain_index(dst, "g") == before
        hit = dst.search({2: probes[4]}, galleries=["g"], max_candidates=3, operator="t")
        assert hit[0].subject == "s04"
        assert dst.check()["ok"]


def test_import_refuses_bad_input_and_keeps_the_store(tmp_path, mated):
    gal, _ = mated
    src_path, dst_path = _source(tmp_path, gal[:12])
    with Gallery.open(dst_path) as dst:
        dst.enroll("s03", {2: gal[40]}, gallery="g", operator="desk")
        audit_before = len(dst.audit_records())
        with pytest.raises(GalleryError, match=r"'s03' is already enrolled in gallery 'g'"):
            dst.import_from(src_path, gallery="g")
        with pytest.raises(GalleryError, match="no such file"):
            dst.import_from(tmp_path / "missing.db", gallery="g")
        with pytest.raises(GalleryError, match="is this store"):
            dst.import_from(dst_path, gallery="g")
        with pytest.raises(GalleryError, match="'nope'"):
            dst.import_from(src_path, gallery="g", source_gallery="nope")
        with pytest.raises(GalleryError, match="select"):
            dst.import_from(src_path, gallery="g", select="all")
        for bad in (0, 501, True, 2.0):
            with pytest.raises(GalleryError, match="batch: expected an integer 1..500"):
                dst.import_from(src_path, gallery="g", batch=bad)
        with pytest.raises(GalleryError, match="source: expected"):
            dst.import_from(42, gallery="g")
        assert dst.subjects(gallery="g") == ["s03"] and len(dst.audit_records()) == audit_before
        assert dst.check()["ok"]


def test_import_detects_a_damaged_source_template(tmp_path, mated):
    import sqlite3

    gal, _ = mated
    src_path, dst_path = _source(tmp_path, gal[:5])
    con = sqlite3.connect(src_path)
    blob = bytearray(con.execute("SELECT template FROM fingers ORDER BY id DESC LIMIT 1").fetchone()[0])
    blob[-3] ^= 0xFF
    con.execute("UPDATE fingers SET template = ? WHERE id = (SELECT MAX(id) FROM fingers)", (bytes(blob),))
    con.commit()
    con.close()
    with Gallery.open(dst_path) as dst:
        with pytest.raises(GalleryError, match="does not match its SHA-256"):
            dst.import_from(src_path, gallery="g", batch=100)
        assert dst.galleries() == []  # checked before its batch was written


def test_delete_many_equals_single_deletes(tmp_path, mated, monkeypatch):
    gal, probes = mated
    gone = [f"s{i:02d}" for i in range(0, 60, 3)]
    results = []
    for name, bulk in (("one.db", False), ("many.db", True)):
        with Gallery.open(tmp_path / name, params=INDEXED) as g:
            g.enroll_many(_subjects(gal), gallery="g", operator="desk")
            if bulk:
                assert g.delete_many(gone, gallery="g", operator="court", batch=6) == len(gone)
            else:
                for s in gone:
                    g.delete(s, gallery="g", operator="court")
            results.append((g.subjects(gallery="g"), _plain_index(g, "g"), _comparable(_lists(g, _probes(probes), "g")),
                            [(r["action"], r.get("subject")) for r in g.audit_records()],
                            sorted(g._featstore.shas())))
            assert g.check()["ok"]
    assert results[0] == results[1]
    assert not set(gone) & set(results[1][0])
    # the index file on disk holds no code of a deleted subject
    with Gallery.open(tmp_path / "many.db", params=INDEXED) as g:
        from biomatch.index import GalleryIndex

        idx = GalleryIndex.load(g._index_path("g"), "g")
        con = g._con()
        left = {f for s in idx.finger_ids().values() for f in s}
        assert left == {r[0] for r in con.execute("SELECT id FROM fingers")}


def test_delete_many_checks_every_id_first(tmp_path, mated):
    gal, _ = mated
    with Gallery.open(tmp_path / "g.db") as g:
        g.enroll_many(_subjects(gal[:6]), gallery="g", operator="desk")
        before = g.subjects(gallery="g")
        with pytest.raises(GalleryError, match="'nobody' is not enrolled"):
            g.delete_many(["s01", "nobody"], gallery="g")
        with pytest.raises(GalleryError, match="given twice"):
            g.delete_many(["s01", "s01"], gallery="g")
        with pytest.raises(GalleryError, match="one string"):
            g.delete_many("s01", gallery="g")
        with pytest.raises(GalleryError, match="batch"):
            g.delete_many(["s01"], gallery="g", batch=0)
        assert g.subjects(gallery="g") == before
        assert g.delete_many([], gallery="g") == 0


def test_cli_import(tmp_path, mated, capsys):
    import json

    from biomatch.cli import main

    gal, probes = mated
    src_path, dst_path = _source(tmp_path, gal[:8])
    assert main(["import", str(src_path), "--store", str(dst_path), "--gallery", "g", "--operator", "m", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["imported"] == 8 and out["gallery"] == "g"
    with Gallery.open(dst_path) as g:
        assert len(g.subjects(gallery="g")) == 8
    assert main(["import", str(src_path), "--store", str(dst_path), "--gallery", "g"]) == 1  # all there already
    assert "already enrolled" in capsys.readouterr().err
    assert main(["import", str(src_path), "--store", str(dst_path), "--gallery", "g", "--skip-existing", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["imported"] == 0
    assert main(["import", str(tmp_path / "none.db"), "--store", str(dst_path)]) == 1
    assert "no such store" in capsys.readouterr().err
