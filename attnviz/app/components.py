"""Gradio components tuned for attnviz: uploads reach attnviz's decoder untouched; overlays travel as JPEG
(gallery, encoded in parallel) or fast lossless PNG (views), through Gradio's own cache."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio.processing_utils import hash_bytes

from ..render import encode_jpeg, encode_png_fast

__all__ = ["DisplayGallery", "DisplayImage", "DisplayPhoto", "UploadImage", "save_bytes_to_cache"]

#: JPEG quality of a photo overlay shown large (no chroma subsampling): visually lossless, about 10x cheaper than
#: the fastest lossless PNG of the same overlay (bench/page.py). Exports stay PNG.
PHOTO_QUALITY = 95


def save_bytes_to_cache(data: bytes, file_name: str, cache_dir: str) -> str:
    """``data`` as ``cache_dir/<hash of data>/file_name``, Gradio's own layout, written atomically.

    Gradio's ``save_bytes_to_cache`` rewrites the file in place, so when two sessions show the same overlay at once
    one of them (or a browser fetching it) can read the file while the other has just truncated it: an empty or cut
    image. Here a file already there is kept (its name is its content's hash) and only touched, so that the cache's
    age-based cleanup counts it as new; a new one is written beside and renamed into place (``os.replace`` is atomic).
    """
    folder = Path(cache_dir) / hash_bytes(data)
    path = folder / Path(file_name).name
    for _ in range(3):  # the cache's cleanup may remove the folder meanwhile: make it again
        try:
            if path.is_file() and path.stat().st_size == len(data):
                os.utime(path)
                return str(path.resolve())
            folder.mkdir(parents=True, exist_ok=True)
            part = folder / f".{uuid.uuid4().hex}.part"
            part.write_bytes(data)
            os.replace(part, path)
            return str(path.resolve())
        except FileNotFoundError:
            continue
    raise OSError(f"could not write {file_name} into Gradio's cache {cache_dir}")


class UploadImage(gr.Image):
    """``gr.Image`` whose uploaded file reaches attnviz's decoder untouched.

    Gradio's own preprocessing opens the file with PIL first, so a non-image, an empty file or a decompression
    bomb would fail there with an unclear message; attnviz.pipeline.image.decode_image gives each a clear one.
    """

    def get_block_name(self) -> str:
        return "image"  # the same browser component as gr.Image

    def preprocess(self, payload: Any) -> str | None:
        if payload is None:
            return None
        if getattr(payload, "path", None) is None:  # e.g. a data: URL: let Gradio decode it
            return super().preprocess(payload)  # type: ignore[return-value]
        return str(payload.path)


#: Encodes and writes a page's images side by side (PIL, OpenCV and file writes release the GIL).
_ENCODERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="attnviz-encode")


class DisplayGallery(gr.Gallery):
    """``gr.Gallery`` that sends numpy images as JPEG (quality 90, no chroma subsampling): Gradio's own PNG
    encoding (zlib level 6) of a page of overlays costs several forward passes; JPEG about a twentieth of that.
    Items given as PNG bytes (figures already drawn) go as they are. The items are encoded and written into Gradio's
    cache in parallel."""

    def get_block_name(self) -> str:
        return "gallery"

    def _cached(self, item: Any) -> Any:
        """One item as a file in Gradio's cache: a numpy image as JPEG, PNG bytes as they are."""
        if isinstance(item, tuple) and isinstance(item[0], np.ndarray):
            return save_bytes_to_cache(encode_jpeg(item[0]), "image.jpg", self.GRADIO_CACHE), item[1]
        if isinstance(item, tuple) and isinstance(item[0], bytes):  # an encoded PNG (a figure): as it is
            return save_bytes_to_cache(item[0], "image.png", self.GRADIO_CACHE), item[1]
        return item

    def postprocess(self, value: Any) -> Any:
        if value:
            value = list(_ENCODERS.map(self._cached, value))
        return super().postprocess(value)


class DisplayImage(gr.Image):
    """``gr.Image`` that sends numpy images as lossless PNG through :func:`attnviz.render.encode_png_fast` (about 6x
    faster than Gradio's zlib level 6), and PNG bytes (a chart already drawn) as they are."""

    def get_block_name(self) -> str:
        return "image"

    def postprocess(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = save_bytes_to_cache(encode_png_fast(value), "image.png", self.GRADIO_CACHE)
        elif isinstance(value, bytes):
            value = save_bytes_to_cache(value, "image.png", self.GRADIO_CACHE)
        return super().postprocess(value)


class DisplayPhoto(DisplayImage):
    """:class:`DisplayImage` for a photo overlay shown large (the selected block, the checks' and the comparison's
    views): numpy images go as JPEG at :data:`PHOTO_QUALITY` without chroma subsampling. Charts and matrices
    (sharp edges, flat colours) stay lossless PNG in :class:`DisplayImage`."""

    def postprocess(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = save_bytes_to_cache(encode_jpeg(value, quality=PHOTO_QUALITY), "image.jpg", self.GRADIO_CACHE)
        return super().postprocess(value)
