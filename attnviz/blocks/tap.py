"""Tap: a parameter-free identity module that marks where an attention weight leaves a block.

A block never knows about visualisation. It routes each attention weight (a gate, a softmax) through a
``Tap`` that declares the *kind* of weight. :class:`attnviz.AttentionRecorder` hooks taps, and only taps,
so capture is generic and never special-cases a block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["KINDS", "Tap"]

#: kind -> canonical shape of the captured map (see DESIGN.md, "Capture contract").
KINDS: dict[str, str] = {
    "channel": "(B, C)",
    "spatial": "(B, H, W)",
    "branch": "(B, K, C)",
    "pairwise": "(B, heads, N, N), N = H*W",
    "channel_pairwise": "(B, C, C)",
    "memory": "(B, S, H, W)",
}


class Tap(nn.Module):
    """Identity module carrying the kind of the attention weight that passes through it.

    Args:
        kind: one of :data:`KINDS`.
        read_only: the block promises that the weight passing this tap is only read afterwards (never changed
            in place), so the recorder may keep it without copying it (worth it for large maps: DA's C x C).

    The forward pass returns its input unchanged (the same tensor object). ``size`` is an optional
    keyword giving the (H, W) of the feature map a weight refers to, for kinds whose canonical shape
    does not carry it (``pairwise``); the recorder reads it from the hook's keyword arguments.
    """

    def __init__(self, kind: str, *, read_only: bool = False) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown tap kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        self.kind = kind
        self.read_only = read_only

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        return x

    def canonical(self, x: Tensor) -> Tensor:
        """Reshape a weight as it passes this tap to the kind's canonical shape (a view where possible).

        channel: (B, C, 1, 1) | (B, 1, C) | (B, C) -> (B, C)
        spatial: (B, C', H, W) -> (B, H, W), the mean over C' (C' = 1 for CBAM; SimAM, coordinate
            attention: the channel mean of the per-position gate)
        branch: (B, K, C, 1, 1) | (B, K, C) -> (B, K, C)
        pairwise (B, heads, N, N), channel_pairwise (B, C, C), memory (B, S, H, W): as they are.
        """
        b = x.shape[0]
        if self.kind == "channel":
            return x.reshape(b, -1)
        if self.kind == "spatial":
            if x.dim() == 3:
                return x
            _check(x, 4, self.kind)
            return x[:, 0] if x.shape[1] == 1 else x.mean(dim=1, dtype=torch.float32)
        if self.kind == "branch":
            return x.reshape(b, x.shape[1], -1)
        _check(x, {"pairwise": 4, "channel_pairwise": 3, "memory": 4}[self.kind], self.kind)
        return x

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (", read_only=True" if self.read_only else "")


def _check(x: Tensor, dim: int, kind: str) -> None:
    if x.dim() != dim:
        raise ValueError(f"a {kind!r} tap expects a {dim}-d tensor {KINDS[kind]}, got shape {tuple(x.shape)}")
