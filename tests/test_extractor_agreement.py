"""The geometry behind benchmarks/extractor_agreement.py (motion estimate, mates, repeatability)."""

import math
import sys
from pathlib import Path

import numpy as np

from biomatch import verify
from biomatch.template import MINUTIA_DTYPE, Template

# benchmarks/ is not installed with the package. Appending (not prepending) the
# checkout keeps the installed biomatch, with its built extension, first on the path.
sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks import extractor_agreement as agreement  # noqa: E402


def _template(xy_up, ang):
    m = np.zeros(len(xy_up), dtype=MINUTIA_DTYPE)
    m["x"], m["y"] = xy_up[:, 0], -xy_up[:, 1]
    m["angle"] = np.mod(ang, 2 * np.pi)
    m["type"], m["quality"] = 1, 80
    return Template(m, 400, 500, 500.0)


def _moved_pair(phi=math.radians(20), shift=(15.0, -10.0), n=40, seed=3):
    rng = np.random.default_rng(seed)
    xy = np.stack([rng.uniform(100, 300, n), -rng.uniform(120, 380, n)], axis=1)
    ang = rng.uniform(0, 2 * np.pi, n)
    rot = np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])
    return _template(xy, ang), _template(xy @ rot.T + np.array(shift), ang + phi)


def test_rigid_motion_recovers_the_motion_and_repeatability_is_one():
    a, b = _moved_pair()
    motion = agreement.rigid_motion(verify(a, b), a, b)
    assert motion is not None
    assert math.degrees(abs(motion[0] - math.radians(20))) < 1.0
    mates, total = agreement.repeatability(a, b, motion, 15.0, math.radians(30))
    assert total > 0 and mates == total


def test_wrong_motion_gives_low_repeatability_and_disagrees():
    a, b = _moved_pair()
    good = agreement.rigid_motion(verify(a, b), a, b)
    wrong = (good[0] + math.radians(40), good[1])
    mates, total = agreement.repeatability(a, b, wrong, 15.0, math.radians(30))
    assert mates < 0.5 * max(total, 1)
    assert not agreement.motions_agree(good, wrong, np.array([200.0, -250.0]))
    assert agreement.motions_agree(good, good, np.array([200.0, -250.0]))


def test_count_mates_is_one_to_one_and_respects_both_tolerances():
    xy = np.array([[0.0, 0.0], [5.0, 0.0]])
    ang = np.zeros(2)
    # two minutiae of a, one of b near both: one mate only
    assert agreement.count_mates(xy, ang, xy[:1], ang[:1], 15.0, 0.5) == 1
    # within distance but the angle is off by more than the tolerance
    assert agreement.count_mates(xy[:1], ang[:1], xy[:1], ang[:1] + 1.0, 15.0, 0.5) == 0
    assert agreement.count_mates(xy[:1], ang[:1], xy[:1] + 20.0, ang[:1], 15.0, 0.5) == 0
    assert agreement.count_mates(xy[:0], ang[:0], xy, ang, 15.0, 0.5) == 0


def test_too_few_pairs_give_no_motion():
    a, b = _moved_pair(n=3)
    assert agreement.rigid_motion(verify(a, b), a, b) is None


def test_pairing_finds_as_many_mates_as_the_tolerances_allow():
    # nearest-first would pair a0-b0 (6 px) and leave a1 (20 px from b1) unpaired;
    # the assignment pairs a0-b1 (8 px) and a1-b0 (6 px)
    xy_a = np.array([[0.0, 0.0], [12.0, 0.0]])
    xy_b = np.array([[6.0, 0.0], [-8.0, 0.0]])
    ang = np.zeros(2)
    ia, ib = agreement.pair_mates(xy_a, ang, xy_b, ang, 15.0, 0.5)
    assert sorted(zip(ia.tolist(), ib.tolist())) == [(0, 1), (1, 0)]
