"""Sharded galleries on a local Ray cluster: identical results, routing, rebalance, dead shards, reopen, bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import biomatch as bm
from biomatch.search import SearchParams
from biomatch.errors import GalleryError

ray = pytest.importorskip("ray", reason="ray is not installed (pip install biomatch[distributed])")

from biomatch import distributed as dist  # noqa: E402  (after the skip: needs nothing from ray at import)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 workers' worth of CPUs, shut down after the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def mated():
    """240 synthetic fingers x 2 impressions: (gallery templates, probe templates)."""
    from biomatch.synthetic import template_batch

    ts = []
    for block in template_batch(240, 2, seed=5):
        ts += block.templates()
    return ts[0::2], ts[1::2]


@pytest.fixture(scope="module")
def calibration():
    rng = np.random.default_rng(0)
    scores = np.clip(rng.gamma(2.0, 0.01, size=2000), 0, 1)
    return bm.Calibration.fit(scores, source="test", matcher_version="test")


def _subjects(gal, n):
    """Subject s<i>: fingers 1 and 2 from synthetic fingers 2i, 2i+1 (a few with one finger only)."""
    out = []
    for i in range(n):
        fingers = {1: gal[2 * i]} if i % 7 == 3 else {1: gal[2 * i], 2: gal[2 * i + 1]}
        out.append((f"s{i}", fingers, {"i": i}))
    return out


def _fill(g, calibration, items, gallery="local"):
    """Set the calibration and bulk-enrol ``items`` (as enroll_many takes them)."""
    g.set_calibration(calibration, operator="admin")
    g.enroll_many(items, gallery=gallery, operator="desk")


def _shard_subjects(g, k, gallery="local"):
    counts = ray.get(g._actors[k].call.remote("subject_counts"))
    return ray.get(g._actors[k].call.remote("subjects", gallery=gallery)) if gallery in counts else []


@pytest.fixture(scope="module")
def pair(cluster, mated, calibration, tmp_path_factory):
    """The same 40 subjects (75 fingers) in a single-machine store and a 3-shard gallery."""
    root = tmp_path_factory.mktemp("dist")
    subjects = _subjects(mated[0], 40)
    single = bm.Gallery.open(root / "single.db")
    sharded = bm.Gallery.open(f"ray://{root / 'sharded'}?shards=3")
    for g in (single, sharded):
        _fill(g, calibration, subjects[:30])
        for sid, fingers, meta in subjects[30:]:
            g.enroll(sid, fingers, gallery="local", operator="desk", metadata=meta)
    yield single, sharded
    single.close()
    sharded.close()


def _probes(mated, idx):
    _, probes = mated
    return [{1: probes[2 * i]} for i in idx] + [{1: probes[2 * i], 2: probes[2 * i + 1]} for i in idx if i % 7 != 3] + [
        {0: probes[2 * idx[0]]}
    ]


def test_identical_to_single_machine_exhaustive(pair, mated):
    single, sharded = pair
    assert isinstance(sharded, dist.ShardedGallery) and sharded.n_shards == 3
    assert single.stats()["galleries"]["local"]["fingers"] <= SearchParams().exhaustive_max_fingers
    for probe in _probes(mated, [0, 5, 17, 33]):
        for kw in ({"max_candidates": 10}, {"max_candidates": 3, "threshold": 0.05}, {"max_candidates": 40}):
            a = single.search(probe, galleries=["local"], operator="desk", **kw)
            b = sharded.search(probe, galleries=["local"], operator="desk", **kw)
            assert b.complete and b.missing_shards == () and b.searched_subjects == 40
            assert list(b) == list(a)  # subjects, ranks, scores, FMRs, FPIRs (N = 40 in total), pairs
    hits = sharded.search({1: mated[1][2 * 5]}, galleries=["local"], operator="desk")
    assert hits[0].subject == "s5" and hits[0].fingers[0].pairs


def test_threshold_and_calibration_held_by_coordinator(pair, mated):
    single, sharded = pair
    probe = {1: mated[1][2 * 8]}
    sharded.set_threshold(0.9, gallery="local", operator="admin")
    try:
        assert sharded.threshold("local") == 0.9
        assert list(sharded.search(probe, galleries=["local"], operator="desk")) == []
        rec = sharded.audit_records()[-1]
        assert rec["decision"] == "no-hit"
        # the coordinator's record names the software and the calibration, as a single store's does
        single.search(probe, galleries=["local"], operator="desk")
        plain = single.audit_records()[-1]
        assert rec["software"] == plain["software"] and rec["software"]["matcher"]
        assert rec["calibration"] == plain["calibration"] and rec["calibration"] is not None
    finally:
        sharded.set_threshold(0.0, gallery="local", operator="admin")
    assert sharded.calibration().to_json() == single.calibration().to_json()


def test_routing_of_enrol_update_delete(pair, mated):
    _, g = pair
    gal, _ = mated
    owner = dist.shard_of("route-1", g.n_shards)
    g.enroll("route-1", {3: gal[100]}, gallery="local", operator="desk", metadata={"a": 1})
    held = [("route-1" in _shard_subjects(g, k)) for k in range(g.n_shards)]
    assert held == [k == owner for k in range(g.n_shards)]
    g.update("route-1", {4: gal[101]}, gallery="local", operator="desk", metadata={"a": 2})
    rec = g.get("route-1", gallery="local")
    assert set(rec.fingers) == {3, 4} and rec.metadata == {"a": 2}
    own = ray.get(g._actors[owner].call.remote("audit_records"))
    assert [r["action"] for r in own[-2:]] == ["enroll", "update"]
    g.delete("route-1", gallery="local", operator="desk")
    assert all("route-1" not in _shard_subjects(g, k) for k in range(g.n_shards))
    with pytest.raises(GalleryError, match="not enrolled"):
        g.get("route-1", gallery="local")
    with pytest.raises(GalleryError, match="already enrolled"):
        g.enroll("s1", {1: gal[0]}, gallery="local", operator="desk")
    assert [r["action"] for r in g.audit_records()[-3:]] == ["enroll", "update", "delete"]
    enrol, update, _ = g.audit_records()[-3:]
    assert enrol["software"] == update["software"] == own[-1]["software"]  # coordinator and shard agree
    assert g.subjects(gallery="local") == sorted(f"s{i}" for i in range(40))
    assert g.verify_audit() > len(g.audit_records())


def test_shard_of_stable_and_consistent():
    # fixed values: placement must not change between versions or processes
    assert [dist.shard_of(f"s{i}", 4) for i in range(8)] == [dist.shard_of(f"s{i}", 4) for i in range(8)]
    assert dist.shard_of("subject-17", 1) == 0
    moved = [s for s in (f"x{i}" for i in range(2000)) if dist.shard_of(s, 4) != dist.shard_of(s, 5)]
    assert all(dist.shard_of(s, 5) == 4 for s in moved)  # growing moves subjects to the new shard only
    assert 250 < len(moved) < 550  # about 1/5


def test_one_shard_identical_above_exhaustive_limit(cluster, mated, calibration, tmp_path):
    gal, probes = mated
    items = [(f"f{i}", {0: t}) for i, t in enumerate(gal)]
    assert len(items) > SearchParams().exhaustive_max_fingers  # the FAISS shortlist is used
    with bm.Gallery.open(tmp_path / "s.db") as single, bm.Gallery.open(f"ray://{tmp_path / 'one'}?shards=1") as one:
        for g in (single, one):
            _fill(g, calibration, items, gallery="big")
        for i in (0, 50, 199):
            a = single.search({0: probes[i]}, max_candidates=10, operator="desk")
            b = one.search({0: probes[i]}, max_candidates=10, operator="desk")
            assert list(b) == list(a) and a[0].subject == f"f{i}"


@pytest.fixture(scope="module")
def big(cluster, mated, calibration, tmp_path_factory):
    """346 fingers (above EXHAUSTIVE_MAX_FINGERS) in a single store and 2- and 3-shard galleries.

    Two-finger subjects m<j> (positions 1, 2), one-finger subjects f<i> (positions 0, 1, 2),
    100 distractors and 6 "twins" enrolled with a copy of m0's finger 1: identical codes,
    so FAISS distance ties, vote ties and score ties are all exercised.
    """
    from biomatch.synthetic import template_batch

    gal, _ = mated
    extra = next(template_batch(100, 1, seed=23)).templates()
    items = [(f"m{j}", {1: gal[j], 2: gal[60 + j]}) for j in range(60)]
    items += [(f"f{i}", {i % 3: gal[i]}) for i in range(120, 240)]
    items += [(f"t{j}", {1: gal[0]}) for j in range(6)]
    items += [(f"d{j}", {j % 3: extra[j]}) for j in range(100)]
    root = tmp_path_factory.mktemp("big")
    stores = [bm.Gallery.open(root / "single.db")]
    stores += [bm.Gallery.open(f"ray://{root / f'sh{n}'}?shards={n}") for n in (2, 3)]
    for g in stores:
        _fill(g, calibration, items[:200])
        _fill(g, calibration, items[200:])
    yield stores
    for g in stores:
        g.close()


@pytest.mark.parametrize("short,ivf", [(False, False), (True, False), (False, True)],
                         ids=["default-shortlist", "short-shortlist", "ivf-lists"])
def test_identical_to_single_machine_above_exhaustive_limit(big, mated, short, ivf):

    single, two, three = big
    params = None
    if short:  # cut the finger and subject shortlists inside this gallery's size
        params = SearchParams(shortlist_fingers=25, shortlist_subjects=24, shortlist_subjects_min=12)
    if ivf:  # the gallery counts as large: a few IVF lists per query, decided by the coordinator for the shards
        params = SearchParams(flat_max_codes=1000, ivf_nprobe=24)
    reopened = []
    if params is not None:  # the same stores, opened with other search params (every shard gets them)
        single = bm.Gallery.open(single.path, params=params)
        two, three = (bm.Gallery.open(f"ray://{g.path}", params=params) for g in (two, three))
        reopened = [single, two, three]
    try:
        _identical_above_exhaustive_limit(single, two, three, mated, short, ivf)
    finally:
        for g in reopened:
            g.close()


def _identical_above_exhaustive_limit(single, two, three, mated, short, ivf):
    from biomatch import index as index_mod

    if ivf:
        from biomatch.descriptors import encode

        idx = single.index("local")
        assert max(idx.sizes().values()) > 1000
        q = index_mod.probe_codes(encode(mated[1][0])).codes
        every = idx.neighbours(q, 1, nprobe={p: index_mod.IVF_NLIST for p in idx.sizes()})
        few = idx.neighbours(q, 1)
        assert few.labels.size != every.labels.size or not np.array_equal(few.labels, every.labels)
    n_fingers = single.stats()["galleries"]["local"]["fingers"]
    assert n_fingers == 346 > SearchParams().exhaustive_max_fingers  # the FAISS shortlist is used
    assert two.stats()["galleries"]["local"]["fingers"] == three.stats()["galleries"]["local"]["fingers"] == n_fingers
    _, probes = mated
    cases = [{1: probes[0]}, {1: probes[7]}, {2: probes[60 + 33]}, {1: probes[5], 2: probes[65]},
             {0: probes[150]}, {2: probes[122]}, {0: probes[0]}]
    for probe in cases:
        for kw in ({"max_candidates": 10}, {"max_candidates": 40}):
            a = single.search(probe, galleries=["local"], operator="desk", **kw)
            assert len(a) == (min(kw["max_candidates"], 24 // len(probe)) if short else kw["max_candidates"])
            for g in (two, three):
                b = g.search(probe, galleries=["local"], operator="desk", **kw)
                assert b.complete and b.searched_subjects == 286
                # subjects, ranks, scores and FMRs bit for bit (floats compared with ==), FPIRs, pairs
                assert list(b) == list(a)
    if short or ivf:
        return
    hits = three.search({1: probes[0]}, galleries=["local"], max_candidates=10, operator="desk")
    assert {c.subject for c in hits[:7]} == {"m0", "t0", "t1", "t2", "t3", "t4", "t5"}  # tied twins by name
    assert [c.subject for c in hits[:7] if c.subject != "m0"] == [f"t{j}" for j in range(6)]


def test_import_store_onto_shards_searches_as_the_store(big, mated, calibration, tmp_path):
    """A single-machine store moved onto 3 shards (codes and rows copied): the same candidate lists."""
    single, _, _ = big
    _, probes = mated
    single.flush()
    with bm.Gallery.open(f"ray://{tmp_path / 'moved'}?shards=3") as g:
        g.set_calibration(calibration, operator="admin")
        got = g.import_store(single.path, gallery="local", operator="migrate")
        assert sum(got.values()) == len(single.subjects(gallery="local")) == 286 and set(got) == {0, 1, 2}
        for k in range(3):
            subjects = _shard_subjects(g, k)
            assert len(subjects) == got[k] and all(dist.shard_of(s, 3) == k for s in subjects)
            assert ray.get(g._actors[k].call.remote("check"))["ok"]
        for probe in ({1: probes[0]}, {2: probes[60 + 33]}, {1: probes[5], 2: probes[65]}, {0: probes[150]}):
            a = single.search(probe, galleries=["local"], max_candidates=10, operator="desk")
            b = g.search(probe, galleries=["local"], max_candidates=10, operator="desk")
            assert b.complete and list(b) == list(a)
        rec = [r for r in g.audit_records() if r["action"] == "import"][-1]
        assert rec["shards"] == {str(k): n for k, n in got.items()} and rec["failed_shards"] == []
        with pytest.raises(GalleryError, match="already enrolled"):
            g.import_store(single.path, gallery="local", operator="migrate")
        assert g.import_store(single.path, gallery="local", on_existing="skip") == {0: 0, 1: 0, 2: 0}
        with pytest.raises(GalleryError, match="not a biomatch store file"):
            g.import_store(tmp_path / "nothing.db", gallery="local")
        assert len(g.subjects(gallery="local")) == 286


def _no_fpir(c):
    import dataclasses

    return dataclasses.replace(c, fpir=0.0)


def test_subject_on_two_shards_votes_once(big, mated):
    """Mid-rebalance a subject can sit on its owner and another shard: it votes and is rescored once."""
    single, _, three = big
    gal, probes = mated
    other = (dist.shard_of("m1", 3) + 1) % 3
    ray.get(three._actors[other].call.remote("enroll", "m1", {1: gal[1], 2: gal[61]}, gallery="local", operator="t"))
    try:
        for probe in ({1: probes[1]}, {1: probes[1], 2: probes[61]}):
            a = single.search(probe, galleries=["local"], max_candidates=10, operator="desk")
            b = three.search(probe, galleries=["local"], max_candidates=10, operator="desk")
            # the same list; only FPIR's N counts the copy twice (287 subjects held by the shards)
            assert [_no_fpir(c) for c in b] == [_no_fpir(c) for c in a]
            assert a[0].subject == "m1" and b.searched_subjects == 287
    finally:
        ray.get(three._actors[other].call.remote("delete", "m1", gallery="local", operator="t"))


def test_add_shard_rebalance_preserves_everything(cluster, mated, calibration, tmp_path):
    gal, probes = mated
    subjects = _subjects(gal, 30)
    url = f"ray://{tmp_path / 'grow'}?shards=2"
    with bm.Gallery.open(url) as g:
        _fill(g, calibration, subjects[:20])
        for sid, fingers, meta in subjects[20:]:
            g.enroll(sid, fingers, gallery="local", operator="desk", metadata=meta,
                     originals={None: b"transaction-" + sid.encode()})
        probe = {1: probes[2 * 21], 2: probes[2 * 21 + 1]}
        before = list(g.search(probe, galleries=["local"], max_candidates=30, operator="desk"))
        records = {sid: g.get(sid, gallery="local") for sid, _, _ in subjects}
        expected_moves = sum(dist.shard_of(sid, 3) != dist.shard_of(sid, 2) for sid, _, _ in subjects)
        assert expected_moves > 0
        assert g.add_shard(operator="admin") == expected_moves
        assert g.n_shards == 3
        for k in range(3):
            assert all(dist.shard_of(s, 3) == k for s in _shard_subjects(g, k))
        for sid, rec in records.items():
            now = g.get(sid, gallery="local")
            assert {p: t.to_bytes() for p, t in now.fingers.items()} == {p: t.to_bytes() for p, t in rec.fingers.items()}
            assert now.metadata == rec.metadata and now.originals == rec.originals
            assert (now.created, now.updated) == (rec.created, rec.updated)  # copied by import_from, as they were
        for k in range(3):
            assert ray.get(g._actors[k].call.remote("check"))["ok"]
        after = g.search(probe, galleries=["local"], max_candidates=30, operator="desk")
        assert after.complete and list(after) == before
        assert g.verify_audit() > 0
    with pytest.raises(GalleryError, match="has 3 shards"):
        bm.Gallery.open(url)  # still says shards=2
    with bm.Gallery.open(f"ray://{tmp_path / 'grow'}") as g:
        assert g.n_shards == 3 and len(g.subjects(gallery="local")) == 30


def test_key_opens_every_store_and_rebalance_keeps_them_encrypted(cluster, mated, calibration, tmp_path, monkeypatch):
    from biomatch.gallery import Gallery

    monkeypatch.delenv("BIOMATCH_STORE_KEY", raising=False)
    gal, probes = mated
    subjects = _subjects(gal, 16)
    key = bytes(range(32))
    folder = tmp_path / "enc"
    with bm.Gallery.open(f"ray://{folder}?shards=2", key=key) as g:
        _fill(g, calibration, subjects)
        probe = {1: probes[2 * 5], 2: probes[2 * 5 + 1]}
        before = list(g.search(probe, galleries=["local"], max_candidates=5, operator="desk"))
        assert before[0].subject == "s5"
        assert g.add_shard(operator="admin") == sum(dist.shard_of(s, 3) != dist.shard_of(s, 2) for s, _, _ in subjects)
        assert list(g.search(probe, galleries=["local"], max_candidates=5, operator="desk")) == before
    for name in ("coordinator.db", "shard-0.db", "shard-1.db", "shard-2.db"):
        with pytest.raises(GalleryError, match="encrypted"):
            Gallery.open(folder / name)
    with Gallery.open(folder / "shard-2.db", key=key) as s2:  # the new shard: every subject it holds was moved there
        assert s2.encrypted and s2.subjects(gallery="local")
        assert s2.check()["ok"]


def test_dead_shard_reported_then_data_intact_on_restart(cluster, mated, calibration, tmp_path):
    gal, probes = mated
    subjects = _subjects(gal, 24)
    url = f"ray://{tmp_path / 'dies'}?shards=2"
    with bm.Gallery.open(url) as g:
        _fill(g, calibration, subjects)
        victim = dist.shard_of("s4", 2)
        on_victim = len(_shard_subjects(g, victim))
        probe = {1: probes[2 * 4]}
        full = list(g.search(probe, galleries=["local"], operator="desk"))
        assert full[0].subject == "s4"
        ray.kill(g._actors[victim], no_restart=True)
        res = g.search(probe, galleries=["local"], operator="desk")
        assert isinstance(res, list) and not res.complete and res.incomplete
        assert res.missing_shards == (victim,) and res.missing_subjects == on_victim
        assert res.searched_subjects == 24 - on_victim
        assert all(dist.shard_of(c.subject, 2) != victim for c in res)
        rec = g.audit_records()[-1]
        assert rec["missing_shards"] == [victim] and rec["missing_subjects"] == on_victim
        with pytest.raises(GalleryError, match="did not answer"):
            g.search(probe, galleries=["local"], operator="desk", on_missing="raise")
        assert g.shard_health()[victim] is False
        g.restart_shard(victim)
        assert list(g.search(probe, galleries=["local"], operator="desk")) == full
        ray.kill(g._actors[victim], no_restart=True)  # dies again; closing must still work
    with bm.Gallery.open(url) as g:  # reopen: a fresh actor on the same store
        res = g.search(probe, galleries=["local"], operator="desk")
        assert res.complete and list(res) == full
        assert g.subjects(gallery="local") == sorted(s for s, _, _ in subjects)
        assert g.get("s5", gallery="local").metadata == {"i": 5}
        assert g.verify_audit() > 0


@pytest.mark.parametrize(
    "url, match",
    [
        ("ray://", "names no directory"),
        ("ray://d?shards=0", "shards"),
        ("ray://d?shards=-1", "shards"),
        ("ray://d?shards=two", "shards"),
        ("ray://d?shards=1&shards=2", "shards"),
        ("ray://d?shards=100000", "shards"),
        ("ray://d?replicas=2", "unknown option"),
    ],
)
def test_bad_urls(url, match):
    with pytest.raises(GalleryError, match=match):
        bm.Gallery.open(url)


def test_new_directory_needs_shards_and_bad_arguments(cluster, tmp_path, mated):
    with pytest.raises(GalleryError, match="shards"):
        bm.Gallery.open(f"ray://{tmp_path / 'fresh'}")
    with pytest.raises(GalleryError, match="shards"):
        dist.shard_of("s1", 0)
    with pytest.raises(GalleryError, match="subject_id"):
        dist.shard_of("", 2)
    with pytest.raises(GalleryError, match="actor_options"):
        dist.ShardedGallery.open(f"ray://{tmp_path / 'x'}?shards=1", actor_options=[1])
    with pytest.raises(GalleryError, match="use ShardedGallery.open"):
        dist.ShardedGallery(tmp_path, 1)


def test_bad_search_and_enrol_inputs(pair, mated):
    _, g = pair
    probe = {1: mated[1][0]}
    with pytest.raises(GalleryError, match="max_candidates"):
        g.search(probe, max_candidates=0)
    with pytest.raises(GalleryError, match="on_missing"):
        g.search(probe, on_missing="ignore")
    with pytest.raises(GalleryError, match="no gallery named"):
        g.search(probe, galleries=["nowhere"])
    with pytest.raises(GalleryError, match="finger position"):
        g.search({11: mated[1][0]})
    with pytest.raises(GalleryError, match="subject_id"):
        g.enroll("", {1: mated[0][0]}, gallery="local")
    with pytest.raises(GalleryError, match="gallery"):
        g.enroll("new", {1: mated[0][0]}, gallery="bad name!")
    with pytest.raises(GalleryError, match="k: expected a shard number"):
        g.restart_shard(7)


def test_missing_ray_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(GalleryError, match=r"biomatch\[distributed\]"):
        bm.Gallery.open(f"ray://{tmp_path / 'g'}?shards=2")


def test_extra_impressions_on_shards_search_as_the_single_store(cluster, mated, calibration, tmp_path):
    gal, probes = mated
    imps = lambda s: [bm.Impression(2, 1, probes[s], "slap 13")]  # noqa: E731
    with bm.Gallery.open(tmp_path / "s.db") as single, bm.Gallery.open(f"ray://{tmp_path / 'sh'}?shards=2") as sh:
        for g in (single, sh):
            g.set_calibration(calibration, operator="admin")
            for s in range(12):
                g.enroll(f"s{s}", {2: gal[s]}, gallery="local", operator="desk", impressions=imps(s))
        got = sh.get("s3", gallery="local")
        assert [(n, src) for n, src, _ in got.impressions[2]] == [(1, "slap 13")]
        for s in (0, 5, 11):
            a, b = (g.search({2: probes[s]}, galleries=["local"], max_candidates=4, operator="d") for g in (single, sh))
            assert a[0].subject == f"s{s}"
            assert [(c.subject, round(c.score, 9), c.fmr) for c in a] == [(c.subject, round(c.score, 9), c.fmr) for c in b]
        sh.update("s3", {2: gal[20]}, gallery="local", operator="desk", keep_impressions=False)
        assert sh.get("s3", gallery="local").impressions == {}
        # one extra impression removed on its own, on both: the searches still agree, and no longer see it
        before = {c.subject: c.score for c in sh.search({2: probes[5]}, galleries=["local"], max_candidates=4,
                                                        operator="d")}
        seqs = [g.remove_impression("s5", 2, 1, gallery="local", operator="desk") for g in (single, sh)]
        assert sh.get("s5", gallery="local").impressions == {}
        rec = sh.audit_records(since=seqs[1])[0]
        assert rec["impressions_dropped"] == ["2.1"] and rec["shard"] == dist.shard_of("s5", 2) and rec["shard_seq"] > 0
        a, b = (g.search({2: probes[5]}, galleries=["local"], max_candidates=4, operator="d") for g in (single, sh))
        score = {g: {c.subject: c.score for c in cands} for g, cands in (("single", a), ("sharded", b))}
        assert score["single"]["s5"] == pytest.approx(score["sharded"]["s5"], abs=1e-9)  # (s3 differs: updated above)
        assert score["sharded"]["s5"] < before["s5"]
        with pytest.raises(GalleryError, match=r"holds no impression 1 of finger 2 \(extra impressions held: none\)"):
            sh.remove_impression("s5", 2, 1, gallery="local", operator="desk")
        with pytest.raises(GalleryError, match=r"impression number 0 of finger 2 is out of range 1-9 \(0 is the primary"):
            sh.remove_impression("s5", 2, 0, gallery="local", operator="desk")
