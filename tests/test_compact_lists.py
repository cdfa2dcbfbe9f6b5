"""The compact inverted lists of an index partition: entries kept exactly, ids compact, malformed bytes refused."""

from __future__ import annotations

import numpy as np
import pytest

from biomatch._compact_lists import CHECKPOINT, CODE_BYTES, CompactLists, decode_ids, decode_one, encode_ids


def _held(lists):
    return sorted((lst, int(i), c.tobytes()) for lst in range(lists.nlist)
                  for i, c in zip(*lists.get(lst)))


def _entries(rng, n, fid_max):
    codes = rng.integers(0, 256, (n, CODE_BYTES), dtype=np.uint8)
    labels = (rng.integers(0, fid_max, n) << 8) | rng.integers(0, 256, n)
    return codes, labels.astype(np.int64)


@pytest.mark.parametrize("fid_max", [10, 1 << 20, 1 << 40])  # one-byte differences .. several bytes
def test_appends_out_of_order_adds_and_removal_keep_exactly_the_entries(fid_max):
    rng = np.random.default_rng(fid_max % 97)
    lists = CompactLists(4)
    want = []
    for step in range(6):  # mostly increasing ids (appended), some below a list's last (rewritten)
        codes, labels = _entries(rng, 40, fid_max)
        if step % 2 == 0:
            labels = labels + ((fid_max << 8) * (step + 1))
        lst = rng.integers(0, 4, 40)
        for k in range(4):
            lists.add(k, codes[lst == k], labels[lst == k])
        want += [(int(k), int(i), c.tobytes()) for k, i, c in zip(lst, labels, codes)]
    assert _held(lists) == sorted(want) and lists.ntotal == len(want)
    for k in range(4):  # each list in non-decreasing finger-id order
        fids = lists.get(k)[0] >> 8
        assert np.all(np.diff(fids) >= 0)
    gone = np.unique(np.array([i for _, i, _ in want[::5]]) >> 8)
    n_gone = sum(1 for _, i, _ in want if (i >> 8) in set(gone.tolist()))
    assert lists.remove(gone) == n_gone
    assert _held(lists) == sorted(w for w in want if (w[1] >> 8) not in set(gone.tolist()))


def test_bytes_per_entry_and_round_trip():
    rng = np.random.default_rng(1)
    lists = CompactLists(1)
    codes = rng.integers(0, 256, (5000, CODE_BYTES), dtype=np.uint8)
    fids = np.repeat(np.arange(200), 25)  # a flat partition: a finger's cylinders side by side
    lists.add(0, codes, (fids << 8) | rng.integers(0, 256, 5000))
    # code, bin, one-byte difference; every CHECKPOINT-th id whole (2 bytes from 128) and its offset (4 bytes)
    whole = fids[::CHECKPOINT]
    assert lists.blocks[0].nbytes == 5000 * (CODE_BYTES + 2) + int((whole >= 128).sum()) + 4 * whole.size
    back = CompactLists.from_buffer(b"".join(bytes(c) for c in lists.chunks()))
    assert _held(back) == _held(lists) and back.last[0] == lists.last[0] == 199


def test_malformed_bytes_are_refused():
    rng = np.random.default_rng(2)
    lists = CompactLists(2)
    codes, labels = _entries(rng, 30, 1000)
    lists.add(1, codes, labels)
    good = b"".join(bytes(c) for c in lists.chunks())
    CompactLists.from_buffer(good)
    with pytest.raises(ValueError):
        CompactLists.from_buffer(good[:-1])  # truncated
    with pytest.raises(ValueError):
        CompactLists.from_buffer(b"XXXX" + good[4:])  # not this layout
    bad = bytearray(good)
    bad[-1] |= 0x80  # the last id's varint runs past its block
    with pytest.raises(ValueError, match="ids"):
        CompactLists.from_buffer(bytes(bad))
    with pytest.raises(ValueError, match="non-negative"):
        lists.add(0, codes[:1], np.array([-5], np.int64))


def test_varint_round_trip_and_overrun():
    fids = np.sort(np.r_[[0, 0, 1, 127, 128, 16511, 1 << 35, (1 << 55) + 3],
                         np.random.default_rng(3).integers(0, 1 << 30, 100)]).astype(np.int64)
    buf, cps = encode_ids(fids, np.int64(0), 0, 0)
    assert cps.size == -(-fids.size // CHECKPOINT)
    out = np.empty(fids.size, np.int64)
    assert decode_ids(buf, fids.size, out) == buf.size and np.array_equal(out, fids)
    assert [decode_one(buf, cps.view(np.uint8), r) for r in range(fids.size)] == fids.tolist()
    assert decode_ids(buf[:-1], fids.size, out) == -1
