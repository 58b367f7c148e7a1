"""Read one image out of the containers Debian packages ship pictures in, in pure Python.

* Qt resource bundles (``.rcc``, magic ``qres``; GCompris keeps its photos in them): a tree of entries with
  UTF-16 names, each file's bytes stored raw, zlib- or zstd-compressed. Layout as written by Qt's ``rcc``:
  header ``qres`` + version + offsets of the tree, the data and the names (+ flags from version 3); a tree entry is
  14 bytes (version 1) or 22 (version 2 and later: a last-modified stamp appended).
* Jigzo puzzles (``.pzl``): the puzzle's picture is the JPEG preview that starts at the file's first JPEG marker
  (a piece-texture atlas follows it).
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache
from pathlib import Path

from PIL import Image

__all__ = ["first_jpeg", "qres_member", "qres_names"]

_DIR, _ZLIB, _ZSTD = 0x02, 0x01, 0x04  # entry flags of a Qt resource tree


class _Qres:
    """A parsed ``.rcc`` bundle: :meth:`walk` yields ``(path, bytes loader)`` for every file in it."""

    def __init__(self, blob: bytes, name: str) -> None:
        if blob[:4] != b"qres" or len(blob) < 20:
            raise ValueError(f"{name} is not a Qt resource bundle (no 'qres' header)")
        self.blob, self.name = blob, name
        version, self.tree, self.data, self.names = struct.unpack(">IIII", blob[4:20])
        self.entry = 14 if version == 1 else 22

    def _name(self, offset: int) -> str:
        (n,) = struct.unpack(">H", self.blob[self.names + offset : self.names + offset + 2])
        start = self.names + offset + 6  # length (2), hash (4), then n UTF-16 code units
        return self.blob[start : start + 2 * n].decode("utf-16-be")

    def read(self, offset: int, flags: int) -> bytes:
        at = self.data + offset
        (size,) = struct.unpack(">I", self.blob[at : at + 4])
        raw = self.blob[at + 4 : at + 4 + size]
        if flags & _ZLIB:
            return zlib.decompress(raw[4:])  # a 4-byte uncompressed size comes first
        if flags & _ZSTD:
            raise ValueError(f"{self.name}: zstd-compressed entries are not supported")
        return raw

    def walk(self, index: int = 0, prefix: str = "") -> dict[str, tuple[int, int]]:
        """``{":/path/in/bundle": (data offset, flags)}`` for every file under entry ``index``."""
        at = self.tree + index * self.entry
        name_offset, flags = struct.unpack(">IH", self.blob[at : at + 6])
        path = prefix + (self._name(name_offset) if index else ":")
        if flags & _DIR:
            count, first = struct.unpack(">II", self.blob[at + 6 : at + 14])
            out: dict[str, tuple[int, int]] = {}
            for child in range(first, first + count):
                out |= self.walk(child, path + "/")
            return out
        (offset,) = struct.unpack(">I", self.blob[at + 10 : at + 14])
        return {path: (offset, flags)}


@lru_cache(maxsize=2)
def _parsed(path: str, stamp: tuple[int, int]) -> tuple[_Qres, dict[str, tuple[int, int]]]:
    """A bundle and its entries, read once per file version (``stamp``: size and mtime) for consecutive members."""
    bundle = _Qres(Path(path).read_bytes(), path)
    return bundle, bundle.walk()


def _bundle(path: str | Path) -> tuple[_Qres, dict[str, tuple[int, int]]]:
    st = Path(path).stat()
    return _parsed(str(path), (st.st_size, st.st_mtime_ns))


def qres_names(path: str | Path) -> list[str]:
    """Every file path in a Qt resource bundle (``:/dir/file``), sorted."""
    return sorted(_bundle(path)[1])


def qres_member(path: str | Path, member: str) -> bytes:
    """The bytes of ``member`` (``:/dir/file``) in the Qt resource bundle at ``path``.

    Raises:
        ValueError: not a bundle, or a compression this reader does not know.
        KeyError: no such member.
    """
    bundle, entries = _bundle(path)
    if member not in entries:
        raise KeyError(f"{member} is not in {path}")
    return bundle.read(*entries[member])


def first_jpeg(path: str | Path) -> Image.Image:
    """The JPEG image that starts at the first JPEG marker (``FF D8 FF``) of ``path``, decoded.

    Raises:
        ValueError: the file holds no JPEG marker.
    """
    blob = Path(path).read_bytes()
    start = blob.find(b"\xff\xd8\xff")
    if start < 0:
        raise ValueError(f"{path} holds no JPEG image")
    with Image.open(io.BytesIO(blob[start:])) as im:  # PIL stops at the image's end marker
        return im.convert("RGB")
