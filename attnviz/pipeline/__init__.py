"""The pipeline: an image (or many) through a model inside the recorder, into a :class:`Result`.

:func:`analyze` and :func:`analyze_many` (:mod:`.run`), the result and the model cache (:mod:`.core`), decoding and
preprocessing (:mod:`.image`).
"""

from .core import AnalyzeError, ModelCache, Result, default_device
from .image import ImageError
from .run import analyze, analyze_many

__all__ = ["AnalyzeError", "ImageError", "ModelCache", "Result", "analyze", "analyze_many", "default_device"]
