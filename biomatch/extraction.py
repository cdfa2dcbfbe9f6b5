"""Minutiae extraction: a finger image in, a :class:`~biomatch.template.Template` out.

The whole pipeline is :func:`extract_detailed`; every stage is a small
function below it and every tuned constant sits in the block at the top of
this module, with its unit in its name (the false-minutia rules of stage 9,
with theirs, are :mod:`biomatch.minutia_rules`). Extraction runs at 500 ppi
(:func:`biomatch.io.to_working_resolution`); minutiae are reported in the
original pixel frame.

Stages
------
1. ``normalize``: local contrast normalisation (box window of about two
   ridge periods).
2. ``orientation_field``: ridge orientation from the smoothed gradient
   structure tensor (window of about three ridge periods); coherence =
   (l1 - l2) / (l1 + l2) of its eigenvalues in a smaller, local window.
3. ``segment``: foreground mask from local gray-level variance and coherence
   (blocks of :data:`SEGMENT_BLOCK_PX`), cleaned morphologically, largest
   region kept.
4. ``ridge_period``: per-tile ridge period from the peak of the windowed
   power spectrum of overlapping tiles (one batched FFT, no Python loop),
   filled and smoothed, interpolated per pixel.
5. ``enhance``: contextual filtering by an oriented Gabor filter, applied in
   its separable local form (band-pass across the ridge, Gaussian along it)
   with per-pixel orientation and period (C++ kernel); then
   ``refine_orientation`` re-estimates the orientation on the enhanced image
   in a window of about one ridge period and the filter runs again with it.
6. ``binarize``: sign of the enhanced image inside the mask; specks and small
   holes (pores, "lakes") removed.
7. ``thin``: Guo-Hall thinning to an 8-connected one-pixel skeleton (C++).
8. ``detect``: crossing number 1 = ridge ending, 3 = bifurcation (C++),
   direction from tracing the ridge (C++), refined by the orientation field.
9. ``remove_false`` (:mod:`biomatch.minutia_rules`): border, short ridges,
   spurs, bridges/holes, broken ridges and clusters.
10. ``quality``: per-minutia quality 0-100 from local coherence and ridge
    clarity (``ridge_clarity``: local mean Gabor response), image quality 0-100.

``extract_detailed(..., front_end="learned")`` replaces stages 2-4's
foreground, first orientation field and period source by the learned ridge
model (:func:`learned_front_end`, :mod:`biomatch.ridge_model`); the default
and :func:`extract` use the classical stages.

Angles follow :mod:`biomatch.template`: radians counter-clockwise from the
image x axis with y pointing up. The angle of a ridge ending points along its
ridge away from the end; the angle of a bifurcation points along the valley
that separates its two arms, i.e. from the junction towards the opening of the
fork (the convention shared by ISO/IEC 19794-2 vendor records; see
``benchmarks/bench_extraction.py`` for the measured agreement).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _filters as flt
from .errors import BiomatchError, ImageError, TemplateError
from .io import FingerImage, WORKING_PPI, read_image, to_working_resolution
from .minutia_rules import GOOD_CLARITY, remove_false
from .template import FINGER_POSITIONS, MinutiaType, Template, make_minutiae

__all__ = ["extract", "extract_detailed", "Extraction", "EXTRACTOR_VERSION"]

#: Version of the extractor: changes whenever the minutiae it finds in an image
#: change, so that an audit record says which extractor made a template
#: (CHANGELOG.md says what each version changed).
EXTRACTOR_VERSION = "biomatch-extract-4"

# ---------------------------------------------------------------------------
# Tuned constants (all lengths at the 500 ppi working resolution)
# ---------------------------------------------------------------------------
#: Block size of the variance-based segmentation.
SEGMENT_BLOCK_PX = 8
#: A block is foreground when its gray-level std exceeds this fraction of the
#: 95th percentile block std of the image ...
SEGMENT_REL_STD = 0.30
#: ... and this absolute std (gray levels).
SEGMENT_MIN_STD_GRAY = 6.0
#: ... and ridge flow: mean orientation coherence above this (white noise gives ~0.1).
SEGMENT_MIN_COHERENCE = 0.2
#: Morphological clean-up radius of the block mask, in blocks.
SEGMENT_CLOSE_BLOCKS = 2
#: Smallest foreground accepted: 0.04 sq in (a 0.2 x 0.2 in patch).
MIN_FOREGROUND_AREA_PX = int(0.04 * WORKING_PPI**2)
#: Window of the local contrast normalisation (about two ridge periods).
NORMALIZE_WINDOW_PX = 17
#: Gaussian sigma of the gradient operator.
GRADIENT_SIGMA_PX = 1.0
#: Structure-tensor window for the orientation: sigma of about 1.5 ridge periods
#: (a window about three periods wide), so that one broken ridge, a pore or
#: noise on a dry print does not turn the field; the Gabor filter and minutia
#: directions follow this field.
ORIENTATION_SIGMA_PX = 14.0
#: Structure-tensor window for the coherence, smaller (local ridge-flow quality for
#: the segmentation and minutia quality).
COHERENCE_SIGMA_PX = 7.0
#: Second orientation pass, on the Gabor-enhanced image: window sigma of about
#: one ridge period. The filter has removed most of the noise (pores, dots,
#: sensor noise), so a window a third narrower than the first pass's gives a
#: field several times more accurate on noisy ridges (see ``refine_orientation``).
REFINED_ORIENTATION_SIGMA_PX = 9.0
#: Spectral ridge-period estimation: tile size, stride, FFT size, valid band.
FREQ_TILE_PX = 32
FREQ_STRIDE_PX = 24
FREQ_FFT_PX = 48
MIN_PERIOD_PX = 5.0
MAX_PERIOD_PX = 15.0
#: Typical ridge period at 500 ppi (used when no tile gives a valid peak).
DEFAULT_PERIOD_PX = 9.0
#: Oriented Gabor: envelope across the ridge in periods, along the ridge in px.
GABOR_ACROSS_SIGMA_PERIODS = 0.45
GABOR_ALONG_SIGMA_PX = 5.0
#: Binary clean-up: specks and holes smaller than this are removed.
MIN_BLOB_AREA_PX = 25
#: Ridge tracing: the direction point lies this far along the ridge; tracing stops here.
DIRECTION_STEPS_PX = 10
TRACE_STEPS_PX = 24
#: Coherence above which ridge flow counts as clear (image quality).
GOOD_COHERENCE = 0.45
#: Ridge clarity: local mean of |enhanced| (the Gabor response of the unit-std
#: normalised image, i.e. the share of the local signal that is a clean oriented
#: ridge wave), Gaussian window of this sigma ...
CLARITY_SIGMA_PX = 8.0
#: ... and its value on well-defined ridges, :data:`GOOD_CLARITY` (minutia
#: quality saturates there; the bridge rule of :mod:`biomatch.minutia_rules`
#: applies only below it).
#: Foreground area regarded as a full print for image quality: 0.5 x 0.6 in.
FULL_PRINT_AREA_PX = int(0.30 * WORKING_PPI**2)
#: Upper bound on minutiae kept (best quality first).
MAX_MINUTIAE_KEPT = 200
#: Front ends (foreground and first orientation field): "classical" (variance
#: and coherence segmentation, gradient structure tensor; the default, and the
#: only one ``extract`` uses) and "learned" (the ridge model of
#: :mod:`biomatch.ridge_model`; for evaluation: on the FVC B sets it does not yet
#: beat the classical one, see docs/extraction.md).
#: "learned-mask" is the ridge model's foreground only (hysteresis down to
#: :data:`LEARNED_MASK_GROW_LOGIT`), every other stage classical.
FRONT_ENDS = ("classical", "learned", "learned-mask")
#: The extractor of each front end, as audit records and benchmarks name it.
EXTRACTOR_VERSIONS = {"classical": EXTRACTOR_VERSION, "learned": EXTRACTOR_VERSION + "+learned-front-end",
                      "learned-mask": EXTRACTOR_VERSION + "+learned-mask"}
#: Foreground logit the "learned-mask" front end grows its core down to: the
#: network's 0.5-probability mask is too tight for matching, on held-out
#: synthetic renders as on real prints (docs/extraction.md has the sweep).
LEARNED_MASK_GROW_LOGIT = -3.0
#: Gain on the ridge logit before tanh (the learned ridge map's scale, in (-1, 1)).
RIDGE_LOGIT_GAIN = 0.25


@dataclass(frozen=True)
class Extraction:
    """A template with the intermediate images it came from (500 ppi working frame).

    Attributes
    ----------
    template : Template
        The result, minutiae in the original pixel frame.
    image : FingerImage
        The input as read.
    scale : float
        Working-to-original factor: ``x_orig = (x_work + 0.5) * scale - 0.5``.
    mask : ndarray of bool, shape (h, w)
        Foreground.
    orientation : ndarray of float32, shape (h, w)
        Ridge orientation in radians, image frame (x right, y down), in [0, pi):
        the second-pass field (``refine_orientation``) that the final
        enhancement and the minutia directions used.
    coherence : ndarray of float32, shape (h, w)
        Orientation coherence of the first pass (local window), 0 (isotropic)
        to 1 (perfectly oriented).
    period : ndarray of float32, shape (h, w)
        Ridge period in pixels.
    enhanced : ndarray of float32, shape (h, w)
        Gabor-enhanced image, ridges positive.
    skeleton : ndarray of uint8, shape (h, w)
        One-pixel ridge skeleton (1 = ridge).
    """

    template: Template
    image: FingerImage
    scale: float
    mask: np.ndarray
    orientation: np.ndarray
    coherence: np.ndarray
    period: np.ndarray
    enhanced: np.ndarray
    skeleton: np.ndarray

    @property
    def frequency(self) -> np.ndarray:
        """Ridge frequency in cycles per pixel, ndarray of float32, shape (h, w)."""
        return (1.0 / self.period).astype(np.float32)


# ---------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------
def extract_detailed(image, ppi: float | None = None, position: int = 0, *, front_end: str = "classical") -> Extraction:
    """Extract minutiae and keep every intermediate stage.

    Parameters
    ----------
    image : str, os.PathLike, bytes, ndarray of uint8 (h, w) or FingerImage
        The finger image (ridges dark).
    ppi : float, optional
        Resolution when the image states none (see :func:`biomatch.io.read_image`).
    position : int
        Finger position, ANSI/NIST-ITL FGP code 0-10.
    front_end : {"classical", "learned", "learned-mask"}
        Which stages find the foreground and the first orientation field (see
        :data:`FRONT_ENDS`); the enhancement, thinning and minutia rules are shared.

    Returns
    -------
    Extraction

    Raises
    ------
    ImageError
        Unreadable input, no foreground, or a foreground too small to hold a print.
    TemplateError
        ``position`` is not a finger position code.
    """
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or int(position) not in FINGER_POSITIONS:
        raise TemplateError(f"finger position {position!r} is not an ANSI/NIST-ITL FGP code 0-10")
    finger = image if isinstance(image, FingerImage) else read_image(image, ppi=ppi)
    pixels, scale = to_working_resolution(finger)
    gray = 255.0 - pixels.astype(np.float32)  # ridges bright from here on

    if front_end not in FRONT_ENDS:
        raise BiomatchError(f"front_end must be one of {', '.join(FRONT_ENDS)}, got {front_end!r}")
    normalized, local_std = normalize(gray)
    if front_end == "learned":
        mask, ridge_map, orientation, coherence = learned_front_end(pixels, finger.name)
        _require_ridge_flow(mask, orientation_field(normalized)[1], finger.name)
        period, period_ok = ridge_period(ridge_map, mask)
    else:
        orientation, coherence = orientation_field(normalized)
        if front_end == "learned-mask":
            mask, _ = _network_mask(pixels, finger.name, LEARNED_MASK_GROW_LOGIT)
            _require_ridge_flow(mask, coherence, finger.name)
        else:
            mask = segment(local_std, coherence, finger.name)
        period, period_ok = ridge_period(normalized, mask)
    enhanced = enhance(normalized, mask, orientation, period)
    orientation = refine_orientation(enhanced, mask, orientation)
    enhanced = enhance(normalized, mask, orientation, period)
    ridges = binarize(enhanced, mask)
    skeleton = thin(ridges)
    border_distance = distance_to_border(mask)
    clarity = ridge_clarity(enhanced)
    raw = detect(skeleton, mask, orientation)
    minutiae = remove_false(raw, mask, border_distance, period, clarity)
    minutiae_quality = minutia_quality(minutiae, coherence, clarity, border_distance, period)
    image_quality = print_quality(mask, coherence, period_ok)

    template = _to_template(minutiae, minutiae_quality, finger, scale, position, image_quality)
    return Extraction(template, finger, scale, mask, orientation, coherence, period, enhanced, skeleton)


def extract(image, ppi: float | None = None, position: int = 0) -> Template:
    """Extract a minutiae template from a finger image.

    Parameters
    ----------
    image : str, os.PathLike, bytes, ndarray of uint8 (h, w) or FingerImage
        The finger image (ridges dark).
    ppi : float, optional
        Resolution when the image states none.
    position : int
        Finger position, ANSI/NIST-ITL FGP code 0-10.

    Returns
    -------
    Template
        Minutiae in the original pixel frame; ``quality`` is the image quality
        0-100 (see :func:`print_quality`).
    """
    return extract_detailed(image, ppi=ppi, position=position).template


# ---------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------
def normalize(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local contrast normalisation.

    Parameters
    ----------
    gray : ndarray of float32, shape (h, w)
        Ridges bright.

    Returns
    -------
    normalized : ndarray of float32, shape (h, w)
        ``(gray - local mean) / local std``.
    local_std : ndarray of float32, shape (h, w)
        Local gray-level standard deviation.
    """
    # Box windows (O(1) per pixel) are enough for a normalisation window.
    mean = flt.uniform_filter(gray, NORMALIZE_WINDOW_PX)
    centered = gray - mean
    var = flt.uniform_filter(centered * centered, NORMALIZE_WINDOW_PX)
    local_std = np.sqrt(np.maximum(var, 0.0)).astype(np.float32)
    normalized = (centered / np.maximum(local_std, 1.0)).astype(np.float32)
    return normalized, local_std


def segment(local_std: np.ndarray, coherence: np.ndarray, name: str = "image") -> np.ndarray:
    """Foreground mask from block-wise gray-level variance and ridge-flow coherence.

    A block is foreground when it has contrast (std above a share of the
    image's high percentile and an absolute floor) and oriented texture
    (coherence above :data:`SEGMENT_MIN_COHERENCE`: noise and smudges have
    contrast but no ridge flow). Closing, opening and hole filling restore
    low-coherence areas inside the print (cores, deltas).

    Parameters
    ----------
    local_std : ndarray of float32, shape (h, w)
    coherence : ndarray of float32, shape (h, w)
    name : str
        Input name for error messages.

    Returns
    -------
    ndarray of bool, shape (h, w)

    Raises
    ------
    ImageError
        No foreground, or less than :data:`MIN_FOREGROUND_AREA_PX`.
    """
    h, w = local_std.shape
    b = SEGMENT_BLOCK_PX
    bh, bw = h // b, w // b
    if bh < 3 or bw < 3:
        raise ImageError(f"{name}: image {w}x{h} px at 500 ppi is too small to hold a print")
    blocks = local_std[: bh * b, : bw * b].reshape(bh, b, bw, b).mean(axis=(1, 3))
    coh = coherence[: bh * b, : bw * b].reshape(bh, b, bw, b).mean(axis=(1, 3))
    threshold = max(SEGMENT_REL_STD * flt.percentile(blocks, 95), SEGMENT_MIN_STD_GRAY)
    fg = (blocks > threshold) & (coh > SEGMENT_MIN_COHERENCE)
    r = SEGMENT_CLOSE_BLOCKS
    disk = _disk(r)
    fg = np.pad(fg, r + 1)
    fg = flt.binary_closing(fg, disk)
    fg = flt.binary_opening(fg, disk)[r + 1 : -r - 1, r + 1 : -r - 1]
    fg = flt.largest_region(fg)
    if fg is None:
        raise ImageError(f"{name}: no fingerprint foreground found (no ridge texture above the background)")
    fg = flt.fill_holes(fg)
    mask = np.zeros((h, w), dtype=bool)
    mask[: bh * b, : bw * b] = np.repeat(np.repeat(fg, b, axis=0), b, axis=1)
    # Smooth the block staircase (box blur, threshold a little above one half
    # so the edge lies slightly inside the print).
    mask = flt.uniform_filter(mask.astype(np.float32), 2 * b + 1) > 0.6
    area = int(mask.sum())
    if area < MIN_FOREGROUND_AREA_PX:
        raise ImageError(
            f"{name}: fingerprint foreground of {area} px at 500 ppi is too small "
            f"(at least {MIN_FOREGROUND_AREA_PX} px = 0.04 sq in needed)"
        )
    return mask


def orientation_field(normalized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge orientation and coherence from the smoothed gradient structure tensor.

    The orientation uses a window of :data:`ORIENTATION_SIGMA_PX` (robust to
    noise and broken ridges), the coherence the local window
    :data:`COHERENCE_SIGMA_PX`.

    Returns
    -------
    orientation : ndarray of float32, shape (h, w)
        Ridge direction in radians in [0, pi), image frame (x right, y down).
    coherence : ndarray of float32, shape (h, w)
        ``sqrt((gxx - gyy)^2 + 4 gxy^2) / (gxx + gyy)``, 0-1.
    """
    h, w = normalized.shape
    fine = _half_resolution_tensor(normalized, COHERENCE_SIGMA_PX)
    _, coherence = _tensor_orientation(fine)
    # Gaussians compose: the wide window is the local one smoothed by sqrt(s_o^2 - s_c^2).
    extra = np.sqrt(max(ORIENTATION_SIGMA_PX**2 - COHERENCE_SIGMA_PX**2, 0.0)) / 2.0
    wide = [flt.gaussian_filter(g, extra, truncate=2.5, mode="nearest") for g in fine] if extra > 0 else fine
    orientation, _ = _tensor_orientation(wide)
    return _double(orientation, h, w), _double(coherence, h, w)


def refine_orientation(enhanced: np.ndarray, mask: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Ridge orientation re-estimated on the Gabor-enhanced image.

    The first field needs a wide window (:data:`ORIENTATION_SIGMA_PX`, 1.5
    ridge periods) to stand against pores, creases, dotted ridges and noise,
    and it still wanders where the noise is strong; the Gabor filter averages
    along the ridge and passes only the ridge frequency across it, so the
    structure tensor of its output, over the narrower window
    :data:`REFINED_ORIENTATION_SIGMA_PX`, is far steadier (on a grating under
    noise of twice the ridge contrast, median error 2-3 deg -> about 0.5 deg).
    This is the second pass of iterative contextual filtering: the filter then
    runs again with this field. Outside the mask the first field is kept.

    Returns
    -------
    ndarray of float32, shape (h, w)
        Ridge direction in radians in [0, pi), image frame (x right, y down).
    """
    h, w = enhanced.shape
    refined, _ = _tensor_orientation(_half_resolution_tensor(enhanced, REFINED_ORIENTATION_SIGMA_PX))
    return np.where(mask, _double(refined, h, w), orientation).astype(np.float32)


def ridge_period(normalized: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge period per pixel from the spectra of overlapping tiles.

    Each tile of :data:`FREQ_TILE_PX` (Hann-windowed, zero-padded to
    :data:`FREQ_FFT_PX`) gives the radius of its spectral peak within the band
    of plausible ridge periods; tiles outside the mask or without a dominant
    peak are filled with the median of the valid ones.

    Returns
    -------
    period : ndarray of float32, shape (h, w)
        Ridge period in pixels.
    tile_ok : ndarray of bool, shape (th, tw)
        Tiles inside the print whose spectrum gave a valid, dominant peak.
    """
    h, w = normalized.shape
    t, st, n = FREQ_TILE_PX, FREQ_STRIDE_PX, FREQ_FFT_PX
    tiles = np.lib.stride_tricks.sliding_window_view(normalized, (t, t))[::st, ::st]
    mtiles = np.lib.stride_tricks.sliding_window_view(mask, (t, t))[::st, ::st]
    th, tw = tiles.shape[:2]
    window = np.outer(np.hanning(t), np.hanning(t)).astype(np.float32)
    spec = np.abs(np.fft.rfft2(tiles * window, s=(n, n))) ** 2
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    radius = np.hypot(fy, fx)
    band = np.flatnonzero((radius >= 1.0 / MAX_PERIOD_PX) & (radius <= 1.0 / MIN_PERIOD_PX))
    spec = spec.reshape(th, tw, -1)
    flat = spec[..., band]
    peak_power = flat.max(axis=-1)
    # Sub-bin radius: power-weighted radius over the band, weights sharpened (P^4).
    wts = (flat / np.maximum(peak_power[..., None], 1e-12)) ** 4
    r = (wts @ radius.ravel()[band].astype(np.float32)) / np.maximum(wts.sum(axis=-1), 1e-12)
    total = spec.sum(axis=-1) - spec[..., 0]
    dominance = flat.sum(axis=-1) / np.maximum(total, 1e-12)
    inside = mtiles.mean(axis=(2, 3)) > 0.5
    tile_ok = inside & (dominance > 0.5) & (r > 0)
    periods = np.where(tile_ok, 1.0 / np.maximum(r, 1e-6), np.nan)
    fill = flt.median(periods[tile_ok]) if tile_ok.any() else DEFAULT_PERIOD_PX
    periods = np.where(tile_ok, periods, fill)
    periods = flt.gaussian_filter(periods, 1.0, mode="nearest")
    # Tile (i, j) is centred on pixel (i*st + t/2, j*st + t/2); interpolate to pixels.
    yy = (np.arange(h, dtype=np.float32) - (t / 2 - 0.5)) / st
    xx = (np.arange(w, dtype=np.float32) - (t / 2 - 0.5)) / st
    yy = np.clip(yy, 0, th - 1)
    xx = np.clip(xx, 0, tw - 1)
    period = _bilinear_grid(periods, yy, xx)
    return np.clip(period, MIN_PERIOD_PX, MAX_PERIOD_PX).astype(np.float32), tile_ok


def enhance(normalized: np.ndarray, mask: np.ndarray, orientation: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Oriented Gabor filtering with per-pixel orientation and period.

    Returns
    -------
    ndarray of float32, shape (h, w)
        Ridges positive, valleys negative, 0 outside the mask.
    """
    from . import _native

    return _native.oriented_filter(
        np.ascontiguousarray(normalized, dtype=np.float32),
        np.ascontiguousarray(mask, dtype=np.uint8),
        np.ascontiguousarray(orientation, dtype=np.float32),
        np.ascontiguousarray(period, dtype=np.float32),
        GABOR_ACROSS_SIGMA_PERIODS,
        GABOR_ALONG_SIGMA_PX,
    )


def learned_front_end(pixels: np.ndarray, name: str = "image") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Foreground, ridges, orientation and coherence from the learned ridge model.

    The network (:mod:`biomatch.ridge_model`) gives ridge and foreground
    logits at 250 ppi; both are expanded bilinearly to the working frame. The
    ridge map is ``tanh(RIDGE_LOGIT_GAIN * logit)`` inside the foreground;
    orientation and coherence come from its structure tensor in a window of
    :data:`REFINED_ORIENTATION_SIGMA_PX`, and the ridge period from its spectra.
    The Gabor enhancement then runs on the image with this mask, orientation
    and period (the ridge map itself has pixel noise that the oriented filter
    removes: thinned directly, it gave several times the EER).

    Returns
    -------
    mask : ndarray of bool, shape (h, w)
    enhanced : ndarray of float32, shape (h, w)
        Ridges positive, in (-1, 1), 0 outside the mask.
    orientation : ndarray of float32, shape (h, w)
        Radians in [0, pi), image frame (x right, y down).
    coherence : ndarray of float32, shape (h, w)

    Raises
    ------
    ImageError
        No foreground, or less than :data:`MIN_FOREGROUND_AREA_PX`.
    """
    from .ridge_model import upsample

    h, w = pixels.shape
    mask, ridge_logit = _network_mask(pixels, name, None)
    enhanced = np.where(mask, np.tanh(RIDGE_LOGIT_GAIN * upsample(ridge_logit, h, w)), 0.0).astype(np.float32)
    orientation, coherence = _tensor_orientation(_half_resolution_tensor(enhanced, REFINED_ORIENTATION_SIGMA_PX))
    return mask, enhanced, _double(orientation, h, w), _double(coherence, h, w)


def _network_mask(pixels, name, grow_logit):
    from .ridge_model import network_foreground

    return network_foreground(pixels, name, grow_logit, 3 * SEGMENT_BLOCK_PX, MIN_FOREGROUND_AREA_PX)


def _require_ridge_flow(mask, coherence, name):
    # The network reads strong noise as foreground; the image's own ridge flow (the classical texture test's
    # coherence) must fill MIN_FOREGROUND_AREA_PX of it: noise gives 2-4k px, FVC B prints at least 33k.
    if np.count_nonzero(mask & (coherence > SEGMENT_MIN_COHERENCE)) < MIN_FOREGROUND_AREA_PX:
        raise ImageError(f"{name}: no fingerprint foreground found (the network's foreground has no ridge flow)")


def binarize(enhanced: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Ridge pixels: enhanced > 0 inside the mask, specks and small holes removed.

    Returns
    -------
    ndarray of uint8, shape (h, w), values 0/1
    """
    ridges = (enhanced > 0) & mask
    ridges = _remove_small(ridges, MIN_BLOB_AREA_PX)
    holes = _remove_small(~ridges & mask, MIN_BLOB_AREA_PX)
    ridges = mask & ~holes
    return ridges.astype(np.uint8)


def thin(ridges: np.ndarray) -> np.ndarray:
    """Thin a 0/1 ridge image to an 8-connected skeleton one pixel wide.

    Parameters
    ----------
    ridges : ndarray of uint8 or bool, shape (h, w)

    Returns
    -------
    ndarray of uint8, shape (h, w), values 0/1
    """
    from . import _native

    return _native.thin(np.ascontiguousarray(ridges, dtype=np.uint8))


def ridge_clarity(enhanced: np.ndarray) -> np.ndarray:
    """Local ridge clarity: Gaussian-weighted mean of ``|enhanced|``.

    The enhanced image is the oriented Gabor response of the contrast-normalised
    image (unit local std), so this is the share of the local signal explained
    by a clean ridge wave of the estimated orientation and period: 0.3-0.5 on
    clear ridges of real prints (0.66 on a clean grating), falling on dotted,
    broken or smudged ridges, about 0.06 on white noise.
    Computed at half resolution (it is smooth at this scale).

    Returns
    -------
    ndarray of float32, shape (h, w)
    """
    h, w = enhanced.shape
    c = flt.gaussian_filter(_half(np.abs(enhanced)), CLARITY_SIGMA_PX / 2.0, truncate=2.5, mode="constant")
    return _double(c.astype(np.float32), h, w)


def distance_to_border(mask: np.ndarray) -> np.ndarray:
    """Distance in pixels from each foreground pixel to the background (or image edge).

    Computed at half resolution (the rules using it work at ridge-period
    scale, so one pixel of error does not matter).

    Returns
    -------
    ndarray of float32, shape (h, w)
    """
    h, w = mask.shape
    half = np.pad(mask[::2, ::2], 1)
    dist = flt.distance_to_zero(half)[1:-1, 1:-1].astype(np.float32) * 2.0
    return _double(dist, h, w)


def detect(skeleton: np.ndarray, mask: np.ndarray, orientation: np.ndarray) -> dict:
    """Minutiae candidates by crossing number, with directions and ridge traces.

    Returns
    -------
    dict of arrays, one row per candidate
        ``y``, ``x`` (int32, working frame), ``type`` (uint8, 1 ending, 2
        bifurcation), ``angle`` (float64, radians, y up), ``branches``
        (int32, shape (n, 3, 6), see ``_native.trace_branches``).
    """
    from . import _native

    skel = np.ascontiguousarray(skeleton, dtype=np.uint8)
    m8 = np.ascontiguousarray(mask, dtype=np.uint8)
    rows = _native.detect_minutiae(skel, m8)
    branches = _native.trace_branches(skel, m8, rows, DIRECTION_STEPS_PX, TRACE_STEPS_PX)
    y, x, kind = rows[:, 0], rows[:, 1], rows[:, 2].astype(np.uint8)
    # Direction of each branch in the y-up frame.
    vy = -(branches[:, :, 0] - y[:, None]).astype(np.float64)
    vx = (branches[:, :, 1] - x[:, None]).astype(np.float64)
    valid = branches[:, :, 5] > 0
    branch_angle = np.arctan2(vy, vx)
    angle = branch_angle[:, 0].copy()
    bif = np.flatnonzero(kind == 2)
    if bif.size:
        a = branch_angle[bif]
        ok = valid[bif]
        # the two arms are the pair of branches with the smallest angle between them
        best = np.full(bif.size, np.inf)
        bis = np.zeros(bif.size)
        for i, j in ((0, 1), (0, 2), (1, 2)):
            gap = np.abs(np.angle(np.exp(1j * (a[:, i] - a[:, j]))))
            gap = np.where(ok[:, i] & ok[:, j], gap, np.inf)
            better = gap < best
            mid = np.angle(np.exp(1j * a[:, i]) + np.exp(1j * a[:, j]))
            best = np.where(better, gap, best)
            bis = np.where(better, mid, bis)
        angle[bif] = bis
    # Refine by the orientation field: the ridge line through the minutia, in
    # the sense given by the trace.
    theta = -orientation[y, x].astype(np.float64)  # image y down -> y up
    use_flipped = np.cos(angle - theta) < 0
    refined = np.where(use_flipped, theta + np.pi, theta)
    return {"y": y, "x": x, "type": kind, "angle": np.mod(refined, 2 * np.pi), "branches": branches}


def minutia_quality(
    minutiae: dict, coherence: np.ndarray, clarity: np.ndarray, border_distance: np.ndarray, period: np.ndarray
) -> np.ndarray:
    """Per-minutia quality 0-100: local orientation coherence times ridge clarity
    (relative to :data:`GOOD_CLARITY`), reduced near the mask border.

    Returns
    -------
    ndarray of uint8, shape (n,)
    """
    y, x = minutiae["y"], minutiae["x"]
    if y.size == 0:
        return np.zeros(0, dtype=np.uint8)
    reach = np.clip(border_distance[y, x] / (3.0 * period[y, x]), 0.0, 1.0)
    clear = np.clip(clarity[y, x] / GOOD_CLARITY, 0.0, 1.0)
    q = 100.0 * np.clip(coherence[y, x], 0.0, 1.0) * clear * (0.5 + 0.5 * reach)
    return np.clip(np.rint(q), 1, 100).astype(np.uint8)


def print_quality(mask: np.ndarray, coherence: np.ndarray, tile_ok: np.ndarray) -> int:
    """Image quality 0-100 for retake decisions.

    The share of a full print's area (:data:`FULL_PRINT_AREA_PX`, or the
    foreground when larger) that shows clear ridge flow: foreground pixels whose
    orientation coherence is at least :data:`GOOD_COHERENCE`, weighted by the
    share of foreground tiles with a dominant spectral peak in the ridge-period
    band (a consistent ridge frequency). Small prints, smudged or noisy areas
    and ridge-less foreground all lower it.
    """
    area = float(mask.sum())
    if area == 0:
        return 0
    clear = float((mask & (coherence >= GOOD_COHERENCE)).sum())
    score = 100.0 * clear / max(area, FULL_PRINT_AREA_PX) * _freq_consistency(tile_ok, mask)
    return int(np.clip(np.rint(score), 0, 100))


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _freq_consistency(tile_ok: np.ndarray, mask: np.ndarray) -> float:
    t, st = FREQ_TILE_PX, FREQ_STRIDE_PX
    inside = np.lib.stride_tricks.sliding_window_view(mask, (t, t))[::st, ::st].mean(axis=(2, 3)) > 0.5
    if not inside.any():
        return 0.0
    return float(tile_ok[inside].mean())


def _to_template(minutiae, quality, finger: FingerImage, scale: float, position: int, image_quality: int) -> Template:
    order = np.argsort(-quality.astype(np.int64), kind="stable")[:MAX_MINUTIAE_KEPT]
    x = (minutiae["x"][order] + 0.5) * scale - 0.5
    y = (minutiae["y"][order] + 0.5) * scale - 0.5
    x = np.clip(x, 0, finger.width - 1)
    y = np.clip(y, 0, finger.height - 1)
    kind = np.where(minutiae["type"][order] == 1, int(MinutiaType.ENDING), int(MinutiaType.BIFURCATION))
    records = make_minutiae(x, y, minutiae["angle"][order], kind, quality[order])
    return Template(records, finger.width, finger.height, finger.ppi, position, image_quality)


def _remove_small(binary: np.ndarray, min_area: int) -> np.ndarray:
    labels, n = flt.label(binary)
    if n == 0:
        return binary
    sizes = np.bincount(labels.ravel())
    small = sizes < min_area
    small[0] = False
    return binary & ~small[labels]


def _half_resolution_tensor(image: np.ndarray, sigma_px: float) -> list:
    """Gradient structure tensor (gxx, gyy, gxy) smoothed by a Gaussian of ``sigma_px``, at half resolution.

    The tensor is smooth at this scale: it is averaged over 2x2 blocks and
    smoothed at half resolution (4x less work than at full resolution);
    ``_double`` expands what is computed from it back.
    """
    gx = flt.gaussian_filter(image, GRADIENT_SIGMA_PX, order=(0, 1), truncate=3.0)
    gy = flt.gaussian_filter(image, GRADIENT_SIGMA_PX, order=(1, 0), truncate=3.0)
    return [
        flt.gaussian_filter(_half(g), sigma_px / 2.0, truncate=2.5, mode="nearest")
        for g in (gx * gx, gy * gy, gx * gy)
    ]


def _tensor_orientation(tensor) -> tuple[np.ndarray, np.ndarray]:
    """Ridge orientation in [0, pi) and coherence of a smoothed structure tensor (gxx, gyy, gxy)."""
    gxx, gyy, gxy = tensor
    diff = gxx - gyy
    orientation = np.mod(0.5 * np.arctan2(2.0 * gxy, diff) + np.pi / 2, np.pi).astype(np.float32)
    coherence = (np.hypot(diff, 2.0 * gxy) / np.maximum(gxx + gyy, 1e-6)).astype(np.float32)
    return orientation, coherence


def _half(a: np.ndarray) -> np.ndarray:
    """Mean over 2x2 blocks (edge row/column replicated for odd sizes)."""
    h, w = a.shape
    a = np.pad(a, ((0, h % 2), (0, w % 2)), mode="edge")
    return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def _double(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Expand a half-resolution map back to (h, w) by pixel replication."""
    return np.ascontiguousarray(np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)[:h, :w])


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius


def _bilinear_grid(grid: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Separable bilinear interpolation of a small grid at row coords yy and column coords xx."""
    y0 = np.minimum(np.floor(yy).astype(np.int64), grid.shape[0] - 1)
    x0 = np.minimum(np.floor(xx).astype(np.int64), grid.shape[1] - 1)
    y1 = np.minimum(y0 + 1, grid.shape[0] - 1)
    x1 = np.minimum(x0 + 1, grid.shape[1] - 1)
    fy = (yy - y0)[:, None]
    fx = (xx - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy
