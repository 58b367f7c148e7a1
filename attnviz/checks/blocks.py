"""The attention blocks of a network, as the checks see them: one entry per attention module, with the maps it
owns and the places (taps, adapter and discovered sites) where its weights are computed.

A *block* is the attention module that owns a map: the longest module path among the recorder's activation keys
(:attr:`attnviz.AttentionRecorder.activations`, the same rule as :func:`attnviz.capture.views.owner_activation`) that
starts the map's name; a map no such module owns is grouped under :attr:`attnviz.AttentionMap.block`. The
checks (ablation, Grad-CAM, randomisation) are keyed by this path, e.g. ``"layer2.1.attn"`` (attnviz's CBAM),
``"layer3.2"`` (Dual Attention after stage 3) or ``"layer1.0.se"`` (a discovered SE module).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..blocks import get_attention, list_attentions
from ..blocks.tap import Tap
from ..capture import AttentionMap, AttentionRecorder
from ..capture.maps import IO
from ..capture.sites import Site
from ..capture.views import spatial_view, view_activations

__all__ = ["Block", "block_key", "find_blocks", "residual_module"]


@dataclass(eq=False)
class Block:
    """One attention block.

    Attributes:
        path: module path of the attention module (the key of every check).
        stage: the network's stage (ResNet: 1..4) or ``None``.
        maps: names of the maps it owns, in forward order.
        kinds: their kinds.
        module: the attention module (Grad-CAM's target layer), ``None`` when no module has that path.
        taps: attnviz's :class:`~attnviz.blocks.Tap` modules inside it, by map name.
        sites: adapter, discovered and declared sites inside it.
        feature: the module's output is a (B, C, h, w) feature map (its channel mean is the block's activation).
        residual: the module is a residual module ``x + f(x)`` (attnviz's ``stage`` placement: Dual Attention,
            External Attention), so switching it off means passing its input through (its skip path).
    """

    path: str
    stage: int | None
    maps: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    module: nn.Module | None = None
    taps: dict[str, Tap] = field(default_factory=dict)
    sites: list[Site] = field(default_factory=list)
    feature: bool = False
    residual: bool = False


def block_key(name: str, owners: list[str], fallback: str) -> str:
    """The block a map (or site) ``name`` belongs to: the longest of ``owners`` that is ``name`` or a module path
    ``name`` starts with, else ``fallback``."""
    hits = [k for k in owners if k and (name == k or name.startswith(k + "."))]
    return max(hits, key=len) if hits else fallback


def residual_module(module: nn.Module | None) -> bool:
    """Whether ``module`` is one of attnviz's residual attention modules (registered with placement ``stage``:
    its forward is ``x + f(x)``)."""
    if module is None:
        return False
    classes = tuple(get_attention(n).cls for n in list_attentions() if get_attention(n).placement == "stage")
    return isinstance(module, classes)


def find_blocks(
    model: nn.Module, x: Tensor, **recorder: object
) -> tuple[list[Block], list[AttentionMap], dict[str, np.ndarray]]:
    """The attention blocks of ``model`` in forward order, and the maps and activations ((h, w) per attention module)
    of one recorded forward of ``x[:1]``.

    Args:
        model: any network the recorder reads (taps, adapters, discovery).
        x: an input batch (only its first image is run).
        recorder: further :class:`~attnviz.AttentionRecorder` arguments (``sites``, ``exclude``, ...).
    """
    with AttentionRecorder(model, activations=True, **recorder) as rec, torch.inference_mode():  # type: ignore[arg-type]
        model(x[:1])
    maps = rec.maps
    owners = [k for k in rec.activations if IO not in k]  # module paths (not their input means' keys)
    modules = {p: m for p, m in rec.paths.values()}
    blocks: dict[str, Block] = {}
    for m in maps:
        key = block_key(m.name, owners, m.block)
        b = blocks.get(key)
        if b is None:
            module = modules.get(key)
            b = blocks[key] = Block(
                key, m.stage, module=module, feature=key in owners, residual=residual_module(module)
            )
        b.maps.append(m.name)
        b.kinds.append(m.kind)
    for name, tap in rec.taps.items():
        b = blocks.get(block_key(name, owners, ""))
        if b is not None:
            b.taps[name] = tap
    for s in rec.sites:
        fallback = AttentionMap(s.name, "channel", torch.empty(0)).block  # the residual block, as for its map
        b = blocks.get(block_key(s.name.partition("#")[0], owners, fallback))
        if b is not None:
            b.sites.append(s)
    acts = {k: v[0].numpy() for k, v in rec.activations.items()}
    return list(blocks.values()), maps, acts


def block_view(
    block: Block,
    maps: list[AttentionMap],
    activations: dict[str, np.ndarray],
    query: tuple[float, float] | None = None,
    view: str | None = None,
) -> tuple[np.ndarray | None, str, str | None]:
    """The block's spatial view, as the app and the export draw it (:func:`attnviz.capture.views.build_views`): the
    first of its maps that has one (CBAM: its spatial gate; SE: its gate effect; MHSA: the query's attention; a ViT
    block: the class token's attention). ``query``: (x, y) fractions of the image, ``None``: each kind's default
    (the centre for pairwise maps, the class token for token maps); ``view``: a named view
    (:data:`~attnviz.capture.kinds.VIEW_NAMES`, e.g. ``"gate-weighted"``), ``None``: each kind's default. Returns
    (the (h, w) map or ``None``, its label, the name of the map it comes from)."""
    for m, act in zip(maps, view_activations(maps, activations), strict=True):
        if m.name not in block.maps:
            continue
        rows = None if m.rows is None else m.rows[0].numpy()
        data = m.data[0].numpy()
        shown, label, _ = spatial_view(m.kind, data, m.size, act, query, rows, m.window, view, qgrid=m.qgrid)
        if shown is not None:
            return np.asarray(shown, dtype=np.float32), label, m.name
    return None, "", None
