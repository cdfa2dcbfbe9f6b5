"""The learned ridge model: weights check, determinism, output against synthetic ground truth, geometry."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import biomatch as bm
from biomatch import extraction as ex
from biomatch import ridge_model as RM
from biomatch import synthetic as S
from biomatch.synthetic_livescan import render_livescan

HELD_OUT_SEED = 2026  # training uses training.train_ridge_model.TRAIN_SEED (7)


def learned(pixels):
    return ex.extract_detailed(pixels, ppi=500, front_end="learned").template


@pytest.fixture(scope="module")
def live():
    master = S.make_finger(3, HELD_OUT_SEED)
    return render_livescan(S.make_impression(master, 1), HELD_OUT_SEED, sensor="optical", skin="normal", wsq=False)


@pytest.fixture()
def fresh_session():
    RM._session.cache_clear()
    yield
    RM._session.cache_clear()


def test_corrupt_weights_are_refused(monkeypatch, fresh_session):
    monkeypatch.setattr(RM, "MODEL_SHA256", "0" * 64)
    with pytest.raises(RM.ModelError, match="corrupt"):
        RM.run_network(np.zeros((2, 40, 40), np.float32))


def test_missing_weights_are_refused(monkeypatch, fresh_session):
    monkeypatch.setattr(RM, "MODEL_FILE", "no_such_model.onnx")
    with pytest.raises(RM.ModelError, match="missing"):
        RM.run_network(np.zeros((2, 40, 40), np.float32))
    assert issubclass(RM.ModelError, bm.BiomatchError)


def test_shipped_weights_match_their_hash():
    import hashlib
    from importlib import resources

    data = resources.files("biomatch.data").joinpath(RM.MODEL_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == RM.MODEL_SHA256
    assert len(data) < 5 * 2**20


def test_inference_is_deterministic(live):
    x = RM.network_input(live.pixels)
    a = RM.run_network(x)
    b = RM.run_network(x.copy())
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    t1, t2 = learned(live.pixels), learned(live.pixels.copy())
    assert t1.to_bytes() == t2.to_bytes()


def test_odd_sizes_give_maps_of_the_input_size():
    x = np.random.default_rng(0).standard_normal((2, 37, 51)).astype(np.float32)
    r, f = RM.run_network(x)
    assert r.shape == f.shape == (37, 51)


def test_network_recovers_the_ridges_and_foreground_of_a_held_out_print(live):
    ridge_logit, fg_logit = RM.run_network(RM.network_input(live.pixels))
    truth_ridge = RM.half_resolution(live.ridge) > 0
    truth_fg = RM.half_resolution(live.mask.astype(np.float32)) > 0.5
    fg = fg_logit > 0
    iou = (fg & truth_fg).sum() / (fg | truth_fg).sum()
    inside = truth_fg & fg
    accuracy = ((ridge_logit > 0) == truth_ridge)[inside].mean()
    assert iou > 0.8, iou
    assert accuracy > 0.85, accuracy


def _mates(a, b, dist_px=15.0, angle_deg=30.0) -> int:
    """Greedy one-to-one count of minutiae of ``a`` with a mate in ``b`` (distance and angle tolerance)."""
    used = np.zeros(len(b), bool)
    n = 0
    for m in a:
        d = np.hypot(b["x"] - m["x"], b["y"] - m["y"])
        da = np.abs(np.angle(np.exp(1j * (b["angle"] - m["angle"]))))
        ok = (d <= dist_px) & (da <= np.radians(angle_deg)) & ~used
        if ok.any():
            used[np.flatnonzero(ok)[np.argmin(d[ok])]] = True
            n += 1
    return n


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dx=st.integers(-24, 24), dy=st.integers(-24, 24), k=st.integers(0, 3))
def test_moved_image_moves_the_minutiae(live, dx, dy, k):
    """Translate (by padding) and rotate by quarter turns: the minutiae follow."""
    base = learned(live.pixels).minutiae
    img = np.full((live.pixels.shape[0] + 48, live.pixels.shape[1] + 48), int(np.median(live.pixels)), np.uint8)
    img[24 + dy: 24 + dy + live.pixels.shape[0], 24 + dx: 24 + dx + live.pixels.shape[1]] = live.pixels
    img = np.ascontiguousarray(np.rot90(img, k))
    moved = learned(img).minutiae
    # expected positions: shift, then rotate by k quarter turns counter-clockwise (np.rot90)
    x, y, a = base["x"] + 24 + dx, base["y"] + 24 + dy, base["angle"].astype(np.float64)
    h, w = live.pixels.shape[0] + 48, live.pixels.shape[1] + 48
    for _ in range(k):
        x, y, a = y, (w - 1) - x, a + np.pi / 2
        h, w = w, h
    expected = base.copy()
    expected["x"], expected["y"], expected["angle"] = x, y, np.mod(a, 2 * np.pi)
    assert _mates(expected, moved, 4.0, 20.0) >= 0.8 * max(len(base), len(moved))


def test_extracted_minutiae_match_ground_truth_on_a_held_out_print(live):
    found = learned(live.pixels).minutiae
    truth = live.truth.minutiae
    mates = _mates(truth, found)
    # measured with ridge-1 on this print: recall 0.61, precision 0.83 (targets of 0.9 not met, docs/extraction.md)
    assert mates >= 0.5 * len(truth), (mates, len(truth))
    assert mates >= 0.7 * len(found), (mates, len(found))


def test_unknown_front_end_is_refused(live):
    with pytest.raises(bm.BiomatchError, match="front_end"):
        ex.extract_detailed(live.pixels, ppi=500, front_end="neural")


def test_learned_front_end_refuses_what_the_classical_one_refuses():
    noise = np.random.default_rng(1).normal(150, 10, (300, 300)).clip(0, 255).astype(np.uint8)
    with pytest.raises(bm.ImageError, match="no fingerprint foreground|too small"):
        ex.extract_detailed(noise, ppi=500, front_end="learned")
    with pytest.raises(bm.ImageError, match="too small"):
        ex.extract_detailed(np.full((12, 12), 200, np.uint8), ppi=500, front_end="learned")


@pytest.mark.parametrize("front_end", ["learned", "learned-mask"])
def test_learned_front_ends_refuse_strong_noise(front_end):
    # ridge-1 reads this noise as foreground (83k px); the image's own ridge flow fills only 2-4k px of it
    noise = np.random.default_rng(1).normal(150, 30, (300, 300)).clip(0, 255).astype(np.uint8)
    mask, _ = ex._network_mask(noise, "noise", None)
    assert mask.sum() > ex.MIN_FOREGROUND_AREA_PX
    with pytest.raises(bm.ImageError, match="no ridge flow"):
        ex.extract_detailed(noise, ppi=500, front_end=front_end)


def test_foreground_hysteresis_keeps_only_what_touches_the_core():
    logit = np.full((40, 40), -8.0, np.float32)
    logit[10:20, 10:20] = 5.0  # the print's confident core
    logit[8:22, 8:10] = -2.0  # a faint margin touching it
    logit[30:38, 30:38] = -1.0  # a faint region apart from it (residue on the glass)
    tight = RM.foreground_mask(logit, 80, 80)
    grown = RM.foreground_mask(logit, 80, 80, grow_logit=-3.0)
    assert tight[30, 30] and not tight[30, 18]  # core only (upsampled: 250 -> 500 ppi)
    assert grown[30, 18] and grown[20:40, 20:40].all()
    assert not grown[68, 68]  # the separate faint region is left out though it passes the threshold
    assert not RM.foreground_mask(np.full((10, 10), -1.0, np.float32), 20, 20, grow_logit=-3.0).any()


def test_learned_mask_front_end_extracts_with_the_classical_stages(live):
    t = ex.extract_detailed(live.pixels, ppi=500, front_end="learned-mask").template
    found, truth = t.minutiae, live.truth.minutiae
    assert _mates(truth, found) >= 0.5 * len(truth), (len(found), len(truth))
    assert ex.EXTRACTOR_VERSIONS["learned-mask"] != ex.EXTRACTOR_VERSIONS["classical"]
    with pytest.raises(bm.ImageError, match="too small"):
        ex.extract_detailed(np.full((12, 12), 200, np.uint8), ppi=500, front_end="learned-mask")
