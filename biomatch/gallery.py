"""Galleries: the SQLite store, enrolment, 1:N search with fusion, audit.

``Gallery.open(path)`` opens (or creates, file mode 0600) one SQLite store in
WAL mode with foreign keys on, holding any number of named galleries, their
subjects, up to eleven fingers per subject (ANSI/NIST-ITL FGP 0-10) as
compact templates (:meth:`biomatch.Template.to_bytes`), optional originals
(image or transaction bytes), the calibration, thresholds and the
hash-chained audit log (:mod:`biomatch.audit`). The store is the source of
truth; each gallery's FAISS index (:mod:`biomatch.index`) is derived data in
``<store>.<gallery>.faiss`` beside it, and so are the rescoring rows of the
enrolled templates in ``<store>.features`` (content-addressed by template
SHA-256, refilled lazily; see :class:`_FeatureStore`). Deleting a store means
deleting these files with it.

Protected data
--------------
Every file (store, WAL and shared-memory files, index files and their
temporary files, the feature file) is created readable and writable by its
owner only (0600), whatever the umask. Deletion is real: SQLite runs with
``secure_delete`` (freed cells and pages are zeroed), the WAL is checkpointed
and truncated after a deletion (when another reader blocks that, at the next
deletion or :meth:`Gallery.check`), the subject's rows in the feature file are
deleted the same way, and the gallery's index file is rewritten at once
without its codes. Opened with a key (``Gallery.open(path, key=...)`` or
``BIOMATCH_STORE_KEY``), templates and originals are stored AES-GCM
encrypted (:mod:`biomatch.encryption`); so are the derived files, which hold
biometric-derived data: the feature file's rows (rescoring features) are
sealed row by row, and each index file (bit-packed MCC cylinder codes, from
which minutia neighbourhoods could be approximated) is sealed as a whole and
decrypted into memory on load. What stays readable without the key: subject
ids, gallery names, metadata, finger positions, minutia counts and quality,
template SHA-256 digests and the audit log (which never holds biometric
data). :meth:`Gallery.rotate_key` re-encrypts under a new key while searches
go on.

Search
------
For every probe finger the index shortlists :data:`SHORTLIST_FINGERS`
gallery fingers by descriptor votes; the subjects owning them (at most
:data:`SHORTLIST_SUBJECTS`, by summed votes) are rescored exhaustively by
:mod:`biomatch.scoring`: each probe finger against the subject's finger of the
same position when both positions are known, against all of the subject's
fingers (best of) when either is unknown (0). Ties are broken by explicit
rules that do not depend on a store's row ids: k-NN neighbours at equal
distance by subject id (:func:`_merge_neighbours`), fingers and subjects of
equal votes by subject id (:func:`_shortlist_subjects`), so that a sharded
gallery shortlists exactly as one store does (:mod:`biomatch.distributed`).
Enrolment derives the index codes and rescoring rows from the template as
stored (decoded from its bytes), so a store whose derived files are lost
scores identically once they are rebuilt.

Fusion rule (documented, principled): each per-finger raw score ``s_i`` is
turned into its estimated false match rate ``p_i`` by the calibration; the
subject's FMR is Fisher's combination of the ``k`` per-finger FMRs,
``FMR = P(chi2_2k >= -2 * sum(ln p_i))``, the probability that ``k``
independent non-mated comparisons are jointly at least this extreme. For one
finger it is that finger's FMR exactly. Candidates are ranked by it (ties by
the summed raw score); :attr:`Candidate.score` is the sum of the per-finger
raw scores. The false positive identification rate for the ``N`` subjects
searched is ``FPIR = 1 - (1 - FMR)^N``. A threshold (a raw single-finger
score, or a :class:`biomatch.calibration` threshold) is applied in the FMR
domain: a candidate is a hit when its FMR is at most the FMR of the
threshold score, which for one finger is exactly ``score >= threshold``.

Concurrency and crash safety
----------------------------
Any number of threads may search at once (each thread uses its own SQLite
connection; FAISS searches share a readers-writer lock). Writes take a
process-wide lock and ``BEGIN IMMEDIATE``, which also serialises writers of
other processes; every change and its audit record commit in one transaction
(``synchronous=FULL``), so a kill at any point loses at most the enrolment in
flight. Each gallery has a *generation* counter bumped by every change and a
``changes`` table of (generation, finger id, add/delete); an index file whose
generation is behind the store is caught up from it, one from another
version, gallery or a newer generation is rebuilt from the templates.
"""

from __future__ import annotations

import collections
import functools
import getpass
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import numpy as np

from . import audit as _audit
from . import encryption as _enc
from .errors import AuditError, BiomatchError, CalibrationError, GalleryError, TemplateError
from .template import FINGER_POSITIONS, Template

__all__ = ["Gallery", "Candidate", "FingerScore", "SubjectRecord", "SCHEMA_VERSION"]

# ---------------------------------------------------------------------------
# Tuned constants
# ---------------------------------------------------------------------------
#: Version of the SQL schema written into the ``meta`` table.
SCHEMA_VERSION = 1
#: Gallery fingers shortlisted per probe finger by descriptor votes. A longer list can only
#: find more mates; its length is what the latency budget allows (<= 100 ms at 100,000
#: fingers on 2 cores): at 100,000 fingers 800 rescored fingers cost ~25 ms more than 400
#: (76 vs 52 ms median) and kept every real FVC2002 mate the exhaustive search found
#: (rank-1 gap 0.95 -> 0.0 points; synthetic 14 -> 12).
SHORTLIST_FINGERS = 800
#: Subjects rescored per search (by summed votes over probe fingers), divided by
#: the number of probe fingers (fused evidence needs fewer), but at least SHORTLIST_SUBJECTS_MIN.
SHORTLIST_SUBJECTS = 800
SHORTLIST_SUBJECTS_MIN = 50
#: Galleries up to this many fingers are rescored exhaustively (no shortlist).
EXHAUSTIVE_MAX_FINGERS = 200
#: Enrolled fingers whose rescoring rows (scoring.pack, ~11 KB each at 35 minutiae, up to
#: ~330 KB at 1024) stay in memory (LRU), and the bytes those rows may hold in all:
#: the count alone does not bound the memory (the LRU drifts towards the fingers most
#: often shortlisted, which have more minutiae). Beyond it rows come from the derived
#: feature file (<store>.features).
FEATURE_CACHE_FINGERS = 5_000
FEATURE_CACHE_BYTES = 64 << 20
#: Bytes of the store and of the feature file SQLite reads through a memory map
#: (SQLite caps it at its compile-time limit, 2 GiB in common builds): a search
#: reads ~400 scattered feature rows of ~12 KB, 37 ms of CPU through read() and
#: 7 ms mapped (100,000 fingers). Mapped pages are page cache, not heap.
STORE_MMAP_BYTES = 1 << 40
#: Decoded enrolled templates (with descriptors, ~8 KB each) kept for candidates' minutia
#: pairs (LRU), by count and by bytes.
TEMPLATE_CACHE_FINGERS = 2_000
TEMPLATE_CACHE_BYTES = 32 << 20
#: Seconds between two returns of the heap's free pages to the OS after searches
#: (:func:`biomatch.index.release_memory`; a few ms each).
RELEASE_INTERVAL_S = 2.0
#: Largest candidate list a search may ask for.
MAX_CANDIDATES = 1000
#: Fingers enrolled per transaction by :meth:`Gallery.enroll_many`.
BULK_BATCH = 500
#: Subjects per transaction of :meth:`Gallery.import_from` and :meth:`Gallery.delete_many`
#: (each batch is one SQL ``IN`` list: at most 999 parameters in older SQLite builds).
IMPORT_BATCH = 500
DELETE_BATCH = 500
MAX_BATCH = 500
#: Seconds a writer waits for another process's write lock.
BUSY_TIMEOUT_S = 60.0
#: Smallest FMR used in logarithms (Fisher fusion).
FMR_FLOOR = 1e-300

#: Rows re-encrypted per write transaction by :meth:`Gallery.rotate_key` (short write locks).
ROTATE_BATCH = 200

# Associated data of each kind of sealed blob (see biomatch.encryption).
_AAD_TEMPLATE = b"biomatch:fingers.template"
_AAD_ORIGINAL = b"biomatch:originals.data"
_AAD_FEATURES = b"biomatch:features.rows"
_AAD_CHECK = b"biomatch:meta.key_check"
_KEY_CHECK_TEXT = b"biomatch key check"

# what a damaged store file raises from any query (a corrupt page, or corrupt text in a row)
_STORE_ERRORS = (sqlite3.DatabaseError, UnicodeDecodeError)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MAX_SUBJECT_LEN = 128
_TEMPLATE_SUFFIXES = {".bmt", ".iso", ".ist", ".ansi", ".378", ".fmr"}

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS fingers(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    position INTEGER NOT NULL CHECK(position BETWEEN 0 AND 10),
    template BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    n_minutiae INTEGER NOT NULL,
    quality INTEGER NOT NULL,
    UNIQUE(subject_id, position)
);
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
"""


# ---------------------------------------------------------------------------
# Result objects
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class FingerScore:
    """One probe finger compared with one enrolled finger of a candidate.

    Attributes
    ----------
    probe_position, position : int
        FGP codes of the probe finger and of the enrolled finger it matched.
    score : float
        Raw similarity in [0, 1] (:mod:`biomatch.scoring`).
    fmr : float
        Estimated false match rate of ``score`` (NaN without calibration).
    pairs : tuple of (int, int)
        Paired minutiae: (index in the probe's minutiae, index in the enrolled template's).
    """

    probe_position: int
    position: int
    score: float
    fmr: float
    pairs: tuple = ()

    def to_dict(self) -> dict:
        return {
            "probe_position": self.probe_position,
            "position": self.position,
            "score": round(self.score, 6),
            "fmr": _json_float(self.fmr),
            "n_pairs": len(self.pairs),
            "pairs": [list(p) for p in self.pairs],
        }


@dataclass(frozen=True)
class Candidate:
    """One entry of a candidate list.

    Attributes
    ----------
    rank : int
        1-based.
    subject, gallery : str
    score : float
        Fused raw score: sum of the per-finger raw scores.
    fmr : float
        Estimated false match rate of the fused evidence (Fisher combination
        of the per-finger FMRs; see the module docstring). NaN without calibration.
    fpir : float
        Estimated false positive identification rate at this FMR for the
        number of subjects searched.
    fingers : tuple of FingerScore
    """

    rank: int
    subject: str
    gallery: str
    score: float
    fmr: float
    fpir: float
    fingers: tuple = ()

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "subject": self.subject,
            "gallery": self.gallery,
            "score": round(self.score, 6),
            "fmr": _json_float(self.fmr),
            "fpir": _json_float(self.fpir),
            "fingers": [f.to_dict() for f in self.fingers],
        }


@dataclass(frozen=True)
class SubjectRecord:
    """What :meth:`Gallery.get` returns."""

    subject: str
    gallery: str
    fingers: Mapping[int, Template]
    metadata: dict | None
    created: str
    updated: str
    originals: tuple = ()  # (position or None, kind, size in bytes)


def _json_float(v: float):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------
def _check_gallery_name(name, field_name: str = "gallery") -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise GalleryError(
            f"{field_name}: {name!r} is not a valid gallery name (1-64 characters: letters, digits, '.', '_', '-', "
            "starting with a letter or digit)"
        )
    return name


def _check_subject(subject_id) -> str:
    if not isinstance(subject_id, str) or not subject_id.strip() or len(subject_id) > _MAX_SUBJECT_LEN:
        raise GalleryError(f"subject_id: expected a non-empty string of at most {_MAX_SUBJECT_LEN} characters, got {subject_id!r}")
    if not subject_id.isprintable():
        raise GalleryError(f"subject_id: {subject_id!r} holds non-printable characters")
    return subject_id


def _check_position(pos, field_name: str) -> int:
    if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)) or int(pos) not in FINGER_POSITIONS:
        raise GalleryError(f"{field_name}: finger position {pos!r} is not an ANSI/NIST-ITL FGP code 0-10")
    return int(pos)


def _operator(operator) -> str:
    if operator is None:
        try:
            return getpass.getuser()
        except Exception:  # no login name available (containers)
            return "unknown"
    if not isinstance(operator, str) or not operator.strip() or len(operator) > 256:
        raise GalleryError(f"operator: expected a non-empty string, got {operator!r}")
    return operator


def _transaction_id(tid):
    if tid is not None and (not isinstance(tid, str) or len(tid) > 256):
        raise GalleryError(f"transaction_id: expected a string of at most 256 characters, got {tid!r}")
    return tid


def _as_template(value, position: int, name: str) -> tuple[Template, bytes | None]:
    """A Template at ``position`` from a Template, template file/bytes, image file or array; plus original bytes."""
    original = None
    if isinstance(value, Template):
        t = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        from .formats import load_template

        t = load_template(bytes(value), name=name)
    elif isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if path.suffix.lower() in _TEMPLATE_SUFFIXES:
            from .formats import load_template

            t = load_template(path, name=f"{name} ({path})")
        else:
            from .extraction import extract

            try:
                original = path.read_bytes()
            except OSError as exc:
                raise GalleryError(f"{name}: cannot read {path} ({exc.strerror or exc})") from None
            t = extract(path, position=position)
    elif isinstance(value, np.ndarray):
        from .extraction import extract

        t = extract(value, position=position)
    else:
        raise GalleryError(f"{name}: expected a Template, template bytes, a file path or an image array, got {type(value).__name__}")
    if t.position not in (0, position):
        raise GalleryError(f"{name}: the template says finger position {t.position}, the key says {position}")
    if t.position != position:
        t = Template(np.array(t.minutiae), t.width, t.height, t.ppi, position, t.quality)
    if len(t) < 2:
        raise TemplateError(f"{name}: template has {len(t)} minutiae; at least 2 are needed to match")
    return t, original


def _check_fingers(fingers, field_name: str = "fingers") -> dict[int, tuple[Template, bytes | None]]:
    if not isinstance(fingers, Mapping):
        raise GalleryError(f"{field_name}: expected a dict of finger position -> template/image, got {type(fingers).__name__}")
    if not fingers:
        raise GalleryError(f"{field_name}: no fingers given")
    out = {}
    for pos, value in fingers.items():
        p = _check_position(pos, f"{field_name}[{pos!r}]")
        out[p] = _as_template(value, p, f"{field_name}[{p}]")
    return out


class _Enrolment(NamedTuple):
    """Checked arguments of an enrolment (see :func:`_check_enrolment`)."""

    subject_id: str
    operator: str
    transaction_id: str | None
    metadata: str | None  # JSON text
    fingers: dict  # position -> (Template, original image bytes or None)
    originals: dict  # position (None: a transaction) -> bytes
    context: dict | None


def _check_enrolment(subject_id, fingers, gallery, operator, transaction_id, metadata, originals, context) -> _Enrolment:
    """The one set of rules for an enrolment's arguments (:meth:`Gallery.enroll` and a sharded
    gallery's); raises GalleryError or TemplateError naming the bad argument."""
    subject_id = _check_subject(subject_id)
    _check_gallery_name(gallery)
    return _Enrolment(subject_id, _operator(operator), _transaction_id(transaction_id), _check_metadata(metadata),
                      _check_fingers(fingers), _check_originals(originals), _check_context(context))


def _template_hash(t: Template) -> str:
    return hashlib.sha256(t.to_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# Gallery
# ---------------------------------------------------------------------------
class Gallery:
    """A store of galleries with FAISS-indexed search (see the module docstring).

    Open with :meth:`open` (a context manager); the object is thread-safe.
    """

    def __init__(self, path, *, key=None, _token=None):
        if _token is not _OPEN_TOKEN:
            raise GalleryError("use Gallery.open(path) to open a gallery store")
        self.path = Path(path)
        self._ring = _enc.KeyRing.from_user(key)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._feat_lock = threading.Lock()  # feature-file writes vs. deletions (see _put_features)
        self._index_lock = threading.RLock()
        self._indexes: dict = {}
        self._dirty: set[str] = set()
        self._features = _LRU(TEMPLATE_CACHE_FINGERS, TEMPLATE_CACHE_BYTES)  # finger id -> Template (descriptors cached on it)
        self._packs = _LRU(FEATURE_CACHE_FINGERS, FEATURE_CACHE_BYTES)  # finger id -> its serialised rescoring rows
        self._released = 0.0  # time.monotonic() of the last release_memory() after a search
        self._subject_counts: dict[int, tuple[int, int]] = {}  # gallery id -> (generation, subjects)
        self._featstore = _FeatureStore(Path(f"{self.path}.features"))
        self._closed = False
        try:
            self._init_store()
            self._init_keys()
        except BaseException:
            self.close()
            raise

    # -- opening / closing -----------------------------------------------
    @classmethod
    def open(cls, path, *, key=None) -> "Gallery":
        """Open (or create) the store at ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            SQLite file; created with mode 0600 with its folder when absent.
            ``"ray://DIR?shards=N"`` opens a gallery sharded over a Ray cluster
            (:class:`biomatch.distributed.ShardedGallery`).
        key : bytes, str or list of them, optional
            AES key (16/24/32 bytes, or base64) for encryption at rest
            (:mod:`biomatch.encryption`); default the ``BIOMATCH_STORE_KEY``
            environment variable. A new or plaintext store opened with a key
            writes every later template and original encrypted (encrypt the
            rows already there with :meth:`rotate_key`); an encrypted store
            cannot be opened without its key (GalleryError, nothing changed).

        Returns
        -------
        Gallery
            Use as a context manager (``with Gallery.open(p) as g:``) or call :meth:`close`.
        """
        if isinstance(path, str) and path.startswith("ray://"):
            from .distributed import ShardedGallery  # optional: needs biomatch[distributed]

            return ShardedGallery.open(path)
        if not isinstance(path, (str, os.PathLike)):
            raise GalleryError(f"path: expected a file path, got {type(path).__name__}")
        return cls(path, key=key, _token=_OPEN_TOKEN)

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery({str(self.path)!r})"

    def close(self) -> None:
        """Save indexes changed by this process and close every connection."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._featstore.close()
            with self._conns_lock:
                for con in self._conns:
                    try:
                        con.close()
                    except sqlite3.Error:
                        pass
                self._conns.clear()

    def flush(self) -> None:
        """Write the indexes that changed since they were last saved (atomically)."""
        with self._index_lock:
            for name in sorted(self._dirty):
                idx = self._indexes.get(name)
                if idx is not None:
                    self._save_index(idx, name)
            self._dirty.clear()

    def _init_store(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise GalleryError(f"{self.path}: cannot create the store ({exc.strerror or exc})") from None
        con = self._con()
        try:
            with self._write_lock:
                con.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _split_sql(_SCHEMA + _audit.SCHEMA):
                        con.execute(stmt)
                    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                    if row is None:
                        con.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                        con.execute("INSERT INTO meta(key, value) VALUES ('created', ?)", (_audit.utc_now(),))
                    elif int(row[0]) != SCHEMA_VERSION:
                        raise GalleryError(
                            f"{self.path}: store schema version {row[0]}, this build reads {SCHEMA_VERSION}"
                        )
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
        except _STORE_ERRORS as exc:
            raise GalleryError(f"{self.path}: not a usable biomatch store ({exc})") from None

    def _con(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 objects must stay in their thread)."""
        if self._closed:
            raise GalleryError(f"{self.path}: the gallery is closed")
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=FULL")
                con.execute("PRAGMA foreign_keys=ON")
                con.execute("PRAGMA secure_delete=ON")
                con.execute(f"PRAGMA mmap_size={STORE_MMAP_BYTES}")
            except _STORE_ERRORS as exc:
                raise GalleryError(f"{self.path}: not a usable biomatch store ({exc})") from None
            self._local.con = con
            with self._conns_lock:
                self._conns.append(con)
        return con

    @contextmanager
    def _write(self):
        """One write transaction: process lock + BEGIN IMMEDIATE (serialises other processes too)."""
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

    def _index_path(self, gallery: str) -> Path:
        return self.path.with_name(f"{self.path.name}.{gallery}.faiss")

    # -- encryption at rest (biomatch.encryption) ------------------------------
    @staticmethod
    def _store_key_id(con) -> str | None:
        row = con.execute("SELECT value FROM meta WHERE key = 'key_current'").fetchone()
        return row[0] if row else None

    @staticmethod
    def _register_key(con, ring) -> None:
        """Make ``ring.preferred`` the store's current key (inside a write transaction)."""
        kid = ring.preferred
        check = ring.seal(_KEY_CHECK_TEXT, _AAD_CHECK, kid)
        con.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(f"key_check:{kid}", check.hex()), ("key_current", kid)],
        )

    def _init_keys(self) -> None:
        """Check the handle's key against the store's (before anything is written with it)."""
        con = self._con()
        current = self._store_key_id(con)
        if current is None:
            if self._ring is None:
                return
            with self._write() as wcon:
                if self._store_key_id(wcon) is None:  # another process may have won the race
                    self._register_key(wcon, self._ring)
                    _audit.append(wcon, "encryption", _operator(None), {"key_id": self._ring.preferred, "enabled": True})
            self._featstore.wipe()  # plaintext derived rows must not outlive the switch
            current = self._store_key_id(con)
        if self._ring is None:
            raise GalleryError(
                f"{self.path}: the store is encrypted (key id {current}); give Gallery.open(..., key=...) or set {_enc.ENV_KEY}"
            )
        if not self._ring.holds(current):
            raise GalleryError(
                f"key: wrong key for {self.path}: the store is encrypted under key id {current}, "
                f"the key given has id {', '.join(self._ring.ids)}"
            )
        row = con.execute("SELECT value FROM meta WHERE key = ?", (f"key_check:{current}",)).fetchone()
        try:
            ok = row is not None and self._ring.open(bytes.fromhex(row[0]), _AAD_CHECK, "key check") == _KEY_CHECK_TEXT
        except (GalleryError, ValueError):
            ok = False
        if not ok:
            raise GalleryError(f"key: the key with id {current} does not open {self.path} (key check failed)")
        self._ring.preferred = current  # derived files are sealed with the store's key
        self._featstore.crypt = (self._ring.seal, self._ring.open)

    def _seal(self, con, data: bytes, aad: bytes) -> bytes:
        """Encrypt with the store's current key when the store is encrypted (inside a write transaction)."""
        kid = self._store_key_id(con)
        if kid is None:
            return data
        if self._ring is None or not self._ring.holds(kid):
            raise GalleryError(
                f"{self.path}: the store's key is now key id {kid}, which this handle does not hold "
                "(rotated by another handle); reopen with key=[new key, old key]"
            )
        return self._ring.seal(data, aad, kid)

    def _unseal(self, blob, aad: bytes, name: str) -> bytes:
        if not _enc.is_sealed(blob):
            return bytes(blob)  # plaintext row (store not encrypted, or written before encryption was on)
        if self._ring is None:
            raise GalleryError(f"{name}: encrypted, and this handle holds no key")
        return self._ring.open(blob, aad, name)

    def _template(self, blob, finger_id) -> Template:
        name = f"store finger {finger_id}"
        return Template.from_bytes(self._unseal(blob, _AAD_TEMPLATE, name), name=name)

    def _index_crypt(self, gallery: str):
        """(seal, unseal) callables for a gallery's index file; (None, None) when not encrypted."""
        if self._ring is None:
            return None, None
        ring, aad, name = self._ring, f"biomatch:index:{gallery}".encode(), f"index file of {gallery!r}"
        return (lambda data: ring.seal(data, aad)), (lambda blob: ring.open(blob, aad, name))

    def _save_index(self, idx, gallery: str) -> None:
        idx.save(self._index_path(gallery), gallery, seal=self._index_crypt(gallery)[0])

    def _load_index(self, gallery: str):
        from .index import GalleryIndex

        return GalleryIndex.load(self._index_path(gallery), gallery, unseal=self._index_crypt(gallery)[1])

    @property
    def encrypted(self) -> bool:
        """Whether the store encrypts templates and originals at rest."""
        return self._store_key_id(self._con()) is not None

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
        _check_gallery_name(name)
        row = self._gallery_row(con, name)
        if row is None:
            raise GalleryError(f"gallery: no gallery named {name!r} in {self.path}")
        return row

    # -- enrolment ------------------------------------------------------------
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
        """Enrol a new subject.

        Parameters
        ----------
        subject_id : str
        fingers : dict of int -> Template, template bytes/path, image path or 2-D uint8 array
            Keyed by FGP position 0-10. Images are extracted.
        gallery : str
            Created on first enrolment.
        operator : str, optional
            Who enrols (default: the login name).
        metadata : dict, optional
            JSON-ready data kept with the subject.
        transaction_id : str, optional
            Caller's transaction id (e.g. the ANSI/NIST TCN) for the audit.
        originals : dict of (int or None) -> bytes, optional
            Original images or transactions to keep (key: position, None for a whole transaction).
        keep_originals : bool
            Keep the bytes of image files given in ``fingers``.
        context : dict, optional
            JSON-ready facts for the audit record (e.g. ``{"ori": ..., "tcn": ...}``); no biometric data.

        Returns
        -------
        int
            The audit record's sequence number.

        Raises
        ------
        GalleryError, TemplateError
            Nothing is stored when any input is bad or the subject exists.
        """
        subject_id, operator, transaction_id, meta_text, checked, extra, ctx = _check_enrolment(
            subject_id, fingers, gallery, operator, transaction_id, metadata, originals, context)
        prepared = self._prepare(checked)
        with self._write() as con:
            gid, gen = self._gallery_row(con, gallery, create=True)
            if con.execute("SELECT 1 FROM subjects WHERE gallery_id = ? AND subject = ?", (gid, subject_id)).fetchone():
                raise GalleryError(f"subject_id: {subject_id!r} is already enrolled in gallery {gallery!r} (use update)")
            now = _audit.utc_now()
            sid = con.execute(
                "INSERT INTO subjects(gallery_id, subject, metadata, created, updated) VALUES (?, ?, ?, ?, ?)",
                (gid, subject_id, meta_text, now, now),
            ).lastrowid
            added = self._insert_fingers(con, sid, prepared, gid, gen + 1)
            self._insert_originals(con, sid, checked if keep_originals else {}, extra)
            con.execute("UPDATE galleries SET generation = ? WHERE id = ?", (gen + 1, gid))
            rec = _audit.append(
                con,
                "enroll",
                operator,
                {
                    "transaction_id": transaction_id,
                    "gallery": gallery,
                    "subject": subject_id,
                    "fingers": {str(p): prepared[p]["sha256"] for p in sorted(prepared)},
                    "context": ctx,
                    "software": _audit.software(),
                },
            )
        self._index_added(gallery, gen, added)
        return rec["seq"]

    def enroll_many(
        self,
        subjects: Iterable,
        *,
        gallery: str = "default",
        operator: str | None = None,
        transaction_id: str | None = None,
        progress=None,
    ) -> int:
        """Enrol many subjects, :data:`BULK_BATCH` fingers per transaction (one audit record each).

        Parameters
        ----------
        subjects : iterable of (subject_id, fingers) or (subject_id, fingers, metadata)
        progress : callable(int), optional
            Called with the number of subjects committed after each batch.

        Returns
        -------
        int
            Subjects enrolled. A bad subject raises before its batch is committed;
            earlier batches stay enrolled.
        """
        _check_gallery_name(gallery)
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        total = 0
        batch: list = []
        n_fingers = 0
        for item in subjects:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise GalleryError("subjects: each item must be (subject_id, fingers) or (subject_id, fingers, metadata)")
            sid = _check_subject(item[0])
            checked = _check_fingers(item[1], f"fingers of {sid!r}")
            meta_text = _check_metadata(item[2] if len(item) == 3 else None)
            batch.append((sid, checked, meta_text, self._prepare(checked)))
            n_fingers += len(checked)
            if n_fingers >= BULK_BATCH:
                total += self._commit_batch(batch, gallery, operator, transaction_id)
                if progress is not None:
                    progress(len(batch))
                batch, n_fingers = [], 0
        if batch:
            total += self._commit_batch(batch, gallery, operator, transaction_id)
            if progress is not None:
                progress(len(batch))
        return total

    def _commit_batch(self, batch, gallery, operator, transaction_id) -> int:
        with self._write() as con:
            gid, gen = self._gallery_row(con, gallery, create=True)
            now = _audit.utc_now()
            added = []
            seen = set()
            for sid, checked, meta_text, prepared in batch:
                if sid in seen or con.execute(
                    "SELECT 1 FROM subjects WHERE gallery_id = ? AND subject = ?", (gid, sid)
                ).fetchone():
                    raise GalleryError(f"subject_id: {sid!r} is already enrolled in gallery {gallery!r}")
                seen.add(sid)
                rowid = con.execute(
                    "INSERT INTO subjects(gallery_id, subject, metadata, created, updated) VALUES (?, ?, ?, ?, ?)",
                    (gid, sid, meta_text, now, now),
                ).lastrowid
                added += self._insert_fingers(con, rowid, prepared, gid, gen + 1)
                self._insert_originals(con, rowid, checked, {})
                _audit.append(
                    con,
                    "enroll",
                    operator,
                    {
                        "transaction_id": transaction_id,
                        "gallery": gallery,
                        "subject": sid,
                        "fingers": {str(p): prepared[p]["sha256"] for p in sorted(prepared)},
                        "software": _audit.software(),
                    },
                )
            con.execute("UPDATE galleries SET generation = ? WHERE id = ?", (gen + 1, gid))
        self._index_added(gallery, gen, added)
        return len(batch)

    def _prepare(self, checked) -> dict:
        """Template bytes, hash and index codes of validated fingers (outside any transaction)."""
        from .descriptors import encode
        from .index import finger_codes
        from .scoring import pack

        out = {}
        for pos, (given, _) in checked.items():
            data = given.to_bytes()
            # descriptors, rescoring rows and codes from the template *as stored* (the binary
            # form quantizes): a store rebuilt from its bytes then scores exactly as before
            t = Template.from_bytes(data, name=f"finger {pos}")
            out[pos] = {
                "template": t,
                "bytes": data,
                "sha256": hashlib.sha256(data).hexdigest(),
                "codes": finger_codes(encode(t)),
                "packed": pack([t]),
            }
        return out

    def _insert_fingers(self, con, sid: int, prepared: dict, gid: int, generation: int) -> list:
        added = []
        for pos in sorted(prepared):
            p = prepared[pos]
            t = p["template"]
            fid = self._insert_finger(con, sid, pos, p["bytes"], p["sha256"], len(t), t.quality, gid, generation)
            added.append((fid, pos, p["codes"], t, p["sha256"], p["packed"]))
        return added

    def _insert_finger(self, con, sid: int, pos: int, data: bytes, sha: str, n_minutiae: int, quality: int,
                       gid: int, generation: int) -> int:
        """One finger row (template sealed) and its 'add' change; returns the finger id."""
        fid = con.execute(
            "INSERT INTO fingers(subject_id, position, template, sha256, n_minutiae, quality) VALUES (?, ?, ?, ?, ?, ?)",
            (sid, pos, self._seal(con, data, _AAD_TEMPLATE), sha, n_minutiae, quality),
        ).lastrowid
        con.execute(
            "INSERT INTO changes(gallery_id, generation, op, finger_id, position) VALUES (?, ?, 'add', ?, ?)",
            (gid, generation, fid, pos),
        )
        return fid

    def _insert_originals(self, con, sid: int, checked: dict, extra: dict) -> None:
        rows = [(pos, "image", original) for pos, (_, original) in checked.items() if original is not None]
        rows += [(pos, "transaction" if pos is None else "image", data) for pos, data in extra.items()]
        self._insert_original_rows(con, sid, rows)

    def _insert_original_rows(self, con, sid: int, rows) -> None:
        """Originals [(position or None, kind, bytes)] of a subject, sealed."""
        for pos, kind, data in rows:
            con.execute(
                "INSERT INTO originals(subject_id, position, kind, data) VALUES (?, ?, ?, ?)",
                (sid, pos, kind, self._seal(con, data, _AAD_ORIGINAL)),
            )

    # -- update / delete -------------------------------------------------------
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
        """Replace or add fingers of an enrolled subject, remove some, or replace its metadata.

        Returns the audit record's sequence number. Raises GalleryError for an
        unknown subject or gallery; nothing changes on bad input.
        """
        subject_id = _check_subject(subject_id)
        _check_gallery_name(gallery)
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        checked = _check_fingers(fingers) if fingers is not None else {}
        removing = sorted({_check_position(p, "remove_positions") for p in remove_positions})
        if not checked and not removing and metadata is None:
            raise GalleryError("update: nothing to change (give fingers, remove_positions or metadata)")
        if set(checked) & set(removing):
            raise GalleryError(f"remove_positions: {sorted(set(checked) & set(removing))} are also given in fingers")
        meta_text = _check_metadata(metadata)
        prepared = self._prepare(checked)
        with self._write() as con:
            gid, gen = self._require_gallery(con, gallery)
            row = con.execute("SELECT id FROM subjects WHERE gallery_id = ? AND subject = ?", (gid, subject_id)).fetchone()
            if row is None:
                raise GalleryError(f"subject_id: {subject_id!r} is not enrolled in gallery {gallery!r}")
            sid = row[0]
            existing = dict(con.execute("SELECT position, id FROM fingers WHERE subject_id = ?", (sid,)).fetchall())
            shas = dict(con.execute("SELECT id, sha256 FROM fingers WHERE subject_id = ?", (sid,)).fetchall())
            missing = [p for p in removing if p not in existing]
            if missing:
                raise GalleryError(f"remove_positions: subject {subject_id!r} has no finger at {missing}")
            if len(set(existing) - set(removing) | set(checked)) == 0:
                raise GalleryError(f"remove_positions: would leave subject {subject_id!r} without fingers (use delete)")
            removed = []
            for pos in sorted(set(removing) | (set(checked) & set(existing))):
                fid = existing[pos]
                con.execute("DELETE FROM fingers WHERE id = ?", (fid,))
                con.execute("DELETE FROM originals WHERE subject_id = ? AND position = ?", (sid, pos))
                con.execute(
                    "INSERT INTO changes(gallery_id, generation, op, finger_id, position) VALUES (?, ?, 'del', ?, ?)",
                    (gid, gen + 1, fid, pos),
                )
                removed.append(fid)
            added = self._insert_fingers(con, sid, prepared, gid, gen + 1)
            self._insert_originals(con, sid, checked, {})
            if metadata is not None:
                con.execute("UPDATE subjects SET metadata = ? WHERE id = ?", (meta_text, sid))
            con.execute("UPDATE subjects SET updated = ? WHERE id = ?", (_audit.utc_now(), sid))
            con.execute("UPDATE galleries SET generation = ? WHERE id = ?", (gen + 1, gid))
            rec = _audit.append(
                con,
                "update",
                operator,
                {
                    "transaction_id": transaction_id,
                    "gallery": gallery,
                    "subject": subject_id,
                    "fingers": {str(p): prepared[p]["sha256"] for p in sorted(prepared)},
                    "removed_positions": removing,
                    "metadata_replaced": metadata is not None,
                    "software": _audit.software(),
                },
            )
        self._forget(removed)
        self._drop_features([shas[f] for f in removed])
        self._index_changed(gallery, gen, added, removed)
        return rec["seq"]

    def delete(self, subject_id: str, *, gallery: str = "default", operator: str | None = None,
               transaction_id: str | None = None, context: dict | None = None) -> int:
        """Delete a subject for good: its rows, originals and index entries.

        The audit keeps only that the deletion happened (subject id, gallery,
        operator, time). SQLite runs with ``secure_delete`` (freed pages are
        zeroed) and the WAL is checkpointed; the gallery's index file is
        rewritten at once. Returns the audit record's sequence number.
        """
        subject_id = _check_subject(subject_id)
        _check_gallery_name(gallery)
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        ctx = _check_context(context)
        with self._write() as con:
            gid, gen = self._require_gallery(con, gallery)
            row = con.execute("SELECT id FROM subjects WHERE gallery_id = ? AND subject = ?", (gid, subject_id)).fetchone()
            if row is None:
                raise GalleryError(f"subject_id: {subject_id!r} is not enrolled in gallery {gallery!r}")
            fingers, rec = self._delete_rows(con, gid, gen, [(row[0], subject_id)], gallery, operator,
                                             transaction_id, ctx)
        self._deleted(gallery, gen, fingers, save=True)
        # readers (other threads or processes) can block it: the WAL copy goes at the next full checkpoint
        self._checkpoint()
        return rec["seq"]

    def _delete_rows(self, con, gid: int, gen: int, rows: list, gallery: str, operator: str, transaction_id,
                     ctx) -> tuple[list, dict]:
        """Delete subjects ``rows`` [(subjects.id, subject id)] inside the caller's write transaction:
        their derived rows, a 'del' change per finger, the rows (cascading to fingers and originals),
        the generation bump and one audit record per subject. Returns (fingers [(id, position,
        sha256)], the last audit record)."""
        sids = [r[0] for r in rows]
        fingers = []
        for i in range(0, len(sids), 400):  # SQL IN lists under older SQLite's 999-parameter limit
            part = sids[i : i + 400]
            q = ",".join("?" * len(part))
            fingers += con.execute(f"SELECT id, position, sha256 FROM fingers WHERE subject_id IN ({q})", part).fetchall()
        # derived rows go before the commit too: a kill between the commit and the drop after it
        # would otherwise leave them behind (a row missing for a still-enrolled finger is recomputed)
        gone = set(sids)
        shared = {sha for _, _, sha in fingers
                  if any(r[0] not in gone for r in con.execute("SELECT subject_id FROM fingers WHERE sha256 = ?", (sha,)))}
        with self._feat_lock:
            self._featstore.delete(sorted({sha for _, _, sha in fingers} - shared))
        con.executemany(
            "INSERT INTO changes(gallery_id, generation, op, finger_id, position) VALUES (?, ?, 'del', ?, ?)",
            [(gid, gen + 1, fid, pos) for fid, pos, _ in fingers],
        )
        con.executemany("DELETE FROM subjects WHERE id = ?", [(sid,) for sid in sids])  # cascades
        con.execute("UPDATE galleries SET generation = ? WHERE id = ?", (gen + 1, gid))
        rec = None
        for _, subject in rows:
            rec = _audit.append(con, "delete", operator, {"transaction_id": transaction_id, "gallery": gallery,
                                                         "subject": subject, "context": ctx})
        return fingers, rec

    def _deleted(self, gallery: str, gen_before: int, fingers: list, save: bool) -> None:
        """After a deletion committed: caches, derived rows written back meanwhile, the index."""
        removed = [f for f, _, _ in fingers]
        self._forget(removed)
        self._drop_features([sha for _, _, sha in fingers])
        self._index_changed(gallery, gen_before, [], removed, save=save)

    def delete_many(self, subject_ids, *, gallery: str = "default", operator: str | None = None,
                    transaction_id: str | None = None, context: dict | None = None,
                    batch: int = DELETE_BATCH) -> int:
        """Delete many subjects for good, as :meth:`delete` each, ``batch`` subjects per transaction.

        One audit record per subject (as :meth:`delete`); the index file is
        rewritten once at the end instead of once per subject (a 1 GB file at a
        million fingers), so a kill mid-way leaves the deleted subjects' codes
        in the index file on disk until the next save, never in a search (the
        index is caught up from the store's changes when loaded). Every id is
        checked (each enrolled in ``gallery``, none twice) before anything is
        deleted. Returns the number of subjects deleted.
        """
        _check_gallery_name(gallery)
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        ctx = _check_context(context)
        _check_batch(batch)
        if isinstance(subject_ids, str):
            raise GalleryError("subject_ids: expected a collection of subject ids, got one string")
        ids = [_check_subject(s) for s in subject_ids]
        if len(set(ids)) != len(ids):
            dup = next(s for s, n in collections.Counter(ids).items() if n > 1)
            raise GalleryError(f"subject_ids: {dup!r} is given twice")
        con = self._con()
        gid, _ = self._require_gallery(con, gallery)
        enrolled: set = set()
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = ",".join("?" * len(part))
            enrolled.update(r[0] for r in con.execute(
                f"SELECT subject FROM subjects WHERE gallery_id = ? AND subject IN ({q})", [gid, *part]))
        missing = [s for s in ids if s not in enrolled]
        if missing:
            raise GalleryError(f"subject_id: {missing[0]!r} is not enrolled in gallery {gallery!r}"
                               + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        for i in range(0, len(ids), batch):
            part = ids[i : i + batch]
            with self._write() as con:
                gid, gen = self._require_gallery(con, gallery)
                q = ",".join("?" * len(part))
                rows = con.execute(f"SELECT id, subject FROM subjects WHERE gallery_id = ? AND subject IN ({q})",
                                   [gid, *part]).fetchall()
                if len(rows) != len(part):  # deleted by another writer since the check
                    gone = sorted(set(part) - {s for _, s in rows})
                    raise GalleryError(f"subject_id: {gone[0]!r} is not enrolled in gallery {gallery!r}")
                fingers, _ = self._delete_rows(con, gid, gen, rows, gallery, operator, transaction_id, ctx)
            self._deleted(gallery, gen, fingers, save=False)
        if ids:
            with self._index_lock:  # one rewrite of the index file, without the deleted codes
                if gallery in self._indexes or self._index_path(gallery).exists():
                    self._save_index(self.index(gallery), gallery)
                    self._dirty.discard(gallery)
            self._checkpoint()
        return len(ids)

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
        _check_gallery_name(gallery)
        src_name = _check_gallery_name(gallery if source_gallery is None else source_gallery, "source_gallery")
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        if select is not None and not callable(select):
            raise GalleryError(f"select: expected a callable(subject_id) -> bool, got {type(select).__name__}")
        _check_batch(batch)
        if on_existing not in ("raise", "skip"):
            raise GalleryError(f"on_existing: expected 'raise' or 'skip', got {on_existing!r}")
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
                    f"SELECT id, subject_id, position, template, sha256, n_minutiae, quality FROM fingers "
                    f"WHERE subject_id IN ({q}) ORDER BY id", ids).fetchall()
                originals = scon.execute(
                    f"SELECT subject_id, position, kind, data FROM originals WHERE subject_id IN ({q}) ORDER BY id",
                    ids).fetchall()
                by_subject: dict[int, list] = collections.defaultdict(list)
                for fid, s_id, pos, blob, sha, n_min, quality in fingers:
                    data = src._unseal(blob, _AAD_TEMPLATE, f"{src.path} finger {fid}")
                    if hashlib.sha256(data).hexdigest() != sha:
                        raise GalleryError(f"source: {src.path} finger {fid}: template does not match its SHA-256 "
                                           "(damaged store; run `biomatch check` on it)")
                    by_subject[s_id].append((fid, pos, data, sha, n_min, quality))
                orig_by: dict[int, list] = collections.defaultdict(list)
                for s_id, pos, kind, blob in originals:
                    orig_by[s_id].append((pos, kind, src._unseal(blob, _AAD_ORIGINAL, f"{src.path} original")))
                with self._write() as con:
                    gid, gen = self._gallery_row(con, gallery, create=True)
                    if gen_start is None:
                        gen_start = gen
                    for s_id, subject, meta_text, created, updated in part:
                        rowid = con.execute(
                            "INSERT INTO subjects(gallery_id, subject, metadata, created, updated) VALUES (?, ?, ?, ?, ?)",
                            (gid, subject, meta_text, created, updated)).lastrowid
                        shas = {}
                        for fid, pos, data, sha, n_min, quality in by_subject[s_id]:
                            fid_map[fid] = self._insert_finger(con, rowid, pos, data, sha, n_min, quality, gid, gen + 1)
                            shas[str(pos)] = sha
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
        from .index import GalleryIndex

        with self._index_lock:
            idx = self._indexes.get(gallery)
            if idx is None and gen_start == 0 and not self._index_path(gallery).exists():
                idx = self._indexes[gallery] = GalleryIndex(0)
            con = self._con()
            _, gen = self._require_gallery(con, gallery)
            if idx is None or idx.generation != gen_start or gen != gen_end:
                return  # another change came between (or no index loaded): index() catches up from the store
            idx.copy_from(src_idx, fid_map, generation=gen_end)
            self._save_index(idx, gallery)
            self._dirty.discard(gallery)

    def _drop_features(self, shas) -> None:
        """Delete derived rows of templates no finger of the store holds any more."""
        with self._feat_lock:
            held = self._held_shas(shas)
            self._featstore.delete([s for s in set(shas) if s not in held])

    def _put_features(self, items, raw: bool = False) -> None:
        """Write derived rows (sha, packed; serialised rows with ``raw``) of templates still
        enrolled (outside any transaction).

        Under the same lock as :meth:`_drop_features`, so that a search that
        read a template just before its deletion cannot write its row back after it.
        """
        with self._feat_lock:
            held = self._held_shas([sha for sha, _ in items])
            (self._featstore.put_raw if raw else self._featstore.put)([(sha, e) for sha, e in items if sha in held])

    def _held_shas(self, shas) -> set:
        con = self._con()
        shas = sorted(set(shas))
        held = set()
        for i in range(0, len(shas), 500):
            part = shas[i : i + 500]
            q = ",".join("?" * len(part))
            held.update(r[0] for r in con.execute(f"SELECT sha256 FROM fingers WHERE sha256 IN ({q})", part))
        return held

    def _forget(self, finger_ids) -> None:
        for fid in finger_ids:
            self._features.pop(fid)
            self._packs.pop(fid)

    def rotate_key(self, new_key, *, operator: str | None = None, batch: int = ROTATE_BATCH) -> dict:
        """Re-encrypt every template and original under ``new_key``, online.

        The new key becomes the store's current key first (every later write
        uses it), then the rows still under another key - or in plaintext, so
        this also encrypts an existing plaintext store - are re-encrypted
        ``batch`` rows per write transaction; searches and enrolments carry on
        in between, and this handle reads rows under the old and the new key
        until the last one is done. The index files are rewritten and the
        feature file emptied (refilled lazily) under the new key; the old
        key's check is removed, so afterwards the store opens with the new key
        only. Other processes must hold both keys (``key=[new, old]``) while
        the rotation runs. Audited at start and end.

        Parameters
        ----------
        new_key : bytes or str
            16/24/32-byte AES key or its base64 text (may equal the current
            key: then only plaintext rows are encrypted).
        operator : str, optional
        batch : int
            Rows per transaction.

        Returns
        -------
        dict
            ``{"key_id": ..., "previous_key_id": ..., "templates": n, "originals": n}`` re-encrypted.
        """
        new = _enc.KeyRing.from_user(new_key, env=False)
        if new is None or isinstance(new_key, (list, tuple)):
            raise GalleryError("new_key: expected one key (bytes or base64 text)")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise GalleryError(f"batch: expected a positive integer, got {batch!r}")
        operator = _operator(operator)
        with self._write() as con:
            old = self._store_key_id(con)
            self._ring = new if self._ring is None else self._ring.merged(new)
            self._register_key(con, self._ring)
            _audit.append(con, "key_rotation", operator, {"key_id": new.preferred, "previous_key_id": old, "phase": "start"})
        self._featstore.crypt = (self._ring.seal, self._ring.open)
        self._featstore.wipe()
        prefix = _enc.MAGIC + bytes.fromhex(new.preferred)
        counts = {}
        for table, column, aad in (("fingers", "template", _AAD_TEMPLATE), ("originals", "data", _AAD_ORIGINAL)):
            n, last = 0, 0
            while True:
                with self._write() as con:
                    rows = con.execute(
                        f"SELECT id, {column} FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
                    ).fetchall()
                    for rid, blob in rows:
                        if bytes(blob[: len(prefix)]) != prefix:
                            plain = self._unseal(blob, aad, f"{table} row {rid}")
                            con.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", (self._seal(con, plain, aad), rid))
                            n += 1
                if not rows:
                    break
                last = rows[-1][0]
            counts[table] = n
        for name in self.galleries():  # index files: re-sealed under the new key
            with self._index_lock:
                self._save_index(self.index(name), name)
                self._dirty.discard(name)
        with self._write() as con:
            con.execute("DELETE FROM meta WHERE key LIKE 'key_check:%' AND key != ?", (f"key_check:{new.preferred}",))
            _audit.append(con, "key_rotation", operator, {"key_id": new.preferred, "previous_key_id": old, "phase": "done",
                                                          "templates": counts["fingers"], "originals": counts["originals"]})
        self._ring = self._ring.only(new.preferred)
        self._featstore.crypt = (self._ring.seal, self._ring.open)
        self._checkpoint()
        return {"key_id": new.preferred, "previous_key_id": old, "templates": counts["fingers"], "originals": counts["originals"]}

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
        subject_id = _check_subject(subject_id)
        con = self._con()
        gid, _ = self._require_gallery(con, gallery)
        row = con.execute(
            "SELECT id, metadata, created, updated FROM subjects WHERE gallery_id = ? AND subject = ?", (gid, subject_id)
        ).fetchone()
        if row is None:
            raise GalleryError(f"subject_id: {subject_id!r} is not enrolled in gallery {gallery!r}")
        sid, meta, created, updated = row
        fingers = {
            pos: self._template(blob, fid)
            for fid, pos, blob in con.execute("SELECT id, position, template FROM fingers WHERE subject_id = ? ORDER BY position", (sid,))
        }
        originals = tuple(
            con.execute("SELECT position, kind, length(data) FROM originals WHERE subject_id = ? ORDER BY id", (sid,)).fetchall()
        )
        return SubjectRecord(subject_id, gallery, fingers, json.loads(meta) if meta else None, created, updated, originals)

    def originals(self, subject_id: str, *, gallery: str = "default") -> list[tuple]:
        """The kept originals of a subject: list of (position or None, kind, bytes), decrypted."""
        subject_id = _check_subject(subject_id)
        con = self._con()
        gid, _ = self._require_gallery(con, gallery)
        rows = con.execute(
            "SELECT originals.id, position, kind, data FROM originals JOIN subjects ON subjects.id = originals.subject_id "
            "WHERE gallery_id = ? AND subject = ? ORDER BY originals.id",
            (gid, subject_id),
        ).fetchall()
        return [(pos, kind, self._unseal(data, _AAD_ORIGINAL, f"original {oid}")) for oid, pos, kind, data in rows]

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
            n_fing, n_bytes = con.execute(
                "SELECT count(*), coalesce(sum(length(template)), 0) FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
                "WHERE gallery_id = ?",
                (gid,),
            ).fetchone()
            path = self._index_path(name)
            manifest = None
            if path.exists():
                from .index import GalleryIndex

                manifest = GalleryIndex.read_manifest(path)
            idx = self._indexes.get(name)
            out["galleries"][name] = {
                "subjects": n_sub,
                "fingers": n_fing,
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

    # -- index maintenance -------------------------------------------------------------
    def _index_added(self, gallery: str, gen_before: int, added: list) -> None:
        self._index_changed(gallery, gen_before, added, [])

    def _index_changed(self, gallery: str, gen_before: int, added: list, removed: list, save: bool = False) -> None:
        """Apply this process's own committed change to a loaded index that was current before it."""
        if added:
            self._put_features([(a[4], a[5]) for a in added])
        with self._index_lock:
            idx = self._indexes.get(gallery)
            if idx is None and gen_before == 0 and not self._index_path(gallery).exists():
                from .index import GalleryIndex

                idx = self._indexes[gallery] = GalleryIndex(0)  # a new gallery: build as we enrol
            if idx is not None and idx.generation == gen_before:
                if removed:
                    idx.remove(removed)
                idx.add([(a[0], a[1], a[2]) for a in added], generation=gen_before + 1)
                self._dirty.add(gallery)
            if save:
                if idx is None and self._index_path(gallery).exists():
                    idx = self.index(gallery)  # load, catch up (drops the deleted fingers)
                if idx is not None:
                    self._save_index(idx, gallery)
                    self._dirty.discard(gallery)

    def index(self, gallery: str = "default"):
        """The gallery's :class:`biomatch.index.GalleryIndex`, loaded, caught up or rebuilt as needed."""

        con = self._con()
        gid, gen = self._require_gallery(con, gallery)
        with self._index_lock:
            idx = self._indexes.get(gallery)
            if idx is None:
                idx = self._load_index(gallery)
                if idx is not None and idx.generation > gen:
                    idx = None  # written against another state of the store
                if idx is None:
                    idx = self._rebuild(con, gid, gen)
                    self._save_index(idx, gallery)
                self._indexes[gallery] = idx
            if idx.generation < gen:
                n = self._catch_up(con, gid, idx)
                self._dirty.add(gallery)
                if n:
                    idx.generation = max(idx.generation, gen)
            return idx

    def rebuild_index(self, gallery: str = "default"):
        """Rebuild a gallery's index from the store and save it."""
        con = self._con()
        gid, gen = self._require_gallery(con, gallery)
        with self._index_lock:
            idx = self._rebuild(con, gid, gen)
            self._save_index(idx, gallery)
            self._indexes[gallery] = idx
            self._dirty.discard(gallery)
            return idx

    def _rebuild(self, con, gid: int, gen: int):
        from .index import GalleryIndex

        idx = GalleryIndex(gen)
        # one consistent snapshot: generation and fingers read in one transaction
        con.execute("BEGIN")
        try:
            gen = con.execute("SELECT generation FROM galleries WHERE id = ?", (gid,)).fetchone()[0]
            idx.generation = gen
            rows = con.execute(
                "SELECT fingers.id, position, template FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
                "WHERE gallery_id = ? ORDER BY fingers.id",
                (gid,),
            )
            self._add_rows(idx, rows)
        finally:
            con.execute("COMMIT")
        return idx

    def _add_rows(self, idx, rows, chunk: int = 2000) -> int:
        from .descriptors import encode
        from .index import finger_codes

        n = 0
        buf = []
        for fid, pos, blob in rows:
            t = self._template(blob, fid)
            buf.append((fid, pos, finger_codes(encode(t))))
            self._features.put(fid, t)
            if len(buf) >= chunk:
                idx.add(buf)
                n += len(buf)
                buf = []
        if buf:
            idx.add(buf)
            n += len(buf)
        return n

    def _catch_up(self, con, gid: int, idx) -> int:
        """Apply the store's changes after ``idx.generation``; returns the number applied."""
        con.execute("BEGIN")
        try:
            gen = con.execute("SELECT generation FROM galleries WHERE id = ?", (gid,)).fetchone()[0]
            changes = con.execute(
                "SELECT op, finger_id FROM changes WHERE gallery_id = ? AND generation > ? AND generation <= ? "
                "ORDER BY generation, rowid",
                (gid, idx.generation, gen),
            ).fetchall()
            dels = sorted({f for op, f in changes if op == "del"})
            adds = sorted({f for op, f in changes if op == "add"} - set(dels))
            if dels:
                idx.remove(dels)
                self._forget(dels)
            rows = []
            for i in range(0, len(adds), 500):
                part = adds[i : i + 500]
                q = ",".join("?" * len(part))
                rows += con.execute(f"SELECT id, position, template FROM fingers WHERE id IN ({q})", part).fetchall()
            self._add_rows(idx, rows)
            idx.generation = gen
        finally:
            con.execute("COMMIT")
        return len(changes) or 1

    # -- calibration and thresholds ----------------------------------------------------------
    def set_calibration(self, calibration, *, operator: str | None = None, transaction_id: str | None = None) -> int:
        """Store a :class:`biomatch.calibration.Calibration` (audited); later searches use it."""
        from .calibration import Calibration

        if not isinstance(calibration, Calibration):
            raise CalibrationError(f"calibration: expected a biomatch Calibration, got {type(calibration).__name__}")
        operator = _operator(operator)
        doc = calibration.to_json()
        with self._write() as con:
            con.execute("INSERT INTO calibration(doc, created) VALUES (?, ?)", (doc, _audit.utc_now()))
            rec = _audit.append(
                con,
                "calibration",
                operator,
                {"transaction_id": _transaction_id(transaction_id), "sha256": hashlib.sha256(doc.encode()).hexdigest()},
            )
        self._cal_cache = None
        return rec["seq"]

    def _calibration_doc(self, con):
        row = con.execute("SELECT id, doc FROM calibration ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        try:
            doc = json.loads(row[1])
        except ValueError:
            doc = {}
        return row[0], {k: doc.get(k) for k in ("matcher_version", "source", "date", "n_scores") if k in doc}

    def calibration(self):
        """The calibration searches use: the store's latest, else biomatch's default, else None."""
        return self._calibration_entry()[1]

    def _calibration_entry(self):
        """(store calibration id or None for the default, the calibration or None)."""
        con = self._con()
        row = con.execute("SELECT id, doc FROM calibration ORDER BY id DESC LIMIT 1").fetchone()
        cache = getattr(self, "_cal_cache", None)
        key = row[0] if row else None
        if cache is not None and cache[0] == key:
            return cache
        from . import calibration as _cal

        cal = None
        if row is not None:
            cal = _cal.Calibration.from_json(row[1])
        else:
            try:
                cal = _cal.default_calibration()
            except (BiomatchError, OSError):
                cal = None
        self._cal_cache = (key, cal)
        return key, cal

    @staticmethod
    def _calibration_label(entry) -> str | None:
        """A calibration entry (:meth:`_calibration_entry`) as an audit record names it:
        ``"store:<id>"`` (one set by :meth:`set_calibration`, whose own audit record holds
        its SHA-256), ``"default:<fit date>"`` (biomatch's shipped default) or None."""
        key, cal = entry
        if cal is None:
            return None
        return f"store:{key}" if key is not None else f"default:{cal.metadata.get('date', 'unknown')}"

    def set_threshold(self, value: float, *, gallery: str | None = None, operator: str | None = None,
                      transaction_id: str | None = None) -> int:
        """Set the decision threshold (a raw single-finger score; hit when score >= value), audited.

        Parameters
        ----------
        value : float or Threshold
            Raw score in [0, 1], or a :class:`~biomatch.calibration` ``Threshold`` (its ``.value``).
        gallery : str, optional
            The gallery it applies to; None sets the store-wide default.
        """
        value = _threshold_value(value)
        name = "*" if gallery is None else _check_gallery_name(gallery)
        operator = _operator(operator)
        with self._write() as con:
            old = con.execute("SELECT value FROM thresholds WHERE gallery = ?", (name,)).fetchone()
            con.execute(
                "INSERT INTO thresholds(gallery, value, set_at, operator) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(gallery) DO UPDATE SET value = excluded.value, set_at = excluded.set_at, operator = excluded.operator",
                (name, value, _audit.utc_now(), operator),
            )
            rec = _audit.append(
                con,
                "threshold",
                operator,
                {"transaction_id": _transaction_id(transaction_id), "gallery": gallery, "threshold": value,
                 "previous": old[0] if old else None},
            )
        return rec["seq"]

    def threshold(self, gallery: str | None = None) -> float | None:
        """The configured threshold of a gallery (else the store-wide one), or None."""
        con = self._con()
        for name in ([gallery] if gallery else []) + ["*"]:
            row = con.execute("SELECT value FROM thresholds WHERE gallery = ?", (name,)).fetchone()
            if row:
                return float(row[0])
        return None

    # -- search -------------------------------------------------------------------------------
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
    ) -> list[Candidate]:
        """Search probe fingers against one or more galleries.

        Parameters
        ----------
        probe_fingers : dict of int -> Template, template bytes/path, image path or array
            Keyed by FGP position (0 when unknown).
        galleries : list of str, optional
            Default: every gallery of the store.
        max_candidates : int
            Candidate list length L (1..1000).
        threshold : float or Threshold, optional
            Raw single-finger score; default the configured threshold (:meth:`set_threshold`).
            With a threshold only hits are returned (see the module docstring for multi-finger probes).
        operator, transaction_id : str, optional
            Recorded in the audit.
        context : dict, optional
            JSON-ready facts for the audit record (e.g. the transaction's ORI).

        Returns
        -------
        list of Candidate
            Best first.
        """
        probes = {p: t for p, (t, _) in _check_fingers(probe_fingers, "probe_fingers").items()}
        operator = _operator(operator)
        transaction_id = _transaction_id(transaction_id)
        ctx = _check_context(context)
        if isinstance(max_candidates, bool) or not isinstance(max_candidates, (int, np.integer)) or not 1 <= max_candidates <= MAX_CANDIDATES:
            raise GalleryError(f"max_candidates: expected an integer 1..{MAX_CANDIDATES}, got {max_candidates!r}")
        con = self._con()
        if galleries is None:
            names = self.galleries()
        else:
            if isinstance(galleries, str):
                galleries = [galleries]
            names = list(dict.fromkeys(_check_gallery_name(g, "galleries") for g in galleries))
            if not names:
                raise GalleryError("galleries: empty list")
            for g in names:
                self._require_gallery(con, g)
        if threshold is None and names:
            configured = {self.threshold(g) for g in names}
            threshold = min(v for v in configured if v is not None) if configured - {None} else None
        thr = None if threshold is None else _threshold_value(threshold)
        cal_entry = self._calibration_entry()
        cal = cal_entry[1]
        if thr is not None and cal is None:
            raise CalibrationError("threshold: no calibration in the store and no default calibration installed")

        from .calibration import fpir_from_fmr

        raw: list = []
        n_subjects = 0
        for g in names:
            gid, generation = self._require_gallery(con, g)
            n_subjects += self._n_subjects(con, gid, generation)
            raw += self._search_gallery(con, g, gid, probes)

        def fmr_of(scores):
            if cal is None:
                return np.full(len(scores), np.nan)
            return np.asarray(cal.fmr(np.asarray(scores, dtype=np.float64)), dtype=np.float64).ravel()

        # one calibration call for every per-finger score of the search (not one per subject)
        all_fmrs = fmr_of([s for _, _, per in raw for _, _, s, _ in per])
        rows = []
        start = 0
        for gname, subject, per in raw:  # per: list of (probe_pos, pos, score, fid)
            fmrs = all_fmrs[start : start + len(per)]
            start += len(per)
            fused = _fisher(fmrs)
            rows.append((fused, -sum(s for _, _, s, _ in per), gname, subject, per, fmrs))
        rows.sort(key=lambda r: (r[0] if not math.isnan(r[0]) else 2.0, r[1], r[2], r[3]))
        thr_fmr = float(fmr_of([thr])[0]) if thr is not None else None
        if thr_fmr is not None:
            rows = [r for r in rows if r[0] <= thr_fmr]
        rows = rows[:max_candidates]
        candidates = []
        for rank, (fused, neg, gname, subject, per, fmrs) in enumerate(rows, start=1):
            fingers = tuple(
                FingerScore(pp, pos, float(s), float(f), self._pairs(probes[pp], fid))
                for (pp, pos, s, fid), f in zip(per, fmrs)
            )
            fpir = float(fpir_from_fmr(fused, max(n_subjects, 1))) if not math.isnan(fused) else float("nan")
            candidates.append(Candidate(rank, subject, gname, float(-neg), float(fused), fpir, fingers))
        decision = "candidates" if thr is None else ("hit" if candidates else "no-hit")
        with self._write() as wcon:
            _audit.append(
                wcon,
                "search",
                operator,
                {
                    "transaction_id": transaction_id,
                    "probe": {str(p): _template_hash(t) for p, t in sorted(probes.items())},
                    "galleries": names,
                    "gallery_subjects": n_subjects,
                    "max_candidates": int(max_candidates),
                    "threshold": thr,
                    "decision": decision,
                    "context": ctx,
                    "software": _audit.software(),
                    "calibration": self._calibration_label(cal_entry),
                    "candidates": [
                        {"rank": c.rank, "gallery": c.gallery, "subject": c.subject, "score": round(c.score, 6),
                         "fmr": _json_float(c.fmr)}
                        for c in candidates
                    ],
                },
            )
        self._release_memory()
        return candidates

    def _release_memory(self) -> None:
        """Return the heap's free pages after a search's transient arrays, at most every RELEASE_INTERVAL_S."""
        now = time.monotonic()
        if now - self._released >= RELEASE_INTERVAL_S:
            self._released = now
            from .index import release_memory

            release_memory()

    def _search_gallery(self, con, gallery: str, gid: int, probes: dict) -> list:
        """Rescored subjects of one gallery: list of (gallery, subject, [(probe_pos, pos, score, finger_id)]).

        The three steps a sharded gallery runs apart (:mod:`biomatch.distributed`):
        :meth:`_neighbours` (FAISS k-NN of the probe cylinders), :func:`_shortlist_subjects`
        (votes -> subjects), :meth:`_rescore`.
        """
        n_fingers = self._n_fingers(con, gid)
        if n_fingers == 0:
            return []
        idx = self.index(gallery) if n_fingers > EXHAUSTIVE_MAX_FINGERS else None
        # one read snapshot from the shortlist's owners to the rescoring rows: a finger deleted
        # meanwhile by another thread is either wholly in this search or wholly out of it
        with self._snapshot(con):
            subjects = None  # exhaustive: every subject
            if idx is not None:
                subjects = _shortlist_subjects(self._neighbours(con, probes, idx), len(probes))
                if not subjects:
                    return []
            return self._rescore(con, gallery, gid, probes, subjects)

    @staticmethod
    def _n_fingers(con, gid: int) -> int:
        """Fingers of a gallery, counted up to EXHAUSTIVE_MAX_FINGERS + 1 (all a search needs to
        choose between exhaustive rescoring and the index; a full count costs O(N) per search)."""
        return con.execute(
            "SELECT count(*) FROM (SELECT 1 FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
            "WHERE gallery_id = ? LIMIT ?)", (gid, EXHAUSTIVE_MAX_FINGERS + 1)
        ).fetchone()[0]

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
            if pending:
                self._put_features(pending)

    def _search_neighbours(self, con, gallery: str, gid: int, probes: dict, nprobe=None) -> tuple[int, dict, dict]:
        """(fingers of the gallery, {probe position: Neighbours}, {position: codes}) - step 1 of a
        search, for a shard; ``nprobe`` ({position: IVF lists}, decided for the whole sharded
        gallery) as :meth:`biomatch.index.GalleryIndex.neighbours` takes it."""
        n_fingers = self._n_fingers(con, gid)
        if n_fingers == 0:
            return 0, {}, {}
        idx = self.index(gallery)
        with self._snapshot(con):
            return n_fingers, self._neighbours(con, probes, idx, nprobe), idx.sizes()

    def _search_rescore(self, con, gallery: str, gid: int, probes: dict, subjects) -> list:
        """Step 3 of a search, for a shard: :meth:`_rescore` in one read snapshot."""
        with self._snapshot(con):
            return self._rescore(con, gallery, gid, probes, subjects)

    def _neighbours(self, con, probes: dict, idx, nprobe=None) -> dict:
        """Per probe finger, the FAISS k-NN of its cylinders keyed by subject (see :class:`Neighbours`)."""
        from .descriptors import encode
        from .index import ANGLE_ID_BITS, K_NEIGHBOURS, probe_codes

        out = {}
        for pos, t in probes.items():
            codes = probe_codes(encode(t))
            raw = idx.neighbours(codes.codes, pos, K_NEIGHBOURS, nprobe)
            fid = raw.labels >> ANGLE_ID_BITS
            ufid, inv = np.unique(fid, return_inverse=True)
            owner = self._finger_subjects(con, ufid.tolist())
            names = np.array(sorted(set(owner.values())), dtype=object)
            held = np.array([f in owner for f in ufid.tolist()], dtype=bool)
            subj = np.searchsorted(names, np.array([owner.get(f, "") for f in ufid.tolist()], dtype=object))
            keep = held[inv]  # a finger deleted after the index saw it votes for nobody
            nb = Neighbours(
                np.asarray(codes.angle_bins, np.int64), raw.rows[keep], raw.partition[keep], raw.dist[keep],
                (raw.labels & ((1 << ANGLE_ID_BITS) - 1))[keep], subj[inv][keep].astype(np.int64), names,
            )
            out[pos] = _merge_neighbours([nb])
        return out

    def _finger_subjects(self, con, finger_ids: list) -> dict:
        """finger id -> subject id (name) of the fingers still in the store."""
        out = {}
        for i in range(0, len(finger_ids), 500):
            part = finger_ids[i : i + 500]
            q = ",".join("?" * len(part))
            out.update(con.execute(
                f"SELECT fingers.id, subjects.subject FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
                f"WHERE fingers.id IN ({q})", part,
            ).fetchall())
        return out

    def _rescore(self, con, gallery: str, gid: int, probes: dict, subjects) -> list:
        """Rescore ``subjects`` (ids of this gallery; None: all) against the probe fingers.

        Returns list of (gallery, subject, [(probe_pos, pos, score, finger_id)]); subjects
        no longer enrolled are left out.
        """
        from .descriptors import encode

        names: dict[int, str] = {}
        if subjects is None:
            names.update(con.execute("SELECT id, subject FROM subjects WHERE gallery_id = ?", (gid,)).fetchall())
        else:
            subjects = list(subjects)
            for i in range(0, len(subjects), 500):
                part = subjects[i : i + 500]
                q = ",".join("?" * len(part))
                names.update(con.execute(
                    f"SELECT id, subject FROM subjects WHERE gallery_id = ? AND subject IN ({q})", [gid, *part]
                ).fetchall())
        subject_ids = sorted(names, key=names.get)
        if not subject_ids:
            return []
        # fingers of the shortlisted subjects
        fingers_of: dict[int, list] = collections.defaultdict(list)
        for i in range(0, len(subject_ids), 500):
            part = subject_ids[i : i + 500]
            q = ",".join("?" * len(part))
            for fid, sid, pos in con.execute(f"SELECT id, subject_id, position FROM fingers WHERE subject_id IN ({q})", part):
                fingers_of[sid].append((fid, pos))
        # per probe finger: the compatible enrolled fingers to rescore
        from .scoring import score_packed

        results = {sid: [] for sid in subject_ids}
        for ppos, t in probes.items():
            targets = []
            for sid in results:
                for fid, pos in sorted(fingers_of.get(sid, ()), key=lambda f: f[1]):
                    if ppos == 0 or pos == 0 or pos == ppos:
                        targets.append((sid, fid, pos))
            if not targets:
                continue
            scores = score_packed(encode(t), self._packed_for(con, [fid for _, fid, _ in targets]))
            best: dict[int, tuple] = {}
            for (sid, fid, pos), s in zip(targets, scores):
                if sid not in best or s > best[sid][2]:
                    best[sid] = (ppos, pos, float(s), fid)
            for sid, b in best.items():
                results[sid].append(b)
        return [(gallery, names[sid], per) for sid, per in results.items() if per]

    def _packed_for(self, con, finger_ids: list):
        """Rescoring rows of enrolled fingers as one :class:`biomatch.scoring.PackedTemplates`.

        Each finger's rows (``scoring.pack`` of that one template, serialised as
        in the feature file) are kept in an LRU cache bounded by
        :data:`FEATURE_CACHE_FINGERS` and :data:`FEATURE_CACHE_BYTES`; misses
        come from the feature file, or are decoded from the store and encoded.
        Packing per search would cost more than the rescoring itself.
        """
        from .scoring import pack

        singles = {}
        missing = []
        for fid in finger_ids:
            e = self._packs.get(fid)
            if e is None:
                missing.append(fid)
            else:
                singles[fid] = e
        computed = []
        for i in range(0, len(missing), 500):
            part = missing[i : i + 500]
            q = ",".join("?" * len(part))
            rows = con.execute(f"SELECT id, sha256 FROM fingers WHERE id IN ({q})", part).fetchall()
            stored = self._featstore.get([sha for _, sha in rows], raw=True)
            need = []
            for fid, sha in rows:
                data = stored.get(sha)
                if data is None:
                    need.append(fid)
                else:
                    self._packs.put(fid, data, len(data) + 256)
                    singles[fid] = data
            if need:  # not in the feature file (written after a crash, other version): compute and keep
                q = ",".join("?" * len(need))
                for fid, sha, blob in con.execute(f"SELECT id, sha256, template FROM fingers WHERE id IN ({q})", need):
                    t = self._features.get(fid) or self._template(blob, fid)
                    e = pack([t])
                    data = _FeatureStore._dump(e)
                    self._packs.put(fid, data, len(data) + 256)
                    singles[fid] = data
                    computed.append((sha, e))
        if computed:  # written after the search's read snapshot ends (see _put_features)
            self._local.pending_features = getattr(self._local, "pending_features", []) + computed
        return _FeatureStore.join([singles[fid] for fid in finger_ids])

    def _pairs(self, probe: Template, finger_id: int) -> tuple:
        from .scoring import pairs_packed, verify

        row = self._packs.get(finger_id)  # the rescoring rows just used: no template decode and encode
        if row is not None:
            return tuple((int(a), int(b)) for a, b in pairs_packed(probe, _FeatureStore._load(row), 0)[1])
        t = self._features.get(finger_id)
        if t is None:
            row = self._con().execute("SELECT template FROM fingers WHERE id = ?", (finger_id,)).fetchone()
            if row is None:
                return ()
            t = self._template(row[0], finger_id)
        m = verify(probe, t)
        return tuple((int(a), int(b)) for a, b in m.pairs)

    # -- checking, backup and restore -------------------------------------------------------
    def check(self) -> dict:
        """Verify the store, its indexes, derived files and audit chain; never raises for what it finds.

        Checks SQLite's integrity and foreign keys; that every finger row
        decrypts and decodes to a template whose SHA-256 is the one recorded;
        that no subject is without fingers (half there); that the audit
        chain verifies and that the store's subjects are exactly those whose
        last enrol/delete record is an enrolment (nothing lost, nothing
        unaudited); that each gallery's index (loaded and caught up, as
        searches use it) holds every finger of the store under its position
        and nothing else, at the store's generation, and that no index file
        is ahead of the store; that the feature file holds no rows of deleted
        templates; and, for an encrypted store, which rows are still plaintext.

        Returns
        -------
        dict
            ``ok`` (bool), ``problems`` (list of str, empty when ok),
            ``warnings`` (list of str), ``galleries`` (per gallery: subjects,
            fingers, generation, indexed fingers), ``audit_records``, ``encrypted``.
        """
        problems: list[str] = []
        warnings_: list[str] = []
        con = self._con()
        report: dict = {"store": str(self.path), "encrypted": self.encrypted, "galleries": {}}
        quick = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
        if quick != ["ok"]:
            problems += [f"sqlite: {q}" for q in quick[:10]]
        if con.execute("PRAGMA foreign_key_check").fetchall():
            problems.append("sqlite: rows refer to missing subjects or galleries (foreign_key_check)")
        with self._write_lock:  # this process's writers wait; other processes' changes are caught by the generation
            indexes = {}
            for name in self.galleries():
                try:
                    indexes[name] = self.index(name)
                except BiomatchError as exc:  # a row the index cannot be built from
                    problems.append(f"gallery {name!r}: index cannot be built ({exc})")
            con.execute("BEGIN")
            try:
                self._check_rows(con, indexes, report, problems, warnings_)
            finally:
                con.execute("COMMIT")
        if not self._checkpoint():
            warnings_.append("WAL not truncated: other readers are active (copies of deleted pages go at the next checkpoint)")
        report.update(ok=not problems, problems=problems, warnings=warnings_)
        return report

    def _check_rows(self, con, indexes: dict, report: dict, problems: list, warnings_: list) -> None:
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
        plaintext = 0
        for gid, name, gen in con.execute("SELECT id, name, generation FROM galleries ORDER BY name").fetchall():
            by_pos: dict[int, set] = collections.defaultdict(set)
            n_fingers = 0
            for fid, pos, sha, blob in con.execute(
                "SELECT fingers.id, position, sha256, template FROM fingers JOIN subjects ON subjects.id = fingers.subject_id "
                "WHERE gallery_id = ?", (gid,)
            ):
                n_fingers += 1
                by_pos[pos].add(fid)
                all_shas.add(sha)
                plaintext += report["encrypted"] and not _enc.is_sealed(blob)
                try:
                    data = self._unseal(blob, _AAD_TEMPLATE, f"store finger {fid}")
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
            idx = indexes.get(name)
            entry = {"subjects": len(subjects), "fingers": n_fingers, "generation": gen,
                     "index_generation": idx.generation if idx is not None else None}
            if idx is not None:
                held = idx.finger_ids()
                entry["indexed_fingers"] = sum(len(v) for v in held.values())
                if idx.generation != gen:
                    problems.append(f"gallery {name!r}: index at generation {idx.generation}, store at {gen}")
                for pos in sorted(set(held) | set(by_pos)):
                    missing = by_pos.get(pos, set()) - held.get(pos, set())
                    extra = held.get(pos, set()) - by_pos.get(pos, set())
                    if missing:
                        problems.append(f"gallery {name!r}: {len(missing)} fingers at position {pos} not indexed (e.g. {min(missing)})")
                    if extra:
                        problems.append(f"gallery {name!r}: index holds {len(extra)} fingers at position {pos} absent from the store "
                                        f"(e.g. {min(extra)})")
            on_disk = self._load_index(name) if self._index_path(name).exists() else None
            if on_disk is not None and on_disk.generation > gen:
                problems.append(f"gallery {name!r}: index file at generation {on_disk.generation}, ahead of the store ({gen})")
            report["galleries"][name] = entry
        if report["audit_records"] is not None:
            for g, s in sorted(in_store - audited)[:10]:
                problems.append(f"gallery {g!r}: subject {s!r} is enrolled without an enrolment audit record")
            for g, s in sorted(audited - in_store)[:10]:
                problems.append(f"gallery {g!r}: subject {s!r} has an enrolment audit record but is not in the store (lost)")
        orphans = self._featstore.shas() - all_shas if self._featstore.path.exists() else set()
        if orphans:
            problems.append(f"{self._featstore.path}: {len(orphans)} rows of templates no longer enrolled (deletion incomplete)")
        if plaintext:
            warnings_.append(f"{plaintext} finger rows are still plaintext in an encrypted store (run rotate_key)")

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
        _create_private(dest, "dest")
        try:
            out = sqlite3.connect(dest)
            try:
                self._con().backup(out)  # one step: a consistent snapshot
                out.execute("PRAGMA journal_mode=DELETE")  # a self-contained single file
                n = _verify_copy(out, dest)
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
            _verify_copy(src, backup)
            tmp.unlink(missing_ok=True)
            _create_private(tmp, "path")
            out = sqlite3.connect(tmp)
            try:
                src.backup(out)
                out.execute("PRAGMA journal_mode=DELETE")
                n = _verify_copy(out, tmp)
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

    # -- audit ------------------------------------------------------------------------------
    def verify_audit(self) -> int:
        """Re-check the audit chain; returns the number of records verified (AuditError at the first bad one)."""
        con = self._con()
        con.execute("BEGIN")
        try:
            return _audit.verify(con)
        finally:
            con.execute("COMMIT")

    def audit_records(self, *, since: int = 1, limit: int | None = None) -> list[dict]:
        """Audit records in order (each with its ``hash``), unverified."""
        return list(_audit.records(self._con(), since=since, limit=limit))

    def export_audit(self, out) -> int:
        """Write the audit log as JSON lines (one record with its hash per line) to a path or text file; returns the count."""
        recs = _audit.records(self._con())
        if isinstance(out, (str, os.PathLike)):
            with open(out, "w", encoding="utf-8") as fh:
                return _write_lines(recs, fh)
        return _write_lines(recs, out)


def _create_private(path: Path, field_name: str) -> None:
    """Create an empty file readable by its owner only; GalleryError when it exists or cannot be made."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise GalleryError(f"{field_name}: {path} exists") from None
    except OSError as exc:
        raise GalleryError(f"{field_name}: cannot create {path} ({exc.strerror or exc})") from None


def _verify_copy(con, path: Path) -> int:
    """Integrity, schema version and audit chain of a store copy; returns its audit record count."""
    try:
        quick = con.execute("PRAGMA quick_check").fetchone()[0]
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except _STORE_ERRORS as exc:
        raise GalleryError(f"{path}: not a usable biomatch store ({exc})") from None
    if quick != "ok":
        raise GalleryError(f"{path}: integrity check failed ({quick})")
    if row is None or row[0] != str(SCHEMA_VERSION):
        raise GalleryError(f"{path}: not a biomatch store of schema version {SCHEMA_VERSION}")
    try:
        return _audit.verify(con)
    except AuditError as exc:
        raise GalleryError(f"{path}: {exc}") from None


def _write_lines(recs, fh) -> int:
    n = 0
    for r in recs:
        fh.write(_audit.canonical_json(r) + "\n")
        n += 1
    return n


class Neighbours(NamedTuple):
    """FAISS k-NN of one probe finger's cylinders in a gallery, keyed independently of any store.

    Step 1 of a search (:meth:`Gallery._neighbours`); shards of a sharded
    gallery return it and the coordinator merges theirs
    (:func:`_merge_neighbours`): entries refer to subjects by name, not by
    a store's row ids, so the tie rule (distance, then subject id, then the
    gallery minutia's direction bin) is the same on one store and on N.

    Attributes
    ----------
    probe_bins : ndarray of int64, shape (n_q,)
        Direction bins of the probe cylinders.
    rows, partition, dist, abin, subject : ndarray of int64, shape (n,)
        Probe cylinder, position partition (= the gallery finger's position),
        Hamming distance, the gallery minutia's direction bin, and the index in
        ``names`` of the subject owning the gallery finger.
    names : ndarray of object (str), shape (m,)
        Sorted subject ids.
    """

    probe_bins: np.ndarray
    rows: np.ndarray
    partition: np.ndarray
    dist: np.ndarray
    abin: np.ndarray
    subject: np.ndarray
    names: np.ndarray


def _merge_neighbours(parts: list) -> Neighbours:
    """The k nearest of every (probe cylinder, partition) over several :class:`Neighbours` of one probe.

    Each part must hold, per (cylinder, partition), every code at most as far
    as its k-th nearest (:meth:`biomatch.index.GalleryIndex.neighbours`);
    the result is then what one index holding all their codes gives under the
    explicit tie rule (:func:`biomatch.index.select_neighbours`, by subject id).
    """
    from .index import K_NEIGHBOURS, select_neighbours

    names = np.unique(np.concatenate([np.asarray(p.names, dtype=object) for p in parts]))
    names = np.asarray(names, dtype=object)
    subject = np.concatenate([
        np.searchsorted(names, np.asarray(p.names, dtype=object)).astype(np.int64)[p.subject] if len(p.subject)
        else np.zeros(0, np.int64)
        for p in parts
    ])
    rows, partition, dist, abin = (np.concatenate([getattr(p, f) for p in parts]).astype(np.int64)
                                   for f in ("rows", "partition", "dist", "abin"))
    keep = select_neighbours(rows, partition, dist, subject, abin, K_NEIGHBOURS)
    return Neighbours(np.asarray(parts[0].probe_bins, np.int64), rows[keep], partition[keep], dist[keep],
                      abin[keep], subject[keep], names)


def _shortlist_subjects(per_probe: Mapping, n_probes: int) -> list:
    """Subjects to rescore, from the :class:`Neighbours` of each probe finger (one implementation).

    Per probe finger the :data:`SHORTLIST_FINGERS` gallery fingers with the most
    votes (:func:`biomatch.index.vote_totals`; ties by subject id, then
    position); a subject's votes are the sum over its fingers of each finger's
    best vote over the probe fingers; the ``max(SHORTLIST_SUBJECTS_MIN,
    SHORTLIST_SUBJECTS // n_probes)`` subjects with the most votes, ties by
    subject id. Bit-identical for equal inputs whatever their order.
    """
    from .index import vote_totals

    best: dict[tuple, float] = {}
    for pos in sorted(per_probe):
        nb = per_probe[pos]
        finger = nb.subject * 16 + nb.partition  # orders as (subject id, position)
        fingers, totals = vote_totals(nb.rows, nb.dist, finger, nb.abin, nb.probe_bins)
        for t in np.lexsort((fingers, -totals))[:SHORTLIST_FINGERS]:
            key = (str(nb.names[fingers[t] >> 4]), int(fingers[t] & 15))
            best[key] = max(best.get(key, 0.0), float(totals[t]))
    votes: dict[str, float] = collections.defaultdict(float)
    for key in sorted(best):
        votes[key[0]] += best[key]
    cap = max(SHORTLIST_SUBJECTS_MIN, SHORTLIST_SUBJECTS // max(1, n_probes))
    return sorted(votes, key=lambda s: (-votes[s], s))[:cap]


def _fisher(fmrs: np.ndarray) -> float:
    """Fisher's combination of k independent FMRs: P(chi2_2k >= -2 sum ln p)."""
    if len(fmrs) == 1:  # the common single-finger case, without array overhead
        p0 = float(fmrs[0])
        return p0 if math.isnan(p0) else min(max(p0, FMR_FLOOR), 1.0)
    if len(fmrs) == 0 or np.any(np.isnan(fmrs)):
        return float("nan")
    p = np.clip(np.asarray(fmrs, dtype=np.float64), FMR_FLOOR, 1.0)
    # chi2 survival with 2k degrees of freedom in closed form: e^{-x/2} sum_{j<k} (x/2)^j / j!
    half = -np.sum(np.log(p))
    k = p.size
    term = 1.0
    total = 1.0
    for j in range(1, k):
        term *= half / j
        total += term
    return float(min(1.0, math.exp(-half) * total))


def _threshold_value(value) -> float:
    v = getattr(value, "value", value)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(float(v)):
        raise GalleryError(f"threshold: expected a raw score (number) or a Threshold, got {value!r}")
    v = float(v)
    if not 0.0 <= v <= 1.0:
        raise GalleryError(f"threshold: raw scores lie in [0, 1], got {v}")
    return v


def _check_metadata(metadata):
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise GalleryError(f"metadata: expected a dict, got {type(metadata).__name__}")
    try:
        return json.dumps(metadata, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"metadata: not JSON-serialisable ({exc})") from None


def _check_batch(batch) -> int:
    """Subjects per transaction of a bulk change: one SQL ``IN`` list each (SQLite builds before
    3.32 take at most 999 parameters a statement)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise GalleryError(f"batch: expected an integer 1..{MAX_BATCH}, got {batch!r}")
    return batch


def _check_context(context):
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise GalleryError(f"context: expected a dict, got {type(context).__name__}")
    try:
        return json.loads(json.dumps(dict(context), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"context: not JSON-serialisable ({exc})") from None


def _check_originals(originals) -> dict:
    if originals is None:
        return {}
    if not isinstance(originals, Mapping):
        raise GalleryError(f"originals: expected a dict of position -> bytes, got {type(originals).__name__}")
    out = {}
    for pos, data in originals.items():
        p = None if pos is None else _check_position(pos, f"originals[{pos!r}]")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise GalleryError(f"originals[{pos!r}]: expected bytes, got {type(data).__name__}")
        out[p] = bytes(data)
    return out


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _nbytes(value) -> int:
    """Bytes of the NumPy arrays a cached value holds (a PackedTemplates, or a Template
    with the descriptors cached on it); views count the buffer they keep alive."""
    arrays = []
    if isinstance(value, Template):
        arrays.append(value.minutiae)
        for v in value._cache.values():
            arrays += [a for a in vars(v).values() if isinstance(a, np.ndarray)] if hasattr(v, "__dict__") else []
    elif hasattr(value, "__dataclass_fields__"):
        arrays += [getattr(value, f) for f in value.__dataclass_fields__]
    n, bases = 0, set()
    for a in arrays:
        if not isinstance(a, np.ndarray):
            continue
        base = a.base
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        if isinstance(base, (bytes, bytearray, memoryview)):  # e.g. np.frombuffer of a feature row
            if id(base) not in bases:
                bases.add(id(base))
                n += len(base) if not isinstance(base, memoryview) else base.nbytes
        else:
            n += a.nbytes
    return n + 256  # object overhead


class _LRU:
    """A small thread-safe LRU map bounded by entries and by the bytes of its values (:func:`_nbytes`)."""

    def __init__(self, capacity: int, max_bytes: int | None = None):
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._d: collections.OrderedDict = collections.OrderedDict()  # key -> (value, bytes)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key):
        with self._lock:
            e = self._d.get(key)
            if e is None:
                return None
            self._d.move_to_end(key)
            return e[0]

    def put(self, key, value, size: int | None = None) -> None:
        """Cache ``value``; ``size`` in bytes when the caller knows it (else :func:`_nbytes`)."""
        if size is None:
            size = _nbytes(value) if self.max_bytes is not None else 0
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            self._d[key] = (value, size)
            self.nbytes += size
            while len(self._d) > self.capacity or (
                self.max_bytes is not None and self.nbytes > self.max_bytes and len(self._d) > 1
            ):
                _, (_, b) = self._d.popitem(last=False)
                self.nbytes -= b

    def pop(self, key) -> None:
        with self._lock:
            e = self._d.pop(key, None)
            if e is not None:
                self.nbytes -= e[1]


@functools.lru_cache(maxsize=1024)
def _feature_layout(head: bytes) -> tuple:
    """Parsed header of a feature row: (name, dtype, shape, count) per array. Rows share a
    handful of headers (they differ only in the number of cylinders), so parsing each
    once keeps decoding a shortlist's rows off the search's critical path."""
    out = []
    off = 4 + len(head)
    for name, dtype, shape in json.loads(head):
        shape = tuple(int(d) for d in shape)
        dt = np.dtype(dtype)
        count = math.prod(shape) if shape else 1
        out.append((name, dt, shape, count, off))
        off += count * dt.itemsize
    return tuple(out)


class _FeatureStore:
    """Derived rescoring rows of enrolled templates, in ``<store>.features`` (SQLite, WAL).

    Content-addressed: the key is the SHA-256 of the template bytes, the value
    the serialised ``scoring.pack([template])`` rows, so a row can never be
    stale for its key; the file is dropped and refilled lazily when the
    matcher version changes. Rows are written after the enrolment commits; a
    row missing after a crash is recomputed on first use. Deleting a subject
    deletes its rows (``secure_delete``). Saves re-encoding each shortlisted
    finger at every search (about 1 ms each).
    """

    def __init__(self, path: Path):
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ready = False
        self.crypt = None  # (seal, open) of an encrypted store's keyring: rows are sealed at rest

    def _con(self):
        con = getattr(self._local, "con", None)
        if con is None:
            from .scoring import MATCHER_VERSION

            if not self.path.exists():
                try:
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
                except OSError as exc:
                    raise GalleryError(f"{self.path}: cannot create the feature file ({exc.strerror or exc})") from None
            con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # derived data: a lost row is recomputed
            con.execute("PRAGMA secure_delete=ON")
            con.execute(f"PRAGMA mmap_size={STORE_MMAP_BYTES}")
            with self._lock:
                if not self._ready:
                    con.execute("BEGIN IMMEDIATE")
                    con.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    con.execute("CREATE TABLE IF NOT EXISTS rows(sha256 TEXT PRIMARY KEY, data BLOB NOT NULL)")
                    row = con.execute("SELECT value FROM meta WHERE key = 'matcher_version'").fetchone()
                    if row is None or row[0] != MATCHER_VERSION:
                        con.execute("DELETE FROM rows")
                        con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('matcher_version', ?)", (MATCHER_VERSION,))
                    con.execute("COMMIT")
                    self._ready = True
            self._local.con = con
        return con

    @staticmethod
    def _dump(packed) -> bytes:
        import dataclasses

        parts = []
        head = []
        for f in dataclasses.fields(packed):
            a = np.ascontiguousarray(getattr(packed, f.name))
            head.append([f.name, a.dtype.str, list(a.shape)])
            parts.append(a.tobytes())
        h = json.dumps(head).encode()
        return len(h).to_bytes(4, "little") + h + b"".join(parts)

    @staticmethod
    def _load(data: bytes):
        from .scoring import PackedTemplates

        return PackedTemplates(**{
            name: np.frombuffer(data, dtype=dt, count=count, offset=off).reshape(shape)
            for name, dt, shape, count, off in _FeatureStore._layout_of(data)
        })

    @staticmethod
    def _layout_of(data: bytes) -> tuple:
        """The layout of a serialised row, checked against its length (ValueError when malformed)."""
        n = int.from_bytes(data[:4], "little")
        layout = _feature_layout(bytes(data[4 : 4 + n]))
        name, dt, _, count, off = layout[-1]
        if off + count * dt.itemsize != len(data):
            raise ValueError("feature row: length does not match its header")
        return layout

    @classmethod
    def join(cls, rows: list):
        """Serialised rows of several fingers (:meth:`_dump` each) as one batch for rescoring.

        One copy per field for the whole batch: building a PackedTemplates per
        row and concatenating them cost ~25 us a row, a third of the rows' cost.
        """
        from .scoring import PackedTemplates, pack

        if not rows:
            return pack([])
        layouts = [cls._layout_of(d) for d in rows]
        counts = np.array([lay[0][2][0] for lay in layouts], dtype=np.int64)  # the first field's rows
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        arrays = {"offsets": offsets}
        for j, (name, dt, shape, _, _) in enumerate(layouts[0]):
            if name == "offsets":
                continue
            if any(lay[j][0] != name or lay[j][1] != dt or lay[j][2][1:] != shape[1:] for lay in layouts):
                raise GalleryError("feature rows of different layouts in one batch")
            buf = bytearray().join(d[lay[j][4] : lay[j][4] + lay[j][3] * dt.itemsize] for d, lay in zip(rows, layouts))
            arrays[name] = np.frombuffer(buf, dtype=dt).reshape((-1, *shape[1:]))  # writable: a bytearray
        return PackedTemplates(**arrays)

    def get(self, shas: list, raw: bool = False) -> dict:
        """{sha: PackedTemplates} of the rows held (serialised bytes with ``raw``); unreadable rows left out."""
        if not shas:
            return {}
        out = {}
        con = self._con()
        for i in range(0, len(shas), 500):
            part = shas[i : i + 500]
            q = ",".join("?" * len(part))
            for sha, data in con.execute(f"SELECT sha256, data FROM rows WHERE sha256 IN ({q})", part):
                try:
                    if self.crypt is not None:
                        data = self.crypt[1](data, _AAD_FEATURES, f"{self.path} row {sha[:12]}")
                    if raw:
                        self._layout_of(data)
                        out[sha] = bytes(data)
                    else:
                        out[sha] = self._load(data)
                except (ValueError, TypeError, KeyError, GalleryError):
                    pass  # unreadable row (corrupt, plaintext or an old key's): recomputed by the caller
        return out

    def put(self, items) -> None:
        self.put_raw([(sha, self._dump(p)) for sha, p in items])

    def put_raw(self, items) -> None:
        """Write serialised rows (:meth:`_dump`, as :meth:`get` with ``raw`` returns them)."""
        items = list(items)
        if self.crypt is not None:
            items = [(sha, self.crypt[0](data, _AAD_FEATURES)) for sha, data in items]
        if not items:
            return
        con = self._con()
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany("INSERT OR REPLACE INTO rows(sha256, data) VALUES (?, ?)", items)
            con.execute("COMMIT")
        except sqlite3.OperationalError:  # derived data: a row not written is recomputed later
            try:
                con.execute("ROLLBACK")
            except sqlite3.OperationalError:
                pass

    def delete(self, shas) -> None:
        shas = list(shas)
        if not shas:
            return
        self._delete_where("sha256 = ?", [(s,) for s in shas])

    def wipe(self) -> None:
        """Delete every row; rows are recomputed on use."""
        self._delete_where("1", [()])

    def _delete_where(self, condition: str, params: list) -> None:
        """Delete rows (zeroed: secure_delete) and truncate the WAL so that no copy of them stays behind."""
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        con.executemany(f"DELETE FROM rows WHERE {condition}", params)
        con.execute("COMMIT")
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            pass

    def shas(self) -> set:
        """Keys of every row (for :meth:`Gallery.check`)."""
        return {r[0] for r in self._con().execute("SELECT sha256 FROM rows")}

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def _store_errors(method):
    """Turn SQLite errors (corrupt file, I/O error, disk full) into a GalleryError naming the store."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except _STORE_ERRORS as exc:
            raise GalleryError(f"{self.path}: store error in {method.__name__} ({exc})") from None

    return wrapper


# every public method that reads or writes the store (one place, so that none is missed)
for _name in ("galleries", "enroll", "enroll_many", "update", "delete", "delete_many", "import_from", "rotate_key", "get", "originals", "subjects",
              "stats", "index", "rebuild_index", "set_calibration", "calibration", "set_threshold", "threshold", "search",
              "check", "backup", "verify_audit", "audit_records", "export_audit", "flush"):
    setattr(Gallery, _name, _store_errors(getattr(Gallery, _name)))
del _name

_OPEN_TOKEN = object()
