"""Hash-chained audit log kept in the gallery store.

Every search, enrolment, update, deletion, threshold and calibration change
appends one record to the ``audit`` table *in the same SQLite transaction* as
the change it describes, so a record exists exactly when its change was
committed.

A record is a JSON object with at least ``seq`` (1, 2, ...), ``time`` (UTC,
ISO 8601), ``action`` and ``operator``. Its text is the canonical JSON
(:func:`canonical_json`: sorted keys, no spaces, UTF-8) and its hash is::

    hash[seq] = sha256(hash[seq - 1] + "\\n" + canonical_json(record[seq]))

with ``hash[0]`` = :data:`GENESIS`. Because each hash covers the previous one
and the record carries its own ``seq``, editing, removing, inserting or
reordering any record breaks the chain from that record on; the store also
keeps the head (last hash and count) in its ``meta`` table so that removing
records from the end is caught as well. (Someone able to rewrite the whole
table *and* the head can forge a consistent chain; export the head hash to
a separate system - ``biomatch audit export`` - to detect even that.)

Records never hold biometric data: probes are identified by the SHA-256 of
their template bytes, enrolled fingers by position and template hash.
Enrolment, update and search records also name the software that made their
templates and scores (``software``: :func:`software`), and a search record the
calibration that turned its scores into false match rates.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sqlite3
from typing import Iterator

from .errors import AuditError

__all__ = ["GENESIS", "canonical_json", "chain_hash", "append", "verify", "records", "head", "utc_now"]

#: Hash that precedes the first record.
GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit(
    seq INTEGER PRIMARY KEY,
    record TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""


def utc_now() -> str:
    """Current UTC time, ISO 8601 with microseconds and a Z suffix."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(record: dict) -> str:
    """Canonical JSON text of a record (sorted keys, compact separators, UTF-8 kept)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def software() -> dict:
    """Versions that decide a record's templates and scores: the package, the extractor
    (:data:`biomatch.extraction.EXTRACTOR_VERSION`) and the matcher
    (:data:`biomatch.scoring.MATCHER_VERSION`)."""
    from . import __version__
    from .extraction import EXTRACTOR_VERSION
    from .scoring import MATCHER_VERSION

    return {"biomatch": __version__, "extractor": EXTRACTOR_VERSION, "matcher": MATCHER_VERSION}


def chain_hash(previous: str, text: str) -> str:
    """SHA-256 hex of the previous hash, a newline and the record's canonical JSON."""
    return hashlib.sha256(f"{previous}\n{text}".encode("utf-8")).hexdigest()


def head(con: sqlite3.Connection) -> tuple[int, str]:
    """(count, last hash) stored in the meta table; (0, GENESIS) for an empty log."""
    rows = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('audit_count', 'audit_head')").fetchall())
    return int(rows.get("audit_count", 0)), rows.get("audit_head", GENESIS)


def append(con: sqlite3.Connection, action: str, operator: str, fields: dict) -> dict:
    """Append a record inside the caller's (write) transaction; returns the record.

    Parameters
    ----------
    con : sqlite3.Connection
        A connection inside ``BEGIN IMMEDIATE`` (so the chain cannot fork).
    action : str
    operator : str
    fields : dict
        JSON-ready details; ``seq``, ``time``, ``action`` and ``operator`` are set here.
    """
    count, previous = head(con)
    record = dict(fields)
    record.update(seq=count + 1, time=utc_now(), action=action, operator=operator)
    text = canonical_json(record)
    digest = chain_hash(previous, text)
    con.execute("INSERT INTO audit(seq, record, hash) VALUES (?, ?, ?)", (count + 1, text, digest))
    con.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [("audit_count", str(count + 1)), ("audit_head", digest)],
    )
    return record


def records(con: sqlite3.Connection, *, since: int = 1, limit: int | None = None) -> Iterator[dict]:
    """Records in order, each with its ``hash`` added (not verified: see :func:`verify`)."""
    sql = "SELECT seq, record, hash FROM audit WHERE seq >= ? ORDER BY seq"
    args: tuple = (int(since),)
    if limit is not None:
        sql += " LIMIT ?"
        args += (int(limit),)
    for seq, text, digest in con.execute(sql, args):
        try:
            record = json.loads(text)
        except ValueError:
            record = {"seq": seq, "unreadable": True}
        record["hash"] = digest
        yield record


def verify(con: sqlite3.Connection) -> int:
    """Re-check the whole chain; returns the number of records verified.

    Raises
    ------
    AuditError
        At the first record that was edited, removed, inserted or reordered,
        naming its sequence number.
    """
    previous = GENESIS
    expected = 1
    for seq, text, digest in con.execute("SELECT seq, record, hash FROM audit ORDER BY seq"):
        if seq != expected:
            raise AuditError(f"audit record {expected}: missing (next record found is {seq})")
        try:
            record = json.loads(text)
        except ValueError:
            raise AuditError(f"audit record {seq}: not valid JSON") from None
        if not isinstance(record, dict) or record.get("seq") != seq:
            raise AuditError(f"audit record {seq}: its seq field says {record.get('seq') if isinstance(record, dict) else None!r} (reordered or replaced)")
        if canonical_json(record) != text:
            raise AuditError(f"audit record {seq}: text is not canonical JSON (edited)")
        if chain_hash(previous, text) != digest:
            raise AuditError(f"audit record {seq}: hash mismatch (this record or an earlier one was edited)")
        previous = digest
        expected += 1
    count, last = head(con)
    if count != expected - 1 or last != previous:
        raise AuditError(
            f"audit log: the store's head says {count} records ending {last[:12]}, the chain has "
            f"{expected - 1} ending {previous[:12]} (records removed from the end or head edited)"
        )
    return expected - 1
