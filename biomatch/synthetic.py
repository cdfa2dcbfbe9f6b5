"""Synthetic fingerprints: images (SFinGe-like) and minutiae templates at scale.

Two levels, both deterministic for a seed (finger ``i`` is the same whatever
the number of fingers asked for):

**Images** (:func:`make_finger`, :func:`generate_images`), in the spirit of
SFinGe (Cappelli, Maio, Maltoni, "Synthetic fingerprint-image generation",
ICPR 2000; Handbook of Fingerprint Recognition, ch. 6):

1. fingerprint area: a rectangle closed by four elliptical caps;
2. class drawn in natural proportions (arch 3.7 %, tented arch 2.9 %, left
   loop 33.8 %, right loop 31.7 %, whorl 27.9 %; Wilson, Candela, Watson,
   "Neural network fingerprint classification", J. Artificial Neural
   Networks 1994, the figures SFinGe uses);
3. orientation field from the singular points by the Sherlock-Monro zero-pole
   model, each singularity's argument bent by a random piecewise-linear
   function (Vizcaya-Gerhardt); arches from an analytic arch flow;
4. ridge-period map (about 9 px at 500 ppi, wider above the core);
5. master ridge pattern grown from random seeds by iterative contextual
   filtering with oriented Gabor kernels (a precomputed bank indexed by
   orientation and period bin), saturated at each step;
6. master minutiae: crossing number on the thinned binary master;
7. impressions: displacement, rotation, Cappelli's plastic distortion
   (undistorted close-contact region, braked rigid shift outside it),
   pressure (ridge thickness, contact size), dry-skin specks and wet
   smudges, partial contact, noise, background; 8-bit gray, ridges dark,
   300x400 pixels at 500 ppi. Impression ``j`` follows the FVC2002
   acquisition protocol for ``j mod 8`` (plain, exaggerated displacement,
   exaggerated rotation, dry, wet). The master minutiae mapped into each
   impression that fall in its contact area are its ground truth.

**Templates** (:func:`template_batch`, :func:`generate_templates`): master
minutiae sets (jittered lattice for a minimum spacing, directions from the
same orientation model, ending/bifurcation mix) and mated impressions
(rigid motion, plastic distortion, crop and partial contact, missing and
spurious minutiae, position/angle jitter, type errors, quality), vectorised
over blocks of fingers. The extraction error model (missed and spurious
minutiae, position/angle/type errors) has a part that repeats on every
impression of a finger and a part drawn anew per impression; its sizes are
those measured with ``biomatch.extract`` on the synthetic images against
their ground truth (``benchmarks/bench_synthetic.py``).

Files follow the FVC layout: ``FINGER_IMPRESSION.png`` (FINGER and
IMPRESSION from 1) or ``FINGER_IMPRESSION.bmt`` (:meth:`Template.to_bytes`),
ground truth in ``truth/``, and a ``manifest.json``.

The model lives in :mod:`biomatch.synthetic_params` (what both levels share: geometry, classes,
acquisition protocol, seeds), :mod:`biomatch.synthetic_masters` (steps 1-6),
:mod:`biomatch.synthetic_impressions` (step 7) and :mod:`biomatch.synthetic_templates` (the
template level); this module writes the sets to disk and keeps every name importable from here.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import BiomatchError
# the generator's names, importable from here as before (the ones this module does not use are re-exports)
from .synthetic_impressions import TRUTH_CONTACT_MIN, Impression, make_impression
from .synthetic_masters import (GABOR_SIGMA_ACROSS, GABOR_SIGMA_ALONG, GABOR_SIZE_PX, GROWTH_GAIN, GROWTH_ITERATIONS,
                                MINUTIA_BORDER_PX, MINUTIA_MIN_DISTANCE_PX, N_ORIENT_BINS, PERIOD_ABOVE_CORE_PX,
                                PERIOD_MAX_PX, PERIOD_MIN_PX, PERIOD_STEP_PX, RIDGE_PERIOD_PX, SEED_SPACING_PX,
                                SMALL_FEATURES, SMALL_FEATURES_PER_FINGER, DIRECTION_SAMPLE_MAX_PX, DIRECTION_SAMPLE_MIN_PX, MasterFinger, make_finger)
from .synthetic_params import (AREA_BOTTOM_CAP_PX, AREA_HALF_WIDTH_PX, AREA_RECT_HALF_PX, AREA_TOP_CAP_PX,
                               CLASS_PROBABILITIES, CONTACT_RADIUS_PX, DEG, DISTORTION_BRAKE_PX,
                               DISTORTION_ROT_SD_DEG, DISTORTION_SHIFT_SD_PX, FINGER_CLASSES, IMAGE_HEIGHT_PX,
                               IMAGE_WIDTH_PX, IMPRESSION_PROTOCOL, MAX_FINGERS, MAX_IMPRESSIONS, PPI,
                               ROTATION_MAX_DEG, ROTATION_SD_DEG, TRANSLATION_MAX_PX, TRANSLATION_SD_PX, check_count,
                               check_seed)
from .synthetic_templates import (BAD_REGIONS_BASE, BAD_REGIONS_MAX, BAD_REGIONS_PER_BAD, BAD_REGION_MISSING,
                                  BAD_REGION_RADIUS_PX, BAD_REGION_SHARE, BIAS_ANGLE_DEG, BIAS_POS_PX, BORDER_BAND_PX,
                                  BORDER_MISSING, CONTACT_SEMI_AXES_PX, ENDING_FRACTION, IMPRESSION_QUALITY_MEAN,
                                  IMPRESSION_QUALITY_SD, JITTER_ANGLE_DEG, JITTER_POS_PX, LATTICE_CELLS,
                                  LATTICE_JITTER, MASTER_MINUTIAE_RANGE, MISSING_BASE, MISSING_HARD_SHARE,
                                  MISSING_PER_BAD, PERSISTENT_SPURIOUS_MAX, PERSISTENT_SPURIOUS_MEAN,
                                  PERSISTENT_SPURIOUS_SHOW, SPURIOUS_BASE, SPURIOUS_EDGE_SHARE, SPURIOUS_MAX,
                                  SPURIOUS_PER_BAD, TEMPLATE_AREA_HALF_HEIGHT_PX, TEMPLATE_BLOCK_FINGERS, TYPE_FLIP,
                                  TYPE_FLIP_IMPRESSION, TemplateBlock, template_batch)

__all__ = [
    "GENERATOR_VERSION",
    "FINGER_CLASSES",
    "CLASS_PROBABILITIES",
    "MasterFinger",
    "Impression",
    "make_finger",
    "make_impression",
    "generate_images",
    "TemplateBlock",
    "template_batch",
    "generate_templates",
    "read_manifest",
]

GENERATOR_VERSION = "1.1"


# ---------------------------------------------------------------------------
# writing sets (FVC layout, manifest)
# ---------------------------------------------------------------------------
def _png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = _io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG", dpi=(PPI, PPI), optimize=False, compress_level=9)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _prepare_out(out) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "truth").mkdir(exist_ok=True)
    except OSError as exc:
        raise BiomatchError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    return out


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise BiomatchError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _write_finger(out: Path, f: int, n_impressions: int, seed: int):
    """Make finger f and its impressions, write them; return (name, finger info, file entries)."""
    master = make_finger(f, seed)
    name_f = str(f + 1)
    files: dict = {}
    data = master.template().to_bytes()
    _write(out / "truth" / f"{name_f}_master.bmt", data)
    files[f"truth/{name_f}_master.bmt"] = {"sha256": _sha256(data)}
    info = {
        "class": master.finger_class,
        "master_minutiae": int(master.minutiae.size),
        "singularities": master.singularities,
    }
    for j in range(n_impressions):
        imp = make_impression(master, j)
        stem = f"{name_f}_{j + 1}"
        png = _png_bytes(imp.pixels)
        _write(out / f"{stem}.png", png)
        truth = imp.truth.to_bytes()
        _write(out / "truth" / f"{stem}.bmt", truth)
        files[f"{stem}.png"] = {
            "sha256": _sha256(png),
            "pixels_sha256": _sha256(imp.pixels.tobytes()),
            "truth_minutiae": len(imp.truth),
            "params": imp.params,
        }
        files[f"truth/{stem}.bmt"] = {"sha256": _sha256(truth)}
    return name_f, info, files


def generate_images(out, n_fingers: int, n_impressions: int, seed: int = 0, *, first_finger: int = 0,
                    workers: int = 1, progress: Callable[[int], None] | None = None) -> dict:
    """Write ``n_fingers`` x ``n_impressions`` synthetic finger images into ``out``.

    Files: ``F_I.png`` (8-bit gray, 500 dpi in pHYs; F from ``first_finger + 1``,
    I from 1), ``truth/F_I.bmt`` (ground-truth minutiae of that image),
    ``truth/F_master.bmt`` (master minutiae) and ``manifest.json``.

    Parameters
    ----------
    workers : int
        Processes to use (1 = this one); the files do not depend on it.
    progress : callable(int), optional
        Called with the number of images just written.

    Returns
    -------
    dict
        The manifest that was written.
    """
    seed = check_seed(seed)
    n_fingers = check_count(n_fingers, "fingers", MAX_FINGERS)
    n_impressions = check_count(n_impressions, "impressions", MAX_IMPRESSIONS)
    if isinstance(first_finger, bool) or not isinstance(first_finger, (int, np.integer)) or first_finger < 0:
        raise BiomatchError(f"first_finger must be a non-negative integer, got {first_finger!r}")
    workers = check_count(workers, "workers", 256)
    out = _prepare_out(out)
    files: dict = {}
    fingers: dict = {}
    indices = range(int(first_finger), int(first_finger) + n_fingers)
    if workers == 1:
        results = (_write_finger(out, f, n_impressions, seed) for f in indices)
        pool = None
    else:
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_write_finger, [out] * n_fingers, indices, [n_impressions] * n_fingers, [seed] * n_fingers)
    try:
        for name_f, info, finger_files in results:
            fingers[name_f] = info
            files.update(finger_files)
            if progress is not None:
                progress(n_impressions)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    manifest = {
        "generator": "biomatch.synthetic",
        "generator_version": GENERATOR_VERSION,
        "kind": "images",
        "seed": seed,
        "parameters": {
            "fingers": n_fingers,
            "first_finger": int(first_finger),
            "impressions": n_impressions,
            "width_px": IMAGE_WIDTH_PX,
            "height_px": IMAGE_HEIGHT_PX,
            "ppi": PPI,
            "class_probabilities": dict(zip(FINGER_CLASSES, CLASS_PROBABILITIES)),
        },
        "fingers": fingers,
        "files": files,
    }
    _write(out / "manifest.json", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest


def read_manifest(folder) -> dict:
    """Read ``manifest.json`` of a synthetic set."""
    path = Path(folder) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise BiomatchError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise BiomatchError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def generate_templates(out, n_fingers: int, n_impressions: int, seed: int = 0, *, first_finger: int = 0,
                       progress: Callable[[int], None] | None = None) -> dict:
    """Write synthetic templates ``F_I.bmt`` (F, I from 1) and ``manifest.json`` into ``out``.

    Returns the manifest (per-file sha256, class and master minutiae count of each finger).
    ``progress``, if given, is called with the number of templates just written.
    """
    seed = check_seed(seed)
    n_fingers = check_count(n_fingers, "fingers", MAX_FINGERS)
    n_impressions = check_count(n_impressions, "impressions", MAX_IMPRESSIONS)
    out = _prepare_out(out)
    files: dict = {}
    fingers: dict = {}
    for tb in template_batch(n_fingers, n_impressions, seed, first_finger=first_finger):
        for k in range(len(tb)):
            data = tb.template(k).to_bytes()
            name = f"{int(tb.finger[k]) + 1}_{int(tb.impression[k]) + 1}.bmt"
            _write(out / name, data)
            files[name] = {"sha256": _sha256(data), "minutiae": int(tb.offsets[k + 1] - tb.offsets[k])}
        for i in range(tb.finger_class.size):
            fingers[str(tb.first + i + 1)] = {"class": FINGER_CLASSES[int(tb.finger_class[i])],
                                               "master_minutiae": int(tb.master_counts[i])}
        if progress is not None:
            progress(len(tb))
    manifest = {
        "generator": "biomatch.synthetic",
        "generator_version": GENERATOR_VERSION,
        "kind": "templates",
        "seed": seed,
        "parameters": {"fingers": n_fingers, "first_finger": int(first_finger), "impressions": n_impressions,
                       "width_px": IMAGE_WIDTH_PX, "height_px": IMAGE_HEIGHT_PX, "ppi": PPI,
                       "block_fingers": TEMPLATE_BLOCK_FINGERS,
                       "class_probabilities": dict(zip(FINGER_CLASSES, CLASS_PROBABILITIES))},
        "fingers": fingers,
        "files": files,
    }
    _write(out / "manifest.json", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return manifest
