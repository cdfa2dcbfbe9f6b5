"""Encryption at rest: the store's key, sealing and unsealing rows (subject metadata too, opt-in), key rotation."""

from __future__ import annotations

import json

from .. import audit as _audit
from .. import encryption as _enc
from .._validate import check_int
from ..errors import GalleryError
from ..template import Template
from .checks import check_operator
from .store import AAD_CHECK, AAD_ORIGINAL, AAD_TEMPLATE, KEY_CHECK_TEXT
#: Rows re-encrypted per write transaction by :meth:`Gallery.rotate_key` (short write locks).
ROTATE_BATCH = 200
#: Sealed subject metadata is padded with spaces to a multiple of this many bytes (its length shows only in steps).
METADATA_PAD = 64
#: States of subject metadata encryption: off; on for new writes while rotate_key seals the rows already there; on.
METADATA_STATES = ("off", "sealing", "on")


def key_check_text(metadata: str) -> bytes:
    """The plaintext of a key check: it also records the store's metadata state, so that only the key changes it."""
    return KEY_CHECK_TEXT if metadata == "off" else KEY_CHECK_TEXT + b"\x00metadata:" + metadata.encode()


def metadata_state_of(text: bytes) -> str | None:
    """The metadata state a key check's plaintext records (None: not a key check)."""
    return next((s for s in METADATA_STATES if key_check_text(s) == text), None)


def check_encrypt_metadata(value, has_key: bool) -> None:
    """The ``encrypt_metadata`` argument of :meth:`Gallery.open` (checked before the store is touched)."""
    if value is not None and not isinstance(value, bool):
        raise GalleryError(f"encrypt_metadata: expected True, False or None, got {type(value).__name__}")
    if value and not has_key:
        raise GalleryError(f"encrypt_metadata: metadata encryption needs a key (give key=... or set {_enc.ENV_KEY})")


class KeysMixin:
    """The store key, seal/unseal of rows and index files, key rotation (part of :class:`Gallery`)."""

    # -- encryption at rest (biomatch.encryption) ------------------------------
    @staticmethod
    def _store_key_id(con) -> str | None:
        row = con.execute("SELECT value FROM meta WHERE key = 'key_current'").fetchone()
        return row[0] if row else None

    @staticmethod
    def _register_key(con, ring, metadata: str = "off") -> None:
        """Make ``ring.preferred`` the store's current key, with metadata state ``metadata`` (inside a write transaction)."""
        kid = ring.preferred
        check = ring.seal(key_check_text(metadata), AAD_CHECK, kid)
        con.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(f"key_check:{kid}", check.hex()), ("key_current", kid)],
        )

    def _init_keys(self, encrypt_metadata: bool | None = None) -> None:
        """Check the handle's key against the store's (before anything is written with it); ``encrypt_metadata``
        (checked by :func:`check_encrypt_metadata`) turns metadata encryption on for a store without subjects."""
        con = self._con()
        current = self._store_key_id(con)
        if current is None:
            if self._ring is None or self.read_only:  # a read-only handle encrypts nothing
                if encrypt_metadata:
                    raise GalleryError(f"encrypt_metadata: {self.path} is not encrypted and opened read-only")
                return
            with self._write() as wcon:
                if self._store_key_id(wcon) is None:  # another process may have won the race
                    state = "on" if encrypt_metadata and self._metadata_switchable(wcon) else "off"
                    self._register_key(wcon, self._ring, state)
                    _audit.append(wcon, "encryption", check_operator(None),
                                  {"key_id": self._ring.preferred, "enabled": True, "metadata": state})
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
        state = self._metadata_state(con)
        if encrypt_metadata is False and state != "off":
            raise GalleryError(f"encrypt_metadata: {self.path} encrypts subject metadata; that cannot be turned off")
        if encrypt_metadata and state == "off":
            if self.read_only:
                raise GalleryError(f"encrypt_metadata: {self.path} does not encrypt subject metadata and is opened read-only")
            with self._write() as wcon:
                if self._metadata_switchable(wcon) and self._metadata_state(wcon) == "off":
                    self._register_key(wcon, self._ring.only(current), "on")
                    _audit.append(wcon, "encryption", check_operator(None), {"key_id": current, "metadata": "on"})
        self._ring.preferred = current  # derived files are sealed with the store's key
        self._featstore.crypt = (self._ring.seal, self._ring.open)

    def _metadata_switchable(self, con) -> bool:
        """Metadata encryption is turned on at open only while the store has no subjects (else rotate_key does it)."""
        n = con.execute("SELECT count(*) FROM subjects").fetchone()[0]
        if n:
            raise GalleryError(
                f"encrypt_metadata: {self.path} already holds {n} subjects whose metadata is in clear; open it with "
                "the key alone and call rotate_key(key, encrypt_metadata=True), which seals it")
        return True

    def _metadata_state(self, con) -> str:
        """'off', 'sealing' or 'on', from the store's key check (so that the state cannot be changed without the key)."""
        kid = self._store_key_id(con)
        if kid is None:
            return "off"
        if self._ring is None or not self._ring.holds(kid):
            raise GalleryError(
                f"{self.path}: the store's key is now key id {kid}, which this handle does not hold "
                "(rotated by another handle); reopen with key=[new key, old key]"
            )
        row = con.execute("SELECT value FROM meta WHERE key = ?", (f"key_check:{kid}",)).fetchone()
        try:
            state = row and metadata_state_of(self._ring.open(bytes.fromhex(row[0]), AAD_CHECK, "key check"))
        except (GalleryError, ValueError):
            state = None
        if not state:
            raise GalleryError(f"key: the key with id {kid} does not open {self.path} (key check failed)")
        return state

    @property
    def metadata_encrypted(self) -> bool:
        """Whether subject metadata is written encrypted (:meth:`Gallery.open` ``encrypt_metadata``)."""
        return self._metadata_state(self._con()) != "off"

    # -- subject metadata (opt-in): sealed and bound to its gallery and subject, padded to METADATA_PAD bytes
    @staticmethod
    def _metadata_aad(gallery: str, subject: str) -> bytes:
        return _enc.row_aad("metadata", gallery=gallery, subject=subject)

    def _seal_metadata(self, con, gallery: str, subject: str, text: str | None, state: str | None = None):
        """What a subject row's metadata column holds: JSON text (or NULL), sealed when the store encrypts metadata
        (``state``: :meth:`_metadata_state`, read once per transaction); inside a write transaction."""
        if (state or self._metadata_state(con)) == "off":
            return text
        data = ("null" if text is None else text).encode()
        data += b" " * (-len(data) % METADATA_PAD)  # JSON ignores trailing white space
        return self._seal(con, data, self._metadata_aad(gallery, subject))

    def _metadata_text(self, con, sid: int, value, state: str | None = None) -> str | None:
        """A subject row's metadata as JSON text (None when none), unsealed against its row; GalleryError when a
        sealed value belongs to another row, or when a store that encrypts metadata holds it in clear."""
        if _enc.is_sealed(value):
            gallery, subject = self._subject_place(con, sid)
            text = self._unseal(value, self._metadata_aad(gallery, subject),
                                f"metadata of subject {subject!r} ({gallery})").decode("utf-8", "replace").rstrip(" ")
            return None if text == "null" else text
        if (state or self._metadata_state(con)) == "on":
            gallery, subject = self._subject_place(con, sid)
            raise GalleryError(f"metadata of subject {subject!r} ({gallery}): not encrypted in a store that encrypts "
                               "metadata (written without the key, or changed)")
        return None if value is None else (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value))

    def _metadata_of(self, con, sid: int, value, state: str | None = None) -> dict | None:
        """A subject row's metadata as a dict (None when none); GalleryError as :meth:`_metadata_text`, or for bad JSON."""
        text = self._metadata_text(con, sid, value, state)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise GalleryError(f"metadata of subject row {sid}: not valid JSON (damaged store)") from None

    def _check_metadata(self, con, problems: list, warnings_: list) -> str:
        """check(): every subject's metadata opens against its row (and is sealed when the store says so)."""
        state = self._metadata_state(con)
        clear = 0
        for sid, value in con.execute("SELECT id, metadata FROM subjects ORDER BY id"):
            clear += state == "sealing" and not _enc.is_sealed(value)
            try:
                self._metadata_of(con, sid, value, state)
            except GalleryError as exc:
                problems.append(str(exc))
        if clear:
            warnings_.append(f"{clear} subjects' metadata is still in clear (metadata encryption not finished: run rotate_key)")
        # the key check of another store under the same key could be copied in to switch it off: the audit log says
        recorded = [r for r in _audit.records(con) if r.get("action") in ("encryption", "key_rotation") and "metadata" in r]
        if state == "off" and recorded and recorded[-1]["metadata"] != "off":
            problems.append(f"metadata encryption was turned on (audit record {recorded[-1]['seq']}) but the store's key "
                            "check says it is off: the key check was replaced")
        return state

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

    def _unseal(self, blob, aad: bytes, name: str, legacy_aad: bytes | None = None) -> bytes:
        if not _enc.is_sealed(blob):
            return bytes(blob)  # plaintext row (store not encrypted, or written before encryption was on)
        if self._ring is None:
            raise GalleryError(f"{name}: encrypted, and this handle holds no key")
        return self._ring.open(blob, aad, name, legacy_aad=legacy_aad)

    # A sealed row's associated data names its gallery, subject and position (and an original's kind), read
    # through the row's own foreign keys: a ciphertext copied into another row, or a subject row renamed,
    # no longer decrypts. Plaintext rows need no lookup.
    _FINGER_PLACE = ("SELECT galleries.name, subjects.subject, fingers.position, fingers.impression FROM fingers "
                     "JOIN subjects ON subjects.id = fingers.subject_id JOIN galleries ON galleries.id = subjects.gallery_id "
                     "WHERE fingers.id = ?")
    _ORIGINAL_PLACE = ("SELECT galleries.name, subjects.subject, originals.position, originals.kind FROM originals "
                       "JOIN subjects ON subjects.id = originals.subject_id JOIN galleries ON galleries.id = subjects.gallery_id "
                       "WHERE originals.id = ?")
    _SUBJECT_PLACE = ("SELECT galleries.name, subjects.subject FROM subjects JOIN galleries ON galleries.id = subjects.gallery_id "
                      "WHERE subjects.id = ?")

    @staticmethod
    def _template_aad(gallery: str, subject: str, position: int, impression: int = 0) -> bytes:
        # an extra impression is bound to its number too (a primary's binding is as before impressions existed)
        extra = {"impression": int(impression)} if impression else {}
        return _enc.row_aad("template", gallery=gallery, subject=subject, position=int(position), **extra)

    @staticmethod
    def _original_aad(gallery: str, subject: str, position, kind: str) -> bytes:
        return _enc.row_aad("original", gallery=gallery, subject=subject, position=position, kind=kind)

    def _subject_place(self, con, sid: int) -> tuple[str, str]:
        row = con.execute(self._SUBJECT_PLACE, (sid,)).fetchone()
        if row is None:
            raise GalleryError(f"{self.path}: subject row {sid} is gone")
        return row

    def _seal_finger(self, con, sid: int, pos: int, data: bytes, impression: int = 0) -> bytes:
        """A finger's template, sealed and bound to its gallery, subject, position and impression (inside a
        write transaction)."""
        if self._store_key_id(con) is None:
            return data
        return self._seal(con, data, self._template_aad(*self._subject_place(con, sid), pos, impression))

    def _seal_original(self, con, sid: int, pos, kind: str, data: bytes) -> bytes:
        if self._store_key_id(con) is None:
            return data
        return self._seal(con, data, self._original_aad(*self._subject_place(con, sid), pos, kind))

    def _unseal_finger(self, blob, finger_id, con=None) -> bytes:
        """A finger row's template bytes; GalleryError when the ciphertext does not belong to that row."""
        return self._unseal_row(blob, finger_id, con, self._FINGER_PLACE, self._template_aad, AAD_TEMPLATE,
                                f"store finger {finger_id}")

    def _unseal_original(self, blob, original_id, con=None) -> bytes:
        """An original's bytes; GalleryError when the ciphertext does not belong to that row."""
        return self._unseal_row(blob, original_id, con, self._ORIGINAL_PLACE, self._original_aad, AAD_ORIGINAL,
                                f"original {original_id}")

    def _unseal_row(self, blob, rid, con, place_sql: str, make_aad, legacy_aad: bytes, name: str) -> bytes:
        if not _enc.is_sealed(blob):
            return bytes(blob)
        place = (con or self._con()).execute(place_sql, (rid,)).fetchone()
        if place is None:
            raise GalleryError(f"{name}: the row is gone")
        return self._unseal(blob, make_aad(*place), name, legacy_aad=legacy_aad)

    def _template(self, blob, finger_id) -> Template:
        name = f"store finger {finger_id}"
        return Template.from_bytes(self._unseal_finger(blob, finger_id), name=name)

    def _index_crypt(self, gallery: str):
        """(seal, unseal) callables for a gallery's index file; (None, None) when not encrypted."""
        if self._ring is None:
            return None, None
        ring, aad, name = self._ring, f"biomatch:index:{gallery}".encode(), f"index file of {gallery!r}"
        return (lambda data: ring.seal(data, aad)), (lambda blob: ring.open(blob, aad, name))

    @property
    def encrypted(self) -> bool:
        """Whether the store encrypts templates and originals at rest."""
        return self._store_key_id(self._con()) is not None

    def rotate_key(self, new_key, *, operator: str | None = None, batch: int = ROTATE_BATCH,
                   encrypt_metadata: bool = False) -> dict:
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
        encrypt_metadata : bool
            Also encrypt subject metadata from now on, and seal every
            subject's metadata already there (a store that encrypts metadata
            keeps doing so; its metadata is re-sealed under the new key).

        Returns
        -------
        dict
            ``{"key_id": ..., "previous_key_id": ..., "templates": n, "originals": n, "metadata": n}`` re-encrypted.
        """
        new = _enc.KeyRing.from_user(new_key, env=False)
        if new is None or isinstance(new_key, (list, tuple)):
            raise GalleryError("new_key: expected one key (bytes or base64 text)")
        batch = check_int(batch, "batch", 1, error=GalleryError)
        operator = check_operator(operator)
        if not isinstance(encrypt_metadata, bool):
            raise GalleryError(f"encrypt_metadata: expected True or False, got {type(encrypt_metadata).__name__}")
        with self._write() as con:
            old = self._store_key_id(con)
            state = self._metadata_state(con)
            if state == "off" and encrypt_metadata:
                state = "sealing"  # new writes seal it at once; "on" once every row is sealed
            self._ring = new if self._ring is None else self._ring.merged(new)
            self._register_key(con, self._ring, state)
            _audit.append(con, "key_rotation", operator, {"key_id": new.preferred, "previous_key_id": old, "phase": "start",
                                                          "metadata": state})
        self._featstore.crypt = (self._ring.seal, self._ring.open)
        self._featstore.wipe()
        prefix = _enc.MAGIC + bytes.fromhex(new.preferred)  # legacy (unbound) blobs are re-sealed bound too
        counts = {}
        for table, column in (("fingers", "template"), ("originals", "data")):
            n, last = 0, 0
            while True:
                with self._write() as con:
                    rows = con.execute(
                        f"SELECT id, subject_id, position, {column}, {'kind' if table == 'originals' else 'impression'} "
                        f"FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
                    ).fetchall()
                    for rid, sid, pos, blob, kind in rows:
                        if bytes(blob[: len(prefix)]) != prefix:
                            if table == "fingers":
                                sealed = self._seal_finger(con, sid, pos, self._unseal_finger(blob, rid, con), kind)
                            else:
                                sealed = self._seal_original(con, sid, pos, kind, self._unseal_original(blob, rid, con))
                            con.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", (sealed, rid))
                            n += 1
                if not rows:
                    break
                last = rows[-1][0]
            counts[table] = n
        counts["metadata"] = self._reseal_metadata(prefix, batch) if state != "off" else 0
        for name in self.galleries():  # index files: re-sealed under the new key
            with self._index_lock:
                self._save_index(self.index(name), name)
                self._dirty.discard(name)
        with self._write() as con:
            con.execute("DELETE FROM meta WHERE key LIKE 'key_check:%' AND key != ?", (f"key_check:{new.preferred}",))
            if state == "sealing":  # every subject's metadata is sealed now: plaintext is refused from here on
                state = "on"
                self._register_key(con, self._ring.only(new.preferred), state)
            _audit.append(con, "key_rotation", operator, {"key_id": new.preferred, "previous_key_id": old, "phase": "done",
                                                          "templates": counts["fingers"], "originals": counts["originals"],
                                                          "metadata": state, "metadata_rows": counts["metadata"]})
        self._ring = self._ring.only(new.preferred)
        self._featstore.crypt = (self._ring.seal, self._ring.open)
        self._checkpoint()
        return {"key_id": new.preferred, "previous_key_id": old, "templates": counts["fingers"],
                "originals": counts["originals"], "metadata": counts["metadata"]}

    def _reseal_metadata(self, prefix: bytes, batch: int) -> int:
        """rotate_key: seal under the new key (``prefix``) every subject's metadata not yet sealed with it."""
        n, last = 0, 0
        while True:
            with self._write() as con:
                rows = con.execute("SELECT id, metadata FROM subjects WHERE id > ? ORDER BY id LIMIT ?", (last, batch)).fetchall()
                for sid, value in rows:
                    if not (isinstance(value, bytes) and value.startswith(prefix)):
                        text = self._metadata_text(con, sid, value, "sealing")
                        sealed = self._seal_metadata(con, *self._subject_place(con, sid), text, "sealing")
                        con.execute("UPDATE subjects SET metadata = ? WHERE id = ?", (sealed, sid))
                        n += 1
            if not rows:
                return n
            last = rows[-1][0]
