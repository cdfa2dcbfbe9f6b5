"""Inverted lists with compact ids: the storage of an index partition (private to :mod:`biomatch._index_faiss`).

An entry is a 256-bit code and a label ``finger_id << 8 | direction bin``
(:data:`biomatch.index.ANGLE_ID_BITS`). FAISS's inverted lists keep a label as an
int64 beside each code, 40 B an entry; here a list is one uint8 block::

    codes (n x 32 B) | direction bins (n x 1 B) | finger ids, delta + varint

Entries of a list are kept in non-decreasing finger-id order (enrolment appends
larger ids), so a finger id is stored as the difference to the previous entry's
in 7-bit groups (LEB128: a difference below 128 is one byte). At 100,000 fingers
in 2,048 lists neighbouring entries of a list are ~70 fingers apart: ~1.2 B
an id, ~34 B an entry (a flat partition, one list: ~1 B). The list scan
(:mod:`biomatch._ivf_scan`) decodes a list's ids as it walks it.

A list's block is replaced, never written in place: adding to a list appends
(a new block of the old bytes and the new), an entry added out of order or a
removal rewrites the touched lists only. Blocks are exactly sized (no growth
slack): the bytes held are the bytes counted (:meth:`CompactLists.nbytes`).
"""

from __future__ import annotations

import struct
import sys

import numpy as np
from numba import njit

CODE_BYTES = 32
_BIN_BITS = 8
_BIN_MASK = (1 << _BIN_BITS) - 1
_EMPTY = np.zeros(0, np.uint8)
#: Header of a serialised set of lists: magic, layout version, number of lists.
_HEAD = struct.Struct("<4sIq")
_MAGIC = b"BMCL"
_LAYOUT = 1


@njit(cache=True, nogil=True)
def encode_ids(fids, prev):
    """LEB128 bytes of the differences of ``fids`` (non-decreasing int64, from ``prev``)."""
    out = np.empty(fids.size * 10, np.uint8)
    n = 0
    for i in range(fids.size):
        d = fids[i] - prev
        prev = fids[i]
        while d >= 128:
            out[n] = np.uint8((d & 127) | 128)
            n += 1
            d >>= 7
        out[n] = np.uint8(d)
        n += 1
    return out[:n]


@njit(cache=True, nogil=True)
def decode_ids(buf, n, out):
    """Decode ``n`` finger ids of ``buf`` (:func:`encode_ids` from 0) into ``out``; returns the
    bytes read, -1 when ``buf`` ends first or an id overflows."""
    prev = np.int64(0)
    p = 0
    for i in range(n):
        d = np.int64(0)
        shift = 0
        while True:
            if p >= buf.size or shift > 56:
                return -1
            b = np.int64(buf[p])
            p += 1
            d |= (b & 127) << shift
            if b < 128:
                break
            shift += 7
        prev += d
        out[i] = prev
    return p


def _block(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A list block of entries already in non-decreasing finger-id order."""
    n = labels.size
    fids = labels >> _BIN_BITS
    var = encode_ids(fids, np.int64(0))
    block = np.empty(n * (CODE_BYTES + 1) + var.size, np.uint8)
    block[: n * CODE_BYTES] = codes.reshape(-1)
    block[n * CODE_BYTES : n * (CODE_BYTES + 1)] = labels & _BIN_MASK
    block[n * (CODE_BYTES + 1) :] = var
    return block


class ListViews:
    """What a scan reads: per list its length, the address of its block and the block's byte length.

    Holds the blocks themselves, so that the addresses stay valid for as long as the
    view is used, whatever the lists become meanwhile (a change replaces blocks).
    """

    def __init__(self, lists: "CompactLists"):
        self.blocks = tuple(lists.blocks)
        self.sizes = lists.sizes.copy()
        self.nbytes = np.array([b.size for b in self.blocks], np.int64)
        self.addrs = np.array([b.__array_interface__["data"][0] if b.size else 0 for b in self.blocks], np.int64)


class CompactLists:
    """``nlist`` inverted lists of (code, label) entries in compact blocks (see the module docstring)."""

    def __init__(self, nlist: int):
        self.blocks = [_EMPTY] * int(nlist)
        self.sizes = np.zeros(int(nlist), np.int64)
        self.last = np.zeros(int(nlist), np.int64)  # finger id of each list's last entry

    @property
    def nlist(self) -> int:
        return len(self.blocks)

    @property
    def ntotal(self) -> int:
        return int(self.sizes.sum())

    def get(self, lst: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels int64, codes n x 32 view) of list ``lst``."""
        n, block = int(self.sizes[lst]), self.blocks[lst]
        fids = np.empty(n, np.int64)
        if n:
            decode_ids(block[n * (CODE_BYTES + 1) :], n, fids)
        labels = (fids << _BIN_BITS) | block[n * CODE_BYTES : n * (CODE_BYTES + 1)]
        return labels, block[: n * CODE_BYTES].reshape(n, CODE_BYTES)

    def set(self, lst: int, codes: np.ndarray, labels: np.ndarray) -> None:
        """Make list ``lst`` hold these entries (any order: sorted by finger id, stably)."""
        labels = np.asarray(labels, np.int64)
        if labels.size and labels.min() < 0:
            raise ValueError("internal: index labels are non-negative")
        order = np.argsort(labels >> _BIN_BITS, kind="stable")
        labels, codes = labels[order], np.ascontiguousarray(codes[order])
        self.blocks[lst] = _block(codes, labels) if labels.size else _EMPTY
        self.sizes[lst] = labels.size
        self.last[lst] = labels[-1] >> _BIN_BITS if labels.size else 0

    def add(self, lst: int, codes: np.ndarray, labels: np.ndarray) -> None:
        """Add entries to list ``lst``: appended when their finger ids follow the list's, else the list rewritten."""
        labels = np.asarray(labels, np.int64)
        if labels.size == 0:
            return
        n = int(self.sizes[lst])
        order = np.argsort(labels >> _BIN_BITS, kind="stable")
        labels, codes = labels[order], np.ascontiguousarray(codes[order])
        fids = labels >> _BIN_BITS
        if n and fids[0] < self.last[lst]:
            old_labels, old_codes = self.get(lst)
            self.set(lst, np.concatenate([old_codes, codes]), np.concatenate([old_labels, labels]))
            return
        if fids[0] < 0:
            raise ValueError("internal: index labels are non-negative")
        old = self.blocks[lst]
        m = labels.size
        var = encode_ids(fids, np.int64(self.last[lst]))
        block = np.empty(old.size + m * (CODE_BYTES + 1) + var.size, np.uint8)
        a, b = n * CODE_BYTES, (n + m) * CODE_BYTES
        block[:a] = old[:a]
        block[a:b] = codes.reshape(-1)
        block[b : b + n] = old[a : a + n]
        block[b + n : b + n + m] = labels & _BIN_MASK
        block[b + n + m : b + n + m + old.size - a - n] = old[a + n :]
        block[b + n + m + old.size - a - n :] = var
        self.blocks[lst] = block
        self.sizes[lst] = n + m
        self.last[lst] = fids[-1]

    def remove(self, fids: np.ndarray) -> int:
        """Remove every entry of the finger ids ``fids``; rewrites the lists that held any."""
        fids = np.unique(np.asarray(fids, np.int64))
        removed = 0
        for lst in np.flatnonzero(self.sizes):
            labels, codes = self.get(lst)
            hit = np.isin(labels >> _BIN_BITS, fids)
            if hit.any():
                removed += int(hit.sum())
                self.set(lst, codes[~hit], labels[~hit])
        return removed

    def views(self) -> ListViews:
        return ListViews(self)

    def nbytes(self) -> int:
        """Bytes held: the blocks (with their array headers) and the per-list lengths."""
        return sum(sys.getsizeof(b) for b in self.blocks if b.size) + self.sizes.nbytes + self.last.nbytes

    # -- persistence ----------------------------------------------------------
    def chunks(self):
        """The serialised lists, piece by piece (header, lengths, then each block; no copy of the blocks)."""
        yield _HEAD.pack(_MAGIC, _LAYOUT, self.nlist)
        yield self.sizes.astype("<i8").tobytes()
        yield np.array([b.size for b in self.blocks], "<i8").tobytes()
        for b in self.blocks:
            if b.size:
                yield memoryview(b)

    @classmethod
    def from_buffer(cls, data) -> "CompactLists":
        """Lists read from :meth:`chunks`' bytes (each block copied out); ValueError when malformed."""
        data = memoryview(data)
        if len(data) < _HEAD.size:
            raise ValueError("truncated index lists")
        magic, layout, nlist = _HEAD.unpack_from(data)
        if magic != _MAGIC or layout != _LAYOUT or not 0 < nlist <= 1 << 20:
            raise ValueError("not a biomatch index list set of this layout")
        off = _HEAD.size
        if len(data) < off + 16 * nlist:
            raise ValueError("truncated index lists")
        sizes = np.frombuffer(data, "<i8", nlist, off).astype(np.int64)
        nbytes = np.frombuffer(data, "<i8", nlist, off + 8 * nlist).astype(np.int64)
        off += 16 * nlist
        if (sizes < 0).any() or (nbytes < sizes * (CODE_BYTES + 2)).any() or off + int(nbytes.sum()) != len(data):
            raise ValueError("inconsistent index list lengths")
        out = cls(nlist)
        out.sizes = sizes
        raw = np.frombuffer(data, np.uint8)
        for lst in np.flatnonzero(sizes):
            out.blocks[lst] = raw[off : off + nbytes[lst]].copy()
            off += int(nbytes[lst])
            n = int(sizes[lst])
            fids = np.empty(n, np.int64)
            var = out.blocks[lst][n * (CODE_BYTES + 1) :]
            if decode_ids(var, n, fids) != var.size:
                raise ValueError("malformed index list ids")
            out.last[lst] = fids[-1]
        return out
