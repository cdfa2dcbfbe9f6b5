"""Tests of biomatch.synthetic: determinism, the committed sample, templates at scale, bad input, CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from biomatch import BiomatchError, Template
from biomatch import synthetic as S
from biomatch._synthetic_kernels import gabor_step, thin_zhang_suen
from biomatch.synthetic_impressions import Motion
from biomatch.synthetic_masters import gabor_bank

SAMPLE_SEED = 1


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# the committed sample is what the generator makes
# ---------------------------------------------------------------------------
def test_sample_manifest_matches_files(synthetic_sample):
    manifest = json.loads((synthetic_sample / "manifest.json").read_text())
    assert manifest["generator_version"] == S.GENERATOR_VERSION
    assert manifest["seed"] == SAMPLE_SEED
    p = manifest["parameters"]
    pngs = sorted(f.name for f in synthetic_sample.glob("*_*.png"))
    expected = sorted(f"{f}_{i}.png" for f in range(1, p["fingers"] + 1) for i in range(1, p["impressions"] + 1))
    assert pngs == expected
    for name, entry in manifest["files"].items():
        assert _sha((synthetic_sample / name).read_bytes()) == entry["sha256"], name
    for fid, info in manifest["fingers"].items():
        assert info["class"] in S.FINGER_CLASSES
        master = Template.from_bytes((synthetic_sample / "truth" / f"{fid}_master.bmt").read_bytes())
        assert len(master) == info["master_minutiae"]
    with Image.open(synthetic_sample / "1_1.png") as im:
        assert im.mode == "L" and im.size == (S.IMAGE_WIDTH_PX, S.IMAGE_HEIGHT_PX)
        assert round(im.info["dpi"][0]) == 500


@pytest.mark.parametrize("finger", [0, 7])
def test_sample_regenerates_identically(synthetic_sample, finger):
    manifest = json.loads((synthetic_sample / "manifest.json").read_text())
    master = S.make_finger(finger, manifest["seed"])
    fid = str(finger + 1)
    assert master.finger_class == manifest["fingers"][fid]["class"]
    stored_master = (synthetic_sample / "truth" / f"{fid}_master.bmt").read_bytes()
    assert master.template().to_bytes() == stored_master
    for j in range(manifest["parameters"]["impressions"]):
        stem = f"{fid}_{j + 1}"
        imp = S.make_impression(master, j)
        with Image.open(synthetic_sample / f"{stem}.png") as im:
            stored = np.asarray(im)
        entry = manifest["files"][f"{stem}.png"]
        assert _sha(stored.tobytes()) == entry["pixels_sha256"]
        # Bit-identical on the machine that made the sample; elsewhere libm/SIMD
        # rounding may move a few gray levels by 1, never more.
        if _sha(imp.pixels.tobytes()) != entry["pixels_sha256"]:
            diff = np.abs(imp.pixels.astype(int) - stored.astype(int))
            assert diff.max() <= 2 and np.mean(diff > 0) < 1e-3, stem
        truth = (synthetic_sample / "truth" / f"{stem}.bmt").read_bytes()
        assert abs(len(imp.truth) - len(Template.from_bytes(truth))) <= 1


# ---------------------------------------------------------------------------
# image level
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finger():
    return S.make_finger(3, 99)


def test_master_is_plausible(finger):
    h, w = finger.pattern.shape
    assert (h, w) == (S.IMAGE_HEIGHT_PX, S.IMAGE_WIDTH_PX)
    inside = finger.inside > 10
    ridge_fraction = np.mean(finger.pattern[inside] > 0)
    assert 0.35 < ridge_fraction < 0.65
    assert 20 <= len(finger.minutiae) <= 120
    m = finger.minutiae
    assert set(np.unique(m["type"])) <= {1, 2}
    assert np.all(finger.inside[m["y"].astype(int), m["x"].astype(int)] >= S.MINUTIA_BORDER_PX)


def test_finger_depends_only_on_seed_and_index():
    a = S.make_finger(5, 3)
    b = S.make_finger(5, 3)
    c = S.make_finger(5, 4)
    assert np.array_equal(a.pattern, b.pattern) and np.array_equal(a.minutiae, b.minutiae)
    assert not np.array_equal(a.pattern, c.pattern)


def test_impression_truth_and_pixels(finger):
    imp = S.make_impression(finger, 2)
    assert imp.pixels.dtype == np.uint8 and imp.pixels.shape == finger.pattern.shape
    assert imp.pixels.std() > 20  # a print, not a blank
    t = imp.truth
    assert 0 < len(t) <= len(finger.minutiae)
    assert np.all((t.minutiae["x"] >= 0) & (t.minutiae["x"] <= t.width - 1))
    # ridges dark: pixels on master ridges under the truth minutiae area are darker on average
    again = S.make_impression(finger, 2)
    assert np.array_equal(imp.pixels, again.pixels) and imp.truth == again.truth
    other = S.make_impression(finger, 3)
    assert not np.array_equal(imp.pixels, other.pixels)


def test_motion_forward_inverts_backward():
    rng = np.random.default_rng(0)
    motion = Motion(150, 200, 0.2, 10, -8, 140, 210, 60, 0.05, 6, -4, S.DISTORTION_BRAKE_PX)
    mx, my = rng.uniform(30, 270, 200), rng.uniform(30, 370, 200)
    qx, qy = motion.forward(mx, my)
    bx, by = motion.backward(qx, qy)
    assert np.max(np.hypot(bx - mx, by - my)) < 0.05


def test_ridges_are_dark_where_the_master_has_ridges(finger):
    from scipy.ndimage import map_coordinates

    imp = S.make_impression(finger, 0)
    p = imp.params
    d = p["distortion"]
    motion = Motion(*p["centre_px"], p["rotation_deg"] * S.DEG, *p["translation_px"], *d["centre"], d["radius_px"],
                       d["rotation_deg"] * S.DEG, *d["shift_px"], S.DISTORTION_BRAKE_PX)
    qy, qx = np.mgrid[0 : imp.pixels.shape[0], 0 : imp.pixels.shape[1]].astype(float)
    mx, my = motion.backward(qx, qy)
    ridge = map_coordinates(finger.pattern, [my, mx], order=1)
    on = np.abs(ridge) > 0.5
    assert on.sum() > 10_000
    corr = np.corrcoef(ridge[on], imp.pixels[on].astype(float))[0, 1]
    assert corr < -0.5  # master ridges (> 0) are dark


def test_class_orientation_fields_differ():
    a = S.make_finger(0, 1, finger_class="arch")
    w = S.make_finger(0, 1, finger_class="whorl")
    assert a.finger_class == "arch" and w.finger_class == "whorl"
    assert a.singularities["cores"] == [] and len(w.singularities["cores"]) == 2


def test_generate_images_layout(tmp_path):
    m = S.generate_images(tmp_path, 1, 2, seed=4, first_finger=6)
    assert sorted(p.name for p in tmp_path.glob("*_*.png")) == ["7_1.png", "7_2.png"]
    assert (tmp_path / "truth" / "7_1.bmt").is_file() and (tmp_path / "truth" / "7_master.bmt").is_file()
    assert S.read_manifest(tmp_path) == json.loads(json.dumps(m))
    # finger 6 is the same when made as part of a larger run
    imp = S.make_impression(S.make_finger(6, 4), 1)
    assert m["files"]["7_2.png"]["pixels_sha256"] == _sha(imp.pixels.tobytes())


def test_generate_images_workers_do_not_change_output(tmp_path):
    one = S.generate_images(tmp_path / "a", 2, 1, seed=8)
    two = S.generate_images(tmp_path / "b", 2, 1, seed=8, workers=2)
    assert one == two


# ---------------------------------------------------------------------------
# kernels against slow references
# ---------------------------------------------------------------------------
def test_gabor_step_matches_direct_correlation():
    rng = np.random.default_rng(1)
    bank = gabor_bank()
    src = rng.standard_normal((40, 50)).astype(np.float32)
    obin = rng.integers(0, bank.shape[0], (40, 50)).astype(np.int16)
    pbin = rng.integers(0, bank.shape[1], (40, 50)).astype(np.int16)
    active = np.ones((40, 50), np.uint8)
    dst = np.zeros_like(src)
    gabor_step(src, dst, bank, obin, pbin, active)
    r = bank.shape[2] // 2
    pad = np.pad(src, r)
    for y, x in [(0, 0), (20, 25), (39, 49), (5, 44)]:
        ref = np.sum(bank[obin[y, x], pbin[y, x]] * pad[y : y + 2 * r + 1, x : x + 2 * r + 1])
        assert dst[y, x] == pytest.approx(ref, rel=1e-4, abs=1e-4)


def test_gabor_bank_has_no_dc_response():
    bank = gabor_bank()
    assert np.allclose(bank.sum(axis=(2, 3)), 0, atol=1e-4)  # no DC response


def test_thinning_gives_one_pixel_lines():
    img = np.zeros((30, 60), np.uint8)
    img[10:16, 5:55] = 1  # a thick bar
    skel = thin_zhang_suen(img.copy())
    assert skel.sum() > 30
    blocks = skel[:-1, :-1] & skel[1:, :-1] & skel[:-1, 1:] & skel[1:, 1:]
    assert not blocks.any()
    assert np.all(skel <= img)


# ---------------------------------------------------------------------------
# template level
# ---------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(first=st.integers(0, 3000), n=st.integers(1, 40), k=st.integers(1, 3))
def test_template_finger_independent_of_range(first, n, k):
    tb = next(S.template_batch(n, k, seed=11, first_finger=first))
    assert tb.finger[0] == first and len(tb) == min(n, S.TEMPLATE_BLOCK_FINGERS - first % S.TEMPLATE_BLOCK_FINGERS) * k
    block = first // S.TEMPLATE_BLOCK_FINGERS
    full = next(S.template_batch(S.TEMPLATE_BLOCK_FINGERS, k, seed=11, first_finger=block * S.TEMPLATE_BLOCK_FINGERS))
    pos = (first - block * S.TEMPLATE_BLOCK_FINGERS) * k
    assert tb.template(0) == full.template(pos)


def test_template_batch_contents():
    blocks = list(S.template_batch(2500, 2, seed=3))
    assert [len(b) for b in blocks] == [2048, 2048, 904]
    tb = blocks[0]
    counts = np.diff(tb.offsets)
    assert 10 < counts.mean() < 60 and counts.max() <= S.MASTER_MINUTIAE_RANGE[1] + S.SPURIOUS_MAX
    assert np.all((tb.master_counts >= 5) & (tb.master_counts <= S.MASTER_MINUTIAE_RANGE[1]))
    m = tb.minutiae
    assert np.all((m["x"] >= 0) & (m["x"] < tb.width) & (m["y"] >= 0) & (m["y"] < tb.height))
    assert np.all((m["angle"] >= 0) & (m["angle"] < 2 * np.pi))
    assert set(np.unique(m["type"])) == {1, 2}
    t = tb.template(5)
    assert Template.from_bytes(t.to_bytes()) .minutiae.size == t.minutiae.size
    # master minutiae keep a minimum spacing: mated impressions of one finger share structure
    a, b = tb.template(0), tb.template(1)
    assert len(a) and len(b)


def test_template_class_proportions():
    classes = np.concatenate([b.finger_class for b in S.template_batch(20_000, 1, seed=5)])
    freq = np.bincount(classes, minlength=5) / classes.size
    assert np.allclose(freq, S.CLASS_PROBABILITIES, atol=0.015)


def test_generate_templates_files(tmp_path):
    m = S.generate_templates(tmp_path, 3, 2, seed=2)
    names = sorted(p.name for p in tmp_path.glob("*_*.bmt"))
    assert names == ["1_1.bmt", "1_2.bmt", "2_1.bmt", "2_2.bmt", "3_1.bmt", "3_2.bmt"]
    for n in names:
        data = (tmp_path / n).read_bytes()
        assert _sha(data) == m["files"][n]["sha256"]
        assert len(Template.from_bytes(data)) == m["files"][n]["minutiae"]
    assert set(m["fingers"]) == {"1", "2", "3"}


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: S.make_finger(-1, 0), "finger index"),
        (lambda: S.make_finger(0, -3), "seed"),
        (lambda: S.make_finger(0, 1.5), "seed"),
        (lambda: S.make_finger(0, 0, finger_class="spiral"), "finger_class"),
        (lambda: S.make_finger(0, 0, width=100, height=100), "too small"),
        (lambda: next(S.template_batch(0, 2, 0)), "fingers"),
        (lambda: next(S.template_batch(10, 101, 0)), "impressions"),
        (lambda: next(S.template_batch(10, 2, 0, first_finger=-1)), "first_finger"),
        (lambda: S.generate_images("/proc/no/such/dir", 1, 1, 0), "cannot create"),
        (lambda: S.generate_images("unused", 1, 1, 0, workers=0), "workers"),
    ],
)
def test_bad_input_names_the_parameter(call, word):
    with pytest.raises(BiomatchError, match=word):
        call()


def test_bad_impression_index(finger):
    with pytest.raises(BiomatchError, match="impression index"):
        S.make_impression(finger, -1)


def test_read_manifest_errors(tmp_path):
    with pytest.raises(BiomatchError, match="manifest"):
        S.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(BiomatchError, match="JSON"):
        S.read_manifest(tmp_path)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------
def test_cli_synth(tmp_path, capsys):
    from biomatch.cli import main

    assert main(["synth", "templates", "--fingers", "4", "--impressions", "2", "--seed", "1", "--out", str(tmp_path / "t"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["files"] == 8 and sum(doc["classes"].values()) == 4
    assert len(list((tmp_path / "t").glob("*_*.bmt"))) == 8
    assert main(["synth", "images", "--fingers", "1", "--impressions", "1", "--seed", "1", "--out", str(tmp_path / "i")]) == 0
    assert (tmp_path / "i" / "1_1.png").is_file()
    assert main(["synth", "images", "--fingers", "0", "--out", str(tmp_path / "x")]) == 1
    assert "fingers" in capsys.readouterr().err


def _ridges(shape, polylines, half_width):
    """A binary ridge pattern (1 ridge, -1 valley): ridges of ``half_width`` around (x, y) polylines."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    d = np.full(shape, np.inf)
    for line in polylines:
        for (x0, y0), (x1, y1) in zip(line[:-1], line[1:]):
            dx, dy = x1 - x0, y1 - y0
            t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / (dx * dx + dy * dy), 0, 1)
            d = np.minimum(d, np.hypot(xx - x0 - t * dx, yy - y0 - t * dy))
    return np.where(d < half_width, 1.0, -1.0).astype(np.float32)


@pytest.mark.parametrize("kind", [1, 2])
@pytest.mark.parametrize("opens_right", [True, False])
def test_master_minutia_direction_follows_the_standard(kind, opens_right):
    """An ending points along its ridge away from the end; a bifurcation into its fork's opening."""
    from biomatch.synthetic_masters import _master_minutiae

    h, w, period = 64, 96, 9.0
    ks = (-3, -2, -1, 1, 2, 3) if kind == 1 else (-3, -2, -1, 2, 3)  # rows 32 (and 41) drawn below
    lines = [[(0.0, 32.0 + k * period), (w - 1.0, 32.0 + k * period)] for k in ks]
    if kind == 1:  # a ridge on row 32 from the ending at x = 48 to one side
        lines.append([(48.0, 32.0), (w - 1.0 if opens_right else 0.0, 32.0)])
    else:  # one ridge on row 36.5 forks at x = 48 into rows 32 and 41 (a ridge each side of the new valley)
        s = 1.0 if opens_right else -1.0
        far = w - 1.0 if opens_right else 0.0
        mid = 36.5
        lines.append([(w - 1.0 - far, mid), (48.0, mid)])
        lines.append([(48.0, mid), (48.0 + s * 12, 32.0), (far, 32.0)])
        lines.append([(48.0, mid), (48.0 + s * 12, 41.0), (far, 41.0)])
    pattern = _ridges((h, w), lines, period / 4)
    inside = np.full((h, w), 40.0)
    theta = np.zeros((h, w))  # ridges horizontal
    m = _master_minutiae(pattern, inside, theta)
    row = 32.0 if kind == 1 else 36.5
    near = m[(np.abs(m["y"] - row) < 5) & (np.abs(m["x"] - 48) < 8)]
    assert near.size == 1, m
    assert near["type"][0] == kind
    # the kept ridge (ending) or the opening between the arms (bifurcation) lies on the +x side when it opens right
    expected = 0.0 if opens_right else np.pi
    assert abs((float(near["angle"][0]) - expected + np.pi) % (2 * np.pi) - np.pi) < np.radians(10)
