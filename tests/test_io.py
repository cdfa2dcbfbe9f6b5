"""Image input: formats, resolution, resampling and every refusal."""

from __future__ import annotations

import faulthandler
import io
import os
import random
import signal
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from biomatch import ImageError
from biomatch.io import (
    MAX_IMAGE_PIXELS,
    MAX_WORKING_PIXELS,
    ResolutionWarning,
    read_image,
    to_working_resolution,
    working_size,
)
from biomatch.template import MAX_PPI, MIN_PPI


def _ridges(h=300, w=280, period=9.0):
    yy, xx = np.mgrid[0:h, 0:w]
    return (127 + 100 * np.sin(2 * np.pi * (xx * 0.8 + yy * 0.6) / period)).astype(np.uint8)


def _encode(arr, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "JPEG"])
def test_reads_common_formats(fmt, tmp_path):
    arr = _ridges()
    path = tmp_path / f"f.{fmt.lower()}"
    path.write_bytes(_encode(arr, fmt))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResolutionWarning)
        img = read_image(path, ppi=500)
    assert img.pixels.shape == arr.shape and img.pixels.dtype == np.uint8
    tol = 12 if fmt == "JPEG" else 0
    assert np.abs(img.pixels.astype(int) - arr).mean() <= tol


def test_colour_and_palette_become_gray():
    arr = _ridges()
    rgb = np.stack([arr] * 3, axis=-1)
    img = read_image(_encode(rgb, "PNG"), ppi=500)
    assert img.pixels.ndim == 2 and np.array_equal(img.pixels, arr)
    pal = Image.fromarray(arr).convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert read_image(buf.getvalue(), ppi=500).pixels.ndim == 2
    rgba = np.dstack([rgb, np.full(arr.shape, 255, np.uint8)])
    assert np.array_equal(read_image(_encode(rgba, "PNG"), ppi=500).pixels, arr)


def test_resolution_precedence():
    data = _encode(_ridges(), "PNG", dpi=(1000, 1000))
    img = read_image(data, ppi=500)
    assert img.ppi == pytest.approx(1000, abs=1) and img.ppi_source == "file"
    plain = _encode(_ridges(), "PNG")
    assert read_image(plain, ppi=569).ppi == 569 and read_image(plain, ppi=569).ppi_source == "caller"
    with pytest.warns(ResolutionWarning):
        img = read_image(plain)
    assert img.ppi == 500 and img.ppi_source == "default"


@pytest.mark.parametrize("ppi", [100, 249, 2001, 1e6, float("nan"), "abc"])
def test_absurd_resolution_refused(ppi):
    with pytest.raises(ImageError, match="resolution"):
        read_image(_ridges(), ppi=ppi)


def test_file_resolution_out_of_range_refused():
    with pytest.raises(ImageError, match="resolution"):
        read_image(_encode(_ridges(), "PNG", dpi=(5000, 5000)), name="probe.png")


def test_bad_inputs_name_the_source(tmp_path):
    with pytest.raises(ImageError, match="missing.png: file not found"):
        read_image(tmp_path / "missing.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png: file is empty"):
        read_image(empty)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageError, match="junk.tif: not a readable image"):
        read_image(junk)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_encode(_ridges(), "PNG")[:400])
    with pytest.raises(ImageError, match="cut.png"):
        read_image(truncated, ppi=500)
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)


def test_small_blank_and_wrong_shape_refused():
    with pytest.raises(ImageError, match="too small"):
        read_image(_ridges(60, 300), ppi=500)
    with pytest.raises(ImageError, match="blank or uniform"):
        read_image(np.full((300, 300), 200, np.uint8), ppi=500)
    with pytest.raises(ImageError, match="2-D"):
        read_image(np.zeros((10, 10, 3), np.uint8), ppi=500)
    with pytest.raises(ImageError, match="outside 0-255"):
        read_image(np.full((300, 300), 300.0), ppi=500)
    with pytest.raises(ImageError, match="path, bytes"):
        read_image(12345)


def test_declared_size_bomb_refused_before_decoding():
    # A PNG header declaring 100000 x 100000 pixels with almost no data.
    import struct
    import zlib

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    with pytest.raises(ImageError, match="exceeds the limit|not a readable"):
        read_image(png, ppi=500, name="bomb.png")


def test_wsq_reads_pixels_and_header_resolution():
    import wsq  # noqa: F401  registers the WSQ codec with Pillow

    arr = _ridges(320, 320)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="WSQ")
    img = read_image(buf.getvalue(), ppi=500, name="finger.wsq")
    assert img.pixels.shape == arr.shape
    assert np.abs(img.pixels.astype(int) - arr).mean() < 12  # lossy
    with pytest.raises(ImageError, match="finger.wsq"):
        read_image(buf.getvalue()[:60], ppi=500, name="finger.wsq")


def test_wsq_reference_file_resolution(formats_data):
    # The file's WSQ header says 500 ppi; it wins over the caller's value.
    img = read_image(formats_data / "libbiomeval_test_data" / "img.wsq", ppi=700)
    assert img.pixels.shape == (256, 256)
    assert (img.ppi, img.ppi_source) == (500.0, "file")


def test_working_resolution_scale():
    arr = _ridges(400, 400)
    img = read_image(arr, ppi=1000)
    work, scale = to_working_resolution(img)
    assert work.shape == (200, 200) and scale == pytest.approx(2.0)
    same, one = to_working_resolution(read_image(arr, ppi=500))
    assert one == 1.0 and same is not None and same.shape == arr.shape


# ----------------------------------------------------------------------------
# WSQ: decoded in a forked child, so a crashing decoder cannot take the process down
# ----------------------------------------------------------------------------


def _wsq_with_ff(data: bytes, seed: int) -> bytes:
    """0xFF written at one random place of the file (the recipe that found the crashes)."""
    rng = random.Random(seed)
    bad = bytearray(data)
    bad[rng.randrange(len(bad))] = 0xFF
    return bytes(bad)


def _dies_in_process(data: bytes) -> int:
    """Signal that kills a forked child running the wsq package's decoder in-process on ``data`` (0: none)."""
    import _wsq

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            faulthandler.disable()  # pytest's handler would print the crash's traceback
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            _wsq.decompress(data)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


# seed -> signal the in-process decoder dies of; found by searching 3,000 seeded mutations of img.wsq
WSQ_CRASH_SEEDS = {190: signal.SIGSEGV, 40: signal.SIGABRT}


@pytest.mark.parametrize("seed", sorted(WSQ_CRASH_SEEDS))
def test_wsq_that_crashes_the_decoder_is_an_image_error(formats_data, seed):
    path = formats_data / "libbiomeval_test_data" / "img.wsq"
    good = path.read_bytes()
    bad = _wsq_with_ff(good, seed)
    # the input really is hostile: the decoder run in-process dies of it
    assert _dies_in_process(bad) == WSQ_CRASH_SEEDS[seed]
    with pytest.raises(ImageError, match=rf"probe\.wsq: corrupt WSQ data \(the decoder crashed, signal {WSQ_CRASH_SEEDS[seed]:d}\)"):
        read_image(bad, name="probe.wsq")
    # and the process is fine for the next image
    assert np.array_equal(read_image(good).pixels, read_image(path).pixels)


def test_wsq_mutations_give_only_image_errors(formats_data):
    good = (formats_data / "libbiomeval_test_data" / "img.wsq").read_bytes()
    rng = random.Random(9)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(150):
        bad = bytearray(good)
        kind = rng.randrange(4)
        if kind == 0:  # a few random bytes
            for _ in range(rng.randint(1, 8)):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
        elif kind == 1:  # a marker byte in the entropy-coded data
            bad[rng.randrange(len(bad))] = 0xFF
        elif kind == 2:  # bit flips
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        else:  # truncated
            del bad[rng.randrange(2, len(bad)) :]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResolutionWarning)
                img = read_image(bytes(bad), name="m.wsq")
        except ImageError as exc:
            assert str(exc).startswith("m.wsq: ")
            outcomes["refused"] += 1
        else:
            assert img.pixels.ndim == 2 and img.pixels.dtype == np.uint8
            outcomes["decoded"] += 1
    # both outcomes occur, so the loop exercised the decoder and its refusals
    assert outcomes["decoded"] > 0 and outcomes["refused"] > 0


def test_wsq_decoder_hang_is_stopped(formats_data, monkeypatch):
    from biomatch import io as bio

    def hang(data, name):  # runs in the forked child
        time.sleep(120)

    monkeypatch.setattr(bio, "_decode_wsq_in_process", hang)
    monkeypatch.setattr(bio, "WSQ_DECODE_TIMEOUT_S", 0.5)
    with pytest.raises(ImageError, match=r"slow\.wsq: WSQ decoding took longer than 0\.5 s"):
        read_image(formats_data / "libbiomeval_test_data" / "img.wsq", name="slow.wsq")


def test_wsq_decoder_output_is_bounded_and_checked(formats_data, monkeypatch):
    from biomatch import io as bio

    path = formats_data / "libbiomeval_test_data" / "img.wsq"  # frame header: 256 x 256
    monkeypatch.setattr(bio, "_decode_wsq_in_process", lambda data, name: (np.zeros((2000, 2000), np.uint8), 500.0))
    with pytest.raises(ImageError, match="more pixels than the frame header declares"):
        read_image(path, name="big.wsq")
    monkeypatch.setattr(bio, "_decode_wsq_in_process", lambda data, name: (np.zeros((200, 256), np.uint8), 500.0))
    with pytest.raises(ImageError, match="frame header declares 256x256 but the data decodes to 256x200"):
        read_image(path, name="short.wsq")

    def fail(data, name):
        raise RuntimeError("not a biomatch error")

    monkeypatch.setattr(bio, "_decode_wsq_in_process", fail)
    with pytest.raises(ImageError, match=r"odd\.wsq: corrupt WSQ data \(the decoder failed, exit code 1\)"):
        read_image(path, name="odd.wsq")


# ----------------------------------------------------------------------------
# working-image budget: the per-image bound on extraction time and memory
# ----------------------------------------------------------------------------


def test_budget_admits_every_real_finger_image_at_every_resolution():
    # the largest finger image a booking system sends: a 4-finger plain slap, 3.2 x 3.0 in
    for ppi in (MIN_PPI, 500, 1000, MAX_PPI):
        w, h = round(3.2 * ppi), round(3.0 * ppi)
        assert w * h <= MAX_IMAGE_PIXELS  # decodable
        ww, wh = working_size(w, h, ppi)
        assert (ww, wh) == (1600, 1500) and ww * wh <= MAX_WORKING_PIXELS
    # what the decoder limit still admits at the ends of the resolution range is refused by the budget
    assert working_size(8944, 8944, MAX_PPI)[0] ** 2 > MAX_WORKING_PIXELS  # 80 Mpx at 2000 ppi -> 5 Mpx
    assert np.prod(working_size(8944, 8944, MIN_PPI)) > 60 * MAX_WORKING_PIXELS  # enlarged 2x at 250 ppi


def test_working_image_over_budget_is_refused_before_resampling(monkeypatch):
    resized = []
    real_resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, *a, **k: resized.append(self.size) or real_resize(self, *a, **k))
    # at 250 ppi the image is enlarged 2x: 1000 x 1000 fills the budget exactly, one more column is over it
    work, scale = to_working_resolution(read_image(_ridges(1000, 1000), ppi=250))
    assert work.shape == (2000, 2000) and scale == pytest.approx(0.5) and resized == [(1000, 1000)]
    resized.clear()
    big = read_image(_ridges(1000, 1001), ppi=250, name="card.png")
    with pytest.raises(ImageError, match=r"card\.png: image 1001x1000 px at 250 ppi is 2002x2000 px at 500 ppi, "
                                         r"more than the extraction limit of 4000000 pixels"):
        to_working_resolution(big)
    # at 500 ppi nothing is resampled, and the budget still applies
    with pytest.raises(ImageError, match=r"2001x2000 px at 500 ppi.*extraction limit"):
        to_working_resolution(read_image(_ridges(2000, 2001), ppi=500))
    assert resized == []


def test_extract_refuses_an_over_budget_image_before_any_stage(monkeypatch):
    import biomatch as bm
    from biomatch import extraction
    from biomatch import io as bio

    monkeypatch.setattr(bio, "MAX_WORKING_PIXELS", 100_000)  # so that a small image is over it
    stages = []
    real_normalize = extraction.normalize  # the first stage after resampling
    monkeypatch.setattr(extraction, "normalize", lambda *a, **k: stages.append("normalize") or real_normalize(*a, **k))
    with pytest.raises(ImageError, match=r"wide\.png: .*more than the extraction limit of 100000 pixels"):
        bm.extract(read_image(_ridges(300, 400), ppi=500, name="wide.png"))
    assert stages == []
    # the next request is fine
    assert isinstance(bm.extract(read_image(_ridges(300, 300), ppi=500)), bm.Template) and stages == ["normalize"]


def test_sixteen_bit_gray_is_stretched_onto_eight_bits():
    arr = _ridges().astype(np.uint16) * 200 + 1000  # 1000 .. 52000
    img = read_image(_encode(arr, "PNG"), ppi=500)
    lo, hi = float(arr.min()), float(arr.max())
    expected = ((arr.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    assert img.pixels.dtype == np.uint8 and np.array_equal(img.pixels, expected)


def test_eight_bit_pixels_are_read_exactly_in_strips():
    arr = _ridges(1000, 333)  # more rows than one strip, an odd width
    assert np.array_equal(read_image(_encode(arr, "PNG"), ppi=500).pixels, arr)
    assert np.array_equal(read_image(_encode(arr, "TIFF"), ppi=500).pixels, arr)
