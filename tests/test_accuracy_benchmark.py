"""benchmarks/accuracy_matching: its pair bookkeeping and its refusal of WSQ rates the codec cannot honour."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed; appended, so the installed biomatch (with its built _native) still comes first

from benchmarks import accuracy_matching as am  # noqa: E402


def test_pair_subjects_follow_the_scoring_order():
    labels = np.array([7, 7, 7, 3, 3, 9])
    gen, imp = am.all_pairs_subjects(labels)
    n = labels.size
    assert gen.size + imp.size == n * (n - 1) // 2
    # the same i < j walk as all_pairs_scores: probe i's genuine pairs, then the next probe's
    expect_gen, expect_imp = [], []
    for i in range(n - 1):
        for j in range(i + 1, n):
            (expect_gen if labels[i] == labels[j] else expect_imp).append(labels[i])
    np.testing.assert_array_equal(gen, expect_gen)
    np.testing.assert_array_equal(imp, expect_imp)


def test_only_the_codec_rate_is_accepted():
    am.check_wsq_bpp(am.WSQ_CODEC_BPP)
    with pytest.raises(SystemExit, match="0.75 bpp only"):
        am.check_wsq_bpp(2.25)
    with pytest.raises(SystemExit, match="0.75 bpp only"):
        am.main(["--source", "extract", "--wsq-bpp", "1.5"])


def test_the_codec_really_ignores_the_rate():
    # the reason for the refusal: if a future wsq honours the rate, this fails and the refusal can go
    _wsq = pytest.importorskip("_wsq")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256]
    pixels = (127 + 100 * np.sin(x / 2.5 + y / 7.0) + rng.normal(0, 10, x.shape)).clip(0, 255).astype(np.uint8)
    sizes = {len(_wsq.compress(pixels.tobytes(), 256, 256, rate)) for rate in (0.75, 2.25)}
    assert len(sizes) == 1


def test_template_cache_key_covers_every_module(tmp_path):
    """A change to any module extraction may import (not only extraction*.py) must miss the cache."""
    root = tmp_path / "biomatch"
    (root / "data").mkdir(parents=True)
    for name, text in (("extraction.py", "x = 1\n"), ("_filters.py", "y = 1\n"), ("gallery/store.py", "z = 1\n")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "data" / "ridge_model.onnx").write_bytes(b"w")
    first = am._extraction_key(root)
    assert am._extraction_key(root) == first
    for name in ("_filters.py", "gallery/store.py", "data/ridge_model.onnx"):
        before = am._extraction_key(root)
        (root / name).write_bytes((root / name).read_bytes() + b"#")
        assert am._extraction_key(root) != before, name
    assert am._extraction_key(root) != first
