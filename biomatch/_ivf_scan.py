"""The ties-complete k-NN of a partition, scanned list by list (private to :mod:`biomatch._index_faiss`).

FAISS's binary IVF search keeps a heap of the ``k + margin`` nearest per query and scans
query by query: each probe cylinder reads its ``nprobe`` lists from memory on its own (a
100,000-finger search reads ~9 MB of codes per cylinder, ~450 MB per probe finger), and a
cylinder whose last answer ties its k-th is searched again. :func:`scan_ties_complete`
returns the same set of entries - every code at most as far as each query's k-th nearest
among the codes of the lists it visits - in one pass: the lists visited by a group of
queries are read once each, in blocks of :data:`SCAN_BLOCK` rows that every query visiting
the list scans while they are in cache, and a per-query histogram of distances gives a
running bound on the k-th distance (codes beyond it are skipped; the bound only falls, so no
code within the final k-th distance is lost). A flat partition is one list, visited by every
query. The lists are read in place from their blocks (:mod:`biomatch._compact_lists`, no
copy); an entry's label is decoded only when it is kept at the end (from its checkpoint)."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.extending import intrinsic

from ._compact_lists import CHECKPOINT, ListViews, decode_one
from ._scoring_kernels import popcount

#: Hamming distances of 256-bit codes lie in 0..256.
_N_DIST = 257
#: Entries a scan holds before its bound filter (a 100,000-finger probe of ~33 cylinders: ~110,000);
#: a scan that needs more runs again with what it needed.
SCAN_BUFFER = 1 << 18
#: Rows of a list scanned by every visiting query before the next rows (32 KiB of codes, in L1/L2):
#: the running bounds fall within a long list too (a flat partition is one list of up to 400,000).
SCAN_BLOCK = 1024


@intrinsic
def _u64_ptr(typingctx, addr):
    """An int64 address as a uint64 pointer (for ``numba.carray``; ids are read as uint64 too)."""
    sig = types.CPointer(types.uint64)(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.PointerType(ir.IntType(64)))

    return sig, codegen


@intrinsic
def _u8_ptr(typingctx, addr):
    """An int64 address as a uint8 pointer (a list block's direction bins and id bytes)."""
    sig = types.CPointer(types.uint8)(types.int64)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.PointerType(ir.IntType(8)))

    return sig, codegen


@njit(cache=True, nogil=True)
def _scan(q, assign, sizes, addrs, nbytes, k, cap, block):
    """(rows, dist, labels) of the codes within each query's k-th nearest distance over its lists
    (256-bit codes: 4 uint64 words a row; the labels of the kept entries decoded at the end)."""
    nq, nprobe = assign.shape
    nl = sizes.size
    # lists -> the queries visiting them (CSR)
    off = np.zeros(nl + 1, np.int64)
    for i in range(nq):
        for j in range(nprobe):
            if assign[i, j] >= 0:
                off[assign[i, j] + 1] += 1
    for lst in range(nl):
        off[lst + 1] += off[lst]
    fill = off[:-1].copy()
    visitors = np.empty(off[nl], np.int64)
    for i in range(nq):
        for j in range(nprobe):
            lst = assign[i, j]
            if lst >= 0:
                visitors[fill[lst]] = i
                fill[lst] += 1
    hist = np.zeros((nq, _N_DIST), np.int64)
    bound = np.full(nq, _N_DIST - 1, np.int64)  # running bound on the k-th distance
    within = np.zeros(nq, np.int64)  # codes seen at most `bound` away
    rows = np.empty(cap, np.int64)
    dist = np.empty(cap, np.int32)
    labels = np.empty(cap, np.int64)
    n = 0
    longest = 0
    for lst in range(nl):
        longest = max(longest, sizes[lst])
    dbuf = np.empty(min(longest, block), np.uint64)
    for lst in range(nl):
        if off[lst + 1] == off[lst] or sizes[lst] == 0:
            continue
        m = sizes[lst]
        c = carray(_u64_ptr(addrs[lst]), (m, 4))
        for lo in range(0, m, block):  # a long list (a flat partition's) in blocks: the bounds fall as it goes
            hi = min(lo + block, m)
            for t in range(off[lst], off[lst + 1]):
                i = visitors[t]
                b = bound[i]
                q0, q1, q2, q3 = q[i, 0], q[i, 1], q[i, 2], q[i, 3]
                cb = c[lo:hi]  # indexed from 0: the loop vectorises (indexed from lo it ran 1.5x slower)
                for j in range(hi - lo):  # branch-free, so that it vectorises
                    dbuf[j] = (popcount(cb[j, 0] ^ q0) + popcount(cb[j, 1] ^ q1) + popcount(cb[j, 2] ^ q2)
                               + popcount(cb[j, 3] ^ q3))
                for r in range(lo, hi):
                    d = np.int64(dbuf[r - lo])
                    if d <= b:
                        hist[i, d] += 1
                        within[i] += 1
                        if n < cap:
                            rows[n] = i
                            dist[n] = d
                            labels[n] = (lst << 32) | r  # (list, entry): its label decoded if kept
                        n += 1
                # the k-th distance is at most the smallest bound that still keeps k codes within it
                while b > 0 and within[i] - hist[i, b] >= k:
                    within[i] -= hist[i, b]
                    b -= 1
                bound[i] = b
    if n > cap:  # the buffers were too short: the caller scans again with n
        return rows[:0], dist[:0], labels[:0], n
    keep = np.empty(n, np.bool_)
    for e in range(n):
        keep[e] = dist[e] <= bound[rows[e]]
    rows, dist, labels = rows[:n][keep], dist[:n][keep], labels[:n][keep]
    for e in range(labels.size):  # finger id from the entry's checkpoint, direction bin beside the codes
        lst, r = labels[e] >> 32, labels[e] & 0xFFFFFFFF
        m = sizes[lst]
        ncp = (m + CHECKPOINT - 1) // CHECKPOINT
        cps = carray(_u8_ptr(addrs[lst] + 33 * m), (4 * ncp,))
        var = carray(_u8_ptr(addrs[lst] + 33 * m + 4 * ncp), (nbytes[lst] - 33 * m - 4 * ncp,))
        labels[e] = (decode_one(var, cps, r) << 8) | np.int64(carray(_u8_ptr(addrs[lst] + 32 * m), (m,))[r])
    return rows, dist, labels, n


def scan_ties_complete(views: ListViews, assign: np.ndarray, codes: np.ndarray, k: int):
    """(rows, dist, labels): every code at most as far as each query's ``k``-th nearest among the
    codes of the lists ``assign`` gives it (one row of list numbers per query; ``k`` >= 1; all of
    them when the lists hold fewer than ``k``). The same set as FAISS's search with ties completed."""
    codes = np.ascontiguousarray(codes)
    if codes.shape[1] != 32:
        raise ValueError(f"internal: the list scan takes 256-bit codes, got {8 * codes.shape[1]} bits")
    q = codes.view(np.uint64).reshape(codes.shape[0], -1)
    assign = np.ascontiguousarray(assign, dtype=np.int64)
    cap = SCAN_BUFFER
    while True:
        rows, dist, labels, n = _scan(q, assign, views.sizes, views.addrs, views.nbytes, int(k), cap, SCAN_BLOCK)
        if n <= cap:
            return rows, dist, labels
        cap = n
