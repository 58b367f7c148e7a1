"""Gradient rollout: the class-specific relevance of a transformer's token attention (Chefer, Gur & Wolf, "Generic
Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021), the token
networks' counterpart of Grad-CAM in the checks.

It needs each block's attention weights A_b *in the autograd graph* and the gradient of the explained class's logit
with respect to them. Fused attention (``F.scaled_dot_product_attention``: timm's ViT/DeiT as shipped) and
``nn.MultiheadAttention`` (torchvision's ViT) never materialise A_b, so the pass uses the site-hook engine's
replacement (:class:`attnviz.capture.hooks.SiteHooks`, the mechanism of the checks' ablation) with the weights
themselves, ``W' = W``: the engine recomputes A_b from the call's own Q and K, and the block's output becomes
``W @ V`` (fused) or ``out_proj(W @ V)`` (``nn.MultiheadAttention``), so ∂y/∂A_b flows through A_b while the logits
stay those of the model up to float rounding (:attr:`GradientRollout.logits_delta`, about 1e-6 on a ViT-Tiny in
float32). An explicit softmax is handed back as it is. One forward and one ``torch.autograd.grad`` call with the
weights as its only inputs: the model's parameters get no ``.grad``; the hooks are removed on exit, also when the
forward or the backward raises. The map is :func:`attnviz.capture.rollout.gradient_rollout`'s.

Memory: the pass holds every block's full (B, heads, N, N) weight, its gradient and the graph between them (about
:data:`GRAPH_COPIES` float32 copies of each), whatever the recorder kept. :func:`gradient_rollout_check` estimates
it (:func:`gradient_memory`) before the forward and refuses past the recorder's memory limit with
:class:`~attnviz.capture.fused.MemoryLimitError`, as the recorder does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..capture import AttentionMap
from ..capture.fused import KeepPolicy, MemoryLimitError
from ..capture.hooks import SiteHooks, model_lock
from ..capture.rollout import gradient_rollout
from ..capture.sites import Site
from .blocks import Block

__all__ = [
    "GradientRollout",
    "TokenLayout",
    "attention_gradients",
    "gradient_memory",
    "gradient_rollout_check",
    "token_layout",
]

#: what result.json and the app call it
LABEL = "gradient rollout (Chefer et al. 2021)"
#: float32 copies of each block's (B, heads, N, N) weight the pass holds: the weight, its gradient, and about one
#: more in the autograd graph (the scaled logits or the softmax's saved output)
GRAPH_COPIES = 3


@dataclass(frozen=True)
class TokenLayout:
    """The token attention a gradient rollout runs over: square token maps on one patch grid and one token count.

    Attributes:
        grid: (H, W) of the patch grid.
        prefix: k >= 1 prefix tokens (the class token first).
        maps: the token maps' names, in forward order.
        blocks: the paths of the blocks that own them.
    """

    grid: tuple[int, int]
    prefix: int
    maps: tuple[str, ...]
    blocks: tuple[str, ...]

    @property
    def tokens(self) -> int:
        """N = k + H·W."""
        return self.prefix + self.grid[0] * self.grid[1]


def token_layout(blocks: Sequence[Block], maps: Sequence[AttentionMap]) -> TokenLayout | None:
    """The layout of a network's token attention (as :func:`attnviz.capture.views.rollout_view` reads it), or
    ``None`` where a gradient rollout does not apply: no square token map, token maps over different grids or token
    counts (a hybrid's stages), or no prefix (class) token. Class attention (CaiT's (B, heads, 1, N)) is left out."""
    tokens = [m for m in maps if m.kind == "token" and m.size is not None and m.data.shape[-2] == m.data.shape[-1]]
    if not tokens or len({(m.size, m.data.shape[-1]) for m in tokens}) != 1:
        return None
    size: tuple[int, int] = tokens[0].size  # type: ignore[assignment]
    k = int(tokens[0].data.shape[-1]) - size[0] * size[1]
    if k < 1:
        return None
    names = tuple(m.name for m in tokens)
    owners = tuple(b.path for b in blocks if any(n in b.maps for n in names))
    return TokenLayout(size, k, names, owners)


def gradient_memory(layout: TokenLayout, maps: Sequence[AttentionMap], batch: int = 1) -> int:
    """Bytes the gradient pass holds for ``layout``'s blocks: Σ_blocks batch x heads x N² x 4 bytes x
    :data:`GRAPH_COPIES` (each block's full weight, its gradient and the graph), the heads read from the recorded
    maps (every head's matrix, or the kept rows per head beside the head mean)."""
    n = layout.tokens
    total = 0
    for m in maps:
        if m.name in layout.maps:
            heads = max(int(m.data.shape[1]), 0 if m.rows is None else int(m.rows.shape[1]))
            total += batch * heads * n * n * 4 * GRAPH_COPIES
    return total


def _square(weight: Tensor, batch: int, n: int) -> bool:
    """A (B, heads, N, N) or (B·heads, N, N) weight over ``n`` tokens."""
    s = tuple(weight.shape)
    return s[-2:] == (n, n) and ((len(s) == 4 and s[0] == batch) or (len(s) == 3 and s[0] % batch == 0))


def attention_gradients(
    model: nn.Module, x: Tensor, sites: Sequence[Site], tokens: int, class_idx: int | None = None
) -> tuple[list[str], list[Tensor], list[Tensor], Tensor, int]:
    """Every (B, heads, N, N) weight the ``sites`` compute in one forward of ``x``, and the gradient of the class's
    logit with respect to it.

    Args:
        model: the network, run as it is (its parameters get no ``.grad``).
        x: (B, 3, H, W) the preprocessed images (the class's logit is summed over the batch).
        sites: the sites to read (e.g. the token blocks' :attr:`Block.sites`).
        tokens: N; weights of other shapes at these sites are left alone.
        class_idx: the class explained (default: the first image's prediction).

    Returns:
        (the sites' names in call order, A_b (B, heads, N, N) and ∂y/∂A_b, both detached float32, the logits of the
        forward with the weights in the graph (B, classes) detached, the class).
    """
    batch = int(x.shape[0])
    names: list[str] = []
    weights: list[Tensor] = []

    def keep(site: Site, weight: Tensor, op: str, dim: int | None) -> Tensor | None:
        if op != "softmax" or not _square(weight, batch, tokens):
            return None
        names.append(site.name)
        weights.append(weight)
        return weight  # W' = W: the block's output is recomputed from it (fused, computed sites), in the graph

    with model_lock(model), torch.inference_mode(False), torch.enable_grad():
        xx = x.detach().clone().requires_grad_(True)  # the graph exists whatever the parameters' requires_grad
        hooks = SiteHooks(model, on_site=keep)
        hooks.open()
        try:
            hooks.sites(list(sites))
            scores = model(xx)
            if not isinstance(scores, Tensor) or scores.dim() != 2:
                raise ValueError("gradient rollout needs a classifier: the model's output is not class logits")
            cls = int(scores[0].argmax()) if class_idx is None else int(class_idx)
            if not weights:
                raise ValueError("no token attention weight was computed at the given sites")
            grads = torch.autograd.grad(scores[:, cls].sum(), weights, allow_unused=True)
        finally:
            hooks.close()
    a_out, g_out = [], []
    for w, g in zip(weights, grads, strict=True):
        g = torch.zeros_like(w) if g is None else g  # a weight the class's logit does not depend on
        a_out.append(w.detach().float().reshape(batch, -1, tokens, tokens))
        g_out.append(g.detach().float().reshape(batch, -1, tokens, tokens))
    return names, a_out, g_out, scores.detach(), cls


@dataclass
class GradientRollout:
    """What :func:`gradient_rollout_check` returns.

    Attributes:
        map: (H, W) float32: the class token's relevance over the patch grid (unnormalised, >= 0).
        target: the class explained.
        layout: the token layout it ran over.
        sites: the weights' sites in forward order (one per block).
        logits_delta: max |logits of the pass with the weights in the graph − the model's own logits|.
        timing_ms: the pass's time (forward, backward, the product).
    """

    map: np.ndarray
    target: int
    layout: TokenLayout
    sites: list[str] = field(default_factory=list)
    logits_delta: float = 0.0
    timing_ms: float = 0.0

    def json(self) -> dict[str, Any]:
        """result.json's ``"checks_gradient_rollout"``."""
        return {
            "method": LABEL,
            "target": self.target,
            "blocks": len(self.sites),
            "grid": list(self.layout.grid),
            "prefix": self.layout.prefix,
            "logits_max_abs_diff": self.logits_delta,
        }


def gradient_rollout_check(
    model: nn.Module,
    x: Tensor,
    blocks: Sequence[Block],
    maps: Sequence[AttentionMap],
    class_idx: int | None = None,
    memory_limit: int | None = KeepPolicy.limit,
) -> GradientRollout | None:
    """The gradient rollout map of one image, or ``None`` where the network has no token layout it applies to
    (:func:`token_layout`).

    Args:
        model: a classifier the recorder reads (timm ViT/DeiT with fused or explicit attention, registers,
            torchvision's ViT through ``nn.MultiheadAttention``); it is left as it was.
        x: (1, 3, H, W) the preprocessed image.
        blocks, maps: from :func:`~attnviz.checks.find_blocks` on ``x``.
        class_idx: the class explained (default: the predicted one).
        memory_limit: bytes the pass may hold (:func:`gradient_memory`; default: the recorder's, 2 GiB; ``None``:
            no limit).

    Raises:
        ValueError: the model is no classifier, or the pass saw a different number of token weights than the
            recorded forward.
        MemoryLimitError: the pass would hold more than ``memory_limit``; refused before any forward.
    """
    import time

    layout = token_layout(blocks, maps)
    if layout is None:
        return None
    need = gradient_memory(layout, maps)
    if memory_limit is not None and need > memory_limit:
        mib = 1024**2
        raise MemoryLimitError(
            f"{LABEL} over {len(layout.maps)} blocks of {layout.tokens} tokens: it holds every block's full attention "
            f"weights with their gradients and graph, about {need / mib:.1f} MiB (blocks x heads x N² x 4 bytes x "
            f"{GRAPH_COPIES}); the memory limit is {memory_limit / mib:.1f} MiB. Use a smaller input (fewer tokens), "
            "leave the gradient rollout out, or a larger memory_limit (bytes; None: none)"
        )
    t = time.perf_counter()
    with model_lock(model), torch.inference_mode():
        served = model(x[:1])
    owners = set(layout.blocks)
    sites = [s for b in blocks if b.path in owners for s in b.sites]
    names, a, g, scores, cls = attention_gradients(model, x[:1], sites, layout.tokens, class_idx)
    if len(a) != len(layout.maps):
        raise ValueError(f"the gradient pass read {len(a)} token weights, the recorded forward {len(layout.maps)}")
    r = gradient_rollout(a, g, layout.grid, prefix=layout.prefix)[0].numpy()  # (H, W)
    delta = float((scores.float() - served.float()).abs().max()) if isinstance(served, Tensor) else float("nan")
    return GradientRollout(r, cls, layout, names, delta, (time.perf_counter() - t) * 1e3)
