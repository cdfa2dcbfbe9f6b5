"""Schema migrations: opening a store written by an older build brings it to :data:`SCHEMA_VERSION`.

A migration runs when a writable handle opens a store whose ``schema_version`` is one this build
knows how to upgrade (:data:`MIGRATIONS`). First a backup copy of the store is written beside it
(``<store>.schema-v<old>.<time>.backup``, owner-only, SQLite backup API, integrity-checked); then
every step runs in one write transaction together with the new ``schema_version`` and a ``migrate``
audit record (from, to, backup path, rows migrated). A failure (or a kill) at any point rolls the
transaction back: the store stays as it was, at its old version, and the next open tries again.
A store of a newer or unknown version is refused (:meth:`StoreMixin._init_store`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from .. import audit as _audit
from ..errors import GalleryError

#: Largest impression number of a finger (0: the primary print; 1.. the extra impressions).
MAX_IMPRESSION = 9
#: Source recorded for a primary print whose origin is not known (every row of a migrated store).
PRIMARY_SOURCE = "primary"

#: The finger table of the current schema; ``{name}`` is the table's name (``fingers``, or the
#: migration's temporary ``fingers_v2``). One row per impression of a finger, each with its own id
#: (the FAISS index and the rescoring rows key on finger ids, never on (subject, position)).
FINGERS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {{name}}(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    position INTEGER NOT NULL CHECK(position BETWEEN 0 AND 10),
    impression INTEGER NOT NULL DEFAULT 0 CHECK(impression BETWEEN 0 AND {MAX_IMPRESSION}),
    source TEXT NOT NULL DEFAULT '{PRIMARY_SOURCE}',
    template BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    n_minutiae INTEGER NOT NULL,
    quality INTEGER NOT NULL,
    UNIQUE(subject_id, position, impression)
)"""


def fingers_1_to_2(con: sqlite3.Connection) -> int:
    """Schema 1 -> 2: the finger table gains ``impression`` (0 for every existing row) and ``source``
    (:data:`PRIMARY_SOURCE`); its key becomes (subject, position, impression). Row ids and the
    AUTOINCREMENT counter are kept (ids are never reused). Returns the rows migrated."""
    row = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'fingers'").fetchone()
    counter = row[0] if row else 0
    con.execute(FINGERS_TABLE.format(name="fingers_v2"))
    con.execute(
        "INSERT INTO fingers_v2(id, subject_id, position, impression, source, template, sha256, n_minutiae, quality) "
        "SELECT id, subject_id, position, 0, ?, template, sha256, n_minutiae, quality FROM fingers ORDER BY id",
        (PRIMARY_SOURCE,))
    n = con.execute("SELECT count(*) FROM fingers_v2").fetchone()[0]
    copy_done(con, n)
    con.execute("DROP TABLE fingers")
    con.execute("ALTER TABLE fingers_v2 RENAME TO fingers")
    con.execute("DELETE FROM sqlite_sequence WHERE name = 'fingers'")
    con.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('fingers', ?)",
                (max(counter, con.execute("SELECT coalesce(max(id), 0) FROM fingers").fetchone()[0]),))
    con.execute("CREATE INDEX IF NOT EXISTS fingers_subject ON fingers(subject_id)")
    con.execute("CREATE INDEX IF NOT EXISTS fingers_sha ON fingers(sha256)")
    return n


def copy_done(con, n: int) -> None:
    """Called inside the migration after the rows are copied, before the old table goes (a test makes it
    raise to prove that a migration failing part-way leaves the store as it was)."""


#: version -> (next version, step): the chain of upgrades this build can run.
MIGRATIONS = {1: (2, fingers_1_to_2)}


def stored_version(con: sqlite3.Connection) -> str | None:
    """The store's ``schema_version`` text (None for an empty file: a store to create)."""
    has_meta = con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return None
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


def migratable(version: str | None, current: int) -> bool:
    """True when ``version`` is an older schema this build can bring to ``current``."""
    v = version
    while v is not None and v.isdigit() and int(v) in MIGRATIONS:
        v = str(MIGRATIONS[int(v)][0])
        if v == str(current):
            return True
    return False


def backup_before(con: sqlite3.Connection, path: Path, version: str) -> Path:
    """An owner-only, integrity-checked copy of the store at ``version``, beside it; returns its path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.schema-v{version}.{stamp}.backup")
    k = 1
    while dest.exists():
        dest = path.with_name(f"{path.name}.schema-v{version}.{stamp}-{k}.backup")
        k += 1
    try:
        os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        out = sqlite3.connect(dest)
        try:
            con.backup(out)
            out.execute("PRAGMA journal_mode=DELETE")
            check = out.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            out.close()
        if check != "ok":
            raise GalleryError(f"{path}: the backup copy before the schema migration fails its integrity check "
                               f"({check}); the store is not migrated")
    except (OSError, sqlite3.Error) as exc:
        dest.unlink(missing_ok=True)
        raise GalleryError(f"{path}: cannot write the backup copy {dest} before migrating the schema "
                           f"({exc}); the store is not migrated") from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest


def migrate(con: sqlite3.Connection, path: Path, version: str, current: int, backup: Path, operator: str) -> dict:
    """Run the upgrades from ``version`` to ``current`` inside the caller's write transaction, set the
    version and append the ``migrate`` audit record; returns the record."""
    v, rows, steps = int(version), {}, []
    while v != current:
        nxt, step = MIGRATIONS[v]
        rows[step.__name__] = step(con)
        steps.append(f"{v}->{nxt}")
        v = nxt
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(current),))
    return _audit.append(con, "migrate", operator, {
        "store": str(path), "from_version": int(version), "to_version": current, "steps": steps,
        "rows": rows, "backup": str(backup), "software": _audit.software()})
