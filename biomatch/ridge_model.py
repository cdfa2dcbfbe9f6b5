"""The learned ridge model: a small convolutional network that maps a finger image to ridges and foreground.

It replaces the classical enhancement (two oriented Gabor passes with their
orientation and period estimates) and the variance segmentation of
:mod:`biomatch.extraction`. It runs at 250 ppi (half the 500 ppi working
resolution: a ridge period of 7-12 px is 3.5-6 px there, above the sampling
limit), on two input channels made by :func:`network_input`, and gives two
logit maps at the same resolution:

- channel 0, ridge: > 0 on ridges, < 0 in valleys (the clean ridge map of the
  training prints, including across breaks, creases and smudges);
- channel 1, foreground: > 0 where the finger touched the sensor.

Architecture (:data:`ARCHITECTURE`): two 3x3 convolutions at 250 ppi, a
stride-2 convolution to 125 ppi, three 3x3 convolutions there with dilations
1, 2, 4 (a receptive field of about 90 px at 500 ppi, several ridge periods,
enough to bridge a crease or a dry patch), nearest upsampling, concatenation
with the 250 ppi features, a 3x3 and a 1x1 convolution; ReLU after each but
the last. About 39 k weights.

Training (``training/train_ridge_model.py``, the ``biomatch[train]`` extra)
uses only prints made by :mod:`biomatch.synthetic` and
:mod:`biomatch.synthetic_livescan`; docs/extraction.md says which. Inference
runs the shipped ONNX file with onnxruntime on one thread; the file is checked
against :data:`MODEL_SHA256` when it is loaded.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

import numpy as np

from . import _filters as flt
from .errors import BiomatchError, ImageError

__all__ = ["MODEL_VERSION", "MODEL_FILE", "MODEL_SHA256", "ARCHITECTURE", "network_input", "run_network",
           "foreground_mask", "network_foreground", "ModelError"]

#: Version of the shipped weights (named in the extractor version).
MODEL_VERSION = "ridge-1"
#: The weights file inside the package.
MODEL_FILE = "ridge_model.onnx"
#: SHA-256 of :data:`MODEL_FILE`; a file that does not match is refused.
MODEL_SHA256 = "8f18919197e30875eb7aacde02d099bd870b54a3c8763d6ae4112b6b76a22672"
#: Layers: (name, input channels, output channels, kernel, stride, dilation). ``u1``
#: takes the upsampled ``d4`` concatenated with ``e2``; ``out`` has no ReLU.
ARCHITECTURE = (
    ("e1", 2, 16, 3, 1, 1),
    ("e2", 16, 16, 3, 1, 1),
    ("d1", 16, 32, 3, 2, 1),
    ("d2", 32, 32, 3, 1, 1),
    ("d3", 32, 32, 3, 1, 2),
    ("d4", 32, 32, 3, 1, 4),
    ("u1", 48, 16, 3, 1, 1),
    ("out", 16, 2, 1, 1, 1),
)
#: Local normalisation window at 250 ppi (about two ridge periods).
INPUT_WINDOW_PX = 9
#: Normalised input is clipped to this many local standard deviations.
INPUT_CLIP = 4.0
#: Contrast channel scale: local std of the 8-bit gray levels divided by this.
CONTRAST_SCALE_GRAY = 32.0
#: Side lengths are padded to a multiple of this (the stride-2 layer and its upsampling).
SIZE_MULTIPLE_PX = 2


class ModelError(BiomatchError):
    """The shipped ridge model is missing, corrupt or cannot run."""


def half_resolution(gray: np.ndarray) -> np.ndarray:
    """2x2 block mean of a 500 ppi image (odd last row/column dropped).

    Parameters
    ----------
    gray : ndarray of float32, shape (h, w)

    Returns
    -------
    ndarray of float32, shape (h // 2, w // 2)
    """
    h, w = gray.shape
    g = gray[: h // 2 * 2, : w // 2 * 2]
    return g.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3), dtype=np.float32)


def network_input(pixels: np.ndarray) -> np.ndarray:
    """The network's two input channels for a 500 ppi image.

    Parameters
    ----------
    pixels : ndarray of uint8, shape (h, w)
        Finger image at 500 ppi, ridges dark.

    Returns
    -------
    ndarray of float32, shape (2, h // 2, w // 2)
        Channel 0: locally normalised gray (ridges bright, clipped to
        +-:data:`INPUT_CLIP`); channel 1: local contrast (std / :data:`CONTRAST_SCALE_GRAY`).
    """
    g = half_resolution(255.0 - pixels.astype(np.float32))
    mean = flt.uniform_filter(g, INPUT_WINDOW_PX)
    centered = g - mean
    std = np.sqrt(np.maximum(flt.uniform_filter(centered * centered, INPUT_WINDOW_PX), 0.0))
    normalized = np.clip(centered / np.maximum(std, 1.0), -INPUT_CLIP, INPUT_CLIP)
    return np.stack([normalized, std / CONTRAST_SCALE_GRAY]).astype(np.float32)


@lru_cache(maxsize=1)
def _session():
    try:
        data = resources.files("biomatch.data").joinpath(MODEL_FILE).read_bytes()
    except (FileNotFoundError, OSError) as exc:
        raise ModelError(f"ridge model {MODEL_FILE} is missing from the biomatch package ({exc}); reinstall biomatch") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise ModelError(
            f"ridge model {MODEL_FILE} is corrupt or not the one this biomatch ships "
            f"(sha256 {digest[:16]}..., expected {MODEL_SHA256[:16]}...); reinstall biomatch"
        )
    try:
        import onnxruntime as ort
    except ImportError as exc:  # a dependency: only a broken install gets here
        raise ModelError(f"the ridge model needs onnxruntime ({exc})") from None
    options = ort.SessionOptions()
    # One thread: extraction is parallelised across images by the caller, and
    # results must not depend on the thread count.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"ridge model {MODEL_FILE} cannot be loaded ({exc})") from None


def run_network(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge and foreground logits for the output of :func:`network_input`.

    Parameters
    ----------
    inputs : ndarray of float32, shape (2, h, w)

    Returns
    -------
    ridge : ndarray of float32, shape (h, w)
        Ridge logit (> 0 on ridges).
    foreground : ndarray of float32, shape (h, w)
        Foreground logit (> 0 on the print).
    """
    _, h, w = inputs.shape
    m = SIZE_MULTIPLE_PX
    ph, pw = (-h) % m, (-w) % m
    x = np.pad(inputs, ((0, 0), (0, ph), (0, pw)), mode="edge")[None]
    session = _session()
    out = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]
    return out[0, 0, :h, :w], out[0, 1, :h, :w]


def upsample(half: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear expansion of a 250 ppi map to the (h, w) 500 ppi frame (pixel centres aligned).

    Returns
    -------
    ndarray of float32, shape (h, w)
    """
    hh, hw = half.shape

    def axis(n, m):
        c = np.clip((np.arange(n, dtype=np.float32) - 0.5) / 2.0, 0.0, m - 1)
        i0 = np.minimum(np.floor(c).astype(np.int64), m - 1)
        i1 = np.minimum(i0 + 1, m - 1)
        return i0, i1, (c - i0).astype(np.float32)

    y0, y1, fy = axis(h, hh)
    x0, x1, fx = axis(w, hw)
    rows = half[y0] * (1 - fy)[:, None] + half[y1] * fy[:, None]
    return (rows[:, x0] * (1 - fx) + rows[:, x1] * fx).astype(np.float32)


def foreground_mask(foreground_logit: np.ndarray, h: int, w: int, grow_logit: float | None = None) -> np.ndarray:
    """The print's foreground in the (h, w) 500 ppi frame from the network's foreground logit.

    The core is the largest connected region of logit > 0, holes filled.
    With ``grow_logit`` (a negative logit), the mask is hysteresis: the
    connected regions of logit > ``grow_logit`` that hold the core. A looser
    threshold alone would also admit a background region that happens to be
    the largest (latent residue of earlier prints around the print); growing
    from the core keeps only what touches the print.

    Parameters
    ----------
    foreground_logit : ndarray of float32, shape (h // 2, w // 2)
    h, w : int
        The working frame.
    grow_logit : float, optional

    Returns
    -------
    ndarray of bool, shape (h, w); all False when no pixel has logit > 0.
    """
    if grow_logit is None:
        keep = flt.largest_region(foreground_logit > 0)
        if keep is None:
            return np.zeros((h, w), bool)
        # Expand the cleaned half-resolution mask smoothly (bilinear of the logit where kept).
        keep = flt.fill_holes(keep)
        return upsample(np.where(keep, np.maximum(foreground_logit, 0.01), -1.0).astype(np.float32), h, w) > 0
    full = upsample(foreground_logit, h, w)
    core = flt.largest_region(full > 0)
    if core is None:
        return np.zeros((h, w), bool)
    labels, _ = flt.label(full > grow_logit)
    held = np.unique(labels[core])
    return flt.fill_holes(np.isin(labels, held[held > 0]))


def network_foreground(pixels: np.ndarray, name: str, grow_logit: float | None, min_side_px: int,
                       min_area_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the network on a 500 ppi image: its foreground (:func:`foreground_mask`) and ridge logit (250 ppi).

    Raises
    ------
    ImageError
        A side under ``min_side_px``, no foreground, or less than ``min_area_px`` of it.
    """
    h, w = pixels.shape
    if h < min_side_px or w < min_side_px:
        raise ImageError(f"{name}: image {w}x{h} px at 500 ppi is too small to hold a print")
    ridge_logit, foreground_logit = run_network(network_input(pixels))
    mask = foreground_mask(foreground_logit, h, w, grow_logit)
    area = int(mask.sum())
    if area == 0:
        raise ImageError(f"{name}: no fingerprint foreground found (no ridge texture above the background)")
    if area < min_area_px:
        raise ImageError(f"{name}: fingerprint foreground of {area} px at 500 ppi is too small "
                         f"(at least {min_area_px} px = 0.04 sq in needed)")
    return mask, ridge_logit
