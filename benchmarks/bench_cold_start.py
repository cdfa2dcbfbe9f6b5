"""Cold start: wall time of fresh processes running ``import biomatch; biomatch.extract(IMG)``.

Reports the median of N fresh processes for: an empty interpreter (the
baseline), ``import biomatch`` alone, ``import scipy.ndimage`` alone (the
largest dependency extraction needs), and import + one extraction.  A warm-up
process runs first so numba's on-disk caches exist.  One JSON line on stdout
(see ``benchmarks/_report.py``); no target is asserted, ``ok`` is false only
when a child process fails.

    nice -n 10 python -m benchmarks.bench_cold_start --image ../shared/data/fvc2002_b/DB1_B/101_1.tif
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from biomatch.bench import reference_data_dir

from ._report import finish

#: An FVC2002 DB1_B print from the reference data ($BIOMATCH_REFERENCE_DATA or ../shared/data).
DEFAULT_IMAGE = (reference_data_dir() or Path("../shared/data")) / "fvc2002_b" / "DB1_B" / "101_1.tif"


def _wall(code: str) -> float:
    t0 = time.perf_counter()
    # Run from a neutral folder: with -c the working directory goes first on
    # sys.path, and a source checkout's biomatch/ (no built extension) would
    # shadow the installed package.
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, cwd=tempfile.gettempdir(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="finger image to extract (default: an FVC2002 DB1_B print)")
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per case (median reported)")
    ap.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error(f"--runs must be at least 1, got {args.runs}")
    if not args.image.is_file():
        ap.error(f"--image {args.image}: no such file")
    cases = {
        "python_s": "pass",
        "import_s": "import biomatch",
        "import_scipy_ndimage_s": "import scipy.ndimage",
        "import_extract_s": f"import biomatch; biomatch.extract({str(args.image.resolve())!r})",
    }
    summary: dict = {"benchmark": "cold_start", "image": str(args.image), "runs": args.runs,
                     "load_average": list(os.getloadavg())}
    try:
        _wall(cases["import_extract_s"])  # warm numba caches and the OS file cache
        for name, code in cases.items():
            times = [_wall(code) for _ in range(args.runs)]
            summary[name] = round(statistics.median(times), 4)
        summary["ok"] = True
    except subprocess.CalledProcessError as exc:
        summary["ok"] = False
        summary["error"] = f"child process failed: {exc}"
    summary["load_average_end"] = list(os.getloadavg())
    return finish(summary, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
