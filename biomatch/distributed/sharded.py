"""ShardedGallery: a gallery store sharded over Ray actors (see :mod:`biomatch.distributed`)."""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping

from .. import audit as _audit
from .._validate import check_int
from ..errors import BiomatchError, GalleryError
from ..gallery import Gallery, SubjectRecord
from ..search.params import check_params
from ..gallery.checks import (
    check_context,
    check_enrolment,
    check_fingers,
    check_gallery_name,
    check_operator,
    check_position,
    check_subject,
    check_transaction_id,
    template_hash,
)
from ..gallery.impressions import audit_impressions, check_impression_number, check_impressions, check_sources
from .placement import owned_by, parse_url, shard_of
from .searching import ShardedSearchMixin
from .shard import Shard, ray_module

#: Concurrent method calls one shard actor serves (the Gallery it holds is thread-safe).
ACTOR_CONCURRENCY = 4
#: Subjects copied from one shard to another per call while rebalancing.
REBALANCE_BATCH = 200
#: Seconds to wait for a shard actor to answer its first ping.
ACTOR_START_TIMEOUT_S = 120.0

_COORDINATOR = "coordinator.db"
# the coordinator's settings (Gallery.setting / Gallery.record)
_SHARDS = "sharded.shards"
_REBALANCE = "sharded.rebalance"


_OPEN_TOKEN = object()


class ShardedGallery(ShardedSearchMixin):
    """A gallery store sharded over Ray actors (see the module docstring).

    Open with :meth:`open` or ``bm.Gallery.open("ray://DIR?shards=N")``; a
    context manager; thread-safe for searches.
    """

    def __init__(self, directory: Path, n_shards: int | None, *, key=None, params=None, actor_options=None,
                 _token=None):
        if _token is not _OPEN_TOKEN:
            raise GalleryError("use ShardedGallery.open('ray://DIR?shards=N') to open a sharded gallery")
        self._ray = ray_module()
        self._key = key  # each shard's store (and the coordinator) opens with it
        self.params = check_params(params)  # every shard searches with them; the coordinator plans with them
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
        self._coord = Gallery.open(self.path / _COORDINATOR, key=key, params=self.params)
        stored = self._coord.setting(_SHARDS)
        if stored is None:
            if n_shards is None:
                self._coord.close()
                raise GalleryError(f"shards: {self.path} holds no sharded gallery yet; open it with '?shards=N'")
            self._coord.record(None, settings={_SHARDS: str(n_shards)})
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
            if self._coord.setting(_REBALANCE) == "pending":
                self.rebalance(operator="biomatch")  # a crash interrupted the last one: finish it
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, url: str, *, key=None, params=None, actor_options: Mapping | None = None) -> "ShardedGallery":
        """Open (or create) the sharded gallery of ``"ray://DIR?shards=N"``.

        Parameters
        ----------
        url : str
            ``ray://DIR?shards=N``; ``?shards`` may be left out for an existing DIR
            and must match its shard count when given.
        key : bytes, str or list of them, optional
            The stores' key (as :meth:`Gallery.open`): the coordinator and every
            shard open with it (default: ``BIOMATCH_STORE_KEY`` where each opens).
        params : SearchParams, optional
            How the sharded gallery searches (as :meth:`Gallery.open`): the
            coordinator plans with them and every shard opens with them.
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
        return cls(directory, shards, key=key, params=params, actor_options=actor_options, _token=_OPEN_TOKEN)

    # -- plumbing ------------------------------------------------------------
    def _start(self, k: int):
        opts = {"num_cpus": 0, "scheduling_strategy": "SPREAD", "max_restarts": 0, "max_task_retries": 0,
                "max_concurrency": ACTOR_CONCURRENCY}
        opts.update(self._actor_options)
        return self._ray.remote(Shard).options(**opts).remote(str(self.path / f"shard-{k}.db"), self._key, self.params)

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
        return self._coord.record(action, operator, fields)

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
        k = check_int(k, "k", 0, self.n_shards - 1, error=GalleryError, kind="a shard number")
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
        operator = check_operator(operator)
        with self._lock:
            self._coord.record("add_shard", operator, {"shards": self.n_shards + 1},
                               settings={_SHARDS: str(self.n_shards + 1), _REBALANCE: "pending"})
            self.n_shards += 1
            self._actors.append(self._start(self.n_shards - 1))
            self._get(self._actors[-1].ping.remote(), timeout=ACTOR_START_TIMEOUT_S)
            return self.rebalance(operator=operator)

    def rebalance(self, *, operator: str | None = None) -> int:
        """Move every subject not on its owning shard: copy, commit, then delete from the source.

        The copy is :meth:`Gallery.import_from` run by the owning shard on the
        source shard's store (templates, metadata, created / updated times,
        originals, FAISS codes and rescoring rows as they are; nothing
        re-encoded), the path :meth:`import_store` takes too. Idempotent (a
        subject already copied is skipped, then deleted from its source);
        returns the number of subjects moved.
        """
        self._check_open()
        operator = check_operator(operator)
        moved = 0
        with self._lock:
            for k, a in enumerate(self._actors):
                away: dict = defaultdict(list)  # (gallery, owning shard) -> subjects
                for g, s in self._get(a.call.remote("subject_keys")):
                    dest = shard_of(s, self.n_shards)
                    if dest != k:
                        away[(g, dest)].append(s)
                source = str(self.path / f"shard-{k}.db")
                for (g, dest), subjects in sorted(away.items()):
                    for i in range(0, len(subjects), REBALANCE_BATCH):
                        part = sorted(subjects[i : i + REBALANCE_BATCH])
                        self._get(self._actors[dest].call.remote(
                            "import_from", source, gallery=g, select=frozenset(part).__contains__,
                            source_key=self._key, on_existing="skip", operator=operator))
                        # the copies committed: only now drop them from the source, in bulk (one index
                        # rewrite per call, not one per subject)
                        self._get(a.call.remote("delete_many", part, gallery=g, operator=operator,
                                                context={"rebalance_to_shard": dest}))
                        moved += len(part)
            self._coord.record("rebalance", operator, {"shards": self.n_shards, "moved": moved},
                               settings={_REBALANCE: None})
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
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        check_gallery_name(gallery)
        if not isinstance(source, (str, os.PathLike)) or not Path(source).is_file():
            raise GalleryError(f"source: {source!r} is not a biomatch store file")
        if self._coord.setting(_REBALANCE) == "pending":
            raise GalleryError(f"{self.path}: a rebalance is pending; finish it (rebalance()) before an import")
        path = str(Path(source).resolve())
        with self._lock:
            calls = {k: a.call.remote("import_from", path, gallery=gallery, source_gallery=source_gallery,
                                      select=functools.partial(owned_by, k, self.n_shards), source_key=source_key,
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
        impressions=None,
        sources: dict | None = None,
    ) -> int:
        """Enrol a new subject on its owning shard (parameters as :meth:`Gallery.enroll`, extra impressions included).

        Returns
        -------
        int
            The sequence number of the coordinator's audit record (the shard's
            store holds its own record, committed with the enrolment).
        """
        subject_id, operator, transaction_id, _, checked, extra, ctx = check_enrolment(
            subject_id, fingers, gallery, operator, transaction_id, metadata, originals, context)
        if keep_originals:
            for pos, (_, original) in checked.items():
                if original is not None:
                    if pos in extra:
                        raise GalleryError(f"originals[{pos}]: fingers[{pos}] is an image kept as the original already")
                    extra[pos] = original
        templates = {p: t for p, (t, _) in checked.items()}
        check_sources(sources, checked)
        imps = check_impressions(impressions, set(checked))
        k = shard_of(subject_id, self.n_shards)
        shard_seq = self._get(self._owner(subject_id).call.remote(
            "enroll", subject_id, templates, gallery=gallery, operator=operator, metadata=metadata,
            transaction_id=transaction_id, originals=extra or None, keep_originals=False, context=ctx,
            impressions=[(p, n, t, src) for (p, n), (t, src) in sorted(imps.items())] or None, sources=sources,
        ))
        return self._audit("enroll", operator, {
            "transaction_id": transaction_id, "gallery": gallery, "subject": subject_id,
            "fingers": {str(p): template_hash(templates[p]) for p in sorted(templates)},
            **({"impressions": audit_impressions({k: {"sha256": template_hash(t)} for k, (t, _) in imps.items()}, imps)}
               if imps else {}),
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
        check_gallery_name(gallery)
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        batch_subjects = check_int(batch_subjects, "batch_subjects", 1, error=GalleryError)
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
            sid = check_subject(item[0])
            checked = check_fingers(item[1], f"fingers of {sid!r}")
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
        impressions=None,
        keep_impressions: bool = True,
        sources: dict | None = None,
    ) -> int:
        """Update a subject on its owning shard (as :meth:`Gallery.update`); returns the coordinator's audit seq."""
        subject_id = check_subject(subject_id)
        check_gallery_name(gallery)
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        templates = {p: t for p, (t, _) in check_fingers(fingers).items()} if fingers is not None else None
        removing = list(remove_positions)
        imps = check_impressions(impressions, None)  # against the subject's fingers: on the shard
        shard_seq = self._get(self._owner(subject_id).call.remote(
            "update", subject_id, templates, gallery=gallery, operator=operator, metadata=metadata,
            remove_positions=removing, transaction_id=transaction_id,
            impressions=[(p, n, t, src) for (p, n), (t, src) in sorted(imps.items())] or None,
            keep_impressions=keep_impressions, sources=sources,
        ))
        return self._audit("update", operator, {
            "transaction_id": transaction_id, "gallery": gallery, "subject": subject_id,
            "fingers": {str(p): template_hash(t) for p, t in sorted((templates or {}).items())},
            "removed_positions": sorted(int(p) for p in removing), "metadata_replaced": metadata is not None,
            "shard": shard_of(subject_id, self.n_shards), "shard_seq": shard_seq, "software": _audit.software(),
        })

    def remove_impression(self, subject_id: str, position: int, impression: int, *, gallery: str = "default",
                          operator: str | None = None, transaction_id: str | None = None) -> int:
        """Remove one extra impression on the subject's owning shard (as :meth:`Gallery.remove_impression`);
        returns the coordinator's audit seq."""
        subject_id = check_subject(subject_id)
        check_gallery_name(gallery)
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        pos = check_position(position, "position")
        number = check_impression_number(impression, pos)
        shard_seq = self._get(self._owner(subject_id).call.remote(
            "remove_impression", subject_id, pos, number, gallery=gallery, operator=operator,
            transaction_id=transaction_id,
        ))
        return self._audit("update", operator, {
            "transaction_id": transaction_id, "gallery": gallery, "subject": subject_id, "fingers": {},
            "removed_positions": [], "impressions_dropped": [f"{pos}.{number}"], "metadata_replaced": False,
            "shard": shard_of(subject_id, self.n_shards), "shard_seq": shard_seq, "software": _audit.software(),
        })

    def delete(self, subject_id: str, *, gallery: str = "default", operator: str | None = None,
               transaction_id: str | None = None, context: dict | None = None) -> int:
        """Delete a subject from its owning shard for good (as :meth:`Gallery.delete`); returns the coordinator's audit seq."""
        subject_id = check_subject(subject_id)
        check_gallery_name(gallery)
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        ctx = check_context(context)
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
        subject_id = check_subject(subject_id)
        check_gallery_name(gallery)
        return self._get(self._owner(subject_id).call.remote("get", subject_id, gallery=gallery))

    def galleries(self) -> list[str]:
        """Names of the galleries on any shard."""
        self._check_open()
        return sorted({g for c in self._get([a.call.remote("subject_counts") for a in self._actors]) for g in c})

    def subjects(self, *, gallery: str = "default") -> list[str]:
        """Subject ids of a gallery over every shard, sorted (GalleryError when no shard has it)."""
        check_gallery_name(gallery)
        self._check_open()
        counts = self._get([a.call.remote("subject_counts") for a in self._actors])
        holders = [a for a, c in zip(self._actors, counts) if gallery in c]
        if not holders:
            raise GalleryError(f"gallery: no gallery named {gallery!r} in {self.path}")
        return sorted(s for part in self._get([a.call.remote("subjects", gallery=gallery) for a in holders]) for s in part)

    def stats(self) -> dict:
        """Totals per gallery over the shards, each shard's own :meth:`Gallery.stats`, audit length."""
        self._check_open()
        per = self._get([a.call.remote("stats") for a in self._actors])
        coord = self._coord.stats()
        total: dict = {}
        for st in per:
            for name, g in st["galleries"].items():
                t = total.setdefault(name, {"subjects": 0, "fingers": 0, "template_bytes": 0})
                for key in t:
                    t[key] += g[key]
        return {
            "store": str(self.path), "shards": self.n_shards, "galleries": total,
            "shard_stats": per, "audit_records": coord["audit_records"],
            "store_bytes": sum(st["store_bytes"] for st in per),
            "calibration": coord["calibration"],
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
