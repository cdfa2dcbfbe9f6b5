"""Placement: which shard owns a subject (jump consistent hash), and the ``ray://DIR?shards=N`` URL."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import parse_qs

from .._validate import check_int
from ..errors import GalleryError
from ..gallery.checks import check_subject

#: Largest shard count a sharded gallery accepts.
MAX_SHARDS = 1024

URL_PREFIX = "ray://"


def shard_of(subject_id: str, n_shards: int) -> int:
    """The shard owning ``subject_id`` among ``n_shards``.

    Jump consistent hash (Lamping and Veach 2014) of the first 8 bytes of
    SHA-256 of the UTF-8 subject id: stable everywhere, and growing
    ``n_shards`` by one moves only the subjects the new shard takes.

    Parameters
    ----------
    subject_id : str
    n_shards : int
        1..:data:`MAX_SHARDS`.

    Returns
    -------
    int
        0..n_shards-1.
    """
    subject_id = check_subject(subject_id)
    n = check_shards(n_shards)
    key = int.from_bytes(hashlib.sha256(subject_id.encode("utf-8")).digest()[:8], "big")
    b, j = -1, 0
    while j < n:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def owned_by(k: int, n_shards: int, subject_id: str) -> bool:
    """Whether shard ``k`` of ``n_shards`` owns ``subject_id`` (a picklable selector for imports)."""
    return shard_of(subject_id, n_shards) == k


def check_shards(n, name: str = "shards") -> int:
    """A shard count 1..MAX_SHARDS."""
    return check_int(n, name, 1, MAX_SHARDS, error=GalleryError)


def parse_url(url: str) -> tuple[Path, int | None]:
    """Split ``"ray://DIR?shards=N"`` into (DIR, N or None when not given).

    Raises
    ------
    GalleryError
        For another scheme, an empty DIR, an unknown or repeated query key, or a bad N.
    """
    if not isinstance(url, str) or not url.startswith(URL_PREFIX):
        raise GalleryError(f"path: expected a 'ray://DIR?shards=N' URL, got {url!r}")
    rest = url[len(URL_PREFIX):]
    directory, _, query = rest.partition("?")
    if not directory:
        raise GalleryError(f"path: {url!r} names no directory (expected 'ray://DIR?shards=N')")
    try:
        params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise GalleryError(f"path: {url!r} has a malformed query (expected '?shards=N')") from None
    unknown = sorted(set(params) - {"shards"})
    if unknown:
        raise GalleryError(f"path: unknown option(s) {unknown} in {url!r} (known: shards)")
    shards = None
    if "shards" in params:
        values = params["shards"]
        if len(values) != 1 or not values[0].strip().isdigit():
            raise GalleryError(f"shards: expected one integer 1..{MAX_SHARDS} in {url!r}, got {values}")
        shards = check_shards(int(values[0]))
    return Path(directory), shards
