"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020): how much each patch
token flows into the class token through every layer, residual connections included.

Per layer, the heads are fused (mean, max or min: jacobgil/vit-explain's ``head_fusion``), optionally the lowest
weights are discarded (``discard_ratio``; the class token's column is kept), the residual is added as the identity,
``Â = 0.5·A + 0.5·I``, and the rows are renormalised to sum to 1; the layers' matrices are multiplied in forward
order, ``R = Â_L ··· Â_1``. The class token's row of ``R`` over the patch grid is the rollout map.

Its class-specific gradient variant (Chefer, Gur & Wolf, ICCV 2021: :func:`gradient_rollout`) weighs each head's
weights by the gradient of the explained class's logit, keeps the positive part, and accumulates ``R = R + Ā·R``
from ``R = I``; the gradients come from one backward (:mod:`attnviz.checks.gradient`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["FUSIONS", "gradient_rollout", "gradient_rollout_matrix", "rollout", "rollout_matrix"]

#: how the heads of one layer are fused
FUSIONS: tuple[str, ...] = ("mean", "max", "min")


def _fuse(a: Tensor, fusion: str) -> Tensor:
    """(B, heads, N, N) -> (B, N, N)."""
    if fusion == "mean":
        return a.mean(dim=1)
    if fusion == "max":
        return a.amax(dim=1)
    return a.amin(dim=1)


def rollout_matrix(
    attentions: Sequence[Tensor], *, fusion: str = "mean", discard_ratio: float = 0.0, keep: int = 1
) -> Tensor:
    """R = Â_L ··· Â_1, (B, N, N) float64, from each layer's attention in forward order.

    Args:
        attentions: each layer's weights (B, heads, N, N) (heads = 1 for a head mean), rows summing to 1.
        fusion: ``"mean"``, ``"max"`` or ``"min"`` over the heads.
        discard_ratio: the fraction (0 <= r < 1) of each fused matrix's weights (per image) set to 0, the lowest
            first; the first ``keep`` columns (the class token's) are never discarded.
        keep: columns never discarded (1: the class token).

    Raises:
        ValueError: no layers, layers of different sizes, an unknown fusion or a ratio outside [0, 1).
    """
    if fusion not in FUSIONS:
        raise ValueError(f"unknown head fusion {fusion!r}; valid: {', '.join(FUSIONS)}")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    if not attentions:
        raise ValueError("rollout needs at least one layer's attention")
    shape = tuple(attentions[0].shape)
    if len(shape) != 4 or shape[-1] != shape[-2] or any(tuple(a.shape[-2:]) != shape[-2:] for a in attentions):
        raise ValueError(f"rollout needs (B, heads, N, N) weights of one N, got {[tuple(a.shape) for a in attentions]}")
    b, n = shape[0], shape[-1]
    eye = torch.eye(n, dtype=torch.float64)
    result = eye.expand(b, n, n).clone()
    for a in attentions:
        fused = _fuse(a.detach().to("cpu", torch.float64), fusion)  # (B, N, N)
        if discard_ratio > 0:
            flat = fused.reshape(b, -1).clone()
            col = torch.arange(n * n) % n
            candidates = flat.masked_fill((col < keep)[None], float("inf"))  # kept columns are never the lowest
            drop = candidates.topk(int(n * n * discard_ratio), dim=-1, largest=False).indices
            flat.scatter_(1, drop, 0.0)
            fused = flat.view(b, n, n)
        a_hat = 0.5 * fused + 0.5 * eye
        a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)
        result = a_hat @ result
    return result


def rollout(
    attentions: Sequence[Tensor],
    grid: tuple[int, int],
    *,
    prefix: int = 1,
    fusion: str = "mean",
    discard_ratio: float = 0.0,
) -> Tensor:
    """The rollout map: the class token's row of :func:`rollout_matrix` over the patch grid, (B, H, W) float32.

    Args:
        attentions: each layer's token attention (B, heads, N, N), N = prefix + H·W, in forward order.
        grid: (H, W) of the patch grid.
        prefix: k, the prefix tokens before the grid (the class token first).
        fusion, discard_ratio: as :func:`rollout_matrix` (the class token's column is never discarded).
    """
    h, w = grid
    if prefix < 1:
        raise ValueError("rollout reads the class token's row: the tokens need a prefix (class) token")
    r = rollout_matrix(attentions, fusion=fusion, discard_ratio=discard_ratio, keep=1)
    if r.shape[-1] != prefix + h * w:
        raise ValueError(f"N = {r.shape[-1]} tokens is not {prefix} prefix + {h} x {w}")
    return r[:, 0, prefix:].reshape(-1, h, w).float()


def gradient_rollout_matrix(attentions: Sequence[Tensor], gradients: Sequence[Tensor]) -> Tensor:
    """Chefer, Gur & Wolf's class-specific relevance of self-attention ("Generic Attention-model Explainability for
    Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021, the self-attention update rules): ``R = I``,
    then for each block b in forward order ``Ā_b = E_h[(∇A_b ⊙ A_b)⁺]`` and ``R = R + Ā_b · R``; (B, N, N) float64.

    Args:
        attentions: each block's weights A_b (B, heads, N, N) (every head: the ⁺ is taken per head, before the mean).
        gradients: ∂y_t/∂A_b of the same shapes: the gradient of the explained class's logit y_t.

    Raises:
        ValueError: no blocks, a gradient missing or of another shape, blocks of different sizes.
    """
    if not attentions:
        raise ValueError("gradient rollout needs at least one block's attention")
    if len(gradients) != len(attentions):
        raise ValueError(f"{len(attentions)} attention weights but {len(gradients)} gradients")
    shape = tuple(attentions[0].shape)
    if len(shape) != 4 or shape[-1] != shape[-2]:
        raise ValueError(f"gradient rollout needs (B, heads, N, N) weights, got {shape}")
    for a, g in zip(attentions, gradients, strict=True):
        if tuple(a.shape) != tuple(g.shape) or a.shape[0] != shape[0] or tuple(a.shape[-2:]) != shape[-2:]:
            raise ValueError(f"weights {tuple(a.shape)} and gradient {tuple(g.shape)} do not fit blocks of {shape}")
    b, n = shape[0], shape[-1]
    result = torch.eye(n, dtype=torch.float64).expand(b, n, n).clone()  # R = I: every token is its own relevance
    for a, g in zip(attentions, gradients, strict=True):
        a64 = a.detach().to("cpu", torch.float64)
        g64 = g.detach().to("cpu", torch.float64)
        a_bar = (g64 * a64).clamp(min=0).mean(dim=1)  # (B, N, N): E_h[(∇A ⊙ A)⁺]
        result = result + a_bar @ result
    return result


def gradient_rollout(
    attentions: Sequence[Tensor], gradients: Sequence[Tensor], grid: tuple[int, int], *, prefix: int = 1
) -> Tensor:
    """The class-specific map: the class token's row of :func:`gradient_rollout_matrix` over the patch grid,
    (B, H, W) float32 (the prefix tokens' own columns left out, as the paper reads ``R[0, 1:]``).

    Args:
        attentions, gradients: as :func:`gradient_rollout_matrix`, N = prefix + H·W.
        grid: (H, W) of the patch grid.
        prefix: k, the prefix tokens before the grid (the class token first; registers, a distillation token).
    """
    h, w = grid
    if prefix < 1:
        raise ValueError("gradient rollout reads the class token's row: the tokens need a prefix (class) token")
    r = gradient_rollout_matrix(attentions, gradients)
    if r.shape[-1] != prefix + h * w:
        raise ValueError(f"N = {r.shape[-1]} tokens is not {prefix} prefix + {h} x {w}")
    return r[:, 0, prefix:].reshape(-1, h, w).float()
