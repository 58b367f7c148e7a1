"""Where weights come from: one typed value instead of loose strings.

A weights argument (the CLI's ``--weights``, the app's Weights field, ``analyze(weights=...)``) is one of
:class:`Weights` or a checkpoint path; :func:`parse_weights` reads it, with the spellings people use
(``None``/``"none"`` for random, ``"pretrained"`` for ImageNet).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

__all__ = ["Weights", "parse_weights"]


class Weights(str, Enum):
    """A named source of weights (a ``str``, so it is also what settings and result.json record)."""

    RANDOM = "random"  # random initialisation, drawn from a fixed seed (untrained: maps are not meaningful)
    DEMO = "demo"  # the shipped demo checkpoints (attnviz's resnet18, every attention type)
    IMAGENET = "imagenet"  # ImageNet-pretrained: torchvision's backbone for attnviz's ResNets, the library's own
    # weights for timm: and torchvision: networks

    def __str__(self) -> str:
        return self.value


_ALIASES = {"none": Weights.RANDOM, "pretrained": Weights.IMAGENET}


def parse_weights(value: str | Path | Weights | None) -> Weights | Path:
    """The source ``value`` names: a :class:`Weights` member (``None``, ``"none"`` and ``"random"`` are random;
    ``"pretrained"`` is ImageNet), else a checkpoint path."""
    if value is None:
        return Weights.RANDOM
    if isinstance(value, (Weights, Path)):
        return value
    text = str(value).strip()
    if text in Weights._value2member_map_:
        return Weights(text)
    if text in _ALIASES:
        return _ALIASES[text]
    return Path(text)
