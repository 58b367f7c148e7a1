"""attnviz: see what the attention inside a vision network is doing.

The public API (DESIGN.md) is these nine names; everything else is reached through its subpackage
(:mod:`attnviz.blocks`, :mod:`attnviz.capture`, :mod:`attnviz.sources`, :mod:`attnviz.pipeline`, :mod:`attnviz.render`,
...).
"""

from .blocks import create_attention, list_attentions
from .capture import AttentionMap, AttentionRecorder
from .comparison import compare
from .pipeline import analyze, analyze_many
from .sources import build_model, load_model

__version__ = "0.1.0"

__all__ = [
    "AttentionMap",
    "AttentionRecorder",
    "analyze",
    "analyze_many",
    "build_model",
    "compare",
    "create_attention",
    "list_attentions",
    "load_model",
]
