"""The attention registry: the single source of attention names.

Every block registers itself with :func:`register_attention`; the UI's choices, the CLI's choices,
``build_model`` and the tests' parametrisation all read this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

__all__ = [
    "PLACEMENTS",
    "AttentionSpec",
    "create_attention",
    "get_attention",
    "list_attentions",
    "register_attention",
]

Placement = Literal["post", "mid", "conv", "stage"]

#: Where a block sits in a ResNet (see ATTENTION.md, "Placement in a ResNet").
PLACEMENTS: dict[str, str] = {
    "post": "end of the residual branch, after the last BatchNorm and before the addition",
    "mid": "right after the block's 3x3 convolution (conv2), before its BatchNorm",
    "conv": "replaces the block's 3x3 convolution (conv2), carrying its stride",
    "stage": "a residual module after the stage's last block",
}


@dataclass(frozen=True)
class AttentionSpec:
    """What the registry knows about one attention type.

    Attributes:
        name: registry name (``"se"``, ``"cbam"``, ...).
        cls: the ``nn.Module`` class; constructed as ``cls(channels, **kwargs)``.
        placement: one of :data:`PLACEMENTS`.
        kinds: the kinds of map its taps emit, in forward order.
        paper: short citation.
        stages: the ResNet stages (1..4) it is inserted in.
        owns_norm: for ``conv`` placement, the block ends in its own BatchNorm + ReLU, so the block's
            ``bn2`` becomes an identity (SK's branches are conv-BN-ReLU).
        variant_of: the registry name whose attention equations this one keeps with another convolution layout
            (``"sk_pre"``: ``"sk"`` whose first branch takes the backbone's pretrained 3x3 conv); ``None`` for a
            paper's block. With ImageNet or demo weights the variant runs in place of its paper block
            (:func:`attnviz.sources.select.choose_network`), so the demo ships the variant's checkpoint.
    """

    name: str
    cls: type[nn.Module]
    placement: Placement
    kinds: tuple[str, ...]
    paper: str
    stages: tuple[int, ...] = (1, 2, 3, 4)
    owns_norm: bool = False
    variant_of: str | None = None

    @property
    def title(self) -> str:
        """A human label: the first line of the class docstring."""
        return (self.cls.__doc__ or self.name).strip().splitlines()[0].rstrip(".")


_REGISTRY: dict[str, AttentionSpec] = {}


def register_attention(
    name: str,
    *,
    placement: Placement,
    kinds: tuple[str, ...],
    paper: str,
    stages: tuple[int, ...] = (1, 2, 3, 4),
    owns_norm: bool = False,
    variant_of: str | None = None,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding an attention block to the registry. A duplicate name, or a ``variant_of`` that is not
    registered yet, raises ``ValueError``."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {list(PLACEMENTS)}, got {placement!r}")
    if variant_of is not None and variant_of not in _REGISTRY:
        raise ValueError(f"{name!r} is a variant of {variant_of!r}, which is not registered")

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} is already registered (by {_REGISTRY[name].cls.__name__})")
        _REGISTRY[name] = AttentionSpec(name, cls, placement, kinds, paper, tuple(stages), owns_norm, variant_of)
        return cls

    return deco


def list_attentions() -> list[str]:
    """Names of every registered attention type, in registration order."""
    return list(_REGISTRY)


def get_attention(name: str) -> AttentionSpec:
    """The :class:`AttentionSpec` for ``name``; an unknown name raises ``ValueError`` listing valid names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attention {name!r}; valid names: {', '.join(_REGISTRY)}") from None


def create_attention(name: str, channels: int, **kwargs: object) -> nn.Module:
    """Build the attention block ``name`` for a feature map with ``channels`` channels.

    Raises:
        ValueError: unknown name, or arguments the block cannot accept (the message says what to change).
    """
    return get_attention(name).cls(channels, **kwargs)
