"""Tests of minutiae extraction: each stage on synthetic ridge patterns, geometric
properties of the whole pipeline, bad inputs, the CLI verb, and the native
kernels against slow reference implementations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

import biomatch
from biomatch import extraction as ex
from biomatch.errors import ImageError
from biomatch.template import MinutiaType

# ---------------------------------------------------------------------------
# Synthetic images
# ---------------------------------------------------------------------------


def grating(shape=(200, 200), period=9.0, ridge_angle=0.0, noise=0.0, seed=0) -> np.ndarray:
    """Straight ridges with orientation ``ridge_angle`` (image frame, y down) and ``period`` px."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    normal = ridge_angle + np.pi / 2
    phase = 2 * np.pi * (x * np.cos(normal) + y * np.sin(normal)) / period
    img = 128 + 90 * np.cos(phase)
    if noise:
        img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def rings(shape=(240, 240), period=9.0) -> np.ndarray:
    """Concentric circular ridges around the centre."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot(x - w / 2, y - h / 2)
    return np.clip(128 + 90 * np.cos(2 * np.pi * r / period), 0, 255).astype(np.uint8)


def print_like(shape=(320, 300), period=9.0, singular=((150, 120, 1), (170, 200, -1), (110, 210, 1)), invert=False):
    """A finger-like image: horizontal ridges whose phase winds once around each
    point in ``singular`` (x, y, sign), which makes one minutia there, on an
    elliptical foreground over a white background."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    phase = 2 * np.pi * y / period
    for sx, sy, sign in singular:
        phase += sign * np.arctan2(y - sy, x - sx)
    ridge = np.cos(phase)
    if invert:
        ridge = -ridge
    inside = ((x - w / 2) / (0.42 * w)) ** 2 + ((y - h / 2) / (0.44 * h)) ** 2 <= 1.0
    img = np.where(inside, 128 + 100 * ridge, 235.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def angle_diff(a, b):
    return np.abs(np.angle(np.exp(1j * (np.asarray(a, float) - np.asarray(b, float)))))


def axial_diff(a, b):
    """Difference of orientations (mod pi)."""
    return np.abs(np.angle(np.exp(2j * (np.asarray(a, float) - np.asarray(b, float))))) / 2


def matched_fraction(ref, moved, max_px=4.0, max_angle=np.deg2rad(20)):
    """Share of ``ref`` minutiae that have a counterpart in ``moved`` (same type, near, similar angle)."""
    if len(ref) == 0:
        return 1.0 if len(moved) == 0 else 0.0
    hits = 0
    for r in ref:
        d = np.hypot(moved["x"] - r["x"], moved["y"] - r["y"])
        ok = (d <= max_px) & (angle_diff(moved["angle"], r["angle"]) <= max_angle)
        hits += bool(ok.any())
    return hits / len(ref)


# ---------------------------------------------------------------------------
# Stages on synthetic patterns
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ridge_angle_deg", [0, 30, 75, 90, 135, 160])
def test_orientation_of_grating(ridge_angle_deg):
    img = grating(ridge_angle=np.deg2rad(ridge_angle_deg), noise=15)
    normalized, _ = ex.normalize(255.0 - img.astype(np.float32))
    orientation, coherence = ex.orientation_field(normalized)
    inner = (slice(30, -30), slice(30, -30))
    err = axial_diff(orientation[inner], np.deg2rad(ridge_angle_deg))
    assert np.median(err) < np.deg2rad(3)
    assert np.percentile(err, 95) < np.deg2rad(8)
    assert np.median(coherence[inner]) > 0.7
    assert orientation.min() >= 0 and orientation.max() < np.pi


@pytest.mark.parametrize("ridge_angle", [0.3, 1.2, 2.5])
def test_orientation_of_very_noisy_grating(ridge_angle):
    """Orientation comes from a window of about three ridge periods: it holds under
    noise of twice the ridge contrast (a 7 px window gave 95th percentiles up to 23 deg)."""
    img = grating(ridge_angle=ridge_angle, noise=200, seed=0)
    normalized, _ = ex.normalize(255.0 - img.astype(np.float32))
    orientation, _ = ex.orientation_field(normalized)
    err = axial_diff(orientation[30:-30, 30:-30], ridge_angle)
    assert np.median(err) < np.deg2rad(4.5)
    assert np.percentile(err, 95) < np.deg2rad(14)


@pytest.mark.parametrize("ridge_angle", [0.3, 1.2, 2.5])
def test_refined_orientation_is_steadier_under_noise(ridge_angle):
    """The second pass, on the Gabor-enhanced image, is several times more accurate
    than the first field under noise of twice the ridge contrast."""
    img = grating(ridge_angle=ridge_angle, noise=200, seed=1)
    normalized, _ = ex.normalize(255.0 - img.astype(np.float32))
    first, _ = ex.orientation_field(normalized)
    mask = np.ones(img.shape, dtype=bool)
    period, _ = ex.ridge_period(normalized, mask)
    refined = ex.refine_orientation(ex.enhance(normalized, mask, first, period), mask, first)
    assert refined.dtype == np.float32 and refined.min() >= 0 and refined.max() < np.pi
    inner = (slice(30, -30), slice(30, -30))
    err_first = axial_diff(first[inner], ridge_angle)
    err_refined = axial_diff(refined[inner], ridge_angle)
    assert np.median(err_refined) < np.deg2rad(1.0)
    assert np.median(err_refined) < 0.5 * np.median(err_first)
    assert np.percentile(err_refined, 95) < 0.5 * np.percentile(err_first, 95)


def test_refined_orientation_keeps_first_field_outside_mask():
    img = grating(ridge_angle=0.7, noise=10)
    normalized, _ = ex.normalize(255.0 - img.astype(np.float32))
    first, _ = ex.orientation_field(normalized)
    mask = np.zeros(img.shape, dtype=bool)
    mask[40:160, 40:160] = True
    period, _ = ex.ridge_period(normalized, np.ones(img.shape, dtype=bool))
    refined = ex.refine_orientation(ex.enhance(normalized, mask, first, period), mask, first)
    assert np.array_equal(refined[~mask], first[~mask])
    assert np.median(axial_diff(refined[60:140, 60:140], 0.7)) < np.deg2rad(2)


def test_ridge_clarity_separates_ridges_from_noise():
    mask = np.ones((200, 200), dtype=bool)

    def clarity_of(img):
        normalized, _ = ex.normalize(255.0 - img.astype(np.float32))
        orientation, _ = ex.orientation_field(normalized)
        period, _ = ex.ridge_period(normalized, mask)
        clarity = ex.ridge_clarity(ex.enhance(normalized, mask, orientation, period))
        assert clarity.shape == img.shape and clarity.dtype == np.float32
        return float(np.median(clarity[30:-30, 30:-30]))

    noise = np.clip(128 + 60 * np.random.default_rng(0).normal(size=(200, 200)), 0, 255).astype(np.uint8)
    assert clarity_of(grating(ridge_angle=0.4, noise=5)) > ex.GOOD_CLARITY
    assert clarity_of(noise) < 0.15


def test_minutia_quality_falls_with_ridge_clarity():
    minutiae = {"y": np.array([50, 50]), "x": np.array([50, 60])}
    shape = (100, 100)
    coherence = np.full(shape, 0.8, dtype=np.float32)
    border = np.full(shape, 100.0, dtype=np.float32)
    period = np.full(shape, 9.0, dtype=np.float32)
    clarity = np.full(shape, ex.GOOD_CLARITY, dtype=np.float32)
    clarity[:, 55:] = 0.25 * ex.GOOD_CLARITY
    q = ex.minutia_quality(minutiae, coherence, clarity, border, period)
    assert q.dtype == np.uint8
    assert q[0] == 80 and q[1] == 20


def test_orientation_of_rings_is_tangential():
    img = rings()
    normalized, _ = ex.normalize(255.0 - img.astype(np.float32))
    orientation, _ = ex.orientation_field(normalized)
    h, w = img.shape
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot(x - w / 2, y - h / 2)
    annulus = (r > 40) & (r < 100)
    tangent = np.arctan2(y - h / 2, x - w / 2) + np.pi / 2
    err = axial_diff(orientation[annulus], tangent[annulus])
    assert np.median(err) < np.deg2rad(4)


@pytest.mark.parametrize("period", [6.0, 8.0, 10.0, 12.5])
def test_ridge_period_of_grating(period):
    img = grating(period=period, ridge_angle=0.6, noise=10)
    normalized, _ = ex.normalize(255.0 - img.astype(np.float32))
    mask = np.ones(img.shape, dtype=bool)
    estimate, tile_ok = ex.ridge_period(normalized, mask)
    assert tile_ok.mean() > 0.9
    assert abs(np.median(estimate) - period) / period < 0.06
    assert np.all((estimate >= ex.MIN_PERIOD_PX) & (estimate <= ex.MAX_PERIOD_PX))


def test_gabor_enhancement_recovers_clean_ridges():
    clean = grating(period=9.0, ridge_angle=0.3).astype(np.float32)
    noisy = grating(period=9.0, ridge_angle=0.3, noise=70, seed=3)
    normalized, _ = ex.normalize(255.0 - noisy.astype(np.float32))
    orientation, _ = ex.orientation_field(normalized)
    mask = np.ones(noisy.shape, dtype=bool)
    period, _ = ex.ridge_period(normalized, mask)
    enhanced = ex.enhance(normalized, mask, orientation, period)
    inner = (slice(20, -20), slice(20, -20))
    target = 255.0 - clean
    corr_before = np.corrcoef(normalized[inner].ravel(), target[inner].ravel())[0, 1]
    corr_after = np.corrcoef(enhanced[inner].ravel(), target[inner].ravel())[0, 1]
    assert corr_after > 0.9
    assert corr_after > corr_before + 0.2
    assert np.all(ex.enhance(normalized, ~mask, orientation, period) == 0)


def test_binarize_and_thin_grating_gives_one_line_per_ridge():
    img = grating(period=10.0, ridge_angle=0.0)  # horizontal ridges
    normalized, _ = ex.normalize(255.0 - img.astype(np.float32))
    orientation, _ = ex.orientation_field(normalized)
    mask = np.zeros(img.shape, dtype=bool)
    mask[20:-20, 20:-20] = True
    period, _ = ex.ridge_period(normalized, mask)
    ridges = ex.binarize(ex.enhance(normalized, mask, orientation, period), mask)
    skeleton = ex.thin(ridges)
    column = skeleton[25:-25, 100]
    n_ridges = int(np.sum(np.diff(column.astype(int)) == 1))
    expected = (img.shape[0] - 50) / 10.0
    assert abs(n_ridges - expected) <= 1
    # each skeleton line is straight and horizontal
    rows = np.flatnonzero(skeleton[:, 60:140].sum(axis=1) > 60)
    assert len(rows) >= expected - 1


def test_ridge_ending_and_bifurcation_from_winding_phase():
    """One winding of the ridge phase makes one minutia; inverting the image
    swaps ending and bifurcation and keeps the direction (ISO convention)."""
    single = ((150, 160, 1),)
    direct = biomatch.extract(print_like(singular=single), ppi=500).minutiae
    inverse = biomatch.extract(print_like(singular=single, invert=True), ppi=500).minutiae
    for m in (direct, inverse):
        near = m[np.hypot(m["x"] - 150, m["y"] - 160) < 8]
        assert len(near) == 1, m
    a = direct[np.hypot(direct["x"] - 150, direct["y"] - 160) < 8][0]
    b = inverse[np.hypot(inverse["x"] - 150, inverse["y"] - 160) < 8][0]
    assert {int(a["type"]), int(b["type"])} == {MinutiaType.ENDING, MinutiaType.BIFURCATION}
    assert axial_diff(a["angle"], 0.0) < np.deg2rad(15)  # ridges are horizontal
    assert angle_diff(a["angle"], b["angle"]) < np.deg2rad(30)
    # away from the singular point there are no minutiae in a clean pattern
    assert len(direct) <= 3 and len(inverse) <= 3


@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("invert", [False, True])
def test_minutia_direction_points_to_the_extra_ridge(sign, invert):
    """With phase 2*pi*y/T + sign*atan2(y - y0, x - x0) the side x > x0 holds one
    ridge (and one valley) more than x < x0 when sign = +1. The extra ridge
    starts at the minutia: a ridge ending points along it, and a bifurcation
    (the extra valley's end) opens towards it, so both point to +x; to -x
    for sign = -1."""
    x0, y0 = 150, 160
    m = biomatch.extract(print_like(singular=((x0, y0, sign),), invert=invert), ppi=500).minutiae
    near = m[np.hypot(m["x"] - x0, m["y"] - y0) < 8]
    assert len(near) == 1
    expected = 0.0 if sign > 0 else np.pi
    assert angle_diff(near[0]["angle"], expected) < np.deg2rad(15)


# ---------------------------------------------------------------------------
# Geometric properties of the whole pipeline
# ---------------------------------------------------------------------------

MANY = ((110, 100, 1), (190, 110, -1), (150, 160, 1), (100, 220, -1), (200, 215, 1), (150, 260, -1))


@pytest.fixture(scope="module")
def base_print():
    img = print_like(shape=(340, 300), singular=MANY)
    return img, biomatch.extract(img, ppi=500).minutiae


def test_synthetic_print_minutiae_found(base_print):
    _, m = base_print
    for sx, sy, _ in MANY:
        assert np.min(np.hypot(m["x"] - sx, m["y"] - sy)) < 6


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rotation_by_quarter_turns(base_print, k):
    img, m = base_print
    h, w = img.shape
    rotated = biomatch.extract(np.ascontiguousarray(np.rot90(img, k)), ppi=500).minutiae
    # np.rot90 turns the picture counter-clockwise: (x, y) -> (y, w-1-x), angle + pi/2
    x, y, a = m["x"].astype(float), m["y"].astype(float), m["angle"].astype(float)
    for _ in range(k):
        x, y, a = y, (w - 1) - x, a + np.pi / 2
        w, h = h, w
    expected = m.copy()
    expected["x"], expected["y"], expected["angle"] = x, y, np.mod(a, 2 * np.pi)
    assert matched_fraction(expected, rotated) >= 0.85
    assert matched_fraction(rotated, expected) >= 0.85


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dx=st.integers(-25, 25), dy=st.integers(-25, 25))
def test_translation_moves_minutiae(base_print, dx, dy):
    img, m = base_print
    pad = 30
    big = np.pad(img, pad, constant_values=235)
    shifted = np.roll(big, (dy, dx), axis=(0, 1))
    moved = biomatch.extract(shifted, ppi=500).minutiae
    expected = m.copy()
    expected["x"] = m["x"] + pad + dx
    expected["y"] = m["y"] + pad + dy
    assert matched_fraction(expected, moved, max_px=2.5) >= 0.85
    assert matched_fraction(moved, expected, max_px=2.5) >= 0.85


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(degrees=st.floats(-12, 12).filter(lambda d: abs(d) > 1))
def test_small_rotation_moves_minutiae(base_print, degrees):
    img, m = base_print
    h, w = img.shape
    rotated_img = ndi.rotate(img.astype(float), degrees, reshape=False, order=1, mode="constant", cval=235)
    moved = biomatch.extract(np.clip(rotated_img, 0, 255).astype(np.uint8), ppi=500).minutiae
    # ndimage.rotate turns the picture counter-clockwise (as seen) about the centre
    t = np.deg2rad(degrees)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    x, y = m["x"] - cx, m["y"] - cy
    expected = m.copy()
    expected["x"] = cx + x * np.cos(t) + y * np.sin(t)
    expected["y"] = cy - x * np.sin(t) + y * np.cos(t)
    expected["angle"] = np.mod(m["angle"] + t, 2 * np.pi)
    assert matched_fraction(expected, moved, max_px=5, max_angle=np.deg2rad(25)) >= 0.7


def test_resolution_maps_back_to_original_frame(base_print):
    """The same print scanned at 1000 ppi gives minutiae at twice the coordinates."""
    img, m = base_print
    big = np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2)),
        dtype=np.uint8,
    )
    t = biomatch.extract(big, ppi=1000)
    assert t.ppi == 1000 and t.width == big.shape[1]
    expected = m.copy()
    expected["x"] = (m["x"] + 0.5) * 2 - 0.5
    expected["y"] = (m["y"] + 0.5) * 2 - 0.5
    assert matched_fraction(expected, t.minutiae, max_px=5) >= 0.8


def test_template_fields_and_quality(base_print):
    img, _ = base_print
    result = ex.extract_detailed(img, ppi=500, position=3)
    t = result.template
    assert t.position == 3 and t.ppi == 500 and (t.width, t.height) == (img.shape[1], img.shape[0])
    assert 0 < t.quality <= 100
    m = t.minutiae
    assert np.all((m["quality"] >= 1) & (m["quality"] <= 100))
    assert set(np.unique(m["type"])) <= {MinutiaType.ENDING, MinutiaType.BIFURCATION}
    assert result.mask.shape == result.skeleton.shape == result.period.shape == img.shape
    assert np.allclose(result.frequency, 1.0 / result.period)
    # a noisier copy of the same print has lower image quality
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 90, img.shape), 0, 255).astype(np.uint8)
    assert biomatch.extract(noisy, ppi=500).quality < t.quality


# ---------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------


def test_blank_image_raises():
    with pytest.raises(ImageError, match="blank"):
        biomatch.extract(np.full((300, 300), 200, np.uint8), ppi=500)


def test_tiny_image_raises():
    with pytest.raises(ImageError, match="too small"):
        biomatch.extract(grating(shape=(60, 60)), ppi=500)


def test_noise_only_raises():
    noise = np.random.default_rng(0).integers(0, 256, (300, 300)).astype(np.uint8)
    with pytest.raises(ImageError, match="no fingerprint foreground"):
        biomatch.extract(noise, ppi=500)


def test_print_too_small_raises():
    img = np.full((300, 300), 230, np.uint8)
    img[130:170, 130:170] = grating(shape=(40, 40))
    with pytest.raises(ImageError, match="too small|no fingerprint"):
        biomatch.extract(img, ppi=500)


def test_error_names_the_input(tmp_path):
    path = tmp_path / "smudge.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(2).integers(0, 256, (300, 300)).astype(np.uint8)).save(path)
    with pytest.raises(ImageError, match="smudge.png"):
        biomatch.extract(path, ppi=500)


@pytest.mark.parametrize("position", [-1, 11, 2.5, "3", True])
def test_bad_finger_position_raises(position):
    from biomatch.errors import TemplateError

    with pytest.raises(TemplateError, match="finger position"):
        biomatch.extract(grating(), ppi=500, position=position)


def test_not_an_image_raises(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="x.png"):
        biomatch.extract(path)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def print_png(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("cli") / "print.png"
    Image.fromarray(print_like(singular=MANY, shape=(340, 300))).save(path, dpi=(500, 500))
    return path


def test_cli_extract_json_and_plot(print_png, tmp_path, capsys):
    from biomatch.cli import main

    plot = tmp_path / "plot.png"
    rc = main(["extract", str(print_png), "--ppi", "500", "--json", "--plot", str(plot)])
    out = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(out)
    expected = biomatch.extract(print_png, ppi=500)
    assert len(doc["minutiae"]) == len(expected) > 0
    assert doc["quality"] == expected.quality
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_extract_bad_image_exit_1(tmp_path, capsys):
    from biomatch.cli import main

    path = tmp_path / "blank.png"
    from PIL import Image

    Image.fromarray(np.full((300, 300), 255, np.uint8)).save(path)
    rc = main(["extract", str(path), "--ppi", "500"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "blank.png" in err and len(err.strip().splitlines()) == 1


def test_plot_extraction_writes_png(base_print, tmp_path):
    from biomatch.plots import plot_extraction

    img, _ = base_print
    out = plot_extraction(ex.extract_detailed(img, ppi=500), tmp_path / "x.png")
    assert out.stat().st_size > 1000


# ---------------------------------------------------------------------------
# Native kernels against slow references
# ---------------------------------------------------------------------------


def _ring(img, y, x):
    # E, NE, N, NW, W, SW, S, SE
    return [img[y, x + 1], img[y - 1, x + 1], img[y - 1, x], img[y - 1, x - 1], img[y, x - 1], img[y + 1, x - 1], img[y + 1, x], img[y + 1, x + 1]]


def reference_crossing_numbers(skeleton):
    h, w = skeleton.shape
    out = np.zeros_like(skeleton)
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            if skeleton[y, x]:
                p = _ring(skeleton, y, x)
                out[y, x] = sum(abs(int(p[i]) - int(p[(i + 1) % 8])) for i in range(8)) // 2
    return out


def random_blobs(seed, shape=(64, 64)):
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=shape), 2.5)
    blobs = field > 0.02
    blobs[:2] = blobs[-2:] = False
    blobs[:, :2] = blobs[:, -2:] = False
    return blobs.astype(np.uint8)


@pytest.mark.parametrize("seed", range(4))
def test_native_crossing_numbers_match_reference(seed):
    from biomatch import _native

    skeleton = ex.thin(random_blobs(seed))
    assert np.array_equal(_native.crossing_numbers(skeleton), reference_crossing_numbers(skeleton))
    cn = reference_crossing_numbers(skeleton)
    rows = _native.detect_minutiae(skeleton, np.ones_like(skeleton))
    expected = {(y, x, 1) for y, x in zip(*np.nonzero(cn == 1))} | {(y, x, 2) for y, x in zip(*np.nonzero(cn == 3))}
    assert {tuple(r) for r in rows.tolist()} == expected


def _is_simple(skeleton, y, x) -> bool:
    """Whether pixel (y, x) is a simple point (8/4 digital topology): its removal neither
    splits the foreground of its neighbourhood (one 8-connected piece) nor opens a hole
    (one 4-connected background piece touching it)."""
    ring = skeleton[y - 1 : y + 2, x - 1 : x + 2].astype(bool)
    ring[1, 1] = False
    fg = ndi.label(ring, structure=np.ones((3, 3), dtype=bool))[1]
    bg_labels, _ = ndi.label(~ring & np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=bool))
    touching = {bg_labels[r, c] for r, c in ((0, 1), (1, 0), (1, 2), (2, 1))} - {0}
    return fg == 1 and len(touching) == 1


@pytest.mark.parametrize("seed", [234, 531])  # seeds whose blobs thin to an X crossing (a needed 2x2 block)
def test_thinning_keeps_only_needed_2x2_blocks(seed):
    skeleton = ex.thin(random_blobs(seed))
    quad = skeleton[:-1, :-1] & skeleton[1:, :-1] & skeleton[:-1, 1:] & skeleton[1:, 1:]
    assert quad.any()
    assert not any(_is_simple(skeleton, y, x) for y, x in zip(*np.nonzero(quad)))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_thinning_properties(seed):
    blobs = random_blobs(seed)
    skeleton = ex.thin(blobs)
    # inside the input
    assert np.all(skeleton <= blobs)
    # one pixel wide: a 2x2 block survives only where every pixel of it is needed
    # for connectivity (four diagonal arms meeting: no thinning can remove any of them)
    quad = skeleton[:-1, :-1] & skeleton[1:, :-1] & skeleton[:-1, 1:] & skeleton[1:, 1:]
    for y, x in zip(*np.nonzero(quad)):
        for py, px in ((y, x), (y + 1, x), (y, x + 1), (y + 1, x + 1)):
            assert not _is_simple(skeleton, py, px), f"deletable pixel ({py}, {px}) left in a 2x2 block"
    # connectivity preserved: same 8-connected components (each blob keeps one skeleton piece)
    eight = np.ones((3, 3), dtype=bool)
    blob_labels, n_blobs = ndi.label(blobs, structure=eight)
    skel_labels, n_skel = ndi.label(skeleton, structure=eight)
    assert n_skel == n_blobs
    assert len(np.unique(blob_labels[skeleton.astype(bool)])) == n_blobs
    # holes preserved: the number of background components does not change
    assert ndi.label(1 - skeleton)[1] == ndi.label(1 - blobs)[1]


def test_trace_branches_on_a_line():
    from biomatch import _native

    skel = np.zeros((20, 40), np.uint8)
    skel[10, 5:30] = 1
    pts = np.array([[10, 5, 1], [10, 29, 1]], np.int32)
    br = _native.trace_branches(skel, np.ones_like(skel), pts, 10, 100)
    # from the left end the walk runs right; the direction point is 10 px along
    assert tuple(br[0, 0, :2]) == (10, 15)
    assert tuple(br[0, 0, 2:4]) == (10, 29) and br[0, 0, 5] == 2 and br[0, 0, 4] == 24
    assert tuple(br[1, 0, :2]) == (10, 19)
    assert np.all(br[:, 1:, 5] == 0)  # an ending has a single branch


# ---------------------------------------------------------------------------
# Real images (skipped when the reference data is absent)
# ---------------------------------------------------------------------------

FVC2002_PPI = {"DB1_B": 500, "DB2_B": 569, "DB3_B": 500}


@pytest.mark.reference
@pytest.mark.parametrize("db", sorted(FVC2002_PPI))
def test_real_images_enrol(fvc2002, db):
    """First impression of every finger gives a template with a usable number of minutiae."""
    for path in sorted((fvc2002 / db).glob("*_1.tif")):
        t = biomatch.extract(path, ppi=FVC2002_PPI[db])
        assert len(t) >= 8, path.name
        assert 0 <= t.quality <= 100
        m = t.minutiae
        assert np.all((m["x"] >= 0) & (m["x"] < t.width) & (m["y"] >= 0) & (m["y"] < t.height))


@pytest.mark.reference
@pytest.mark.parametrize("name", ["DB1_B/101_1.tif", "DB3_B/103_2.tif"])
def test_real_image_quarter_turn(fvc2002, name):
    from biomatch.io import read_image

    pixels = read_image(fvc2002 / name, ppi=500).pixels
    w = pixels.shape[1]
    m = biomatch.extract(pixels, ppi=500).minutiae
    rotated = biomatch.extract(np.ascontiguousarray(np.rot90(pixels)), ppi=500).minutiae
    expected = m.copy()
    expected["x"], expected["y"] = m["y"], (w - 1) - m["x"]
    expected["angle"] = np.mod(m["angle"] + np.pi / 2, 2 * np.pi)
    assert matched_fraction(expected, rotated) >= 0.8
    assert matched_fraction(rotated, expected) >= 0.8


def _skeleton_with_bridge(rung_px: int = 8):
    """Two parallel 1-px ridges joined by a short rung (a bridge: two junctions)."""
    skel = np.zeros((80, 140), np.uint8)
    skel[36, 10:130] = 1
    skel[36 + rung_px + 1, 10:130] = 1
    skel[37 : 37 + rung_px, 70] = 1
    return skel


@pytest.mark.parametrize("clarity_value, bridge_kept", [(0.1, False), (0.6, True)])
def test_bridge_rule_applies_only_on_murky_ridges(clarity_value, bridge_kept):
    skel = _skeleton_with_bridge()
    mask = np.ones_like(skel, dtype=bool)
    raw = ex.detect(skel, mask, np.zeros(skel.shape, np.float32))
    at_rung = (raw["type"] == 2) & (np.abs(raw["x"] - 70) < 3)
    assert at_rung.sum() == 2  # the rung's two junctions are candidates
    period = np.full(skel.shape, 9.0, np.float32)  # the rung (9 px) is shorter than BRIDGE_PERIODS periods
    border = np.full(skel.shape, 1e3, np.float32)  # no border rule
    clarity = np.full(skel.shape, clarity_value, np.float32)
    kept = ex.remove_false(raw, mask, border, period, clarity)
    kept_at_rung = (kept["type"] == 2) & (np.abs(kept["x"] - 70) < 3)
    assert kept_at_rung.sum() == (2 if bridge_kept else 0)


def test_border_rule_drops_only_what_the_edge_can_make():
    """Near the mask edge an ending whose ridge runs out to the edge goes; others stay down to NEAR_BORDER_PERIODS."""
    from biomatch import minutia_rules as rules

    mask = np.zeros((120, 120), bool)
    mask[:, :60] = True  # the print's edge is the column x = 60
    border = ex.distance_to_border(mask)
    period = np.full(mask.shape, 9.0, np.float32)
    near_x = 60 - int(0.9 * rules.BORDER_PERIODS * 9)  # inside BORDER_PERIODS, beyond NEAR_BORDER_PERIODS
    assert rules.NEAR_BORDER_PERIODS * 9 < border[60, near_x] <= rules.BORDER_PERIODS * 9
    cases = [  # (x, type, angle (y up), dropped)
        (near_x, 1, np.pi, True),  # ridge from the interior ends towards the edge: the edge's cut
        (near_x, 1, 0.0, False),  # its ridge lies between it and the edge: a real end
        (near_x, 1, np.pi / 2, False),  # ridge along the edge
        (near_x, 2, np.pi, False),  # the edge makes no bifurcations
        (60 - 3, 2, 0.0, True),  # within NEAR_BORDER_PERIODS: everything goes
        (60 - 3, 1, 0.0, True),
        (60 - 30, 1, np.pi, False),  # well inside
    ]
    raw = {"y": np.full(len(cases), 60, np.int32), "x": np.array([c[0] for c in cases], np.int32),
           "type": np.array([c[1] for c in cases], np.uint8), "angle": np.array([c[2] for c in cases])}
    dropped = rules.near_border(raw, border, period[raw["y"], raw["x"]].astype(np.float64))
    np.testing.assert_array_equal(dropped, [c[3] for c in cases])
