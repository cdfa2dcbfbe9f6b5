"""1:1 accuracy on hard synthetic livescan prints, per extractor front end.

The FVC B sets are clean next to what booking stations capture, so this
benchmark renders held-out synthetic fingers (seed 2026; the ridge model
trained on seed 7) as hard livescan prints (:func:`biomatch.synthetic_livescan.render_livescan`)
and runs the FVC all-pairs protocol on them:

* each finger keeps one sensor and one scale (ridge period) for all its
  impressions, as one finger on one booking station does; skin condition,
  creases, scars, WSQ and placement vary per impression;
* genuine = every pair of impressions of one finger (fingers x C(k, 2)),
  impostor = every pair of impressions of different fingers;
* reported per front end: EER, FNMR at FMR 1% / 0.1%, failures to enrol
  (an image refused by the extractor scores 0 against everything).

    python -m benchmarks.livescan_verification                  # 50 fingers x 4, drawn skin
    python -m benchmarks.livescan_verification --skin dry       # every impression dry
    python -m benchmarks.livescan_verification --sensor optical --fingers 30
    python -m benchmarks.livescan_verification --seed 2027 --fingers 40 --front-end learned-mask \
        --grow-logit -3 --grow-logit -5      # the tuning sweep of LEARNED_MASK_GROW_LOGIT (seed 2027, never reported)

Rendered images are cached as PNG under $BIOMATCH_BENCH_CACHE
(default /tmp/biomatch-bench-cache), keyed by the renderer's source.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.accuracy_matching import all_pairs_scores, error_rates
from benchmarks.synthetic_realism import HELD_OUT_SEED

#: Stream of the per-finger draws (sensor, scale), apart from the renderer's own.
_FINGER_STREAM = 0x11FE


def finger_conditions(finger: int, seed: int, sensor: str | None) -> tuple[str, float]:
    """The sensor and scale one finger keeps for all its impressions."""
    from biomatch.synthetic_livescan import SCALE_RANGE, SENSORS

    rng = np.random.default_rng([seed, _FINGER_STREAM, finger])
    drawn = SENSORS[int(rng.integers(len(SENSORS)))]
    return sensor or drawn, round(float(rng.uniform(*SCALE_RANGE)), 4)


def _renderer_key() -> str:
    import biomatch

    root = Path(biomatch.__file__).parent
    h = hashlib.sha1()
    for p in sorted(root.glob("synthetic*.py")):  # the generator's modules and the livescan renderer
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def rendered_prints(n_fingers: int, impressions: int, seed: int, sensor: str | None, skin: str | None):
    """Paths of the rendered PNGs and their finger labels (rendered once, then read from the cache)."""
    from PIL import Image

    from biomatch import synthetic as S
    from biomatch.synthetic_livescan import render_livescan

    cache = (Path(os.environ.get("BIOMATCH_BENCH_CACHE", "/tmp/biomatch-bench-cache")) / "livescan" / _renderer_key()
             / f"seed{seed}-{sensor or 'any'}-{skin or 'any'}")
    cache.mkdir(parents=True, exist_ok=True)
    paths, labels = [], []
    for f in range(n_fingers):
        master = None
        finger_sensor, scale = finger_conditions(f, seed, sensor)
        for j in range(impressions):
            path = cache / f"{f}_{j}.png"
            if not path.exists():
                master = master or S.make_finger(f, seed)
                live = render_livescan(S.make_impression(master, j), seed, sensor=finger_sensor, skin=skin, scale=scale)
                Image.fromarray(live.pixels).save(path)
            paths.append(path)
            labels.append(f)
    return paths, np.array(labels)


def templates_of(paths, front_end: str):
    """Templates in their stored (quantised) form and the number of failures to enrol."""
    from biomatch.extraction import extract_detailed
    from biomatch.template import MINUTIA_DTYPE, Template

    out, failures = [], 0
    for p in paths:
        try:
            t = extract_detailed(p, ppi=500, front_end=front_end).template
            out.append(Template.from_bytes(t.to_bytes()))
        except Exception:  # noqa: BLE001 - a failure to enrol is counted and scores 0
            failures += 1
            out.append(Template(np.zeros(0, dtype=MINUTIA_DTYPE), 300, 300, 500))
    return out, failures


def main(argv=None):
    from biomatch.extraction import FRONT_ENDS
    from biomatch.synthetic_livescan import SENSORS, SKIN_CONDITIONS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fingers", type=int, default=50)
    ap.add_argument("--impressions", type=int, default=4)
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="master seed (the ridge model trained on 7)")
    ap.add_argument("--sensor", choices=SENSORS, default=None, help="one sensor for every finger (default: drawn per finger)")
    ap.add_argument("--skin", choices=SKIN_CONDITIONS, default=None, help="one skin condition for every impression")
    ap.add_argument("--front-end", choices=FRONT_ENDS, action="append", default=None,
                    help="front end(s) to measure (default: all of biomatch.extraction.FRONT_ENDS)")
    ap.add_argument("--grow-logit", type=float, action="append", default=None,
                    help="learned-mask: measure with this LEARNED_MASK_GROW_LOGIT instead of the shipped one (repeatable)")
    args = ap.parse_args(argv)
    if args.fingers < 2 or args.impressions < 2:
        ap.error("--fingers and --impressions must be at least 2")

    paths, labels = rendered_prints(args.fingers, args.impressions, args.seed, args.sensor, args.skin)
    n = len(paths)
    genuine = args.fingers * args.impressions * (args.impressions - 1) // 2
    print(f"synthetic livescan, seed {args.seed}, {args.fingers} fingers x {args.impressions} impressions, "
          f"sensor {args.sensor or 'drawn per finger'}, skin {args.skin or 'drawn per impression'}; "
          f"{genuine} genuine, {n * (n - 1) // 2 - genuine} impostor comparisons; load {os.getloadavg()[0]:.1f}")
    print("\n| front end | EER % | FMR100 % | FMR1000 % | FTE | extraction s |")
    print("|---|---|---|---|---|---|")
    from biomatch import extraction

    shipped = extraction.LEARNED_MASK_GROW_LOGIT
    runs = [(f, None) for f in args.front_end or FRONT_ENDS if f != "learned-mask" or not args.grow_logit]
    if "learned-mask" in (args.front_end or FRONT_ENDS) and args.grow_logit:
        runs += [("learned-mask", g) for g in args.grow_logit]
    for front_end, grow in runs:
        extraction.LEARNED_MASK_GROW_LOGIT = shipped if grow is None else grow
        try:
            t0 = time.perf_counter()
            templates, failures = templates_of(paths, front_end)
            seconds = time.perf_counter() - t0
        finally:
            extraction.LEARNED_MASK_GROW_LOGIT = shipped
        g, i, _, _ = all_pairs_scores(templates, labels)
        r = error_rates(g, i)
        label = front_end if grow is None else f"{front_end} (grow logit {grow:g})"
        print(f"| {label} | {100 * r['eer']:.2f} | {100 * r['fmr100']:.2f} | {100 * r['fmr1000']:.2f} | "
              f"{failures}/{n} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
