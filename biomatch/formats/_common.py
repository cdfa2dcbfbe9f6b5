"""Shared helpers of the format readers: a bounds-checked byte reader, input loading, warnings."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from ..errors import FormatError

__all__ = ["FormatWarning", "ByteReader", "load_source", "MAX_RECORD_BYTES"]

#: Largest input a format reader accepts (a ten-print transaction with 1000 ppi
#: rolled images is tens of MB; anything larger is refused before reading it).
MAX_RECORD_BYTES = 256 * 1024 * 1024


class FormatWarning(UserWarning):
    """A record was readable but something in it was off (a default was used)."""


def load_source(source, name: str | None, what: str) -> tuple[bytes, str]:
    """Return (bytes, name) for a path or a bytes-like source.

    Raises FormatError for missing/unreadable/empty/oversized files, paths that are
    not regular files (FIFOs, devices, sockets, directories) and wrong types.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or f"{what} bytes"
    elif isinstance(source, (str, os.PathLike)):
        from ..io import read_file_bounded  # regular files only, never more than the cap (not /dev/zero, not a FIFO)

        name = name or str(Path(source))
        data = read_file_bounded(source, MAX_RECORD_BYTES, name, f"a {what} file", error=FormatError)
    else:
        raise FormatError(f"{what} source must be a path or bytes, got {type(source).__name__}")
    if not data:
        raise FormatError(f"{name}: is empty")
    if len(data) > MAX_RECORD_BYTES:
        raise FormatError(f"{name}: {len(data)} bytes, larger than the {MAX_RECORD_BYTES}-byte limit for a {what}")
    return data, name


class ByteReader:
    """Big-endian reader over bytes that raises FormatError naming the field on truncation."""

    __slots__ = ("data", "pos", "end", "where")

    def __init__(self, data: bytes, where: str, start: int = 0, end: int | None = None):
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end
        self.where = where  # "<file>: <record>" prefix for messages

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def fail(self, field: str, problem: str):
        raise FormatError(f"{self.where}: field '{field}': {problem}")

    def need(self, n: int, field: str) -> None:
        if n > self.end - self.pos:
            self.fail(field, f"truncated at byte {self.pos} (needs {n} bytes, {max(0, self.end - self.pos)} left)")

    def u8(self, field: str) -> int:
        self.need(1, field)
        v = self.data[self.pos]
        self.pos += 1
        return v

    def u16(self, field: str) -> int:
        self.need(2, field)
        (v,) = struct.unpack_from(">H", self.data, self.pos)
        self.pos += 2
        return v

    def u32(self, field: str) -> int:
        self.need(4, field)
        (v,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return v

    def take(self, n: int, field: str) -> bytes:
        self.need(n, field)
        v = self.data[self.pos : self.pos + n]
        self.pos += n
        return v
