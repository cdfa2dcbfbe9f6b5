"""1:1 comparison of templates: MCC local similarities, LSS-R, then a global alignment check.

The score
---------
:func:`verify` and :func:`compare_many` return a *raw similarity* in [0, 1]:
higher means more likely the same finger; a template compared with itself
scores the maximum 1 (when it has at least two valid cylinders); templates
with fewer than two usable minutiae score 0. It is computed as in Cappelli,
Ferrara, Maltoni (IEEE TPAMI 2010), "LSS-R":

1. local similarity of every matchable pair of cylinders (bit-based MCC
   similarity over the cells valid in both; directions within pi/2, so prints
   rotated by more than about 60-90 degrees against each other do not match);
2. the min(nA, nB) most similar pairs, chosen greedily one-to-one (a minutia
   in one pair only), go through :data:`N_RELAX_ITER` rounds of relaxation,
   each pair's similarity being reinforced by the pairs geometrically
   compatible with it (distances, relative directions and radial angles
   agree): a global-consistency check that tolerates distortion;
3. S = the mean relaxed similarity of the nP pairs whose similarity
   survived relaxation best, nP growing from 4 to 12 with the template size;
4. a global stage: each of the :data:`ALIGN_CANDIDATES` most similar
   relaxation candidates proposes the rigid motion superposing its two
   minutiae; the proposal most candidates agree with is refitted by least
   squares on them; under that motion m minutiae pairs agree (mutual nearest
   neighbours within :data:`ALIGN_DISTANCE_PX` and :data:`ALIGN_ANGLE_RAD`),
   and G = m^2 / (nA * nB), nA and nB the minutiae of each template inside
   the other's moved convex hull (at least :data:`OVERLAP_MIN_MINUTIAE`, and
   at least m), each counted with its quality weight (below).
   G in [0, 1] is the fraction of the overlap that agrees, so a small-overlap
   genuine pair is not penalised for the minutiae it cannot share, and
   locally similar but globally inconsistent impostor pairs are;
5. the score is S * sqrt(G).

Quality-weighted overlap
------------------------
In nA and nB a minutia of quality q (0-100, as in the template) counts
w = min(q / :data:`QUALITY_FULL_WEIGHT`, 1): minutiae of quality 50 or more
count fully, lower ones in proportion. Why: the overlap counts are the
denominator of G, and spurious minutiae (dotted or smudged ridges of dry
prints, where the extractor's quality, coherence x ridge clarity, is low)
lie in the overlap without any chance of a mate, so counted fully they
dilute G of genuine pairs. Only the denominator is weighted: m (the agreeing
pairs) is still a count, and the local similarities / LSS-R are unweighted
(weighting m or the LSS-R similarities was worse on FVC2002 and FVC2000,
docs/evaluation/README.md). A template whose qualities are all 0 ("not reported"
in ISO/IEC 19794-2, ANSI 378) gets w = 1 for every minutia, so such
templates score exactly as without weighting. The weights are packed per
row (:attr:`PackedTemplates.overlap_weight`).

Because relaxation averages over all candidate pairs, raw scores are small:
on the FVC "B" sets impostor comparisons score about 0.005-0.02 and most
genuine ones above 0.04. The score is symmetric (``verify(a, b).score ==
verify(b, a).score`` up to ties) and invariant to translation and rotation.

The raw score is not a probability. :attr:`Match.fmr` turns it into the
estimated false match rate (the fraction of impostor comparisons expected to
score at least as high) from the calibration shipped with biomatch
(:func:`biomatch.calibration.default_calibration`).

Gallery-facing API
------------------
``features = descriptors.encode(template)`` once per template, then
``packed = pack([features, ...])`` once per gallery (contiguous arrays of the
valid cylinders) and ``score_packed(probe_features, packed, subset=None)`` to
score a probe against all templates or a subset (int indices into the packed
list), with no Python in the loop. :func:`compare_many` is built on these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import descriptors as _desc
from .errors import BiomatchError, TemplateError
from .template import Template

__all__ = [
    "Match",
    "verify",
    "compare_many",
    "PackedTemplates",
    "pack",
    "score_packed",
    "pairs_packed",
    "MATCHER_VERSION",
]

# ---------------------------------------------------------------------------
# Parameters (MCC paper, LSS-R; lengths at 500 ppi)
# ---------------------------------------------------------------------------
#: Version of the score definition (descriptor version + consolidation).
MATCHER_VERSION = f"{_desc.DESCRIPTOR_VERSION}+lssr-1+align-2"
#: Two cylinders are comparable when they share this fraction of base cells (min_ME).
MIN_COMMON_CELL_FRACTION = 0.60
#: Relaxation rounds (n_rel) and weight of a pair's own previous value (w_R).
N_RELAX_ITER = 5
RELAX_WEIGHT = 0.5
#: Compatibility sigmoids: distance difference (px), direction difference and
#: radial-angle difference (radians): (mu, tau) each.
RHO_DISTANCE_PX = (5.0, -8.0 / 5.0)
RHO_DIRECTION_RAD = (math.pi / 12.0, -30.0)
RHO_RADIAL_RAD = (math.pi / 12.0, -30.0)
#: Pairs averaged into the score: from MIN_PAIRS to MAX_PAIRS along a sigmoid
#: (mu, tau) of min(nA, nB).
MIN_PAIRS = 4
MAX_PAIRS = 12
PAIRS_SIGMOID = (20.0, 2.0 / 5.0)
#: Relaxation candidates are chosen greedily one-to-one (a minutia in one pair only).
ONE_TO_ONE = True
#: Samples of each tabulated compatibility sigmoid, and the largest distance
#: difference tabulated (the distance sigmoid is ~1e-13 there).
COMPAT_TABLE_SIZE = 4096
COMPAT_MAX_DISTANCE_PX = 24.0

#: Global stage (rigid alignment of the whole templates, after LSS-R). Two
#: minutiae agree under an alignment when their distance is at most
#: ALIGN_DISTANCE_PX + ALIGN_DISTANCE_GROWTH * r (r: distance of the pair from
#: the alignment centre, for distortion growing away from it), never more than
#: ALIGN_MAX_DISTANCE_PX, and their directions differ by at most
#: ALIGN_ANGLE_RAD: about 1.5 ridge periods (8-10 px at 500 ppi) and 20
#: degrees, pairing tolerances of the usual size in minutiae matching. A
#: distance tolerance growing with r was tried and not kept (it let FVC2002
#: DB1_B impostors agree more than it helped distorted genuine pairs).
ALIGN_DISTANCE_PX = 12.0
ALIGN_DISTANCE_GROWTH = 0.0
ALIGN_MAX_DISTANCE_PX = 12.0
ALIGN_ANGLE_RAD = math.radians(20.0)
#: Alignments proposed: by each of the ALIGN_CANDIDATES most similar (one-to-one)
#: relaxation candidates alone; the one most candidates agree with is refitted
#: by least squares on those candidates.
ALIGN_CANDIDATES = 10
#: Overlap normalisation: each template's minutiae inside the other's convex
#: hull (enlarged by OVERLAP_MARGIN_PX) after alignment, at least
#: OVERLAP_MIN_MINUTIAE (so that a few chance agreements in a sliver of
#: overlap cannot score as a full match).
OVERLAP_MIN_MINUTIAE = 12
OVERLAP_MARGIN_PX = 0.0
#: Quality (0-100 template scale) from which a minutia counts fully in the
#: overlap counts nA / nB: weight = min(quality / QUALITY_FULL_WEIGHT, 1).
#: A template with every quality 0 (not reported) has weight 1 throughout.
QUALITY_FULL_WEIGHT = 50.0
#: Final score = S_lssr ** FUSION_LOCAL_EXP * G ** FUSION_GLOBAL_EXP (G in [0, 1]).
FUSION_LOCAL_EXP = 1.0
FUSION_GLOBAL_EXP = 0.5

_MIN_COMMON_CELLS = int(math.ceil(MIN_COMMON_CELL_FRACTION * _desc.N_CELLS))
_PARAMS = np.array(
    [
        N_RELAX_ITER,
        RELAX_WEIGHT,
        (COMPAT_TABLE_SIZE - 1) / COMPAT_MAX_DISTANCE_PX,
        MIN_PAIRS,
        MAX_PAIRS,
        *PAIRS_SIGMOID,
        float(ONE_TO_ONE),
    ],
    dtype=np.float64,
)


_GPARAMS = np.array(
    [
        ALIGN_DISTANCE_PX,
        ALIGN_DISTANCE_GROWTH,
        ALIGN_MAX_DISTANCE_PX,
        math.cos(ALIGN_ANGLE_RAD),
        ALIGN_CANDIDATES,
        OVERLAP_MIN_MINUTIAE,
        OVERLAP_MARGIN_PX,
        FUSION_LOCAL_EXP,
        FUSION_GLOBAL_EXP,
    ],
    dtype=np.float64,
)


def _sigmoid(v, mu, tau):
    return 1.0 / (1.0 + np.exp(-tau * (np.asarray(v, dtype=np.float64) - mu)))


def _compat_tables() -> np.ndarray:
    """The compatibility sigmoids of LSS-R tabulated (each divided by its value at 0,
    so that a perfectly consistent pair of pairs has compatibility 1): row 0 by
    distance difference, rows 1-2 by the cosine of the direction / radial-angle
    difference (the kernel then needs no exp or atan2)."""
    n = COMPAT_TABLE_SIZE
    d = np.linspace(0.0, COMPAT_MAX_DISTANCE_PX, n)
    ang = np.arccos(np.linspace(-1.0, 1.0, n))
    out = np.empty((3, n))
    for row, (x, (mu, tau)) in enumerate(((d, RHO_DISTANCE_PX), (ang, RHO_DIRECTION_RAD), (ang, RHO_RADIAL_RAD))):
        out[row] = _sigmoid(x, mu, tau) / _sigmoid(0.0, mu, tau)
    return out


_COMPAT_TABLES = _compat_tables()


@dataclass(frozen=True)
class Match:
    """Result of :func:`verify`.

    Attributes
    ----------
    score : float
        Raw similarity in [0, 1]; higher = more likely the same finger
        (see the module docstring). Not a probability.
    fmr : float
        Estimated false match rate at this score: the fraction of comparisons
        of different fingers expected to score at least ``score``, from the
        default calibration. When the estimate is below what the calibration
        supports (:attr:`biomatch.calibration.Calibration.fmr_floor`), ``fmr``
        is that floor and ``fmr_is_bound`` is True: FMR <= ``fmr``. NaN when no
        calibration is available.
    pairs : ndarray of int64, shape (m, 2)
        The minutiae pairs the score rests on: those that agree under the
        global stage's final alignment (mutual nearest neighbours within
        :data:`ALIGN_DISTANCE_PX` and :data:`ALIGN_ANGLE_RAD`; the m of G).
        Column 0 indexes ``a.minutiae``, column 1 ``b.minutiae``. A non-match
        has few or none.
    fmr_is_bound : bool
        True when ``fmr`` is an upper bound (the calibration's floor), not an estimate.
    """

    score: float
    fmr: float
    pairs: np.ndarray
    fmr_is_bound: bool = False

    @property
    def n_pairs(self) -> int:
        """Number of minutiae pairs that agree under the final alignment (what the score rests on)."""
        return int(self.pairs.shape[0])

    def to_dict(self) -> dict:
        return {
            "score": round(float(self.score), 6),
            "fmr": None if math.isnan(self.fmr) else float(self.fmr),
            "fmr_is_bound": bool(self.fmr_is_bound),
            "n_pairs": self.n_pairs,
            "pairs": self.pairs.tolist(),
            "matcher_version": MATCHER_VERSION,
        }


@dataclass(frozen=True, eq=False)
class PackedTemplates:
    """Valid cylinders of many templates in contiguous arrays (see :func:`pack`).

    Attributes
    ----------
    bits : ndarray of uint64, shape (N, DESCRIPTOR_BYTES // 8)
    mask : ndarray of uint64, shape (N, MASK_BYTES // 8)
    maskx : ndarray of uint64, shape (N, DESCRIPTOR_BYTES // 8)
        ``mask`` expanded to one bit per value bit of ``bits``.
    geo : ndarray of float64, shape (N, 4)
        x, y (500 ppi, y up), cos(angle), sin(angle).
    theta : ndarray of float64, shape (N,)
    offsets : ndarray of int64, shape (T + 1,)
        Template t owns rows ``offsets[t]:offsets[t+1]``.
    index : ndarray of int32, shape (N,)
        Row -> minutia index inside its template.
    hull_rank : ndarray of int32, shape (N,)
        Position of the row's minutia on the counter-clockwise convex hull of
        its template's valid minutiae, -1 when not a hull vertex.
    overlap_weight : ndarray of float64, shape (N,)
        Weight of the row's minutia in the overlap counts of the global stage,
        from its quality (:func:`overlap_weights`).
    """

    bits: np.ndarray
    mask: np.ndarray
    maskx: np.ndarray
    geo: np.ndarray
    theta: np.ndarray
    offsets: np.ndarray
    index: np.ndarray
    hull_rank: np.ndarray
    overlap_weight: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.size - 1)


def _as_features(obj, name: str) -> "_desc.Features":
    if isinstance(obj, _desc.Features):
        return obj
    if isinstance(obj, Template):
        return _desc.encode(obj)
    raise TemplateError(f"{name}: expected a Template or descriptors.Features, got {type(obj).__name__}")


def pack(features_list: Sequence) -> PackedTemplates:
    """Pack the valid cylinders of many templates once, for :func:`compare_many` and
    :func:`score_packed`.

    Pack a gallery once and pass the result to every :func:`compare_many`
    call: the gallery's rows are then used as they are, with no per-call
    work. Each template keeps its own packed rows (cached on it, like its
    descriptors), so packing templates seen before only concatenates them.

    Parameters
    ----------
    features_list : sequence of Features or Template
        Templates are encoded (and their features and rows cached) on the way.

    Returns
    -------
    PackedTemplates
    """
    parts = [_packed_one(f, f"templates[{i}]") for i, f in enumerate(features_list)]
    if len(parts) == 1:
        return parts[0]
    counts = np.array([p.offsets[1] for p in parts], dtype=np.int64)
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    fields = {}
    for name, shape, dtype in _PACKED_FIELDS:
        if parts:
            fields[name] = np.concatenate([getattr(p, name) for p in parts])
        else:
            fields[name] = np.zeros((0, *shape), dtype=dtype)
    return PackedTemplates(offsets=offsets, **fields)


#: Per-row fields of a PackedTemplates: (name, shape of one row, dtype).
_PACKED_FIELDS = (
    ("bits", (_desc.DESCRIPTOR_BYTES // 8,), np.uint64),
    ("mask", (_desc.MASK_BYTES // 8,), np.uint64),
    ("maskx", (_desc.DESCRIPTOR_BYTES // 8,), np.uint64),
    ("geo", (4,), np.float64),
    ("theta", (), np.float64),
    ("index", (), np.int32),
    ("hull_rank", (), np.int32),
    ("overlap_weight", (), np.float64),
)


def _packed_one(obj, name: str) -> PackedTemplates:
    """The rows of one template (or Features) as a one-template PackedTemplates, cached on a
    Template (``_cache["packed"]``; :func:`biomatch.descriptors.encode` drops it when it
    re-encodes). Not to be written to: :func:`pack` of one template hands out the cached one."""
    if isinstance(obj, Template):
        f = _desc.encode(obj)
        cached = obj._cache.get("packed")
        if cached is not None:
            return cached
    else:
        f = _as_features(obj, name)
    rows = _rows(f)
    one = PackedTemplates(
        bits=rows[0], mask=rows[1], maskx=rows[2], geo=rows[3], theta=rows[4],
        offsets=np.array([0, rows[0].shape[0]], dtype=np.int64), index=rows[5], hull_rank=rows[6],
        overlap_weight=rows[7],
    )
    if isinstance(obj, Template):
        obj._cache["packed"] = one
    return one


def overlap_weights(quality) -> np.ndarray:
    """Weight of each minutia in the overlap counts nA / nB of the global stage.

    Parameters
    ----------
    quality : array_like, shape (n,)
        Minutia qualities 0-100 (the template's ``quality`` field).

    Returns
    -------
    ndarray of float64, shape (n,)
        ``min(quality / QUALITY_FULL_WEIGHT, 1)``; all ones when every quality
        is 0 (qualities not reported).
    """
    q = np.asarray(quality, dtype=np.float64)
    if not np.any(q > 0):
        return np.ones(q.size, dtype=np.float64)
    return np.minimum(q / QUALITY_FULL_WEIGHT, 1.0)


def _rows(f: "_desc.Features"):
    sel = np.flatnonzero(f.valid)
    # rows ordered by direction: the kernel's direction gate then passes runs of
    # consecutive rows, which the branch predictor follows (about 2x faster)
    sel = sel[np.argsort(f.angle[sel], kind="stable")]
    bits = np.ascontiguousarray(f.bits[sel]).view(np.uint64)
    mask = np.ascontiguousarray(f.mask[sel]).view(np.uint64)
    theta = f.angle[sel].astype(np.float64)
    geo = np.empty((sel.size, 4), dtype=np.float64)
    geo[:, :2] = f.xy[sel]
    geo[:, 2] = np.cos(theta)
    geo[:, 3] = np.sin(theta)
    maskx = _expand_mask(f.mask[sel])
    weight = np.ascontiguousarray(overlap_weights(f.quality)[sel])
    return bits, mask, maskx, geo, theta, sel.astype(np.int32), _hull_rank(geo[:, :2]), weight


def _hull_rank(xy: np.ndarray) -> np.ndarray:
    """int32 (n,): position of each point on the counter-clockwise convex hull, -1 inside.
    Degenerate sets (fewer than 3 points, collinear) have no hull: all -1."""
    rank = np.full(xy.shape[0], -1, dtype=np.int32)
    if xy.shape[0] >= 3:
        from ._hull import hull_indices

        vertices, ok = hull_indices(np.ascontiguousarray(xy, dtype=np.float64))
        if ok:  # Qhull's vertices (the rank may start elsewhere on the hull: the inside tests do not care)
            rank[vertices] = np.arange(vertices.size, dtype=np.int32)
            return rank
        from scipy.spatial import ConvexHull, QhullError

        try:
            vertices = ConvexHull(xy).vertices  # 2-D: counter-clockwise
        except QhullError:
            return rank
        rank[vertices] = np.arange(vertices.size, dtype=np.int32)
    return rank


def _mask_table() -> np.ndarray:
    """uint8 (256, N_DIRECTIONAL): the value bits of 8 consecutive cells (one mask byte, bit i = cell
    i) as N_DIRECTIONAL bytes, each cell's bit repeated N_DIRECTIONAL times (little-endian)."""
    nd = _desc.N_DIRECTIONAL
    cells = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
    return np.packbits(np.repeat(cells, nd, axis=1), axis=1, bitorder="little")


_MASK_TABLE = _mask_table()


def _expand_mask(mask: np.ndarray) -> np.ndarray:
    """Cell validity (n, MASK_BYTES) uint8 -> the same per value bit (n, DESCRIPTOR_BYTES // 8) uint64
    (bit c * N_DIRECTIONAL + k is cell c's; bits past the cells are 0)."""
    n, nd = mask.shape[0], _desc.N_DIRECTIONAL
    full, rest = divmod(_desc.N_CELLS, 8)  # 8 cells of a mask byte are nd whole bytes of value bits
    out = np.zeros((n, _desc.DESCRIPTOR_BYTES), dtype=np.uint8)
    out[:, : full * nd] = _MASK_TABLE[mask[:, :full]].reshape(n, full * nd)
    if rest:  # the last cells' byte, without the bits past the cells
        out[:, full * nd : (full + 1) * nd] = _MASK_TABLE[mask[:, full] & np.uint8((1 << rest) - 1)]
    return out.view(np.uint64)


def score_packed(probe, packed: PackedTemplates, subset=None) -> np.ndarray:
    """Raw scores of ``probe`` against the templates of ``packed``.

    Parameters
    ----------
    probe : Features or Template
    packed : PackedTemplates
    subset : array_like of int, shape (m,), optional
        Indices of the templates to score (default: all, in order).

    Returns
    -------
    ndarray of float64, shape (m,) or (len(packed),)
        Raw similarities in [0, 1] (see the module docstring).
    """
    from ._scoring_kernels import score_batch

    if not isinstance(packed, PackedTemplates):
        raise BiomatchError(f"packed: expected PackedTemplates from scoring.pack, got {type(packed).__name__}")
    a = _packed_one(probe, "probe")
    n = len(packed)
    if subset is None:
        idx = np.arange(n, dtype=np.int64)
    else:
        idx = np.asarray(subset)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise BiomatchError("subset: expected a 1-D array of template indices")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise BiomatchError(f"subset: indices must lie in 0..{n - 1}")
    out = np.zeros(idx.size, dtype=np.float64)
    if idx.size == 0:
        return out
    score_batch(
        a.bits,
        a.mask,
        a.maskx,
        a.geo,
        a.theta,
        a.hull_rank,
        a.overlap_weight,
        packed.bits,
        packed.mask,
        packed.maskx,
        packed.geo,
        packed.theta,
        packed.hull_rank,
        packed.overlap_weight,
        packed.offsets,
        idx,
        _desc.PLANE_WORDS,
        _MIN_COMMON_CELLS,
        _PARAMS,
        _COMPAT_TABLES,
        _GPARAMS,
        out,
    )
    return out


def compare_many(probe: Template, templates) -> np.ndarray:
    """Raw scores of one probe against many templates (the fast path).

    For repeated searches of one gallery, pack it once with :func:`pack`
    and pass the :class:`PackedTemplates`: each call then only encodes the
    probe and runs the scoring kernel. A sequence of templates works too (each
    template's packed rows are cached on it, so a gallery scored before is
    only concatenated again).

    Parameters
    ----------
    probe : Template
    templates : PackedTemplates or sequence of Template

    Returns
    -------
    ndarray of float64, shape (len(templates),)
        Raw similarities in [0, 1], as :attr:`Match.score` of :func:`verify`.
    """
    if not isinstance(probe, Template):
        raise TemplateError(f"probe: expected a Template, got {type(probe).__name__}")
    if isinstance(templates, PackedTemplates):
        return score_packed(probe, templates)
    if isinstance(templates, (str, bytes, Template)) or not hasattr(templates, "__iter__"):
        raise TemplateError(
            f"templates: expected a sequence of Template or PackedTemplates, got {type(templates).__name__}"
        )
    templates = list(templates)
    for i, t in enumerate(templates):
        if not isinstance(t, Template):
            raise TemplateError(f"templates[{i}]: expected a Template, got {type(t).__name__}")
    return score_packed(probe, pack(templates))


def _score_rows(ra, rb):
    """(score, the minutiae pairs a -> b the score rests on) of two templates' rows
    (:func:`_rows`, or a :func:`pack` slice): the pairs agreeing under the global stage's
    final alignment, ordered by the minutia index in a."""
    from ._scoring_kernels import score_one

    if ra[0].shape[0] < 2 or rb[0].shape[0] < 2:
        return 0.0, np.zeros((0, 2), dtype=np.int64)
    lssr_pairs = np.zeros((MAX_PAIRS + 1, 2), dtype=np.int32)
    agreed = np.empty(rb[0].shape[0], dtype=np.int32)
    score, _, _ = score_one(
        *ra[:5], *ra[6:], *rb[:5], *rb[6:], _desc.PLANE_WORDS, _MIN_COMMON_CELLS, _PARAMS, _COMPAT_TABLES, _GPARAMS,
        lssr_pairs, agreed,
    )
    jb = np.flatnonzero(agreed >= 0)
    out = np.stack([ra[5][agreed[jb]], rb[5][jb]], axis=1).astype(np.int64)
    out = out[np.argsort(out[:, 0], kind="stable")]
    return float(score), out


def _raw_verify(a: Template, b: Template):
    return _score_rows(_rows(_desc.encode(a)), _rows(_desc.encode(b)))


def pairs_packed(probe, packed: PackedTemplates, t: int) -> tuple[float, np.ndarray]:
    """:func:`verify`'s (score, pairs) of ``probe`` against template ``t`` of ``packed``.

    The rows of a :func:`pack` are those :func:`verify` builds, so the result
    is the same without decoding and re-encoding the gallery template (a
    gallery's candidates come from packed rescoring rows).
    """
    if not isinstance(packed, PackedTemplates):
        raise BiomatchError(f"packed: expected PackedTemplates from scoring.pack, got {type(packed).__name__}")
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < len(packed):
        raise BiomatchError(f"t: expected a template index 0..{len(packed) - 1}, got {t!r}")
    lo, hi = int(packed.offsets[t]), int(packed.offsets[t + 1])
    rb = (packed.bits[lo:hi], packed.mask[lo:hi], packed.maskx[lo:hi], packed.geo[lo:hi], packed.theta[lo:hi],
          packed.index[lo:hi], packed.hull_rank[lo:hi], packed.overlap_weight[lo:hi])
    return _score_rows(_rows(_as_features(probe, "probe")), rb)


def verify(a: Template, b: Template) -> Match:
    """Compare two templates.

    Parameters
    ----------
    a, b : Template

    Returns
    -------
    Match
        ``score`` raw similarity in [0, 1] (1 for a template with itself, 0
        when either template has fewer than two usable minutiae), ``fmr`` its
        estimated false match rate, ``pairs`` the paired minutiae a -> b.
    """
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Template):
            raise TemplateError(f"{name}: expected a Template, got {type(t).__name__}")
    score, pairs = _raw_verify(a, b)
    pairs.setflags(write=False)
    fmr, is_bound = reported_fmr(score)
    return Match(score=score, fmr=fmr, pairs=pairs, fmr_is_bound=is_bound)


def reported_fmr(score: float) -> tuple[float, bool]:
    """(FMR, is it a bound) of a raw score from the default calibration, as it may be shown
    (:meth:`Calibration.bounded_fmr`); (NaN, False) without a calibration."""
    from .calibration import default_calibration

    try:
        cal = default_calibration()
    except (BiomatchError, OSError):
        return float("nan"), False
    return cal.bounded_fmr(float(score))


def estimated_fmr(score: float) -> float:
    """Estimated false match rate of a raw score from the default calibration, floored at what
    it supports (NaN if none); :func:`reported_fmr` also says whether it is a bound."""
    return reported_fmr(score)[0]
