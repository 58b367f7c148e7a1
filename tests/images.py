"""Odd and hostile test images, made in memory: each function returns the file's bytes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

ASSET = "assets/chelsea_cat.jpg"


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A small real photo (the example cat), resized."""
    return Image.open(ASSET).convert("RGB").resize(size)


def png_bomb(width: int = 50000, height: int = 50000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def exif_rotated_jpeg() -> bytes:
    """A 60x40 JPEG, left half red and right half blue, stored with EXIF orientation 6 (rotate 90 clockwise)."""
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)
    arr[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95)


def exif_upright_png() -> bytes:
    """The pixels :func:`exif_rotated_jpeg` shows once its EXIF rotation is applied, stored upright as a PNG."""
    return _save(ImageOps.exif_transpose(Image.open(io.BytesIO(exif_rotated_jpeg()))), "PNG")


def jpeg_bomb(width: int = 50000, height: int = 50000) -> bytes:
    """A small JPEG whose frame header (SOF0) declares width x height pixels."""
    data = bytearray(_save(Image.new("RGB", (16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def odd_images() -> dict[str, bytes]:
    """name -> bytes of every odd-but-valid image the pipeline must turn into a correct RGB image."""
    p = photo()
    gray16 = Image.fromarray((np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16))
    pal = p.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "green", "blue")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return {
        "one_pixel.png": _save(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "gray16.png": _save(gray16, "PNG"),
        "cmyk.jpg": _save(p.convert("CMYK"), "JPEG"),
        "palette_transparent.png": _save(pal, "PNG", transparency=0),
        "rgba.png": _save(p.convert("RGBA"), "PNG"),
        "grayscale.png": _save(p.convert("L"), "PNG"),
        "animated.gif": gif.getvalue(),
        "tiff.tif": _save(p, "TIFF"),
        "exif_rotated.jpg": exif_rotated_jpeg(),
        "all_black.png": _save(Image.new("RGB", (64, 64)), "PNG"),
    }


def bad_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, a regex the error message must match) for inputs that must be refused clearly."""
    full = _save(photo(), "PNG")
    jpeg = _save(photo(), "JPEG")
    return {
        "text_renamed.png": (b"hello, I am not an image\n" * 20, "not an image"),
        "truncated.png": (full[: len(full) // 2], "truncated or corrupt"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "truncated or corrupt"),
        "empty.png": (b"", "empty"),
        "bomb.png": (png_bomb(), "declares too many pixels; it was not decoded .*2500000000 pixels"),
        "bomb.jpg": (jpeg_bomb(), "declares too many pixels; it was not decoded .*2500000000 pixels"),
        "bomb_100mp.png": (png_bomb(10000, 10000), r"10000x10000 = 100 megapixels, above the limit of 40 MP"),
    }
