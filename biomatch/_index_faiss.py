"""Partitions of a gallery index: flat while small, IVF over the shared centroids beyond.

Private to :mod:`biomatch.index` (its wrapper validates; nothing here does): one
position partition's binary codes (:class:`Partition`, kept in
:mod:`biomatch._compact_lists`), the shared IVF centroids and the FAISS quantizer over
them (the only FAISS index left: it assigns codes to lists), the thread pool a search's
scan is split over, and the ties-complete k-NN (:func:`search_ties_complete`). The
constants are :mod:`biomatch.index`'s, which re-exports them."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from .errors import GalleryError

_QUANTIZER_LOCK = threading.Lock()

#: Bits of the reduced per-cylinder code that the index holds.
CODE_BITS = 256
CODE_BYTES = CODE_BITS // 8
#: Partitions of up to this many codes (in the whole gallery: a sharded gallery counts
#: every shard's) are searched exhaustively: every IVF list visited.
FLAT_MAX_CODES = 400_000
#: IVF lists of every partition, with centroids shared by every index
#: (biomatch/data/ivf_quantizer.npy, made by tools/train_quantizer.py from
#: synthetic fingers): a search visits the same lists on one store and on each
#: shard of a sharded gallery, whose merged k-NN are then exactly one store's.
IVF_NLIST = 2048
#: OpenMP threads FAISS (the quantizer's list assignment) may use per call. One: searches run
#: concurrently in threads (FAISS releases the GIL) and OpenMP teams of a loaded 2-core machine
#: spin-wait (measured 36 ms vs 0.8 ms for a 35-query search of 1,750 codes).
FAISS_THREADS = 1
#: Python threads one search's scan is split over (its probe cylinders in equal
#: parts, each part a scan of :mod:`biomatch._ivf_scan`, which releases the GIL): the
#: latency of one search on two cores without OpenMP's spin-waiting teams.
#: A part must scan at least SEARCH_SPLIT_MIN_WORK (query, code) distances to be
#: worth a thread hand-off (small partitions answer in well under a millisecond).
SEARCH_THREADS = 2
SEARCH_SPLIT_MIN_WORK = 2_000_000

_FAISS_READY = False
_POOL = None
_POOL_LOCK = threading.Lock()


def search_pool():
    """The threads searches split their FAISS scans over (:data:`SEARCH_THREADS`)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _POOL = ThreadPoolExecutor(max_workers=SEARCH_THREADS, thread_name_prefix="biomatch-faiss")
        return _POOL


def faiss_module():
    """The faiss module, with its OpenMP threads set to FAISS_THREADS once."""
    global _FAISS_READY
    import faiss

    if not _FAISS_READY:
        faiss.omp_set_num_threads(FAISS_THREADS)
        _FAISS_READY = True
    return faiss


_QUANTIZER = None


def shared_centroids() -> tuple[np.ndarray, str]:
    """The shared IVF centroids (uint8, IVF_NLIST x CODE_BYTES) and their SHA-256."""
    global _QUANTIZER
    with _QUANTIZER_LOCK:
        if _QUANTIZER is None:
            path = Path(__file__).with_name("data") / "ivf_quantizer.npy"
            try:
                centroids = np.load(path)
            except (OSError, ValueError) as exc:
                raise GalleryError(f"{path}: the index quantiser is missing or unreadable ({exc})") from None
            if centroids.shape != (IVF_NLIST, CODE_BYTES) or centroids.dtype != np.uint8:
                raise GalleryError(f"{path}: expected uint8 centroids of shape {(IVF_NLIST, CODE_BYTES)}, "
                                   f"got {centroids.dtype} {centroids.shape} (run tools/train_quantizer.py)")
            _QUANTIZER = (np.ascontiguousarray(centroids), hashlib.sha256(centroids.tobytes()).hexdigest())
        return _QUANTIZER


_SHARED_QUANTIZER = None


def shared_quantizer():
    """A FAISS flat binary index over the shared centroids: assigns codes to IVF lists (searched concurrently)."""
    global _SHARED_QUANTIZER
    with _QUANTIZER_LOCK:
        ready = _SHARED_QUANTIZER
    if ready is None:
        quantizer = faiss_module().IndexBinaryFlat(CODE_BITS)
        quantizer.add(shared_centroids()[0])
        with _QUANTIZER_LOCK:
            _SHARED_QUANTIZER = _SHARED_QUANTIZER or quantizer
            ready = _SHARED_QUANTIZER
    return ready


class Partition:
    """The codes of one position partition, labelled with finger ids: flat while small, IVF beyond.

    The entries live in :class:`biomatch._compact_lists.CompactLists` (codes plus compact ids,
    ~34 B an entry where FAISS's inverted lists held 40): one list for a flat partition, the
    :data:`IVF_NLIST` lists of the shared centroids for an IVF one (an entry goes to the list of
    its nearest centroid, as FAISS's ``IndexBinaryIVF`` assigns it). A partition of at most
    :data:`FLAT_MAX_CODES` codes is flat: a search scans its one list whole. It becomes an IVF
    when it grows past that, or when it is asked to visit fewer lists than all (a shard of a
    large sharded gallery): the search must then see exactly the codes of those lists, as one
    store would. Both kinds return the same ties-complete k-NN of an exhaustive search
    (:func:`search_ties_complete`, which does not depend on the scan order).
    """

    def __init__(self, lists=None, flat_max_codes: int | None = None):
        from ._compact_lists import CompactLists

        self.flat_max_codes = FLAT_MAX_CODES if flat_max_codes is None else int(flat_max_codes)
        self.lists = CompactLists(1) if lists is None else lists
        self._views = None  # the lists' blocks for the scan, dropped on every change

    @property
    def ntotal(self) -> int:
        return self.lists.ntotal

    @property
    def kind(self) -> str:
        return "ivf" if self.lists.nlist == IVF_NLIST else "flat"

    @property
    def quantizer(self):
        return shared_quantizer()

    def entries(self):
        """(IVF list or None for a flat partition, labels, codes) of every code held, one list at a time."""
        flat = self.kind == "flat"
        for lst in np.flatnonzero(self.lists.sizes):
            ids, codes = self.lists.get(lst)
            yield (None if flat else int(lst)), ids, codes

    def _assign(self, codes: np.ndarray) -> np.ndarray:
        return shared_quantizer().search(np.ascontiguousarray(codes), 1)[1][:, 0]

    def to_ivf(self) -> None:
        """Turn a flat partition into an IVF over the shared centroids (same codes and ids)."""
        from ._compact_lists import CompactLists

        if self.kind == "ivf":
            return
        old = self.lists
        self._views = None
        self.lists = CompactLists(IVF_NLIST)
        if old.ntotal:
            ids, codes = old.get(0)
            self._add_ivf(codes, ids)

    def to_flat(self) -> None:
        """Turn an IVF partition into a flat one (same codes and ids)."""
        from ._compact_lists import CompactLists

        if self.kind == "flat":
            return
        parts = [(ids, codes) for _, ids, codes in self.entries()]
        self._views = None
        self.lists = CompactLists(1)
        if parts:
            self.lists.set(0, np.concatenate([c for _, c in parts]), np.concatenate([i for i, _ in parts]))

    def _add_ivf(self, codes: np.ndarray, ids: np.ndarray) -> None:
        assign = self._assign(codes)
        order = np.argsort(assign, kind="stable")
        assign, codes, ids = assign[order], codes[order], ids[order]
        cut = np.flatnonzero(np.diff(assign)) + 1
        for a, b in zip(np.r_[0, cut], np.r_[cut, assign.size]):
            self.lists.add(int(assign[a]), codes[a:b], ids[a:b])

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        self._views = None
        if codes.shape[0]:
            if self.kind == "flat" and self.ntotal + codes.shape[0] > self.flat_max_codes:
                self.to_ivf()
            codes, ids = np.ascontiguousarray(codes), np.asarray(ids, np.int64)
            if self.kind == "flat":
                self.lists.add(0, codes, ids)
            else:
                self._add_ivf(codes, ids)

    def add_to_list(self, lst: int, codes: np.ndarray, ids: np.ndarray) -> None:
        """Add codes known to belong to IVF list ``lst`` of the shared centroids (no re-assignment)."""
        if self.kind == "flat" and self.ntotal + codes.shape[0] <= self.flat_max_codes:
            self.add(codes, ids)
            return
        self.to_ivf()
        self._views = None
        self.lists.add(int(lst), np.ascontiguousarray(codes), np.asarray(ids, np.int64))

    def remove(self, finger_ids: np.ndarray) -> int:
        """Remove every code of ``finger_ids``; returns the number removed."""
        self._views = None
        if self.ntotal == 0 or len(finger_ids) == 0:
            return 0
        return self.lists.remove(finger_ids)

    def needs_ivf(self, nprobe: int) -> bool:
        """Whether a search visiting ``nprobe`` lists needs this partition as an IVF."""
        return self.kind == "flat" and int(nprobe) < IVF_NLIST

    def scan(self, codes: np.ndarray, k: int, nprobe: int):
        """(rows, dist, labels) of the ties-complete k-NN, scanned list by list
        (:func:`biomatch._ivf_scan.scan_ties_complete`; ``1 <= k <= ntotal``), the queries split
        in equal parts over :data:`SEARCH_THREADS` threads when the scan is large enough."""
        from ._ivf_scan import scan_ties_complete

        views = self._views
        if views is None:
            views = self._views = self.lists.views()
        codes = np.ascontiguousarray(codes)
        n_q = codes.shape[0]
        if self.kind == "flat":
            if nprobe < IVF_NLIST:
                raise GalleryError("internal: a flat partition asked for fewer IVF lists than all (call to_ivf first)")
            assign = np.zeros((n_q, 1), np.int64)
            scanned = self.ntotal
        else:
            assign = shared_quantizer().search(codes, int(nprobe))[1]
            scanned = self.ntotal * min(1.0, nprobe / IVF_NLIST)  # codes each query scans, about
        parts = min(SEARCH_THREADS, n_q) if n_q * scanned >= 2 * SEARCH_SPLIT_MIN_WORK else 1
        if parts <= 1:
            return scan_ties_complete(views, assign, codes, k)
        bounds = np.linspace(0, n_q, parts + 1).astype(int)
        futures = [search_pool().submit(scan_ties_complete, views, assign[a:b], codes[a:b], k)
                   for a, b in zip(bounds[:-1], bounds[1:])]
        results = [f.result() for f in futures]
        return (np.concatenate([r + a for (r, _, _), a in zip(results, bounds[:-1])]),
                np.concatenate([d for _, d, _ in results]), np.concatenate([lab for _, _, lab in results]))

    def to_bytes(self) -> bytes:
        """The serialised lists (one copy)."""
        return b"".join(bytes(c) for c in self.lists.chunks())

    def digest(self) -> tuple[int, str]:
        """(bytes, SHA-256 hex) of the serialised lists, computed without a copy of them."""
        h = hashlib.sha256()
        n = 0
        for c in self.lists.chunks():
            h.update(c)
            n += len(c) if isinstance(c, bytes) else c.nbytes
        return n, h.hexdigest()

    def write_to(self, fh) -> tuple[int, str]:
        """Stream the serialised lists to the file ``fh``; returns (bytes, SHA-256 hex) of what was written."""
        h = hashlib.sha256()
        n = 0
        for c in self.lists.chunks():
            h.update(c)
            fh.write(c)
            n += len(c) if isinstance(c, bytes) else c.nbytes
        return n, h.hexdigest()

    @classmethod
    def from_bytes(cls, data, flat_max_codes: int | None = None) -> "Partition":
        """A partition read from :meth:`to_bytes`' layout (ValueError when malformed)."""
        from ._compact_lists import CompactLists

        lists = CompactLists.from_buffer(data)
        if lists.nlist not in (1, IVF_NLIST):
            raise ValueError(f"an index partition of {lists.nlist} lists (expected 1 or {IVF_NLIST})")
        part = cls(lists, flat_max_codes)
        if part.kind == "ivf" and part.ntotal <= part.flat_max_codes:
            part.to_flat()  # under a larger flat limit than when it was written: searched flat
        return part

    def memory_bytes(self) -> int:
        """Bytes held: the list blocks (codes and compact ids) and lengths (plus the IVF centroids)."""
        return self.lists.nbytes() + (IVF_NLIST * CODE_BYTES if self.kind == "ivf" else 0)


def search_ties_complete(part: "Partition", codes: np.ndarray, k: int, nprobe: int):
    """(rows, dist, labels) of the codes at most as far as each query's k-th nearest among
    the codes of the ``nprobe`` IVF lists it visits in ``part`` (all of a flat partition's)."""
    n, n_q = part.ntotal, codes.shape[0]
    k = min(int(k), n)
    e = np.zeros(0, np.int64)
    if k <= 0 or n_q == 0:
        return e, np.zeros(0, np.int32), e
    return part.scan(codes, k, nprobe)
