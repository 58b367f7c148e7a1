"""Sanity check: the cascading model-parameter randomisation test of Adebayo et al., "Sanity Checks for Saliency
Maps", NeurIPS 2018, applied to the attention blocks' own maps.

The network's parameters are re-drawn from the classifier down to a block, that block included, on a deep copy
(the served model is never touched), and the block's map is computed again. A map that hardly changes (Spearman
above :data:`WARN_ABOVE`) reflects the architecture or the input more than what was learned.

"Above" is forward order: a module's parameters are randomised when the module is first called at or after the
block's attention module, so for a forward map only the block's own parameters can change it (layers after it do
not feed it; they matter to Grad-CAM, whose gradient flows back through them). A parameter-free block (SimAM)
therefore keeps its map exactly: its map is what the trained layers below it make of the input.

Each parameter is re-drawn i.i.d. from a normal with the trained tensor's own mean and standard deviation (a
one-element or constant tensor: standard deviation max(|mean|, 0.01)), from a generator seeded by ``seed`` and the
parameter's name, so a block's randomised map does not depend on which other blocks were checked. BatchNorm running
statistics are buffers and stay as trained.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..capture.hooks import model_lock
from .blocks import Block, block_view, find_blocks

__all__ = ["WARN_ABOVE", "call_order", "randomise_from", "randomised_views"]

#: Spearman's rank correlation above which a randomised map counts as "hardly changed" (the issue's 0.8).
WARN_ABOVE = 0.8


def call_order(model: nn.Module, x: Tensor) -> dict[int, int]:
    """id(module) -> the index of its first call in one forward of ``x[:1]`` (modules never called are absent)."""
    order: dict[int, int] = {}

    def pre(module: nn.Module, args: tuple) -> None:
        order.setdefault(id(module), len(order))

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    try:
        with torch.inference_mode():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return order


def _start(block: Block, order: dict[int, int]) -> int | None:
    """The first call index of a block: its attention module's, else its earliest tap or site owner's."""
    mods = [block.module] if block.module is not None else [*block.taps.values(), *(s.owner for s in block.sites)]
    found = [order[id(m)] for m in mods if m is not None and id(m) in order]
    return min(found) if found else None


def randomise_from(model: nn.Module, start: int, order: dict[int, int], seed: int = 0, done: int | None = None) -> int:
    """Re-draw, in place, every parameter of the modules first called at index ``start`` or later (and, when
    ``done`` is given, before ``done``: a cascade goes on from where it stopped). Returns the number of tensors."""
    n = 0
    for name, module in model.named_modules():
        i = order.get(id(module))
        if i is None or i < start or (done is not None and i >= done):
            continue
        for pname, p in module.named_parameters(recurse=False):
            _redraw(p, f"{name}.{pname}" if name else pname, seed)
            n += 1
    return n


@torch.no_grad()
def _redraw(p: Tensor, name: str, seed: int) -> None:
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
    t = p.detach().float().cpu()
    mean = float(t.mean()) if t.numel() else 0.0
    std = float(t.std()) if t.numel() > 1 else 0.0
    if not std > 0:
        std = max(abs(mean), 1e-2)
    p.copy_((torch.randn(t.shape, generator=g) * std + mean).to(p.dtype))


def randomised_views(
    model: nn.Module,
    x: Tensor,
    blocks: Sequence[Block],
    *,
    seed: int = 0,
    query: tuple[float, float] | None = None,
    view: str | None = None,
) -> dict[str, np.ndarray | None]:
    """Each block's spatial view recomputed with the parameters randomised from the classifier down to that block.

    One deep copy of ``model`` (made under its lock; the model itself is never changed) is randomised step by step,
    from the last block to the first, with one recorded forward per block.

    Args:
        model: the trained network.
        x: (1, 3, H, W) the preprocessed image.
        blocks: from :func:`~attnviz.checks.find_blocks` (of ``model``).
        seed: the randomisation's seed.
        query: the query of pairwise and token views, as fractions of the image (``None``: each kind's default).
        view: a named spatial view (:func:`~attnviz.checks.blocks.block_view`), ``None``: each kind's default.

    Returns:
        block path -> its randomised (h, w) spatial view (``None`` for a block without one).
    """
    with model_lock(model):
        twin = copy.deepcopy(model)
    twin_mods = dict(twin.named_modules())
    order = call_order(twin, x)
    located = []
    for b in blocks:
        module = twin_mods.get(b.path)
        start = order.get(id(module)) if module is not None else None
        if start is None:  # map the block's own modules onto the copy through their paths
            start = _start(_on(b, model, twin), order)
        located.append((start, b))
    out: dict[str, np.ndarray | None] = {b.path: None for b in blocks}
    done: int | None = None
    for start, b in sorted(((s, b) for s, b in located if s is not None), key=lambda t: -t[0]):
        randomise_from(twin, start, order, seed, done)
        done = start
        twin_blocks, maps, acts = find_blocks(twin, x)
        mine = next((tb for tb in twin_blocks if tb.path == b.path), None)
        if mine is not None:
            out[b.path] = block_view(mine, maps, acts, query, view)[0]
    return out


def _on(block: Block, model: nn.Module, twin: nn.Module) -> Block:
    """``block`` with its taps and site owners replaced by the copy's modules of the same path."""
    paths = {id(m): p for p, m in model.named_modules()}
    twin_mods = dict(twin.named_modules())
    taps = {n: twin_mods[paths[id(t)]] for n, t in block.taps.items() if id(t) in paths}
    sites = [copy.copy(s) for s in block.sites if id(s.owner) in paths]
    for s in sites:
        s.owner = twin_mods[paths[id(s.owner)]]
    return Block(block.path, block.stage, list(block.maps), list(block.kinds), None, taps, sites)


def warn(spearman: float) -> str:
    """The warning for a block whose randomised map agrees with the trained one at ``spearman``, or ''."""
    if spearman > WARN_ABOVE:
        return (
            f"the map hardly changes with randomised weights (Spearman {spearman:.2f} > {WARN_ABOVE}): "
            "it reflects the architecture or the input more than learning"
        )
    return ""
