"""Hostile input: declared sizes, lengths and counts are refused before memory is allocated.

Each case crafts a header that declares something huge (100000 x 100000 pixels,
a 4 GB record, 65535 minutiae) around a few bytes of data. The reader must raise
a biomatch error naming the input and what is wrong, allocate nothing in
proportion to the declaration (tracemalloc sees Python and NumPy memory; a spy
on Pillow's image allocator sees the pixel buffers Pillow makes in C), and
answer the next, normal request as before.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image
from test_formats import GOOD_T9, _iso_one_view, _transaction, _type14_transaction
from test_formats_fuzz import _synthetic_wsq, _type4_transaction

from biomatch import FormatError, ImageError, TemplateError
from biomatch import io as bio
from biomatch.formats import FormatWarning, load_template, read_transaction
from biomatch.io import read_image
from biomatch.template import Template

#: Most a refusal may allocate. Every declaration below would need at least 80 MB
#: if it were honoured; the inputs themselves are at most half a megabyte.
PEAK_LIMIT_BYTES = 4 * 2**20


def _refused(call, error, match):
    """Run ``call``, expect ``error`` matching ``match``; fail on a large allocation on the way."""
    made = []
    real_new = Image.core.new
    Image.core.new = lambda mode, size, *rest: made.append(size) or real_new(mode, size, *rest)
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(error, match=match) as info:
                call()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        Image.core.new = real_new
        if started:
            tracemalloc.stop()
    assert not made, f"pillow allocated image memory for {made} before refusing"
    assert peak < PEAK_LIMIT_BYTES, f"peak allocation {peak} bytes before refusing"
    return info.value


# ----------------------------------------------------------------------------
# crafted inputs
# ----------------------------------------------------------------------------


def _ridges(h=300, w=280):
    yy, xx = np.mgrid[0:h, 0:w]
    return (127 + 100 * np.sin(2 * np.pi * (xx * 0.8 + yy * 0.6) / 9.0)).astype(np.uint8)


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _png16_header(width: int, height: int) -> bytes:
    data = bytearray(_png_header(width, height))
    data[8 + 8 + 8] = 16  # IHDR bit depth: 16-bit gray
    data[8 + 8 + 13 : 8 + 8 + 17] = struct.pack(">I", zlib.crc32(bytes(data[12 : 8 + 8 + 13])))
    return bytes(data)


def _bmp_header(width: int, height: int) -> bytes:
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + 64, 0, 0, offset) + info + palette + bytes(64)


def _jpeg_header(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_ridges(64, 64)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length(2), precision(1), height(2), width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)  # the scan data of a 64x64 image


def _tiff_header(width: int, height: int) -> bytes:
    # little-endian baseline TIFF, 8-bit gray, one strip of 64 bytes
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0),
            (277, 3, 1), (278, 4, height), (279, 4, 64)]
    data_at = 8 + 2 + 12 * len(tags) + 4
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", tag, kind, 1, data_at if tag == 273 else value) for tag, kind, value in tags
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(64)


def _wsq_declaring(width: int, height: int) -> bytes:
    data = bytearray(_synthetic_wsq())
    sof = data.index(b"\xff\xa2")  # marker, length(2), black(1), white(1), height(2), width(2)
    data[sof + 6 : sof + 10] = struct.pack(">HH", height, width)
    return bytes(data)


def _type4_patched(offset: int, value: bytes) -> bytes:
    """A Type-4 transaction with ``value`` written ``offset`` bytes into the Type-4 record."""
    data = bytearray(_type4_transaction(_synthetic_wsq()))
    start = data.index(b"\x1c") + 1  # end of the Type-1 record
    data[start + offset : start + offset + len(value)] = value
    return bytes(data)


def _ansi2004_one_view(count: int) -> bytes:
    header = struct.pack(">HHHHHHHBB", 0, 0, 0, 100, 120, 197, 197, 1, 0)
    body = struct.pack(">BBBB", 1, 0, 60, count) + b"\x40\x0a\x00\x14\x20\x32" + b"\x00\x00"
    return b"FMR\x00 20\x00" + struct.pack(">HI", 0, 14 + len(header) + len(body)) + header + body


def _bmt_declaring(count: int, body: bool) -> bytes:
    header = Template._HEADER.pack(b"BMT", 1, 300, 300, 50000, 1, 50, count)
    data = header + (bytes(count * Template._RECORD.itemsize) if body else b"")
    return data + struct.pack("<I", zlib.crc32(data))


def _iso_views(n: int) -> bytes:
    data = bytearray(_iso_one_view())
    data[22] = n  # number of finger views (only one follows)
    return bytes(data)


def _iso2011_representations(n: int) -> bytes:
    return b"FMR\x00030\x00" + struct.pack(">IHB", 75, n, 0) + bytes(64)


def _type14_len(length: int) -> bytes:
    data = _type14_transaction("NONE", _ridges(20, 20).tobytes(), 20, 20)
    start = data.index(b"14.001:")
    end = data.index(b"\x1d", start)
    return data[:start] + b"14.001:%d" % length + data[end:]


# kind of input, the hostile bytes, the error, what it must say
CASES = {
    "png 100000x100000": ("image", lambda: _png_header(100_000, 100_000), ImageError,
                          r"bomb: not a readable image .*decompression bomb|bomb: declared image size 100000x100000"),
    "png 9000x9000 (above biomatch's limit, below Pillow's)": (
        "image", lambda: _png_header(9000, 9000), ImageError,
        r"bomb: declared image size 9000x9000 exceeds the limit of 80000000 pixels"),
    "tiff 100000x100000": ("image", lambda: _tiff_header(100_000, 100_000), ImageError,
                           r"bomb: not a readable image .*decompression bomb|bomb: declared image size 100000x100000"),
    "tiff 9000x9000": ("image", lambda: _tiff_header(9000, 9000), ImageError,
                       r"bomb: declared image size 9000x9000 exceeds the limit of 80000000 pixels"),
    "wsq frame 65535x65535": ("image", lambda: _wsq_declaring(65535, 65535), ImageError,
                              r"bomb: declared image size 65535x65535 exceeds the limit of 80000000 pixels"),
    "wsq frame 9000x9000": ("image", lambda: _wsq_declaring(9000, 9000), ImageError,
                            r"bomb: declared image size 9000x9000 exceeds the limit"),
    # under the decoder's 80 Mpx cap, far over what extraction accepts: refused from the header, undecoded
    **{f"{fmt} 8944x8944 (under the decode cap, over the extraction limit)": (
        "image", make, ImageError,
        r"bomb: declared image size 8944x8944 px at 500 ppi is 8944x8944 px at 500 ppi, more than the extraction "
        r"limit of 4000000 pixels .*\(refused before decoding\)")
       for fmt, make in (("png", lambda: _png_header(8944, 8944)), ("png 16-bit", lambda: _png16_header(8944, 8944)),
                         ("tiff", lambda: _tiff_header(8944, 8944)), ("bmp", lambda: _bmp_header(8944, 8944)),
                         ("jpeg", lambda: _jpeg_header(8944, 8944)), ("wsq", lambda: _wsq_declaring(8944, 8944)))},
    "an2k 1.003 CNT 5000 records": (
        "transaction", lambda: _transaction(GOOD_T9, cnt="1\x1f5000\x1e" + "\x1e".join(["9\x1f01"] * 5000)),
        FormatError, r"bomb: record 0 \(Type-1\): field 1.003 CNT: 5000 records cannot fit .*\(limit 1000\)"),
    "an2k Type-4 LEN 4 GB": ("transaction", lambda: _type4_patched(0, b"\xff\xff\xff\xff"), FormatError,
                             r"bomb: record 1 \(Type-4\): field 4.001 LEN: 4294967295 bytes does not fit"),
    "an2k Type-4 65535x65535": ("transaction", lambda: _type4_patched(5 + 8, struct.pack(">HH", 65535, 65535)),
                                FormatError, r"record 1 \(Type-4\): field HLL/VLL: image size 65535x65535 exceeds"),
    "an2k Type-4 WSQ frame 65535x65535": (
        "transaction", lambda: _type4_transaction(_wsq_declaring(65535, 65535)), FormatError,
        r"record 1 \(Type-4\): field HLL/VLL: declare 400x400 but the WSQ20 data inside declares 65535x65535"),
    # one flipped bit in a WSQ frame header: under the decoder's size cap, not what the Type-4 record says
    "an2k Type-4 WSQ frame 400x34376 in a 400x400 record": (
        "transaction", lambda: _type4_transaction(_wsq_declaring(400, 34376)), FormatError,
        r"bomb: record 1 \(Type-4\): field HLL/VLL: declare 400x400 but the WSQ20 data inside declares 400x34376 "
        r"\(corrupt record\)"),
    "an2k Type-4 record and WSQ frame both 8944x8944": (
        "transaction", lambda: _type4_transaction(_wsq_declaring(8944, 8944), 8944, 8944), FormatError,
        r"record 1 \(Type-4\): image data \(WSQ20\): declared image size 8944x8944 px at 500.126 ppi .*"
        r"more than the extraction limit of 4000000 pixels .*\(refused before decoding\)"),
    "an2k Type-14 LEN 1 GB": ("transaction", lambda: _type14_len(999_999_999), FormatError,
                              r"record 1 \(Type-14\): field 14.001 LEN: 999999999 bytes does not fit"),
    "an2k Type-14 99999x99999 uncompressed": (
        "transaction", lambda: _type14_transaction("NONE", bytes(100), 99999, 99999), FormatError,
        r"record 1 \(Type-14\): field HLL/VLL: image size 99999x99999 exceeds the limit of 80000000 pixels"),
    "an2k Type-9 MIN 99999999": ("transaction", lambda: _transaction(GOOD_T9.replace("9.010:1", "9.010:99999999")),
                                 FormatError, r"record 1 \(Type-9\): field 9.010 MIN: 99999999 outside 0..1024"),
    "iso2005 255 minutiae declared, 1 present": (
        "template", lambda: _iso_one_view(count=255), FormatError,
        r"bomb: ISO/IEC 19794-2:2005 record, view 0: field 'minutiae \(255 x 6 bytes\)': truncated"),
    "iso2005 255 views declared, 1 present": (
        "template", lambda: _iso_views(255), FormatError,
        r"ISO/IEC 19794-2:2005 record, view 1: field 'finger position': truncated"),
    "iso2011 65535 representations": (
        "template", lambda: _iso2011_representations(65535), FormatError,
        r"ISO/IEC 19794-2:2011 record: field 'number of finger representations': 65535 representations cannot fit"),
    "ansi2004 255 minutiae declared, 1 present": (
        "template", lambda: _ansi2004_one_view(255), FormatError,
        r"ANSI INCITS 378-2004 record, view 0: field 'minutiae \(255 x 6 bytes\)': truncated"),
    "bmt 65535 minutiae declared, none present": (
        "bmt", lambda: _bmt_declaring(65535, body=False), TemplateError,
        r"bomb: 65535 minutiae need 524300 bytes, found 20"),
    "bmt 65535 minutiae present": ("bmt", lambda: _bmt_declaring(65535, body=True), TemplateError,
                                   r"65535 minutiae, more than the limit 1024"),
    "bmt 65535 minutiae declared, through load_template": (
        "template", lambda: _bmt_declaring(65535, body=False), FormatError,
        r"bomb: 65535 minutiae need 524300 bytes, found 20"),
}


def _read(kind: str, data: bytes, name: str = "bomb"):
    if kind == "image":
        return read_image(data, ppi=500, name=name)
    if kind == "transaction":
        return read_transaction(data, name=name)
    if kind == "bmt":
        return Template.from_bytes(data, name=name)
    return load_template(data, name=name)


def _normal_request(kind: str):
    """A normal input of the same kind, read; its result as something comparable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "image":
            buf = io.BytesIO()
            Image.fromarray(_ridges()).save(buf, "PNG")
            return _read(kind, buf.getvalue(), "ok.png").pixels.tobytes()
        if kind == "transaction":
            return _read(kind, _transaction(GOOD_T9), "ok.an2").templates[2].minutiae.tobytes()
        if kind == "bmt":
            return _read(kind, load_template(_iso_one_view()).to_bytes(), "ok.bmt").minutiae.tobytes()
        return _read(kind, _iso_one_view(), "ok.iso").minutiae.tobytes()


@pytest.mark.parametrize("case", sorted(CASES))
def test_declared_huge_is_refused_before_allocation(case):
    kind, make, error, match = CASES[case]
    data = make()
    assert len(data) < PEAK_LIMIT_BYTES / 4
    before = _normal_request(kind)
    _refused(lambda: _read(kind, data), error, match)
    # the process is healthy: the next normal request gives the same answer as before
    assert _normal_request(kind) == before


def test_biomatch_limit_holds_without_pillows_guard(monkeypatch):
    # an embedding application may switch Pillow's own bomb guard off; biomatch's check does not depend on it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    for data in (_png_header(100_000, 100_000), _tiff_header(100_000, 100_000)):
        _refused(lambda: read_image(data, ppi=500, name="bomb"), ImageError,
                 r"bomb: declared image size 100000x100000 exceeds the limit of 80000000 pixels")


def test_wsq_bomb_starts_no_decoder(monkeypatch):
    started = []
    monkeypatch.setattr(bio, "_decode_wsq_isolated", lambda *a: started.append(a[1]))
    monkeypatch.setattr(bio, "_decode_wsq_in_process", lambda *a: started.append(a[1]))
    with pytest.raises(ImageError, match="exceeds the limit"):
        read_image(_wsq_declaring(65535, 65535), name="bomb.wsq")
    assert started == []


def test_declared_record_length_is_never_allocated():
    # A wrong length field is tolerated when every byte is accounted for (vendors get it wrong);
    # a 4 GB declaration costs nothing and is reported.
    good = _iso_one_view()
    bad = good[:8] + struct.pack(">I", 0xFFFFFFFF) + good[12:]
    with pytest.warns(FormatWarning, match="declares 4294967295 bytes"):
        template = load_template(bad)
    assert template.minutiae.tobytes() == load_template(good).minutiae.tobytes()
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_template(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT_BYTES


def test_the_allocation_check_sees_numpy_and_pillow():
    # the check itself can fail: a reader that allocates before refusing is caught
    def numpy_then_refuse():
        np.ones(2 * PEAK_LIMIT_BYTES, np.uint8)
        raise ImageError("late")

    def pillow_then_refuse():
        buf = io.BytesIO()
        Image.fromarray(_ridges(120, 120)).save(buf, "PNG")
        read_image(buf.getvalue(), ppi=500)
        raise ImageError("late")

    with pytest.raises(AssertionError, match="peak allocation"):
        _refused(numpy_then_refuse, ImageError, "late")
    with pytest.raises(AssertionError, match="pillow allocated image memory"):
        _refused(pillow_then_refuse, ImageError, "late")


def test_header_check_uses_the_resolution_the_file_states():
    # 2100 x 2100 px: 4.4 Mpx at 500 ppi (over the extraction limit), 525 x 525 at 2000 ppi (fine)
    buf = io.BytesIO()
    Image.fromarray(_ridges(2100, 2100)).save(buf, "PNG", dpi=(2000, 2000))
    assert read_image(buf.getvalue(), name="hi-res.png").ppi == pytest.approx(2000, abs=0.01)
    buf = io.BytesIO()
    Image.fromarray(_ridges(2100, 2100)).save(buf, "PNG")
    data = buf.getvalue()
    _refused(lambda: read_image(data, ppi=500, name="plain.png"), ImageError,
             r"plain\.png: declared image size 2100x2100 px at 500 ppi .*extraction limit")
    assert read_image(data, ppi=2000, name="plain.png").pixels.shape == (2100, 2100)


def test_wsq_header_resolution_is_read_before_decoding(monkeypatch):
    data = _wsq_declaring(8944, 8944).replace(b"PPI 500", b"PPI 999")  # the same length
    started = []
    monkeypatch.setattr(bio, "_decode_wsq_isolated", lambda *a: started.append(a[1]))
    with pytest.raises(ImageError, match=r"8944x8944 px at 999 ppi is 4476x4476 px at 500 ppi"):
        read_image(data, name="bomb.wsq")
    assert started == []


def test_type4_wsq_that_disagrees_with_its_record_is_refused_undecoded(monkeypatch):
    started = []
    monkeypatch.setattr(bio, "_decode_wsq_isolated", lambda *a: started.append(a[1]))
    with pytest.raises(FormatError, match=r"declare 400x400 but the WSQ20 data inside declares 1000x400"):
        read_transaction(_type4_transaction(_wsq_declaring(1000, 400)), name="flip.an2")
    assert started == []


# ----------------------------------------------------------------------------
# paths that never end: devices, FIFOs
# ----------------------------------------------------------------------------


def _readers():
    import biomatch as bm

    return {"extract": (bm.extract, ImageError), "read_image": (read_image, ImageError),
            "load_template": (load_template, FormatError), "read_transaction": (read_transaction, FormatError)}


@pytest.mark.skipif(not __import__("os").path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("reader", ["extract", "read_image", "load_template", "read_transaction"])
def test_a_device_is_refused_unread(reader):
    call, error = _readers()[reader]
    _refused(lambda: call("/dev/zero"), error, r"/dev/zero: is a character device, not .* \(only regular files are read\)")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("reader", ["extract", "read_image", "load_template", "read_transaction"])
def test_a_fifo_is_refused_without_blocking(reader, tmp_path):
    import os
    import threading

    call, error = _readers()[reader]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # The test holds the FIFO open with a little junk in it, so a reader that opens and reads it does not
    # hang the suite: it sees the junk once this end closes and fails with another message.
    holder = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    os.write(holder, b"junk")
    outcome = {}

    def run():
        try:
            call(str(fifo))
        except Exception as exc:  # noqa: BLE001 - the assertion below names what it was
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(5.0)  # a refusal needs no time; a reader that blocks is released right after
    os.close(holder)
    worker.join()
    exc = outcome.get("error")
    assert isinstance(exc, error) and "is a FIFO (named pipe), not" in str(exc), exc


def test_template_from_bytes_of_none_is_a_template_error():
    for bad in (None, 17, "BMT", [1, 2]):
        with pytest.raises(TemplateError, match=r"t: template data must be bytes, got "):
            Template.from_bytes(bad, name="t")


def test_a_colour_image_too_large_to_decode_in_the_memory_limit_is_refused_from_its_header():
    # 8000 x 8000 at 2000 ppi is within the extraction limit; in RGB it would need ~370 MiB to decode
    data = bytearray(_png_header(8000, 8000))
    data[8 + 8 + 9] = 2  # IHDR colour type: RGB
    data[8 + 8 + 13 : 8 + 8 + 17] = struct.pack(">I", zlib.crc32(bytes(data[12 : 8 + 8 + 13])))
    _refused(lambda: read_image(bytes(data), ppi=2000, name="rgb.png"), ImageError,
             r"rgb\.png: a 8000x8000 RGB image needs about 366 MiB to decode, more than the 192 MiB limit")


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs FIFOs")
def test_the_template_or_image_rule_and_the_cli_refuse_a_fifo_without_blocking(tmp_path, capsys):
    import os
    import threading

    from biomatch.cli import main
    from biomatch.formats import is_template

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    holder = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # as in the reader test above: a blocked reader is released
    os.write(holder, b"junk")
    outcome = {}

    def run():
        try:
            is_template(fifo)
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome["error"] = exc
        outcome["cli"] = main(["verify", str(fifo), str(fifo)])

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(5.0)
    os.close(holder)
    worker.join()
    assert isinstance(outcome.get("error"), FormatError) and "is a FIFO (named pipe)" in str(outcome["error"])
    err = capsys.readouterr().err
    assert outcome["cli"] == 1 and "is a FIFO (named pipe)" in err and err.count("\n") == 1
