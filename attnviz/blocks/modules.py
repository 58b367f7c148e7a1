"""Where the attention modules of a network are (attnviz's registered blocks and modules holding taps)."""

from __future__ import annotations

from torch import nn

from .registry import get_attention, list_attentions
from .tap import Tap

__all__ = ["attention_modules"]


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The outermost attention modules of a model, by module path: instances of registered classes, and modules
    holding taps."""
    classes = tuple(get_attention(n).cls for n in list_attentions())
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        tapped = any(isinstance(c, Tap) for c in module.children())
        if (isinstance(module, classes) or tapped) and not any(name.startswith(p + ".") for p in found):
            found[name] = module
    return found
