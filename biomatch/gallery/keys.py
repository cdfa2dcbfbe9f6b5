"""Encryption at rest: the store's key, sealing and unsealing rows, key rotation."""

from __future__ import annotations



from .. import audit as _audit
from .. import encryption as _enc
from .._validate import check_int
from ..errors import GalleryError
from ..template import Template
from .checks import check_operator
from .store import AAD_CHECK, AAD_ORIGINAL, AAD_TEMPLATE, KEY_CHECK_TEXT
#: Rows re-encrypted per write transaction by :meth:`Gallery.rotate_key` (short write locks).
ROTATE_BATCH = 200


class KeysMixin:
    """The store key, seal/unseal of rows and index files, key rotation (part of :class:`Gallery`)."""

    # -- encryption at rest (biomatch.encryption) ------------------------------
    @staticmethod
    def _store_key_id(con) -> str | None:
        row = con.execute("SELECT value FROM meta WHERE key = 'key_current'").fetchone()
        return row[0] if row else None

    @staticmethod
    def _register_key(con, ring) -> None:
        """Make ``ring.preferred`` the store's current key (inside a write transaction)."""
        kid = ring.preferred
        check = ring.seal(KEY_CHECK_TEXT, AAD_CHECK, kid)
        con.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(f"key_check:{kid}", check.hex()), ("key_current", kid)],
        )

    def _init_keys(self) -> None:
        """Check the handle's key against the store's (before anything is written with it)."""
        con = self._con()
        current = self._store_key_id(con)
        if current is None:
            if self._ring is None or self.read_only:  # a read-only handle encrypts nothing
                return
            with self._write() as wcon:
                if self._store_key_id(wcon) is None:  # another process may have won the race
                    self._register_key(wcon, self._ring)
                    _audit.append(wcon, "encryption", check_operator(None), {"key_id": self._ring.preferred, "enabled": True})
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
            ok = row is not None and self._ring.open(bytes.fromhex(row[0]), AAD_CHECK, "key check") == KEY_CHECK_TEXT
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

    def _unseal(self, blob, aad: bytes, name: str, legacy_aad: bytes | None = None) -> bytes:
        if not _enc.is_sealed(blob):
            return bytes(blob)  # plaintext row (store not encrypted, or written before encryption was on)
        if self._ring is None:
            raise GalleryError(f"{name}: encrypted, and this handle holds no key")
        return self._ring.open(blob, aad, name, legacy_aad=legacy_aad)

    # A sealed row's associated data names its gallery, subject and position (and an original's kind), read
    # through the row's own foreign keys: a ciphertext copied into another row, or a subject row renamed,
    # no longer decrypts. Plaintext rows need no lookup.
    _FINGER_PLACE = ("SELECT galleries.name, subjects.subject, fingers.position FROM fingers "
                     "JOIN subjects ON subjects.id = fingers.subject_id JOIN galleries ON galleries.id = subjects.gallery_id "
                     "WHERE fingers.id = ?")
    _ORIGINAL_PLACE = ("SELECT galleries.name, subjects.subject, originals.position, originals.kind FROM originals "
                       "JOIN subjects ON subjects.id = originals.subject_id JOIN galleries ON galleries.id = subjects.gallery_id "
                       "WHERE originals.id = ?")
    _SUBJECT_PLACE = ("SELECT galleries.name, subjects.subject FROM subjects JOIN galleries ON galleries.id = subjects.gallery_id "
                      "WHERE subjects.id = ?")

    @staticmethod
    def _template_aad(gallery: str, subject: str, position: int) -> bytes:
        return _enc.row_aad("template", gallery=gallery, subject=subject, position=int(position))

    @staticmethod
    def _original_aad(gallery: str, subject: str, position, kind: str) -> bytes:
        return _enc.row_aad("original", gallery=gallery, subject=subject, position=position, kind=kind)

    def _subject_place(self, con, sid: int) -> tuple[str, str]:
        row = con.execute(self._SUBJECT_PLACE, (sid,)).fetchone()
        if row is None:
            raise GalleryError(f"{self.path}: subject row {sid} is gone")
        return row

    def _seal_finger(self, con, sid: int, pos: int, data: bytes) -> bytes:
        """A finger's template, sealed and bound to its gallery, subject and position (inside a write transaction)."""
        if self._store_key_id(con) is None:
            return data
        return self._seal(con, data, self._template_aad(*self._subject_place(con, sid), pos))

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
        batch = check_int(batch, "batch", 1, error=GalleryError)
        operator = check_operator(operator)
        with self._write() as con:
            old = self._store_key_id(con)
            self._ring = new if self._ring is None else self._ring.merged(new)
            self._register_key(con, self._ring)
            _audit.append(con, "key_rotation", operator, {"key_id": new.preferred, "previous_key_id": old, "phase": "start"})
        self._featstore.crypt = (self._ring.seal, self._ring.open)
        self._featstore.wipe()
        prefix = _enc.MAGIC + bytes.fromhex(new.preferred)  # legacy (unbound) blobs are re-sealed bound too
        counts = {}
        for table, column in (("fingers", "template"), ("originals", "data")):
            n, last = 0, 0
            while True:
                with self._write() as con:
                    rows = con.execute(
                        f"SELECT id, subject_id, position, {column}, {'kind' if table == 'originals' else 'NULL'} "
                        f"FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
                    ).fetchall()
                    for rid, sid, pos, blob, kind in rows:
                        if bytes(blob[: len(prefix)]) != prefix:
                            if table == "fingers":
                                sealed = self._seal_finger(con, sid, pos, self._unseal_finger(blob, rid, con))
                            else:
                                sealed = self._seal_original(con, sid, pos, kind, self._unseal_original(blob, rid, con))
                            con.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", (sealed, rid))
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
