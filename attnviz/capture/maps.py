"""What a recorder gives: :class:`AttentionMap`, one attention weight of one forward in its canonical shape (the
capture contract, DESIGN.md), named by the module path where it was computed and placed in the network's stages;
and :func:`to_cpu`, the one transfer that brings a forward's maps to the host."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from .windows import WindowLayout

__all__ = ["IO", "AttentionMap", "to_cpu"]

#: the activations' key suffix (``"layer1.0.attn#io"``) of an attention module's output and input channel means,
#: (B, 2, H, W) float64, recorded where the input is a feature map of the output's shape: a channel gate's effect view
#: is a small difference of the two (:func:`attnviz.capture.kinds.gate_effect`), so both are kept in float64
IO = "#io"


#: The network's own stage naming -> (pattern, offset added to the stage number): torchvision/timm ResNets
#: (``layerK.i``), timm's ByobNet/ConvNeXt-style ``stages.S.i`` and EfficientNet-style ``blocks.S.i`` (S from 0),
#: torchvision's EfficientNet/MobileNet ``features.S[.i]`` and RegNet ``trunk_output.blockK.blockK-i``.
_STAGES: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"(?:^|\.)layer(\d+)\.(\d+)(?=\.|$)"), 0),
    (re.compile(r"(?:^|\.)(?:stages|blocks)\.(\d+)\.(\d+)(?=\.|$)"), 1),
    (re.compile(r"(?:^|\.)features\.(\d+)(?:\.(\d+))?(?=\.|$)"), 0),
    (re.compile(r"(?:^|\.)trunk_output\.block(\d+)\.([\w-]+)(?=\.|$)"), 0),
)


def _stage(name: str) -> tuple[int, int] | None:
    """(stage, end of the block's path in ``name``) from the network's stage naming, or ``None``."""
    for pattern, offset in _STAGES:
        m = pattern.search(name)
        if m:
            return int(m.group(1)) + offset, m.end()
    return None


@dataclass(frozen=True)
class AttentionMap:
    """One captured attention weight.

    Attributes:
        name: module path where the weight is computed, e.g. ``"layer2.1.attn.spatial.tap"`` (a tap),
            ``"layer2.1.1.ca.sigmoid"`` (a gate module), ``"layer2.1.se.sigmoid()"`` (a function call in a module).
        kind: ``channel`` (B, C), ``spatial`` (B, H, W), ``branch`` (B, K, C),
            ``pairwise`` (B, heads, N, N), ``channel_pairwise`` (B, C, C) or ``memory`` (B, S, H, W).
        data: detached copy on the CPU, float32, in the kind's canonical shape.
        size: (H, W) of the feature map the weight refers to, where the shape does not already say it
            plainly (``pairwise``), or the map's own (H, W) for ``spatial`` and ``memory``; else ``None``.
        how: where it was found: ``"tap"``, ``"adapter"``, ``"module"``, ``"function"`` or ``"declared"``.
        layout: how the weight was laid out when computed (sites), e.g. ``"(1, 64, 1, 1) gate"``.
        raw: the full weight where ``data`` reduces it (a full-size or grouped gate: ``data`` is its mean), else None.
        kept: for fused attention (weights computed explicitly, :mod:`attnviz.capture.fused`): what the recorder's
            ``keep`` policy kept: ``"full"`` (every head), ``"mean"`` (``data`` is the head mean, heads = 1) or
            ``"rows"`` (the head mean, and :attr:`rows`); ``""``: the weight as the network computed it.
        rows: ``kept == "rows"``: the first query rows of every head, (B, heads, k, Nk) (the class token's for a ViT).
        window: a ``window`` map's windows on its grid (window size, shift, padding;
            :class:`~attnviz.capture.windows.WindowLayout`), else ``None``.
        qgrid: a ``token`` map whose queries lie on another grid than its keys (N x M: PVT's spatial-reduction,
            MViT's pooling, LeViT's subsampling attention): the queries' (Hq, Wq), Nq = kq + Hq·Wq (``size`` is the
            keys' grid, Nk = k + H·W); else ``None``.
    """

    name: str
    kind: str
    data: Tensor
    size: tuple[int, int] | None = None
    how: str = "tap"
    layout: str = ""
    raw: Tensor | None = None
    kept: str = ""
    rows: Tensor | None = None
    window: WindowLayout | None = None
    qgrid: tuple[int, int] | None = None

    @property
    def stage(self) -> int | None:
        """The stage of the block the weight belongs to (ResNet: 1..4), from the network's own stage naming
        (``layerK``, ``stages.S``, ``blocks.S``, ``features.S``, ``trunk_output.blockK``), or ``None``."""
        m = _stage(self.name)
        return None if m is None else m[0]

    @property
    def block(self) -> str:
        """Module path of the residual block (``"layer2.1"``) or stage module (``"layer3.6"``) holding the tap;
        for a tap outside ``layerK.i``, the path of the tap's parent module."""
        m = _stage(self.name)
        if m:
            return self.name[: m[1]]
        return self.name.rpartition(".")[0]


def to_cpu(tensors: list[Tensor]) -> list[Tensor]:
    """The tensors on the CPU, in order, each in ordinary (pageable) memory of its own and of its own dtype; those
    on a GPU travel together.

    One device-to-host copy per device and dtype (one flat buffer each: maps in float32, activations' float64
    inputs and outputs beside them; one buffer for all would promote every map to float64), into pinned memory
    (non-blocking), and one wait per device, however many tensors. Each is then copied out of its staging buffer
    into its own memory, so what a caller keeps (a result held for a session, a map sent to another process) holds
    no page-locked memory and no other tensor's bytes; the staging buffers go back to PyTorch's pinned-memory cache
    at once, for the next call. CPU tensors are returned as they are.
    """
    out = list(tensors)
    on_gpu = [i for i, t in enumerate(out) if t.device.type != "cpu"]
    if not on_gpu:
        return out
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i in on_gpu:
        groups.setdefault((out[i].device, out[i].dtype), []).append(i)
    staged: list[tuple[list[int], Tensor]] = []
    for (device, dtype), idx in groups.items():
        flat = torch.cat([out[i].reshape(-1) for i in idx])  # (sum of numel,) on the device, contiguous
        cuda = device.type == "cuda"
        staging = torch.empty(flat.shape, dtype=dtype, pin_memory=cuda)
        staging.copy_(flat, non_blocking=cuda)
        staged.append((idx, staging))
    for device in {d for d, _ in groups}:
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()  # the one wait per device: the copies have landed
    for idx, staging in staged:
        offset = 0
        for i in idx:
            n = out[i].numel()
            own = torch.empty(out[i].shape, dtype=staging.dtype)  # pageable, this tensor's alone
            out[i] = own.copy_(staging[offset : offset + n].view(out[i].shape))
            offset += n
    del staged  # back to the pinned-memory cache (the copies have landed: reusable at once)
    return out
