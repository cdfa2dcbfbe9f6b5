"""The FAISS shortlist index: codes, votes, partitions, IVF, persistence."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from biomatch import _index_faiss, descriptors, index
from biomatch.index import CODE_BYTES, GalleryIndex


@pytest.fixture(scope="module")
def mated():
    from biomatch.synthetic import template_batch

    ts = next(template_batch(60, 2, seed=7)).templates()
    return ts[0::2], ts[1::2]


def _codes(t, probe=False):
    f = descriptors.encode(t)
    return index.probe_codes(f) if probe else index.finger_codes(f)


def _reference_reduce(bits: np.ndarray) -> np.ndarray:
    """Slow obvious reference: code bit j = OR of the grouped cylinder bits."""
    groups = index._sampled_bits()
    out = np.zeros((bits.shape[0], index.CODE_BITS), dtype=np.uint8)
    for r in range(bits.shape[0]):
        for j in range(index.CODE_BITS):
            out[r, j] = any((bits[r, b // 8] >> (b % 8)) & 1 for b in groups[j])
    return np.packbits(out, axis=1, bitorder="little")



class _Vote(NamedTuple):
    finger_id: int
    votes: float


def _shortlist(gi, codes, position, size):
    """The production shortlist (biomatch.search.shortlist) of one probe finger over an index
    whose fingers are each their own subject: (finger id, votes), best first."""
    from biomatch.search.shortlist import neighbours_of, top_fingers

    raw = gi.neighbours(codes.codes, position, index.K_NEIGHBOURS)
    owner = {int(f): f"{int(f):09d}" for f in np.unique(raw.labels >> index.ANGLE_ID_BITS)}
    nb = neighbours_of(raw, codes.angle_bins, owner)
    return [_Vote(int(subject), votes) for subject, _, votes in top_fingers(nb, size)]


def test_codes_shape_bound_and_reference(mated):
    gal, _ = mated
    f = descriptors.encode(gal[0])
    c = index.finger_codes(f).codes
    assert c.dtype == np.uint8 and c.shape[1] == CODE_BYTES
    assert c.shape[0] == min(f.n_valid, index.MAX_INDEXED_PER_FINGER)
    pc = index.probe_codes(f)
    p = pc.codes
    assert p.shape[0] == f.n_valid == pc.angle_bins.size
    assert pc.angle_bins.min() >= 0 and pc.angle_bins.max() < 2**index.ANGLE_ID_BITS
    np.testing.assert_array_equal(p, _reference_reduce(np.asarray(f.bits)[np.asarray(f.valid)]))
    # codes are not near-empty (the point of OR-grouping sparse cylinders)
    density = np.unpackbits(p, axis=1).mean()
    assert 0.1 < density < 0.9


def test_group_bits_stay_inside_the_descriptor():
    groups = index._sampled_bits()
    assert groups.shape == (index.CODE_BITS, index.GROUP_BITS)
    assert groups.min() >= 0 and groups.max() < descriptors.DESCRIPTOR_BYTES * 8
    assert all(len(set(g)) == index.GROUP_BITS for g in groups)


def test_mate_is_shortlisted(mated):
    gal, probes = mated
    gi = GalleryIndex()
    gi.add([(100 + i, 0, _codes(t)) for i, t in enumerate(gal)], generation=1)
    ranks = []
    for i, p in enumerate(probes[:20]):
        ids = [v.finger_id for v in _shortlist(gi, _codes(p, True), 0, 10)]
        ranks.append(ids.index(100 + i) if 100 + i in ids else 99)
    assert np.mean(np.array(ranks) < 10) >= 0.8
    votes = _shortlist(gi, _codes(probes[0], True), 0, 10)
    assert all(a.votes >= b.votes for a, b in zip(votes, votes[1:]))


def test_partitions_by_position(mated):
    gal, probes = mated
    gi = GalleryIndex()
    gi.add([(1, 2, _codes(gal[0])), (2, 3, _codes(gal[0])), (3, 0, _codes(gal[1]))])
    ids = {v.finger_id for v in _shortlist(gi, _codes(probes[0], True), 2, 10)}
    assert 1 in ids and 2 not in ids  # position 3 partition not searched for a position-2 probe
    ids0 = {v.finger_id for v in _shortlist(gi, _codes(probes[0], True), 0, 10)}
    assert {1, 2} <= ids0


def test_remove_drops_every_code(mated):
    gal, probes = mated
    gi = GalleryIndex()
    gi.add([(i, 0, _codes(t)) for i, t in enumerate(gal[:10])])
    n3 = _codes(gal[3]).codes.shape[0]
    total = gi.ntotal
    assert gi.remove([3], generation=5) == n3
    assert gi.ntotal == total - n3 and gi.generation == 5
    assert 3 not in {v.finger_id for v in _shortlist(gi, _codes(probes[3], True), 0, 10)}


def test_small_partitions_are_searched_exhaustively_large_ones_by_ivf_lists(mated):
    """Up to flat_max_codes every list is visited: the ties-complete k-NN of a brute-force Hamming
    scan; beyond, ivf_nprobe lists of the shared centroids (the full count again equals exhaustive)."""
    gal, probes = mated
    entries = [(i, 0, _codes(t)) for i, t in enumerate(gal)]
    gi = GalleryIndex()
    gi.add(entries)
    large = GalleryIndex(flat_max_codes=200, ivf_nprobe=4)  # the same gallery counts as "large"
    large.add(entries)
    every_list = GalleryIndex(flat_max_codes=200, ivf_nprobe=index.IVF_NLIST)
    every_list.add(entries)
    codes = np.concatenate([c.codes for _, _, c in entries])
    labels = np.concatenate([(f << index.ANGLE_ID_BITS) | c.angle_bins for f, _, c in entries])
    k = 8
    q = _codes(probes[0], True).codes
    dist = np.unpackbits(q[:, None, :] ^ codes[None, :, :], axis=2).sum(axis=2)
    d_k = np.sort(dist, axis=1)[:, k - 1]
    expected = sorted((int(r), int(labels[c]), int(dist[r, c])) for r, c in zip(*np.nonzero(dist <= d_k[:, None])))

    def got(raw):  # (cylinder, label, distance) of every entry; labels repeat within a finger
        return sorted(zip(raw.rows.tolist(), raw.labels.tolist(), raw.dist.tolist()))

    assert index.nprobe_for(gi.ntotal) == gi.nprobe_for(gi.ntotal) == index.IVF_NLIST
    assert got(gi.neighbours(q, 0, k)) == expected
    assert index.nprobe_for(gi.ntotal, 200, 4) == large.nprobe_for(large.ntotal) == 4
    few = large.neighbours(q, 0, k)
    assert got(few) != expected  # fewer lists: other (farther) neighbours for some cylinders
    # a shard told to visit every list (the whole gallery is small) searches exhaustively
    assert got(large.neighbours(q, 0, k, nprobe={0: index.IVF_NLIST})) == expected
    assert got(every_list.neighbours(q, 0, k)) == expected

def _entries_of(gi):
    """Every (position, label, code bytes) an index holds, whatever its partitions' kinds."""
    return sorted((pos, int(i), c.tobytes()) for pos, part in gi._parts.items()
                  for _, ids, codes in part.entries() for i, c in zip(ids, codes))


def test_partition_flat_while_small_then_ivf_with_the_same_codes_and_neighbours(mated):
    gal, probes = mated
    first = [(i, 0, _codes(t)) for i, t in enumerate(gal[:20])]
    gi = GalleryIndex(flat_max_codes=sum(c.codes.shape[0] for _, _, c in first) + 50)
    gi.add(first)
    assert gi._parts[0].kind == "flat" and gi.describe()["partitions"]["0"]["kind"] == "flat"
    q = _codes(probes[3], True).codes
    gi.add([(i, 0, _codes(t)) for i, t in enumerate(gal[20:], start=20)])  # grows past the limit
    assert gi._parts[0].kind == "ivf"
    flat = GalleryIndex(flat_max_codes=10**9)
    flat.add([(i, 0, _codes(t)) for i, t in enumerate(gal)])
    assert flat._parts[0].kind == "flat" and _entries_of(flat) == _entries_of(gi)

    def got(raw):
        return sorted(zip(raw.rows.tolist(), raw.labels.tolist(), raw.dist.tolist()))

    every = {0: index.IVF_NLIST}
    assert got(gi.neighbours(q, 0, 8, nprobe=every)) == got(flat.neighbours(q, 0, 8))
    # told to visit fewer lists, a flat partition becomes the IVF the other one is, with its answers
    assert got(flat.neighbours(q, 0, 8, nprobe={0: 5})) == got(gi.neighbours(q, 0, 8, nprobe={0: 5}))
    assert flat._parts[0].kind == "ivf"
    # removal on both kinds
    back = GalleryIndex()
    back.add([(i, 0, _codes(t)) for i, t in enumerate(gal)])
    n3 = _codes(gal[3]).codes.shape[0]
    assert back.remove([3]) == gi.remove([3]) == n3 and _entries_of(back) == _entries_of(gi)


def _faiss_format_4_file(path, gi, gallery):
    """The file format 4 wrote for ``gi``: its manifest, then each partition as a FAISS IndexBinaryIDMap."""
    import hashlib
    import json

    faiss = _index_faiss.faiss_module()
    blobs = []
    for pos, part in sorted(gi._parts.items()):
        old = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(index.CODE_BITS))
        for _, ids, codes in part.entries():
            old.add_with_ids(np.ascontiguousarray(codes), ids)
        blobs.append((pos, faiss.serialize_index_binary(old).tobytes()))
    manifest = {"version": index.index_version(4), "gallery": gallery, "generation": gi.generation,
                "partitions": [{"position": pos, "kind": "flat", "nbytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                               for pos, b in blobs]}
    head = json.dumps(manifest, sort_keys=True).encode()
    path.write_bytes(index._HEADER.pack(index._MAGIC, len(head)) + head + b"".join(b for _, b in blobs))


def test_format_4_faiss_file_is_not_loaded_and_the_store_rebuilds_it(tmp_path, mated):
    from biomatch.gallery import Gallery

    gal, probes = mated
    store = tmp_path / "s.db"
    with Gallery.open(store) as g:
        g.enroll_many([(f"s{i}", {0: gal[i]}) for i in range(12)], gallery="local", operator="a")
        gi = g.index("local")
        n, want = gi.ntotal, g.search({0: probes[4]}, galleries=["local"], operator="a")[0].subject
    path = g._index_path("local")
    _faiss_format_4_file(path, gi, "local")
    assert GalleryIndex.read_manifest(path)["version"] == index.index_version(4) != index.index_version()
    assert GalleryIndex.load(path, "local") is None
    with Gallery.open(store) as g:
        assert g.index("local").ntotal == n and _entries_of(g.index("local")) == _entries_of(gi)
        assert g.search({0: probes[4]}, galleries=["local"], operator="a")[0].subject == want == "s4"
    assert GalleryIndex.read_manifest(path)["version"] == index.index_version()  # rebuilt and saved


def test_ivf_file_loaded_under_a_larger_flat_limit_is_flat(tmp_path, mated):
    gal, probes = mated
    gi = GalleryIndex(generation=3, flat_max_codes=0)
    gi.add([(i, i % 2, _codes(t)) for i, t in enumerate(gal)])
    assert {p.kind for p in gi._parts.values()} == {"ivf"}
    path = tmp_path / "i.faiss"
    gi.save(path, "g")
    back = GalleryIndex.load(path, "g")
    assert back is not None and {p.kind for p in back._parts.values()} == {"flat"}
    assert _entries_of(back) == _entries_of(gi)
    q = _codes(probes[5], True)
    every = GalleryIndex.load(path, "g", flat_max_codes=0, ivf_nprobe=index.IVF_NLIST)
    assert {p.kind for p in every._parts.values()} == {"ivf"}
    assert _shortlist(back, q, 1, 6) == _shortlist(every, q, 1, 6)


def test_memory_bound_per_finger(mated):
    gal, _ = mated
    gi = GalleryIndex()
    gi.add([(i, 0, _codes(t)) for i, t in enumerate(gal)])
    assert gi._parts[0].kind == "flat"
    codes = gi.ntotal
    # a flat partition: code, direction bin and a one-byte id difference an entry; every 32nd id
    # whole (up to 4 bytes more) with its 4-byte offset; the array's header
    assert codes * (CODE_BYTES + 2) <= gi.memory_bytes() <= codes * (CODE_BYTES + 2.25) + 200
    assert gi.memory_bytes() / len(gal) <= index.MAX_INDEXED_PER_FINGER * (CODE_BYTES + 2.25)


def test_save_load_round_trip_and_rejections(tmp_path, mated):
    gal, probes = mated
    gi = GalleryIndex(generation=7)
    gi.add([(i, i % 3, _codes(t)) for i, t in enumerate(gal[:12])])
    path = tmp_path / "x.db.local.faiss"
    gi.save(path, "local")
    back = GalleryIndex.load(path, "local")
    assert back is not None and back.generation == 7 and back.ntotal == gi.ntotal
    q = _codes(probes[1], True)
    assert _shortlist(back, q, 1, 5) == _shortlist(gi, q, 1, 5)
    assert GalleryIndex.read_manifest(path)["version"] == index.index_version()
    assert GalleryIndex.load(path, "other") is None  # another gallery's file
    assert GalleryIndex.load(tmp_path / "missing", "local") is None
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert GalleryIndex.load(path, "local") is None  # checksum
    path.write_bytes(bytes(data[:-10]))
    assert GalleryIndex.load(path, "local") is None  # truncated
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_other_version_is_rejected(tmp_path, mated, monkeypatch):
    gal, _ = mated
    gi = GalleryIndex(generation=1)
    gi.add([(0, 0, _codes(gal[0]))])
    path = tmp_path / "i.faiss"
    gi.save(path, "g")
    monkeypatch.setattr(index, "INDEX_FORMAT_VERSION", index.INDEX_FORMAT_VERSION + 1)
    assert GalleryIndex.load(path, "g") is None


def test_empty_probe_and_empty_index():
    gi = GalleryIndex()
    empty = index.Codes(np.zeros((0, CODE_BYTES), np.uint8), np.zeros(0, np.int64))
    assert _shortlist(gi, index.Codes(np.zeros((3, CODE_BYTES), np.uint8), np.zeros(3, np.int64)), 0, 5) == []
    gi.add([(1, 0, empty)])
    assert _shortlist(gi, empty, 0, 5) == []


def test_rotation_consistency_helps(mated, monkeypatch):
    gal, probes = mated
    gi = GalleryIndex()
    gi.add([(i, 0, _codes(t)) for i, t in enumerate(gal)])

    def top1():
        return sum(_shortlist(gi, _codes(p, True), 0, 1)[0].finger_id == i for i, p in enumerate(probes[:30]))

    with_rot = top1()
    monkeypatch.setattr(index, "ROTATION_BINS", 0)
    without = top1()
    assert with_rot >= without and with_rot >= 18


@pytest.mark.parametrize("flat_max_codes", [0, None])  # IVF and flat partitions
def test_split_index_neighbours_merge_to_the_single_index(mated, flat_max_codes):
    """Ties-complete k-NN of two indexes, merged by the explicit tie rule, equal one index's (any add order)."""
    gal, probes = mated
    entries = [(i, 1 + i % 2, _codes(t)) for i, t in enumerate(gal)]
    entries += [(1000 + i, 1, _codes(gal[0])) for i in range(5)]  # identical codes: distance ties
    one = index.GalleryIndex(flat_max_codes=flat_max_codes)
    one.add(entries[::-1])  # reversed: a heap scan keeps the earliest added of tied codes
    a, b = index.GalleryIndex(flat_max_codes=flat_max_codes), index.GalleryIndex(flat_max_codes=flat_max_codes)
    a.add(entries[0::2])
    b.add(entries[1::2])

    def kept(raws):
        rows, part, dist, lab = (np.concatenate(c) for c in zip(*raws))
        fid, abin = lab >> index.ANGLE_ID_BITS, lab & ((1 << index.ANGLE_ID_BITS) - 1)
        keep = index.select_neighbours(rows, part, dist, fid, abin, 8)
        return rows[keep], part[keep], dist[keep], fid[keep], abin[keep]

    for p, pos in ((probes[0], 1), (probes[3], 0), (probes[4], 2)):
        q = _codes(p, True)
        whole = kept([one.neighbours(q.codes, pos, 8)])
        split = kept([a.neighbours(q.codes, pos, 8), b.neighbours(q.codes, pos, 8)])
        for x, y in zip(whole, split):
            assert np.array_equal(x, y)
        fa, ta = index.vote_totals(whole[0], whole[2], whole[3], whole[4], q.angle_bins)
        perm = np.random.default_rng(0).permutation(split[0].size)
        fb, tb = index.vote_totals(*(c[perm] for c in (split[0], split[2], split[3], split[4])), q.angle_bins)
        assert np.array_equal(fa, fb) and np.array_equal(ta, tb)  # bit for bit, whatever the order


def _random_index(n_fingers: int, per: int = 30, generation: int = 3) -> GalleryIndex:
    rng = np.random.default_rng(5)
    gi = GalleryIndex(generation=generation)
    gi.add([
        (f, f % 3, index.Codes(rng.integers(0, 256, (per, CODE_BYTES), dtype=np.uint8), rng.integers(0, 8, per).astype(np.int64)))
        for f in range(n_fingers)
    ])
    return gi


def test_streamed_save_is_the_buffered_layout_and_holds_no_copy(tmp_path):
    """A plaintext save streams the partitions (no copy of the index in memory) and writes
    exactly the bytes of the buffered layout the sealed path builds (identity seal)."""
    import tracemalloc

    gi = _random_index(3000)  # ~3.6 MB of partitions
    streamed, buffered = tmp_path / "s.faiss", tmp_path / "b.faiss"
    tracemalloc.start()
    try:
        gi.save(streamed, "g")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    gi.save(buffered, "g", seal=lambda b: b)
    size = streamed.stat().st_size
    assert size > 3_000_000
    assert streamed.read_bytes() == buffered.read_bytes()
    assert peak < size / 2  # the buffered save held two full copies (FAISS's array and its bytes)
    back = GalleryIndex.load(streamed, "g")
    assert back is not None and back.ntotal == gi.ntotal and back.generation == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_streamed_save_that_fails_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    gi = _random_index(50)
    path = tmp_path / "x.faiss"
    gi.save(path, "g")
    before = path.read_bytes()
    gi.add([(9999, 0, index.Codes(np.ones((3, CODE_BYTES), np.uint8), np.zeros(3, np.int64)))])
    monkeypatch.setattr(_index_faiss.Partition, "write_to", lambda self, fh: (0, "x"))  # digest mismatch
    with pytest.raises(index.GalleryError, match="changed while being saved"):
        gi.save(path, "g")
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_search_split_over_threads_gives_the_same_neighbours(mated, monkeypatch):
    """A scan split over SEARCH_THREADS parts returns what one scan returns."""
    gal, probes = mated
    idx = index.GalleryIndex()
    idx.add([(i, 0, _codes(t)) for i, t in enumerate(gal)])
    q = _codes(probes[0], True).codes
    monkeypatch.setattr(_index_faiss, "SEARCH_THREADS", 1)
    one = idx.neighbours(q, 0, 8)
    monkeypatch.setattr(_index_faiss, "SEARCH_THREADS", 2)
    monkeypatch.setattr(_index_faiss, "SEARCH_SPLIT_MIN_WORK", 0)
    split = idx.neighbours(q, 0, 8)
    # the same entries (their order follows the scan's: lists, then blocks of rows, then queries)
    assert one.rows.size == split.rows.size > 0
    assert sorted(zip(*(c.tolist() for c in one))) == sorted(zip(*(c.tolist() for c in split)))
