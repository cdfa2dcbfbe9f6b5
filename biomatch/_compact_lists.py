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
_LAYOUT = 2


#: Every CHECKPOINT-th id of a list is stored whole (not as a difference), and where its bytes
#: start is kept (uint32): an id is decoded from its checkpoint, at most CHECKPOINT - 1 differences.
CHECKPOINT = 32


def n_checkpoints(n: int) -> int:
    return -(-int(n) // CHECKPOINT)


@njit(cache=True, nogil=True)
def encode_ids(fids, prev, start, base):
    """(LEB128 bytes, checkpoint offsets) of ``fids`` (non-decreasing int64), entries ``start``..
    of a list whose id bytes so far are ``base`` long and whose last id is ``prev``: the id of an
    entry whose index is a multiple of CHECKPOINT is written whole, the others as differences."""
    out = np.empty(fids.size * 10, np.uint8)
    cps = np.empty(fids.size // CHECKPOINT + 1, np.uint32)
    n = 0
    nc = 0
    for i in range(fids.size):
        if (start + i) % CHECKPOINT == 0:
            cps[nc] = np.uint32(base + n)
            nc += 1
            d = fids[i]
        else:
            d = fids[i] - prev
        prev = fids[i]
        while d >= 128:
            out[n] = np.uint8((d & 127) | 128)
            n += 1
            d >>= 7
        out[n] = np.uint8(d)
        n += 1
    return out[:n], cps[:nc]


@njit(cache=True, nogil=True)
def _varint(buf, p):
    """(value, next position) of the LEB128 number at ``buf[p]``; (0, -1) when it runs past the end."""
    d = np.int64(0)
    shift = 0
    while True:
        if p >= buf.size or shift > 56:
            return np.int64(0), -1
        b = np.int64(buf[p])
        p += 1
        d |= (b & 127) << shift
        if b < 128:
            return d, p
        shift += 7


@njit(cache=True, nogil=True)
def decode_ids(buf, n, out):
    """Decode ``n`` finger ids of ``buf`` (:func:`encode_ids` from entry 0) into ``out``; returns the
    bytes read, -1 when ``buf`` ends first or an id overflows."""
    prev = np.int64(0)
    p = 0
    for i in range(n):
        d, p = _varint(buf, p)
        if p < 0:
            return -1
        prev = d if i % CHECKPOINT == 0 else prev + d
        out[i] = prev
    return p


@njit(cache=True, nogil=True)
def decode_one(buf, cps, r):
    """The finger id of entry ``r``: from its checkpoint (``cps``, little-endian uint32 bytes) on."""
    c = r // CHECKPOINT
    p = (np.int64(cps[4 * c]) | (np.int64(cps[4 * c + 1]) << 8) | (np.int64(cps[4 * c + 2]) << 16)
         | (np.int64(cps[4 * c + 3]) << 24))
    fid = np.int64(0)
    for _ in range(r - c * CHECKPOINT + 1):
        d, p = _varint(buf, p)
        fid += d
    return fid


def _block(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A list block of entries already in non-decreasing finger-id order."""
    n = labels.size
    var, cps = encode_ids(labels >> _BIN_BITS, np.int64(0), 0, 0)
    return np.concatenate([codes.reshape(-1), (labels & _BIN_MASK).astype(np.uint8),
                           cps.astype("<u4").view(np.uint8), var])


def split_block(block: np.ndarray, n: int):
    """(codes n x 32, bins, checkpoint bytes, id bytes) views of a list block of ``n`` entries."""
    a, b = n * CODE_BYTES, n * (CODE_BYTES + 1)
    c = b + 4 * n_checkpoints(n)
    return block[:a].reshape(n, CODE_BYTES), block[a:b], block[b:c], block[c:]


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
        n = int(self.sizes[lst])
        codes, bins, _, var = split_block(self.blocks[lst], n)
        fids = np.empty(n, np.int64)
        if n:
            decode_ids(var, n, fids)
        return (fids << _BIN_BITS) | bins, codes

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
        codes_o, bins_o, cps_o, var_o = split_block(self.blocks[lst], n)
        var, cps = encode_ids(fids, np.int64(self.last[lst]), n, var_o.size)
        block = np.concatenate([codes_o.reshape(-1), codes.reshape(-1), bins_o, (labels & _BIN_MASK).astype(np.uint8),
                                cps_o, cps.astype("<u4").view(np.uint8), var_o, var])
        m = labels.size
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
        least = sizes * (CODE_BYTES + 2) + 4 * ((sizes + CHECKPOINT - 1) // CHECKPOINT)
        if (sizes < 0).any() or (nbytes < least).any() or off + int(nbytes.sum()) != len(data):
            raise ValueError("inconsistent index list lengths")
        out = cls(nlist)
        out.sizes = sizes
        raw = np.frombuffer(data, np.uint8)
        for lst in np.flatnonzero(sizes):
            out.blocks[lst] = raw[off : off + nbytes[lst]].copy()
            off += int(nbytes[lst])
            n = int(sizes[lst])
            fids = np.empty(n, np.int64)
            _, _, cps, var = split_block(out.blocks[lst], n)
            offsets = cps.view("<u4")
            if decode_ids(var, n, fids) != var.size or not np.array_equal(
                    offsets, encode_ids(fids, np.int64(0), 0, 0)[1]):
                raise ValueError("malformed index list ids")
            out.last[lst] = fids[-1]
        return out
