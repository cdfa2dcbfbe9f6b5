"""Image input: formats, resolution, resampling and every refusal."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from biomatch import ImageError
from biomatch.io import ResolutionWarning, read_image, to_working_resolution


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
