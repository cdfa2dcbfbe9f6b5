"""Reading finger images: PNG, TIFF, BMP, JPEG (Pillow) and WSQ (the ``wsq`` package).

WSQ is decoded in a forked child process: the NBIS decoder segfaults on some
corrupt data, and a hostile file must not take the process down.

:func:`read_image` returns a :class:`FingerImage` (8-bit gray pixels plus the
resolution and where it came from). :func:`to_working_resolution` resamples it
to the 500 ppi at which extraction runs; the scale factor maps results back to
the original pixel frame.

Bad input raises :class:`~biomatch.errors.ImageError` naming the source and
the reason: unreadable or truncated files, resolutions outside 250-2000 ppi,
images too small to hold a print, declared sizes so large they would exhaust
memory, blank or uniform images, WSQ data that crashes or hangs the decoder,
and images whose 500 ppi working image exceeds :data:`MAX_WORKING_PIXELS` (it
bounds the time and memory extraction spends on one image). Sizes are checked
from the file's header (Pillow's, or the WSQ frame header), against the
resolution the header states, before any pixel is decoded, and so is the
memory decoding would take (:data:`MAX_DECODE_BYTES`). Files are read with
:func:`read_file_bounded`: regular files only (not FIFOs, devices or sockets),
at most :data:`MAX_IMAGE_FILE_BYTES`.
"""

from __future__ import annotations

import io as _io
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ImageError
from .template import MAX_PPI, MIN_PPI

__all__ = [
    "FingerImage",
    "read_image",
    "to_working_resolution",
    "WORKING_PPI",
    "DEFAULT_PPI",
    "MIN_PRINT_SIDE_IN",
    "MAX_IMAGE_PIXELS",
    "MAX_WORKING_PIXELS",
    "working_size",
    "read_file_bounded",
    "read_file_head",
    "encoded_size",
    "MAX_IMAGE_FILE_BYTES",
    "MAX_DECODE_BYTES",
]

WORKING_PPI = 500.0
DEFAULT_PPI = 500.0
#: Smallest side (inches) an image may have: 0.2 in = 100 px at 500 ppi.
MIN_PRINT_SIDE_IN = 0.2
#: Largest image accepted, checked from the header before decoding (a rolled
#: ten-print card at 1000 ppi is about 8000x8000).
MAX_IMAGE_PIXELS = 80_000_000
#: Largest image extraction works on, in pixels of the 500 ppi working image.
#: Extraction time and memory grow in proportion to this count, so this is the
#: per-image time bound (a 2000 x 2000 working image extracts in about 2.5 s on
#: a shared 2-core machine). The largest finger image a booking system sends is
#: a 4-finger plain slap, at most 3.2 x 3.0 in (ANSI/NIST-ITL, FBI EBTS): 1600 x
#: 1500 = 2.4 Mpx at 500 ppi whatever the scan resolution (a 1000 ppi slap is
#: resampled down). 4 Mpx (2000 x 2000 px, 4 x 4 in) leaves room for scanners
#: that crop generously. It is checked once the working size is known and before
#: resampling: a 250 ppi image is enlarged 2x, so it may hold at most 1 Mpx,
#: while a 2000 ppi one may hold 64 Mpx (under MAX_IMAGE_PIXELS).
MAX_WORKING_PIXELS = 4_000_000
#: Largest image file read (an uncompressed 16-bit 64 Mpx image, the most a
#: 2000 ppi image may hold, is 128 MB); larger files are refused unread.
MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024
#: Most memory decoding one image may take (Pillow's pixels plus the 8-bit gray result, estimated from
#: the header before decoding): admits the largest image extraction accepts, 64 Mpx at 2000 ppi, in 8-bit
#: (128 MiB) or 16-bit (192 MiB) gray; a colour or transparent image of that size is refused.
MAX_DECODE_BYTES = 192 * 2**20
#: Image formats Pillow may decode: the finger-image formats of the ANSI/NIST-ITL
#: and ISO standards. Others (EPS, PSD, ...) are refused unparsed.
PIL_FORMATS = ("PNG", "TIFF", "BMP", "JPEG", "JPEG2000")
#: Pillow's plugin module of each of PIL_FORMATS.
_PIL_PLUGINS = {"PNG": "PngImagePlugin", "TIFF": "TiffImagePlugin", "BMP": "BmpImagePlugin",
                "JPEG": "JpegImagePlugin", "JPEG2000": "Jpeg2KImagePlugin"}
#: Below this gray-level standard deviation an image is treated as blank.
MIN_CONTRAST_STD = 4.0
#: Seconds a WSQ decode may take in its child process (a 1000 ppi rolled print decodes in well under 1 s).
WSQ_DECODE_TIMEOUT_S = 20.0


class ResolutionWarning(UserWarning):
    """The image carries no resolution and none was given: 500 ppi assumed."""


@dataclass(frozen=True)
class FingerImage:
    """A decoded finger image.

    Attributes
    ----------
    pixels : ndarray of uint8, shape (height, width)
        Gray levels, ridges dark; read-only.
    ppi : float
        Resolution in pixels per inch.
    name : str
        Where it came from (file name or a caller-given label), for messages.
    ppi_source : str
        ``"file"``, ``"caller"`` or ``"default"``.
    """

    pixels: np.ndarray
    ppi: float
    name: str = "image"
    ppi_source: str = "caller"

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def _check_ppi(ppi, name: str, what: str) -> float:
    try:
        value = float(ppi)
    except (TypeError, ValueError):
        raise ImageError(f"{name}: {what} resolution {ppi!r} is not a number") from None
    if not np.isfinite(value) or not (MIN_PPI <= value <= MAX_PPI):
        raise ImageError(f"{name}: {what} resolution {value:g} ppi is outside the supported {MIN_PPI:g}-{MAX_PPI:g} ppi")
    return value


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _open_regular(path, name: str, what: str, error) -> tuple[int, os.stat_result]:
    """A read descriptor of a regular file, opened without blocking (a FIFO's open waits for a writer), and its
    status, checked on the open descriptor (no race with a rename); ``error`` naming ``name`` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{name}: file not found") from None
    except IsADirectoryError:
        raise error(f"{name}: is a directory, not {what}") from None
    except OSError as exc:
        raise error(f"{name}: cannot read file ({exc.strerror or exc})") from None
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise error(f"{name}: cannot read file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = next((label for test, label in _FILE_KINDS if test(info.st_mode)), "not a regular file")
        raise error(f"{name}: is {kind}, not {what} (only regular files are read)")
    return fd, info


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_file_bounded(path, max_bytes: int, name: str, what: str, error=ImageError) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, read without blocking on anything else.

    ``/dev/zero`` would be read until memory runs out and a FIFO would block
    forever, so the file is opened non-blocking, its kind checked on the open
    descriptor, and at most ``max_bytes + 1`` bytes are read (a regular file
    may still grow while it is read).

    Raises
    ------
    error
        (:class:`ImageError` unless told otherwise) naming ``name``: missing or
        unreadable files, directories, FIFOs, devices, sockets and files over
        ``max_bytes``.
    """
    fd, info = _open_regular(path, name, what, error)
    try:
        if info.st_size > max_bytes:
            raise error(f"{name}: {info.st_size} bytes, larger than the {max_bytes}-byte limit for {what}")
        data = _read_at_most(fd, max_bytes + 1)
    except OSError as exc:
        raise error(f"{name}: cannot read file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise error(f"{name}: more than the {max_bytes}-byte limit for {what} (the file grew while read)")
    return data


def read_file_head(path, n_bytes: int, name: str, what: str, error=ImageError) -> bytes:
    """The first ``n_bytes`` of a regular file (fewer when it is shorter), refusing other kinds as :func:`read_file_bounded`."""
    fd, _ = _open_regular(path, name, what, error)
    try:
        return _read_at_most(fd, n_bytes)
    except OSError as exc:
        raise error(f"{name}: cannot read file ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _wsq_header(data: bytes, name: str) -> tuple[int, int, float | None]:
    """Width, height (Start-Of-Frame marker) and resolution (NISTCOM ``PPI``, None when absent), before decoding."""
    pos = 2
    n = len(data)
    ppi = None
    while pos + 4 <= n:
        marker = data[pos : pos + 2]
        if marker[0] != 0xFF:
            break
        if marker[1] == 0xA2:  # SOF: length(2) black(1) white(1) height(2) width(2)
            if pos + 10 > n:
                break
            height, width = struct.unpack_from(">HH", data, pos + 6)
            return width, height, ppi
        if marker[1] in (0xA0, 0xA1):
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            break
        if marker[1] == 0xA8:  # COM; the NISTCOM one holds "PPI <n>" (-1: unknown)
            ppi = _nistcom_ppi(data[pos + 4 : pos + 2 + length]) or ppi
        pos += 2 + length
    raise ImageError(f"{name}: WSQ data holds no valid frame header (truncated or corrupt)")


def _nistcom_ppi(comment: bytes) -> float | None:
    if not comment.startswith(b"NIST_COM"):
        return None
    for line in comment.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == b"PPI":
            try:
                ppi = float(value)
            except ValueError:
                return None
            return ppi if ppi > 0 else None
    return None


def _decode_wsq(data: bytes, name: str, ppi: float | None, file_ppi_first: bool) -> tuple[np.ndarray, float | None]:
    width, height, file_ppi = _wsq_header(data, name)
    _check_declared_size(width, height, file_ppi if file_ppi_first else None, ppi, name)  # before any decoder runs or allocates
    if not hasattr(os, "fork"):  # pragma: no cover - platforms without fork
        return _decode_wsq_in_process(data, name)
    pixels, decoded_ppi = _decode_wsq_isolated(data, name, width * height)
    if pixels.shape != (height, width):
        raise ImageError(
            f"{name}: WSQ frame header declares {width}x{height} but the data decodes to "
            f"{pixels.shape[1]}x{pixels.shape[0]} (corrupt)"
        )
    return pixels, decoded_ppi


def _decode_wsq_in_process(data: bytes, name: str) -> tuple[np.ndarray, float | None]:
    try:
        import _wsq  # C decoder shipped by the ``wsq`` package; returns the header's ppi too
    except ImportError as exc:  # pragma: no cover - dependency is declared
        raise ImageError(f"{name}: WSQ support needs the 'wsq' package ({exc})") from None
    try:
        buf, w, h, ppi = _wsq.decompress(data)
    except Exception as exc:
        raise ImageError(f"{name}: cannot decode WSQ data ({exc})") from None
    if w * h != len(buf) or w <= 0 or h <= 0:
        raise ImageError(f"{name}: WSQ decoder returned {len(buf)} bytes for a {w}x{h} image")
    pixels = np.frombuffer(bytes(buf), dtype=np.uint8).reshape(h, w)
    return pixels, (float(ppi) if ppi and ppi > 0 else None)


_WSQ_REPLY = struct.Struct(">cIId")  # status b"K"/b"E", height, width, ppi (0: none); then pixels or message


def _wsq_child(data: bytes, name: str, fd: int) -> None:  # pragma: no cover - runs in the forked child
    import faulthandler

    code = 0
    try:
        faulthandler.disable()  # a crash here is reported by the parent as an ImageError
        # the C decoder prints its complaints on stderr; the error message carries them instead
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            pixels, ppi = _decode_wsq_in_process(data, name)
            reply = _WSQ_REPLY.pack(b"K", pixels.shape[0], pixels.shape[1], ppi or 0.0) + pixels.tobytes()
        except ImageError as exc:
            reply = _WSQ_REPLY.pack(b"E", 0, 0, 0.0) + str(exc).encode("utf-8", "replace")
        view = memoryview(reply)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        code = 1
    finally:
        os._exit(code)  # never return into the parent's stack, flush nothing of the parent's


def _decode_wsq_isolated(data: bytes, name: str, pixel_count: int) -> tuple[np.ndarray, float | None]:
    """Decode WSQ in a forked child process.

    The WSQ decoder (NIST NBIS C code in the ``wsq`` package) can crash the whole
    process with a segmentation fault on corrupt data (found by fuzzing), and an
    image arriving at a booking desk must never take the process down. The fork
    costs a few milliseconds per image; the parent reads at most the pixels the
    frame header declared and kills a child that runs past
    :data:`WSQ_DECODE_TIMEOUT_S`.
    """
    import select
    import signal
    import time

    limit = _WSQ_REPLY.size + pixel_count + 65536  # pixels, or an error message
    read_fd, write_fd = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork() in threaded processes; the child only runs the decoder
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise ImageError(f"{name}: cannot start the WSQ decoder process ({exc.strerror or exc})") from None
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _wsq_child(data, name, write_fd)
    os.close(write_fd)
    chunks, received, failure, finished = [], 0, None, False
    deadline = time.monotonic() + WSQ_DECODE_TIMEOUT_S
    poller = select.poll()  # not select(): no FD_SETSIZE limit in processes holding many files
    poller.register(read_fd, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                failure = f"WSQ decoding took longer than {WSQ_DECODE_TIMEOUT_S:g} s (decoder stopped)"
                break
            if not poller.poll(left * 1000.0):
                continue
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                finished = True
                break
            received += len(chunk)
            if received > limit:
                failure = "corrupt WSQ data (the decoder returned more pixels than the frame header declares)"
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        if not finished:  # timed out, too much output, or interrupted: stop the child
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover
                pass
        _, status = os.waitpid(pid, 0)
    if failure is not None:
        raise ImageError(f"{name}: {failure}")
    if os.WIFSIGNALED(status):
        raise ImageError(f"{name}: corrupt WSQ data (the decoder crashed, signal {os.WTERMSIG(status)})")
    reply = b"".join(chunks)
    if os.WEXITSTATUS(status) != 0 or len(reply) < _WSQ_REPLY.size:
        raise ImageError(f"{name}: corrupt WSQ data (the decoder failed, exit code {os.WEXITSTATUS(status)})")
    kind, h, w, ppi = _WSQ_REPLY.unpack_from(reply)
    body = reply[_WSQ_REPLY.size :]
    if kind != b"K":
        raise ImageError(body.decode("utf-8", "replace"))
    if len(body) != h * w:
        raise ImageError(f"{name}: corrupt WSQ data (the decoder returned {len(body)} bytes for a {w}x{h} image)")
    return np.frombuffer(body, dtype=np.uint8).reshape(h, w), (ppi if ppi > 0 else None)


def _check_pixel_count(width: int, height: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: declared image size {width}x{height} is empty")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{name}: declared image size {width}x{height} exceeds the limit of {MAX_IMAGE_PIXELS} pixels"
        )


def _working_limit_problem(width: int, height: int, ppi: float) -> str | None:
    """Why an image of this size and resolution is over :data:`MAX_WORKING_PIXELS` (None when it is not)."""
    new_w, new_h = working_size(width, height, ppi)
    if new_w * new_h <= MAX_WORKING_PIXELS:
        return None
    return (f"{width}x{height} px at {ppi:g} ppi is {new_w}x{new_h} px at {WORKING_PPI:g} ppi, "
            f"more than the extraction limit of {MAX_WORKING_PIXELS} pixels "
            f"({MAX_WORKING_PIXELS / WORKING_PPI**2:g} sq in, larger than any finger or slap image)")


def _check_declared_size(width: int, height: int, file_ppi: float | None, ppi: float | None, name: str) -> None:
    """Refuse, from the header alone, a size no extraction would accept, at the resolution read_image will use."""
    _check_pixel_count(width, height, name)
    if file_ppi is not None:
        resolution = _check_ppi(file_ppi, name, "file")
    elif ppi is not None:
        resolution = _check_ppi(ppi, name, "given")
    else:
        resolution = DEFAULT_PPI
    problem = _working_limit_problem(width, height, resolution)
    if problem:
        raise ImageError(f"{name}: declared image size {problem} (refused before decoding)")


def _pil_ppi(img) -> float | None:
    dpi = img.info.get("dpi")
    if dpi:
        try:
            value = float(dpi[0])
        except (TypeError, ValueError, IndexError):
            return None
        # Pillow reports 72 (or 1) for files that only carry a default; treat as absent.
        if value > 100:
            return value
    return None


def _decode_bytes_per_pixel(img) -> int:
    """Peak bytes per pixel of decoding ``img`` and making it 8-bit gray (Pillow holds multi-band pixels in 4 bytes)."""
    if img.mode in ("1", "L") or (img.mode == "P" and "transparency" not in img.info):
        return 3  # decoded + the array (+ the gray conversion of a 1-bit or palette image)
    if img.mode.startswith("I;16"):
        return 3  # decoded + the 8-bit result (converted a strip at a time)
    if img.mode in ("RGBA", "LA", "PA", "P"):
        return 18  # RGBA copy, white background, composite, gray, array
    return 6  # decoded (4) + gray + array


def _check_decode_bytes(img, name: str) -> None:
    width, height = img.size
    need = width * height * _decode_bytes_per_pixel(img)
    if need > MAX_DECODE_BYTES:
        raise ImageError(
            f"{name}: a {width}x{height} {img.mode} image needs about {need / 2**20:.0f} MiB to decode, more than the "
            f"{MAX_DECODE_BYTES / 2**20:.0f} MiB limit (refused before decoding; an 8-bit gray image may be larger)"
        )


def _pil_image():
    """PIL's ``Image`` with the plugins of :data:`PIL_FORMATS` registered.

    Importing them by name keeps ``Image.open`` from importing all of PIL's
    ~50 plugins on the first format outside its preinit set (TIFF): about 40
    ms of a one-shot extraction's cold start.
    """
    import importlib

    from PIL import Image

    for fmt in PIL_FORMATS:
        importlib.import_module(f"PIL.{_PIL_PLUGINS[fmt]}")
    return Image


def _decode_pil(data: bytes, name: str, ppi: float | None, file_ppi_first: bool) -> tuple[np.ndarray, float | None]:
    from PIL import UnidentifiedImageError

    Image = _pil_image()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(_io.BytesIO(data), formats=PIL_FORMATS)  # reads the header only
            _check_declared_size(img.size[0], img.size[1], _pil_ppi(img) if file_ppi_first else None, ppi, name)
            _check_decode_bytes(img, name)
            img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError, TypeError) as exc:
        raise ImageError(f"{name}: cannot decode image, truncated or corrupt ({exc})") from None
    file_ppi = _pil_ppi(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = _stretch_to_uint8(img)
    else:
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            # Composite on white so transparent background reads as paper, not ink.
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        if img.mode != "L":
            img = img.convert("L")
        pixels = _strips_to_array(img)
    del img
    return pixels, file_ppi


#: Rows converted (16/32-bit gray) or counted (contrast) at a time, so the temporaries stay small.
_STRETCH_ROWS = 256


def _strips_to_array(img) -> np.ndarray:
    """An 8-bit Pillow image as an array, copied a strip at a time (``np.asarray`` of a whole image goes
    through ``tobytes``, which holds the pixels twice more while it joins them)."""
    width, height = img.size
    out = np.empty((height, width), np.uint8)
    for start in range(0, height, _STRETCH_ROWS):
        stop = min(height, start + _STRETCH_ROWS)
        out[start:stop] = np.asarray(img.crop((0, start, width, stop)), dtype=np.uint8)
    return out


def _stretch_to_uint8(img) -> np.ndarray:
    """Map the gray range of a 16/32-bit Pillow image linearly onto 0-255 (a flat image becomes 0), a strip at a time."""
    lo, hi = (float(v) for v in img.getextrema())
    width, height = img.size
    out = np.zeros((height, width), np.uint8)
    if hi > lo:
        factor = 255.0 / (hi - lo)
        # 16-bit: one lookup table for every level; 32-bit: the same arithmetic on each strip
        lut = ((np.arange(65536, dtype=np.float64) - lo) * factor).clip(0, 255).astype(np.uint8) if hi < 65536 and lo >= 0 else None
        for start in range(0, height, _STRETCH_ROWS):
            stop = min(height, start + _STRETCH_ROWS)
            rows = np.asarray(img.crop((0, start, width, stop)))
            out[start:stop] = lut[rows] if lut is not None else ((rows.astype(np.float64) - lo) * factor).astype(np.uint8)
    return out


def _gray_std(pixels: np.ndarray) -> float:
    """Standard deviation of uint8 gray levels from their histogram (no float copy of the image)."""
    counts = np.zeros(256, np.float64)
    for start in range(0, pixels.shape[0], _STRETCH_ROWS):  # bincount makes an int64 copy of what it counts
        counts += np.bincount(pixels[start : start + _STRETCH_ROWS].ravel(), minlength=256)
    total = counts.sum()
    if total == 0:
        return 0.0
    levels = np.arange(counts.size, dtype=np.float64)
    mean = (counts @ levels) / total
    return float(np.sqrt(max(0.0, (counts @ (levels - mean) ** 2) / total)))


def encoded_size(data: bytes, name: str = "image bytes") -> tuple[int, int]:
    """(width, height) an encoded image's header declares (WSQ frame header or Pillow's), decoding no pixel.

    Raises
    ------
    ImageError
        The header is missing, unreadable or not of a supported format.
    """
    if data[:2] == b"\xff\xa0":
        width, height, _ = _wsq_header(data, name)
        return width, height
    from PIL import UnidentifiedImageError

    Image = _pil_image()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(_io.BytesIO(data), formats=PIL_FORMATS) as img:
                return int(img.size[0]), int(img.size[1])
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError, TypeError) as exc:
        raise ImageError(f"{name}: cannot read the image header, truncated or corrupt ({exc})") from None


def read_image(source, ppi: float | None = None, *, name: str | None = None, file_ppi_first: bool = True) -> FingerImage:
    """Read a finger image from a path, bytes or a 2-D uint8 array.

    Parameters
    ----------
    source : str, os.PathLike, bytes or ndarray of uint8, shape (h, w)
        The image. Files are recognised by content, not by extension.
    ppi : float, optional
        Resolution to use when the file does not state one. A resolution in
        the file (WSQ header, TIFF/PNG/JPEG/BMP tag) takes precedence. With
        neither, 500 ppi is assumed and a :class:`ResolutionWarning` is issued.
    name : str, optional
        Label used in error messages; defaults to the file name.
    file_ppi_first : bool, default True
        False: ``ppi`` wins over the file's own resolution (a transaction
        record's resolution fields are authoritative over the compressed
        data they carry).

    Returns
    -------
    FingerImage

    Raises
    ------
    ImageError
        Unreadable, truncated, absurdly large, too small, blank or uniform
        images, resolutions outside 250-2000 ppi, encoded images whose header
        declares more than extraction accepts at the resolution used (refused
        before decoding), and paths that are not regular files.
    """
    file_ppi = None
    if isinstance(source, np.ndarray):
        name = name or "array"
        if source.ndim != 2:
            raise ImageError(f"{name}: expected a 2-D gray image array, got shape {source.shape}")
        if source.dtype != np.uint8:
            if not np.issubdtype(source.dtype, np.number):
                raise ImageError(f"{name}: image array dtype {source.dtype} is not numeric")
            if np.issubdtype(source.dtype, np.floating) and not np.all(np.isfinite(source)):
                raise ImageError(f"{name}: image array holds NaN or infinite values")
            lo, hi = float(source.min()) if source.size else 0.0, float(source.max()) if source.size else 0.0
            if lo < 0 or hi > 255:
                raise ImageError(f"{name}: image array values span [{lo:g}, {hi:g}], outside 0-255 for dtype {source.dtype}")
            source = np.rint(source).astype(np.uint8)
        _check_pixel_count(source.shape[1], source.shape[0], name)
        pixels = source
    else:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            name = name or "image bytes"
        elif isinstance(source, (str, os.PathLike)):
            name = name or str(Path(source))
            data = read_file_bounded(source, MAX_IMAGE_FILE_BYTES, name, "an image file")
        else:
            raise ImageError(f"image source must be a path, bytes or a 2-D uint8 array, got {type(source).__name__}")
        if not data:
            raise ImageError(f"{name}: file is empty")
        decode = _decode_wsq if data[:2] == b"\xff\xa0" else _decode_pil
        pixels, file_ppi = decode(data, name, ppi, file_ppi_first or ppi is None)
        if not (file_ppi_first or ppi is None):
            file_ppi = None

    if file_ppi is not None:
        resolution, origin = _check_ppi(file_ppi, name, "file"), "file"
    elif ppi is not None:
        resolution, origin = _check_ppi(ppi, name, "given"), "caller"
    else:
        warnings.warn(f"{name}: no resolution in the file or from the caller; assuming {DEFAULT_PPI:g} ppi", ResolutionWarning, stacklevel=2)
        resolution, origin = DEFAULT_PPI, "default"

    min_side = MIN_PRINT_SIDE_IN * resolution
    if min(pixels.shape) < min_side:
        raise ImageError(
            f"{name}: image {pixels.shape[1]}x{pixels.shape[0]} px at {resolution:g} ppi is too small to hold a print "
            f"(each side must be at least {MIN_PRINT_SIDE_IN:g} in = {min_side:.0f} px)"
        )
    contrast = _gray_std(pixels)
    if contrast < MIN_CONTRAST_STD:
        raise ImageError(f"{name}: image is blank or uniform (gray-level std {contrast:.2f}), no print to read")
    pixels = np.ascontiguousarray(pixels)
    pixels.setflags(write=False)
    return FingerImage(pixels=pixels, ppi=resolution, name=name, ppi_source=origin)


def working_size(width: int, height: int, ppi: float) -> tuple[int, int]:
    """Size (width, height) of an image of ``width`` x ``height`` px at ``ppi`` once resampled to 500 ppi."""
    factor = WORKING_PPI / ppi
    if abs(factor - 1.0) < 0.02:
        return width, height
    return max(1, int(round(width * factor))), max(1, int(round(height * factor)))


def to_working_resolution(image: FingerImage) -> tuple[np.ndarray, float]:
    """Resample an image to :data:`WORKING_PPI`.

    Returns
    -------
    pixels : ndarray of uint8, shape (h', w')
        The resampled image (the original array when already at 500 ppi).
    scale : float
        Factor from working to original pixels: ``x_orig = x_work * scale``.

    Raises
    ------
    ImageError
        The working image would exceed :data:`MAX_WORKING_PIXELS` (refused
        before resampling, so before extraction spends time or memory on it).
    """
    h, w = image.pixels.shape
    problem = _working_limit_problem(w, h, image.ppi)
    if problem:
        raise ImageError(f"{image.name}: image {problem}")
    new_w, new_h = working_size(w, h, image.ppi)
    if (new_w, new_h) == (w, h):
        return image.pixels, 1.0
    from PIL import Image

    # Area-averaging (BOX) when shrinking avoids aliasing ridges; bicubic when enlarging.
    resample = Image.Resampling.BOX if image.ppi > WORKING_PPI else Image.Resampling.BICUBIC
    out = np.asarray(Image.fromarray(image.pixels).resize((new_w, new_h), resample=resample), dtype=np.uint8)
    return out, w / new_w
