"""Ten-print sequence check and quality gate: is every rolled print in its box, and good enough to keep?

A ten-print transaction holds ten rolled prints (positions 1-10) and the
slaps taken at the same sitting (13 right four, 14 left four, 11/12 or 15
thumbs). The most common booking error is a rolled print in the wrong box;
the slaps show the fingers in the hand's own order, so matching each rolled
print against the fingers segmented from the slaps (:func:`biomatch.segment_slap`)
tells whether it sits in its box. :func:`sequence_check` does this and returns,
per rolled box, one of

* ``"match"``: it matches its own slap finger (estimated FMR at most
  :data:`MATCH_FMR`) better than any other;
* ``"swapped"``: it matches another slap finger (FMR at most
  :data:`SWAP_FMR`, stricter: a swap claim refuses the booking) better than
  its own; ``swapped_with`` names that finger;
* ``"no_slap_match"``: no slap finger matches it (poor slap, or a finger the
  slaps do not show);
* ``"no_print"``: nothing could be extracted from the rolled image;

and a transaction verdict: ``"fail"`` when any box is swapped, ``"pass"``
when every rolled box matched, ``"incomplete"`` when some could not be
confirmed but none is swapped, and ``"not_checked"`` when the transaction
carries no slaps (it is not an error: there is nothing to check against).

The quality gate (:func:`quality_gate`) decides per box ``"accept"`` or
``"retake"`` from the extraction's print quality (0-100) and the minutiae
count, thresholds :data:`MIN_QUALITY` and :data:`MIN_MINUTIAE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import BiomatchError, ImageError

__all__ = [
    "MATCH_FMR",
    "SWAP_FMR",
    "MIN_QUALITY",
    "MIN_MINUTIAE",
    "BoxCheck",
    "QualityDecision",
    "SequenceCheck",
    "sequence_check",
    "quality_gate",
    "IntakeDecision",
    "intake",
]

#: A rolled print matches a slap finger when the estimated FMR of their score is at most this.
MATCH_FMR = 1e-3
#: A rolled print is declared swapped only when it matches another finger at this stricter FMR:
#: about 100 comparisons per transaction, so a spurious swap claim stays near 1 % even on poor slaps.
SWAP_FMR = 1e-4
#: Quality gate: a rolled print or slap finger with a print quality (0-100) below this is re-taken.
MIN_QUALITY = 20
#: Quality gate: fewer minutiae than this cannot be searched reliably; re-take.
MIN_MINUTIAE = 12

ROLLED_POSITIONS = tuple(range(1, 11))
SLAP_CODES = (11, 12, 13, 14, 15)


@dataclass(frozen=True)
class QualityDecision:
    """The quality gate's decision for one print: ``decision`` "accept" or "retake", and why."""

    position: int
    source: str  # "rolled" or "slap"
    quality: int
    minutiae: int
    decision: str
    reason: str = ""

    def to_dict(self) -> dict:
        return {"position": self.position, "source": self.source, "quality": self.quality, "minutiae": self.minutiae,
                "decision": self.decision, "reason": self.reason}


@dataclass(frozen=True)
class BoxCheck:
    """The sequence check of one rolled box.

    Attributes
    ----------
    position : int
        The rolled box (FGP 1-10).
    verdict : str
        "match", "swapped", "no_slap_match" or "no_print".
    swapped_with : int or None
        The slap finger the print matches instead (verdict "swapped").
    own_score, own_fmr : float or None
        Against the slap finger of the same position (None when the slaps do not show it).
    best_position, best_score, best_fmr : int, float, float or None
        The best-scoring slap finger.
    scores : dict of int to float
        Slap finger position -> raw score.
    """

    position: int
    verdict: str
    swapped_with: int | None = None
    own_score: float | None = None
    own_fmr: float | None = None
    best_position: int | None = None
    best_score: float | None = None
    best_fmr: float | None = None
    scores: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        def r(x):
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 6)

        return {"position": self.position, "verdict": self.verdict, "swapped_with": self.swapped_with,
                "own_score": r(self.own_score), "own_fmr": r(self.own_fmr), "best_position": self.best_position,
                "best_score": r(self.best_score), "best_fmr": r(self.best_fmr),
                "scores": {str(k): r(v) for k, v in sorted(self.scores.items())}}


@dataclass(frozen=True, eq=False)
class SequenceCheck:
    """Result of :func:`sequence_check`.

    Attributes
    ----------
    verdict : str
        "pass", "fail", "incomplete" or "not_checked".
    reasons : tuple of str
        One line per problem (swaps, unconfirmed boxes, missing slap fingers, slaps that did not segment).
    boxes : tuple of BoxCheck
        One per rolled box present, by position.
    segmentations : dict of int to SlapSegmentation
        Slap position -> its segmentation (recorded FSP/ASEG or computed).
    segment_source : dict of int to str
        Slap position -> "recorded" (the transaction's Type-14 segment fields) or "computed".
    quality : tuple of QualityDecision
        The quality gate's decision per rolled box and slap finger.
    rolled_templates : dict of int to Template
        The rolled prints' templates (position -> Template).
    """

    verdict: str
    reasons: tuple
    boxes: tuple
    segmentations: dict
    segment_source: dict
    quality: tuple
    rolled_templates: dict = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def quality_ok(self) -> bool:
        return all(q.decision == "accept" for q in self.quality)

    def box(self, position: int) -> BoxCheck | None:
        for b in self.boxes:
            if b.position == position:
                return b
        return None

    def slap_templates(self) -> dict:
        """Finger position -> template of its slap segment (the fingers the slaps gave)."""
        out = {}
        for seg in self.segmentations.values():
            for s in seg.segments:
                if s.template is not None:
                    out.setdefault(s.position, s.template)
        return out

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "boxes": [b.to_dict() for b in self.boxes],
            "slaps": {str(k): {**v.to_dict(), "segments_from": self.segment_source.get(k)}
                      for k, v in sorted(self.segmentations.items())},
            "quality": [q.to_dict() for q in self.quality],
            "quality_ok": self.quality_ok,
            "thresholds": {"match_fmr": MATCH_FMR, "swap_fmr": SWAP_FMR, "min_quality": MIN_QUALITY,
                           "min_minutiae": MIN_MINUTIAE},
        }


def quality_gate(template, position: int, source: str) -> QualityDecision:
    """Accept or re-take one print from its template (None: nothing extracted)."""
    if template is None:
        return QualityDecision(position, source, 0, 0, "retake", "no print could be extracted")
    q, n = int(template.quality), len(template)
    problems = []
    if q < MIN_QUALITY:
        problems.append(f"quality {q} < {MIN_QUALITY}")
    if n < MIN_MINUTIAE:
        problems.append(f"{n} minutiae < {MIN_MINUTIAE}")
    return QualityDecision(position, source, q, n, "retake" if problems else "accept", "; ".join(problems))


def _fmr(scores: np.ndarray) -> np.ndarray:
    try:
        from .calibration import default_calibration

        return np.asarray(default_calibration().fmr(np.asarray(scores, dtype=np.float64)), dtype=np.float64).ravel()
    except (BiomatchError, OSError, ImportError):
        return np.full(len(scores), np.nan)


def _pair(fmr: np.ndarray) -> dict:
    """Row -> column of the one-to-one pairing with the most evidence (sum of -log10 FMR over pairs at most MATCH_FMR)."""
    from scipy.optimize import linear_sum_assignment

    if fmr.size == 0:
        return {}
    with np.errstate(divide="ignore", invalid="ignore"):
        evidence = -np.log10(np.clip(np.nan_to_num(fmr, nan=1.0), 1e-300, 1.0))
    evidence[~(fmr <= MATCH_FMR)] = 0.0
    rows, cols = linear_sum_assignment(-evidence)
    return {int(r): int(c) for r, c in zip(rows, cols) if evidence[r, c] > 0}


def _rolled_template(tx, img):
    from .extraction import extract

    recorded = tx.templates.get(img.position)
    if recorded is not None and len(recorded) > 0:
        return recorded
    try:
        return extract(img.pixels, ppi=img.ppi, position=img.position)
    except ImageError:
        return None


def sequence_check(transaction, *, use_recorded_segments: bool = True) -> SequenceCheck:
    """Check that every rolled print of a ten-print transaction is in its box, and gate its quality.

    Parameters
    ----------
    transaction : Transaction, str, os.PathLike or bytes
        An ANSI/NIST-ITL transaction (read with :func:`biomatch.read_transaction` when not one already).
    use_recorded_segments : bool
        Use the slap's Type-14 finger segment positions (FSP/ASEG) where the
        transaction carries them, instead of segmenting again.

    Returns
    -------
    SequenceCheck
        Verdict "not_checked" (not an error) when the transaction carries no slaps.

    Raises
    ------
    FormatError
        The transaction cannot be read.
    """
    from .formats import Transaction, read_transaction
    from .scoring import compare_many
    from .slap import segment_slap, segmentation_from_record

    tx = transaction if isinstance(transaction, Transaction) else read_transaction(transaction)
    rolled_images = {}
    slap_images = {}
    for img in tx.images:
        if img.pixels is None:
            continue
        if len(img.positions) == 1 and img.position in ROLLED_POSITIONS:
            rolled_images.setdefault(img.position, img)
        elif img.position in SLAP_CODES:
            slap_images.setdefault(img.position, img)

    reasons = []
    quality = []
    rolled = {}
    for pos in sorted(rolled_images):
        rolled[pos] = _rolled_template(tx, rolled_images[pos])
        quality.append(quality_gate(rolled[pos], pos, "rolled"))

    if not slap_images:
        return SequenceCheck("not_checked", ("no slaps: not checked",), tuple(BoxCheck(p, "no_slap_match") for p in sorted(rolled)),
                             {}, {}, tuple(quality), rolled)

    segmentations, source = {}, {}
    for code in sorted(slap_images):
        img = slap_images[code]
        try:
            if use_recorded_segments and img.segments:
                segmentations[code] = segmentation_from_record(img)
                source[code] = "recorded"
            else:
                segmentations[code] = segment_slap(img, code, name=tx.name)
                source[code] = "computed"
        except ImageError as exc:
            reasons.append(f"slap {code} not segmented: {exc}")
            continue
        if segmentations[code].missing:
            reasons.append(f"slap {code}: no fingertip found for finger(s) {', '.join(map(str, segmentations[code].missing))}")

    slap_fingers = {}
    for seg in segmentations.values():
        for s in seg.segments:
            quality.append(quality_gate(s.template, s.position, "slap"))
            if s.template is not None and len(s.template) >= 2:
                slap_fingers.setdefault(s.position, s.template)
    positions = sorted(slap_fingers)
    gallery = [slap_fingers[p] for p in positions]

    # score every rolled print against every slap finger, then pair them one to one (a finger is in one
    # box only): the pairing that maximises the summed evidence -log10(FMR) over pairs that match at all
    boxes_in = [p for p in sorted(rolled) if rolled[p] is not None and len(rolled[p]) >= 2]
    raw = np.zeros((len(boxes_in), len(positions)))
    for i, pos in enumerate(boxes_in):
        if gallery:
            raw[i] = compare_many(rolled[pos], gallery)
    fmr = _fmr(raw.ravel()).reshape(raw.shape) if raw.size else raw
    assigned = _pair(fmr)
    boxes = []
    for pos in sorted(rolled):
        if pos not in boxes_in:
            boxes.append(BoxCheck(pos, "no_print"))
            reasons.append(f"rolled box {pos}: no print could be extracted")
            continue
        i = boxes_in.index(pos)
        if not positions:
            boxes.append(BoxCheck(pos, "no_slap_match"))
            reasons.append(f"rolled box {pos}: not confirmed by the slaps (no slap finger segmented)")
            continue
        scores = {p: float(v) for p, v in zip(positions, raw[i])}
        b = int(np.argmax(raw[i]))
        own = positions.index(pos) if pos in positions else None
        common = dict(own_score=None if own is None else float(raw[i, own]),
                      own_fmr=None if own is None else float(fmr[i, own]),
                      best_position=positions[b], best_score=float(raw[i, b]), best_fmr=float(fmr[i, b]), scores=scores)
        j = assigned.get(i)
        if j is not None and positions[j] == pos and fmr[i, j] <= MATCH_FMR:
            boxes.append(BoxCheck(pos, "match", **common))
        elif j is not None and positions[j] != pos and fmr[i, j] <= SWAP_FMR:
            boxes.append(BoxCheck(pos, "swapped", swapped_with=positions[j], **common))
            own_text = "absent" if own is None else f"FMR {fmr[i, own]:.1e}"
            reasons.append(f"rolled box {pos} holds finger {positions[j]} (matches slap finger {positions[j]}, "
                           f"FMR {fmr[i, j]:.1e}; own slap finger {own_text})")
        else:
            boxes.append(BoxCheck(pos, "no_slap_match", **common))
            why = "the slaps do not show it" if own is None else f"own slap finger FMR {fmr[i, own]:.1e} > {MATCH_FMR:g}"
            reasons.append(f"rolled box {pos}: not confirmed by the slaps ({why})")

    if any(b.verdict == "swapped" for b in boxes):
        verdict = "fail"
    elif boxes and all(b.verdict == "match" for b in boxes):
        verdict = "pass"
    else:
        verdict = "incomplete"
    return SequenceCheck(verdict, tuple(reasons), tuple(boxes), segmentations, source, tuple(quality), rolled)


@dataclass(frozen=True, eq=False)
class IntakeDecision:
    """What :func:`intake` decided for a booking transaction.

    Attributes
    ----------
    accepted : bool
        True when the transaction may be enrolled (it passed, or the caller overrode the refusal).
    refused_reasons : tuple of str
        Why it would be refused (swapped boxes, rolled prints to re-take); empty when it passed.
    fingers : dict of int to Template
        What to enrol: the rolled prints (or the transaction's Type-9 minutiae), and for a finger
        without a rolled print its slap segment.
    slap_fingers : dict of int to Template
        The slap segments (finger position -> template), kept for the caller.
    check : SequenceCheck
    audit : dict
        JSON-ready summary for the audit record: what was checked and decided (no biometric data).
    sources : dict of int to str
        Where each of ``fingers`` comes from: ``"rolled"``, ``"type-9"`` (the transaction's
        minutiae) or ``"slap 13"`` etc. (a slap segment, for a finger without a rolled print).
    slap_impressions : tuple of (int, str, Template)
        The slap segments the quality gate accepted that are not already in ``fingers``:
        (finger position, source such as ``"slap 13"``, template), slap by slap; what
        :meth:`biomatch.gallery.Gallery.enroll_transaction` keeps as extra impressions.
    """

    accepted: bool
    refused_reasons: tuple
    fingers: dict
    slap_fingers: dict
    check: SequenceCheck
    audit: dict
    sources: dict = field(default_factory=dict)
    slap_impressions: tuple = ()


def intake(transaction, *, override: bool = False) -> IntakeDecision:
    """Run the sequence check and the quality gate on a booking and decide whether it may be enrolled.

    A transaction is refused when a rolled box holds another finger (sequence
    verdict "fail") or a rolled print must be re-taken (quality gate); with
    ``override`` it is accepted anyway and the audit summary says so. No slaps
    (verdict "not_checked") is no reason to refuse. Minutiae a transaction
    brings as Type-9 records were not measured here: they are enrolled
    without the quality gate (the summary lists them as "not gated").
    """
    from .formats import Transaction, read_transaction

    tx = transaction if isinstance(transaction, Transaction) else read_transaction(transaction)
    check = sequence_check(tx)
    recorded = {p for p, t in tx.templates.items() if 0 <= p <= 10 and t is not None}
    refused = [r for r in check.reasons if " holds finger " in r]
    retake = [q for q in check.quality if q.source == "rolled" and q.decision == "retake" and q.position not in recorded]
    refused += [f"rolled box {q.position}: re-take ({q.reason})" for q in retake]
    fingers = {p: tx.templates[p] for p in recorded}
    for p, t in check.rolled_templates.items():
        if t is not None and len(t) > 0:
            fingers.setdefault(p, t)
    for img in tx.images:  # a print of unknown position (0) is enrolled as such, unchecked
        if img.pixels is not None and img.position == 0 and 0 not in fingers:
            t = _rolled_template(tx, img)
            if t is not None:
                fingers[0] = t
    slap_fingers = check.slap_templates()
    from_slaps = sorted(p for p in slap_fingers if p not in fingers)
    for p in from_slaps:
        fingers[p] = slap_fingers[p]
    sources = {p: "type-9" if p in recorded else "rolled" for p in fingers}
    impressions = []
    for code, seg in sorted(check.segmentations.items()):
        for sg in seg.segments:
            t = sg.template
            if t is None or len(t) == 0:
                continue
            if sg.position in from_slaps and t is slap_fingers[sg.position]:
                sources[sg.position] = f"slap {code}"  # enrolled as the finger's primary print
            elif quality_gate(t, sg.position, "slap").decision == "accept":
                impressions.append((sg.position, f"slap {code}", t))
    audit = {
        "sequence": check.verdict,
        "boxes": {str(b.position): b.verdict if b.swapped_with is None else f"swapped with {b.swapped_with}"
                  for b in check.boxes},
        "slaps": {str(k): {"segments_from": check.segment_source.get(k), "fingers": [s.position for s in v.segments],
                           "missing": list(v.missing)} for k, v in sorted(check.segmentations.items())},
        "quality": {f"{q.source} {q.position}": q.decision for q in check.quality},
        "not_gated": sorted(recorded),
        "from_slaps": from_slaps,
        "refused_reasons": refused,
        "override": bool(override and refused),
        "thresholds": {"match_fmr": MATCH_FMR, "swap_fmr": SWAP_FMR, "min_quality": MIN_QUALITY,
                       "min_minutiae": MIN_MINUTIAE},
    }
    return IntakeDecision(accepted=not refused or bool(override), refused_reasons=tuple(refused), fingers=fingers,
                          slap_fingers=slap_fingers, check=check, audit=audit, sources=sources,
                          slap_impressions=tuple(impressions))
