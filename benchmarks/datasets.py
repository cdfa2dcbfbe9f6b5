"""Where the benchmark data lives and how to read it.

Shared by every benchmark: the reference data folder (real FVC images and
format samples, never copied into the repository), the FVC layout
(``FINGER_IMPRESSION.ext``), each database's resolution, and the vendor ISO
templates beside the FVC2002 images mapped back to the image frame.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Resolution of each FVC database (from the data README); 500 unless listed.
FVC_PPI = {
    ("fvc2002_b", "DB2_B"): 569.0,
}
#: The real-sensor databases; DB4 of each competition is synthetic (SFinGe).
REAL_DBS = ("DB1_B", "DB2_B", "DB3_B")
#: Frame the FVC2002 vendor ISO templates were extracted in (image resized to it, aspect ignored).
VENDOR_FRAME = (300, 400)

_NAME = re.compile(r"^(\d+)_(\d+)\.(tif|tiff|png|bmp|jpg|jpeg|wsq)$", re.IGNORECASE)


def reference_data_dir() -> Path:
    """$BIOMATCH_REFERENCE_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("BIOMATCH_REFERENCE_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        raise SystemExit(f"reference data not found at {path}; set BIOMATCH_REFERENCE_DATA")
    return path


@dataclass(frozen=True)
class Sample:
    """One impression in an FVC-style folder."""

    finger: int
    impression: int
    path: Path
    ppi: float

    @property
    def vendor_template_path(self) -> Path:
        return self.path.with_suffix(".iso")


def list_samples(folder: Path, ppi: float | None = None) -> list[Sample]:
    """Every ``FINGER_IMPRESSION.ext`` image in ``folder``, sorted by finger then impression."""
    folder = Path(folder)
    if ppi is None:
        ppi = FVC_PPI.get((folder.parent.name, folder.name), 500.0)
    out = []
    for path in folder.iterdir():
        m = _NAME.match(path.name)
        if m:
            out.append(Sample(int(m.group(1)), int(m.group(2)), path, ppi))
    out.sort(key=lambda s: (s.finger, s.impression))
    return out


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
