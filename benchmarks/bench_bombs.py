"""Decompression and declaration bombs: how long each reader takes to refuse one, and how much memory.

Every case is a small input that declares (or decompresses to) something huge:
real, fully valid compressed images of 8944 x 8944 zero pixels (PNG 8- and
16-bit, TIFF deflate, JPEG, JPEG 2000 when Pillow has it), a PNG at 2000 ppi
just over the extraction limit, headers that declare it around a few bytes
(BMP, WSQ frame header), ANSI/NIST-ITL transactions carrying them (Type-4 WSQ
whose frame header disagrees with its record, Type-14 PNG), record counts and
lengths that cannot fit, minutiae records declaring 255 x 255 minutiae, and
paths that never end (``/dev/zero``, a FIFO). Each case runs in a fresh child
process (``spawn``) that imports biomatch first, then reads the bomb; the child
reports the wall time of the read, its outcome (the error type and message) and
how far its resident memory rose above where it stood before the read (peak
RSS reset just before it: Linux ``clear_refs``; else ``ru_maxrss``), and the
peak of the WSQ decoder's own child process. The target is every bomb refused
with a biomatch error in under 1 s and 200 MB.

A reference case, a legitimate 2000 ppi image that is accepted (2600 x 2600 px,
650 x 650 px at 500 ppi), shows what an accepted image of that size costs.

Usage::

    python -m benchmarks.bench_bombs [--out bombs.json] [--only NAME ...]

Prints a table and writes the figures as JSON with ``--out``. Not a test: the
figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: Side of the bombs (pixels): 80 Mpx, just under biomatch's decode cap, 20x the extraction limit.
BOMB_SIDE_PX = 8944
#: The target: refused in less than this wall time and peak memory.
TARGET_S = 1.0
TARGET_MB = 200.0


# ----------------------------------------------------------------------------
# the bombs
# ----------------------------------------------------------------------------


def _save(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_zeros(side: int, depth: int, dpi: int | None = None) -> bytes:
    """A valid PNG of side x side zero pixels, streamed through zlib (never held as pixels)."""
    row = b"\0" + bytes(side * depth // 8)  # filter byte + pixels
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    out = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, depth, 0, 0, 0, 0))
    if dpi:
        ppm = int(round(dpi / 0.0254))
        out += _png_chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1))
    return out + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _bmp_header(side: int) -> bytes:
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 0, 0, 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + 64, 0, 0, offset) + info + palette + bytes(64)


def _ridges(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (127 + 100 * np.sin(2 * np.pi * (xx * 0.8 + yy * 0.6) / 9.0)).astype(np.uint8)


def _wsq_small() -> bytes:
    import wsq  # noqa: F401 (registers the WSQ codec with Pillow)
    from PIL import Image

    return _save(Image.fromarray(_ridges(400, 400)), "WSQ")


def _wsq_declaring(width: int, height: int) -> bytes:
    data = bytearray(_wsq_small())
    sof = data.index(b"\xff\xa2")
    data[sof + 6 : sof + 10] = struct.pack(">HH", height, width)
    return bytes(data)


def _type1(cnt: str) -> bytes:
    head = f"1.002:0400\x1d1.003:{cnt}\x1d1.004:CAR\x1d1.008:O\x1d1.009:T"
    for guess in range(len(head) + 8, len(head) + 40):
        r1 = f"1.001:{guess}\x1d{head}\x1c".encode()
        if len(r1) == guess:
            return r1
    raise AssertionError("no self-consistent Type-1 length")


def _type4(image: bytes, width: int, height: int) -> bytes:
    body = bytes([0, 2, 255, 255, 255, 255, 255, 0]) + struct.pack(">HHB", width, height, 1) + image
    return _type1("1\x1f1\x1e4\x1f01") + struct.pack(">IB", 5 + len(body), 1) + body


def _type14(image: bytes, width: int, height: int, cga: str) -> bytes:
    fields = [f"14.002:01", "14.003:0", "14.004:ORI", "14.005:20261202", f"14.006:{width}", f"14.007:{height}",
              "14.008:1", "14.009:500", "14.010:500", f"14.011:{cga}", "14.012:8", "14.013:2"]
    text = "\x1d".join(fields) + "\x1d14.999:"
    for guess in range(len(text) + len(image) + 8, len(text) + len(image) + 30):
        rec = f"14.001:{guess}\x1d{text}".encode() + image + b"\x1c"
        if len(rec) == guess:
            return _type1("1\x1f1\x1e14\x1f01") + rec
    raise AssertionError("no self-consistent Type-14 length")


def _iso_255x255() -> bytes:
    """An ISO 19794-2:2005 record declaring 255 views of 255 minutiae, holding one view of one."""
    view = struct.pack(">BBBB", 1, 0, 60, 255) + b"\x40\x0a\x00\x14\x20\x32" + b"\x00\x00"
    header = b"FMR\x00 20\x00" + struct.pack(">IHHHHHBB", 28 + len(view), 0, 300, 400, 197, 197, 255, 0)
    return header + view


def build_cases(folder: Path) -> dict:
    """{name: (reader, path)}: every bomb written to ``folder``."""
    from PIL import Image, features

    side = BOMB_SIDE_PX
    cases: dict[str, tuple[str, bytes | str]] = {}
    cases["png 8-bit 8944x8944 zeros (valid)"] = ("image", _png_zeros(side, 8))
    cases["png 16-bit 8944x8944 zeros (valid)"] = ("image", _png_zeros(side, 16))
    cases["png 2000 ppi 8944x8944 (4472^2 at 500 ppi)"] = ("image", _png_zeros(side, 8, dpi=2000))
    zeros = Image.new("L", (side, side))
    cases["tiff deflate 8944x8944 zeros (valid)"] = ("image", _save(zeros, "TIFF", compression="tiff_deflate"))
    cases["jpeg 8944x8944 zeros (valid)"] = ("image", _save(zeros, "JPEG", quality=10))
    if features.check("jpg_2000"):
        cases["jpeg2000 8944x8944 zeros (valid)"] = ("image", _save(zeros, "JPEG2000", quality_mode="rates",
                                                                     quality_layers=[200]))
    del zeros
    cases["bmp header 8944x8944"] = ("image", _bmp_header(side))
    cases["wsq frame header 8944x8944"] = ("image", _wsq_declaring(side, side))
    cases["an2k Type-4: WSQ frame 400x34376 in a 400x400 record (one flipped bit)"] = (
        "transaction", _type4(_wsq_declaring(400, 34376), 400, 400))
    cases["an2k Type-4: record and WSQ frame 8944x8944"] = ("transaction", _type4(_wsq_declaring(side, side), side, side))
    cases["an2k Type-14: PNG 8944x8944 zeros"] = ("transaction", _type14(_png_zeros(side, 8), side, side, "PNG"))
    cases["an2k Type-1 CNT 5000 records"] = ("transaction", _type1("1\x1f5000\x1e" + "\x1e".join(["9\x1f01"] * 5000)))
    cases["iso 19794-2 255 views x 255 minutiae declared"] = ("template", _iso_255x255())
    cases["/dev/zero as an image"] = ("image", "/dev/zero")
    cases["/dev/zero as a transaction"] = ("transaction", "/dev/zero")
    cases["/dev/zero as a template"] = ("template", "/dev/zero")
    cases["FIFO as an image"] = ("image", "fifo")
    # reference: a legitimate 2000 ppi image that is accepted (not a bomb)
    cases["reference: accepted 2600x2600 ridges at 2000 ppi"] = ("image", _save(Image.fromarray(_ridges(2600, 2600)), "PNG",
                                                                                 dpi=(2000, 2000)))
    # the most the header check lets through: 64 Mpx at 2000 ppi (4 Mpx at 500 ppi) is decoded; zeros, so then
    # refused as blank - what decoding the largest admissible image costs
    cases["png 8000x8000 zeros at 2000 ppi (largest admissible: decoded, then blank)"] = ("image", _png_zeros(8000, 8, dpi=2000))
    cases["png 16-bit 8000x8000 zeros at 2000 ppi (largest admissible: decoded, then blank)"] = ("image", _png_zeros(8000, 16, dpi=2000))
    rgb = Image.new("RGB", (8000, 8000))
    cases["png RGB 8000x8000 at 2000 ppi (over the decode memory limit)"] = ("image", _save(rgb, "PNG", dpi=(2000, 2000)))
    del rgb
    out = {}
    for i, (name, (reader, data)) in enumerate(cases.items()):
        if data == "fifo":
            path = folder / "fifo"
            os.mkfifo(path)
        elif isinstance(data, str):
            path = Path(data)
        else:
            path = folder / f"case{i:02d}.bin"
            path.write_bytes(data)
        out[name] = (reader, str(path), path.stat().st_size if path.is_file() else None)
    return out


# ----------------------------------------------------------------------------
# one measurement, in a fresh process
# ----------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset the process's peak RSS (Linux: clear_refs 5); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        _status_kb("VmHWM")
        return True
    except OSError:
        return False


def _child(reader: str, path: str, queue) -> None:  # runs in the spawned child
    import resource
    import warnings

    import biomatch  # noqa: F401 (imports counted in the baseline, not in the read)
    from biomatch.errors import BiomatchError
    from biomatch.formats import load_template, read_transaction
    from biomatch.io import read_image

    warnings.simplefilter("ignore")
    call = {"image": lambda: read_image(path, ppi=500), "transaction": lambda: read_transaction(path),
            "template": lambda: load_template(path)}[reader]
    hwm = _reset_peak()  # so that the peak the imports reached does not hide the read's
    base = _status_kb("VmRSS") if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        result = call()
        outcome = f"accepted ({type(result).__name__})"
        refused = False
    except BiomatchError as exc:
        outcome, refused = f"{type(exc).__name__}: {exc}", True
    except BaseException as exc:  # noqa: BLE001 - a foreign exception is a finding, reported
        outcome, refused = f"FOREIGN {type(exc).__name__}: {exc}", False
    seconds = time.perf_counter() - t0
    own = _status_kb("VmHWM") if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the WSQ decoder process, if any
    queue.put({"seconds": seconds, "refused": refused, "outcome": outcome[:240], "baseline_mb": base / 1024,
               "peak_mb": own / 1024, "added_mb": (own - base) / 1024, "decoder_child_mb": children / 1024})


def measure(reader: str, path: str, timeout_s: float = 120.0) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(reader, path, queue))
    proc.start()
    try:
        return queue.get(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - a hang or a crash is the finding
        return {"seconds": None, "refused": False, "outcome": f"no answer within {timeout_s:g} s (exit {proc.exitcode})",
                "baseline_mb": None, "peak_mb": None, "added_mb": None, "decoder_child_mb": None}
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--only", nargs="*", help="case names containing one of these words")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bombs-") as tmp:
        cases = build_cases(Path(tmp))
        for name, (reader, path, size) in cases.items():
            if args.only and not any(word in name for word in args.only):
                continue
            r = measure(reader, path)
            # the read's own peak: what the read added to the process, or the decoder child's whole peak
            cost = max(r["added_mb"] or 0.0, r["decoder_child_mb"] or 0.0) if r["seconds"] is not None else None
            ok = (name.startswith("reference") or
                  (r["refused"] and r["seconds"] < TARGET_S and cost is not None and cost < TARGET_MB))
            rows.append({"case": name, "reader": reader, "input_bytes": size, "cost_mb": cost, "meets_target": ok, **r})
            secs = f"{r['seconds']:.3f}" if r["seconds"] is not None else "  -  "
            mb = f"{cost:7.1f}" if cost is not None else "    -  "
            print(f"{'ok  ' if ok else 'MISS'} {secs:>7} s {mb} MB  {size or 0:>10} B  {name}\n"
                  f"                                        {r['outcome'][:150]}", flush=True)
    bombs = [r for r in rows if not r["case"].startswith("reference")]
    summary = {"bombs": len(bombs), "refused_in_target": sum(r["meets_target"] for r in bombs),
               "max_seconds": max((r["seconds"] or 0.0) for r in bombs) if bombs else None,
               "max_mb": max((r["cost_mb"] or 0.0) for r in bombs) if bombs else None,
               "target": {"seconds": TARGET_S, "mb": TARGET_MB}}
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "cases": rows}, indent=1))
    return 0 if summary["refused_in_target"] == len(bombs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
