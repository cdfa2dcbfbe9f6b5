"""Rescoring rows: the derived feature file and the in-memory caches of rows and templates."""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np

from ..errors import GalleryError
from ..template import Template
from .store import AAD_FEATURES, BUSY_TIMEOUT_S, STORE_MMAP_BYTES
#: Enrolled fingers whose rescoring rows (scoring.pack, ~11 KB each at 35 minutiae, up to
#: ~330 KB at 1024) stay in memory (LRU), and the bytes those rows may hold in all:
#: the count alone does not bound the memory (the LRU drifts towards the fingers most
#: often shortlisted, which have more minutiae). Beyond it rows come from the derived
#: feature file (<store>.features).
FEATURE_CACHE_FINGERS = 5_000
FEATURE_CACHE_BYTES = 64 << 20
#: Decoded enrolled templates (with descriptors, ~8 KB each) kept for candidates' minutia
#: pairs (LRU), by count and by bytes.
TEMPLATE_CACHE_FINGERS = 2_000
TEMPLATE_CACHE_BYTES = 32 << 20
#: Bytes of rescoring rows the whole-store arena (:class:`FeatureArena`) may hold: a store whose
#: feature file holds more is served by the LRU above alone. About 13 KB per finger at 35 minutiae.
FEATURE_ARENA_BYTES = 4 << 30
#: Fingers a store must hold for the arena to be built: a smaller store's rows all fit in the LRU.
FEATURE_ARENA_MIN_FINGERS = FEATURE_CACHE_FINGERS
#: Shortlisted fingers served outside the arena (enrolled after it was built, or not in the feature
#: file then) after which it is rebuilt on the next search: at least this many, and at least
#: a tenth of the fingers it holds.
FEATURE_ARENA_STALE_FINGERS = 1_000


def nbytes(value) -> int:
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


class LRU:
    """A small thread-safe LRU map bounded by entries and by the bytes of its values (:func:`nbytes`)."""

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
        """Cache ``value``; ``size`` in bytes when the caller knows it (else :func:`nbytes`)."""
        if size is None:
            size = nbytes(value) if self.max_bytes is not None else 0
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


def _batch_offsets(counts: np.ndarray) -> np.ndarray:
    """PackedTemplates offsets of a batch whose templates hold ``counts`` rows each."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


@functools.lru_cache(maxsize=1024)
def _signature(layout: tuple) -> tuple:
    """(names, dtypes, trailing shapes) of a row layout: rows of one signature join into one batch."""
    return (tuple(name for name, *_ in layout), tuple(dt.str for _, dt, *_ in layout),
            tuple(shape[1:] for _, _, shape, *_ in layout))


class FeatureStore:
    """Derived rescoring rows of enrolled templates, in ``<store>.features`` (SQLite, WAL).

    Content-addressed: the key is the SHA-256 of the template bytes, the value
    the serialised ``scoring.pack([template])`` rows, so a row can never be
    stale for its key; the file is dropped and refilled lazily when the
    matcher version changes. Rows are written after the enrolment commits; a
    row missing after a crash is recomputed on first use. Deleting a subject
    deletes its rows (``secure_delete``). Saves re-encoding each shortlisted
    finger at every search (about 1 ms each).
    """

    def __init__(self, path: Path, in_memory: bool = False):
        self.path = path
        self.in_memory = in_memory  # a read-only gallery's rows live in memory, per thread, nothing written
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ready = False
        self.crypt = None  # (seal, open) of an encrypted store's keyring: rows are sealed at rest

    def _con(self):
        con = getattr(self._local, "con", None)
        if con is None:
            from ..scoring import MATCHER_VERSION

            if not self.path.exists() and not self.in_memory:
                try:
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
                except OSError as exc:
                    raise GalleryError(f"{self.path}: cannot create the feature file ({exc.strerror or exc})") from None
            con = sqlite3.connect(":memory:" if self.in_memory else self.path, timeout=BUSY_TIMEOUT_S,
                                  isolation_level=None, check_same_thread=True)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # derived data: a lost row is recomputed
            con.execute("PRAGMA secure_delete=ON")
            con.execute(f"PRAGMA mmap_size={STORE_MMAP_BYTES}")
            with self._lock:
                if not self._ready or self.in_memory:  # each thread's memory database starts empty
                    con.execute("BEGIN IMMEDIATE")
                    con.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                    con.execute("CREATE TABLE IF NOT EXISTS rows(sha256 TEXT PRIMARY KEY, data BLOB NOT NULL)")
                    row = con.execute("SELECT value FROM meta WHERE key = 'matcher_version'").fetchone()
                    if row is None or row[0] != MATCHER_VERSION:
                        con.execute("DELETE FROM rows")
                        con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('matcher_version', ?)", (MATCHER_VERSION,))
                    con.execute("COMMIT")
                    self._ready = not self.in_memory
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
        from ..scoring import PackedTemplates

        return PackedTemplates(**{
            name: np.frombuffer(data, dtype=dt, count=count, offset=off).reshape(shape)
            for name, dt, shape, count, off in FeatureStore._layout_of(data)
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
    def split(cls, data: bytes) -> tuple:
        """A serialised row (:meth:`_dump`) as (signature, arrays): one read-only view of its bytes per
        field, in :class:`biomatch.scoring.PackedTemplates` field order; the signature (names, dtypes,
        trailing shapes) is shared by rows that can be joined. ValueError when malformed."""
        layout = cls._layout_of(data)
        return _signature(layout), tuple(
            np.frombuffer(data, dtype=dt, count=count, offset=off).reshape(shape) for _, dt, shape, count, off in layout)

    @classmethod
    def join(cls, rows: list):
        """Rows of several fingers (serialised, :meth:`_dump`, or :meth:`split`) as one batch for rescoring.

        One ``np.concatenate`` per field over the rows' views: the search's
        cache keeps rows split, so a shortlist is gathered without parsing or
        copying row by row (parsing each row's bytes per search cost about
        twice as much).
        """
        from ..scoring import PackedTemplates, pack

        if not rows:
            return pack([])
        rows = [r if isinstance(r, tuple) else cls.split(r) for r in rows]
        sig = rows[0][0]
        if any(r[0] is not sig and r[0] != sig for r in rows):
            raise GalleryError("feature rows of different layouts in one batch")
        arrays = {}
        for j, name in enumerate(sig[0]):
            col = [r[1][j] for r in rows]
            if name == "offsets":  # per row [0, n]: the batch's running offsets
                arrays[name] = _batch_offsets(np.fromiter((c[-1] for c in col), dtype=np.int64, count=len(col)))
            else:
                arrays[name] = np.concatenate(col)  # a new, writable array
        return PackedTemplates(**arrays)

    @staticmethod
    def packed(row: tuple):
        """One finger's split row (:meth:`split`) as :class:`biomatch.scoring.PackedTemplates` (views)."""
        from ..scoring import PackedTemplates

        return PackedTemplates(**dict(zip(row[0][0], row[1])))

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
                        data = self.crypt[1](data, AAD_FEATURES + b":" + sha.encode(), f"{self.path} row {sha[:12]}")
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
            # bound to the template it belongs to: a row moved under another template's key does not open
            items = [(sha, self.crypt[0](data, AAD_FEATURES + b":" + sha.encode())) for sha, data in items]
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

    def nbytes(self) -> int:
        """Bytes of the rows held (as stored: sealed rows count their sealing)."""
        return int(self._con().execute("SELECT coalesce(sum(length(data)), 0) FROM rows").fetchone()[0])

    def shas(self) -> set:
        """Keys of every row (for :meth:`Gallery.check`)."""
        return {r[0] for r in self._con().execute("SELECT sha256 FROM rows")}

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


class FeatureArena:
    """The rescoring rows of every finger of a store, held contiguously: one array per field of
    :class:`biomatch.scoring.PackedTemplates` and, per field, where each finger's rows start.

    Gathering a shortlist is then one fancy-indexing take per field (:meth:`gather`), with no
    SQL, no per-row parsing and no per-row Python. Built from the feature file (:meth:`build`);
    fingers are identified by their store id (AUTOINCREMENT: never reused), and a finger
    deleted or replaced is dropped with :meth:`forget`. Memory: the rows' bytes (as in the
    feature file) plus 8 bytes per field and finger for the starts and 4 per id.
    """

    def __init__(self, sig: tuple, fields: list, starts: np.ndarray, slot_of: np.ndarray):
        self.sig = sig  # (names, dtypes, trailing shapes) shared by every row held
        self.fields = fields  # per field, the rows of every finger held, concatenated
        self.starts = starts  # (n_fields, n + 1) int64: finger k's rows of field j are starts[j, k]:starts[j, k+1]
        self.slot_of = slot_of  # finger id -> index k, -1 when not held
        self.size = starts.shape[1] - 1  # fingers held
        self.nbytes = sum(a.nbytes for a in fields) + starts.nbytes + slot_of.nbytes
        self.outside = 0  # shortlisted fingers served outside it since it was built

    @classmethod
    def build(cls, items):
        """An arena of ``items`` ((finger id, split row), :meth:`FeatureStore.split`) of the most common
        signature (rows of other layouts are left out); it holds none when there are none."""
        items = list(items)
        if not items:
            return cls(None, [], np.zeros((0, 1), dtype=np.int64), np.zeros(0, dtype=np.int32))
        sig = collections.Counter(row[0] for _, row in items).most_common(1)[0][0]
        items = [(fid, row) for fid, row in items if row[0] == sig]
        names = sig[0]
        starts = np.zeros((len(names), len(items) + 1), dtype=np.int64)
        fields = []
        for j, name in enumerate(names):
            col = [row[1][j] for _, row in items]
            if name == "offsets":  # per finger [0, n]: kept as the counts n
                counts = np.fromiter((c[-1] for c in col), dtype=np.int64, count=len(col))
                fields.append(counts)
                starts[j] = np.arange(len(items) + 1)
            else:
                fields.append(np.concatenate(col))
                np.cumsum([len(c) for c in col], out=starts[j, 1:])
        fids = np.fromiter((fid for fid, _ in items), dtype=np.int64, count=len(items))
        slot_of = np.full(int(fids.max()) + 1, -1, dtype=np.int32)
        slot_of[fids] = np.arange(len(items), dtype=np.int32)
        return cls(sig, fields, starts, slot_of)

    def slots(self, finger_ids: list) -> np.ndarray:
        """Index of each finger in the arena, -1 for those it does not hold."""
        ids = np.asarray(finger_ids, dtype=np.int64)
        out = np.full(len(ids), -1, dtype=np.int32)
        inside = (ids >= 0) & (ids < len(self.slot_of))
        out[inside] = self.slot_of[ids[inside]]
        return out

    def forget(self, finger_ids) -> None:
        ids = np.asarray(list(finger_ids), dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < len(self.slot_of))]
        self.slot_of[ids] = -1

    def gather(self, slots: np.ndarray):
        """The rows of the fingers at ``slots`` (all held) as one batch, as :meth:`FeatureStore.join`
        of their rows would give it."""
        from ..scoring import PackedTemplates

        slots = np.asarray(slots, dtype=np.int64)
        arrays = {}
        for j, name in enumerate(self.sig[0]):
            if name == "offsets":
                arrays[name] = _batch_offsets(self.fields[j][slots])
                continue
            st = self.starts[j, slots]
            ln = self.starts[j, slots + 1] - st
            ends = np.cumsum(ln)
            idx = np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) + np.repeat(st - (ends - ln), ln)
            arrays[name] = self.fields[j][idx]  # a new, writable array
        return PackedTemplates(**arrays)

    def row(self, slot: int) -> tuple:
        """One finger's rows as a split row (:meth:`FeatureStore.split`): views into the arena."""
        arrays = []
        for j, name in enumerate(self.sig[0]):
            if name == "offsets":
                arrays.append(np.array([0, self.fields[j][slot]], dtype=self.fields[j].dtype))
            else:
                arrays.append(self.fields[j][self.starts[j, slot] : self.starts[j, slot + 1]])
        return self.sig, tuple(arrays)


class FeaturesMixin:
    """Rescoring rows of enrolled fingers: feature file, caches, minutia pairs (part of :class:`Gallery`)."""

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
        finger_ids = list(finger_ids)
        with self._feat_lock:  # an arena being built meanwhile is not kept (_feature_arena)
            self._arena_gen += 1
            if self._arena:
                self._arena.forget(finger_ids)
        for fid in finger_ids:
            self._features.pop(fid)
            self._packs.pop(fid)

    def _check_row_sha(self, fid: int, sha: str, blob, con) -> None:
        """In an encrypted store, that the finger row's SHA-256 (by which its rescoring rows are found) is its
        own template's: the template decrypts only in its own row, so a row whose subject, sha256 or template
        was moved without the key is refused here instead of answering for another subject."""
        import hashlib

        from .. import encryption as _enc

        if _enc.is_sealed(blob) and hashlib.sha256(self._unseal_finger(blob, fid, con)).hexdigest() != sha:
            raise GalleryError(f"store finger {fid}: its template does not match its recorded SHA-256 (row tampered)")

    def _packed_for(self, con, finger_ids: list):
        """Rescoring rows of enrolled fingers as one :class:`biomatch.scoring.PackedTemplates`.

        From the store's :class:`FeatureArena` (every finger's rows, contiguous; built on the
        first search, see :meth:`_feature_arena`): one take per field, no SQL. Fingers it does
        not hold (enrolled after it was built, or a store over :data:`FEATURE_ARENA_BYTES`)
        come from :meth:`_rows_for`.
        """
        arena = self._feature_arena(con)
        if arena is None:
            singles = self._rows_for(con, finger_ids)
            return FeatureStore.join([singles[fid] for fid in finger_ids])
        slots = arena.slots(finger_ids)
        outside = slots < 0
        if not outside.any():
            return arena.gather(slots)
        arena.outside += int(outside.sum())
        singles = self._rows_for(con, [fid for fid, o in zip(finger_ids, outside.tolist()) if o])
        return FeatureStore.join([singles[fid] if s < 0 else arena.row(s) for fid, s in zip(finger_ids, slots.tolist())])

    def _feature_arena(self, con):
        """The store's :class:`FeatureArena`, built from the feature file on first use and again once
        :data:`FEATURE_ARENA_STALE_FINGERS` shortlisted fingers were served outside it; None for a
        read-only store (its rows live in per-thread memory), one of at most
        :data:`FEATURE_ARENA_MIN_FINGERS` fingers (the LRU holds them all) or one whose rows exceed
        :data:`FEATURE_ARENA_BYTES`. A build during which a finger was forgotten (deleted,
        replaced) is not kept."""
        arena = self._arena
        if arena is False or self._featstore.in_memory:  # over the budget: stays so for this handle
            return None
        if arena is not None and arena.outside < max(FEATURE_ARENA_STALE_FINGERS, arena.size // 10):
            return arena
        if arena is None and con.execute("SELECT count(*) FROM (SELECT 1 FROM fingers LIMIT ?)",
                                         (FEATURE_ARENA_MIN_FINGERS + 1,)).fetchone()[0] <= FEATURE_ARENA_MIN_FINGERS:
            return None
        gen = self._arena_gen
        built = self._build_arena(con)
        with self._feat_lock:
            if self._arena_gen == gen:
                self._arena = built
        return built if built is not False else None

    def _build_arena(self, con):
        """A :class:`FeatureArena` of the rows the feature file holds for the store's fingers (as the
        search's snapshot sees them); False when they exceed :data:`FEATURE_ARENA_BYTES`."""
        if self._featstore.nbytes() > FEATURE_ARENA_BYTES:
            return False
        sealed = self._ring is not None  # only then can a template be sealed (see _check_row_sha)
        rows = con.execute(f"SELECT id, sha256{', template' if sealed else ''} FROM fingers").fetchall()
        items = []
        for i in range(0, len(rows), 500):
            part = rows[i : i + 500]
            stored = self._featstore.get([r[1] for r in part], raw=True)
            for r in part:
                data = stored.get(r[1])
                if data is None:
                    continue  # computed when shortlisted (_rows_for)
                if sealed:
                    try:
                        self._check_row_sha(r[0], r[1], r[2], con)
                    except GalleryError:  # left out: refused when shortlisted (_rows_for), as before
                        continue
                items.append((r[0], FeatureStore.split(data)))
        return FeatureArena.build(items)

    def _rows_for(self, con, finger_ids: list) -> dict:
        """{finger id: split row (:meth:`FeatureStore.split`)} of enrolled fingers.

        Each finger's rows (``scoring.pack`` of that one template, serialised as
        in the feature file) are kept in an LRU cache bounded by
        :data:`FEATURE_CACHE_FINGERS` and :data:`FEATURE_CACHE_BYTES`; misses
        come from the feature file, or are decoded from the store and encoded.
        Packing per search would cost more than the rescoring itself.
        """
        from ..scoring import pack

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
            rows = con.execute(f"SELECT id, sha256, template FROM fingers WHERE id IN ({q})", part).fetchall()
            stored = self._featstore.get([sha for _, sha, _ in rows], raw=True)
            need = []
            for fid, sha, blob in rows:
                self._check_row_sha(fid, sha, blob, con)
                data = stored.get(sha)
                if data is None:
                    need.append(fid)
                else:
                    try:
                        row = FeatureStore.split(data)
                    except ValueError:  # checked by get(raw=True); kept for a row that changed layout
                        need.append(fid)
                        continue
                    self._packs.put(fid, row, len(data) + 256)
                    singles[fid] = row
            if need:  # not in the feature file (written after a crash, other version): compute and keep
                q = ",".join("?" * len(need))
                for fid, sha, blob in con.execute(f"SELECT id, sha256, template FROM fingers WHERE id IN ({q})", need):
                    t = self._features.get(fid) or self._template(blob, fid)
                    e = pack([t])
                    data = FeatureStore._dump(e)
                    row = FeatureStore.split(data)
                    self._packs.put(fid, row, len(data) + 256)
                    singles[fid] = row
                    computed.append((sha, e))
        if computed:  # written after the search's read snapshot ends (see _put_features)
            self._local.pending_features = getattr(self._local, "pending_features", []) + computed
        return singles

    def _pairs(self, probe: Template, finger_id: int) -> tuple:
        from ..scoring import pairs_packed, verify

        arena = self._arena
        slot = int(arena.slots([finger_id])[0]) if arena else -1
        row = arena.row(slot) if slot >= 0 else self._packs.get(finger_id)  # the rows just used: no decode and encode
        if row is not None:
            return tuple((int(a), int(b)) for a, b in pairs_packed(probe, FeatureStore.packed(row), 0)[1])
        t = self._features.get(finger_id)
        if t is None:
            row = self._con().execute("SELECT template FROM fingers WHERE id = ?", (finger_id,)).fetchone()
            if row is None:
                return ()
            t = self._template(row[0], finger_id)
        m = verify(probe, t)
        return tuple((int(a), int(b)) for a, b in m.pairs)
