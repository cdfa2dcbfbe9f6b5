"""Hard livescan renderings of synthetic impressions: reproducible, exact ground truth, the conditions asked for."""

from __future__ import annotations

import numpy as np
import pytest

from biomatch import BiomatchError
from biomatch import synthetic as S
from biomatch.synthetic_livescan import SENSORS, SKIN_CONDITIONS, render_livescan


@pytest.fixture(scope="module")
def impression():
    return S.make_impression(S.make_finger(1, 11), 2)


def test_rendering_is_reproducible(impression):
    a = render_livescan(impression, 5)
    b = render_livescan(impression, 5)
    assert np.array_equal(a.pixels, b.pixels) and a.params == b.params
    c = render_livescan(impression, 6)
    assert not np.array_equal(a.pixels, c.pixels)


@pytest.mark.parametrize("sensor", SENSORS)
def test_every_sensor_gives_a_print_with_its_truth(impression, sensor):
    live = render_livescan(impression, 1, sensor=sensor, wsq=False)
    assert live.pixels.dtype == np.uint8 and live.pixels.shape == live.ridge.shape == live.mask.shape
    assert live.params["sensor"] == sensor
    # ridges are darker than valleys inside the contact area
    inside = live.mask
    assert live.pixels[inside & (live.ridge > 0.5)].mean() < live.pixels[inside & (live.ridge < -0.5)].mean()
    # every truth minutia lies in the contact area
    m = live.truth.minutiae
    assert len(m) > 5
    assert live.mask[np.rint(m["y"]).astype(int), np.rint(m["x"]).astype(int)].all()


def test_scale_moves_truth_and_size_together(impression):
    live = render_livescan(impression, 3, wsq=False)
    s = live.params["scale"]
    h, w = impression.pixels.shape
    assert live.pixels.shape == (int(round(h * s)), int(round(w * s)))
    # each kept truth minutia is a scaled copy of one of the impression's
    src = impression.truth.minutiae
    for m in live.truth.minutiae[:10]:
        d = np.hypot((src["x"] + 0.5) * s - 0.5 - m["x"], (src["y"] + 0.5) * s - 0.5 - m["y"])
        assert d.min() < 0.05  # params round the scale to 4 decimals


def test_a_forced_scale_is_the_one_rendered(impression):
    live = render_livescan(impression, 3, scale=1.1, wsq=False)
    h, w = impression.pixels.shape
    assert live.params["scale"] == 1.1 and live.pixels.shape == (int(round(h * 1.1)), int(round(w * 1.1)))


def test_dry_prints_break_ridges_and_wet_prints_fill_valleys(impression):
    def shares(skin):
        """Mean over renderings: ridge pixels as bright as a valley, valley pixels as dark as a ridge."""
        broken, filled = [], []
        for seed in range(4):
            live = render_livescan(impression, seed, sensor="optical", skin=skin, wsq=False)
            ridge = live.pixels[live.mask & (live.ridge > 0.3)].astype(float)
            valley = live.pixels[live.mask & (live.ridge < -0.3)].astype(float)
            broken.append((ridge >= np.median(valley)).mean())
            filled.append((valley <= np.median(ridge)).mean())
        return np.mean(broken), np.mean(filled)

    dry_broken, dry_filled = shares("dry")
    wet_broken, wet_filled = shares("wet")
    assert dry_broken > wet_broken  # dry: ridges broken into dots and dashes
    assert wet_filled > dry_filled  # wet: valleys smudged shut


def test_wsq_round_trip_keeps_the_size(impression):
    live = render_livescan(impression, 4, wsq=True)
    assert live.params["wsq"] is True
    assert live.pixels.shape == live.ridge.shape


def test_bad_arguments_are_refused(impression):
    with pytest.raises(BiomatchError, match="sensor"):
        render_livescan(impression, sensor="ultrasonic")
    with pytest.raises(BiomatchError, match="skin"):
        render_livescan(impression, skin="oily")
    for bad in (0.5, 2.0, float("nan"), "1.0", True):
        with pytest.raises(BiomatchError, match=r"scale must be a number in \[0\.85, 1\.25\]"):
            render_livescan(impression, scale=bad)
    bare = S.Impression(impression.pixels, impression.truth, 0, 0)
    with pytest.raises(BiomatchError, match="ridge map"):
        render_livescan(bare)
    assert set(SKIN_CONDITIONS) == {"normal", "dry", "wet", "faint"}


def test_the_verification_benchmark_keeps_one_sensor_and_scale_per_finger():
    from benchmarks.livescan_verification import finger_conditions
    from biomatch.synthetic_livescan import SCALE_RANGE

    drawn = [finger_conditions(f, 2026, None) for f in range(40)]
    assert drawn == [finger_conditions(f, 2026, None) for f in range(40)]  # reproducible
    assert {sensor for sensor, _ in drawn} == set(SENSORS)
    scales = [scale for _, scale in drawn]
    assert all(SCALE_RANGE[0] <= s <= SCALE_RANGE[1] for s in scales) and len(set(scales)) > 30
    assert all(sensor == "optical" for sensor, _ in (finger_conditions(f, 2026, "optical") for f in range(5)))


def test_the_verification_benchmark_sweeps_the_grow_logit_and_restores_it(tmp_path, monkeypatch, capsys):
    from benchmarks import livescan_verification
    from biomatch import extraction
    from biomatch.template import MINUTIA_DTYPE, Template

    monkeypatch.setenv("BIOMATCH_BENCH_CACHE", str(tmp_path))
    shipped = extraction.LEARNED_MASK_GROW_LOGIT
    seen = []

    def spy(paths, front_end):
        seen.append((front_end, extraction.LEARNED_MASK_GROW_LOGIT))
        return [Template(np.zeros(0, dtype=MINUTIA_DTYPE), 300, 300, 500)] * len(paths), 0  # no extraction: fast

    monkeypatch.setattr(livescan_verification, "templates_of", spy)
    livescan_verification.main(["--fingers", "2", "--impressions", "2", "--front-end", "classical",
                                "--front-end", "learned-mask", "--grow-logit", "-5", "--grow-logit", "-1.5"])
    assert seen == [("classical", shipped), ("learned-mask", -5.0), ("learned-mask", -1.5)]
    assert extraction.LEARNED_MASK_GROW_LOGIT == shipped
    assert "learned-mask (grow logit -1.5)" in capsys.readouterr().out


def test_recovery_benchmark_scores_a_peer_from_its_saved_minutiae(tmp_path, capsys):
    # a "peer" whose saved minutiae are the truth itself must recover it exactly
    from benchmarks import synthetic_realism as SR

    SR.recovery(1, impressions=2, save_renders=tmp_path / "renders")
    peer = tmp_path / "peer"
    peer.mkdir()
    for kind in ("plain", "livescan"):
        assert sorted(p.name for p in (tmp_path / "renders" / kind).glob("*.png")) == ["101_1.png", "101_2.png"]
        rows, master = {}, S.make_finger(0, SR.HELD_OUT_SEED)
        for j in range(2):
            imp = S.make_impression(master, j)
            obj = imp if kind == "plain" else render_livescan(imp, SR.HELD_OUT_SEED)
            t = obj.truth.minutiae
            rows[f"101_{j + 1}"] = np.c_[t["x"], t["y"], t["angle"], np.zeros(len(t)), np.ones(len(t))]
            rows[f"size_101_{j + 1}"] = np.array(obj.pixels.shape)
        np.savez(peer / f"renders_{kind}__leader__minutiae.npz", **rows)
    capsys.readouterr()
    SR.recovery(1, impressions=2, peer_minutiae=peer)
    lines = [line for line in capsys.readouterr().out.splitlines() if "| leader |" in line]
    assert len(lines) == 2 and all("| 1.000 | 1.000 |" in line for line in lines)
