"""Calibration: raw comparison score -> estimated false match rate (FMR).

A raw score means nothing to an operator; its estimated FMR does: the
probability that a comparison of two *different* fingers scores at least as
high. A :class:`Calibration` is fitted on non-mated (impostor) scores:

* body: the empirical survival function ``FMR(t) = #{s >= t} / n`` of the
  non-mated scores (the acceptance rule everywhere in biomatch is
  ``score >= threshold``), kept as at most ``BODY_KNOTS`` knots and linearly
  interpolated between them;
* tail: above the score ``u`` that leaves the top ``TAIL_FRACTION`` of the
  scores (at least ``MIN_TAIL_EXCEEDANCES`` of them), a generalized Pareto
  distribution (peaks over threshold, Pickands-Balkema-de Haan) fitted by
  maximum likelihood to the exceedances ``s - u``:
  ``FMR(t) = p_u * GPD.sf(t - u; shape, scale)`` with ``p_u = #{s > u} / n``.
  The estimate therefore continues smoothly below ``1/n`` instead of dropping
  to zero after the highest impostor score seen.

The shape is clipped to ``>= 0`` (an exponential tail when the fit says the
tail is bounded): a bounded tail would claim FMR exactly 0 above some score,
which no finite sample can show; the clipped tail overestimates FMR for
light-tailed scores, the safe direction for a system that decides arrests.

The mapping is monotone non-increasing in the score and equals 1 below the
lowest fitted score. At ``u`` it steps from the empirical ``#{s >= u}/n`` (the
last body knot) to ``p_u = #{s > u}/n`` just above: the true survival function
of tied scores has that step (1/n for continuous scores). Between body knots
the linear interpolation lies above the empirical step function, so tied
(integer-valued) scores get a conservative estimate. A calibration is versioned:
``format_version`` of the JSON form, the ``matcher_version`` whose scores it
was fitted on, and fit metadata (number of scores, source, UTC date).

For a 1:N search against a gallery of ``N`` independent non-mated entries
the false positive identification rate is ``FPIR = 1 - (1 - FMR)^N``
(:func:`fpir_from_fmr`, :func:`fmr_from_fpir`); the independence assumption
holds approximately for a gallery of distinct fingers.

What a calibration can support: the FMR bound
---------------------------------------------
An estimate far below ``1/n`` (n non-mated scores behind the fit) is the tail
model talking, not the data. :attr:`Calibration.fmr_floor` is the smallest
FMR a calibration supports:

* ``1 / n`` when the tail is not validated: n scores cannot show a rate
  below that of a single false match among them;
* ``1 / (TAIL_EXTRAPOLATION_FACTOR * n)`` when the fitted tail is validated
  (at least ``MIN_VALIDATED_EXCEEDANCES`` exceedances, and a
  Kolmogorov-Smirnov test of the exceedances against the fitted tail
  model not rejected at ``TAIL_GOF_MIN_PVALUE``): peaks-over-threshold
  extrapolation is trusted for one decade beyond the sample, no further.
  The check is made by :meth:`Calibration.fit` and stored in
  ``metadata["tail_check"]``; a calibration without it (fitted before the
  check existed) counts as not validated.

Every FMR shown to a person goes through :meth:`Calibration.bounded_fmr`:
an estimate below the floor is reported as the floor with a flag saying it
is a bound (``FMR <= floor``; :func:`format_fmr` prints ``"<= 2.9e-05"``).
Fused multi-finger FMRs get the same floor: the fusion assumes independent
fingers, a model the impostor scores behind the fit cannot check either.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CalibrationError

__all__ = [
    "Calibration",
    "default_calibration",
    "fpir_from_fmr",
    "fmr_from_fpir",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DEFAULT_CALIBRATION_PATH",
    "format_fmr",
]

FORMAT_NAME = "biomatch-calibration"
FORMAT_VERSION = 1
#: JSON shipped with the package (written with :meth:`Calibration.fit` from impostor scores).
DEFAULT_CALIBRATION_PATH = Path(__file__).resolve().parent / "data" / "calibration_default.json"

# ---- tuned constants (one place) -----------------------------------------
#: Fewest non-mated scores a calibration may be fitted on.
MIN_NONMATED_SCORES = 100
#: Fraction of the highest non-mated scores modelled by the fitted tail.
TAIL_FRACTION = 0.05
#: Fewest exceedances the tail is fitted on (raises the tail fraction for small samples).
MIN_TAIL_EXCEEDANCES = 30
#: At most this many knots keep the empirical body (JSON stays small whatever n).
BODY_KNOTS = 512
#: A validated tail supports FMRs down to 1 / (TAIL_EXTRAPOLATION_FACTOR * n_scores); one decade.
TAIL_EXTRAPOLATION_FACTOR = 10.0
#: Fewest exceedances for the tail to count as validated.
MIN_VALIDATED_EXCEEDANCES = 100
#: Kolmogorov-Smirnov p-value of the exceedances against the fitted tail below which the tail is not validated.
TAIL_GOF_MIN_PVALUE = 0.05


def format_fmr(fmr, is_bound: bool = False, digits: int = 2) -> str:
    """An FMR for a person: ``"3.10e-03"``, ``"<= 2.89e-05"`` for a bound, ``"n/a"`` for NaN / None."""
    if fmr is None or fmr != fmr:
        return "n/a"
    return f"{'<= ' if is_bound else ''}{float(fmr):.{digits}e}"


def fpir_from_fmr(fmr, gallery_size: int):
    """FPIR of a search against ``gallery_size`` non-mated entries: ``1 - (1 - FMR)^N``.

    Parameters
    ----------
    fmr : float or array_like of float
        Per-comparison false match rate(s), in [0, 1].
    gallery_size : int
        Number of enrolled entries N (>= 1).

    Returns
    -------
    float or numpy.ndarray of float64
    """
    n = _check_gallery_size(gallery_size)
    f = np.clip(np.asarray(fmr, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        out = -np.expm1(n * np.log1p(-f))
    return float(out) if out.ndim == 0 else out


def fmr_from_fpir(fpir, gallery_size: int):
    """Per-comparison FMR that gives ``fpir`` on a gallery of ``gallery_size``: ``1 - (1 - FPIR)^(1/N)``."""
    n = _check_gallery_size(gallery_size)
    p = np.clip(np.asarray(fpir, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        out = -np.expm1(np.log1p(-p) / n)
    return float(out) if out.ndim == 0 else out


def _check_gallery_size(gallery_size) -> int:
    if isinstance(gallery_size, bool) or not isinstance(gallery_size, (int, np.integer)) or gallery_size < 1:
        raise CalibrationError(f"gallery_size: expected an integer >= 1, got {gallery_size!r}")
    return int(gallery_size)


def _as_scores(values, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{name}: expected numbers, got {type(values).__name__}") from None
    if arr.ndim != 1:
        arr = arr.ravel()
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{name}: {int(np.sum(~np.isfinite(arr)))} scores are NaN or infinite")
    return arr


@dataclass(frozen=True)
class Calibration:
    """Monotone map from raw score to estimated FMR, fitted on non-mated scores.

    Build with :meth:`fit` or :meth:`from_json`; do not construct directly
    unless you know the invariants (:meth:`from_dict` checks them).

    Attributes
    ----------
    body_scores : numpy.ndarray of float64, shape (K,)
        Strictly increasing knot scores of the empirical body; the last is ``tail_threshold``.
    body_fmr : numpy.ndarray of float64, shape (K,)
        Non-increasing FMR at each knot, in (0, 1]: the empirical ``#{s >= x}/n``.
    tail_threshold : float
        ``u``: scores above it use the fitted tail.
    tail_probability : float
        ``p_u = #{s > u} / n``.
    tail_shape, tail_scale : float
        Generalized Pareto shape (>= 0) and scale (> 0) of the exceedances.
    matcher_version : str
        Version of the matcher whose scores were fitted.
    metadata : dict
        Fit metadata: ``n_scores``, ``n_exceedances``, ``source``, ``date`` (UTC ISO 8601), ``method``,
        ``tail_check`` (the tail's goodness of fit, which sets :attr:`fmr_floor`).
    """

    body_scores: np.ndarray
    body_fmr: np.ndarray
    tail_threshold: float
    tail_probability: float
    tail_shape: float
    tail_scale: float
    matcher_version: str
    metadata: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, nonmated_scores, *, source: str, matcher_version: str, date: str | None = None) -> "Calibration":
        """Fit a calibration on non-mated (impostor) comparison scores.

        Parameters
        ----------
        nonmated_scores : array_like of float, shape (n,)
            Raw scores of comparisons between different fingers; n >= ``MIN_NONMATED_SCORES``.
        source : str
            Where the scores came from (dataset, site, protocol) -- stored for audit.
        matcher_version : str
            ``biomatch.scoring.MATCHER_VERSION`` of the matcher that produced them.
        date : str, optional
            UTC ISO 8601 fit date (default: now).

        Returns
        -------
        Calibration

        Raises
        ------
        CalibrationError
            Too few scores, non-finite scores, or too few distinct high scores for a tail.
        """
        from scipy import stats

        s = np.sort(_as_scores(nonmated_scores, "nonmated_scores"))
        n = s.size
        if n < MIN_NONMATED_SCORES:
            raise CalibrationError(f"nonmated_scores: {n} scores, a calibration needs at least {MIN_NONMATED_SCORES}")
        if not isinstance(source, str) or not source:
            raise CalibrationError("source: expected a non-empty string naming where the scores came from")
        if not isinstance(matcher_version, str) or not matcher_version:
            raise CalibrationError("matcher_version: expected a non-empty string")

        # tail threshold u: the largest distinct score with at least max(TAIL_FRACTION*n,
        # MIN_TAIL_EXCEEDANCES) scores strictly above it (ties at u stay in the body, so integer-valued
        # scores with many ties still leave enough exceedances).
        k_target = max(int(math.ceil(TAIL_FRACTION * n)), MIN_TAIL_EXCEEDANCES)
        distinct = np.unique(s)
        above = n - np.searchsorted(s, distinct, side="right")
        ok = np.flatnonzero(above >= k_target)
        u = float(distinct[ok[-1]]) if ok.size else float(s[0])
        exceed = s[s > u] - u
        k = exceed.size
        if k < MIN_TAIL_EXCEEDANCES or np.unique(exceed).size < 3:
            raise CalibrationError(
                f"nonmated_scores: only {k} scores ({np.unique(exceed).size} distinct) above the tail threshold {u:g}; "
                f"the tail fit needs {MIN_TAIL_EXCEEDANCES} (are the scores mostly tied?)"
            )
        p_u = k / n

        # generalized Pareto by maximum likelihood (location fixed at 0); a bounded tail
        # (shape < 0) or a failed fit falls back to the exponential MLE (scale = mean excess).
        shape, scale = 0.0, float(np.mean(exceed))
        try:
            c, _, sc = stats.genpareto.fit(exceed, floc=0.0)
            if np.isfinite(c) and np.isfinite(sc) and sc > 0 and c > 0:
                shape, scale = float(c), float(sc)
        except Exception:  # scipy optimiser failure: keep the exponential tail
            pass

        # empirical body: FMR(t) = #{s >= t}/n at the distinct scores <= u, thinned to BODY_KNOTS
        uniq = np.unique(s[s <= u])
        fmr = (n - np.searchsorted(s, uniq, side="left")) / n
        if uniq.size > BODY_KNOTS:
            idx = np.unique(np.round(np.linspace(0, uniq.size - 1, BODY_KNOTS)).astype(np.int64))
            uniq, fmr = uniq[idx], fmr[idx]
        # the last knot is u itself (linspace keeps both ends) with its empirical #{s >= u}/n
        if date is None:
            date = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        meta = {
            "n_scores": int(n),
            "n_exceedances": int(k),
            "source": source,
            "date": date,
            "method": f"empirical survival + generalized Pareto tail above the top {k} scores (shape clipped >= 0)",
            "tail_check": _tail_check(exceed, shape, scale),
        }
        return cls(uniq.astype(np.float64), fmr.astype(np.float64), u, p_u, shape, scale, matcher_version, meta)

    # ------------------------------------------------------------------ use
    def fmr(self, scores):
        """Estimated FMR of raw scores (probability that a non-mated comparison scores >= it).

        Parameters
        ----------
        scores : float or array_like of float, shape (...)

        Returns
        -------
        float or numpy.ndarray of float64, shape (...)
            In [0, 1], non-increasing in the score; 1 below the lowest fitted score.
            NaN scores give NaN.
        """
        x = np.asarray(scores, dtype=np.float64)
        out = np.interp(x, self.body_scores, self.body_fmr, left=1.0, right=self.tail_probability)
        hi = x > self.tail_threshold
        if np.any(hi):
            out = np.where(hi, self.tail_probability * self._tail_sf(np.where(hi, x - self.tail_threshold, 0.0)), out)
        out = np.where(np.isnan(x), np.nan, out)
        return float(out) if out.ndim == 0 else out

    @property
    def tail_validated(self) -> bool:
        """Whether the fit validated its tail (see the module docstring: enough exceedances, fit not rejected)."""
        check = self.metadata.get("tail_check")
        if not isinstance(check, dict) or check.get("valid") is not True:
            return False
        k = check.get("exceedances")
        return isinstance(k, int) and not isinstance(k, bool) and k >= MIN_VALIDATED_EXCEEDANCES

    @property
    def fmr_floor(self) -> float:
        """Smallest FMR this calibration supports: ``1/n``, or ``1/(TAIL_EXTRAPOLATION_FACTOR n)`` with a validated tail."""
        factor = TAIL_EXTRAPOLATION_FACTOR if self.tail_validated else 1.0
        return 1.0 / (factor * int(self.metadata["n_scores"]))

    def bounded_fmr(self, scores):
        """FMR of raw scores as it may be reported: the estimate, or the floor where the estimate is below it.

        Parameters
        ----------
        scores : float or array_like of float, shape (...)

        Returns
        -------
        fmr : float or numpy.ndarray of float64, shape (...)
            ``max(self.fmr(scores), self.fmr_floor)``; NaN scores give NaN.
        is_bound : bool or numpy.ndarray of bool, shape (...)
            True where the estimate was below the floor: the value is then a bound, FMR <= value.
        """
        return self.bound(self.fmr(scores))

    def bound(self, fmr):
        """Apply the floor to FMRs already estimated (fused FMRs too): ``(max(fmr, floor), fmr < floor)``."""
        f = np.asarray(fmr, dtype=np.float64)
        floor = self.fmr_floor
        is_bound = f < floor  # NaN compares False: stays NaN, not a bound
        out = np.where(is_bound, floor, f)
        if out.ndim == 0:
            return float(out), bool(is_bound)
        return out, is_bound

    def _tail_sf(self, y: np.ndarray) -> np.ndarray:
        if self.tail_shape == 0.0:
            return np.exp(-y / self.tail_scale)
        return np.power(1.0 + self.tail_shape * y / self.tail_scale, -1.0 / self.tail_shape)

    def threshold_for(self, fmr: float) -> float:
        """Smallest raw score whose estimated FMR is <= ``fmr`` (accept when score >= it).

        Parameters
        ----------
        fmr : float
            Target false match rate, in (0, 1].

        Returns
        -------
        float
        """
        f = float(fmr) if isinstance(fmr, (int, float, np.floating, np.integer)) else float("nan")
        if not (0.0 < f <= 1.0):
            raise CalibrationError(f"fmr: expected a rate in (0, 1], got {fmr!r}")
        if f >= 1.0:
            return float(self.body_scores[0])
        if f < self.tail_probability or (f == self.tail_probability and f < self.body_fmr[-1]):
            r = f / self.tail_probability
            if self.tail_shape == 0.0:
                y = -self.tail_scale * math.log(r)
            else:
                y = self.tail_scale * (r ** (-self.tail_shape) - 1.0) / self.tail_shape
            # just above u when the target falls in the step at u (FMR(u+) = p_u <= f < FMR(u))
            return float(self.tail_threshold + y) if y > 0 else float(np.nextafter(self.tail_threshold, np.inf))
        if f < self.body_fmr[-1]:  # inside the step at u
            return float(np.nextafter(self.tail_threshold, np.inf))
        # body: values are non-increasing; first knot index with value <= f, interpolate back
        v = self.body_fmr
        j = int(np.argmax(v <= f))
        if j == 0:
            return float(self.body_scores[0])
        x0, x1, v0, v1 = self.body_scores[j - 1], self.body_scores[j], v[j - 1], v[j]
        return float(x1 if v0 == v1 else x0 + (v0 - f) * (x1 - x0) / (v0 - v1))

    def fpir(self, scores, gallery_size: int):
        """Estimated FPIR of a top candidate scoring ``scores`` on a gallery of ``gallery_size``."""
        return fpir_from_fmr(self.fmr(scores), gallery_size)

    def threshold_for_fpir(self, fpir: float, gallery_size: int) -> float:
        """Smallest raw score whose estimated FPIR on ``gallery_size`` entries is <= ``fpir``."""
        if not (isinstance(fpir, (int, float, np.floating)) and 0.0 < float(fpir) <= 1.0):
            raise CalibrationError(f"fpir: expected a rate in (0, 1], got {fpir!r}")
        return self.threshold_for(fmr_from_fpir(float(fpir), gallery_size))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """JSON-ready dict (see :meth:`from_dict` for the fields)."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "matcher_version": self.matcher_version,
            "fit": dict(self.metadata),
            "body": {"scores": self.body_scores.tolist(), "fmr": self.body_fmr.tolist()},
            "tail": {
                "threshold": self.tail_threshold,
                "probability": self.tail_probability,
                "shape": self.tail_shape,
                "scale": self.tail_scale,
            },
        }

    def to_json(self) -> str:
        """The calibration as a JSON string (what the gallery store and the CLI keep)."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, doc) -> "Calibration":
        """Build from :meth:`to_dict` output, validating every field.

        Raises
        ------
        CalibrationError
            Naming the field that is missing or wrong.
        """
        if not isinstance(doc, dict):
            raise CalibrationError(f"calibration: expected a JSON object, got {type(doc).__name__}")
        if doc.get("format") != FORMAT_NAME:
            raise CalibrationError(f"calibration.format: expected {FORMAT_NAME!r}, got {doc.get('format')!r}")
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise CalibrationError(
                f"calibration.format_version: {version!r} is not supported (this biomatch reads {FORMAT_VERSION})"
            )
        mv = doc.get("matcher_version")
        if not isinstance(mv, str) or not mv:
            raise CalibrationError("calibration.matcher_version: expected a non-empty string")
        fit = doc.get("fit")
        if not isinstance(fit, dict):
            raise CalibrationError("calibration.fit: expected an object with n_scores, source, date")
        for key, typ in (("n_scores", int), ("source", str), ("date", str)):
            if not isinstance(fit.get(key), typ) or isinstance(fit.get(key), bool):
                raise CalibrationError(f"calibration.fit.{key}: missing or not a {typ.__name__}")
        body = doc.get("body")
        if not isinstance(body, dict):
            raise CalibrationError("calibration.body: expected an object with scores and fmr")
        xs = _field_array(body, "scores", "calibration.body.scores")
        vs = _field_array(body, "fmr", "calibration.body.fmr")
        if xs.size == 0 or xs.size != vs.size:
            raise CalibrationError(
                f"calibration.body: scores ({xs.size}) and fmr ({vs.size}) must be non-empty and of equal length"
            )
        if xs.size > 1 and not np.all(np.diff(xs) > 0):
            raise CalibrationError("calibration.body.scores: must be strictly increasing")
        if np.any(vs <= 0) or np.any(vs > 1) or (vs.size > 1 and np.any(np.diff(vs) > 0)):
            raise CalibrationError("calibration.body.fmr: must be non-increasing and in (0, 1]")
        tail = doc.get("tail")
        if not isinstance(tail, dict):
            raise CalibrationError("calibration.tail: expected an object with threshold, probability, shape, scale")
        vals = {}
        for key in ("threshold", "probability", "shape", "scale"):
            v = tail.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise CalibrationError(f"calibration.tail.{key}: expected a finite number, got {v!r}")
            vals[key] = float(v)
        if not 0 < vals["probability"] <= 1:
            raise CalibrationError(f"calibration.tail.probability: {vals['probability']} is not in (0, 1]")
        if vals["shape"] < 0:
            raise CalibrationError(f"calibration.tail.shape: {vals['shape']} is negative (bounded tails are not allowed)")
        if vals["scale"] <= 0:
            raise CalibrationError(f"calibration.tail.scale: {vals['scale']} must be > 0")
        if vals["threshold"] != xs[-1] or vals["probability"] > vs[-1]:
            raise CalibrationError(
                "calibration.tail: threshold must equal the last body knot and probability must not exceed its FMR"
            )
        xs.setflags(write=False)
        vs.setflags(write=False)
        return cls(xs, vs, vals["threshold"], vals["probability"], vals["shape"], vals["scale"], mv, dict(fit))

    @classmethod
    def from_json(cls, text) -> "Calibration":
        """Parse :meth:`to_json` output (str or bytes)."""
        try:
            doc = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"calibration: not valid JSON ({exc})") from None
        return cls.from_dict(doc)

    def save(self, path) -> Path:
        """Write the JSON form to ``path``."""
        path = Path(path)
        try:
            path.write_text(self.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            raise CalibrationError(f"{path}: cannot write calibration ({exc.strerror or exc})") from None
        return path

    @classmethod
    def load(cls, path) -> "Calibration":
        """Read a calibration JSON file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CalibrationError(f"{path}: cannot read calibration ({exc.strerror or exc})") from None
        try:
            return cls.from_json(text)
        except CalibrationError as exc:
            raise CalibrationError(f"{path}: {exc}") from None

    def __eq__(self, other) -> bool:
        if not isinstance(other, Calibration):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # mutable-looking arrays inside: not hashable


def _tail_check(exceed: np.ndarray, shape: float, scale: float) -> dict:
    """Goodness of fit of the tail model to its exceedances (Kolmogorov-Smirnov, parameters as fitted).

    The p-value is optimistic (the parameters come from the same data), so the test only
    screens out tails the model plainly does not describe (tied or bimodal exceedances)."""
    from scipy import stats

    if shape == 0.0:
        cdf = stats.expon(scale=scale).cdf
    else:
        cdf = stats.genpareto(shape, loc=0.0, scale=scale).cdf
    p = float(stats.kstest(exceed, cdf).pvalue)
    valid = bool(exceed.size >= MIN_VALIDATED_EXCEEDANCES and p >= TAIL_GOF_MIN_PVALUE)
    return {"test": "Kolmogorov-Smirnov", "p_value": p, "min_p_value": TAIL_GOF_MIN_PVALUE,
            "exceedances": int(exceed.size), "min_exceedances": MIN_VALIDATED_EXCEEDANCES, "valid": valid}


def _field_array(obj: dict, key: str, name: str) -> np.ndarray:
    raw = obj.get(key)
    if not isinstance(raw, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in raw):
        raise CalibrationError(f"{name}: expected a list of numbers")
    arr = np.asarray(raw, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{name}: contains NaN or infinite values")
    return arr


@functools.lru_cache(maxsize=1)
def _load_default(path: str, mtime_ns: int) -> Calibration:
    return Calibration.load(path)


def default_calibration() -> Calibration:
    """The calibration shipped with biomatch (``biomatch/data/calibration_default.json``).

    Raises
    ------
    CalibrationError
        When the file is absent or invalid.
    """
    path = DEFAULT_CALIBRATION_PATH
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise CalibrationError(
            f"{path}: no default calibration is installed; fit one with `biomatch calibrate` "
            "or Calibration.fit(nonmated_scores, source=..., matcher_version=...)"
        ) from None
    return _load_default(str(path), mtime)
