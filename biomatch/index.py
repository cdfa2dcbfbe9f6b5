"""FAISS binary index over local minutia descriptors: the shortlist stage.

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
evidence), which bounds memory at ``MAX_INDEXED_PER_FINGER * (CODE_BYTES + 8)``
bytes per finger (codes plus 64-bit ids).

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
``benchmarks/train_quantizer.py``; a gallery never trains its own), of which
a query visits the :data:`IVF_NPROBE` nearest. Shared centroids are what make
a sharded gallery exact at any size: each shard visits the same lists for a
query as one store holding all the codes would (a shard's small flat
partition becomes an IVF when told to visit fewer lists than all), so the
union of the shards' ties-complete k-NN contains that store's k-NN.

On disk the index of a gallery is one file, written atomically (temporary
file, fsync, rename): a header with a JSON manifest (format and descriptor
versions, store generation, per-partition sizes and SHA-256) followed by the
serialised FAISS partitions. A crash while writing leaves the previous file
in place; a file whose manifest does not match the store is not used.
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
# Tuned constants (one place)
# ---------------------------------------------------------------------------
#: Bits of the reduced per-cylinder code that the FAISS index holds.
CODE_BITS = 256
CODE_BYTES = CODE_BITS // 8
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
#: Cylinders of one enrolled finger that are indexed: a bound of 48 x 40 B = 1,920 B per finger
#: keeps every finger under the 2 KB index budget (synthetic fingers average 29 valid
#: cylinders, real FVC2002 impressions up to 64; with 40, the cylinders dropped from large
#: real prints - the least populated, often where a partial impression overlaps - lost 4 of
#: 210 real mates at 100,000 fingers, with 48 three).
MAX_INDEXED_PER_FINGER = 48
#: Nearest gallery codes each probe cylinder looks up.
K_NEIGHBOURS = 64
#: Partitions of up to this many codes (in the whole gallery: a sharded gallery counts
#: every shard's) are searched exhaustively: every IVF list visited.
FLAT_MAX_CODES = 400_000
#: IVF lists of every partition, with centroids shared by every index
#: (biomatch/data/ivf_quantizer.npy, made by benchmarks/train_quantizer.py from
#: synthetic fingers): a search visits the same lists on one store and on each
#: shard of a sharded gallery, whose merged k-NN are then exactly one store's.
IVF_NLIST = 2048
#: IVF lists visited per query beyond FLAT_MAX_CODES (10 % of the lists; at 100,000
#: synthetic fingers, 2.9 M codes, a gallery-trained quantiser of 1,267 lists with
#: nprobe 128 kept the mate in a 400-finger shortlist for 81.5 % of probes, one of
#: 3,388 lists with nprobe 256 81.5 %, exhaustive search 82.5 %).
IVF_NPROBE = 200
#: OpenMP threads FAISS may use per call. One: searches run concurrently in
#: threads (FAISS releases the GIL) and OpenMP teams of a loaded 2-core machine
#: spin-wait (measured 36 ms vs 0.8 ms for a 35-query search of 1,750 codes).
FAISS_THREADS = 1
#: Python threads one search's scan is split over (its probe cylinders in equal
#: parts, each part a single-threaded FAISS call, which releases the GIL): the
#: latency of one search on two cores without OpenMP's spin-waiting teams.
#: A part must scan at least SEARCH_SPLIT_MIN_WORK (query, code) distances to be
#: worth a thread hand-off (small partitions answer in well under a millisecond).
SEARCH_THREADS = 2
SEARCH_SPLIT_MIN_WORK = 2_000_000
#: Largest piece FAISS's writer hands to a save's stream at once (bytes).
_STREAM_CHUNK_BYTES = 1 << 20
#: Version of the on-disk layout; bump when the file or the code changes meaning.
#: 4: a partition is flat up to FLAT_MAX_CODES codes, IVF beyond (3: IVF at every size;
#: still read, its small partitions loaded as flat).
INDEX_FORMAT_VERSION = 4
#: Older layouts a format still reads (their meaning is a subset of its own).
_ALSO_READS = {4: (3,)}

_MAGIC = b"BMIDX\x00"
_HEADER = struct.Struct("<6sQ")


def index_version(fmt: int | None = None) -> str:
    """Version string of the index files this build writes (of layout ``fmt``: of older ones it reads)."""
    from .descriptors import DESCRIPTOR_VERSION

    fmt = INDEX_FORMAT_VERSION if fmt is None else fmt
    return (f"bmidx-{fmt}/{DESCRIPTOR_VERSION}/bits{CODE_BITS}-or{GROUP_BITS}-r{INNER_RADIUS_FRACTION}"
            f"-seed{CODE_SEED}-max{MAX_INDEXED_PER_FINGER}-ang{ANGLE_ID_BITS}-ivf{IVF_NLIST}-{_quantizer()[1][:12]}")


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
_FAISS_READY = False


_POOL = None
_POOL_LOCK = threading.Lock()


def _search_pool():
    """The threads searches split their FAISS scans over (:data:`SEARCH_THREADS`)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(max_workers=SEARCH_THREADS, thread_name_prefix="biomatch-faiss")
        return _POOL


def _faiss():
    """The faiss module, with its OpenMP threads set to FAISS_THREADS once."""
    global _FAISS_READY
    import faiss

    if not _FAISS_READY:
        faiss.omp_set_num_threads(FAISS_THREADS)
        _FAISS_READY = True
    return faiss


# ---------------------------------------------------------------------------
# One partition (finger position) of a gallery
# ---------------------------------------------------------------------------
_QUANTIZER = None


def _quantizer() -> tuple[np.ndarray, str]:
    """The shared IVF centroids (uint8, IVF_NLIST x CODE_BYTES) and their SHA-256."""
    global _QUANTIZER
    with _SAMPLE_LOCK:
        if _QUANTIZER is None:
            path = Path(__file__).with_name("data") / "ivf_quantizer.npy"
            try:
                centroids = np.load(path)
            except (OSError, ValueError) as exc:
                raise GalleryError(f"{path}: the index quantiser is missing or unreadable ({exc})") from None
            if centroids.shape != (IVF_NLIST, CODE_BYTES) or centroids.dtype != np.uint8:
                raise GalleryError(f"{path}: expected uint8 centroids of shape {(IVF_NLIST, CODE_BYTES)}, "
                                   f"got {centroids.dtype} {centroids.shape} (run benchmarks/train_quantizer.py)")
            _QUANTIZER = (np.ascontiguousarray(centroids), hashlib.sha256(centroids.tobytes()).hexdigest())
        return _QUANTIZER


class _Partition:
    """The codes of one position partition, labelled with finger ids: flat while small, IVF beyond.

    A partition of at most :data:`FLAT_MAX_CODES` codes is a flat index
    (``IndexBinaryIDMap`` over ``IndexBinaryFlat``): an exhaustive search scans
    its codes once, where an IVF visiting all 2,048 lists paid their overhead
    too (3.7x a flat scan at 10,000 fingers). It becomes an ``IndexBinaryIVF``
    over the shared centroids when it grows past that, or when it is asked to
    visit fewer lists than all (a shard of a large sharded gallery): the search
    must then see exactly the codes of those lists, as one store would. Both
    kinds return the same ties-complete k-NN of an exhaustive search
    (:func:`_search_ties_complete` does not depend on the scan order).
    """

    def __init__(self, index=None, flat_max_codes: int | None = None):
        faiss = _faiss()
        self.faiss = faiss
        self.flat_max_codes = FLAT_MAX_CODES if flat_max_codes is None else int(flat_max_codes)
        if index is None:
            flat = faiss.IndexBinaryFlat(CODE_BITS)
            index = faiss.IndexBinaryIDMap(flat)
            index.own_fields = True
            flat.this.disown()
        self.index = index

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(self.index, self.faiss.IndexBinaryIVF) else "flat"

    def entries(self):
        """(IVF list or None for a flat partition, ids, codes) of every code held, one list at a time (views)."""
        faiss = self.faiss
        if self.kind == "flat":
            n = self.ntotal
            ids = faiss.rev_swig_ptr(self.index.id_map.data(), n) if n else np.zeros(0, np.int64)
            flat = faiss.downcast_IndexBinary(self.index.index)
            codes = faiss.rev_swig_ptr(flat.xb.data(), n * CODE_BYTES).reshape(n, CODE_BYTES) if n else \
                np.zeros((0, CODE_BYTES), np.uint8)
            yield None, ids, codes
            return
        inv = self.index.invlists
        for lst in range(self.index.nlist):
            n = inv.list_size(lst)
            if n:
                yield (lst, faiss.rev_swig_ptr(inv.get_ids(lst), n),
                       faiss.rev_swig_ptr(inv.get_codes(lst), n * CODE_BYTES).reshape(n, CODE_BYTES))

    def to_ivf(self) -> None:
        """Turn a flat partition into an IVF over the shared centroids (same codes and ids)."""
        if self.kind == "ivf":
            return
        faiss = self.faiss
        quantizer = faiss.IndexBinaryFlat(CODE_BITS)
        quantizer.add(_quantizer()[0])
        index = faiss.IndexBinaryIVF(quantizer, CODE_BITS, IVF_NLIST)
        index.own_fields = True
        quantizer.this.disown()
        for _, ids, codes in self.entries():
            if len(ids):
                index.add_with_ids(np.ascontiguousarray(codes), np.ascontiguousarray(ids, dtype=np.int64))
        self.index = index

    def to_flat(self) -> None:
        """Turn an IVF partition into a flat one (same codes and ids)."""
        if self.kind == "flat":
            return
        parts = [(ids.astype(np.int64), codes.copy()) for _, ids, codes in self.entries()]
        self.index = _Partition().index
        if parts:
            self.add(np.concatenate([c for _, c in parts]), np.concatenate([i for i, _ in parts]))

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        if codes.shape[0]:
            if self.kind == "flat" and self.ntotal + codes.shape[0] > self.flat_max_codes:
                self.to_ivf()
            self.index.add_with_ids(np.ascontiguousarray(codes), np.ascontiguousarray(ids, dtype=np.int64))

    def add_to_list(self, lst: int, codes: np.ndarray, ids: np.ndarray) -> None:
        """Add codes known to belong to IVF list ``lst`` of the shared centroids (no re-assignment)."""
        if self.kind == "flat" and self.ntotal + codes.shape[0] <= self.flat_max_codes:
            self.add(codes, ids)
            return
        self.to_ivf()
        codes = np.ascontiguousarray(codes)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.index.invlists.add_entries(int(lst), len(ids), self.faiss.swig_ptr(ids), self.faiss.swig_ptr(codes))
        self.index.ntotal = self.index.ntotal + len(ids)

    def remove(self, ids: np.ndarray) -> int:
        if self.ntotal == 0 or len(ids) == 0:
            return 0
        sel = self.faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        return int(self.index.remove_ids(sel))

    def needs_ivf(self, nprobe: int) -> bool:
        """Whether a search visiting ``nprobe`` lists needs this partition as an IVF."""
        return self.kind == "flat" and int(nprobe) < IVF_NLIST

    def search(self, codes: np.ndarray, k: int, nprobe: int):
        """FAISS k-NN visiting ``nprobe`` lists per query (IVF_NLIST, or a flat partition: exhaustive)."""
        k = min(k, self.ntotal)
        if k <= 0 or codes.shape[0] == 0:
            return np.zeros((codes.shape[0], 0), np.int32), np.zeros((codes.shape[0], 0), np.int64)
        if self.kind == "flat":
            if nprobe < IVF_NLIST:
                raise GalleryError("internal: a flat partition asked for fewer IVF lists than all (call to_ivf first)")
            params = None
            scanned = self.ntotal
        else:
            params = self.faiss.SearchParametersIVF()
            params.nprobe = int(nprobe)  # per call: concurrent searches may use different ones
            scanned = self.ntotal * min(1.0, nprobe / IVF_NLIST)  # codes each query scans, about
        codes = np.ascontiguousarray(codes)
        n_q = codes.shape[0]
        parts = min(SEARCH_THREADS, n_q) if n_q * scanned >= 2 * SEARCH_SPLIT_MIN_WORK else 1

        def run(q):
            return self.index.search(q, k) if params is None else self.index.search(q, k, params=params)

        if parts <= 1:
            return run(codes)
        bounds = np.linspace(0, n_q, parts + 1).astype(int)
        futures = [_search_pool().submit(run, codes[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        results = [f.result() for f in futures]
        return np.concatenate([d for d, _ in results]), np.concatenate([lab for _, lab in results])

    def to_bytes(self) -> np.ndarray:
        """The serialised index (uint8 array; one copy of FAISS's buffer)."""
        return self.faiss.serialize_index_binary(self.index)

    def _stream(self, sink) -> None:
        writer = self.faiss.PyCallbackIOWriter(sink, _STREAM_CHUNK_BYTES)
        try:
            self.faiss.write_index_binary(self.index, writer)
        finally:
            del writer

    def digest(self) -> tuple[int, str]:
        """(bytes, SHA-256 hex) of the serialised index, computed without holding it in memory."""
        h = hashlib.sha256()
        n = 0

        def sink(b):
            nonlocal n
            h.update(b)
            n += len(b)
            return len(b)

        self._stream(sink)
        return n, h.hexdigest()

    def write_to(self, fh) -> tuple[int, str]:
        """Stream the serialised index to the file ``fh``; returns (bytes, SHA-256 hex) of what was written."""
        h = hashlib.sha256()
        n = 0

        def sink(b):
            nonlocal n
            h.update(b)
            fh.write(b)
            n += len(b)
            return len(b)

        self._stream(sink)
        return n, h.hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, flat_max_codes: int | None = None) -> "_Partition":
        faiss = _faiss()
        index = faiss.deserialize_index_binary(np.frombuffer(data, dtype=np.uint8))
        if isinstance(index, faiss.IndexBinaryIDMap):
            index.own_fields = True
        elif not isinstance(index, faiss.IndexBinaryIVF):
            raise ValueError(f"unexpected FAISS index type {type(index).__name__}")
        part = cls(index, flat_max_codes)
        if part.kind == "ivf" and part.ntotal <= part.flat_max_codes:
            part.to_flat()  # written by format 3 (IVF at every size): searched flat from now on
        return part

    def memory_bytes(self) -> int:
        """Bytes held: codes and ids (plus the IVF centroids)."""
        lists = int(self.index.nlist) if self.kind == "ivf" else 0
        return self.ntotal * (CODE_BYTES + 8) + lists * CODE_BYTES


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


#: Extra neighbours asked of FAISS beyond k, so that codes tied with the k-th are seen in one
#: search (distances are integers: at k = 64 of 2.9 M codes, a margin of 16 left 37 % of the
#: probe cylinders tied at the last answer, each searched again; 112 leaves 0.5 %, and the
#: FAISS stage of a 100,000-finger search took 39 -> 24 ms).
TIE_MARGIN = 112


def nprobe_for(total_codes: int, flat_max_codes: int | None = None, ivf_nprobe: int | None = None) -> int:
    """IVF lists a query visits in a partition of ``total_codes`` codes (in the whole gallery)."""
    flat_max_codes = FLAT_MAX_CODES if flat_max_codes is None else flat_max_codes
    ivf_nprobe = IVF_NPROBE if ivf_nprobe is None else ivf_nprobe
    return IVF_NLIST if total_codes <= flat_max_codes else min(ivf_nprobe, IVF_NLIST)


def _search_ties_complete(part: "_Partition", codes: np.ndarray, k: int, nprobe: int):
    """(rows, dist, labels) of the codes at most as far as each query's k-th nearest among
    the codes of the ``nprobe`` IVF lists it visits in ``part``."""
    n, n_q = part.ntotal, codes.shape[0]
    k = min(int(k), n)
    e = np.zeros(0, np.int64)
    if k <= 0 or n_q == 0:
        return e, np.zeros(0, np.int32), e
    kk = min(k + TIE_MARGIN, n)
    d, lab = part.search(codes, kk, nprobe)
    d_k = d[:, k - 1].copy()  # FAISS pads with INT32_MAX and label -1 when the lists hold fewer
    todo = np.arange(n_q)
    rows, dist, labels = [], [], []
    while True:
        # a query is complete when its last answer lies beyond its k-th distance or is padding
        # (every code of its lists seen), or when all codes were asked for
        done = np.ones(todo.size, bool) if kk >= n else (d[:, -1] > d_k[todo]) | (lab[:, -1] < 0)
        keep = (d[done] <= d_k[todo[done], None]) & (lab[done] >= 0)
        r = np.broadcast_to(todo[done, None], keep.shape)
        rows.append(r[keep])
        dist.append(d[done][keep])
        labels.append(lab[done][keep])
        todo = todo[~done]
        if todo.size == 0:
            break
        kk = min(kk * 4, n)
        d, lab = part.search(np.ascontiguousarray(codes[todo]), kk, nprobe)
    return (np.concatenate(rows).astype(np.int64), np.concatenate(dist).astype(np.int32),
            np.concatenate(labels).astype(np.int64))


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
        self._parts: dict[int, _Partition] = {}
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
                    part = self._parts[pos] = _Partition(flat_max_codes=self.flat_max_codes)
                part.add(codes, ids)
            if generation is not None:
                self.generation = int(generation)

    def remove(self, finger_ids, generation: int | None = None) -> int:
        """Remove every code of ``finger_ids``; returns the number of codes removed."""
        fids = np.asarray(list(finger_ids), dtype=np.int64)
        ids = ((fids[:, None] << ANGLE_ID_BITS) | np.arange(1 << ANGLE_ID_BITS)[None, :]).ravel()
        with self._lock.write():
            removed = sum(p.remove(ids) for p in self._parts.values())
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
                    target = self._parts[pos] = _Partition(flat_max_codes=self.flat_max_codes)
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
                rows, d, lab = _search_ties_complete(part, codes, k, lists)
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
                index._parts[int(entry["position"])] = _Partition.from_bytes(blob, index.flat_max_codes)
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
