"""The shard actor: one single-machine store held open in a Ray actor (wrapped with ray.remote when a
sharded gallery opens). It runs public :class:`~biomatch.gallery.Gallery` methods only: the ordinary
API and the shard API (:mod:`biomatch.gallery.shard`)."""

from __future__ import annotations

import os

from ..errors import GalleryError
from ..gallery import Gallery


def ray_module():
    try:
        import ray
    except ImportError:
        raise GalleryError(
            "ray: sharded galleries (ray://...) need the optional dependency; install biomatch[distributed]"
        ) from None
    return ray


class Shard:
    """One shard: a :class:`Gallery` store, opened with the sharded gallery's key and search params."""

    def __init__(self, path: str, key=None, params=None):
        self.path = path
        self.g = Gallery.open(path, key=key, params=params)

    def ping(self) -> int:
        return os.getpid()

    def call(self, method: str, *args, **kwargs):
        """Run a public Gallery method (enroll, search_neighbours, import_from, ...) on this shard."""
        if not isinstance(method, str) or method.startswith("_") or not callable(getattr(self.g, method, None)):
            raise GalleryError(f"method: {method!r} is not a public Gallery method")
        return getattr(self.g, method)(*args, **kwargs)

    def close(self) -> None:
        self.g.close()
