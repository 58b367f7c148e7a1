"""Tap: a parameter-free identity module that marks where an attention weight leaves a block.

A block never knows about visualisation. It routes each attention weight (a gate, a softmax) through a
``Tap`` that declares the *kind* of weight. :class:`attnviz.AttentionRecorder` hooks taps, and only taps,
so capture is generic and never special-cases a block.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["KINDS", "Tap"]

#: The kinds of attention weight (DESIGN.md, "Capture contract"). What each one is (canonical shape, normalised axis,
#: views, ablation) is :data:`attnviz.capture.kinds.KIND_SPECS`, keyed by these names.
KINDS: tuple[str, ...] = ("channel", "spatial", "branch", "pairwise", "channel_pairwise", "memory", "token", "window")


class Tap(nn.Module):
    """Identity module carrying the kind of the attention weight that passes through it.

    Args:
        kind: one of :data:`KINDS`.
        read_only: the block promises that the weight passing this tap is only read afterwards (never changed
            in place), so the recorder may keep it without copying it (worth it for large maps: DA's C x C).

    The forward pass returns its input unchanged (the same tensor object). ``size`` is an optional
    keyword giving the (H, W) of the feature map a weight refers to, for kinds whose canonical shape
    does not carry it (``pairwise``); the recorder reads it from the hook's keyword arguments, and lays the
    weight out in its kind's canonical shape (:meth:`attnviz.capture.kinds.KindSpec.canonical`).
    """

    def __init__(self, kind: str, *, read_only: bool = False) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown tap kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        self.kind = kind
        self.read_only = read_only

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (", read_only=True" if self.read_only else "")
