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
records from the end is caught as well - unless the head is edited too: with
write access to the file, someone can delete the last records (or rewrite the
whole table) and re-point the stored head, and the store alone cannot tell.

Exported heads catch that. :class:`AuditHead` is a one-line statement ``this
log had COUNT records ending HASH at TIME``, with an HMAC under a key derived
from the store key when the store is encrypted (so a head cannot be forged
without the key). ``biomatch audit head`` prints one;
:meth:`biomatch.Gallery.open` with ``audit_head_file=`` (or
:data:`ENV_HEAD_FILE`) appends one to an append-only file at most every
:data:`HEAD_EXPORT_INTERVAL_S` and when the handle closes, for an operator
to copy to other media; ``biomatch audit verify --head FILE|VALUE``
(:func:`verify_heads`) proves the log still extends every head given: the
record at each head's count must still be there with that hash, on a chain
that verifies.

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
import os
import re
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from .errors import AuditError

__all__ = ["GENESIS", "canonical_json", "chain_hash", "append", "verify", "records", "head", "utc_now",
           "AuditHead", "current_head", "verify_heads", "read_heads", "export_head", "ENV_HEAD_FILE",
           "HEAD_EXPORT_INTERVAL_S"]

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


# ----------------------------------------------------------------------------
# exported heads: anchoring the log outside the store
# ----------------------------------------------------------------------------

#: Environment variable naming the append-only file heads are exported to.
ENV_HEAD_FILE = "BIOMATCH_AUDIT_HEAD_FILE"
#: Seconds between two head exports by one handle (one also goes out when it closes).
HEAD_EXPORT_INTERVAL_S = 60.0
_HEAD_TAG = "biomatch-audit-head/1"
_HEAD_FIELD = re.compile(r"(count|hash|time|key|hmac)=(\S+)")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class AuditHead:
    """What the audit log was at one moment: ``count`` records, the last one's ``hash``.

    Attributes
    ----------
    count : int
    hash : str
        SHA-256 hex of the chain at record ``count`` (:data:`GENESIS` for 0).
    time : str or None
        When the head was taken (UTC, ISO 8601).
    key_id : str or None
        Id of the store key whose derived MAC key made ``hmac`` (None: unsigned).
    hmac : str or None
        HMAC-SHA-256 hex over :meth:`message`.
    """

    count: int
    hash: str
    time: str | None = None
    key_id: str | None = None
    hmac: str | None = None

    def message(self) -> bytes:
        """The bytes the HMAC covers (everything but the HMAC)."""
        return f"{_HEAD_TAG} count={self.count} hash={self.hash} time={self.time} key={self.key_id}".encode()

    def text(self) -> str:
        """One line, e.g. ``biomatch-audit-head/1 count=12 hash=ab.. time=.. key=.. hmac=..``."""
        parts = [_HEAD_TAG, f"count={self.count}", f"hash={self.hash}"]
        parts += [f"{k}={v}" for k, v in (("time", self.time), ("key", self.key_id), ("hmac", self.hmac)) if v]
        return " ".join(parts)

    def signed(self, ring) -> "AuditHead":
        """This head with an HMAC under ``ring``'s preferred key (a :class:`biomatch.encryption.KeyRing`)."""
        unsigned = replace(self, key_id=ring.preferred, hmac=None)
        return replace(unsigned, hmac=ring.mac(unsigned.message()))

    @classmethod
    def parse(cls, text: str, where: str = "audit head") -> "AuditHead":
        """Read :meth:`text`'s form, or the short ``COUNT:HASH`` form; AuditError naming ``where`` otherwise."""
        text = str(text).strip()
        if ":" in text and " " not in text and not text.startswith(_HEAD_TAG):
            count, _, digest = text.partition(":")
            fields = {"count": count, "hash": digest}
        else:
            if not text.startswith(_HEAD_TAG + " "):
                raise AuditError(f"{where}: not an audit head (expected '{_HEAD_TAG} count=N hash=HEX ...' or 'N:HEX')")
            fields = dict(_HEAD_FIELD.findall(text))
        try:
            count = int(fields["count"])
        except (KeyError, ValueError):
            raise AuditError(f"{where}: audit head has no valid count") from None
        digest = fields.get("hash", "").lower()
        if count < 0 or not _HEX64.fullmatch(digest):
            raise AuditError(f"{where}: audit head needs a count >= 0 and a 64-digit hex hash")
        if ("key" in fields) != ("hmac" in fields):
            raise AuditError(f"{where}: audit head has a key id without an HMAC or the reverse")
        return cls(count, digest, fields.get("time"), fields.get("key"), fields.get("hmac"))


def current_head(con: sqlite3.Connection, ring=None) -> AuditHead:
    """The log's head after verifying the whole chain (AuditError when it does not verify), signed with ``ring`` when given."""
    count = verify(con)
    _, digest = head(con)
    taken = AuditHead(count, digest, utc_now())
    return taken.signed(ring) if ring is not None else taken


def verify_heads(con: sqlite3.Connection, heads: list[AuditHead], ring=None) -> dict:
    """Prove the log still extends every head: the chain verifies and holds each head's record with its hash.

    Parameters
    ----------
    con : sqlite3.Connection
        Inside one read transaction (one snapshot).
    heads : list of AuditHead
    ring : biomatch.encryption.KeyRing, optional
        Checks the HMAC of signed heads whose key it holds.

    Returns
    -------
    dict
        ``{"verified": records on the chain, "heads": heads checked, "signed": HMACs checked,
        "unsigned": heads without an HMAC or whose key was not held}``.

    Raises
    ------
    AuditError
        The chain is broken, a head's HMAC is wrong, or a head's record is
        missing or has another hash (records removed or rewritten after that
        head was exported), naming the head.
    """
    count = verify(con)
    signed = 0
    for h in heads:
        label = f"audit head count={h.count} hash={h.hash[:12]}" + (f" of {h.time}" if h.time else "")
        if h.hmac is not None and ring is not None:
            ok = ring.check_mac(h.message(), h.key_id, h.hmac)
            if ok is False:
                raise AuditError(f"{label}: HMAC does not match (the head was altered or not made with this store's key)")
            signed += ok is True
        if h.count == 0:
            if h.hash != GENESIS:
                raise AuditError(f"{label}: an empty log's head hash is {GENESIS[:12]}")
            continue
        if h.count > count:
            raise AuditError(f"{label}: the log has only {count} records (records removed from the end after this head)")
        row = con.execute("SELECT hash FROM audit WHERE seq = ?", (h.count,)).fetchone()
        if row is None or row[0] != h.hash:
            raise AuditError(f"{label}: record {h.count} now has hash {row[0][:12] if row else None} "
                             "(the log was rewritten after this head)")
    return {"verified": count, "heads": len(heads), "signed": signed, "unsigned": len(heads) - signed}


def read_heads(source: str | os.PathLike) -> list[AuditHead]:
    """Heads from a file (one per line, blank lines skipped) or from a head value given as text."""
    path = Path(source)
    if isinstance(source, os.PathLike) or path.is_file():
        from .io import read_file_bounded

        data = read_file_bounded(path, 64 * 2**20, str(path), "an audit head file", error=AuditError)
        lines = [(i + 1, line) for i, line in enumerate(data.decode("utf-8", "replace").splitlines()) if line.strip()]
        if not lines:
            raise AuditError(f"{path}: holds no audit head")
        return [AuditHead.parse(line, f"{path} line {n}") for n, line in lines]
    try:
        return [AuditHead.parse(str(source))]
    except AuditError as exc:
        raise AuditError(f"{source}: neither a file nor an audit head value ({exc})") from None


def export_head(path, h: AuditHead) -> None:
    """Append ``h`` as one line to ``path`` (created owner-only; opened append-only, never rewritten)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            os.write(fd, (h.text() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise AuditError(f"{path}: cannot append the audit head ({exc.strerror or exc})") from None
