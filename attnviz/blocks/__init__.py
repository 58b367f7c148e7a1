"""Attention blocks, one family per file, and the registry that names them.

Importing this package registers every block. Registration order is the order the UI lists them in.
"""

from . import se, cbam, eca, sk, dual, epsa, external, mhsa, coord, simam  # noqa: F401  (registration)
from .cbam import CBAM, CBAMSpatialFirst, ChannelAttention, SpatialAttention
from .coord import CoordinateAttention
from .dual import DualAttention
from .eca import ECA, ECAAvgMax, eca_kernel_size
from .epsa import EPSA
from .external import ExternalAttention
from .mhsa import MultiHeadSelfAttention
from .modules import attention_modules
from .registry import (
    PLACEMENTS,
    AttentionSpec,
    create_attention,
    get_attention,
    list_attentions,
    register_attention,
)
from .se import SqueezeExcite
from .simam import SimAM
from .sk import SelectiveKernel
from .tap import KINDS, Tap

__all__ = [
    "CBAM",
    "ECA",
    "EPSA",
    "KINDS",
    "PLACEMENTS",
    "AttentionSpec",
    "CBAMSpatialFirst",
    "ChannelAttention",
    "CoordinateAttention",
    "DualAttention",
    "ECAAvgMax",
    "ExternalAttention",
    "MultiHeadSelfAttention",
    "SelectiveKernel",
    "SimAM",
    "SpatialAttention",
    "SqueezeExcite",
    "Tap",
    "attention_modules",
    "create_attention",
    "eca_kernel_size",
    "get_attention",
    "list_attentions",
    "register_attention",
]
