"""The list-by-list scan of an IVF partition: the ties-complete k-NN of a brute-force scan of the visited lists."""

from __future__ import annotations

import numpy as np
import pytest

from biomatch import _index_faiss, _ivf_scan
from biomatch.index import CODE_BYTES, IVF_NLIST


def _partition(rng, n):
    part = _index_faiss.Partition(flat_max_codes=0)
    # codes near a few of the shared centroids, so that lists hold several and distances tie
    centroids = _index_faiss.shared_centroids()[0]
    base = centroids[rng.integers(0, IVF_NLIST, n // 4 + 1)]
    codes = np.repeat(base, 4, axis=0)[:n].copy()
    flips = rng.random((n, CODE_BYTES * 8)) < 0.08
    codes ^= np.packbits(flips, axis=1, bitorder="little")
    part.add(codes, np.arange(n, dtype=np.int64) * 7 + 3)
    assert part.kind == "ivf"
    return part


def _brute(part, q, k, nprobe):
    """Every code at most as far as each query's k-th nearest among its nprobe lists' codes (numpy)."""
    lists = {lst: (ids.copy(), codes.copy()) for lst, ids, codes in part.entries()}
    _, assign = part.quantizer.search(q, nprobe)
    k = min(k, part.ntotal)
    out = set()
    for i in range(q.shape[0]):
        held = [lists[lst] for lst in assign[i] if lst in lists]
        if not held:
            continue
        ids = np.concatenate([h[0] for h in held])
        codes = np.concatenate([h[1] for h in held])
        d = np.unpackbits(codes ^ q[i], axis=1).sum(axis=1)
        dk = np.sort(d)[k - 1] if d.size >= k else d.max()
        out |= {(i, int(di), int(li)) for di, li in zip(d, ids) if di <= dk}
    return out


def _entries(result):
    rows, dist, labels = result
    assert rows.dtype == np.int64 and dist.dtype == np.int32 and labels.dtype == np.int64
    entries = list(zip(rows.tolist(), dist.tolist(), labels.tolist()))
    assert len(entries) == len(set(entries))  # no entry twice (the queries split over threads)
    return set(entries)


@pytest.mark.parametrize("k,nprobe", [(5, 4), (64, 16), (500, 3), (2000, 2048)])
def test_scan_equals_brute_force_and_faiss(k, nprobe):
    rng = np.random.default_rng(k + nprobe)
    part = _partition(rng, 3000)
    q = part.entries().__next__()[2][:1].copy()  # one query equal to an indexed code
    q = np.concatenate([q, np.packbits(rng.random((40, CODE_BYTES * 8)) < 0.5, axis=1, bitorder="little")])
    expected = _brute(part, q, k, nprobe)
    assert _entries(_index_faiss.search_ties_complete(part, q, k, nprobe)) == expected
    # FAISS's IndexBinaryIVF over the same centroids (the index before the compact lists): the
    # same codes in each list, and its heap search, ties completed, the same set
    faiss = _index_faiss.faiss_module()
    ivf = faiss.IndexBinaryIVF(part.quantizer, CODE_BYTES * 8, IVF_NLIST)
    all_ids = np.concatenate([ids for _, ids, _ in part.entries()])
    ivf.add_with_ids(np.concatenate([c for _, _, c in part.entries()]), all_ids)
    for lst, ids, codes in part.entries():
        n = ivf.invlists.list_size(lst)
        assert sorted(zip(faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), n).tolist(),
                          map(bytes, faiss.rev_swig_ptr(ivf.invlists.get_codes(lst), n * CODE_BYTES).reshape(n, -1)))) \
            == sorted(zip(ids.tolist(), map(bytes, codes)))
    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    kk = min(k, part.ntotal)
    d, lab = ivf.search(q, part.ntotal, params=params)
    heap = {(i, int(d[i, j]), int(lab[i, j])) for i in range(q.shape[0]) for j in range(d.shape[1])
            if lab[i, j] >= 0 and d[i, j] <= d[i, min(kk, int((lab[i] >= 0).sum())) - 1]}
    assert heap == expected


def test_scan_follows_changes_of_the_partition():
    """The list addresses are dropped on every change: added and removed codes are seen at once."""
    rng = np.random.default_rng(1)
    part = _partition(rng, 2000)
    q = np.packbits(rng.random((20, CODE_BYTES * 8)) < 0.5, axis=1, bitorder="little")
    before = _entries(_index_faiss.search_ties_complete(part, q, 16, 32))
    fids = 10**6 + np.arange(5)
    part.add(q[:5].copy(), (fids << 8) | 7)  # exact matches, ids beyond the list's (appended)
    after = _entries(_index_faiss.search_ties_complete(part, q, 16, 32))
    assert {(i, 0, int(fids[i] << 8 | 7)) for i in range(5)} <= after
    assert after == _brute(part, q, 16, 32)
    assert part.remove(fids) == 5
    assert _entries(_index_faiss.search_ties_complete(part, q, 16, 32)) == before


def test_scan_again_when_the_buffer_is_short(monkeypatch):
    rng = np.random.default_rng(2)
    part = _partition(rng, 2000)
    q = np.packbits(rng.random((30, CODE_BYTES * 8)) < 0.5, axis=1, bitorder="little")
    full = _entries(_index_faiss.search_ties_complete(part, q, 32, 64))
    monkeypatch.setattr(_ivf_scan, "SCAN_BUFFER", 3)
    assert _entries(_index_faiss.search_ties_complete(part, q, 32, 64)) == full == _brute(part, q, 32, 64)


def test_scan_refuses_other_code_sizes():
    part = _partition(np.random.default_rng(3), 100)
    with pytest.raises(ValueError, match="256-bit"):
        _ivf_scan.scan_ties_complete(part.lists.views(), np.zeros((2, 8), np.int64), np.zeros((2, 16), np.uint8), 4)


def test_scan_split_over_threads_is_the_same(monkeypatch):
    rng = np.random.default_rng(4)
    part = _partition(rng, 2000)
    q = np.packbits(rng.random((25, CODE_BYTES * 8)) < 0.5, axis=1, bitorder="little")
    monkeypatch.setattr(_index_faiss, "SEARCH_SPLIT_MIN_WORK", 1)
    monkeypatch.setattr(_index_faiss, "SEARCH_THREADS", 2)
    assert _entries(_index_faiss.search_ties_complete(part, q, 20, 40)) == _brute(part, q, 20, 40)
