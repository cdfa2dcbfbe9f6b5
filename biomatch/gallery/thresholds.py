"""The calibration and the thresholds stored with a gallery."""

from __future__ import annotations

import hashlib
import json


from .. import audit as _audit
from ..errors import BiomatchError, CalibrationError
from ..search.ranking import threshold_value
from .checks import check_gallery_name, check_operator, check_transaction_id


class ThresholdsMixin:
    """The stored calibration and per-gallery thresholds (part of :class:`Gallery`)."""

    # -- calibration and thresholds ----------------------------------------------------------
    def set_calibration(self, calibration, *, operator: str | None = None, transaction_id: str | None = None) -> int:
        """Store a :class:`biomatch.calibration.Calibration` (audited); later searches use it."""
        from ..calibration import Calibration

        if not isinstance(calibration, Calibration):
            raise CalibrationError(f"calibration: expected a biomatch Calibration, got {type(calibration).__name__}")
        operator = check_operator(operator)
        doc = calibration.to_json()
        with self._write() as con:
            con.execute("INSERT INTO calibration(doc, created) VALUES (?, ?)", (doc, _audit.utc_now()))
            rec = _audit.append(
                con,
                "calibration",
                operator,
                {"transaction_id": check_transaction_id(transaction_id), "sha256": hashlib.sha256(doc.encode()).hexdigest()},
            )
        self._cal_cache = None
        return rec["seq"]

    def _calibration_doc(self, con):
        row = con.execute("SELECT id, doc FROM calibration ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        try:
            doc = json.loads(row[1])
        except ValueError:
            doc = {}
        return row[0], {k: doc.get(k) for k in ("matcher_version", "source", "date", "n_scores") if k in doc}

    def calibration(self):
        """The calibration searches use: the store's latest, else biomatch's default, else None."""
        return self._calibration_entry()[1]

    def _calibration_entry(self):
        """(store calibration id or None for the default, the calibration or None)."""
        con = self._con()
        row = con.execute("SELECT id, doc FROM calibration ORDER BY id DESC LIMIT 1").fetchone()
        cache = self._cal_cache
        key = row[0] if row else None
        if cache is not None and cache[0] == key:
            return cache
        from .. import calibration as _cal

        cal = None
        if row is not None:
            cal = _cal.Calibration.from_json(row[1])
        else:
            try:
                cal = _cal.default_calibration()
            except (BiomatchError, OSError):
                cal = None
        self._cal_cache = (key, cal)
        return key, cal

    @staticmethod
    def _calibration_label(entry) -> str | None:
        """A calibration entry (:meth:`_calibration_entry`) as an audit record names it:
        ``"store:<id>"`` (one set by :meth:`set_calibration`, whose own audit record holds
        its SHA-256), ``"default:<fit date>"`` (biomatch's shipped default) or None."""
        key, cal = entry
        if cal is None:
            return None
        return f"store:{key}" if key is not None else f"default:{cal.metadata.get('date', 'unknown')}"

    def set_threshold(self, value: float, *, gallery: str | None = None, operator: str | None = None,
                      transaction_id: str | None = None) -> int:
        """Set the decision threshold (a raw single-finger score; hit when score >= value), audited.

        Parameters
        ----------
        value : float or Threshold
            Raw score in [0, 1], or a :class:`~biomatch.calibration` ``Threshold`` (its ``.value``).
        gallery : str, optional
            The gallery it applies to; None sets the store-wide default.
        """
        value = threshold_value(value)
        name = "*" if gallery is None else check_gallery_name(gallery)
        operator = check_operator(operator)
        with self._write() as con:
            old = con.execute("SELECT value FROM thresholds WHERE gallery = ?", (name,)).fetchone()
            con.execute(
                "INSERT INTO thresholds(gallery, value, set_at, operator) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(gallery) DO UPDATE SET value = excluded.value, set_at = excluded.set_at, operator = excluded.operator",
                (name, value, _audit.utc_now(), operator),
            )
            rec = _audit.append(
                con,
                "threshold",
                operator,
                {"transaction_id": check_transaction_id(transaction_id), "gallery": gallery, "threshold": value,
                 "previous": old[0] if old else None},
            )
        return rec["seq"]

    def threshold(self, gallery: str | None = None) -> float | None:
        """The configured threshold of a gallery (else the store-wide one), or None."""
        con = self._con()
        for name in ([gallery] if gallery else []) + ["*"]:
            row = con.execute("SELECT value FROM thresholds WHERE gallery = ?", (name,)).fetchone()
            if row:
                return float(row[0])
        return None
