"""Local minutia descriptors: bit-based Minutia Cylinder-Code (MCC).

Each minutia gets a *cylinder* (Cappelli, Ferrara, Maltoni, "Minutia
Cylinder-Code: a new representation and matching technique for fingerprint
recognition", IEEE TPAMI 32(12), 2010): a disc of radius
:data:`RADIUS_PX` centred on the minutia and rotated with its direction,
divided into :data:`N_SPATIAL` x :data:`N_SPATIAL` cells and
:data:`N_DIRECTIONAL` direction layers. A cell's bit says whether
neighbouring minutiae near the cell centre have a direction (relative to the
central minutia) falling in that layer. The representation is invariant to
translation and rotation and, being local, tolerant to skin distortion and
partial overlap. A cell is *valid* when it lies inside the convex hull of the
template's minutiae enlarged by :data:`HULL_MARGIN_PX`; similarity is only
taken over cells valid in both cylinders.

Gallery-facing API
------------------
:func:`encode` returns :class:`Features`, cached on the template:

- ``Features.bits``: uint8 (n, :data:`DESCRIPTOR_BYTES`), one bit-packed
  cylinder per minutia, usable directly by ``faiss.IndexBinaryFlat`` /
  ``IndexBinaryIVF`` (:data:`DESCRIPTOR_BYTES` * 8 bits, a multiple of 64).
  Layout: bit ``c * N_DIRECTIONAL + k`` (little-endian) is cell c, layer k.
  Bits are zero outside valid cells, so Hamming distance between two rows is
  a (cruder) dissimilarity; the matcher itself uses the MCC normalised
  similarity with the common-validity mask.
- ``Features.valid``: bool (n,), cylinders with enough valid cells and
  neighbours; only valid cylinders take part in matching (index only those).
- ``Features.mask``: uint8 (n, :data:`MASK_BYTES`), valid cells of the base.
- ``Features.xy``/``Features.angle``: positions (500 ppi, y up) and directions
  used by the global-consistency stage of :mod:`biomatch.scoring`.

All lengths are at 500 ppi; templates at other resolutions are rescaled
before encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import TemplateError
from .template import Template

__all__ = [
    "Features",
    "encode",
    "DESCRIPTOR_BYTES",
    "MASK_BYTES",
    "DESCRIPTOR_VERSION",
]

# ---------------------------------------------------------------------------
# Parameters (MCC paper, Table 1; bit-based variant "MCC16b")
# ---------------------------------------------------------------------------
#: Version of the descriptor definition; changes whenever a bit changes meaning.
DESCRIPTOR_VERSION = "mcc16b-2"
#: Working resolution of every length below.
DESCRIPTOR_PPI = 500.0
#: Cylinder radius.
RADIUS_PX = 70.0
#: Cells along the cylinder base diameter.
N_SPATIAL = 16
#: Direction layers.
N_DIRECTIONAL = 6
#: Spatial contribution Gaussian std.
SIGMA_S_PX = 28.0 / 3.0
#: Directional contribution Gaussian std (radians).
SIGMA_D_RAD = 2.0 * math.pi / 9.0
#: A cell's bit is set when its summed contribution exceeds this (mu_psi).
PSI_THRESHOLD = 0.01
#: Cells farther than this from the minutiae convex hull are invalid (Omega).
HULL_MARGIN_PX = 50.0
#: A cylinder is valid when at least this fraction of its cells is valid ...
MIN_VALID_CELL_FRACTION = 0.75
#: ... and at least this many other minutiae lie within RADIUS_PX + 3 sigma_s.
MIN_NEIGHBOURS = 2

CELL_SIZE_PX = 2.0 * RADIUS_PX / N_SPATIAL


def _cell_layout():
    half = (N_SPATIAL - 1) / 2.0
    uv = []
    for j in range(N_SPATIAL):
        for i in range(N_SPATIAL):
            u, v = i - half, j - half
            if u * u + v * v <= (N_SPATIAL / 2.0) ** 2:
                uv.append((u, v))
    uv = np.asarray(uv, dtype=np.float64)
    idx = np.arange(len(uv))
    return uv, idx // 64, idx % 64


CELL_UV, _CELL_WORD, _CELL_BIT = _cell_layout()
#: Cells of the cylinder base whose centre lies within RADIUS_PX.
N_CELLS = int(CELL_UV.shape[0])
#: uint64 words of the validity mask (one bit per cell).
PLANE_WORDS = (N_CELLS + 63) // 64
#: uint64 words of one packed cylinder: bit c * N_DIRECTIONAL + k is cell c, layer k.
DESCRIPTOR_WORDS = (N_CELLS * N_DIRECTIONAL + 63) // 64
#: Bytes of one packed cylinder.
DESCRIPTOR_BYTES = DESCRIPTOR_WORDS * 8
#: Bytes of one cylinder's validity mask.
MASK_BYTES = PLANE_WORDS * 8


@dataclass(frozen=True, eq=False)
class Features:
    """Descriptors of one template (see the module docstring).

    Attributes
    ----------
    bits : ndarray of uint8, shape (n, DESCRIPTOR_BYTES)
        Bit-packed cylinders (little-endian bit order, as ``np.unpackbits(...,
        bitorder="little")`` reads them): bit ``c * N_DIRECTIONAL + k`` is
        cell c (row of :data:`CELL_UV`), direction layer k; the rest is zero.
    mask : ndarray of uint8, shape (n, MASK_BYTES)
        Valid cells of each cylinder base (bit c = cell c).
    valid : ndarray of bool, shape (n,)
        Whether each cylinder takes part in matching.
    xy : ndarray of float32, shape (n, 2)
        Minutia positions at 500 ppi in a y-up frame.
    angle : ndarray of float32, shape (n,)
        Minutia directions, radians counter-clockwise (as in the template).
    quality : ndarray of float32, shape (n,)
        Minutia qualities 0-100 as in the template (0 everywhere: not reported).
    version : str
        :data:`DESCRIPTOR_VERSION`.
    """

    bits: np.ndarray
    mask: np.ndarray
    valid: np.ndarray
    xy: np.ndarray
    angle: np.ndarray
    quality: np.ndarray
    version: str = DESCRIPTOR_VERSION

    def __len__(self) -> int:
        return int(self.valid.size)

    @property
    def n_valid(self) -> int:
        """Number of valid cylinders."""
        return int(np.count_nonzero(self.valid))


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise hull vertices (h, 2); degenerate sets give the points themselves."""
    if len(points) >= 3:
        from ._hull import hull_indices

        vertices, ok = hull_indices(points)
        if ok:  # the vertices Qhull gives (the starting one aside, which the hull tests ignore)
            return np.ascontiguousarray(points[vertices])
        from scipy.spatial import ConvexHull, QhullError

        try:
            hull = ConvexHull(points)
            return np.ascontiguousarray(points[hull.vertices])  # 2-D: counter-clockwise
        except QhullError:
            pass
    # fewer than 3 points or collinear: the points in order along their spread
    if len(points) == 0:
        return np.zeros((0, 2))
    centred = points - points.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0] if len(points) > 1 else np.array([1.0, 0.0])
    order = np.argsort(centred @ direction)
    return np.ascontiguousarray(points[order])


def encode(template: Template) -> Features:
    """MCC cylinders of every minutia of ``template`` (cached on the template).

    Parameters
    ----------
    template : Template

    Returns
    -------
    Features
    """
    if not isinstance(template, Template):
        raise TemplateError(f"template: expected a biomatch Template, got {type(template).__name__}")
    cached = template._cache.get("features")
    if cached is not None and cached.version == DESCRIPTOR_VERSION:
        return cached
    from ._descriptor_kernels import encode_cylinders

    m = template.minutiae
    scale = DESCRIPTOR_PPI / template.ppi
    xy = np.empty((m.size, 2), dtype=np.float64)
    xy[:, 0] = m["x"].astype(np.float64) * scale
    xy[:, 1] = -m["y"].astype(np.float64) * scale  # y up, so angles keep their sense
    theta = m["angle"].astype(np.float64)
    hull = _convex_hull(xy)
    bits, mask, valid = encode_cylinders(
        xy,
        theta,
        hull,
        CELL_UV,
        _CELL_WORD,
        _CELL_BIT,
        N_DIRECTIONAL,
        PLANE_WORDS,
        DESCRIPTOR_WORDS,
        RADIUS_PX,
        CELL_SIZE_PX,
        SIGMA_S_PX,
        SIGMA_D_RAD,
        PSI_THRESHOLD,
        HULL_MARGIN_PX,
        MIN_VALID_CELL_FRACTION,
        MIN_NEIGHBOURS,
    )
    features = Features(
        bits=_readonly(bits.view(np.uint8).reshape(m.size, DESCRIPTOR_BYTES)),
        mask=_readonly(mask.view(np.uint8).reshape(m.size, MASK_BYTES)),
        valid=_readonly(valid),
        xy=_readonly(xy.astype(np.float32)),
        angle=_readonly(theta.astype(np.float32)),
        quality=_readonly(m["quality"].astype(np.float32)),
    )
    template._cache["features"] = features
    template._cache.pop("packed", None)  # scoring's packed rows of the old features
    return features


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a
