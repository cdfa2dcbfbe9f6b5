"""Binary index over local minutia descriptors: the shortlist stage.

A gallery's index is *derived data*: the store (:mod:`biomatch.gallery`) is
the source of truth and the index is rebuilt from it when missing, stale or
written by another version.

How a search shortlists
-----------------------
Every valid MCC cylinder of an enrolled finger (:func:`biomatch.descriptors.encode`)
is reduced to a :data:`CODE_BITS`-bit code. Cylinder bits are sparse (about
5 % set), and Hamming distance between sparse vectors mostly measures how
many bits are set, not which: nearest neighbours would be the emptiest
cylinders. Each code bit is therefore the OR of :data:`GROUP_BITS` cylinder
bits chosen at random (fixed seed) - a Bloom-filter projection of the set of
occupied cells, which brings the codes near half density so that Hamming
distance reflects set overlap. Cells within :data:`INNER_RADIUS_FRACTION` of
the cylinder radius feed the code (1.0: all; on 3,000 synthetic fingers the
inner 60 % - cells more often valid in both cylinders of a partial mated
pair - retrieved fewer mates: 90 % vs 97 % within a 400-finger shortlist). At most :data:`MAX_INDEXED_PER_FINGER` cylinders of a
finger are indexed (those with the most set bits, i.e. the most neighbouring
evidence). An indexed cylinder costs ~34 B: its code, its direction bin and a
delta-varint finger id (:mod:`biomatch._compact_lists`; FAISS's int64 ids cost 8).

A probe's cylinders each look up their :data:`K_NEIGHBOURS` nearest gallery
codes; each neighbour votes for the finger it belongs to with weight
``(d_k - d) / (d_k - d_1)``, its Hamming distance ``d`` placed between that
probe cylinder's nearest (``d_1``) and k-th (``d_k``) neighbours - an adaptive
kernel, so that cylinders in crowded regions of the code space (near many
unrelated ones) do not outvote distinctive ones; one vote per probe cylinder
and finger. (Measured on 1,000 synthetic fingers this lifts the mate's
shortlist rank-1 from 64 % to 79 % over the fixed kernel ``1 - d / 120``.)
Votes also carry the rotation between the probe and gallery minutia
directions (the gallery direction rides in the low :data:`ANGLE_ID_BITS` of
the FAISS id); a finger scores the votes of its best :data:`ROTATION_BINS`
bin and the two neighbouring ones, since a mate's matching cylinders agree
on one rotation and chance neighbours do not. The
fingers with the largest vote totals form the shortlist that
:mod:`biomatch.scoring` then rescores exhaustively (the votes and the
shortlist are :mod:`biomatch.search.shortlist`'s, for one store and for a
sharded gallery alike).

Ties: FAISS keeps, among codes tied at the k-th distance, the earliest
*added* (its scan order), which depends on the order
of enrolment and differs between one index and several holding the same
codes. :meth:`GalleryIndex.neighbours` therefore returns every code tied with
the k-th, and :func:`select_neighbours` keeps the k first by an explicit rule
(distance, then a key of the finger - a gallery uses the subject id - then
the direction bin); :func:`vote_totals` depends only on the set of entries
(summed in a canonical order), so a sharded gallery that merges its shards'
lists gets bit-identical votes (:mod:`biomatch.distributed`).

Fingers are partitioned by finger position (ANSI/NIST-ITL FGP): a probe of a
known position searches its position's partition and the unknown-position
partition (0); a probe of unknown position searches all of them. A partition
of at most :data:`FLAT_MAX_CODES` codes is flat and
searched exhaustively; beyond, it is an ``IndexBinaryIVF`` of
:data:`IVF_NLIST` lists whose centroids every index shares (trained once on
synthetic fingers and shipped with the package,
``tools/train_quantizer.py``; a gallery never trains its own), of which
a query visits the :data:`IVF_NPROBE` nearest. Shared centroids are what make
a sharded gallery exact at any size: each shard visits the same lists for a
query as one store holding all the codes would (a shard's small flat
partition becomes an IVF when told to visit fewer lists than all), so the
union of the shards' ties-complete k-NN contains that store's k-NN.

On disk the index of a gallery is one file, written atomically (temporary
file, fsync, rename): a header with a JSON manifest (format and descriptor
versions, store generation, per-partition sizes and SHA-256) followed by the
serialised partitions (their compact lists). A crash while writing leaves the
previous file in place; a file whose manifest does not match the store is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from pathlib import Path
from typing import Mapping, NamedTuple

import numpy as np

from ._index_faiss import (  # noqa: F401 (index constants, re-exported)
    CODE_BITS,
    CODE_BYTES,
    FAISS_THREADS,
    FLAT_MAX_CODES,
    IVF_NLIST,
    SEARCH_SPLIT_MIN_WORK,
    SEARCH_THREADS,
    Partition,
    shared_centroids,
    search_ties_complete,
)
from .errors import GalleryError

__all__ = [
    "CODE_BITS",
    "CODE_BYTES",
    "MAX_INDEXED_PER_FINGER",
    "K_NEIGHBOURS",
    "FLAT_MAX_CODES",
    "IVF_NPROBE",
    "IVF_NLIST",
    "nprobe_for",
    "INDEX_FORMAT_VERSION",
    "index_version",
    "finger_codes",
    "probe_codes",
    "Codes",
    "GalleryIndex",
    "RawNeighbours",
    "select_neighbours",
    "vote_totals",
    "write_atomic",
    "release_memory",
]

# ---------------------------------------------------------------------------
# Tuned constants (here and, for the FAISS layer, in biomatch._index_faiss:
# CODE_BITS, FLAT_MAX_CODES, IVF_NLIST, FAISS_THREADS, SEARCH_THREADS)
# ---------------------------------------------------------------------------
#: Cylinder bits OR-ed into one code bit.
GROUP_BITS = 8
#: Only cells whose centre lies within this fraction of the cylinder radius feed the code.
INNER_RADIUS_FRACTION = 1.0
#: Seed of the random grouping; part of the index version.
CODE_SEED = 19792
#: Hamming distance at which a neighbour's vote falls to zero.
VOTE_ZERO_DISTANCE = 120.0
#: Weight votes relative to each probe cylinder's nearest and k-th distances instead.
VOTE_RELATIVE = True
#: Bits of an index id holding the gallery minutia's direction (id = finger_id << ANGLE_ID_BITS | bin).
ANGLE_ID_BITS = 8
#: Rotation bins of the consistency vote (0 disables it): a finger scores the votes of its best
#: rotation bin plus the two neighbouring bins.
ROTATION_BINS = 16
#: Cylinders of one enrolled finger that are indexed: a bound of 48 x ~34 B per finger
#: keeps every finger under the 2 KB index budget (synthetic fingers average 29 valid
#: cylinders, real FVC2002 impressions up to 64; with 40, the cylinders dropped from large
#: real prints - the least populated, often where a partial impression overlaps - lost 4 of
#: 210 real mates at 100,000 fingers, with 48 three).
MAX_INDEXED_PER_FINGER = 48
#: Nearest gallery codes each probe cylinder looks up.
K_NEIGHBOURS = 64
#: IVF lists visited per query beyond FLAT_MAX_CODES (10 % of the lists; at 100,000
#: synthetic fingers, 2.9 M codes, a gallery-trained quantiser of 1,267 lists with
#: nprobe 128 kept the mate in a 400-finger shortlist for 81.5 % of probes, one of
#: 3,388 lists with nprobe 256 81.5 %, exhaustive search 82.5 %).
IVF_NPROBE = 200
#: Version of the on-disk layout; bump when the file or the code changes meaning.
#: 5: partitions are compact lists (codes, direction bins, delta-varint finger ids;
#: biomatch._compact_lists), flat up to FLAT_MAX_CODES codes, IVF beyond. Files of 4 and 3
#: (FAISS indexes, 8-byte ids) are not read: the store rebuilds the index from its templates.
INDEX_FORMAT_VERSION = 5
#: Older layouts a format still reads (their meaning is a subset of its own).
_ALSO_READS: dict[int, tuple] = {}

_MAGIC = b"BMIDX\x00"
_HEADER = struct.Struct("<6sQ")


def index_version(fmt: int | None = None) -> str:
    """Version string of the index files this build writes (of layout ``fmt``: of older ones it reads)."""
    from .descriptors import DESCRIPTOR_VERSION

    fmt = INDEX_FORMAT_VERSION if fmt is None else fmt
    return (f"bmidx-{fmt}/{DESCRIPTOR_VERSION}/bits{CODE_BITS}-or{GROUP_BITS}-r{INNER_RADIUS_FRACTION}"
            f"-seed{CODE_SEED}-max{MAX_INDEXED_PER_FINGER}-ang{ANGLE_ID_BITS}-ivf{IVF_NLIST}-{shared_centroids()[1][:12]}")


_SAMPLE_LOCK = threading.Lock()
_SAMPLE: np.ndarray | None = None


def _sampled_bits() -> np.ndarray:
    """Cylinder bit positions OR-ed into each code bit, int64 (CODE_BITS, GROUP_BITS)."""
    global _SAMPLE
    with _SAMPLE_LOCK:
        if _SAMPLE is None:
            from .descriptors import CELL_UV, N_DIRECTIONAL, N_SPATIAL

            inner = np.flatnonzero((CELL_UV**2).sum(axis=1) <= (INNER_RADIUS_FRACTION * N_SPATIAL / 2.0) ** 2)
            # cell c, direction layer k is bit c * N_DIRECTIONAL + k (little-endian bit order)
            used = (inner[:, None] * N_DIRECTIONAL + np.arange(N_DIRECTIONAL)[None, :]).ravel()
            rng = np.random.default_rng(CODE_SEED)
            _SAMPLE = np.stack([rng.choice(used, size=GROUP_BITS, replace=False) for _ in range(CODE_BITS)])
        return _SAMPLE


def _reduce(bits: np.ndarray) -> np.ndarray:
    """Cylinders uint8 (n, DESCRIPTOR_BYTES) -> codes uint8 (n, CODE_BYTES) (OR of bit groups)."""
    if bits.shape[0] == 0:
        return np.zeros((0, CODE_BYTES), dtype=np.uint8)
    unpacked = np.unpackbits(bits, axis=1, bitorder="little")
    grouped = unpacked[:, _sampled_bits()].max(axis=2)
    return np.ascontiguousarray(np.packbits(grouped, axis=1, bitorder="little"))


class Codes(NamedTuple):
    """Index codes of one finger and the direction of each coded minutia.

    Attributes
    ----------
    codes : ndarray of uint8, shape (m, CODE_BYTES)
    angle_bins : ndarray of int64, shape (m,)
        Minutia direction quantised to ``2 ** ANGLE_ID_BITS`` bins.
    """

    codes: np.ndarray
    angle_bins: np.ndarray


def _angle_bins(angle: np.ndarray) -> np.ndarray:
    n = 1 << ANGLE_ID_BITS
    return (np.floor(np.asarray(angle, dtype=np.float64) / (2 * np.pi) * n).astype(np.int64)) % n


def finger_codes(features) -> Codes:
    """Index codes of an enrolled finger.

    Parameters
    ----------
    features : biomatch.descriptors.Features

    Returns
    -------
    Codes
        ``m <= MAX_INDEXED_PER_FINGER`` codes of the valid cylinders with the
        most set bits, with their minutiae's direction bins.
    """
    valid = np.flatnonzero(np.asarray(features.valid))
    bits = np.asarray(features.bits)[valid]
    if bits.shape[0] > MAX_INDEXED_PER_FINGER:
        ones = np.unpackbits(bits, axis=1).sum(axis=1)
        keep = np.sort(np.argsort(-ones, kind="stable")[:MAX_INDEXED_PER_FINGER])
        bits, valid = bits[keep], valid[keep]
    return Codes(_reduce(bits), _angle_bins(np.asarray(features.angle)[valid]))


def probe_codes(features) -> Codes:
    """Codes of every valid cylinder of a probe (with direction bins)."""
    valid = np.flatnonzero(np.asarray(features.valid))
    return Codes(_reduce(np.asarray(features.bits)[valid]), _angle_bins(np.asarray(features.angle)[valid]))


def _remove_dead_temps(path: Path) -> None:
    """Delete temp files of ``path`` left by writers that died (killed mid-write)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        parts = tmp.name[len(path.name) + 2 :].split(".")
        try:
            os.kill(int(parts[0]), 0)
            continue  # its writer is alive
        except ProcessLookupError:
            pass
        except (ValueError, IndexError, PermissionError):
            continue
        try:
            tmp.unlink()
        except OSError:
            pass


def write_atomic(path: Path, chunks) -> None:
    """Write ``chunks`` (bytes-likes, or a callable writing to the open file) to ``path``
    atomically: temp file, fsync, rename, fsync dir."""
    path = Path(path)
    _remove_dead_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            if callable(chunks):
                chunks(fh)
            else:
                for chunk in chunks:
                    fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise GalleryError(f"{path}: cannot write the index ({exc.strerror or exc})") from None
        raise


def release_memory() -> bool:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim``); False where unavailable.

    Freed memory stays in glibc's per-thread arenas: large transient buffers
    (an index save, a search's rescoring arrays) freed between long-lived
    small allocations of other threads leave holes that ``free`` never
    returns, and RSS creeps up with no live data behind it (the soak: malloc
    in-use flat at ~170 MB while the arenas' free bytes grew 80 -> 160 MB in
    3.5 minutes). Cheap (a few ms), called after saves and by searches at
    most every :data:`RELEASE_INTERVAL_S`.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            _LIBC = libc.malloc_trim if hasattr(libc, "malloc_trim") else False
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC is False:
        return False
    _LIBC(0)
    return True


_LIBC = None


class RawNeighbours(NamedTuple):
    """Nearest indexed codes of a probe's cylinders (:meth:`GalleryIndex.neighbours`).

    Attributes
    ----------
    rows : ndarray of int64, shape (n,)
        Probe cylinder (row of the probe codes).
    partition : ndarray of int64, shape (n,)
        Position partition searched (the FGP code of the indexed finger).
    dist : ndarray of int32, shape (n,)
        Hamming distance.
    labels : ndarray of int64, shape (n,)
        FAISS id: ``finger_id << ANGLE_ID_BITS | direction bin``.
    """

    rows: np.ndarray
    partition: np.ndarray
    dist: np.ndarray
    labels: np.ndarray


def nprobe_for(total_codes: int, flat_max_codes: int | None = None, ivf_nprobe: int | None = None) -> int:
    """IVF lists a query visits in a partition of ``total_codes`` codes (in the whole gallery)."""
    flat_max_codes = FLAT_MAX_CODES if flat_max_codes is None else flat_max_codes
    ivf_nprobe = IVF_NPROBE if ivf_nprobe is None else ivf_nprobe
    return IVF_NLIST if total_codes <= flat_max_codes else min(ivf_nprobe, IVF_NLIST)


def select_neighbours(rows, partition, dist, key, abin, k: int = K_NEIGHBOURS) -> np.ndarray:
    """The k nearest entries of every (probe cylinder, partition), ties by an explicit key.

    The one tie rule of every search: entries are ordered by (distance,
    ``key``, ``abin``) and the first ``k`` of each (row, partition) are kept.
    Applied to the union of several indexes' :meth:`GalleryIndex.neighbours`
    (each ties-complete) it gives exactly what one index holding all their
    codes gives, whatever the order in which codes were added.

    Parameters
    ----------
    rows, partition : ndarray of int64, shape (n,)
    dist : ndarray of int, shape (n,)
    key : ndarray of int64, shape (n,)
        Tie-break of the finger each entry belongs to (smaller first).
    abin : ndarray of int64, shape (n,)
        Direction bin of the entry's gallery minutia (last tie-break).
    k : int

    Returns
    -------
    ndarray of int64
        Indices of the kept entries, ordered by (row, partition, distance, key, abin).
    """
    order = np.lexsort((abin, key, dist, partition, rows))
    if order.size == 0:
        return order.astype(np.int64)
    r, p = rows[order], partition[order]
    start = np.ones(order.size, bool)
    start[1:] = (r[1:] != r[:-1]) | (p[1:] != p[:-1])
    first = np.flatnonzero(start)
    rank = np.arange(order.size) - np.repeat(first, np.diff(np.append(first, order.size)))
    return order[rank < int(k)]


def vote_totals(rows, dist, finger, abin, probe_bins):
    """Descriptor votes of gallery fingers for one probe finger (the one vote implementation).

    Parameters
    ----------
    rows : ndarray of int64, shape (n,)
        Probe cylinder of each neighbour.
    dist : ndarray of int, shape (n,)
        Hamming distance of each neighbour.
    finger : ndarray of int64, shape (n,)
        The gallery finger each neighbour belongs to, as an integer whose
        order is the tie rule (finger id, or a rank of (subject, position)).
    abin : ndarray of int64, shape (n,)
        Direction bin of the neighbour's gallery minutia.
    probe_bins : ndarray of int64, shape (n_q,)
        Direction bins of the probe cylinders.

    Returns
    -------
    fingers : ndarray of int64, shape (m,)
        Sorted distinct values of ``finger`` with a positive vote.
    totals : ndarray of float64, shape (m,)
        Their vote totals (see the module docstring). The result depends only on
        the multiset of entries, not on their order (bit for bit).
    """
    rows = np.asarray(rows, np.int64)
    d = np.asarray(dist, np.float64)
    finger = np.asarray(finger, np.int64)
    abin = np.asarray(abin, np.int64)
    pbins = np.asarray(probe_bins, dtype=np.int64)
    if rows.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    if VOTE_RELATIVE:
        # weight relative to this probe cylinder's own neighbourhood: the k-th
        # neighbour's distance stands for "unrelated" (an adaptive kernel)
        n_q = int(rows.max()) + 1
        d_far = np.full(n_q, -np.inf)
        d_near = np.full(n_q, np.inf)
        np.maximum.at(d_far, rows, d)
        np.minimum.at(d_near, rows, d)
        w = (d_far[rows] - d) / np.maximum(d_far[rows] - d_near[rows], 1.0)
    else:
        w = 1.0 - d / VOTE_ZERO_DISTANCE
    ok = w > 0
    rows, finger, w, abin = rows[ok], finger[ok], w[ok], abin[ok]
    if finger.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    rot = (abin - pbins[rows]) % (1 << ANGLE_ID_BITS)
    # one vote per (probe cylinder, finger): the best-weighted neighbour (then the smallest rotation)
    order = np.lexsort((rot, -w, rows, finger))
    finger, rows, w, rot = finger[order], rows[order], w[order], rot[order]
    first = np.ones(finger.size, dtype=bool)
    first[1:] = (finger[1:] != finger[:-1]) | (rows[1:] != rows[:-1])
    finger, w, rot = finger[first], w[first], rot[first]
    fingers, inv = np.unique(finger, return_inverse=True)
    if ROTATION_BINS:
        # votes of a mate agree on the rotation between probe and gallery minutiae
        nb = ROTATION_BINS
        rbin = (rot * nb) >> ANGLE_ID_BITS
        acc = np.zeros((fingers.size, nb))
        np.add.at(acc, (inv, rbin), w)  # in (finger, row) order: a canonical summation order
        acc = acc + np.roll(acc, 1, axis=1) + np.roll(acc, -1, axis=1)
        totals = acc.max(axis=1)
    else:
        totals = np.bincount(inv, weights=w)
    return fingers, totals


class GalleryIndex:
    """The shortlist index of one gallery, partitioned by finger position.

    Thread safety: :meth:`search` may run in any number of threads at once;
    :meth:`add`, :meth:`remove` take the write side of a readers-writer lock.

    Attributes
    ----------
    generation : int
        Store generation of the gallery this index reflects.
    flat_max_codes, ivf_nprobe : int
        Partitions up to ``flat_max_codes`` codes are flat (searched whole), IVF beyond, where
        a query visits ``ivf_nprobe`` lists (:func:`nprobe_for`); default the module constants
        (a gallery passes its :class:`biomatch.search.params.SearchParams`).
    """

    def __init__(self, generation: int = 0, *, flat_max_codes: int | None = None, ivf_nprobe: int | None = None):
        self.generation = int(generation)
        self.flat_max_codes = FLAT_MAX_CODES if flat_max_codes is None else int(flat_max_codes)
        self.ivf_nprobe = IVF_NPROBE if ivf_nprobe is None else int(ivf_nprobe)
        self._parts: dict[int, Partition] = {}
        self._lock = _RWLock()

    def nprobe_for(self, total_codes: int) -> int:
        """IVF lists to visit in a partition of ``total_codes`` codes under this index's limits."""
        return nprobe_for(total_codes, self.flat_max_codes, self.ivf_nprobe)

    # -- contents ---------------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Number of indexed codes."""
        return sum(p.ntotal for p in self._parts.values())

    def memory_bytes(self) -> int:
        """Approximate bytes of codes, ids and centroids held in memory."""
        return sum(p.memory_bytes() for p in self._parts.values())

    def describe(self) -> dict:
        return {
            "version": index_version(),
            "generation": self.generation,
            "codes": self.ntotal,
            "memory_bytes": self.memory_bytes(),
            "partitions": {str(pos): {"kind": p.kind, "codes": p.ntotal,
                                      "lists_visited": self.nprobe_for(p.ntotal) if p.kind == "ivf" else None,
                                      "lists": IVF_NLIST if p.kind == "ivf" else None}
                           for pos, p in sorted(self._parts.items())},
        }

    def add(self, entries, generation: int | None = None) -> None:
        """Add fingers.

        Parameters
        ----------
        entries : iterable of (finger_id: int, position: int, codes: Codes)
        generation : int, optional
            Store generation after the change.
        """
        by_pos: dict[int, list] = {}
        for fid, pos, codes in entries:
            by_pos.setdefault(int(pos), []).append((int(fid), codes))
        with self._lock.write():
            for pos, items in by_pos.items():
                codes = np.concatenate([c.codes for _, c in items])
                ids = np.concatenate([(f << ANGLE_ID_BITS) | c.angle_bins for f, c in items]).astype(np.int64)
                part = self._parts.get(pos)
                if part is None:
                    part = self._parts[pos] = Partition(flat_max_codes=self.flat_max_codes)
                part.add(codes, ids)
            if generation is not None:
                self.generation = int(generation)

    def remove(self, finger_ids, generation: int | None = None) -> int:
        """Remove every code of ``finger_ids``; returns the number of codes removed."""
        fids = np.asarray(list(finger_ids), dtype=np.int64)
        with self._lock.write():
            removed = sum(p.remove(fids) for p in self._parts.values())
            if generation is not None:
                self.generation = int(generation)
        return removed

    def copy_from(self, source: "GalleryIndex", finger_ids: Mapping, generation: int | None = None) -> int:
        """Add the codes ``source`` holds for some of its fingers, under new finger ids.

        ``finger_ids`` maps a finger id of ``source`` to its id here. A code
        from an IVF partition goes into the list it sits in at the source:
        every index shares the centroids, so that is the list FAISS would
        assign it to, and no code is recomputed or re-assigned (a store moved
        onto the shards of a sharded gallery, :meth:`biomatch.gallery.Gallery.import_from`).
        Returns the number of codes added.
        """
        src = np.array(sorted(int(f) for f in finger_ids), dtype=np.int64)
        dst = np.array([int(finger_ids[int(f)]) for f in src], dtype=np.int64)
        low = (1 << ANGLE_ID_BITS) - 1
        added = 0

        def selected(ids):
            fids = ids >> ANGLE_ID_BITS
            at = np.minimum(np.searchsorted(src, fids), max(src.size - 1, 0))
            keep = src[at] == fids if src.size else np.zeros(ids.size, bool)
            return keep, at

        with source._lock.read(), self._lock.write():
            for pos, part in sorted(source._parts.items()):
                n_new = sum(int(selected(ids)[0].sum()) for _, ids, _ in part.entries())
                if n_new == 0:
                    continue
                target = self._parts.get(pos)
                if target is None:
                    target = self._parts[pos] = Partition(flat_max_codes=self.flat_max_codes)
                if target.ntotal + n_new > self.flat_max_codes:
                    target.to_ivf()  # once, not list by list
                for lst, ids, codes in part.entries():
                    ids = ids.astype(np.int64)
                    keep, at = selected(ids)
                    if not keep.any():
                        continue
                    new_ids = (dst[at[keep]] << ANGLE_ID_BITS) | (ids[keep] & low)
                    if lst is None:
                        target.add(codes[keep], new_ids)
                    else:
                        target.add_to_list(lst, codes[keep], new_ids)
                added += n_new
            if generation is not None:
                self.generation = int(generation)
        return added

    def finger_ids(self) -> dict[int, set]:
        """Finger ids held per position partition (for consistency checks)."""
        out = {}
        with self._lock.read():
            for pos, part in self._parts.items():
                ids = np.concatenate([ids.astype(np.int64) for _, ids, _ in part.entries()] + [np.zeros(0, np.int64)])
                out[pos] = set((ids >> ANGLE_ID_BITS).tolist())
        return out

    def sizes(self) -> dict[int, int]:
        """Codes per position partition."""
        with self._lock.read():
            return {pos: part.ntotal for pos, part in self._parts.items()}

    # -- search -----------------------------------------------------------
    def neighbours(self, codes: np.ndarray, position: int, k: int = K_NEIGHBOURS,
                   nprobe: Mapping | None = None) -> RawNeighbours:
        """Nearest indexed codes of each probe cylinder, per position partition, ties complete.

        For every probe cylinder and every partition searched, the returned
        entries are all codes whose Hamming distance is at most that of the
        ``k``-th nearest (``min(k, partition size)``) among the codes of the
        IVF lists visited: every code tied with the ``k``-th is included, so
        that a caller can choose among ties by a rule of its own
        (:func:`select_neighbours`) instead of the FAISS scan order (which
        depends on the enrolment order). Every list is visited while the
        gallery's partition holds at most :attr:`flat_max_codes` codes (an
        exhaustive search), :attr:`ivf_nprobe` beyond (:meth:`nprobe_for`).

        Parameters
        ----------
        codes : ndarray of uint8, shape (n_q, CODE_BYTES)
            Probe codes (:func:`probe_codes`).
        position : int
            FGP code of the probe (0 searches every partition).
        k : int
            Neighbours per probe cylinder and partition.
        nprobe : mapping of int -> int, optional
            IVF lists to visit per position partition (default, and for
            positions not given: :func:`nprobe_for` of the partition's size; a
            shard of a sharded gallery is given the whole gallery's).

        Returns
        -------
        RawNeighbours
            Flat arrays, one entry per (probe cylinder, indexed code).
        """
        codes = np.ascontiguousarray(codes)
        out = []

        def searched():
            if position:
                parts = [(p, self._parts[p]) for p in (position, 0) if p in self._parts]
            else:
                parts = sorted(self._parts.items())
            return [(pos, part, self.nprobe_for(part.ntotal) if nprobe is None or pos not in nprobe else int(nprobe[pos]))
                    for pos, part in parts]

        with self._lock.read():
            flat_asked_for_lists = any(part.needs_ivf(lists) for _, part, lists in searched())
        if flat_asked_for_lists:  # told to visit some lists only: become IVF first (the write side)
            with self._lock.write():
                for _, part, lists in searched():
                    if part.needs_ivf(lists):
                        part.to_ivf()
        with self._lock.read():
            for pos, part, lists in searched():
                rows, d, lab = search_ties_complete(part, codes, k, lists)
                out.append((rows, np.full(rows.size, pos, np.int64), d, lab))
        if not out:
            e = np.zeros(0, np.int64)
            return RawNeighbours(e, e, np.zeros(0, np.int32), e)
        return RawNeighbours(*(np.concatenate(c) for c in zip(*out)))

    # -- persistence ------------------------------------------------------
    def save(self, path: Path, gallery: str, *, seal=None) -> None:
        """Write the index atomically to ``path`` (see the module docstring).

        ``seal`` (bytes -> bytes), when given, encrypts the whole file
        (:mod:`biomatch.encryption`): the codes are biometric-derived, and
        the file is built in memory to be sealed as one blob. Without it the
        partitions are streamed to the file twice through FAISS's writer
        (once to hash them for the manifest, once to write them), so that a
        save holds no copy of the index in memory: a full copy per save
        (three, before) left the heap fragmented under concurrent searches
        (the soak's RSS growth; see :func:`release_memory`).
        """
        with self._lock.read():
            generation = self.generation
            parts = sorted(self._parts.items())
            if seal is not None:
                payloads = [(pos, part.kind, part.to_bytes()) for pos, part in parts]
                digests = [(pos, kind, len(b), hashlib.sha256(b).hexdigest()) for pos, kind, b in payloads]
            else:
                digests = [(pos, part.kind, *part.digest()) for pos, part in parts]
            manifest = {
                "version": index_version(),
                "gallery": gallery,
                "generation": generation,
                "partitions": [
                    {"position": pos, "kind": kind, "nbytes": n, "sha256": h} for pos, kind, n, h in digests
                ],
            }
            head = json.dumps(manifest, sort_keys=True).encode()
            prefix = _HEADER.pack(_MAGIC, len(head)) + head
            if seal is not None:
                write_atomic(path, [seal(b"".join([prefix, *[b for _, _, b in payloads]]))])
                del payloads
            else:
                def stream(fh):
                    fh.write(prefix)
                    for (pos, part), (_, _, n, h) in zip(parts, digests):
                        if part.write_to(fh) != (n, h):  # cannot happen under the read lock; never write a bad file
                            raise GalleryError(f"{path}: partition {pos} changed while being saved")

                write_atomic(path, stream)
        release_memory()

    @staticmethod
    def read_manifest(path: Path) -> dict | None:
        """The manifest of an index file, or None when absent or unreadable."""
        try:
            with open(path, "rb") as fh:
                magic, n = _HEADER.unpack(fh.read(_HEADER.size))
                if magic != _MAGIC or n > 1 << 24:
                    return None
                return json.loads(fh.read(n))
        except (OSError, ValueError, struct.error):
            return None

    @classmethod
    def load(cls, path: Path, gallery: str, *, unseal=None, flat_max_codes: int | None = None,
             ivf_nprobe: int | None = None) -> "GalleryIndex | None":
        """Read an index file; None when it is absent, corrupt, from another version or gallery.

        ``flat_max_codes`` and ``ivf_nprobe`` as the constructor takes them.

        With ``unseal`` (sealed bytes -> bytes) only an encrypted file is accepted
        (a plaintext one, or one it cannot decrypt, gives None: rebuilt).
        """
        from .encryption import is_sealed
        from .errors import BiomatchError

        try:
            data = Path(path).read_bytes()
            if is_sealed(data) != (unseal is not None):
                return None
            if unseal is not None:
                data = unseal(data)
            magic, n = _HEADER.unpack_from(data)
            if magic != _MAGIC:
                return None
            manifest = json.loads(data[_HEADER.size : _HEADER.size + n])
        except (OSError, ValueError, struct.error, BiomatchError):
            return None
        if (not isinstance(manifest, dict) or manifest.get("version") not in [
                index_version(f) for f in (INDEX_FORMAT_VERSION, *_ALSO_READS.get(INDEX_FORMAT_VERSION, ()))]
                or manifest.get("gallery") != gallery):
            return None
        index = cls(int(manifest.get("generation", -1)), flat_max_codes=flat_max_codes, ivf_nprobe=ivf_nprobe)
        offset = _HEADER.size + n
        try:
            for entry in manifest["partitions"]:
                blob = data[offset : offset + int(entry["nbytes"])]
                offset += int(entry["nbytes"])
                if len(blob) != int(entry["nbytes"]) or hashlib.sha256(blob).hexdigest() != entry["sha256"]:
                    return None
                index._parts[int(entry["position"])] = Partition.from_bytes(blob, index.flat_max_codes)
        except (KeyError, TypeError, ValueError, RuntimeError):
            return None
        if offset != len(data):
            return None
        return index


class _RWLock:
    """Many readers or one writer (writers wait for readers to drain; new readers wait for a writer)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    class _Ctx:
        def __init__(self, enter, exit_):
            self._enter, self._exit = enter, exit_

        def __enter__(self):
            self._enter()

        def __exit__(self, *exc):
            self._exit()

    def _acquire_read(self):
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1

    def _release_read(self):
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    def _acquire_write(self):
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True

    def _release_write(self):
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    def read(self):
        return self._Ctx(self._acquire_read, self._release_read)

    def write(self):
        return self._Ctx(self._acquire_write, self._release_write)
