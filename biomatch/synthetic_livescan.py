"""Hard livescan impressions of a synthetic finger, with the ground truth a ridge model trains on.

:func:`biomatch.synthetic.make_impression` draws the geometry of an
impression (rigid motion, plastic distortion, contact area) and a plain
rendering of it. This module re-renders that geometry as the prints that
defeat classical extractors at booking stations (Handbook of Fingerprint
Recognition, 2nd ed., ch. 2-3 and 6, on sensors and skin conditions):

- **skin**: dry (thin ridges broken into dots and dashes, white specks),
  wet (thick ridges, valleys smudged shut), faint (light contact, low
  contrast), normal;
- **creases and scars**: white lines across the ridges (flexion creases,
  mostly near-horizontal) and thick curved strokes (scars);
- **sensor**: optical (bright background, vignetting, blur, latent residue of
  an earlier finger), capacitive (saturated dark ridges, patchy contact,
  pixel noise), thermal sweep (low contrast, row-gain stripes, slices
  shifted by a pixel as the finger is swept);
- **scale**: the ridge period over the real range at 500 ppi (about 6.5-12.5
  px), by resampling the impression;
- **compression**: an optional WSQ round trip at 0.75 bpp, as booking systems send.

Every choice is drawn from a generator keyed by (seed, finger, impression),
so a sample is reproducible. The ground truth is geometric and exact: the
clean ridge map (the master ridge pattern mapped into the image), the
contact mask, and the master minutiae that fall in the contact area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .errors import BiomatchError
from .synthetic import TRUTH_CONTACT_MIN, Impression
from .template import Template, make_minutiae

__all__ = ["SENSORS", "SKIN_CONDITIONS", "LivescanImpression", "render_livescan"]

#: Sensor families drawn (in equal shares unless asked for one).
SENSORS = ("optical", "capacitive", "thermal_sweep")
#: Skin conditions and their shares.
SKIN_CONDITIONS = ("normal", "dry", "wet", "faint")
SKIN_SHARES = (0.35, 0.30, 0.20, 0.15)
#: Resampling factor range (ridge periods of the masters, 7.5-10 px, become about 6.5-12.5 px).
SCALE_RANGE = (0.85, 1.25)
#: Flexion creases per print (Poisson mean) and their width range in px.
CREASES_PER_PRINT = 1.5
CREASE_WIDTH_PX = (1.5, 4.5)
#: Chance of a scar (a thick curved stroke) on a print.
SCAR_SHARE = 0.12
#: Chance of a WSQ round trip, and its bit rate (bits per pixel).
WSQ_SHARE = 0.25
WSQ_BITRATE_BPP = 0.75

_LIVESCAN_STREAM = 3


@dataclass(frozen=True)
class LivescanImpression:
    """A re-rendered impression and its exact ground truth.

    Attributes
    ----------
    pixels : ndarray of uint8, shape (h, w)
        Gray image at 500 ppi, ridges dark.
    ridge : ndarray of float32, shape (h, w)
        Clean ridge map in [-1, 1], > 0 on ridges (valid inside ``mask``).
    mask : ndarray of bool, shape (h, w)
        Contact area (contact strength at least ``TRUTH_CONTACT_MIN``).
    truth : Template
        Master minutiae in this image inside the contact area.
    params : dict
        The drawn sensor, skin condition, scale and artefacts.
    """

    pixels: np.ndarray
    ridge: np.ndarray
    mask: np.ndarray
    truth: Template
    params: dict


def _noise(rng, shape, sigma):
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return n / (n.std() + 1e-6)


def _resample(img, scale, order, cval=0.0):
    h, w = img.shape
    nh, nw = max(int(round(h * scale)), 8), max(int(round(w * scale)), 8)
    yy = (np.arange(nh, dtype=np.float32) + 0.5) / scale - 0.5
    xx = (np.arange(nw, dtype=np.float32) + 0.5) / scale - 0.5
    return ndi.map_coordinates(img, np.meshgrid(yy, xx, indexing="ij"), order=order, mode="constant", cval=cval).astype(np.float32)


def _stroke_distance(rng, shape, length_px, curvature):
    """Distance (px) from every pixel to a random curved stroke across the print."""
    h, w = shape
    cx, cy = rng.uniform(0.15 * w, 0.85 * w), rng.uniform(0.25 * h, 0.85 * h)
    angle = rng.normal(0.0, 0.35) if rng.uniform() < 0.8 else rng.uniform(0, np.pi)  # creases run across the finger
    t = np.linspace(-0.5, 0.5, 64) * length_px
    px = cx + t * np.cos(angle) - curvature * t**2 * np.sin(angle)
    py = cy - t * np.sin(angle) - curvature * t**2 * np.cos(angle)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.full(shape, np.inf, dtype=np.float32)
    for x0, y0 in zip(px[::2], py[::2]):  # 32 sample points: enough for a smooth curve of a few hundred px
        np.minimum(d, np.hypot(xx - x0, yy - y0), out=d)
    return d


def render_livescan(impression: Impression, seed: int = 0, *, sensor: str | None = None,
                    skin: str | None = None, scale: float | None = None, wsq: bool | None = None) -> LivescanImpression:
    """Re-render a synthetic impression as a hard livescan print.

    Parameters
    ----------
    impression : Impression
        From :func:`biomatch.synthetic.make_impression` (carries ``ridge`` and ``contact``).
    seed : int
        Seed of the rendering choices (with the impression's finger and index).
    sensor, skin : str, optional
        Force one of :data:`SENSORS` / :data:`SKIN_CONDITIONS`; drawn when None.
    scale : float, optional
        Force the resampling factor (within :data:`SCALE_RANGE`); drawn when None.
        A verification benchmark fixes it per finger: one finger on one sensor
        keeps its ridge period from one impression to the next.
    wsq : bool, optional
        Force or forbid the WSQ round trip; drawn when None.

    Returns
    -------
    LivescanImpression
    """
    if impression.ridge is None or impression.contact is None:
        raise BiomatchError("impression carries no ridge map / contact (make it with biomatch.synthetic.make_impression)")
    if sensor is not None and sensor not in SENSORS:
        raise BiomatchError(f"sensor must be one of {', '.join(SENSORS)}, got {sensor!r}")
    if skin is not None and skin not in SKIN_CONDITIONS:
        raise BiomatchError(f"skin must be one of {', '.join(SKIN_CONDITIONS)}, got {skin!r}")
    if scale is not None and not (isinstance(scale, (int, float, np.floating)) and not isinstance(scale, bool)
                                  and SCALE_RANGE[0] <= float(scale) <= SCALE_RANGE[1]):
        raise BiomatchError(f"scale must be a number in [{SCALE_RANGE[0]}, {SCALE_RANGE[1]}], got {scale!r}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        int(seed), spawn_key=(_LIVESCAN_STREAM, int(impression.finger), int(impression.impression)))))
    sensor = sensor or SENSORS[int(rng.integers(len(SENSORS)))]
    skin = skin or SKIN_CONDITIONS[int(rng.choice(len(SKIN_CONDITIONS), p=SKIN_SHARES))]
    scale = float(rng.uniform(*SCALE_RANGE)) if scale is None else float(scale)
    ridge = np.clip(_resample(impression.ridge, scale, 1), -1.0, 1.0)
    contact = np.clip(_resample(impression.contact, scale, 1), 0.0, 1.0)
    shape = ridge.shape
    period = 9.0 * scale  # nominal, for the size of skin artefacts

    # skin: ridge thickness (threshold on the ridge map) and its texture
    thickness = {"normal": 0.0, "dry": -0.35, "wet": 0.45, "faint": -0.1}[skin]
    thr = -thickness + 0.25 * _noise(rng, shape, 2.0 * period)
    ink = 1.0 / (1.0 + np.exp(-(ridge - thr) * rng.uniform(5.0, 9.0)))
    if skin == "dry":
        # ridges broken into dots and dashes: multiplicative gaps of about half a period
        gaps = _noise(rng, shape, 0.25 * period) > rng.uniform(0.0, 0.8)
        ink = np.where(gaps, ink * rng.uniform(0.0, 0.3), ink)
        contact = contact * np.clip(1.0 + 0.5 * _noise(rng, shape, 3.0 * period), 0.0, 1.0)
    pores = _noise(rng, shape, 0.6) > rng.uniform(2.2, 3.2)
    ink = np.where(pores & (ridge > 0.3), ink * 0.3, ink)
    if skin == "wet":
        smudge = np.clip((_noise(rng, shape, 0.6 * period) - rng.uniform(0.8, 1.6)) * 1.5, 0.0, 0.7)
        ink = np.maximum(ink, smudge)

    # creases (white lines) and scars
    for _ in range(int(rng.poisson(CREASES_PER_PRINT))):
        d = _stroke_distance(rng, shape, rng.uniform(60, 260), rng.normal(0, 0.002))
        ink *= np.clip(d / rng.uniform(*CREASE_WIDTH_PX), 0.0, 1.0) ** 2
    if rng.uniform() < SCAR_SHARE:
        d = _stroke_distance(rng, shape, rng.uniform(40, 160), rng.normal(0, 0.01))
        width = rng.uniform(3.0, 8.0)
        scar = np.clip(1.0 - d / width, 0.0, 1.0)
        ink = ink * (1.0 - scar) + scar * rng.uniform(0.0, 0.9)

    contact_strength = {"faint": rng.uniform(0.25, 0.6)}.get(skin, 1.0)
    ink = ink * contact * contact_strength

    # sensor look
    if sensor == "optical":
        yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
        vignette = ((xx / shape[1] - 0.5) ** 2 + (yy / shape[0] - 0.5) ** 2) * rng.uniform(0, 80)
        background = rng.uniform(175, 250) - vignette + 6.0 * _noise(rng, shape, 30.0)
        contrast = rng.uniform(110, 220)
        if rng.uniform() < 0.3:  # latent residue of an earlier finger on the platen
            ghost = np.clip(np.roll(ridge, (int(rng.integers(-40, 40)), int(rng.integers(-40, 40))), axis=(0, 1)), 0, 1)
            background = background - rng.uniform(10, 40) * ghost * (1 - contact)
        gray = ndi.gaussian_filter(background - contrast * ink, rng.uniform(0.6, 1.4))
        gray += rng.uniform(2.0, 10.0) * rng.standard_normal(shape).astype(np.float32)
    elif sensor == "capacitive":
        background = rng.uniform(150, 235) + rng.uniform(2.0, 10.0) * _noise(rng, shape, 12.0)
        gain = rng.uniform(180, 320) * np.clip(1.0 + 0.3 * _noise(rng, shape, 25.0), 0.3, 1.6)
        gray = ndi.gaussian_filter(background - gain * ink, rng.uniform(0.4, 0.9))
        gray += rng.uniform(4.0, 18.0) * rng.standard_normal(shape).astype(np.float32)
    else:  # thermal sweep: slices of a few rows, each shifted and with its own gain
        background = rng.uniform(120, 200) + 5.0 * _noise(rng, shape, 20.0)
        contrast = rng.uniform(50, 120)
        gray = background - contrast * ink
        rows = np.arange(shape[0])
        band = int(rng.integers(6, 16))
        shift = rng.integers(-1, 2, size=shape[0] // band + 1)
        row_gain = 1.0 + rng.uniform(0.01, 0.06) * rng.standard_normal(shape[0] // band + 1)
        out = np.empty_like(gray)
        truth_ridge = np.empty_like(ridge)
        truth_contact = np.empty_like(contact)
        for r in rows:
            s, g = int(shift[r // band]), float(row_gain[r // band])
            out[r] = np.roll(gray[r], s) * g
            truth_ridge[r] = np.roll(ridge[r], s)
            truth_contact[r] = np.roll(contact[r], s)
        gray, ridge, contact = out, truth_ridge, truth_contact
        gray = ndi.gaussian_filter(gray, (0.3, rng.uniform(0.5, 1.0)))
        gray += rng.uniform(3.0, 12.0) * rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.7, 1.4)
    gray = 255.0 * (np.clip(gray, 0, 255) / 255.0) ** gamma
    pixels = np.clip(np.rint(gray), 0, 255).astype(np.uint8)

    use_wsq = bool(rng.uniform() < WSQ_SHARE) if wsq is None else bool(wsq)
    if use_wsq:
        import _wsq  # the decoder/encoder the ``wsq`` dependency ships

        h, w = pixels.shape
        data = _wsq.compress(np.ascontiguousarray(pixels).tobytes(), h, w, WSQ_BITRATE_BPP)  # (rows, columns)
        buf, w2, h2, _ppi = _wsq.decompress(data)
        pixels = np.frombuffer(buf, dtype=np.uint8).reshape(h2, w2).copy()

    mask = contact >= TRUTH_CONTACT_MIN
    t = impression.truth.minutiae
    x = (t["x"] + 0.5) * scale - 0.5
    y = (t["y"] + 0.5) * scale - 0.5
    h, w = shape
    ix, iy = np.clip(np.rint(x).astype(int), 0, w - 1), np.clip(np.rint(y).astype(int), 0, h - 1)
    keep = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1) & mask[iy, ix]
    truth = Template(make_minutiae(x[keep], y[keep], t["angle"][keep], t["type"][keep], t["quality"][keep]),
                     w, h, 500.0, 0, 100)
    params = {"sensor": sensor, "skin": skin, "scale": round(scale, 4), "wsq": use_wsq}
    return LivescanImpression(pixels=pixels, ridge=ridge.astype(np.float32), mask=mask, truth=truth, params=params)
