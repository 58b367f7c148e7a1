"""Gradio components tuned for attnviz: uploads reach attnviz's decoder untouched; overlays travel as JPEG
(gallery) or fast PNG (views), through Gradio's own cache."""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
from gradio.processing_utils import save_bytes_to_cache

from ..render import encode_jpeg, encode_png

__all__ = ["DisplayGallery", "DisplayImage", "UploadImage"]


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


class DisplayGallery(gr.Gallery):
    """``gr.Gallery`` that sends numpy images as JPEG (quality 90, no chroma subsampling): Gradio's own PNG
    encoding (zlib level 6) of a page of overlays costs several forward passes; JPEG about a twentieth of that.
    Items given as PNG bytes (figures already drawn) go as they are."""

    def get_block_name(self) -> str:
        return "gallery"

    def postprocess(self, value: Any) -> Any:
        if value:
            value = [
                (save_bytes_to_cache(encode_jpeg(item[0]), "image.jpg", self.GRADIO_CACHE), item[1])
                if isinstance(item, tuple) and isinstance(item[0], np.ndarray)
                else (save_bytes_to_cache(item[0], "image.png", self.GRADIO_CACHE), item[1])
                if isinstance(item, tuple) and isinstance(item[0], bytes)  # an encoded PNG (a figure): as it is
                else item
                for item in value
            ]
        return super().postprocess(value)


class DisplayImage(gr.Image):
    """``gr.Image`` that sends numpy images as PNG at zlib level 1 (lossless; about 4x faster than Gradio's 6), and
    PNG bytes (a chart already drawn) as they are."""

    def get_block_name(self) -> str:
        return "image"

    def postprocess(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = save_bytes_to_cache(encode_png(value, compress_level=1), "image.png", self.GRADIO_CACHE)
        elif isinstance(value, bytes):
            value = save_bytes_to_cache(value, "image.png", self.GRADIO_CACHE)
        return super().postprocess(value)
