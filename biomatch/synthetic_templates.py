"""The template level of the synthetic generator: mated minutiae templates at scale, vectorised
over blocks of :data:`TEMPLATE_BLOCK_FINGERS` fingers, without rendering images.

Master minutiae sets (jittered lattice for a minimum spacing, directions from the same orientation
model as the image level, ending/bifurcation mix) and mated impressions (rigid motion, plastic
distortion, crop and partial contact, missing and spurious minutiae, position/angle jitter, type
errors, quality). The extraction error model has a part that repeats on every impression of a
finger and a part drawn anew per impression; its sizes are those measured with
``biomatch.extract`` on the synthetic images against their ground truth
(``benchmarks/bench_synthetic.py``). :func:`template_batch` yields the blocks;
:func:`biomatch.synthetic.generate_templates` writes them to files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .errors import BiomatchError
from .synthetic_params import (AREA_HALF_WIDTH_PX, CLASS_PROBABILITIES, CONTACT_RADIUS_PX, DEG, DISTORTION_BRAKE_PX,
                               DISTORTION_ROT_SD_DEG, DISTORTION_SHIFT_SD_PX, FINGER_CLASSES, IMAGE_HEIGHT_PX,
                               IMAGE_WIDTH_PX, IMPRESSION_PROTOCOL, MAX_FINGERS, MAX_IMPRESSIONS, PPI,
                               ROTATION_MAX_DEG, ROTATION_SD_DEG, TEMPLATE_STREAM, TRANSLATION_MAX_PX,
                               TRANSLATION_SD_PX, check_count, check_seed, keyed_rng)
from .template import MINUTIA_DTYPE, Template


#: Fingers are generated in fixed blocks (finger i depends only on seed and i).
TEMPLATE_BLOCK_FINGERS = 1024
MASTER_MINUTIAE_RANGE = (30, 60)  # inclusive, per finger
LATTICE_CELLS = (10, 14)  # jittered lattice over the area box: min spacing >= 0.4 cell (~9 px)
LATTICE_JITTER = 0.6  # fraction of the cell the minutia may move in
ENDING_FRACTION = 0.55
TEMPLATE_AREA_HALF_HEIGHT_PX = (150.0, 178.0)
IMPRESSION_QUALITY_MEAN, IMPRESSION_QUALITY_SD = 62.0, 18.0
# Extraction error model, measured with biomatch.extract on synthetic images against their
# ground truth (benchmarks/bench_synthetic.py): recall ~0.71, ~4 spurious per image,
# position error ~2 px per axis, angle error ~3 deg rms, ~12 % type swaps.
MISSING_BASE, MISSING_PER_BAD = 0.08, 0.30  # P(missing) = base + per_bad * (1 - q/100)
# Part of the error repeats on every impression of a finger (the same hard minutia missed,
# the same crease read as a minutia, the same offset), part is new each time.
MISSING_HARD_SHARE = 0.35  # master minutiae an extractor tends to miss: P(missing) = P / share for them, 0 for the rest
SPURIOUS_BASE, SPURIOUS_PER_BAD, SPURIOUS_MAX = 0.5, 3.0, 20  # new spurious per impression (Poisson mean)
PERSISTENT_SPURIOUS_MEAN, PERSISTENT_SPURIOUS_MAX, PERSISTENT_SPURIOUS_SHOW = 3.0, 8, 0.6
BIAS_POS_PX, BIAS_ANGLE_DEG = 1.5, 2.5  # persistent per-minutia error (sd)
JITTER_POS_PX = (0.5, 0.8)  # per-impression sd = a + b * (1 - q/100)
JITTER_ANGLE_DEG = (1.0, 1.0)
TYPE_FLIP, TYPE_FLIP_IMPRESSION = 0.10, 0.03
BAD_REGIONS_BASE, BAD_REGIONS_PER_BAD, BAD_REGIONS_MAX = 0.5, 2.0, 4  # Poisson mean of bad patches
BAD_REGION_RADIUS_PX = (25.0, 60.0)
BAD_REGION_MISSING = 0.8  # P(missing) inside a bad patch
BAD_REGION_SHARE = 0.4  # share of the missing rate that the patches account for
BORDER_BAND_PX, BORDER_MISSING = 12.0, 0.8
SPURIOUS_EDGE_SHARE = 0.6
CONTACT_SEMI_AXES_PX = ((95.0, 135.0), (120.0, 175.0))


@dataclass(frozen=True)
class TemplateBlock:
    """Many templates in flat arrays (what :func:`template_batch` yields).

    Attributes
    ----------
    finger : ndarray of int64, shape (n,)
        0-based finger index of each template (file name uses ``finger + 1``).
    impression : ndarray of int16, shape (n,)
        0-based impression index.
    offsets : ndarray of int64, shape (n + 1,)
        Template k's minutiae are ``minutiae[offsets[k]:offsets[k + 1]]``.
    minutiae : ndarray of MINUTIA_DTYPE, shape (offsets[-1],)
    quality : ndarray of uint8, shape (n,)
        Image quality 0-100 of each impression.
    finger_class : ndarray of uint8, shape (n_fingers_in_block,)
        Index into :data:`FINGER_CLASSES` for fingers ``first .. first + n_fingers_in_block - 1``.
    master_counts : ndarray of int16, shape (n_fingers_in_block,)
    first : int
        First finger index of this block.
    width, height : int
    """

    finger: np.ndarray
    impression: np.ndarray
    offsets: np.ndarray
    minutiae: np.ndarray
    quality: np.ndarray
    finger_class: np.ndarray
    master_counts: np.ndarray
    first: int
    width: int = IMAGE_WIDTH_PX
    height: int = IMAGE_HEIGHT_PX

    def __len__(self) -> int:
        return int(self.finger.size)

    def template(self, k: int) -> Template:
        """Template k of this block."""
        m = self.minutiae[self.offsets[k] : self.offsets[k + 1]]
        return Template(m, self.width, self.height, PPI, 0, int(self.quality[k]))

    def templates(self) -> list:
        """All templates of this block as :class:`Template` objects."""
        return [self.template(k) for k in range(len(self))]


def _sm_orientation_batch(x, y, cores, core_ok, deltas, delta_ok):
    """Sherlock-Monro orientation at points (B, M) for per-finger singularities (B, 2, 2)."""
    theta = np.zeros_like(x)
    for k in range(cores.shape[1]):
        a = np.arctan2(-(y - cores[:, k, 1:2]), x - cores[:, k, 0:1])
        theta += np.where(core_ok[:, k : k + 1], 0.5 * a, 0.0)
    for k in range(deltas.shape[1]):
        a = np.arctan2(-(y - deltas[:, k, 1:2]), x - deltas[:, k, 0:1])
        theta -= np.where(delta_ok[:, k : k + 1], 0.5 * a, 0.0)
    return theta


def _template_masters(seed: int, block: int):
    """Master minutiae of one block: dict of (B, M) arrays."""
    B = TEMPLATE_BLOCK_FINGERS
    rng = keyed_rng(seed, TEMPLATE_STREAM, block, 0)
    W, H = IMAGE_WIDTH_PX, IMAGE_HEIGHT_PX
    cls = rng.choice(len(FINGER_CLASSES), size=B, p=CLASS_PROBABILITIES).astype(np.uint8)
    cx = W / 2 + rng.normal(0, 5, B)
    cy = H / 2 - 10 + rng.normal(0, 8, B)
    hw = rng.uniform(*AREA_HALF_WIDTH_PX, B)
    hh = rng.uniform(*TEMPLATE_AREA_HALF_HEIGHT_PX, B)
    # singularities (same model as the image level, without the bends)
    core = np.stack([cx + rng.normal(0, 12, B), cy - rng.uniform(10, 45, B)], axis=1)
    side = np.where(cls == 2, 1.0, -1.0)
    u = rng.uniform(0, 1, (B, 8))
    cores = np.zeros((B, 2, 2))
    deltas = np.zeros((B, 2, 2))
    core_ok = np.zeros((B, 2), bool)
    delta_ok = np.zeros((B, 2), bool)
    loop = (cls == 2) | (cls == 3)
    whorl = cls == 4
    tented = cls == 1
    arch = cls == 0
    # loops
    cores[:, 0] = core
    cores[loop, 0, 0] -= side[loop] * 25 * u[loop, 0]
    deltas[loop, 0, 0] = core[loop, 0] + side[loop] * (60 + 40 * u[loop, 1])
    deltas[loop, 0, 1] = core[loop, 1] + 85 + 40 * u[loop, 2]
    # whorls: two cores and two deltas
    d = 12 + 26 * u[:, 3]
    cores[whorl, 0, 1] = core[whorl, 1] - 0.5 * d[whorl]
    cores[whorl, 1, 0] = core[whorl, 0]
    cores[whorl, 1, 1] = core[whorl, 1] + 0.5 * d[whorl]
    dy = 80 + 40 * u[:, 4]
    deltas[whorl, 0] = np.stack([core[whorl, 0] - 65 - 40 * u[whorl, 5], core[whorl, 1] + dy[whorl]], axis=1)
    deltas[whorl, 1] = np.stack([core[whorl, 0] + 65 + 40 * u[whorl, 6], core[whorl, 1] + dy[whorl]], axis=1)
    # tented arches: delta right below the core
    deltas[tented, 0] = np.stack([core[tented, 0], core[tented, 1] + 30 + 25 * u[tented, 7]], axis=1)
    core_ok[:, 0] = ~arch
    core_ok[:, 1] = whorl
    delta_ok[:, 0] = ~arch
    delta_ok[:, 1] = whorl

    # jittered lattice over the area box, keep cells inside the elliptical area
    gx, gy = LATTICE_CELLS
    G = gx * gy
    ix = np.tile(np.arange(gx), gy)
    iy = np.repeat(np.arange(gy), gx)
    jit = rng.uniform(0.5 - LATTICE_JITTER / 2, 0.5 + LATTICE_JITTER / 2, (B, G, 2))
    px = cx[:, None] - hw[:, None] + (ix[None, :] + jit[..., 0]) * (2 * hw[:, None] / gx)
    py = cy[:, None] - hh[:, None] + (iy[None, :] + jit[..., 1]) * (2 * hh[:, None] / gy)
    inside = ((px - cx[:, None]) / hw[:, None]) ** 2 + ((py - cy[:, None]) / hh[:, None]) ** 2 < 0.92
    n = rng.integers(MASTER_MINUTIAE_RANGE[0], MASTER_MINUTIAE_RANGE[1] + 1, B)
    keys = rng.random((B, G))
    keys[~inside] = 2.0
    M = MASTER_MINUTIAE_RANGE[1]
    pick = np.argsort(keys, axis=1)[:, :M]
    rows = np.arange(B)[:, None]
    x = px[rows, pick]
    y = py[rows, pick]
    valid = (np.arange(M)[None, :] < n[:, None]) & inside[rows, pick]

    theta = _sm_orientation_batch(x, y, cores, core_ok, deltas, delta_ok)
    # arches: analytic arch flow (as at the image level)
    amp = rng.uniform(1.0, 1.8, B)[:, None]
    width = rng.uniform(55.0, 80.0, B)[:, None]
    top = (cy - hh)[:, None]
    depth = np.clip(1.0 - (y - top) / 330.0, 0.05, 1.0) * width
    uu = (x - core[:, 0:1]) / width
    theta_arch = np.arctan(-amp * depth * uu * np.exp(-0.5 * uu * uu) / width)
    theta = np.where(arch[:, None], theta_arch, theta)
    angle = theta + np.pi * (rng.random((B, M)) < 0.5) + rng.normal(0, 3 * DEG, (B, M))
    mtype = np.where(rng.random((B, M)) < ENDING_FRACTION, 1, 2).astype(np.uint8)
    count = valid.sum(axis=1).astype(np.int16)
    # persistent extraction errors: type read wrong, hard-to-see minutiae, offsets
    obs_type = np.where(rng.random((B, M)) < TYPE_FLIP, 3 - mtype, mtype).astype(np.uint8)
    hard = np.where(rng.random((B, M)) < MISSING_HARD_SHARE, 1.0 / MISSING_HARD_SHARE, 0.0)
    # persistent spurious minutiae (creases, scars, pores read as minutiae), inside the area
    P = PERSISTENT_SPURIOUS_MAX
    nps = np.minimum(rng.poisson(PERSISTENT_SPURIOUS_MEAN, B), P)
    r = np.sqrt(rng.random((B, P)))
    phi = rng.uniform(0, 2 * np.pi, (B, P))
    psx = cx[:, None] + 0.85 * hw[:, None] * r * np.cos(phi)
    psy = cy[:, None] + 0.85 * hh[:, None] * r * np.sin(phi)
    spur = np.zeros((B, M + P), bool)
    spur[:, M:] = True
    bias = rng.normal(0, 1, (B, M + P, 3)) * np.array([BIAS_POS_PX, BIAS_POS_PX, BIAS_ANGLE_DEG * DEG])
    return {
        "cls": cls,
        "x": np.concatenate([x, psx], axis=1),
        "y": np.concatenate([y, psy], axis=1),
        "angle": np.concatenate([angle, rng.uniform(0, 2 * np.pi, (B, P))], axis=1),
        "type": np.concatenate([obs_type, rng.integers(1, 3, (B, P)).astype(np.uint8)], axis=1),
        "valid": np.concatenate([valid, np.arange(P)[None, :] < nps[:, None]], axis=1),
        "hard": np.concatenate([hard, np.zeros((B, P))], axis=1),
        "spur": spur,
        "bias": bias,
        "count": count, "cx": cx, "cy": cy, "hw": hw, "hh": hh,
    }


def _template_impressions(seed: int, block: int, j: int, ms: dict):
    """Impression j of every finger of a block: padded (B, S) arrays and a validity mask."""
    B = TEMPLATE_BLOCK_FINGERS
    rng = keyed_rng(seed, TEMPLATE_STREAM, block, j + 1)
    W, H = IMAGE_WIDTH_PX, IMAGE_HEIGHT_PX
    x, y, a = ms["x"], ms["y"], ms["angle"]
    cx, cy = ms["cx"][:, None], ms["cy"][:, None]
    kt, ks, _ = IMPRESSION_PROTOCOL[j % len(IMPRESSION_PROTOCOL)]
    rot = np.clip(rng.normal(0, ROTATION_SD_DEG * ks, B), -ROTATION_MAX_DEG * ks, ROTATION_MAX_DEG * ks)[:, None] * DEG
    tx = np.clip(rng.normal(0, TRANSLATION_SD_PX * kt, B), -TRANSLATION_MAX_PX * kt, TRANSLATION_MAX_PX * kt)[:, None]
    ty = np.clip(rng.normal(0, TRANSLATION_SD_PX * kt, B), -TRANSLATION_MAX_PX * kt, TRANSLATION_MAX_PX * kt)[:, None]
    dcx = cx + rng.normal(0, 25, (B, 1))
    dcy = cy + rng.normal(0, 30, (B, 1))
    dcr = rng.uniform(*CONTACT_RADIUS_PX, (B, 1))
    drot = rng.normal(0, DISTORTION_ROT_SD_DEG, (B, 1)) * DEG
    dtx = rng.normal(0, DISTORTION_SHIFT_SD_PX, (B, 1))
    dty = rng.normal(0, DISTORTION_SHIFT_SD_PX, (B, 1))
    q = np.clip(rng.normal(IMPRESSION_QUALITY_MEAN, IMPRESSION_QUALITY_SD, (B, 1)), 5, 100)
    bad = 1.0 - q / 100.0

    def fwd(px, py):
        # Cappelli plastic distortion then rigid motion, master -> impression
        d = np.maximum(np.hypot(px - dcx, py - dcy) - dcr, 0.0)
        b = 1.0 - np.exp(-((d / DISTORTION_BRAKE_PX) ** 2))
        c, s = np.cos(drot), np.sin(drot)
        rx, ry = px - dcx, py - dcy
        px = px + (dcx + c * rx - s * ry + dtx - px) * b
        py = py + (dcy + s * rx + c * ry + dty - py) * b
        c, s = np.cos(rot), np.sin(rot)
        ux, uy = px - cx, py - cy
        return cx + c * ux - s * uy + tx, cy + s * ux + c * uy + ty

    fx, fy = fwd(x, y)
    gx, gy = fwd(x + 3.0 * np.cos(a), y - 3.0 * np.sin(a))
    fa = np.arctan2(-(gy - fy), gx - fx)
    # contact ellipse in the impression frame
    ex = cx + tx + rng.normal(0, 20, (B, 1))
    ey = cy + ty + rng.normal(0, 25, (B, 1))
    ax = rng.uniform(*CONTACT_SEMI_AXES_PX[0], (B, 1))
    ay = rng.uniform(*CONTACT_SEMI_AXES_PX[1], (B, 1))

    def in_contact(px, py):
        return (((px - ex) / ax) ** 2 + ((py - ey) / ay) ** 2 < 1.0) & (px >= 0) & (px < W) & (py >= 0) & (py < H)

    M = x.shape[1]
    keep = ms["valid"] & in_contact(fx, fy)
    p_miss = (MISSING_BASE + MISSING_PER_BAD * bad) * ms["hard"] * (1.0 - BAD_REGION_SHARE)
    # extraction fails in patches (smudge, dry area, low contrast), not minutia by minutia
    R = BAD_REGIONS_MAX
    n_bad = np.minimum(rng.poisson(BAD_REGIONS_BASE + BAD_REGIONS_PER_BAD * bad[:, 0]), R)
    rb = np.sqrt(rng.random((B, R)))
    pb = rng.uniform(0, 2 * np.pi, (B, R))
    bx = (ex + ax * rb * np.cos(pb))[:, :, None]
    by = (ey + ay * rb * np.sin(pb))[:, :, None]
    brad = rng.uniform(*BAD_REGION_RADIUS_PX, (B, R))[:, :, None]
    in_bad = (((fx[:, None, :] - bx) ** 2 + (fy[:, None, :] - by) ** 2 < brad**2)
              & (np.arange(R)[None, :, None] < n_bad[:, None, None])).any(axis=1)
    p_miss = np.where(in_bad, BAD_REGION_MISSING, p_miss)
    # extractors trim the border of the print: minutiae near the contact edge are mostly lost
    rr = np.sqrt(((fx - ex) / ax) ** 2 + ((fy - ey) / ay) ** 2)
    edge = np.minimum((1.0 - rr) * np.minimum(ax, ay), np.minimum(np.minimum(fx, W - 1 - fx), np.minimum(fy, H - 1 - fy)))
    p_miss = np.where(edge < BORDER_BAND_PX, BORDER_MISSING, p_miss)
    p_miss = np.where(ms["spur"], 1.0 - PERSISTENT_SPURIOUS_SHOW, p_miss)
    keep &= rng.random((B, M)) >= p_miss
    bias = ms["bias"]
    fx = fx + bias[..., 0] + rng.normal(0, 1, (B, M)) * (JITTER_POS_PX[0] + JITTER_POS_PX[1] * bad)
    fy = fy + bias[..., 1] + rng.normal(0, 1, (B, M)) * (JITTER_POS_PX[0] + JITTER_POS_PX[1] * bad)
    fa = fa + bias[..., 2] + rng.normal(0, 1, (B, M)) * (JITTER_ANGLE_DEG[0] + JITTER_ANGLE_DEG[1] * bad) * DEG
    ftype = np.where(rng.random((B, M)) < TYPE_FLIP_IMPRESSION, 3 - ms["type"], ms["type"]).astype(np.uint8)
    fq = np.clip(q + rng.normal(0, 12, (B, M)), 1, 100)
    # spurious minutiae, uniform in the contact ellipse
    S = SPURIOUS_MAX
    ns = np.minimum(rng.poisson(SPURIOUS_BASE + SPURIOUS_PER_BAD * bad[:, 0]), S)
    # new spurious minutiae: most near the edge of the contact area, the rest anywhere in it
    near_edge = rng.random((B, S)) < SPURIOUS_EDGE_SHARE
    r = np.sqrt(np.where(near_edge, rng.uniform(0.8**2, 1.0, (B, S)), rng.random((B, S))))
    phi = rng.uniform(0, 2 * np.pi, (B, S))
    sx = ex + ax * r * np.cos(phi)
    sy = ey + ay * r * np.sin(phi)
    skeep = (np.arange(S)[None, :] < ns[:, None]) & in_contact(sx, sy)
    sa = rng.uniform(0, 2 * np.pi, (B, S))
    stype = rng.integers(1, 3, (B, S)).astype(np.uint8)
    sq = np.clip(0.6 * q + rng.normal(0, 12, (B, S)), 1, 100)
    X = np.concatenate([fx, sx], axis=1)
    Y = np.concatenate([fy, sy], axis=1)
    A = np.concatenate([fa, sa], axis=1)
    T = np.concatenate([ftype, stype], axis=1)
    Q = np.concatenate([fq, sq], axis=1)
    K = np.concatenate([keep, skeep], axis=1)
    K &= (X >= 0) & (X < W) & (Y >= 0) & (Y < H)
    # shuffle each row so that the master order does not show
    order = np.argsort(np.where(K, rng.random(K.shape), 2.0), axis=1)
    rows = np.arange(B)[:, None]
    return (X[rows, order], Y[rows, order], A[rows, order], T[rows, order], Q[rows, order], K[rows, order],
            np.rint(q[:, 0]).astype(np.uint8))


def _template_block(seed: int, block: int, n_impressions: int) -> TemplateBlock:
    B = TEMPLATE_BLOCK_FINGERS
    ms = _template_masters(seed, block)
    parts = [_template_impressions(seed, block, j, ms) for j in range(n_impressions)]
    # finger-major order: (finger, impression)
    X = np.stack([p[0] for p in parts], axis=1).reshape(B * n_impressions, -1)
    Y = np.stack([p[1] for p in parts], axis=1).reshape(B * n_impressions, -1)
    A = np.stack([p[2] for p in parts], axis=1).reshape(B * n_impressions, -1)
    T = np.stack([p[3] for p in parts], axis=1).reshape(B * n_impressions, -1)
    Q = np.stack([p[4] for p in parts], axis=1).reshape(B * n_impressions, -1)
    K = np.stack([p[5] for p in parts], axis=1).reshape(B * n_impressions, -1)
    qual = np.stack([p[6] for p in parts], axis=1).reshape(-1)
    counts = K.sum(axis=1)
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = np.zeros(int(offsets[-1]), MINUTIA_DTYPE)
    flat["x"] = X[K]
    flat["y"] = Y[K]
    flat["angle"] = np.mod(A[K], 2 * np.pi)
    flat["type"] = T[K]
    flat["quality"] = np.rint(Q[K]).astype(np.uint8)
    first = block * B
    return TemplateBlock(
        finger=np.repeat(np.arange(first, first + B, dtype=np.int64), n_impressions),
        impression=np.tile(np.arange(n_impressions, dtype=np.int16), B),
        offsets=offsets,
        minutiae=flat,
        quality=qual,
        finger_class=ms["cls"],
        master_counts=ms["count"],
        first=first,
    )


def _slice_block(tb: TemplateBlock, lo: int, hi: int, n_impressions: int) -> TemplateBlock:
    """Fingers [lo, hi) (absolute indices) of a block."""
    a = (lo - tb.first) * n_impressions
    b = (hi - tb.first) * n_impressions
    off = tb.offsets[a : b + 1]
    return TemplateBlock(
        finger=tb.finger[a:b],
        impression=tb.impression[a:b],
        offsets=off - off[0],
        minutiae=tb.minutiae[off[0] : off[-1]],
        quality=tb.quality[a:b],
        finger_class=tb.finger_class[lo - tb.first : hi - tb.first],
        master_counts=tb.master_counts[lo - tb.first : hi - tb.first],
        first=lo,
    )


def template_batch(n_fingers: int, n_impressions: int = 2, seed: int = 0, *, first_finger: int = 0) -> Iterator[TemplateBlock]:
    """Yield synthetic mated templates for fingers ``first_finger .. first_finger + n_fingers - 1``.

    Fingers are generated in blocks of :data:`TEMPLATE_BLOCK_FINGERS`; finger
    ``i`` (and its impression ``j``) depends only on ``seed``, ``i`` and ``j``.
    Each yielded :class:`TemplateBlock` holds up to that many fingers, all
    their impressions in finger-major order, as flat arrays (no per-template
    objects: enrol from ``offsets``/``minutiae`` or call ``.templates()``).

    Parameters
    ----------
    n_fingers : int
        1 .. 10,000,000.
    n_impressions : int
        Impressions per finger, 1 .. 100.
    seed : int
    first_finger : int
        0-based index of the first finger (to generate a range in parallel).
    """
    seed = check_seed(seed)
    n_fingers = check_count(n_fingers, "fingers", MAX_FINGERS)
    n_impressions = check_count(n_impressions, "impressions", MAX_IMPRESSIONS)
    if isinstance(first_finger, bool) or not isinstance(first_finger, (int, np.integer)) or first_finger < 0:
        raise BiomatchError(f"first_finger must be a non-negative integer, got {first_finger!r}")
    lo, hi = int(first_finger), int(first_finger) + n_fingers
    B = TEMPLATE_BLOCK_FINGERS
    for block in range(lo // B, (hi - 1) // B + 1):
        tb = _template_block(seed, block, n_impressions)
        a, b = max(lo, block * B), min(hi, (block + 1) * B)
        yield tb if (a, b) == (block * B, (block + 1) * B) else _slice_block(tb, a, b, n_impressions)
