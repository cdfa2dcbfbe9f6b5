"""Where the benchmark data lives and how to read it.

Shared by every benchmark: the reference data folder (real FVC images and
format samples, never copied into the repository), the FVC layout
(``FINGER_IMPRESSION.ext``), each database's resolution, and the vendor ISO
templates beside the FVC2002 images mapped back to the image frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biomatch import bench as _bench

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Resolution of each FVC database: the one table, :data:`biomatch.bench.KNOWN_PPI` (500 unless listed).
FVC_PPI = _bench.KNOWN_PPI
#: The real-sensor databases; DB4 of each competition is synthetic (SFinGe).
REAL_DBS = ("DB1_B", "DB2_B", "DB3_B")
#: Frame the FVC2002 vendor ISO templates were extracted in (image resized to it, aspect ignored).
VENDOR_FRAME = (300, 400)


def reference_data_dir() -> Path:
    """The reference data folder (:func:`biomatch.bench.reference_data_dir`); exits when absent."""
    path = _bench.reference_data_dir()
    if path is None:
        raise SystemExit(f"reference data not found; set {_bench.REFERENCE_DATA_ENV} or place it in ../shared/data")
    return path


@dataclass(frozen=True)
class Sample(_bench.Sample):
    """One impression of an FVC database (:class:`biomatch.bench.Sample`), with its vendor template."""

    @property
    def vendor_template_path(self) -> Path:
        return self.path.with_suffix(".iso")


def list_samples(folder: Path, ppi: float | None = None) -> list[Sample]:
    """Every ``FINGER_IMPRESSION.ext`` image of one database folder, sorted by finger then impression
    (:func:`biomatch.bench.list_dataset`, the one FVC lister); empty when it holds none."""
    folder = Path(folder)
    if not any(_bench.FVC_IMAGE_NAME.match(p.name) for p in folder.iterdir()):
        return []
    return [Sample(s.db, s.finger, s.impression, s.path, s.ppi) for s in _bench.list_dataset(folder, ppi)]


def fvc_db(competition: str, db: str) -> list[Sample]:
    """Samples of one FVC database, e.g. ``fvc_db("fvc2002_b", "DB1_B")``."""
    return list_samples(reference_data_dir() / competition / db)


def map_vendor_minutiae(minutiae: np.ndarray, width: int, height: int) -> np.ndarray:
    """Map minutiae from the 300x400 vendor frame to a ``width`` x ``height`` image.

    Positions scale per axis; a direction (cos t, sin t) scales the same way, so
    the angle becomes atan2(sin t * sy, cos t * sx).
    """
    sx = width / VENDOR_FRAME[0]
    sy = height / VENDOR_FRAME[1]
    out = minutiae.copy()
    out["x"] = np.minimum(minutiae["x"] * sx, width - 1)
    out["y"] = np.minimum(minutiae["y"] * sy, height - 1)
    angle = minutiae["angle"].astype(np.float64)
    out["angle"] = np.mod(np.arctan2(np.sin(angle) * sy, np.cos(angle) * sx), 2 * np.pi)
    return out


def vendor_template(sample: Sample, width: int, height: int):
    """The vendor ISO template beside ``sample``, in the image's pixel frame."""
    from biomatch.formats import load_template
    from biomatch.template import Template

    record = load_template(sample.vendor_template_path)
    return Template(
        map_vendor_minutiae(record.minutiae, width, height),
        width,
        height,
        sample.ppi,
        record.position,
        record.quality,
    )


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    from PIL import Image

    with Image.open(path) as img:
        return img.size
