"""Encryption at rest of the biometric data in a gallery store (AES-GCM).

When a :class:`biomatch.Gallery` is opened with a key (``Gallery.open(path,
key=...)`` or the :data:`ENV_KEY` environment variable), every template and
every original (image or transaction bytes) is written as a sealed blob::

    MAGIC (4 bytes) | key id (8 bytes) | nonce (12 bytes) | AES-GCM ciphertext + 16-byte tag

The key id is the first 8 bytes of ``SHA-256("biomatch key id" | key)``: it
names the key without revealing it, so that a store can hold rows under an
old and a new key while :meth:`biomatch.Gallery.rotate_key` re-encrypts it.
The associated data names what the blob is and, for a store row, where it
belongs (:func:`row_aad`: the kind of data, gallery, subject and finger
position), so a ciphertext moved to another subject's row, another position or
another kind of data fails to decrypt. Blobs written before rows were bound
(magic :data:`LEGACY_MAGIC`) are still read, with the associated data of their
day (the column only); :meth:`biomatch.Gallery.rotate_key` re-seals them bound
and :meth:`biomatch.Gallery.check` counts them.
The derived files hold biometric-derived data too and are sealed with the
same key: the rescoring rows in ``<store>.features`` and each gallery's FAISS
index file (bit-packed MCC cylinder codes), decrypted into memory on load.

The key also authenticates exported audit heads (:meth:`KeyRing.mac`: an
HMAC-SHA-256 under a key derived from the store key, never the key itself).

Keys are 16, 24 or 32 raw bytes (AES-128/192/256), or the same base64
encoded. A list of keys means: the first is the one this handle expects to
write with, the others are accepted for reading (during a rotation by
another process). ``BIOMATCH_STORE_KEY`` holds one base64 key or several
separated by commas.

Needs the ``cryptography`` package (``pip install "biomatch[crypto]"``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from typing import Iterable

from .errors import GalleryError

__all__ = ["ENV_KEY", "MAGIC", "LEGACY_MAGIC", "KeyRing", "key_id", "is_sealed", "is_legacy", "sealed_key_id",
           "generate_key", "row_aad"]

#: Environment variable holding the store key(s), base64, comma-separated.
ENV_KEY = "BIOMATCH_STORE_KEY"
#: First bytes of every sealed blob written now (associated data as :func:`row_aad` makes it for rows).
MAGIC = b"BME\x02"
#: First bytes of blobs sealed before rows were bound (associated data named the column only).
LEGACY_MAGIC = b"BME\x01"
_MAGICS = (MAGIC, LEGACY_MAGIC)
KEY_ID_BYTES = 8
NONCE_BYTES = 12
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + NONCE_BYTES
_KEY_SIZES = (16, 24, 32)


def generate_key() -> bytes:
    """A fresh random 256-bit key (keep it outside the store)."""
    return os.urandom(32)


def key_id(key: bytes) -> str:
    """Hex id of a key (16 hex digits); reveals nothing usable about the key."""
    return hashlib.sha256(b"biomatch key id\x00" + key).digest()[:KEY_ID_BYTES].hex()


def is_sealed(blob) -> bool:
    """Whether ``blob`` is a sealed (encrypted) biomatch blob."""
    return isinstance(blob, (bytes, bytearray, memoryview)) and bytes(blob[: len(MAGIC)]) in _MAGICS and len(blob) > HEADER_BYTES


def is_legacy(blob) -> bool:
    """Whether ``blob`` was sealed before store rows were bound to their place (:data:`LEGACY_MAGIC`)."""
    return is_sealed(blob) and bytes(blob[: len(LEGACY_MAGIC)]) == LEGACY_MAGIC


def row_aad(what: str, **binding) -> bytes:
    """Associated data that binds a sealed store row to its place.

    Parameters
    ----------
    what : str
        What the blob is (``"template"``, ``"original"``).
    **binding
        Where it belongs, e.g. ``gallery``, ``subject``, ``position`` (JSON
        values). The same values must be given to open it: a ciphertext copied
        into another row fails to decrypt.
    """
    return f"biomatch:{what}:".encode() + json.dumps(binding, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac_key(key: bytes) -> bytes:
    return hashlib.sha256(b"biomatch audit head mac\x00" + key).digest()


def sealed_key_id(blob) -> str | None:
    """The key id a sealed blob was written with (None for plaintext)."""
    if not is_sealed(blob):
        return None
    return bytes(blob[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES]).hex()


def _as_key(value, where: str) -> bytes:
    if isinstance(value, str):
        try:
            value = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise GalleryError(f"{where}: not valid base64") from None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise GalleryError(f"{where}: expected key bytes or base64 text, got {type(value).__name__}")
    value = bytes(value)
    if len(value) not in _KEY_SIZES:
        raise GalleryError(f"{where}: an AES key is 16, 24 or 32 bytes, got {len(value)}")
    return value


def _aesgcm():
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise GalleryError(f"key: encryption at rest needs the 'cryptography' package (pip install 'biomatch[crypto]'): {exc}") from None
    return AESGCM


class KeyRing:
    """The keys a gallery handle holds: seal with one, open with any.

    Parameters
    ----------
    keys : list of bytes
        Raw AES keys; ``keys[0]`` is the preferred one.
    """

    def __init__(self, keys: list[bytes]):
        aesgcm = _aesgcm()
        self._ciphers: dict[str, object] = {}
        self._mac_keys: dict[str, bytes] = {}
        for k in keys:
            self._ciphers.setdefault(key_id(k), aesgcm(k))
            self._mac_keys.setdefault(key_id(k), _mac_key(k))
        self.preferred = key_id(keys[0])

    @classmethod
    def from_user(cls, key, *, env: bool = True) -> "KeyRing | None":
        """A ring from the ``key=`` argument (bytes, base64 text or a list of them), else :data:`ENV_KEY`."""
        where = "key"
        if key is None and env:
            text = os.environ.get(ENV_KEY)
            if not text:
                return None
            key, where = [part for part in text.split(",") if part.strip()], ENV_KEY
        if key is None:
            return None
        items: Iterable = [key] if isinstance(key, (str, bytes, bytearray, memoryview)) else key
        try:
            keys = [_as_key(k, f"{where}[{i}]" if not isinstance(key, (str, bytes, bytearray, memoryview)) else where)
                    for i, k in enumerate(items)]
        except TypeError:
            raise GalleryError(f"{where}: expected key bytes, base64 text or a list of them, got {type(key).__name__}") from None
        if not keys:
            raise GalleryError(f"{where}: no key given")
        return cls(keys)

    @property
    def ids(self) -> list[str]:
        """Ids of the keys held (the preferred one first)."""
        return [self.preferred] + [k for k in self._ciphers if k != self.preferred]

    def holds(self, kid: str) -> bool:
        return kid in self._ciphers

    def merged(self, other: "KeyRing") -> "KeyRing":
        """A ring holding both rings' keys, ``other``'s preferred key preferred."""
        ring = object.__new__(KeyRing)
        ring._ciphers = {**self._ciphers, **other._ciphers}
        ring._mac_keys = {**self._mac_keys, **other._mac_keys}
        ring.preferred = other.preferred
        return ring

    def only(self, kid: str) -> "KeyRing":
        """A ring holding only the key ``kid``."""
        ring = object.__new__(KeyRing)
        ring._ciphers = {kid: self._ciphers[kid]}
        ring._mac_keys = {kid: self._mac_keys[kid]}
        ring.preferred = kid
        return ring

    def seal(self, plaintext: bytes, aad: bytes, kid: str | None = None) -> bytes:
        """Encrypt ``plaintext`` under key ``kid`` (default the preferred key)."""
        kid = kid or self.preferred
        nonce = os.urandom(NONCE_BYTES)
        ct = self._ciphers[kid].encrypt(nonce, bytes(plaintext), aad)
        return MAGIC + bytes.fromhex(kid) + nonce + ct

    def open(self, blob, aad: bytes, name: str, *, legacy_aad: bytes | None = None) -> bytes:
        """Decrypt a sealed blob; GalleryError naming ``name`` when the key is not held or the blob is corrupt.

        A blob sealed before rows were bound (:data:`LEGACY_MAGIC`) is opened
        with ``legacy_aad`` (default ``aad``: for blobs whose associated data
        did not change).
        """
        from cryptography.exceptions import InvalidTag

        blob = bytes(blob)
        kid = sealed_key_id(blob)
        if kid is None:
            raise GalleryError(f"{name}: not an encrypted biomatch blob")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise GalleryError(f"{name}: encrypted under key id {kid}, which this handle does not hold (held: {', '.join(self.ids)})")
        if is_legacy(blob) and legacy_aad is not None:
            aad = legacy_aad
        nonce = blob[len(MAGIC) + KEY_ID_BYTES : HEADER_BYTES]
        try:
            return cipher.decrypt(nonce, blob[HEADER_BYTES:], aad)
        except InvalidTag:
            raise GalleryError(
                f"{name}: decryption failed (corrupt ciphertext, wrong key, or a ciphertext moved from another row)"
            ) from None

    def mac(self, message: bytes, kid: str | None = None) -> str:
        """HMAC-SHA-256 hex of ``message`` under key ``kid``'s MAC key (derived from it; default the preferred key)."""
        return hmac.new(self._mac_keys[kid or self.preferred], bytes(message), hashlib.sha256).hexdigest()

    def check_mac(self, message: bytes, kid: str, mac: str) -> bool | None:
        """Whether ``mac`` is key ``kid``'s HMAC of ``message``; None when this ring does not hold ``kid``."""
        if kid not in self._mac_keys:
            return None
        return hmac.compare_digest(self.mac(message, kid), str(mac))
