"""Decode and validate an uploaded image; preprocess it for a model without cropping.

Every failure is an :class:`ImageError` (a ``ValueError``) whose message can be shown to a user as is.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["MAX_BYTES", "MAX_PIXELS", "Decoded", "ImageError", "decode_image", "preprocess", "resized_size"]

#: Largest upload accepted, in bytes (``ATTNVIZ_MAX_BYTES``).
MAX_BYTES = int(os.environ.get("ATTNVIZ_MAX_BYTES", 25 * 2**20))
#: Largest image accepted, in pixels (``ATTNVIZ_MAX_PIXELS``); checked from the header, before decoding.
MAX_PIXELS = int(os.environ.get("ATTNVIZ_MAX_PIXELS", 40_000_000))


class ImageError(ValueError):
    """An input that cannot be used as an image; the message says why, for the user."""


@dataclass
class Decoded:
    """An RGB image ready for the model, at its original size (EXIF orientation applied).

    Attributes:
        image: the RGB ``PIL.Image``.
        notes: what was done to make it RGB (e.g. "16-bit grayscale scaled to 8 bits").
        source_mode: the file's own PIL mode.
    """

    image: Image.Image
    notes: list[str] = field(default_factory=list)
    source_mode: str = "RGB"


def _check_bytes(n: int, max_bytes: int) -> None:
    if n > max_bytes:
        raise ImageError(f"the file is {n / 2**20:.3g} MiB, above the upload limit of {max_bytes / 2**20:.3g} MiB")


def _open(source: str | Path | bytes | Image.Image | np.ndarray, max_bytes: int) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise ImageError(f"an array image must be uint8 (H, W) or (H, W, 1|3|4), not {arr.dtype} {arr.shape}")
        return Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no such file: {path.name}")
        _check_bytes(path.stat().st_size, max_bytes)
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        _check_bytes(len(data), max_bytes)
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}")
    if not data:
        raise ImageError("the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # the pixel limit is checked by decode_image, from the header
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("this file is not an image PIL can read (PNG, JPEG, GIF, TIFF, WebP, BMP, ...)") from None
    except Image.DecompressionBombError as e:  # over twice PIL's own limit: refused while reading the header
        raise ImageError(f"the image declares too many pixels; it was not decoded ({e})") from None
    except Exception as e:
        raise ImageError(f"cannot read this image: {e}") from None


def _to_rgb(im: Image.Image, notes: list[str]) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0
            notes.append("16-bit image scaled to 8 bits")
        elif mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
            notes.append(f"floating-point image scaled from [{lo:.3g}, {hi:.3g}] to 8 bits")
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        return gray.convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparency composited on white")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    return im.convert("RGB")


def decode_image(
    source: str | Path | bytes | Image.Image | np.ndarray,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
) -> Decoded:
    """Decode any common image to RGB at its original size.

    Applies the EXIF orientation, takes the first frame of an animation, converts any mode (16-bit,
    CMYK, palette, RGBA, grayscale) to 8-bit RGB, and refuses files over ``max_bytes`` and images over
    ``max_pixels`` (checked from the header, before any pixel is decoded).

    Raises:
        ImageError: not an image, empty, truncated or corrupt, or over a limit.
    """
    im = _open(source, max_bytes)
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"the image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageError(
            f"the image is {w}x{h} = {w * h / 1e6:.3g} megapixels, above the limit of {max_pixels / 1e6:.3g} MP"
        )
    notes: list[str] = []
    source_mode = im.mode
    try:
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            im.seek(0)
            notes.append(f"first frame of {frames}")
        im.load()
        rotated = ImageOps.exif_transpose(im)
        if rotated is not None and rotated is not im:
            orientation = im.getexif().get(0x0112)
            if orientation not in (None, 1):
                notes.append(f"rotated by its EXIF orientation ({orientation})")
            im = rotated
        rgb = _to_rgb(im, notes)
        rgb.load()
    except ImageError:
        raise
    except Exception as e:
        raise ImageError(f"the image is truncated or corrupt ({e})") from None
    return Decoded(rgb, notes, source_mode)


def resized_size(size: tuple[int, int], short_side: int, max_long: int | None = None) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side``, aspect kept; the long side is capped at
    ``max_long`` (default 4 x short_side) and both sides are at least 32 px."""
    w, h = size
    max_long = max_long or 4 * short_side
    scale = short_side / min(w, h)
    scale = min(scale, max_long / max(w, h))
    return max(32, round(w * scale)), max(32, round(h * scale))


def fixed_size(meta: dict) -> tuple[int, int] | None:
    """(H, W) a model accepts only (weights metadata ``fixed_input_size``: timm's BoTNet runs at 256 x 256), or
    ``None`` when any size works."""
    if meta.get("fixed_input_size") and meta.get("input_size"):
        h, w = meta["input_size"][-2:]
        return int(h), int(w)
    return None


def preprocess(
    image: Image.Image, short_side: int, mean: list[float], std: list[float], *, fixed: tuple[int, int] | None = None
) -> torch.Tensor:
    """RGB image -> normalised (1, 3, H, W) float tensor: resize keeping the aspect ratio (no centre crop),
    so every map covers the whole image; ``mean``/``std`` come from the weights' metadata. A model with a
    ``fixed`` (H, W) input gets the whole image stretched to it (maps are stretched back when drawn)."""
    w, h = resized_size(image.size, short_side) if fixed is None else (fixed[1], fixed[0])
    resized = image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32)).permute(2, 0, 1).div_(255.0)  # (3, H, W)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((x - m) / s).unsqueeze(0)
