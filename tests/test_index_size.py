"""An index made under another cylinder cap (a smaller index) is never used: the store rebuilds it."""

from __future__ import annotations

import pytest

from biomatch import descriptors, index
from biomatch.index import GalleryIndex


@pytest.fixture(scope="module")
def gallery():
    from biomatch.synthetic import template_batch

    return next(template_batch(30, 1, seed=11)).templates()


def _codes(t):
    return index.finger_codes(descriptors.encode(t))


def test_index_saved_under_another_cap_is_not_loaded(tmp_path, gallery, monkeypatch):
    path = tmp_path / "i.faiss"
    monkeypatch.setattr(index, "MAX_INDEXED_PER_FINGER", index.MAX_INDEXED_PER_FINGER // 2)  # a smaller index
    old = GalleryIndex(generation=1)
    old.add([(0, 0, _codes(gallery[0]))])
    old.save(path, "g")
    old_version = index.index_version()
    monkeypatch.undo()
    assert GalleryIndex.read_manifest(path)["version"] == old_version != index.index_version()
    assert GalleryIndex.load(path, "g") is None  # the gallery rebuilds it from its stored templates
