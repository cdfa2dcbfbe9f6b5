"""The SQLite store: schema, per-thread connections, write transactions, reads of subjects and the audit log."""

from __future__ import annotations

import functools
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import quote


from .. import audit as _audit
from ..errors import AuditError, GalleryError
from ..template import Template
from .checks import check_gallery_name, check_operator, check_subject
from .migrate import FINGERS_TABLE, backup_before, migratable, migrate, stored_version
#: Version of the SQL schema written into the ``meta`` table.
SCHEMA_VERSION = 2
#: Bytes of the store and of the feature file SQLite reads through a memory map
#: (SQLite caps it at its compile-time limit, 2 GiB in common builds): a search
#: reads ~400 scattered feature rows of ~12 KB, 37 ms of CPU through read() and
#: 7 ms mapped (100,000 fingers). Mapped pages are page cache, not heap.
STORE_MMAP_BYTES = 1 << 40
#: Seconds a writer waits for another process's write lock.
BUSY_TIMEOUT_S = 60.0

# Associated data of each kind of sealed blob (see biomatch.encryption); a store row's is bound to its place
# (gallery.keys: encryption.row_aad), the two row ones here are what blobs sealed before that carry.
AAD_TEMPLATE = b"biomatch:fingers.template"
AAD_ORIGINAL = b"biomatch:originals.data"
AAD_FEATURES = b"biomatch:features.rows"
AAD_CHECK = b"biomatch:meta.key_check"
KEY_CHECK_TEXT = b"biomatch key check"

# what a damaged store file raises from any query (a corrupt page, or corrupt text in a row)
STORE_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS galleries(
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS subjects(
    id INTEGER PRIMARY KEY,
    gallery_id INTEGER NOT NULL REFERENCES galleries(id) ON DELETE CASCADE,
    subject TEXT NOT NULL,
    metadata TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    UNIQUE(gallery_id, subject)
);
{fingers};
CREATE INDEX IF NOT EXISTS fingers_subject ON fingers(subject_id);
CREATE INDEX IF NOT EXISTS fingers_sha ON fingers(sha256);
CREATE TABLE IF NOT EXISTS originals(
    id INTEGER PRIMARY KEY,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    position INTEGER,
    kind TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS originals_subject ON originals(subject_id);
CREATE TABLE IF NOT EXISTS changes(
    gallery_id INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    op TEXT NOT NULL CHECK(op IN ('add', 'del')),
    finger_id INTEGER NOT NULL,
    position INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_generation ON changes(gallery_id, generation);
CREATE TABLE IF NOT EXISTS calibration(
    id INTEGER PRIMARY KEY,
    doc TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS thresholds(
    gallery TEXT PRIMARY KEY,
    value REAL NOT NULL,
    set_at TEXT NOT NULL,
    operator TEXT NOT NULL
);
""".replace("{fingers}", FINGERS_TABLE.format(name="fingers").strip())


@dataclass(frozen=True)
class SubjectRecord:
    """What :meth:`Gallery.get` returns.

    ``fingers`` holds each finger's primary print (impression 0); ``impressions`` the extra
    impressions, position -> tuple of (impression number, source, Template) in number order;
    ``sources`` the primary prints' sources (position -> e.g. ``"rolled"``, ``"slap 13"``).
    """

    subject: str
    gallery: str
    fingers: Mapping[int, Template]
    metadata: dict | None
    created: str
    updated: str
    originals: tuple = ()  # (position or None, kind, size in bytes)
    impressions: Mapping[int, tuple] = field(default_factory=dict)
    sources: Mapping[int, str] = field(default_factory=dict)


def split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def write_lines(recs, fh) -> int:
    n = 0
    for r in recs:
        fh.write(_audit.canonical_json(r) + "\n")
        n += 1
    return n


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and missing parents owner-only (0700, whatever the umask); existing ones are left as they are."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask


def store_errors(method):
    """Turn SQLite errors (corrupt file, I/O error, disk full) into a GalleryError naming the store."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except STORE_ERRORS as exc:
            raise GalleryError(f"{self.path}: store error in {method.__name__} ({exc})") from None

    return wrapper


class StoreMixin:
    """Schema, connections, write transactions and the read-only views of a store (part of :class:`Gallery`)."""

    # audit heads exported by this handle (see _export_head); class defaults, set per handle once it exports
    audit_head_file: str | os.PathLike | None = None  # else the BIOMATCH_AUDIT_HEAD_FILE environment variable
    _head_exported = float("-inf")  # time.monotonic() of the last export
    _head_last: tuple | None = None  # (count, hash) last exported
    read_only = False  # Gallery.open(..., mode="read") sets it per handle

    def _init_store(self) -> None:
        if self.read_only:
            self._check_schema(self._con())
            return
        try:
            make_private_dirs(self.path.parent)
            if not self.path.exists():
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise GalleryError(f"{self.path}: cannot create the store ({exc.strerror or exc})") from None
        con = self._con()
        try:
            version = stored_version(con)
            backup = backup_before(con, self.path, version) if migratable(version, SCHEMA_VERSION) else None
            with self._write_lock:
                con.execute("BEGIN IMMEDIATE")
                try:
                    version = stored_version(con)  # another process may have migrated it meanwhile
                    if migratable(version, SCHEMA_VERSION):
                        backup = backup or backup_before(con, self.path, version)
                        migrate(con, self.path, version, SCHEMA_VERSION, backup, check_operator(None))
                    elif version is not None and version != str(SCHEMA_VERSION):
                        raise GalleryError(self._schema_refusal(version))
                    for stmt in split_sql(SCHEMA + _audit.SCHEMA):
                        con.execute(stmt)
                    if version is None:
                        con.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                        con.execute("INSERT INTO meta(key, value) VALUES ('created', ?)", (_audit.utc_now(),))
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
        except STORE_ERRORS as exc:
            raise GalleryError(f"{self.path}: not a usable biomatch store ({exc})") from None

    def _schema_refusal(self, version) -> str:
        """Why a store of another schema version is not opened (an older one this build migrates, opened
        read-only; a newer or unknown one)."""
        text = f"{self.path}: store schema version {str(version)[:40]!r}, this build reads {SCHEMA_VERSION}"
        if migratable(version, SCHEMA_VERSION):
            return text + " (an older schema: open the store writable once to migrate it, a backup is taken first)"
        return text + " (a newer or unknown schema: open it with the biomatch build that wrote it)"

    def _check_schema(self, con) -> None:
        """A read-only handle writes no schema: the store must already be one this build reads."""
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except STORE_ERRORS as exc:
            raise GalleryError(f"{self.path}: not a usable biomatch store ({exc})") from None
        if row is None or row[0] != str(SCHEMA_VERSION):
            raise GalleryError(self._schema_refusal(row and row[0]))

    def _connect_read_only(self) -> sqlite3.Connection:
        """SQLite read-only; on a read-only medium, where not even the WAL index can be made, as immutable."""
        uri = f"file:{quote(str(self.path.resolve()))}"
        con = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                              check_same_thread=True)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.OperationalError:
            con.close()
        return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=True)

    def _con(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 objects must stay in their thread)."""
        if self._closed:
            raise GalleryError(f"{self.path}: the gallery is closed")
        con = getattr(self._local, "con", None)
        if con is None and self.read_only:
            try:
                con = self._connect_read_only()
                con.execute("PRAGMA foreign_keys=ON")
                con.execute(f"PRAGMA mmap_size={STORE_MMAP_BYTES}")
            except STORE_ERRORS as exc:
                raise GalleryError(f"{self.path}: not a usable biomatch store ({exc})") from None
            self._local.con = con
            with self._conns_lock:
                self._conns.append(con)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=FULL")
                con.execute("PRAGMA foreign_keys=ON")
                con.execute("PRAGMA secure_delete=ON")
                con.execute(f"PRAGMA mmap_size={STORE_MMAP_BYTES}")
            except STORE_ERRORS as exc:
                raise GalleryError(f"{self.path}: not a usable biomatch store ({exc})") from None
            self._local.con = con
            with self._conns_lock:
                self._conns.append(con)
        return con

    @contextmanager
    def _write(self):
        """One write transaction: process lock + BEGIN IMMEDIATE (serialises other processes too)."""
        if self.read_only:
            raise GalleryError(f"{self.path}: opened read-only (Gallery.open(..., mode='read')); this changes the store")
        with self._write_lock:
            con = self._con()
            try:
                con.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise GalleryError(f"{self.path}: cannot take the write lock ({exc})") from None
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            else:
                con.execute("COMMIT")
                self._export_head()

    def _index_path(self, gallery: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{gallery}.faiss")

    # -- galleries ---------------------------------------------------------
    def galleries(self) -> list[str]:
        """Names of the galleries in the store."""
        return [r[0] for r in self._con().execute("SELECT name FROM galleries ORDER BY name")]

    def _gallery_row(self, con, name: str, *, create: bool = False):
        row = con.execute("SELECT id, generation FROM galleries WHERE name = ?", (name,)).fetchone()
        if row is None and create:
            cur = con.execute("INSERT INTO galleries(name, created) VALUES (?, ?)", (name, _audit.utc_now()))
            return cur.lastrowid, 0
        return row

    def _require_gallery(self, con, name: str):
        check_gallery_name(name)
        row = self._gallery_row(con, name)
        if row is None:
            raise GalleryError(f"gallery: no gallery named {name!r} in {self.path}")
        return row

    def _require_subject(self, con, gid: int, gallery: str, subject_id: str) -> int:
        """The subjects row id of ``subject_id`` in gallery ``gid`` (GalleryError when it is not enrolled)."""
        row = con.execute("SELECT id FROM subjects WHERE gallery_id = ? AND subject = ?", (gid, subject_id)).fetchone()
        if row is None:
            raise GalleryError(f"subject_id: {subject_id!r} is not enrolled in gallery {gallery!r}")
        return row[0]

    def _checkpoint(self) -> bool:
        """Fold the WAL into the store and truncate it (overwritten pages leave no copy); False when readers block it."""
        try:
            busy = self._con().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError:
            return False
        return busy == 0

    # -- reading ------------------------------------------------------------------
    def get(self, subject_id: str, *, gallery: str = "default") -> SubjectRecord:
        """The enrolled fingers and metadata of one subject (GalleryError when unknown)."""
        subject_id = check_subject(subject_id)
        con = self._con()
        gid, _ = self._require_gallery(con, gallery)
        row = con.execute(
            "SELECT id, metadata, created, updated FROM subjects WHERE gallery_id = ? AND subject = ?", (gid, subject_id)
        ).fetchone()
        if row is None:
            raise GalleryError(f"subject_id: {subject_id!r} is not enrolled in gallery {gallery!r}")
        sid, meta, created, updated = row
        fingers, impressions, sources = {}, {}, {}
        for fid, pos, imp, source, blob in con.execute(
                "SELECT id, position, impression, source, template FROM fingers WHERE subject_id = ? "
                "ORDER BY position, impression", (sid,)):
            if imp == 0:
                fingers[pos], sources[pos] = self._template(blob, fid), source
            else:
                impressions[pos] = impressions.get(pos, ()) + ((imp, source, self._template(blob, fid)),)
        originals = tuple(
            con.execute("SELECT position, kind, length(data) FROM originals WHERE subject_id = ? ORDER BY id", (sid,)).fetchall()
        )
        return SubjectRecord(subject_id, gallery, fingers, self._metadata_of(con, sid, meta), created, updated, originals,
                             impressions, sources)

    def originals(self, subject_id: str, *, gallery: str = "default") -> list[tuple]:
        """The kept originals of a subject: list of (position or None, kind, bytes), decrypted."""
        subject_id = check_subject(subject_id)
        con = self._con()
        gid, _ = self._require_gallery(con, gallery)
        rows = con.execute(
            "SELECT originals.id, position, kind, data FROM originals JOIN subjects ON subjects.id = originals.subject_id "
            "WHERE gallery_id = ? AND subject = ? ORDER BY originals.id",
            (gid, subject_id),
        ).fetchall()
        return [(pos, kind, self._unseal_original(data, oid, con)) for oid, pos, kind, data in rows]

    def subjects(self, *, gallery: str = "default") -> list[str]:
        """Subject ids of a gallery, sorted."""
        con = self._con()
        gid, _ = self._require_gallery(con, gallery)
        return [r[0] for r in con.execute("SELECT subject FROM subjects WHERE gallery_id = ? ORDER BY subject", (gid,))]

    def stats(self) -> dict:
        """Counts per gallery, store size, index state and audit length."""
        con = self._con()
        out = {"store": str(self.path), "schema_version": SCHEMA_VERSION, "galleries": {}}
        for gid, name, gen in con.execute("SELECT id, name, generation FROM galleries ORDER BY name").fetchall():
            n_sub = con.execute("SELECT count(*) FROM subjects WHERE gallery_id = ?", (gid,)).fetchone()[0]
            n_fing, n_extra, n_bytes = con.execute(
                "SELECT count(*), coalesce(sum(impression > 0), 0), coalesce(sum(length(template)), 0) FROM fingers "
                "JOIN subjects ON subjects.id = fingers.subject_id WHERE gallery_id = ?",
                (gid,),
            ).fetchone()
            path = self._index_path(name)
            manifest = None
            if path.exists():
                from ..index import GalleryIndex

                manifest = GalleryIndex.read_manifest(path)
            idx = self._indexes.get(name)
            out["galleries"][name] = {
                "subjects": n_sub,
                "fingers": n_fing,  # finger rows (index entries): primary prints and extra impressions
                "extra_impressions": n_extra,
                "template_bytes": n_bytes,
                "generation": gen,
                "index_file": str(path) if path.exists() else None,
                "index_file_generation": manifest.get("generation") if manifest else None,
                "index_loaded": idx.describe() if idx is not None else None,
            }
        out["audit_records"] = _audit.head(con)[0]
        out["store_bytes"] = sum(
            q.stat().st_size for q in (self.path, Path(f"{self.path}-wal")) if q.exists()
        )
        cal = self._calibration_doc(con)
        out["calibration"] = cal[1] if cal else None
        return out

    def _n_subjects(self, con, gid: int, generation: int) -> int:
        """Subjects of a gallery (the N of FPIR), counted once per gallery generation: every
        change bumps the generation, and a count costs O(N) per search at a million subjects."""
        cached = self._subject_counts.get(gid)
        if cached is not None and cached[0] == generation:
            return cached[1]
        n = con.execute("SELECT count(*) FROM subjects WHERE gallery_id = ?", (gid,)).fetchone()[0]
        self._subject_counts[gid] = (generation, n)
        return n

    @contextmanager
    def _snapshot(self, con):
        """One read transaction; rescoring rows computed inside it are written after it."""
        con.execute("BEGIN")
        try:
            yield
        finally:
            con.execute("COMMIT")
            pending, self._local.pending_features = getattr(self._local, "pending_features", []), []
            if pending and not self.read_only:
                self._put_features(pending)

    # -- audit ------------------------------------------------------------------------------
    def verify_audit(self) -> int:
        """Re-check the audit chain; returns the number of records verified (AuditError at the first bad one)."""
        con = self._con()
        con.execute("BEGIN")
        try:
            return _audit.verify(con)
        finally:
            con.execute("COMMIT")

    def audit_head(self) -> "_audit.AuditHead":
        """The audit log's head (count, last hash, time) after verifying the chain; signed (HMAC) when the store is encrypted.

        Keep it outside the store (``biomatch audit head``): :meth:`verify_audit_heads` later proves the log still
        extends it, which catches records cut from the end even when the stored head was re-pointed.
        """
        con = self._con()
        con.execute("BEGIN")
        try:
            return _audit.current_head(con, self._head_ring(con))
        finally:
            con.execute("COMMIT")

    def verify_audit_heads(self, heads) -> dict:
        """Prove the audit log still extends exported heads (:func:`biomatch.audit.verify_heads`).

        Parameters
        ----------
        heads : AuditHead, str, os.PathLike or list of AuditHead
            Heads, a head file (one per line, as exported) or a head value
            (``biomatch-audit-head/1 count=N hash=...`` or ``N:HASH``).

        Returns
        -------
        dict
            ``verified`` (records on the chain), ``heads``, ``signed`` (HMACs checked), ``unsigned``.

        Raises
        ------
        AuditError
            The chain is broken, or a head is no longer on it, naming the head.
        """
        if isinstance(heads, _audit.AuditHead):
            heads = [heads]
        elif isinstance(heads, (str, os.PathLike)):
            heads = _audit.read_heads(heads)
        con = self._con()
        con.execute("BEGIN")
        try:
            return _audit.verify_heads(con, list(heads), self._ring)
        finally:
            con.execute("COMMIT")

    def _head_ring(self, con):
        """The ring to sign heads with: the store's own key, when the store is encrypted."""
        kid = con.execute("SELECT value FROM meta WHERE key = 'key_current'").fetchone()
        if kid is None or self._ring is None or not self._ring.holds(kid[0]):
            return None
        return self._ring.only(kid[0])

    def _export_head(self, force: bool = False) -> None:
        """Append the head to the audit head file (:data:`biomatch.audit.ENV_HEAD_FILE`), at most every
        :data:`biomatch.audit.HEAD_EXPORT_INTERVAL_S` (``force``: now), when the log moved since the last one."""
        import time
        import warnings

        target = self.audit_head_file or os.environ.get(_audit.ENV_HEAD_FILE)
        now = time.monotonic()
        if not target or (not force and now - self._head_exported < _audit.HEAD_EXPORT_INTERVAL_S):
            return
        try:
            con = self._con()
            count, digest = _audit.head(con)  # what this handle just committed on (not re-verified: that is O(log))
            if (count, digest) != self._head_last:
                h = _audit.AuditHead(count, digest, _audit.utc_now())
                ring = self._head_ring(con)
                _audit.export_head(target, h.signed(ring) if ring is not None else h)
            self._head_exported, self._head_last = now, (count, digest)
        except (OSError, sqlite3.Error, GalleryError, AuditError) as exc:  # the change is committed: say so loudly, do not undo it
            warnings.warn(f"{self.path}: cannot export the audit head to {target} ({exc})", RuntimeWarning, stacklevel=3)

    def audit_records(self, *, since: int = 1, limit: int | None = None) -> list[dict]:
        """Audit records in order (each with its ``hash``), unverified."""
        return list(_audit.records(self._con(), since=since, limit=limit))

    def export_audit(self, out) -> int:
        """Write the audit log as JSON lines (one record with its hash per line) to a path or text file; returns the count."""
        recs = _audit.records(self._con())
        if isinstance(out, (str, os.PathLike)):
            # subject ids and template hashes: owner-only, whatever the umask, an existing file included
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            with open(fd, "w", encoding="utf-8") as fh:
                return write_lines(recs, fh)
        return write_lines(recs, out)
