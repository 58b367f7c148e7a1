"""Ablation: switch an attention block off for one forward and see how the prediction moves.

"Off" replaces the block's weight by its neutral value, the value that makes the block pass its features on
unweighted (the "remove the module" ablations of SENet, Hu et al., CVPR 2018, and CBAM, Woo et al., ECCV 2018):

============================================  =====================================================================
weight                                        off
============================================  =====================================================================
sigmoid / hard-sigmoid gate (channel,         1: the block multiplies its input by one (identity)
spatial, full-size, grouped, axis gates)
softmax over K branches or scales (SK, EPSA,  1/K: every branch weighted equally (SK: the mean of its kernels)
ResNeSt)
softmax over positions, channels or memory    the block's skip path where it has one (attnviz's Dual Attention and
units (pairwise, channel_pairwise, memory)    External Attention are ``x + f(x)``: off passes ``x``); else uniform
                                              1/N over the softmax's axis (MHSA, BoTNet, GCNet's context pooling:
                                              every position weighted alike, i.e. average pooling)
============================================  =====================================================================

A softmax whose axis is not known (a module's output named by an adapter or a declaration) gets the mean of its own
output, which is exactly 1/K for any softmax over K entries.

It works through the same sites, and the same hook engine, as the recorder (:mod:`attnviz.capture.hooks`): the
engine hands each weight computed at attnviz's :class:`~attnviz.blocks.Tap` modules, module sites and function sites
to :class:`Ablation`, which returns the neutral tensor in its place; a residual module's forward hook returns the
module's input. Which value is neutral, and which axis a tap's softmax runs over, is the kind table's
(:data:`attnviz.capture.kinds.KIND_SPECS`). The replacement is per image of the batch, so one forward of a batch
answers every block at once: image 0 as it is, image i with block i off, the last with every block off
(:func:`ablate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from ..blocks.tap import Tap
from ..capture.hooks import SiteHooks
from ..capture.kinds import KIND_SPECS
from ..capture.sites import Site
from ..capture.structure import first_tensor
from .blocks import Block, find_blocks

__all__ = ["OFF", "Ablation", "AblationResult", "Effect", "NotAClassifierError", "ablate", "neutral"]


class NotAClassifierError(ValueError):
    """The model's output is not class logits (B, classes): a check that follows a class cannot run."""


#: kind -> what switching it off means (README, result.json): the kind table's ``off``.
OFF: dict[str, str] = {kind: spec.off for kind, spec in KIND_SPECS.items()}


def neutral(t: Tensor, op: str, kind: str | None, dim: int | None, batch_dim: int = 0) -> Tensor:
    """The neutral value of a weight ``t`` (module docstring): ones for a gate, 1/K for a softmax over K.

    Args:
        t: the weight as computed.
        op: ``"sigmoid"``, ``"hardsigmoid"``, ``"softmax"``, or ``"output"`` (a module's output of ``kind``).
        kind: the map's kind, for ``"output"``.
        dim: the softmax's axis, when known.
        batch_dim: the batch axis of ``t`` (a mean over the rest stands for 1/K where the axis is unknown).
    """
    gate = kind is None or (kind in KIND_SPECS and KIND_SPECS[kind].normalised is None)
    if op in ("sigmoid", "hardsigmoid") or (op == "output" and gate):
        return torch.ones_like(t)
    if dim is not None:
        return torch.full_like(t, 1.0 / t.shape[dim])
    dims = [d for d in range(t.dim()) if d != batch_dim]
    return t.mean(dim=dims, keepdim=True).expand_as(t) if dims else torch.ones_like(t)


def _mask(t: Tensor, off: Tensor, batch_dim: int) -> Tensor:
    """``off`` (B,) bool laid out to broadcast over ``t``: batch first, branches first (K, B, ...) or the batch
    times groups/heads first (B·G, ...), b-major."""
    b = off.shape[0]
    if batch_dim == 1 and t.dim() >= 2 and t.shape[1] == b:
        return off.view(1, b, *[1] * (t.dim() - 2))
    if t.shape[0] == b:
        return off.view(b, *[1] * (t.dim() - 1))
    if t.shape[0] % b == 0:
        return off.repeat_interleave(t.shape[0] // b).view(-1, *[1] * (t.dim() - 1))
    raise ValueError(f"a weight of shape {tuple(t.shape)} has no batch axis of size {b}")


def _replace(t: Tensor, off: Tensor, op: str, kind: str | None, dim: int | None) -> Tensor:
    batch_dim = 1 if op == "softmax" and dim == 0 and t.dim() >= 3 else 0
    return torch.where(_mask(t, off.to(t.device), batch_dim), neutral(t, op, kind, dim, batch_dim), t)


class Ablation:
    """Context manager: the given blocks are off, image by image, during the forwards run inside it.

    Args:
        model: the network (its own blocks, adapted library classes or discovered sites: :func:`find_blocks`).
        blocks: the blocks :func:`find_blocks` found.
        off: block path -> (B,) bool, the images of the batch in which that block is off; a block not named is on.

    The hooks are :class:`attnviz.capture.hooks.SiteHooks`': the model is locked while they are in place, every hook
    is removed on exit, also when the forward raises, and only the thread that entered sees the ablation.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[Block], off: dict[str, Tensor]) -> None:
        known = {b.path: b for b in blocks}
        unknown = [k for k in off if k not in known]
        if unknown:
            raise ValueError(f"not blocks of this model: {unknown}; its blocks are: {sorted(known)}")
        self.model = model
        self.blocks = [known[k] for k in off]
        self.off = {k: v.bool() for k, v in off.items()}
        self._hooks = SiteHooks(model, on_tap=self._tap, on_site=self._site, on_forward=self._check_batch)
        self._tap_off: dict[str, Tensor] = {}  # map name -> its block's (B,) mask
        self._site_off: dict[int, Tensor] = {}  # id(site) -> its block's (B,) mask

    def __enter__(self) -> Ablation:
        self._hooks.open()
        try:
            for b in self.blocks:
                off = self.off[b.path]
                if b.residual and b.module is not None:
                    self._hooks.hook(b.module, self._skip(off))
                    continue
                self._tap_off.update(dict.fromkeys(b.taps, off))
                self._hooks.taps(b.taps)
                self._site_off.update({id(s): off for s in b.sites})
                self._hooks.sites(b.sites)
        except BaseException:
            self._hooks.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._hooks.close()

    # -- the engine's callbacks (in the thread that entered only) ----------------------------------------------
    def _check_batch(self, args: tuple, kwargs: dict[str, Any]) -> None:
        x = first_tensor(args)
        n = {int(v.shape[0]) for v in self.off.values()}
        if x is not None and n and n != {int(x.shape[0])}:
            raise ValueError(f"the ablation masks are for batches of {sorted(n)} images, the input has {x.shape[0]}")

    def _skip(self, off: Tensor) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            x = first_tensor(args)
            if not isinstance(output, Tensor) or x is None or x.shape != output.shape:
                return None
            return torch.where(_mask(output, off.to(output.device), 0), x, output)

        return hook

    def _tap(self, name: str, tap: Tap, output: Tensor, kwargs: dict[str, Any]) -> Tensor:
        spec = KIND_SPECS[tap.kind]
        dim = None if spec.normalised is None else spec.normalised % output.dim()
        return _replace(output, self._tap_off[name], spec.op, tap.kind, dim)

    def _site(self, site: Site, weight: Tensor, op: str, dim: int | None) -> Tensor:
        return _replace(weight, self._site_off[id(site)], op, site.kind, site.dim if dim is None else dim)


@dataclass
class Effect:
    """How the prediction moves with a block (or every block) off.

    Attributes:
        prob: the probability of the reference class with the block off.
        top1_prob_delta: ``prob`` minus the probability with every block on (negative: the block supported it).
        top1: the top-1 class index with the block off.
        top1_changed: whether it differs from the top-1 class with every block on.
    """

    prob: float
    top1_prob_delta: float
    top1: int
    top1_changed: bool

    def json(self) -> dict[str, float | bool]:
        """The contract's ``{"top1_prob_delta": float, "top1_changed": bool}``."""
        return {"top1_prob_delta": self.top1_prob_delta, "top1_changed": self.top1_changed}


@dataclass
class AblationResult:
    """What :func:`ablate` returns.

    Attributes:
        target: the reference class (the prediction with every block on, unless another was asked for).
        prob: its probability with every block on.
        blocks: block path -> :class:`Effect` of switching that block alone off, in forward order.
        all_off: the :class:`Effect` of switching every block off at once.
    """

    target: int
    prob: float
    blocks: dict[str, Effect]
    all_off: Effect


def ablate(
    model: nn.Module,
    x: Tensor,
    blocks: Sequence[Block] | None = None,
    *,
    target: int | None = None,
    batch_size: int = 16,
) -> AblationResult:
    """Switch each attention block off in turn, and all of them at once, for one image.

    One forward per ``batch_size`` rows of the stack [image as it is, image with block 1 off, ..., block n off,
    every block off] (a ResNet-18 with 8 blocks: one forward of 10 images).

    Args:
        model: the network, in the mode it should run in (eval for BatchNorm statistics).
        x: (1, 3, H, W) the preprocessed image, on the model's device.
        blocks: from :func:`find_blocks` (found here when ``None``).
        target: the class whose probability is followed (default: the top-1 class with every block on).
        batch_size: most images per forward (>= 1).

    Returns:
        an :class:`AblationResult`; a model without blocks gives no per-block effects and a zero all-off effect.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if blocks is None:
        blocks = find_blocks(model, x)[0]
    n = len(blocks)
    rows = n + 2  # reference, each block off, all off
    probs: list[Tensor] = []
    for start in range(0, rows, batch_size):
        stop = min(start + batch_size, rows)
        idx = torch.arange(start, stop)
        off = {b.path: (idx == i + 1) | (idx == rows - 1) for i, b in enumerate(blocks)}
        with Ablation(model, blocks, off), torch.inference_mode():
            out = model(x[:1].expand(stop - start, *x.shape[1:]))
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise NotAClassifierError("the model's output is not class logits (B, classes)")
        probs.append(torch.softmax(out.float(), dim=1).cpu())
    p = torch.cat(probs)
    top1 = int(p[0].argmax())
    ref = top1 if target is None else int(target)
    base = float(p[0, ref])

    def effect(row: int) -> Effect:
        top = int(p[row].argmax())
        return Effect(float(p[row, ref]), float(p[row, ref]) - base, top, top != top1)

    return AblationResult(ref, base, {b.path: effect(i + 1) for i, b in enumerate(blocks)}, effect(rows - 1))
