"""Helpers the block tests share: non-trivial weights, and one recorded forward of a block."""

from __future__ import annotations

import torch

import attnviz


def randomise(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Non-trivial weights and BN statistics, so an equation check cannot pass on zeros and identities."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return module.eval()


def capture(block: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[attnviz.AttentionMap]]:
    """The block's output and the maps recorded during it."""
    with attnviz.AttentionRecorder(block) as rec, torch.no_grad():
        y = block(x)
    return y, rec.maps


def module_inputs(model: torch.nn.Module, modules: list[torch.nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The first input each of ``modules`` receives in one no-grad forward of ``model`` (hooks removed after)."""
    inputs: list[torch.Tensor] = []
    handles = [m.register_forward_pre_hook(lambda _m, a: inputs.append(a[0])) for m in modules]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return inputs
