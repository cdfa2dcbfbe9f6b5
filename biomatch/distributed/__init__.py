"""Galleries sharded over a Ray cluster: scatter-gather search, merge top-L.

``bm.Gallery.open("ray://DIR?shards=N")`` opens a :class:`ShardedGallery`
with the same public API as :class:`biomatch.gallery.Gallery`. It needs the
optional dependency ``biomatch[distributed]`` (``ray``) and uses the cluster
``ray.init`` connected to (a local one is started when none is).

Layout
------
The package: :mod:`~biomatch.distributed.placement` (``shard_of``, the URL),
:mod:`~biomatch.distributed.shard` (the actor), :mod:`~biomatch.distributed.sharded`
(:class:`ShardedGallery`) and :mod:`~biomatch.distributed.searching` (scatter-gather
search). Shards and the coordinator are reached through the public and shard API of
:class:`~biomatch.gallery.Gallery` only (:mod:`biomatch.gallery.shard`).

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
A search runs the three steps of a store's search apart
(:meth:`Gallery.search_neighbours`, :meth:`Gallery.search_rescore`, :meth:`Gallery.search_pairs`):

1. every shard returns, per probe finger and per probe cylinder, the FAISS
   k-NN of that cylinder in each position partition of its index
   *ties complete* (every code as near as the
   k-th) and keyed by subject id instead of the shard's row ids, with its
   subject and finger counts;
2. the coordinator merges them into the global k nearest of every
   (cylinder, partition) under the one explicit tie rule (distance, then
   subject id, then the gallery minutia's direction bin;
   :func:`biomatch.search.shortlist.merge_neighbours`), which the single store
   applies to its own index too, and computes the votes and the subject
   shortlist with the single store's function
   (:func:`biomatch.search.shortlist.shortlist_subjects`; ties by subject id);
   a gallery of at most ``SearchParams.exhaustive_max_fingers``
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
most ``SearchParams.flat_max_codes`` codes, the
``SearchParams.ivf_nprobe`` nearest centroids beyond
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
the owning shard copies it from the source shard's store with
:meth:`Gallery.import_from` (the one way a subject moves between stores:
committed in batches, with an ``import`` audit record naming the source),
then the source deletes it (:meth:`Gallery.delete_many`, in bulk). A crash
at any point leaves each subject on its source, on both (the copy committed;
searches keep one, the owner's) or moved; the coordinator marks the
rebalance pending and :meth:`open` finishes it (a copy already made is
skipped). Moved subjects keep their templates, metadata, created and
updated times, originals, FAISS codes and rescoring rows, so they score
exactly as before the move.

Migrating a single-machine store: :meth:`ShardedGallery.import_store` has
every shard copy the subjects it owns, with their FAISS codes and rescoring
rows (:meth:`Gallery.import_from`), without re-extraction.

Known differences from a single store: :meth:`ShardedGallery.update` with
finger *images* keeps the extracted templates but not the image bytes;
:meth:`ShardedGallery.enroll` keeps image bytes as originals and refuses an
``originals`` entry at the position of an image given in ``fingers``.
"""

from __future__ import annotations

from ..search.results import SearchResult
from .placement import MAX_SHARDS, parse_url, shard_of
from .sharded import ShardedGallery

__all__ = ["ShardedGallery", "SearchResult", "shard_of", "parse_url", "MAX_SHARDS", "open_url"]


def open_url(url: str, *, key=None, params=None) -> ShardedGallery:
    """What ``Gallery.open("ray://DIR?shards=N", key=..., params=...)`` calls (see :data:`biomatch.gallery.URL_OPENERS`)."""
    return ShardedGallery.open(url, key=key, params=params)
