"""Moving data in and out of a store: import from another store, check, backup, restore."""

from __future__ import annotations

import collections
import hashlib
import os
import sqlite3
from pathlib import Path


from .. import audit as _audit
from .. import encryption as _enc
from ..errors import AuditError, BiomatchError, GalleryError
from ..template import Template
from .checks import check_batch, check_gallery_name, check_operator, check_transaction_id
from .migrate import MAX_IMPRESSION, migratable
from .store import SCHEMA_VERSION, STORE_ERRORS
#: Subjects per transaction of :meth:`Gallery.import_from` and :meth:`Gallery.delete_many`
#: (each batch is one SQL ``IN`` list: at most 999 parameters in older SQLite builds).
IMPORT_BATCH = 500


def create_private(path: Path, field_name: str) -> None:
    """Create an empty file readable by its owner only; GalleryError when it exists or cannot be made."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise GalleryError(f"{field_name}: {path} exists") from None
    except OSError as exc:
        raise GalleryError(f"{field_name}: cannot create {path} ({exc.strerror or exc})") from None


def verify_copy(con, path: Path, *, older: bool = False) -> int:
    """Integrity, schema version and audit chain of a store copy; returns its audit record count.
    ``older``: a schema this build migrates (:mod:`biomatch.gallery.migrate`) is accepted too."""
    try:
        quick = con.execute("PRAGMA quick_check").fetchone()[0]
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except STORE_ERRORS as exc:
        raise GalleryError(f"{path}: not a usable biomatch store ({exc})") from None
    if quick != "ok":
        raise GalleryError(f"{path}: integrity check failed ({quick})")
    if row is None or (row[0] != str(SCHEMA_VERSION) and not (older and migratable(row[0], SCHEMA_VERSION))):
        raise GalleryError(f"{path}: not a biomatch store of schema version {SCHEMA_VERSION}"
                           + (" (or an older one this build migrates)" if older else ""))
    try:
        return _audit.verify(con)
    except AuditError as exc:
        raise GalleryError(f"{path}: {exc}") from None


#: Times :meth:`Gallery.check` runs its comparisons before it reports the store busy (another process
#: enrolling or deleting during every attempt) instead of a fault that is only the other writer's change.
CHECK_ATTEMPTS = 3


class TransferMixin:
    """Import from another store, integrity check, backup and restore (part of :class:`Gallery`)."""

    def import_from(self, source, *, gallery: str = "default", source_gallery: str | None = None, select=None,
                    source_key=None, on_existing: str = "raise", operator: str | None = None,
                    transaction_id: str | None = None, progress=None, batch: int = IMPORT_BATCH) -> int:
        """Copy subjects of another store's gallery into ``gallery`` of this store, derived data included.

        For moving a single-machine store onto the shards of a sharded gallery
        (each shard imports the subjects it owns:
        :meth:`biomatch.distributed.ShardedGallery.import_store`) and for
        merging stores. Templates, metadata (and the subject's created / updated
        times) and originals are copied, opened with the source's key and sealed
        with this store's; the index codes come from the source's index (each
        in the IVF list it sits in there: every index shares the centroids) and
        the rescoring rows from its feature file, so nothing is re-extracted or
        re-encoded (about 1.7 ms a finger saved). Each template's SHA-256 is
        checked against the source's record of it.

        The source is read in one snapshot (its index is brought up to date
        first); ``batch`` subjects are committed per transaction, each with an
        ``import`` audit record naming the source. Every subject is checked
        not to be enrolled here already before anything is written; a failure
        mid-way keeps the batches committed (import the rest by ``select``).

        Parameters
        ----------
        source : Gallery or path
            The store to copy from (opened read-only in effect: nothing of it changes
            except that its index file may be brought up to date).
        gallery : str
            Gallery to import into (created when absent).
        source_gallery : str, optional
            Gallery of the source to copy (default: ``gallery``).
        select : callable(str) -> bool, optional
            Subjects to copy (default: all).
        source_key : optional
            Key of an encrypted source store (when ``source`` is a path).
        on_existing : {"raise", "skip"}
            A subject of the source already enrolled here: refuse the import
            before writing anything (default), or leave it as it is here and
            copy the others ("skip": resumes an interrupted import).
        progress : callable(int), optional
            Called with the number of subjects committed after each batch.

        Returns
        -------
        int
            Subjects imported.
        """
        check_gallery_name(gallery)
        src_name = check_gallery_name(gallery if source_gallery is None else source_gallery, "source_gallery")
        operator = check_operator(operator)
        transaction_id = check_transaction_id(transaction_id)
        if select is not None and not callable(select):
            raise GalleryError(f"select: expected a callable(subject_id) -> bool, got {type(select).__name__}")
        check_batch(batch)
        if on_existing not in ("raise", "skip"):
            raise GalleryError(f"on_existing: expected 'raise' or 'skip', got {on_existing!r}")
        from . import Gallery

        if isinstance(source, Gallery):
            src, opened = source, False
        elif isinstance(source, (str, os.PathLike)):
            if not Path(source).is_file():
                raise GalleryError(f"source: {source} is not a biomatch store (no such file)")
            src, opened = Gallery.open(source, key=source_key), True
        else:
            raise GalleryError(f"source: expected a Gallery or a store path, got {type(source).__name__}")
        try:
            if src.path.resolve() == self.path.resolve():
                raise GalleryError(f"source: {src.path} is this store")
            return self._import(src, src_name, gallery, select, on_existing == "skip", operator, transaction_id,
                                progress, batch)
        finally:
            if opened:
                src.close()

    def _import(self, src: "Gallery", src_name: str, gallery: str, select, skip_existing: bool, operator,
                transaction_id, progress, batch: int) -> int:
        scon = src._con()
        for _attempt in range(3):  # the index and the rows must be of one generation of the source
            src_idx = src.index(src_name)
            scon.execute("BEGIN")
            try:
                src_gid, src_gen = src._require_gallery(scon, src_name)
            except BaseException:
                scon.execute("COMMIT")
                raise
            if src_gen == src_idx.generation:
                break
            scon.execute("COMMIT")
        else:
            raise GalleryError(f"source: {src.path} keeps changing; import it when no one writes to it")
        try:
            subjects = scon.execute(
                "SELECT id, subject, metadata, created, updated FROM subjects WHERE gallery_id = ? ORDER BY id",
                (src_gid,)).fetchall()
            if select is not None:
                subjects = [r for r in subjects if select(r[1])]
            con = self._con()
            row = con.execute("SELECT id FROM galleries WHERE name = ?", (gallery,)).fetchone()
            if row is not None:
                here = {r[0] for r in con.execute("SELECT subject FROM subjects WHERE gallery_id = ?", (row[0],))}
                clash = [r[1] for r in subjects if r[1] in here]
                if skip_existing:
                    subjects, clash = [r for r in subjects if r[1] not in here], []
                if clash:
                    raise GalleryError(f"subject_id: {clash[0]!r} is already enrolled in gallery {gallery!r}"
                                       + (f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""))
            if row is not None:  # the codes are copied at the end, into an index current at the start
                self.index(gallery)
            fid_map: dict[int, int] = {}
            gen_start = gen = None
            batches = 0
            origin = {"store": str(src.path), "gallery": src_name, "generation": src_gen}
            for i in range(0, len(subjects), batch):
                part = subjects[i : i + batch]
                ids = [r[0] for r in part]
                q = ",".join("?" * len(ids))
                fingers = scon.execute(
                    f"SELECT id, subject_id, position, template, sha256, n_minutiae, quality, impression, source "
                    f"FROM fingers WHERE subject_id IN ({q}) ORDER BY id", ids).fetchall()
                originals = scon.execute(
                    f"SELECT subject_id, position, kind, data, id FROM originals WHERE subject_id IN ({q}) ORDER BY id",
                    ids).fetchall()
                by_subject: dict[int, list] = collections.defaultdict(list)
                for fid, s_id, pos, blob, sha, n_min, quality, imp, source in fingers:
                    data = src._unseal_finger(blob, fid, scon)
                    if hashlib.sha256(data).hexdigest() != sha:
                        raise GalleryError(f"source: {src.path} finger {fid}: template does not match its SHA-256 "
                                           "(damaged store; run `biomatch check` on it)")
                    by_subject[s_id].append((fid, pos, data, sha, n_min, quality, imp, source))
                orig_by: dict[int, list] = collections.defaultdict(list)
                for s_id, pos, kind, blob, oid in originals:
                    orig_by[s_id].append((pos, kind, src._unseal_original(blob, oid, scon)))
                meta_texts = {s_id: src._metadata_text(scon, s_id, value) for s_id, _, value, _, _ in part}
                with self._write() as con:
                    gid, gen = self._gallery_row(con, gallery, create=True)
                    if gen_start is None:
                        gen_start = gen
                    state = self._metadata_state(con)
                    for s_id, subject, _, created, updated in part:
                        meta = self._seal_metadata(con, gallery, subject, meta_texts[s_id], state)
                        rowid = con.execute(
                            "INSERT INTO subjects(gallery_id, subject, metadata, created, updated) VALUES (?, ?, ?, ?, ?)",
                            (gid, subject, meta, created, updated)).lastrowid
                        shas = {}
                        for fid, pos, data, sha, n_min, quality, imp, source in by_subject[s_id]:
                            fid_map[fid] = self._insert_finger(con, rowid, pos, data, sha, n_min, quality, gid, gen + 1,
                                                               imp, source)
                            shas[str(pos) if imp == 0 else f"{pos}.{imp}"] = sha  # extra impressions as "position.number"
                        self._insert_original_rows(con, rowid, orig_by[s_id])
                        _audit.append(con, "import", operator, {
                            "transaction_id": transaction_id, "gallery": gallery, "subject": subject,
                            "fingers": shas, "source": origin})
                    con.execute("UPDATE galleries SET generation = ? WHERE id = ?", (gen + 1, gid))
                batches += 1
                # rescoring rows: copied as they are (keyed by template hash, never stale); absent ones are
                # recomputed on first use, as after a crash
                self._put_features(list(src._featstore.get(sorted({f[4] for f in fingers}), raw=True).items()), raw=True)
                if progress is not None:
                    progress(len(part))
            if batches:
                self._import_index(src_idx, gallery, fid_map, gen_start, gen_start + batches)
            return len(subjects)
        finally:
            scon.execute("COMMIT")

    def _import_index(self, src_idx, gallery: str, fid_map: dict, gen_start: int, gen_end: int) -> None:
        """Copy the imported fingers' codes into this gallery's index when no other change came between."""
        with self._index_lock:
            idx = self._indexes.get(gallery)
            if idx is None and gen_start == 0 and not self._index_path(gallery).exists():
                idx = self._indexes[gallery] = self._new_index(0)
            con = self._con()
            _, gen = self._require_gallery(con, gallery)
            if idx is None or idx.generation != gen_start or gen != gen_end:
                return  # another change came between (or no index loaded): index() catches up from the store
            idx.copy_from(src_idx, fid_map, generation=gen_end)
            self._save_index(idx, gallery)
            self._dirty.discard(gallery)

    # -- checking, backup and restore -------------------------------------------------------
    def check(self) -> dict:
        """Verify the store, its indexes, derived files and audit chain; never raises for what it finds.

        Checks SQLite's integrity and foreign keys; that every finger row
        decrypts and decodes to a template whose SHA-256 is the one recorded,
        and, in an encrypted store, that every template and original was
        sealed for the row it is in (its gallery, subject and position: a
        ciphertext moved to another row fails) and none is sealed unbound;
        that no subject is without fingers (half there); that the audit
        chain verifies and that the store's subjects are exactly those whose
        last enrol/delete record is an enrolment (nothing lost, nothing
        unaudited); that each gallery's index (loaded and caught up, as
        searches use it) holds every finger of the store under its position
        and nothing else, at the store's generation, and that no index file
        is ahead of the store; that the feature file holds no rows of deleted
        templates; that every subject's metadata opens against its row (and,
        where the store encrypts metadata, is encrypted); and, for an
        encrypted store, which rows are still plaintext.

        Returns
        -------
        dict
            ``ok`` (bool), ``problems`` (list of str, empty when ok),
            ``warnings`` (list of str), ``galleries`` (per gallery: subjects,
            fingers, generation, indexed fingers), ``audit_records``, ``encrypted``,
            ``metadata_encryption`` ("off", "sealing" while rotate_key seals it, "on").
        """
        con = self._con()
        for attempt in range(CHECK_ATTEMPTS):
            problems: list[str] = []
            racy: list[str] = []  # index and feature-file comparisons: false while another process writes
            warnings_: list[str] = []
            report: dict = {"store": str(self.path), "encrypted": self.encrypted, "galleries": {}}
            quick = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
            if quick != ["ok"]:
                problems += [f"sqlite: {q}" for q in quick[:10]]
            if con.execute("PRAGMA foreign_key_check").fetchall():
                problems.append("sqlite: rows refer to missing subjects or galleries (foreign_key_check)")
            with self._write_lock:  # this process's writers wait; other processes' are seen in the generations
                before = con.execute("SELECT id, generation FROM galleries ORDER BY id").fetchall()
                indexes = {}
                for name in self.galleries():
                    try:
                        indexes[name] = self.index(name)
                    except BiomatchError as exc:  # a row the index cannot be built from
                        problems.append(f"gallery {name!r}: index cannot be built ({exc})")
                con.execute("BEGIN")
                try:
                    self._check_rows(con, indexes, report, problems, warnings_, racy)
                finally:
                    con.execute("COMMIT")
                moved = con.execute("SELECT id, generation FROM galleries ORDER BY id").fetchall() != before
            if not moved:
                problems += racy
                break
        else:  # every attempt overlapped another process's enrolments or deletions
            report["busy"] = True
            warnings_.append(f"store busy: another process changed it during each of {CHECK_ATTEMPTS} attempts; the "
                             "index and feature-file comparisons were skipped (not a fault): run check again")
        if not self._checkpoint():
            warnings_.append("WAL not truncated: other readers are active (copies of deleted pages go at the next checkpoint)")
        report.update(ok=not problems, problems=problems, warnings=warnings_)
        return report

    def _check_rows(self, con, indexes: dict, report: dict, problems: list, warnings_: list, racy: list) -> None:
        try:
            report["audit_records"] = _audit.verify(con)
        except AuditError as exc:
            problems.append(str(exc))
            report["audit_records"] = None
        last_action: dict = {}
        for r in _audit.records(con):
            if r.get("action") in ("enroll", "import", "delete"):
                last_action[(r.get("gallery"), r.get("subject"))] = r["action"]
        audited = {k for k, a in last_action.items() if a in ("enroll", "import")}
        in_store = set()
        all_shas = set()
        plaintext = unbound = 0
        for gid, name, gen in con.execute("SELECT id, name, generation FROM galleries ORDER BY name").fetchall():
            by_pos: dict[int, set] = collections.defaultdict(set)
            n_fingers = n_extra = 0
            for fid, pos, sha, blob, imp, source in con.execute(
                "SELECT fingers.id, position, sha256, template, impression, source FROM fingers "
                "JOIN subjects ON subjects.id = fingers.subject_id WHERE gallery_id = ?", (gid,)
            ):
                n_fingers += 1
                n_extra += imp > 0
                if not isinstance(imp, int) or not 0 <= imp <= MAX_IMPRESSION or not isinstance(source, str) or not source:
                    problems.append(f"store finger {fid} ({name}): impression {imp!r} / source {source!r} out of range")
                by_pos[pos].add(fid)
                all_shas.add(sha)
                plaintext += report["encrypted"] and not _enc.is_sealed(blob)
                unbound += _enc.is_legacy(blob)
                try:
                    data = self._unseal_finger(blob, fid, con)  # fails for a ciphertext moved from another row
                    Template.from_bytes(data, name=f"store finger {fid}")
                    if hashlib.sha256(data).hexdigest() != sha:
                        problems.append(f"store finger {fid} ({name}): template does not match its recorded SHA-256")
                except BiomatchError as exc:
                    problems.append(str(exc))
            subjects = con.execute(
                "SELECT subject, (SELECT count(*) FROM fingers WHERE subject_id = subjects.id) FROM subjects WHERE gallery_id = ?",
                (gid,),
            ).fetchall()
            for subject, k in subjects:
                in_store.add((name, subject))
                if k == 0:
                    problems.append(f"gallery {name!r}: subject {subject!r} has no fingers (half enrolled)")
            for subject, pos, n in con.execute(
                "SELECT subject, position, count(*) FROM fingers f JOIN subjects ON subjects.id = f.subject_id "
                "WHERE gallery_id = ? AND impression > 0 AND NOT EXISTS (SELECT 1 FROM fingers p WHERE "
                "p.subject_id = f.subject_id AND p.position = f.position AND p.impression = 0) "
                "GROUP BY subject, position ORDER BY subject, position LIMIT 10", (gid,)):
                problems.append(f"gallery {name!r}: subject {subject!r} has {n} extra impression(s) of finger {pos} "
                                "without a primary print")
            idx = indexes.get(name)
            entry = {"subjects": len(subjects), "fingers": n_fingers, "extra_impressions": n_extra, "generation": gen,
                     "index_generation": idx.generation if idx is not None else None}
            if idx is not None:
                held = idx.finger_ids()
                entry["indexed_fingers"] = sum(len(v) for v in held.values())
                if idx.generation != gen:
                    racy.append(f"gallery {name!r}: index at generation {idx.generation}, store at {gen}")
                for pos in sorted(set(held) | set(by_pos)):
                    missing = by_pos.get(pos, set()) - held.get(pos, set())
                    extra = held.get(pos, set()) - by_pos.get(pos, set())
                    if missing:
                        racy.append(f"gallery {name!r}: {len(missing)} fingers at position {pos} not indexed (e.g. {min(missing)})")
                    if extra:
                        racy.append(f"gallery {name!r}: index holds {len(extra)} fingers at position {pos} absent from the store "
                                    f"(e.g. {min(extra)})")
            on_disk = self._load_index(name) if self._index_path(name).exists() else None
            if on_disk is not None and on_disk.generation > gen:
                racy.append(f"gallery {name!r}: index file at generation {on_disk.generation}, ahead of the store ({gen})")
            report["galleries"][name] = entry
        if report["audit_records"] is not None:
            for g, s in sorted(in_store - audited)[:10]:
                problems.append(f"gallery {g!r}: subject {s!r} is enrolled without an enrolment audit record")
            for g, s in sorted(audited - in_store)[:10]:
                problems.append(f"gallery {g!r}: subject {s!r} has an enrolment audit record but is not in the store (lost)")
        orphans = self._featstore.shas() - all_shas if self._featstore.path.exists() else set()
        if orphans:
            racy.append(f"{self._featstore.path}: {len(orphans)} rows of templates no longer enrolled (deletion incomplete)")
        if plaintext:
            warnings_.append(f"{plaintext} finger rows are still plaintext in an encrypted store (run rotate_key)")
        if unbound:
            problems.append(f"{unbound} finger rows are sealed without a binding to their row (written before it "
                            "existed; they could be swapped unnoticed): run rotate_key to re-seal them bound")
        report["metadata_encryption"] = self._check_metadata(con, problems, warnings_)
        for oid, blob in con.execute("SELECT id, data FROM originals"):
            if _enc.is_legacy(blob):
                problems.append(f"original {oid} is sealed without a binding to its row: run rotate_key to re-seal it bound")
            try:
                self._unseal_original(blob, oid, con)
            except BiomatchError as exc:
                problems.append(str(exc))

    def backup(self, dest) -> dict:
        """Copy the store, online, to a new file ``dest`` (SQLite backup API; mode 0600).

        Searches and enrolments carry on while it runs: the copy is one
        consistent snapshot (a read transaction; WAL readers do not block
        writers). The copy is checked (integrity, audit chain) before this
        returns. Index and feature files are not copied: they are derived and
        rebuilt. An encrypted store's copy is encrypted under the same key.

        Returns
        -------
        dict
            ``dest``, ``bytes``, ``audit_records``, ``seconds``.
        """
        import time

        if not isinstance(dest, (str, os.PathLike)):
            raise GalleryError(f"dest: expected a file path, got {type(dest).__name__}")
        dest = Path(dest)
        t0 = time.perf_counter()
        create_private(dest, "dest")
        try:
            out = sqlite3.connect(dest)
            try:
                self._con().backup(out)  # one step: a consistent snapshot
                out.execute("PRAGMA journal_mode=DELETE")  # a self-contained single file
                n = verify_copy(out, dest)
            finally:
                out.close()
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return {"dest": str(dest), "bytes": dest.stat().st_size, "audit_records": n, "seconds": round(time.perf_counter() - t0, 3)}

    @staticmethod
    def restore(backup, path, *, overwrite: bool = False) -> dict:
        """Restore a :meth:`backup` to ``path`` (no handle may have ``path`` open).

        The backup is checked first (integrity, schema, audit chain); then it is
        copied beside ``path`` and renamed into place, and the derived files of
        the old store (its WAL, index and feature files) are removed so that
        nothing of the replaced state is used or kept.

        Parameters
        ----------
        backup : str or os.PathLike
        path : str or os.PathLike
            The store to (re)create.
        overwrite : bool
            Replace an existing store at ``path``.
        """
        for value, field_name in ((backup, "backup"), (path, "path")):
            if not isinstance(value, (str, os.PathLike)):
                raise GalleryError(f"{field_name}: expected a file path, got {type(value).__name__}")
        backup, path = Path(backup), Path(path)
        if not backup.is_file():
            raise GalleryError(f"backup: {backup} is not a file")
        if path.exists() and not overwrite:
            raise GalleryError(f"path: {path} exists (give overwrite=True to replace it)")
        try:
            src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise GalleryError(f"backup: cannot open {backup} ({exc})") from None
        tmp = path.with_name(f".{path.name}.restore-{os.getpid()}.tmp")
        try:
            verify_copy(src, backup, older=True)  # an older schema is migrated when the restored store opens
            tmp.unlink(missing_ok=True)
            create_private(tmp, "path")
            out = sqlite3.connect(tmp)
            try:
                src.backup(out)
                out.execute("PRAGMA journal_mode=DELETE")
                n = verify_copy(out, tmp, older=True)
            finally:
                out.close()
            # a WAL left beside the old store would be replayed into the restored one
            for stale in (Path(f"{path}-wal"), Path(f"{path}-shm")):
                stale.unlink(missing_ok=True)
            os.replace(tmp, path)
        except sqlite3.Error as exc:
            raise GalleryError(f"backup: {backup} is not a usable biomatch store ({exc})") from None
        finally:
            src.close()
            tmp.unlink(missing_ok=True)
        for derived in path.parent.glob(f"{path.name}.*"):  # index files, feature file (and its WAL)
            if derived.name.endswith((".faiss", ".features", ".features-wal", ".features-shm")):
                derived.unlink(missing_ok=True)
        return {"path": str(path), "bytes": path.stat().st_size, "audit_records": n}
