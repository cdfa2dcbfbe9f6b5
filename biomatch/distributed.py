"""Galleries sharded over a Ray cluster: scatter-gather search, merge top-L.

``bm.Gallery.open("ray://DIR?shards=N")`` opens a :class:`ShardedGallery`
with the same public API as :class:`biomatch.gallery.Gallery`. It needs the
optional dependency ``biomatch[distributed]`` (``ray``) and uses the cluster
``ray.init`` connected to (a local one is started when none is).

Layout
------
``DIR/shard-K.db`` (K = 0..N-1) is an ordinary single-machine gallery store
(SQLite + its derived FAISS index and feature files) held open by one Ray
actor, which also does that shard's FAISS shortlist and numba rescoring next
to its data. ``DIR/coordinator.db`` is a gallery store holding no subjects:
the shard count, the calibration, the thresholds and the audit log of the
requests (its hash chain is :mod:`biomatch.audit`). Each shard's own store
also keeps the audit records of the changes it committed, in the same
transaction as the change, so a crash between the shard's commit and the
coordinator's record loses no trace of a committed enrolment.

A subject belongs to shard ``jump_hash(sha256(subject_id), N)`` (Lamping and
Veach's jump consistent hash over the first 8 bytes of the digest): stable
across processes and versions, and growing N to N+1 moves only the ~1/(N+1)
of the subjects that the new shard owns. A subject's fingers in every
gallery live on the same shard. Enrolment, update, deletion and reads go to
the owning shard only.

Search and what is identical to a single machine
------------------------------------------------
A search runs the three steps of :meth:`Gallery._search_gallery` apart:

1. every shard returns, per probe finger and per probe cylinder, the FAISS
   k-NN of that cylinder in each position partition of its index
   (:meth:`Gallery._neighbours`), *ties complete* (every code as near as the
   k-th) and keyed by subject id instead of the shard's row ids, with its
   subject and finger counts;
2. the coordinator merges them into the global k nearest of every
   (cylinder, partition) under the one explicit tie rule (distance, then
   subject id, then the gallery minutia's direction bin;
   :func:`biomatch.search.shortlist.merge_neighbours`), which the single store
   applies to its own index too, and computes the votes and the subject
   shortlist with the single store's function
   (:func:`biomatch.search.shortlist.shortlist_subjects`; ties by subject id);
   a gallery of at most :data:`biomatch.gallery.EXHAUSTIVE_MAX_FINGERS`
   fingers *in all* is rescored whole, as on one store;
3. each shard rescores the shortlisted subjects it holds (numba, next to its
   data); the coordinator then ranks with the one function
   :meth:`Gallery.search` calls (:func:`biomatch.search.ranking.rank`):
   the calibration (the coordinator's) turns each raw score into an
   FMR, Fisher fusion, the same ranking key (fused FMR, then summed raw
   score, gallery, subject), the same threshold rule in the FMR domain, FPIR
   for ``N`` = the subjects of every searched shard together, the top
   ``max_candidates``; the owning shards compute the minutia pairs of the
   final candidates only.

Where the guarantee holds: a complete search (every shard answered) of a
sharded gallery returns the same candidates as a single-machine store
holding the same subjects - subjects, ranks, scores, FMRs and FPIRs bit for
bit, and pairs - for any shard count and any gallery size. Every index,
the single store's and each shard's, assigns codes to IVF lists with the
same shipped centroids (:data:`biomatch.index.IVF_NLIST`), and a shard
visits the lists that one store holding every shard's codes would visit:
all of them while the gallery's partition (all shards together) holds at
most :data:`biomatch.index.FLAT_MAX_CODES` codes, the
:data:`biomatch.index.IVF_NPROBE` nearest centroids beyond
(:meth:`ShardedGallery._step_neighbours` decides the lists from the gallery's sizes and passes them).
Each shard's ties-complete k-NN over those lists then contain the codes the
single store's k-NN hold. Tested in ``tests/test_distributed.py`` (2 and 3
shards, 346 fingers with tied codes, exhaustive and IVF search); measured
in ``benchmarks/bench_distributed.py``.

Missing shards
--------------
A shard whose actor has died (or fails during the search) is never skipped
silently: :meth:`ShardedGallery.search` returns a :class:`SearchResult`, a
``list`` of :class:`~biomatch.gallery.Candidate` (so existing callers work
unchanged) with ``.complete``, ``.missing_shards`` and ``.missing_subjects``
(the subjects that shard held when last seen, None if never seen); the audit
record says so too. ``on_missing="raise"`` raises a :class:`GalleryError`
instead. The shard's data is on disk: :meth:`ShardedGallery.restart_shard`
(or reopening) starts a new actor on the same store.

Rebalancing
-----------
:meth:`ShardedGallery.add_shard` records the new shard count in the
coordinator, starts the actor and moves every subject whose owner changed:
copy to the new owner (one committed transaction per subject), then delete
from the source (:meth:`Gallery.delete_many`, in bulk). A crash at any point leaves each subject on its source, on
both (the copy committed; searches keep one, the owner's) or moved; the
coordinator marks the rebalance pending and :meth:`open` finishes it.
Moved subjects keep their templates, metadata, originals and rescoring rows
(so they score exactly as before the move); their ``created`` time becomes
the time of the move, and their FAISS codes are recomputed from the stored
template bytes.

Migrating a single-machine store: :meth:`ShardedGallery.import_store` has
every shard copy the subjects it owns, with their FAISS codes and rescoring
rows (:meth:`Gallery.import_from`), without re-extraction.

Known differences from a single store: :meth:`ShardedGallery.update` with
finger *images* keeps the extracted templates but not the image bytes;
:meth:`ShardedGallery.enroll` keeps image bytes as originals and refuses an
``originals`` entry at the position of an image given in ``fingers``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import parse_qs

import numpy as np

from . import audit as _audit
from .errors import BiomatchError, GalleryError
from .gallery import Gallery, SubjectRecord
from .gallery import searching as _gallery_search
from .gallery.checks import check_context as _check_context
from .gallery.checks import check_enrolment as _check_enrolment
from .gallery.checks import check_fingers as _check_fingers
from .gallery.checks import check_galleries
from .gallery.checks import check_gallery_name as _check_gallery_name
from .gallery.checks import check_operator as _operator
from .gallery.checks import check_subject as _check_subject
from .gallery.checks import check_transaction_id as _transaction_id
from .gallery.checks import template_hash as _template_hash
from .search import ranking
from .search.results import SearchResult
from .search.shortlist import merge_neighbours as _merge_neighbours
from .search.shortlist import shortlist_subjects as _shortlist_subjects
from .template import Template

__all__ = ["ShardedGallery", "SearchResult", "shard_of", "parse_url", "MAX_SHARDS"]

#: Largest shard count a sharded gallery accepts.
MAX_SHARDS = 1024
#: Concurrent method calls one shard actor serves (the Gallery it holds is thread-safe).
ACTOR_CONCURRENCY = 4
#: Subjects exported from a shard per call while rebalancing.
REBALANCE_BATCH = 200
#: Seconds to wait for a shard actor to answer its first ping.
ACTOR_START_TIMEOUT_S = 120.0

_URL_PREFIX = "ray://"
_COORDINATOR = "coordinator.db"
_ON_MISSING = ("report", "raise")


# ---------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------
def shard_of(subject_id: str, n_shards: int) -> int:
    """The shard owning ``subject_id`` among ``n_shards``.

    Jump consistent hash (Lamping and Veach 2014) of the first 8 bytes of
    SHA-256 of the UTF-8 subject id: stable everywhere, and growing
    ``n_shards`` by one moves only the subjects the new shard takes.

    Parameters
    ----------
    subject_id : str
    n_shards : int
        1..:data:`MAX_SHARDS`.

    Returns
    -------
    int
        0..n_shards-1.
    """
    subject_id = _check_subject(subject_id)
    n = _check_shards(n_shards)
    key = int.from_bytes(hashlib.sha256(subject_id.encode("utf-8")).digest()[:8], "big")
    b, j = -1, 0
    while j < n:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def _owned_by(k: int, n_shards: int, subject_id: str) -> bool:
    """Whether shard ``k`` of ``n_shards`` owns ``subject_id`` (a picklable selector for imports)."""
    return shard_of(subject_id, n_shards) == k


def _check_shards(n, name: str = "shards") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= int(n) <= MAX_SHARDS:
        raise GalleryError(f"{name}: expected an integer 1..{MAX_SHARDS}, got {n!r}")
    return int(n)


def parse_url(url: str) -> tuple[Path, int | None]:
    """Split ``"ray://DIR?shards=N"`` into (DIR, N or None when not given).

    Raises
    ------
    GalleryError
        For another scheme, an empty DIR, an unknown or repeated query key, or a bad N.
    """
    if not isinstance(url, str) or not url.startswith(_URL_PREFIX):
        raise GalleryError(f"path: expected a 'ray://DIR?shards=N' URL, got {url!r}")
    rest = url[len(_URL_PREFIX):]
    directory, _, query = rest.partition("?")
    if not directory:
        raise GalleryError(f"path: {url!r} names no directory (expected 'ray://DIR?shards=N')")
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise GalleryError(f"path: {url!r} has a malformed query (expected '?shards=N')") from None
    unknown = sorted(set(params) - {"shards"})
    if unknown:
        raise GalleryError(f"path: unknown option(s) {unknown} in {url!r} (known: shards)")
    shards = None
    if "shards" in params:
        values = params["shards"]
        if len(values) != 1 or not values[0].strip().isdigit():
            raise GalleryError(f"shards: expected one integer 1..{MAX_SHARDS} in {url!r}, got {values}")
        shards = _check_shards(int(values[0]))
    return Path(directory), shards


def _ray():
    try:
        import ray
    except ImportError:
        raise GalleryError(
            "ray: sharded galleries (ray://...) need the optional dependency; install biomatch[distributed]"
        ) from None
    return ray


# ---------------------------------------------------------------------------
# The shard actor (wrapped with ray.remote when a gallery opens)
# ---------------------------------------------------------------------------
class _Shard:
    """One shard: a single-machine :class:`Gallery` store, held in a Ray actor."""

    def __init__(self, path: str):
        self.path = path
        self.g = Gallery.open(path)

    def ping(self) -> int:
        return os.getpid()

    def call(self, method: str, *args, **kwargs):
        """Run a public Gallery method (enroll, update, delete, get, subjects, ...) on this shard."""
        return getattr(self.g, method)(*args, **kwargs)

    def counts(self) -> dict:
        """Subjects per gallery (counted once per gallery generation: every search asks, twice)."""
        con = self.g._con()
        return {name: self.g._n_subjects(con, gid, gen)
                for gid, name, gen in con.execute("SELECT id, name, generation FROM galleries").fetchall()}

    def neighbours(self, probes: dict, galleries, nprobe: dict | None = None) -> dict:
        """Step 1 of a search on this shard.

        ``nprobe`` ({gallery: {position: IVF lists}}, decided by the
        coordinator for the whole sharded gallery) sets the lists visited, as
        one store holding every shard's codes would visit them. Returns ``{"counts": {gallery: subjects}, "fingers":
        {gallery: fingers}, "neighbours": {gallery: {probe position:
        Neighbours}}, "sizes": {gallery: {position: codes}}}`` (the FAISS k-NN
        of every probe cylinder, ties complete, keyed by subject id, and this
        shard's index sizes).
        """
        con = self.g._con()
        counts = self.counts()
        names = list(counts) if galleries is None else [g for g in galleries if g in counts]
        fingers, neighbours, sizes = {}, {}, {}
        for name in names:
            gid, _ = self.g._require_gallery(con, name)
            fingers[name], neighbours[name], sizes[name] = self.g._search_neighbours(
                con, name, gid, probes, (nprobe or {}).get(name))
        return {"counts": {n: counts[n] for n in names}, "fingers": fingers, "neighbours": neighbours, "sizes": sizes}

    def rescore(self, probes: dict, subjects: dict) -> list:
        """Step 3 on this shard: ``{gallery: [subject ids] or None (all)}`` -> [(gallery, subject, per)].

        ``per`` is the single-machine list of (probe position, position, raw score, finger id).
        """
        con = self.g._con()
        counts = self.counts()
        rows = []
        for name, wanted in subjects.items():
            if name in counts:
                gid, _ = self.g._require_gallery(con, name)
                rows += self.g._search_rescore(con, name, gid, probes, wanted)
        return rows

    def pairs(self, probes: dict, wanted: list) -> list:
        """Minutia pairs of (probe position, finger id) comparisons."""
        return [self.g._pairs(probes[pp], fid) for pp, fid in wanted]

    def keys(self) -> list:
        """Every (gallery, subject) held by this shard."""
        con = self.g._con()
        return con.execute(
            "SELECT galleries.name, subject FROM subjects JOIN galleries ON galleries.id = subjects.gallery_id"
        ).fetchall()

    def has(self, gallery: str, subject: str) -> bool:
        con = self.g._con()
        return con.execute(
            "SELECT 1 FROM subjects JOIN galleries ON galleries.id = subjects.gallery_id WHERE name = ? AND subject = ?",
            (gallery, subject),
        ).fetchone() is not None

    def export(self, gallery: str, subject: str) -> dict:
        """Everything needed to re-enrol one subject elsewhere (templates, metadata, originals)."""
        con = self.g._con()
        sid, meta = con.execute(
            "SELECT subjects.id, metadata FROM subjects JOIN galleries ON galleries.id = subjects.gallery_id "
            "WHERE name = ? AND subject = ?",
            (gallery, subject),
        ).fetchone()
        fingers = dict(con.execute("SELECT position, template FROM fingers WHERE subject_id = ?", (sid,)).fetchall())
        originals = con.execute("SELECT position, data FROM originals WHERE subject_id = ? ORDER BY id", (sid,)).fetchall()
        shas = [r[0] for r in con.execute("SELECT sha256 FROM fingers WHERE subject_id = ?", (sid,))]
        # the rescoring rows move too: those of a store enrolled before rows were derived from the
        # stored bytes (Gallery._prepare) can differ slightly from rows rebuilt from them
        rows = self.g._featstore.get(shas)
        return {"gallery": gallery, "subject": subject, "metadata": meta, "fingers": fingers, "originals": originals,
                "rows": rows}

    def import_(self, rec: dict, operator: str, source: int) -> None:
        """Enrol an exported subject (no-op when this shard already holds it: the copy committed before)."""
        import json

        if self.has(rec["gallery"], rec["subject"]):
            return
        fingers = {p: Template.from_bytes(b, name=f"moved finger {p}") for p, b in rec["fingers"].items()}
        self.g.enroll(
            rec["subject"], fingers, gallery=rec["gallery"], operator=operator,
            metadata=json.loads(rec["metadata"]) if rec["metadata"] else None,
            originals=dict(rec["originals"]) or None, keep_originals=False,
            context={"rebalance_from_shard": source},
        )
        if rec["rows"]:
            self.g._featstore.put(list(rec["rows"].items()))
            con = self.g._con()
            self.g._forget([r[0] for r in con.execute(
                "SELECT fingers.id FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
                "JOIN galleries ON galleries.id = subjects.gallery_id WHERE name = ? AND subject = ?",
                (rec["gallery"], rec["subject"]),
            )])

    def close(self) -> None:
        self.g.close()


# ---------------------------------------------------------------------------
# The sharded gallery
# ---------------------------------------------------------------------------
_OPEN_TOKEN = object()


class ShardedGallery:
    """A gallery store sharded over Ray actors (see the module docstring).

    Open with :meth:`open` or ``bm.Gallery.open("ray://DIR?shards=N")``; a
    context manager; thread-safe for searches.
    """

    def __init__(self, directory: Path, n_shards: int | None, *, actor_options=None, _token=None):
        if _token is not _OPEN_TOKEN:
            raise GalleryError("use ShardedGallery.open('ray://DIR?shards=N') to open a sharded gallery")
        self._ray = _ray()
        self.path = Path(directory)
        self._actor_options = dict(actor_options or {})
        self._lock = threading.RLock()
        self._closed = False
        self._last_counts: dict[int, dict] = {}
        self._code_totals: dict[str, dict] = {}  # {gallery: {position: codes}} of the last search
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GalleryError(f"{self.path}: cannot create the gallery directory ({exc.strerror or exc})") from None
        self._coord = Gallery.open(self.path / _COORDINATOR)
        stored = self._meta("shards")
        if stored is None:
            if n_shards is None:
                self._coord.close()
                raise GalleryError(f"shards: {self.path} holds no sharded gallery yet; open it with '?shards=N'")
            self._set_meta("shards", str(n_shards))
            stored = str(n_shards)
        elif n_shards is not None and n_shards != int(stored):
            self._coord.close()
            raise GalleryError(
                f"shards: {self.path} has {stored} shards, the URL says {n_shards} (use add_shard() to grow it)"
            )
        self.n_shards = int(stored)
        if not self._ray.is_initialized():
            self._ray.init()
        self._actors = [None] * self.n_shards
        try:
            for k in range(self.n_shards):
                self._actors[k] = self._start(k)
            self._get([a.ping.remote() for a in self._actors], timeout=ACTOR_START_TIMEOUT_S)
            if self._meta("rebalance") == "pending":
                self.rebalance(operator="biomatch")  # a crash interrupted the last one: finish it
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, url: str, *, actor_options: Mapping | None = None) -> "ShardedGallery":
        """Open (or create) the sharded gallery of ``"ray://DIR?shards=N"``.

        Parameters
        ----------
        url : str
            ``ray://DIR?shards=N``; ``?shards`` may be left out for an existing DIR
            and must match its shard count when given.
        actor_options : dict, optional
            Extra ``ray.remote`` options of the shard actors (e.g. ``{"num_cpus": 1}``
            or ``{"resources": {...}}`` to place them); default ``num_cpus=0``,
            ``scheduling_strategy="SPREAD"``.

        Returns
        -------
        ShardedGallery

        Raises
        ------
        GalleryError
            Bad URL, shard count, missing ``ray`` (names ``biomatch[distributed]``).
        """
        directory, shards = parse_url(url)
        if actor_options is not None and not isinstance(actor_options, Mapping):
            raise GalleryError(f"actor_options: expected a dict of ray.remote options, got {type(actor_options).__name__}")
        return cls(directory, shards, actor_options=actor_options, _token=_OPEN_TOKEN)

    # -- plumbing ------------------------------------------------------------
    def _meta(self, key: str):
        row = self._coord._con().execute("SELECT value FROM meta WHERE key = ?", (f"sharded.{key}",)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str | None, con=None) -> None:
        def put(c):
            if value is None:
                c.execute("DELETE FROM meta WHERE key = ?", (f"sharded.{key}",))
            else:
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (f"sharded.{key}", value))

        if con is not None:
            put(con)
        else:
            with self._coord._write() as c:
                put(c)

    def _start(self, k: int):
        opts = {"num_cpus": 0, "scheduling_strategy": "SPREAD", "max_restarts": 0, "max_task_retries": 0,
                "max_concurrency": ACTOR_CONCURRENCY}
        opts.update(self._actor_options)
        return self._ray.remote(_Shard).options(**opts).remote(str(self.path / f"shard-{k}.db"))

    def _get(self, refs, timeout=None):
        """ray.get that re-raises a shard's biomatch error as itself (not wrapped in a RayTaskError)."""
        try:
            return self._ray.get(refs, timeout=timeout)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BiomatchError):
                raise cause from None
            raise GalleryError(f"{self.path}: a shard failed ({type(cause or exc).__name__}: {cause or exc})") from None
        except self._ray.exceptions.RayError as exc:
            raise GalleryError(f"{self.path}: a shard is not available ({type(exc).__name__})") from None

    def _gather(self, calls: dict) -> tuple[dict, list]:
        """Run ``{shard: ObjectRef}``; returns ({shard: value} of those that answered, [shards that did not])."""
        ok, missing = {}, []
        for k, ref in calls.items():
            try:
                ok[k] = self._ray.get(ref)
            except self._ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, BiomatchError):
                    raise cause from None
                missing.append(k)
            except self._ray.exceptions.RayError:  # actor died, unavailable, worker crashed
                missing.append(k)
        return ok, missing

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError(f"{self.path}: the gallery is closed")

    def _owner(self, subject_id: str):
        self._check_open()
        return self._actors[shard_of(subject_id, self.n_shards)]

    def _audit(self, action: str, operator: str, fields: dict) -> int:
        with self._coord._write() as con:
            return _audit.append(con, action, operator, fields)["seq"]

    def __enter__(self) -> "ShardedGallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ShardedGallery({str(self.path)!r}, shards={self.n_shards})"

    def close(self) -> None:
        """Flush and close every shard's store, stop the actors, close the coordinator."""
        if self._closed:
            return
        self._closed = True
        live = [a for a in getattr(self, "_actors", []) if a is not None]
        for a in live:
            try:
                self._ray.get(a.close.remote(), timeout=60)
            except Exception:  # a dead shard: its committed data is on disk already
                pass
            try:
                self._ray.kill(a)
            except Exception:
                pass
        self._coord.close()

    def flush(self) -> None:
        """Save every shard's changed indexes."""
        self._check_open()
        self._get([a.call.remote("flush") for a in self._actors])

    # -- shard management -----------------------------------------------------
    def shard_health(self) -> list[bool]:
        """Whether each shard actor answers a ping (within 10 s)."""
        self._check_open()
        out = []
        for a in self._actors:
            try:
                self._ray.get(a.ping.remote(), timeout=10)
                out.append(True)
            except Exception:
                out.append(False)
        return out

    def restart_shard(self, k: int) -> None:
        """Start a new actor for shard ``k`` on its store on disk (after it died)."""
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < self.n_shards:
            raise GalleryError(f"k: expected a shard number 0..{self.n_shards - 1}, got {k!r}")
        with self._lock:
            try:
                self._ray.kill(self._actors[k])
            except Exception:
                pass
            self._actors[k] = self._start(int(k))
            self._get(self._actors[k].ping.remote(), timeout=ACTOR_START_TIMEOUT_S)

    def add_shard(self, *, operator: str | None = None) -> int:
        """Add one shard and move the subjects it now owns (see the module docstring); returns the number moved."""
        self._check_open()
        operator = _operator(operator)
        with self._lock:
            with self._coord._write() as con:
                self._set_meta("shards", str(self.n_shards + 1), con)
                self._set_meta("rebalance", "pending", con)
                _audit.append(con, "add_shard", operator, {"shards": self.n_shards + 1})
            self.n_shards += 1
            self._actors.append(self._start(self.n_shards - 1))
            self._get(self._actors[-1].ping.remote(), timeout=ACTOR_START_TIMEOUT_S)
            return self.rebalance(operator=operator)

    def rebalance(self, *, operator: str | None = None) -> int:
        """Move every subject not on its owning shard: copy, commit, then delete from the source.

        Idempotent (a subject already copied is only deleted from its source);
        returns the number of subjects moved.
        """
        self._check_open()
        operator = _operator(operator)
        moved = 0
        with self._lock:
            for k, a in enumerate(self._actors):
                keys = self._get(a.keys.remote())
                away = [(g, s) for g, s in keys if shard_of(s, self.n_shards) != k]
                for i in range(0, len(away), REBALANCE_BATCH):
                    part = away[i : i + REBALANCE_BATCH]
                    recs = self._get([a.export.remote(g, s) for g, s in part])
                    self._get([self._actors[shard_of(r["subject"], self.n_shards)].import_.remote(r, operator, k)
                               for r in recs])
                    # the copies committed: only now drop them from the source, in bulk (one index
                    # rewrite per call, not one per subject)
                    by_target: dict = defaultdict(list)
                    for g, s in part:
                        by_target[(g, shard_of(s, self.n_shards))].append(s)
                    for (g, dest), subjects in sorted(by_target.items()):
                        self._get(a.call.remote("delete_many", subjects, gallery=g, operator=operator,
                                                context={"rebalance_to_shard": dest}))
                    moved += len(part)
            with self._coord._write() as con:
                self._set_meta("rebalance", None, con)
                _audit.append(con, "rebalance", operator, {"shards": self.n_shards, "moved": moved})
        return moved

    def import_store(self, source, *, gallery: str = "default", source_gallery: str | None = None,
                     source_key=None, on_existing: str = "raise", operator: str | None = None,
                     transaction_id: str | None = None) -> dict:
        """Move a single-machine store's gallery onto the shards (a site outgrowing one machine).

        Every shard imports, in parallel, the subjects it owns with
        :meth:`Gallery.import_from`: templates, metadata, originals, and the
        FAISS codes and rescoring rows as the source holds them (nothing is
        re-extracted; at a million fingers a copy, not an enrolment). Each
        shard reads the source file itself, so it must be reachable at the same
        path from every shard's node (shared storage on a multi-node cluster).
        The source is not changed (its index may be brought up to date); the
        source's calibration and thresholds are not copied: set them on the
        sharded gallery (:meth:`set_calibration`, :meth:`set_threshold`).

        ``on_existing="skip"`` resumes an interrupted import (subjects already
        on their shard stay as they are). A shard that fails raises
        :class:`GalleryError` after the others finished; what they imported
        stays (run again with ``on_existing="skip"``). Returns ``{shard:
        subjects imported}``; the coordinator's audit record says the same.
        """
        import functools

        self._check_open()
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        _check_gallery_name(gallery)
        if not isinstance(source, (str, os.PathLike)) or not Path(source).is_file():
            raise GalleryError(f"source: {source!r} is not a biomatch store file")
        if self._meta("rebalance") == "pending":
            raise GalleryError(f"{self.path}: a rebalance is pending; finish it (rebalance()) before an import")
        path = str(Path(source).resolve())
        with self._lock:
            calls = {k: a.call.remote("import_from", path, gallery=gallery, source_gallery=source_gallery,
                                      select=functools.partial(_owned_by, k, self.n_shards), source_key=source_key,
                                      on_existing=on_existing, operator=operator, transaction_id=transaction_id)
                     for k, a in enumerate(self._actors)}
            done, failed, errors = {}, [], []
            for k, ref in calls.items():  # wait for every shard before reporting any failure
                try:
                    done[k] = self._get(ref)
                except BiomatchError as exc:
                    failed.append(k)
                    errors.append(f"shard {k}: {exc}")
            self._audit("import", operator, {
                "transaction_id": transaction_id, "gallery": gallery, "source": path,
                "source_gallery": source_gallery or gallery, "shards": {str(k): n for k, n in sorted(done.items())},
                "failed_shards": failed,
            })
        if failed:
            raise GalleryError(f"{self.path}: import of {path} failed on {len(failed)} shard(s): " + "; ".join(errors))
        return done

    # -- enrolment and changes ----------------------------------------------------
    def enroll(
        self,
        subject_id: str,
        fingers: Mapping,
        *,
        gallery: str = "default",
        operator: str | None = None,
        metadata: dict | None = None,
        transaction_id: str | None = None,
        originals: Mapping | None = None,
        keep_originals: bool = True,
        context: dict | None = None,
    ) -> int:
        """Enrol a new subject on its owning shard (parameters as :meth:`Gallery.enroll`).

        Returns
        -------
        int
            The sequence number of the coordinator's audit record (the shard's
            store holds its own record, committed with the enrolment).
        """
        subject_id, operator, transaction_id, _, checked, extra, ctx = _check_enrolment(
            subject_id, fingers, gallery, operator, transaction_id, metadata, originals, context)
        if keep_originals:
            for pos, (_, original) in checked.items():
                if original is not None:
                    if pos in extra:
                        raise GalleryError(f"originals[{pos}]: fingers[{pos}] is an image kept as the original already")
                    extra[pos] = original
        templates = {p: t for p, (t, _) in checked.items()}
        k = shard_of(subject_id, self.n_shards)
        shard_seq = self._get(self._owner(subject_id).call.remote(
            "enroll", subject_id, templates, gallery=gallery, operator=operator, metadata=metadata,
            transaction_id=transaction_id, originals=extra or None, keep_originals=False, context=ctx,
        ))
        return self._audit("enroll", operator, {
            "transaction_id": transaction_id, "gallery": gallery, "subject": subject_id,
            "fingers": {str(p): _template_hash(templates[p]) for p in sorted(templates)},
            "context": ctx, "shard": k, "shard_seq": shard_seq, "software": _audit.software(),
        })

    def enroll_many(
        self,
        subjects: Iterable,
        *,
        gallery: str = "default",
        operator: str | None = None,
        transaction_id: str | None = None,
        progress=None,
        batch_subjects: int = 2000,
    ) -> int:
        """Enrol many subjects (as :meth:`Gallery.enroll_many`), routed to their shards in parallel.

        Subjects are validated here, grouped by shard ``batch_subjects`` at a
        time and handed to every shard's ``enroll_many`` at once. A bad subject
        raises before its group is sent; groups sent earlier stay enrolled.
        Returns the number of subjects enrolled.
        """
        _check_gallery_name(gallery)
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        if isinstance(batch_subjects, bool) or not isinstance(batch_subjects, int) or batch_subjects < 1:
            raise GalleryError(f"batch_subjects: expected a positive integer, got {batch_subjects!r}")
        total = 0
        groups: dict[int, list] = defaultdict(list)
        pending = 0

        def send():
            nonlocal total
            refs = [self._actors[k].call.remote("enroll_many", items, gallery=gallery, operator=operator,
                                                transaction_id=transaction_id) for k, items in groups.items()]
            n = sum(self._get(refs))
            self._audit("enroll_many", operator, {
                "transaction_id": transaction_id, "gallery": gallery, "subjects": n,
                "shards": {str(k): len(v) for k, v in sorted(groups.items())}, "software": _audit.software(),
            })
            total += n
            if progress is not None:
                progress(n)
            groups.clear()

        self._check_open()
        for item in subjects:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise GalleryError("subjects: each item must be (subject_id, fingers) or (subject_id, fingers, metadata)")
            sid = _check_subject(item[0])
            checked = _check_fingers(item[1], f"fingers of {sid!r}")
            row = (sid, {p: t for p, (t, _) in checked.items()}) + (tuple(item[2:3]))
            groups[shard_of(sid, self.n_shards)].append(row)
            pending += 1
            if pending >= batch_subjects:
                send()
                pending = 0
        if groups:
            send()
        return total

    def update(
        self,
        subject_id: str,
        fingers: Mapping | None = None,
        *,
        gallery: str = "default",
        operator: str | None = None,
        metadata: dict | None = None,
        remove_positions: Iterable[int] = (),
        transaction_id: str | None = None,
    ) -> int:
        """Update a subject on its owning shard (as :meth:`Gallery.update`); returns the coordinator's audit seq."""
        subject_id = _check_subject(subject_id)
        _check_gallery_name(gallery)
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        templates = {p: t for p, (t, _) in _check_fingers(fingers).items()} if fingers is not None else None
        removing = list(remove_positions)
        shard_seq = self._get(self._owner(subject_id).call.remote(
            "update", subject_id, templates, gallery=gallery, operator=operator, metadata=metadata,
            remove_positions=removing, transaction_id=transaction_id,
        ))
        return self._audit("update", operator, {
            "transaction_id": transaction_id, "gallery": gallery, "subject": subject_id,
            "fingers": {str(p): _template_hash(t) for p, t in sorted((templates or {}).items())},
            "removed_positions": sorted(int(p) for p in removing), "metadata_replaced": metadata is not None,
            "shard": shard_of(subject_id, self.n_shards), "shard_seq": shard_seq, "software": _audit.software(),
        })

    def delete(self, subject_id: str, *, gallery: str = "default", operator: str | None = None,
               transaction_id: str | None = None, context: dict | None = None) -> int:
        """Delete a subject from its owning shard for good (as :meth:`Gallery.delete`); returns the coordinator's audit seq."""
        subject_id = _check_subject(subject_id)
        _check_gallery_name(gallery)
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        ctx = _check_context(context)
        shard_seq = self._get(self._owner(subject_id).call.remote(
            "delete", subject_id, gallery=gallery, operator=operator, transaction_id=transaction_id, context=ctx,
        ))
        return self._audit("delete", operator, {
            "transaction_id": transaction_id, "gallery": gallery, "subject": subject_id, "context": ctx,
            "shard": shard_of(subject_id, self.n_shards), "shard_seq": shard_seq,
        })

    # -- reading ---------------------------------------------------------------------
    def get(self, subject_id: str, *, gallery: str = "default") -> SubjectRecord:
        """The enrolled fingers and metadata of one subject, from its owning shard."""
        subject_id = _check_subject(subject_id)
        _check_gallery_name(gallery)
        return self._get(self._owner(subject_id).call.remote("get", subject_id, gallery=gallery))

    def galleries(self) -> list[str]:
        """Names of the galleries on any shard."""
        self._check_open()
        return sorted({g for c in self._get([a.counts.remote() for a in self._actors]) for g in c})

    def subjects(self, *, gallery: str = "default") -> list[str]:
        """Subject ids of a gallery over every shard, sorted (GalleryError when no shard has it)."""
        _check_gallery_name(gallery)
        self._check_open()
        counts = self._get([a.counts.remote() for a in self._actors])
        holders = [a for a, c in zip(self._actors, counts) if gallery in c]
        if not holders:
            raise GalleryError(f"gallery: no gallery named {gallery!r} in {self.path}")
        return sorted(s for part in self._get([a.call.remote("subjects", gallery=gallery) for a in holders]) for s in part)

    def stats(self) -> dict:
        """Totals per gallery over the shards, each shard's own :meth:`Gallery.stats`, audit length."""
        self._check_open()
        per = self._get([a.call.remote("stats") for a in self._actors])
        total: dict = {}
        for st in per:
            for name, g in st["galleries"].items():
                t = total.setdefault(name, {"subjects": 0, "fingers": 0, "template_bytes": 0})
                for key in t:
                    t[key] += g[key]
        return {
            "store": str(self.path), "shards": self.n_shards, "galleries": total,
            "shard_stats": per, "audit_records": _audit.head(self._coord._con())[0],
            "store_bytes": sum(st["store_bytes"] for st in per),
            "calibration": self._coord.stats()["calibration"],
        }

    # -- calibration and thresholds (held by the coordinator) -----------------------------
    def set_calibration(self, calibration, *, operator: str | None = None, transaction_id: str | None = None) -> int:
        """Store the calibration every search uses (coordinator, audited)."""
        return self._coord.set_calibration(calibration, operator=operator, transaction_id=transaction_id)

    def calibration(self):
        """The calibration searches use (the coordinator's, else biomatch's default, else None)."""
        return self._coord.calibration()

    def set_threshold(self, value, *, gallery: str | None = None, operator: str | None = None,
                      transaction_id: str | None = None) -> int:
        """Set the decision threshold (as :meth:`Gallery.set_threshold`), in the coordinator."""
        return self._coord.set_threshold(value, gallery=gallery, operator=operator, transaction_id=transaction_id)

    def threshold(self, gallery: str | None = None) -> float | None:
        """The configured threshold of a gallery (else the store-wide one), or None."""
        return self._coord.threshold(gallery)

    # -- search ----------------------------------------------------------------------------
    def search(
        self,
        probe_fingers: Mapping,
        *,
        galleries: Iterable[str] | None = None,
        max_candidates: int = 10,
        threshold=None,
        operator: str | None = None,
        transaction_id: str | None = None,
        context: dict | None = None,
        on_missing: str = "report",
    ) -> SearchResult:
        """Search every shard and merge (parameters and ranking as :meth:`Gallery.search`).

        Parameters
        ----------
        on_missing : {"report", "raise"}
            A shard that does not answer is listed in the result's
            ``missing_shards`` (``"report"``), or makes the search raise a
            :class:`GalleryError` (``"raise"``); either way the audit record names it.

        Returns
        -------
        SearchResult
            A list of Candidate, best first, with ``.complete`` and ``.missing_shards``.
        """
        probes = {p: t for p, (t, _) in _check_fingers(probe_fingers, "probe_fingers").items()}
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        ctx = _check_context(context)
        max_candidates = ranking.check_max_candidates(max_candidates)
        if on_missing not in _ON_MISSING:
            raise GalleryError(f"on_missing: expected one of {_ON_MISSING}, got {on_missing!r}")
        requested = check_galleries(galleries)
        self._check_open()
        answers, missing = self._step_neighbours(probes, requested)
        for k, ans in answers.items():
            self._last_counts[k] = ans["counts"]
        names = sorted({g for ans in answers.values() for g in ans["counts"]}) if requested is None else requested
        if requested is not None and not missing:
            for g in requested:
                if not any(g in ans["counts"] for ans in answers.values()):
                    raise GalleryError(f"gallery: no gallery named {g!r} in {self.path}")
        cal_entry = self._coord._calibration_entry()
        cal = cal_entry[1]
        thr = ranking.search_threshold(threshold, [self.threshold(g) for g in names], cal)
        n_subjects = sum(n for ans in answers.values() for g, n in ans["counts"].items() if g in names)
        lost = [self._last_counts.get(k) for k in missing]
        missing_subjects = None if any(c is None for c in lost) else sum(
            n for c in lost for g, n in c.items() if requested is None or g in names)
        plan = self._plan(answers, names, probes)
        rescored, late = self._gather({k: self._actors[k].rescore.remote(probes, w) for k, w in plan.items()})
        missing = sorted(set(missing) | set(late))
        owners, merged = self._merge_rescored(rescored)
        ranked = ranking.rank(merged, cal, thr, max_candidates)
        # minutia pairs of the final candidates only, from their owning shards
        want: dict[int, list] = defaultdict(list)
        for r in ranked:
            want[owners[(r.gallery, r.subject)]] += [(pp, fid) for pp, _, _, fid in r.per]
        got, late = self._gather({k: self._actors[k].pairs.remote(probes, w) for k, w in want.items()})
        missing = sorted(set(missing) | set(late))
        shard_pairs = {k: iter(v) for k, v in got.items()}
        pairs = []
        for r in ranked:
            k = owners[(r.gallery, r.subject)]
            pairs.append([next(shard_pairs[k]) if k in shard_pairs else () for _ in r.per])
        candidates = ranking.candidates(ranked, n_subjects, pairs)
        decision = ranking.decision(thr, candidates)
        if missing and on_missing == "raise":
            decision = "refused: shards missing"
        self._audit("search", operator, ranking.audit_payload(
            transaction_id=transaction_id, probe_hashes={p: _template_hash(t) for p, t in probes.items()},
            galleries=names, n_subjects=n_subjects, max_candidates=max_candidates, thr=thr, decision=decision,
            context=ctx, software=_audit.software(), calibration=self._coord._calibration_label(cal_entry),
            found=[] if decision.startswith("refused") else candidates,
            shards=self.n_shards, missing_shards=missing, missing_subjects=missing_subjects))
        if missing and on_missing == "raise":
            raise GalleryError(
                f"{self.path}: shard(s) {missing} did not answer; {missing_subjects if missing_subjects is not None else 'an unknown number of'} "
                "subjects were not searched"
            )
        return SearchResult(candidates, missing_shards=missing, missing_subjects=missing_subjects,
                            searched_subjects=n_subjects)

    def _step_neighbours(self, probes: dict, requested):
        """Step 1 on every shard, with the gallery's index sizes (codes per position, all shards
        together) deciding exhaustive or IVF search as on one store (:func:`biomatch.index.nprobe_for`).

        The sizes of the previous search are used, and the step is run again in the rare case
        that the sizes the shards report now call for other lists (a partition crossed
        FLAT_MAX_CODES in between).
        """
        from .index import nprobe_for

        def totals_of(answers):
            out: dict = defaultdict(lambda: defaultdict(int))
            for ans in answers.values():
                for g, sizes in ans.get("sizes", {}).items():
                    for pos, n in sizes.items():
                        out[g][pos] += int(n)
            return {g: dict(v) for g, v in out.items()}

        def lists(totals):
            return {g: {pos: nprobe_for(n) for pos, n in sizes.items()} for g, sizes in totals.items()}

        def same_lists(now, used):
            return all(used.get(g, {}).get(pos) == n for g, sizes in lists(now).items() for pos, n in sizes.items())

        used = lists(self._code_totals)
        answers, missing = self._gather({k: a.neighbours.remote(probes, requested, used) for k, a in enumerate(self._actors)})
        now = totals_of(answers)
        if not same_lists(now, used):
            used.update(lists(now))
            answers, missing = self._gather({k: a.neighbours.remote(probes, requested, used)
                                             for k, a in enumerate(self._actors)})
            now = totals_of(answers)
        self._code_totals.update(now)
        return answers, missing

    def _plan(self, answers: dict, names: list, probes: dict) -> dict:
        """Which subjects each shard rescores: ``{shard: {gallery: [subject ids] or None (all)}}``.

        Exactly the single-machine rule (:meth:`Gallery._search_gallery`): a
        gallery of at most ``EXHAUSTIVE_MAX_FINGERS`` fingers in all is rescored
        whole; a larger one rescores the subjects :func:`_shortlist_subjects`
        picks from the shards' k-NN lists merged per probe cylinder
        (:func:`_merge_neighbours`), each on the shard holding it.
        """
        plan: dict[int, dict] = defaultdict(dict)
        for g in names:
            holders = {k: ans for k, ans in answers.items() if ans["fingers"].get(g)}
            if not holders:
                continue
            if sum(ans["fingers"][g] for ans in holders.values()) <= _gallery_search.EXHAUSTIVE_MAX_FINGERS:
                for k in holders:
                    plan[k][g] = None
                continue
            # mid-rebalance a subject can sit on two shards: its owner's copy votes (else the lowest shard's)
            seen: dict[str, set] = defaultdict(set)
            for k, ans in holders.items():
                for nb in ans["neighbours"][g].values():
                    for name in nb.names:
                        seen[name].add(k)
            keeper = {}
            for name, ks in seen.items():
                if len(ks) == 1:  # the usual case: no hash needed
                    keeper[name] = next(iter(ks))
                    continue
                owner = shard_of(name, self.n_shards)
                keeper[name] = owner if owner in ks else min(ks)
            per_probe = {}
            for pos in probes:
                parts = []
                for k, ans in holders.items():
                    nb = ans["neighbours"][g].get(pos)
                    if nb is None:
                        continue
                    mine = np.array([keeper[n] == k for n in nb.names], dtype=bool)
                    if not mine.all():
                        keep = mine[nb.subject] if len(nb.subject) else np.zeros(0, bool)
                        nb = nb._replace(**{f: getattr(nb, f)[keep] for f in ("rows", "partition", "dist", "abin", "subject")})
                    parts.append(nb)
                if parts:
                    per_probe[pos] = _merge_neighbours(parts)
            for subject in _shortlist_subjects(per_probe, len(probes)):
                plan[keeper[subject]].setdefault(g, []).append(subject)
        return dict(plan)

    def _merge_rescored(self, rescored: dict) -> tuple[dict, list]:
        """The shards' rescored subjects as one list for :func:`biomatch.search.ranking.rank`,
        and the shard each came from: ({(gallery, subject): shard}, [Rescored]).

        Mid-rebalance a subject can sit on two shards: its owner's copy is kept.
        """
        merged: dict = {}
        for k, rows_k in rescored.items():
            for gname, subject, per in rows_k:
                key = (gname, subject)
                if key not in merged or shard_of(subject, self.n_shards) == k:
                    merged[key] = (k, per)
        owners = {key: k for key, (k, _) in merged.items()}
        return owners, [ranking.Rescored(g, subject, per) for (g, subject), (_, per) in merged.items()]

    # -- audit ------------------------------------------------------------------------------
    def verify_audit(self) -> int:
        """Re-check the coordinator's audit chain and every shard's; returns the records verified in all."""
        self._check_open()
        return self._coord.verify_audit() + sum(self._get([a.call.remote("verify_audit") for a in self._actors]))

    def audit_records(self, *, since: int = 1, limit: int | None = None) -> list[dict]:
        """The coordinator's audit records (every request), unverified."""
        return self._coord.audit_records(since=since, limit=limit)

    def export_audit(self, out) -> int:
        """Write the coordinator's audit log as JSON lines; returns the count."""
        return self._coord.export_audit(out)
