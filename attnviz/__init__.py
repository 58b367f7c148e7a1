"""attnviz: see what the attention blocks inside a ResNet are doing.

Public API (DESIGN.md): list_attentions, create_attention, build_model, AttentionRecorder, AttentionMap, analyze.
"""

from .blocks import KINDS, create_attention, get_attention, list_attentions, register_attention
from .capture.recorder import AttentionMap, AttentionRecorder
from .pipeline.core import AnalyzeError, Result, analyze
from .pipeline.image import ImageError
from .sources.loading import load_model
from .sources.own import ARCHS, build_model
from .sources.weights import LoadReport, load_backbone_state_dict

__version__ = "0.1.0"

__all__ = [
    "ARCHS",
    "AnalyzeError",
    "ImageError",
    "Result",
    "analyze",
    "KINDS",
    "AttentionMap",
    "AttentionRecorder",
    "LoadReport",
    "__version__",
    "build_model",
    "create_attention",
    "get_attention",
    "list_attentions",
    "load_model",
    "load_backbone_state_dict",
    "register_attention",
]
