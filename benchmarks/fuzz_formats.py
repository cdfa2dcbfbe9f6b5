"""Fuzz campaign for the standard-format readers (ISO/ANSI minutiae records, ANSI/NIST-ITL transactions).

Mutates the real sample files (bit flips; bytes overwritten with separators,
digits, 0x00/0xFF; truncation; random insertions; splices from other samples;
numbers in text fields replaced by empty, zero or huge ones), feeds each
mutant to the reader of its family (``read_templates`` or ``read_transaction``
with image decoding) and counts outcomes. Anything other than a result or a
``FormatError`` is a failure, as is any input that takes more than
``--slow-s`` seconds; failing inputs are written to ``--out`` (outside the
repository) for replay.

Usage::

    python -m benchmarks.fuzz_formats --seconds 240 --seed 7

Prints one JSON summary line: inputs tried; per reader (``read_templates``,
``read_transaction``) and per sample file the outcome counts, slow inputs,
median and maximum milliseconds per input; FormatErrors grouped by the field
they name; other exceptions by type (each a failure); WSQ decoder crashes
contained in the worker process; the failures themselves. The campaign runs
in this process, so a crash of the interpreter itself ends it without a
summary: a summary line means there was none.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEPARATOR_BYTES = [0x00, 0x01, 0x1C, 0x1D, 0x1E, 0x1F, 0x2E, 0x30, 0x39, 0x3A, 0xFF]
HUGE_NUMBERS = [b"", b"0", b"-1", b"99999999999", b"4294967296", b"65535"]


#: The field a FormatError names ("... field 'x/y': ..." or "... field 9.137 FMD minutia 3 x: ...").
_FIELD = re.compile(r"field '([^']+)'|field (\d+\.\d+(?: [A-Z]+)?)")
_READERS = {"minutiae": "read_templates", "transaction": "read_transaction"}


def error_kind(message: str) -> str:
    """A short label for a FormatError: the field it names, else its first words after the file/record prefix."""
    m = _FIELD.search(message)
    if m:
        label = m.group(1) or m.group(2)
    else:
        label = " ".join(re.split(r"\): |: ", message, maxsplit=2)[-1].split()[:4])
    return re.sub(r"\d+", "N", label) if not m or m.group(1) else label


def default_data_dir() -> Path:
    env = os.environ.get("BIOMATCH_REFERENCE_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def sample_files(data_dir: Path) -> dict:
    files = {}
    for path in sorted((data_dir / "formats").rglob("*")):
        if not path.is_file():
            continue
        name = path.name
        if name.endswith((".an2", ".an2k")):
            files[str(path)] = ("transaction", path.read_bytes())
        elif name.endswith((".raw",)) or name.startswith("fmr."):
            files[str(path)] = ("minutiae", path.read_bytes())
    for path in sorted((data_dir / "fvc2002_b").glob("DB*_B/10[1-3]_1.iso")):
        files[str(path)] = ("minutiae", path.read_bytes())
    return files


def mutate(rng: random.Random, data: bytes, donors: list) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not out:
            break
        kind = rng.randrange(7)
        at = rng.randrange(len(out))
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(out))
                out[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            out[at] = rng.choice(SEPARATOR_BYTES + [rng.randrange(256)])
        elif kind == 2:
            del out[at:]
        elif kind == 3:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
        elif kind == 4:
            donor = rng.choice(donors)
            j = rng.randrange(len(donor))
            out[at : at + rng.randint(0, 64)] = donor[j : j + rng.randint(1, 512)]
        elif kind == 5:
            head = bytes(out[: min(len(out), 8000)])
            runs = list(re.finditer(rb"\d+", head))
            if runs:
                m = rng.choice(runs)
                out[m.start() : m.end()] = rng.choice(HUGE_NUMBERS)
        else:
            # bytes near the start (headers, lengths, counts) are where parsers break
            i = rng.randrange(min(len(out), 64))
            out[i] = rng.randrange(256)
    return bytes(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="campaign length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow-s", type=float, default=1.0, help="an input slower than this is a failure")
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "biomatch_fuzz_formats")
    args = parser.parse_args(argv)

    from biomatch.errors import FormatError
    from biomatch.formats import read_templates, read_transaction

    files = sample_files(args.data)
    if not files:
        print(f"no sample files under {args.data}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    names = sorted(files)
    donors = [files[n][1] for n in names]
    stats = {fam: {"inputs": 0, "ok": 0, "format_error": 0, "other_error": 0, "slow": 0, "times": []}
             for fam in ("minutiae", "transaction")}
    per_file = {n: collections.Counter() for n in names}
    format_errors = collections.Counter()
    other_errors = collections.Counter()
    wsq_crashes = 0
    failures = []
    start = time.perf_counter()
    warnings.simplefilter("ignore")
    while time.perf_counter() - start < args.seconds:
        name = rng.choice(names)
        family, original = files[name]
        data = mutate(rng, original, donors)
        s = stats[family]
        t0 = time.perf_counter()
        try:
            if family == "transaction":
                read_transaction(data)
            else:
                read_templates(data)
            outcome = "ok"
        except FormatError as exc:
            outcome = "format_error"
            text = str(exc)
            format_errors[error_kind(text)] += 1
            wsq_crashes += "decoder crashed" in text
        except Exception as exc:  # noqa: BLE001 - that is what we are looking for
            outcome = "other_error"
            other_errors[type(exc).__name__] += 1
            path = args.out / f"fail_{args.seed}_{s['inputs']}_{family}.bin"
            path.write_bytes(data)
            failures.append({"source": name, "saved": str(path), "error": f"{type(exc).__name__}: {exc}"[:300],
                             "trace": traceback.format_exc(limit=4)[-600:]})
        dt = time.perf_counter() - t0
        s["inputs"] += 1
        s[outcome] += 1
        s["times"].append(dt)
        per_file[name][outcome] += 1
        if dt > args.slow_s:
            s["slow"] += 1
            path = args.out / f"slow_{args.seed}_{s['inputs']}_{family}.bin"
            path.write_bytes(data)
            failures.append({"source": name, "saved": str(path), "error": f"slow: {dt:.2f} s"})
    summary = {"seconds": round(time.perf_counter() - start, 1), "seed": args.seed, "files": len(files),
               "slow_limit_s": args.slow_s}
    summary["inputs"] = sum(stats[f]["inputs"] for f in stats)
    for fam, s in stats.items():
        times = sorted(s.pop("times"))
        s["median_ms"] = round(1000 * times[len(times) // 2], 3) if times else None
        s["max_ms"] = round(1000 * times[-1], 1) if times else None
        summary[_READERS[fam]] = s
    summary["per_file"] = {Path(n).relative_to(args.data).as_posix() if Path(n).is_relative_to(args.data) else n: dict(c)
                           for n, c in per_file.items()}
    summary["format_errors_by_field"] = dict(format_errors.most_common(25))
    summary["format_error_kinds"] = len(format_errors)
    summary["other_errors_by_type"] = dict(other_errors)
    summary["wsq_decoder_crashes_contained"] = wsq_crashes
    summary["failures"] = failures[:20]
    summary["failure_count"] = len(failures)
    print(json.dumps(summary))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
