"""The whole-store arena of rescoring rows (FeatureArena): the same batches and search results as the
row-by-row path, kept in step with enrolment, update and deletion, refused over its byte budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from biomatch.errors import GalleryError
from biomatch.gallery import FeatureStore, Gallery
from biomatch.gallery import features as gallery_features
from biomatch.gallery.features import FeatureArena
from biomatch.search import SearchParams

INDEXED = SearchParams(exhaustive_max_fingers=0)  # the FAISS shortlist even for these small galleries


@pytest.fixture(scope="module")
def mated():
    """30 synthetic fingers x 2 impressions: (gallery templates, probe templates)."""
    from biomatch.synthetic import template_batch

    ts = next(template_batch(30, 2, seed=23)).templates()
    return ts[0::2], ts[1::2]


def _same(a, b):
    for f in dataclasses.fields(b):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype and np.array_equal(x, y), f.name


def test_arena_gathers_what_join_of_the_rows_gives(mated):
    from biomatch.scoring import pack

    gal, _ = mated
    rows = [FeatureStore.split(FeatureStore._dump(pack([t]))) for t in gal[:10]]
    ids = [7, 3, 12, 40, 41, 5, 9, 100, 2, 8]  # store ids: any order, gaps
    arena = FeatureArena.build(list(zip(ids, rows)))
    assert arena.size == 10 and arena.nbytes >= sum(a.nbytes for a in rows[0][1][:1])
    pick = [100, 7, 7, 41, 2]  # any order, repeats
    slots = arena.slots(pick)
    got = arena.gather(slots)
    _same(got, FeatureStore.join([rows[ids.index(f)] for f in pick]))
    _same(got, pack([gal[ids.index(f)] for f in pick]))
    assert got.bits.flags.writeable
    _same(FeatureStore.packed(arena.row(int(arena.slots([12])[0]))), pack([gal[2]]))
    # ids it does not hold (never, out of range, forgotten) have no slot
    arena.forget([41])
    assert arena.slots([41, 1, 10_000, -3]).tolist() == [-1, -1, -1, -1]
    assert arena.slots([7])[0] >= 0
    empty = FeatureArena.build([])
    assert empty.size == 0 and empty.slots([1, 2]).tolist() == [-1, -1]


def _hits(g, probes):
    return [g.search({1: p}, galleries=["local"], max_candidates=5) for p in probes]


def test_searches_from_the_arena_equal_the_row_by_row_path(tmp_path, mated, monkeypatch):
    gal, probes = mated
    store = tmp_path / "arena.db"
    with Gallery.open(store, params=INDEXED) as g:
        for i, t in enumerate(gal[:24]):
            g.enroll(f"s{i}", {1: t}, gallery="local")
    monkeypatch.setattr(gallery_features, "FEATURE_ARENA_MIN_FINGERS", 10**9)
    with Gallery.open(store, params=INDEXED) as g:
        before = _hits(g, probes[:8])
        assert getattr(g, "_arena", None) is None and len(g._packs) > 0  # small store: the LRU alone
    monkeypatch.setattr(gallery_features, "FEATURE_ARENA_MIN_FINGERS", 0)
    with Gallery.open(store, params=INDEXED) as g:
        assert _hits(g, probes[:8]) == before
        arena = g._arena
        assert isinstance(arena, FeatureArena) and arena.size == 24 and len(g._packs) == 0
        # enrolled after the build: served outside the arena, the same results as a fresh handle's
        for i, t in enumerate(gal[24:], start=24):
            g.enroll(f"s{i}", {1: t}, gallery="local")
        g.update("s3", {1: gal[25]}, gallery="local")  # replaced: its old finger leaves the arena
        g.delete("s5", gallery="local")
        after = _hits(g, probes[:8] + probes[24:])
        assert g._arena is arena and arena.outside > 0
        assert sum(s >= 0 for s in arena.slots(list(range(1, 200))).tolist()) == 24 - 2  # s3's old finger, s5's
    monkeypatch.setattr(gallery_features, "FEATURE_ARENA_MIN_FINGERS", 10**9)
    with Gallery.open(store, params=INDEXED) as g:
        assert _hits(g, probes[:8] + probes[24:]) == after
        assert all(c.subject != "s5" for hits in after for c in hits)
    # stale: rebuilt once enough shortlisted fingers were served outside it
    monkeypatch.setattr(gallery_features, "FEATURE_ARENA_MIN_FINGERS", 0)
    monkeypatch.setattr(gallery_features, "FEATURE_ARENA_STALE_FINGERS", 1)
    with Gallery.open(store, params=INDEXED) as g:
        g._arena = FeatureArena.build([])
        assert _hits(g, probes[:8] + probes[24:]) == after
        assert g._arena.size == 30 - 1  # s5 deleted (s3's finger replaced)


def test_arena_over_its_byte_budget_is_not_built(tmp_path, mated, monkeypatch):
    gal, probes = mated
    store = tmp_path / "budget.db"
    monkeypatch.setattr(gallery_features, "FEATURE_ARENA_MIN_FINGERS", 0)
    monkeypatch.setattr(gallery_features, "FEATURE_ARENA_BYTES", 1000)
    with Gallery.open(store, params=INDEXED) as g:
        for i, t in enumerate(gal[:12]):
            g.enroll(f"s{i}", {1: t}, gallery="local")
        hits = _hits(g, probes[:4])
        assert g._arena is False and len(g._packs) > 0
    monkeypatch.setattr(gallery_features, "FEATURE_ARENA_BYTES", 1 << 30)
    with Gallery.open(store, params=INDEXED) as g:
        assert _hits(g, probes[:4]) == hits and isinstance(g._arena, FeatureArena)


def test_arena_leaves_out_a_tampered_row_which_is_refused_when_shortlisted(tmp_path, mated, monkeypatch):
    """Encrypted store: a finger whose recorded SHA-256 no longer matches its template is not served from the
    arena; the search that rescored it refuses it, as without the arena."""
    import sqlite3

    gal, probes = mated
    store = tmp_path / "sealed.db"
    key = bytes(range(32))
    monkeypatch.setattr(gallery_features, "FEATURE_ARENA_MIN_FINGERS", 0)
    with Gallery.open(store, key=key, params=INDEXED) as g:
        for i, t in enumerate(gal[:6]):
            g.enroll(f"s{i}", {1: t}, gallery="local")
    con = sqlite3.connect(store)
    a, b = con.execute("SELECT id, sha256 FROM fingers ORDER BY id LIMIT 2").fetchall()
    with con:
        con.execute("UPDATE fingers SET sha256 = ? WHERE id = ?", (b[1], a[0]))
    con.close()
    with Gallery.open(store, key=key, params=SearchParams(exhaustive_max_fingers=10**6)) as g:
        with pytest.raises(GalleryError, match="tampered"):
            g.search({1: probes[0]}, galleries=["local"])
        assert isinstance(g._arena, FeatureArena) and g._arena.slots([a[0]])[0] == -1
