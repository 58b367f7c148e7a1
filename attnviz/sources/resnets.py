"""attnviz's own ResNets: torchvision's ResNet with attention blocks at the paper's placement (the architecture;
:mod:`attnviz.sources.own` adds weights and metadata).

The change is configuration only: torchvision's own ``ResNet`` is built with block classes that carry an
optional ``attn`` module, then blocks are inserted where the registry's placement says. Module names stay
torchvision's (``conv1``, ``bn1``, ``layer1..4``, ``fc``), so an ImageNet state dict loads with
``strict=False`` and the only missing keys are attention parameters (see :mod:`attnviz.sources.weights`).

Placements (ATTENTION.md, "Placement in a ResNet"):
  post  ``block.attn`` at the end of the residual branch, after the last BN, before ``out += identity``
  mid   ``block.attn`` right after the 3x3 conv (``conv2``), before ``bn2`` (SimAM's official placement)
  conv  ``block.conv2`` replaced by the block, carrying its stride (SK, EPSA, MHSA)
  stage a residual module appended to ``layerK`` (``layerK.<n>``), after the stage's last block (DA, EA)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from ..blocks import attention_modules, create_attention, get_attention  # attention_modules: re-exported

__all__ = ["ARCHS", "AttnBasicBlock", "AttnBottleneck", "attention_modules", "count_parameters", "resnet"]

#: arch -> (block type, blocks per stage), as torchvision.
ARCHS: dict[str, tuple[type[nn.Module], list[int]]] = {}


class AttnBasicBlock(BasicBlock):
    """torchvision's BasicBlock with an optional attention module ``attn`` at ``attn_at`` ('post' or 'mid')."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attn: nn.Module | None = None
        self.attn_at = "post"

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.attn is not None and self.attn_at == "mid":
            out = self.attn(out)
        out = self.bn2(out)
        if self.attn is not None and self.attn_at == "post":
            out = self.attn(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class AttnBottleneck(Bottleneck):
    """torchvision's Bottleneck (stride on the 3x3) with an optional attention module ``attn``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attn: nn.Module | None = None
        self.attn_at = "post"

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out)
        if self.attn is not None and self.attn_at == "mid":
            out = self.attn(out)
        out = self.relu(self.bn2(out))
        out = self.bn3(self.conv3(out))
        if self.attn is not None and self.attn_at == "post":
            out = self.attn(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


ARCHS.update(
    resnet18=(AttnBasicBlock, [2, 2, 2, 2]),
    resnet34=(AttnBasicBlock, [3, 4, 6, 3]),
    resnet50=(AttnBottleneck, [3, 4, 6, 3]),
    resnet101=(AttnBottleneck, [3, 4, 23, 3]),
)


def _insert(model: ResNet, attention: str, kwargs: dict[str, Any]) -> None:
    spec = get_attention(attention)
    for stage in spec.stages:
        layer: nn.Sequential = getattr(model, f"layer{stage}")
        if spec.placement == "stage":
            layer.append(create_attention(attention, _block_out(layer[-1]), **kwargs))
            continue
        for block in layer:
            if spec.placement == "conv":
                conv = block.conv2
                block.conv2 = create_attention(attention, conv.in_channels, stride=conv.stride[0], **kwargs)
                if spec.owns_norm:
                    block.bn2 = nn.Identity()
            else:
                width = block.conv2.out_channels if spec.placement == "mid" else _block_out(block)
                block.attn = create_attention(attention, width, **kwargs)
                block.attn_at = spec.placement


def _block_out(block: nn.Module) -> int:
    return block.bn3.num_features if isinstance(block, Bottleneck) else block.bn2.num_features


def resnet(
    arch: str, attention: str | None = None, num_classes: int = 1000, attention_kwargs: dict[str, Any] | None = None
) -> ResNet:
    """torchvision's ResNet ``arch`` with ``attention`` blocks inserted (random initialisation, no metadata).

    Raises:
        ValueError: unknown arch or attention, or block arguments the block rejects.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}")
    block, layers = ARCHS[arch]
    model = ResNet(block, layers, num_classes=num_classes)  # type: ignore[arg-type]
    if attention is not None:
        _insert(model, attention, dict(attention_kwargs or {}))
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
