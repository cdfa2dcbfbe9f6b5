"""What both levels of the synthetic generator share: image geometry, finger classes and their
natural frequencies, the fingerprint area, the acquisition protocol of impressions (FVC2002:
displacement, rotation, Cappelli plastic distortion), the seed streams and the argument checks.

The image level (:mod:`biomatch.synthetic_masters`, :mod:`biomatch.synthetic_impressions`) and the
template level (:mod:`biomatch.synthetic_templates`) draw from these, so that a template set and an
image set of one seed follow the same protocol; :mod:`biomatch.synthetic` is the public face.
"""

from __future__ import annotations

import numpy as np

from .errors import BiomatchError

# image geometry and finger classes (units in the names)
IMAGE_WIDTH_PX = 300
IMAGE_HEIGHT_PX = 400
PPI = 500.0

FINGER_CLASSES = ("arch", "tented_arch", "left_loop", "right_loop", "whorl")
#: Natural class frequencies (Wilson, Candela, Watson 1994), in FINGER_CLASSES order.
CLASS_PROBABILITIES = (0.037, 0.029, 0.338, 0.317, 0.279)

# fingerprint area (SFinGe shape: rectangle + 4 elliptical caps)
AREA_HALF_WIDTH_PX = (108.0, 130.0)
AREA_TOP_CAP_PX = (100.0, 130.0)
AREA_BOTTOM_CAP_PX = (60.0, 90.0)
AREA_RECT_HALF_PX = (70.0, 110.0)

# acquisition of impressions: the FVC2002 protocol both levels follow
ROTATION_SD_DEG, ROTATION_MAX_DEG = 8.0, 20.0
TRANSLATION_SD_PX, TRANSLATION_MAX_PX = 20.0, 50.0
#: FVC2002 acquisition protocol (Maio et al., ICPR 2002), repeated every 8
#: impressions: 1-2 plain, 3-4 exaggerated displacement, 5-6 exaggerated
#: rotation, 7 dry, 8 wet. Per impression (index mod 8): translation and
#: rotation scale, pressure range.
IMPRESSION_PROTOCOL = (
    (1.0, 1.0, (0.0, 1.0)),
    (1.0, 1.0, (0.0, 1.0)),
    (2.2, 1.0, (0.0, 1.0)),
    (2.2, 1.0, (0.0, 1.0)),
    (1.0, 2.2, (0.0, 1.0)),
    (1.0, 2.2, (0.0, 1.0)),
    (1.0, 1.0, (0.0, 0.3)),
    (1.0, 1.0, (0.7, 1.0)),
)
CONTACT_RADIUS_PX = (35.0, 75.0)  # Cappelli close-contact region
DISTORTION_SHIFT_SD_PX = 15.0
DISTORTION_ROT_SD_DEG = 5.0
DISTORTION_BRAKE_PX = 60.0

DEG = np.pi / 180.0

#: Largest set a generator call makes (fingers, impressions per finger).
MAX_FINGERS = 10_000_000
MAX_IMPRESSIONS = 100


#: Independent random streams: the image level, the template level (the livescan renderer has its own).
IMAGE_STREAM = 1
TEMPLATE_STREAM = 2


def keyed_rng(seed: int, *key: int) -> np.random.Generator:
    """The generator for one item: a PCG64 stream keyed by (seed, *key)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key))))


def check_seed(seed) -> int:
    """``seed`` as an int; a clear error unless a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise BiomatchError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_count(value, name: str, maximum: int) -> int:
    """``value`` as an int in 1..``maximum``; the error names it ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise BiomatchError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if not 1 <= value <= maximum:
        raise BiomatchError(f"{name} must be 1..{maximum}, got {value}")
    return value
