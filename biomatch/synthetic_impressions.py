"""Impressions of a synthetic master finger (:mod:`biomatch.synthetic_masters`): rigid motion and
Cappelli's plastic distortion (:class:`Motion`, master -> impression and back), pressure and
contact area, ridge thickness, dry-skin specks and wet smudges, background and sensor noise; an
8-bit gray image with ridges dark, its clean ridge map, its contact mask and the master minutiae
that fall in the contact area (the ground truth). Impression ``j`` follows the FVC2002
acquisition protocol for ``j mod 8`` (:data:`biomatch.synthetic_params.IMPRESSION_PROTOCOL`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import BiomatchError
from .synthetic_masters import MasterFinger
from .synthetic_params import (CONTACT_RADIUS_PX, DEG, DISTORTION_BRAKE_PX, DISTORTION_ROT_SD_DEG,
                               DISTORTION_SHIFT_SD_PX, IMAGE_STREAM, IMPRESSION_PROTOCOL, PPI, ROTATION_MAX_DEG,
                               ROTATION_SD_DEG, TRANSLATION_MAX_PX, TRANSLATION_SD_PX, keyed_rng)
from .template import Template

#: Ground truth keeps a master minutia where the impression's contact is at least this strong.
TRUTH_CONTACT_MIN = 0.5


# ---------------------------------------------------------------------------
# impressions
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Impression:
    """One synthetic impression of a :class:`MasterFinger`.

    Attributes
    ----------
    pixels : ndarray of uint8, shape (H, W)
        Gray image at 500 ppi, ridges dark.
    truth : Template
        Master minutiae mapped into this image that fall in its contact area.
    finger, impression : int
        0-based finger index and 0-based impression index.
    params : dict
        The drawn acquisition parameters (for the manifest).
    ridge : ndarray of float32, shape (H, W), optional
        The master ridge pattern mapped into this impression, in [-1, 1], > 0 on
        ridges (before pressure, skin and sensor): the clean ridge map that an
        enhancement model is trained to recover.
    contact : ndarray of float32, shape (H, W), optional
        Contact strength 0-1 (the print's foreground); ground truth counts
        where it is at least :data:`TRUTH_CONTACT_MIN`.
    """

    pixels: np.ndarray
    truth: Template
    finger: int
    impression: int
    params: dict = field(default_factory=dict)
    ridge: np.ndarray | None = None
    contact: np.ndarray | None = None


@dataclass(frozen=True)
class Motion:
    """Rigid motion + Cappelli plastic distortion, as a map master -> impression."""

    cx: float
    cy: float
    rot: float
    tx: float
    ty: float
    dc_x: float  # close-contact centre (master frame)
    dc_y: float
    dc_r: float  # close-contact radius
    d_rot: float  # rigid skin shift applied outside the contact region
    d_tx: float
    d_ty: float
    brake: float

    def _distort(self, x, y, sign=1.0):
        # Cappelli et al. 2001: v + (T(v) - v) * brake(distance outside the close-contact region)
        d = np.maximum(np.hypot(x - self.dc_x, y - self.dc_y) - self.dc_r, 0.0)
        b = sign * (1.0 - np.exp(-((d / self.brake) ** 2)))
        c, s = np.cos(self.d_rot), np.sin(self.d_rot)
        rx, ry = x - self.dc_x, y - self.dc_y
        tx = self.dc_x + c * rx - s * ry + self.d_tx
        ty = self.dc_y + s * rx + c * ry + self.d_ty
        return x + (tx - x) * b, y + (ty - y) * b

    def backward(self, qx, qy):
        """Impression pixel -> master point (the map used to render)."""
        c, s = np.cos(self.rot), np.sin(self.rot)
        ux, uy = qx - self.cx - self.tx, qy - self.cy - self.ty
        px = self.cx + c * ux + s * uy
        py = self.cy - s * ux + c * uy
        return self._distort(px, py, -1.0)

    def forward(self, mx, my, iterations: int = 12):
        """Master point -> impression pixel, inverting :meth:`backward` by fixed-point iteration."""
        c, s = np.cos(self.rot), np.sin(self.rot)

        def rigid(px, py):
            ux, uy = px - self.cx, py - self.cy
            return self.cx + c * ux - s * uy + self.tx, self.cy + s * ux + c * uy + self.ty

        qx, qy = rigid(mx, my)
        for _ in range(iterations):
            bx, by = self.backward(qx, qy)
            ex, ey = mx - bx, my - by
            gx, gy = rigid(self.cx + ex, self.cy + ey)
            qx, qy = qx + gx - self.cx - self.tx, qy + gy - self.cy - self.ty
        return qx, qy


def _smooth_noise(rng, shape, sigma):
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / (n.std() + 1e-6)


def make_impression(master: MasterFinger, impression: int) -> Impression:
    """Impression ``impression`` (0-based) of ``master``; depends only on (seed, finger, impression)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    if isinstance(impression, bool) or not isinstance(impression, (int, np.integer)) or int(impression) < 0:
        raise BiomatchError(f"impression index must be a non-negative integer, got {impression!r}")
    rng = keyed_rng(master.seed, IMAGE_STREAM, master.index, int(impression) + 1)
    kt, ks, pressure_range = IMPRESSION_PROTOCOL[int(impression) % len(IMPRESSION_PROTOCOL)]
    h, w = master.pattern.shape
    inside_idx = np.argwhere(master.inside > 0)
    cy, cx = inside_idx.mean(axis=0)
    motion = Motion(
        cx=float(cx),
        cy=float(cy),
        rot=float(np.clip(rng.normal(0, ROTATION_SD_DEG * ks), -ROTATION_MAX_DEG * ks, ROTATION_MAX_DEG * ks) * DEG),
        tx=float(np.clip(rng.normal(0, TRANSLATION_SD_PX * kt), -TRANSLATION_MAX_PX * kt, TRANSLATION_MAX_PX * kt)),
        ty=float(np.clip(rng.normal(0, TRANSLATION_SD_PX * kt), -TRANSLATION_MAX_PX * kt, TRANSLATION_MAX_PX * kt)),
        dc_x=float(cx + rng.normal(0, 25)),
        dc_y=float(cy + rng.normal(0, 30)),
        dc_r=float(rng.uniform(*CONTACT_RADIUS_PX)),
        d_rot=float(rng.normal(0, DISTORTION_ROT_SD_DEG) * DEG),
        d_tx=float(rng.normal(0, DISTORTION_SHIFT_SD_PX)),
        d_ty=float(rng.normal(0, DISTORTION_SHIFT_SD_PX)),
        brake=DISTORTION_BRAKE_PX,
    )
    qy, qx = np.mgrid[0:h, 0:w].astype(np.float64)
    mx, my = motion.backward(qx, qy)
    coords = np.array([my, mx])
    ridge = map_coordinates(master.pattern, coords, order=1, mode="constant", cval=0.0).astype(np.float32)
    inside = map_coordinates(master.inside, coords, order=1, mode="constant", cval=-50.0).astype(np.float32)

    # contact: the pressed area is an ellipse inside the finger area, soft at its edge
    pressure = float(rng.uniform(*pressure_range))  # 0 light / dry .. 1 heavy / wet
    ex = motion.cx + motion.tx + rng.normal(0, 20)
    ey = motion.cy + motion.ty + rng.normal(0, 25)
    ax = (0.65 + 0.35 * pressure + rng.uniform(0.0, 0.25)) * (w * 0.42)
    ay = (0.60 + 0.35 * pressure + rng.uniform(0.0, 0.25)) * (h * 0.42)
    rr = np.sqrt(((qx - ex) / ax) ** 2 + ((qy - ey) / ay) ** 2)
    contact = np.clip((1.0 - rr) * 8.0, 0.0, 1.0) * np.clip(inside / 6.0, 0.0, 1.0)
    contact *= np.clip(1.0 + rng.uniform(0.2, 0.5) * _smooth_noise(rng, (h, w), 20.0), 0.0, 1.0)
    contact = contact.astype(np.float32)

    # ridge thickness: threshold moves with pressure (dry: thin broken ridges; wet: thick, merged)
    thr = 0.6 * (0.5 - pressure) + 0.35 * _smooth_noise(rng, (h, w), 6.0)
    ink = 1.0 / (1.0 + np.exp(-(ridge - thr) * 7.0))
    # skin condition: dry skin leaves white specks and breaks on the ridges, wet
    # skin smudges valleys shut in patches
    dryness = float(rng.uniform(0.0, 1.0) ** 1.5) if pressure_range[1] > 0.5 else float(rng.uniform(0.5, 1.0))
    specks = _smooth_noise(rng, (h, w), 1.0) > (2.6 - 1.7 * dryness)
    ink = np.where(specks, ink * 0.2, ink)
    wet = max(0.0, pressure - 0.5) * 2.0
    if wet > 0:
        smudge = np.clip((_smooth_noise(rng, (h, w), 8.0) - (2.0 - 1.2 * wet)) * 2.0, 0.0, 0.85)
        ink = np.maximum(ink, smudge)
    ink = ink * contact

    background = rng.uniform(185.0, 245.0) + 8.0 * _smooth_noise(rng, (h, w), 40.0)
    contrast = rng.uniform(140.0, 210.0) * (0.8 + 0.3 * pressure)
    gray = background - contrast * ink
    gray = gaussian_filter(gray.astype(np.float32), rng.uniform(0.6, 1.1))
    gray += (3.0 + 15.0 * rng.uniform() ** 2) * rng.standard_normal((h, w)).astype(np.float32)
    pixels = np.clip(np.rint(gray), 0, 255).astype(np.uint8)

    # ground truth: master minutiae mapped forward, kept where contact is solid
    m = master.minutiae
    fx, fy = motion.forward(m["x"].astype(np.float64), m["y"].astype(np.float64))
    step = 3.0
    gx, gy = motion.forward(m["x"] + step * np.cos(m["angle"]), m["y"] - step * np.sin(m["angle"]))
    ang = np.arctan2(-(gy - fy), gx - fx)
    ok = (fx >= 0) & (fx <= w - 1) & (fy >= 0) & (fy <= h - 1)
    ix = np.clip(np.rint(fx).astype(int), 0, w - 1)
    iy = np.clip(np.rint(fy).astype(int), 0, h - 1)
    ok &= contact[iy, ix] >= TRUTH_CONTACT_MIN
    from .template import make_minutiae

    truth_m = make_minutiae(fx[ok], fy[ok], ang[ok], m["type"][ok], np.full(int(ok.sum()), 100))
    truth = Template(truth_m, w, h, PPI, 0, 100)
    params = {
        "centre_px": [round(motion.cx, 3), round(motion.cy, 3)],
        "rotation_deg": round(motion.rot / DEG, 3),
        "translation_px": [round(motion.tx, 2), round(motion.ty, 2)],
        "distortion": {"centre": [round(motion.dc_x, 1), round(motion.dc_y, 1)], "radius_px": round(motion.dc_r, 1),
                       "rotation_deg": round(motion.d_rot / DEG, 3), "shift_px": [round(motion.d_tx, 2), round(motion.d_ty, 2)]},
        "pressure": round(pressure, 3),
        "dryness": round(dryness, 3),
    }
    return Impression(pixels=pixels, truth=truth, finger=master.index, impression=int(impression), params=params,
                      ridge=ridge, contact=contact)
