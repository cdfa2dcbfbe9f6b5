"""FAISS partitions of a gallery index: flat while small, IVF over the shared centroids beyond.

Private to :mod:`biomatch.index` (its wrapper validates; nothing here does): one
position partition's binary codes (:class:`Partition`), the shared IVF centroids,
the thread pool a search's scan is split over, and the ties-complete k-NN
(:func:`search_ties_complete`). The constants are :mod:`biomatch.index`'s, which
re-exports them.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from .errors import GalleryError

_QUANTIZER_LOCK = threading.Lock()

#: Bits of the reduced per-cylinder code that the FAISS index holds.
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
STREAM_CHUNK_BYTES = 1 << 20

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


class Partition:
    """The codes of one position partition, labelled with finger ids: flat while small, IVF beyond.

    A partition of at most :data:`FLAT_MAX_CODES` codes is a flat index
    (``IndexBinaryIDMap`` over ``IndexBinaryFlat``): an exhaustive search scans
    its codes once, where an IVF visiting all 2,048 lists paid their overhead
    too (3.7x a flat scan at 10,000 fingers). It becomes an ``IndexBinaryIVF``
    over the shared centroids when it grows past that, or when it is asked to
    visit fewer lists than all (a shard of a large sharded gallery): the search
    must then see exactly the codes of those lists, as one store would. Both
    kinds return the same ties-complete k-NN of an exhaustive search
    (:func:`search_ties_complete` does not depend on the scan order).
    """

    def __init__(self, index=None, flat_max_codes: int | None = None):
        faiss = faiss_module()
        self.faiss = faiss
        self.flat_max_codes = FLAT_MAX_CODES if flat_max_codes is None else int(flat_max_codes)
        if index is None:
            flat = faiss.IndexBinaryFlat(CODE_BITS)
            index = faiss.IndexBinaryIDMap(flat)
            index.own_fields = True
            flat.this.disown()
        self.index = index
        self._views = None  # an IVF's list addresses for the list-by-list scan, dropped on every change

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
        quantizer.add(shared_centroids()[0])
        index = faiss.IndexBinaryIVF(quantizer, CODE_BITS, IVF_NLIST)
        index.own_fields = True
        quantizer.this.disown()
        self._views = None
        for _, ids, codes in self.entries():
            if len(ids):
                index.add_with_ids(np.ascontiguousarray(codes), np.ascontiguousarray(ids, dtype=np.int64))
        self.index = index

    def to_flat(self) -> None:
        """Turn an IVF partition into a flat one (same codes and ids)."""
        if self.kind == "flat":
            return
        parts = [(ids.astype(np.int64), codes.copy()) for _, ids, codes in self.entries()]
        self._views = None
        self.index = Partition().index
        if parts:
            self.add(np.concatenate([c for _, c in parts]), np.concatenate([i for i, _ in parts]))

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        self._views = None
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
        self._views = None
        codes = np.ascontiguousarray(codes)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        self.index.invlists.add_entries(int(lst), len(ids), self.faiss.swig_ptr(ids), self.faiss.swig_ptr(codes))
        self.index.ntotal = self.index.ntotal + len(ids)

    def remove(self, ids: np.ndarray) -> int:
        self._views = None
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
        futures = [search_pool().submit(run, codes[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        results = [f.result() for f in futures]
        return np.concatenate([d for d, _ in results]), np.concatenate([lab for _, lab in results])

    def scan(self, codes: np.ndarray, k: int, nprobe: int):
        """(rows, dist, labels) of an IVF partition's ties-complete k-NN, scanned list by list
        (:func:`biomatch._ivf_scan.scan_ties_complete`; ``1 <= k <= ntotal``), the queries split
        over the search threads as :meth:`search` splits them."""
        from ._ivf_scan import ListViews, scan_ties_complete

        views = self._views
        if views is None or views.index is not self.index:
            views = self._views = ListViews(self.faiss, self.index, CODE_BYTES)
        codes = np.ascontiguousarray(codes)
        n_q = codes.shape[0]
        scanned = self.ntotal * min(1.0, nprobe / IVF_NLIST)
        parts = min(SEARCH_THREADS, n_q) if n_q * scanned >= 2 * SEARCH_SPLIT_MIN_WORK else 1
        quantizer = self.index.quantizer
        if parts <= 1:
            return scan_ties_complete(views, quantizer, codes, k, nprobe)
        bounds = np.linspace(0, n_q, parts + 1).astype(int)
        futures = [search_pool().submit(scan_ties_complete, views, quantizer, codes[a:b], k, nprobe)
                   for a, b in zip(bounds[:-1], bounds[1:])]
        results = [f.result() for f in futures]
        return (np.concatenate([r + a for (r, _, _), a in zip(results, bounds[:-1])]),
                np.concatenate([d for _, d, _ in results]), np.concatenate([lab for _, _, lab in results]))

    def to_bytes(self) -> np.ndarray:
        """The serialised index (uint8 array; one copy of FAISS's buffer)."""
        return self.faiss.serialize_index_binary(self.index)

    def _stream(self, sink) -> None:
        writer = self.faiss.PyCallbackIOWriter(sink, STREAM_CHUNK_BYTES)
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
    def from_bytes(cls, data: bytes, flat_max_codes: int | None = None) -> "Partition":
        faiss = faiss_module()
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


#: Extra neighbours asked of FAISS beyond k, so that codes tied with the k-th are seen in one
#: search (distances are integers: at k = 64 of 2.9 M codes, a margin of 16 left 37 % of the
#: probe cylinders tied at the last answer, each searched again; 112 leaves 0.5 %, and the
#: FAISS stage of a 100,000-finger search took 39 -> 24 ms).
TIE_MARGIN = 112


def search_ties_complete(part: "Partition", codes: np.ndarray, k: int, nprobe: int):
    """(rows, dist, labels) of the codes at most as far as each query's k-th nearest among
    the codes of the ``nprobe`` IVF lists it visits in ``part``."""
    n, n_q = part.ntotal, codes.shape[0]
    k = min(int(k), n)
    e = np.zeros(0, np.int64)
    if k <= 0 or n_q == 0:
        return e, np.zeros(0, np.int32), e
    if part.kind == "ivf":  # one pass over the visited lists (FAISS's heap scan reads them per query)
        return part.scan(codes, k, nprobe)
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
