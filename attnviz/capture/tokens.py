"""Token layouts: how the N tokens of a vision transformer's attention (B, heads, N, N) lie on the image.

A ViT (Dosovitskiy et al., ICLR 2021) cuts the image into an H x W grid of patches (its patch-embed convolution's
output) and puts k extra *prefix* tokens before them: the class token, DeiT's distillation token (Touvron et al.,
ICML 2021), registers (Darcet et al., ICLR 2024). So N = k + H·W, the prefix first, as timm
(``VisionTransformer._pos_embed``: class, then registers; DeiT: class, then distillation) and the authors' code write
them. The grid comes from the shapes the forward produced (a feature map (B, C, H, W) computed before the tokens,
the patch-embed convolution's output), so non-square grids (224 x 320 -> 14 x 20) and the input size actually used
are read as they are; k is the rest, checked against what the model says where it says it (timm's
``num_prefix_tokens``; ``cls_token`` (torchvision: ``class_token``), ``dist_token``, ``reg_token`` /
``register_tokens`` on the root model), which also names the prefix tokens.

Two more readings, for token grids and attention that no ViT has:

- *grids no feature map shows*: LeViT (Graham et al., ICCV 2021) works on (B, N, C) tokens after its convolutional
  stem and subsamples them (14 x 14 -> 7 x 7 -> 4 x 4) without ever forming a (B, C, H, W) map. Where no module's
  output shows a grid for N, it is read from the shapes (:func:`shape_grid`): N = k + h·w with k the model's declared
  prefix count (or 0), and h x w the grid that one stride s makes of the input image actually used (h and w each
  within one of H/s and W/s: ceil or floor of a strided downsampling), the closest in aspect. The layout says so
  ("grid read from the shapes"). Only a (B, heads, Nq, Nk) weight whose first dimension is the batch is read this
  way (windows and blocks stacked on the batch, MaxViT's and NesT's, are not token grids of the image).
- *queries and keys on different grids* (N x M): spatial-reduction attention (PVT, Wang et al., ICCV 2021: keys
  from a strided convolution, or pooled to 7 x 7 in PVT-v2's linear SRA), pooling attention (MViT, Fan et al., ICCV
  2021; MViT-v2, Li et al., CVPR 2022: queries and keys pooled with different strides, a class token on both
  sides), LeViT's subsampling attention (49 queries over 196 keys). Each side is read as above, the keys' layout
  first; :attr:`TokenLayout.query` holds the queries' where they differ (:func:`attention_layout`).

What is kept of a token weight is the recorder's one policy (:class:`attnviz.capture.fused.KeepPolicy`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from torch import Tensor, nn

__all__ = [
    "MAX_PREFIX",
    "TokenLayout",
    "attention_layout",
    "declared_prefix",
    "prefix_names",
    "shape_grid",
    "token_layout",
]

K = TypeVar("K")

#: at most this many prefix tokens are read from shapes alone (class + distillation + a few registers)
MAX_PREFIX = 16


@dataclass(frozen=True)
class TokenLayout:
    """How N tokens lie on the image: ``prefix`` extra tokens first, then an H x W grid in row-major order.

    Attributes:
        prefix: k, the number of prefix tokens (class, distillation, registers).
        grid: (H, W) of the patch grid.
        names: what each prefix token is (``"class"``, ``"distillation"``, ``"register 1"``, ...), k names.
        shapes: the grid was read from the shapes (:func:`shape_grid`): no module's output showed it.
        query: the queries' layout where they lie on another grid than these (the keys'): N x M attention; ``None``:
            the queries are these tokens, or only their prefix tokens (class attention).
    """

    prefix: int
    grid: tuple[int, int]
    names: tuple[str, ...] = ()
    shapes: bool = False
    query: TokenLayout | None = None

    @property
    def n(self) -> int:
        """N = k + H·W."""
        return self.prefix + self.grid[0] * self.grid[1]

    def describe(self) -> str:
        """``1 prefix token (class) + a 14 x 14 grid``."""
        names = f" ({', '.join(self.names)})" if self.names else ""
        read = " (grid read from the shapes)" if self.shapes else ""
        return f"{self.prefix} prefix token(s){names} + a {self.grid[0]} x {self.grid[1]} grid{read}"


def _count(model: nn.Module, attr: str) -> int:
    """How many tokens a ``(1, k, C)`` parameter attribute of the model holds (0 when it has none)."""
    t = getattr(model, attr, None)
    return int(t.shape[1]) if isinstance(t, Tensor) and t.dim() == 3 else 0


def prefix_names(model: nn.Module | None, k: int) -> tuple[str, ...]:
    """Names of the ``k`` prefix tokens in the order timm and the authors' code put them (class, distillation,
    registers), from the root model's ``cls_token`` (torchvision: ``class_token``), ``dist_token``, ``reg_token`` /
    ``register_tokens``; where those do not account for ``k`` tokens: ``"class"`` for a single token, else
    ``"prefix i"``."""
    if model is not None:
        regs = _count(model, "reg_token") or _count(model, "register_tokens")
        cls = _count(model, "cls_token") or _count(model, "class_token")
        names = ["class"] * min(cls, 1) + ["distillation"] * min(_count(model, "dist_token"), 1)
        names += [f"register {i + 1}" for i in range(regs)]
        if len(names) == k:
            return tuple(names)
    return ("class",) if k == 1 else tuple(f"prefix {i}" for i in range(k))


def declared_prefix(model: nn.Module | None) -> int | None:
    """k as the model says it: timm's ``num_prefix_tokens``, else the count of its class, distillation and
    register tokens where it has any; ``None`` where it says nothing."""
    if model is None:
        return None
    k = getattr(model, "num_prefix_tokens", None)
    if isinstance(k, int) and not isinstance(k, bool):
        return k
    n = min(_count(model, "cls_token") or _count(model, "class_token"), 1) + min(_count(model, "dist_token"), 1)
    n += _count(model, "reg_token") or _count(model, "register_tokens")
    return n or None


def token_layout(
    n: int, grid: tuple[int, int] | None, model: nn.Module | None = None, *, shapes: bool = False
) -> TokenLayout | None:
    """The layout of ``n`` tokens over ``grid`` (the patch grid the forward produced), or ``None`` where ``n`` is
    not k + H·W with 0 <= k <= :data:`MAX_PREFIX`, or k is not what the model declares (:func:`declared_prefix`).
    k = 0 (the patch tokens alone) is read whatever the model declares: blocks that run before the class token joins
    (CaiT's self-attention blocks, Touvron et al., ICCV 2021; ConViT's GPSA blocks)."""
    if grid is None:
        return None
    k = n - grid[0] * grid[1]
    if not 0 <= k <= MAX_PREFIX:
        return None
    declared = declared_prefix(model)
    if declared is not None and declared != k and k != 0:
        return None
    return TokenLayout(k, (int(grid[0]), int(grid[1])), prefix_names(model, k) if k else (), shapes)


def _strides(n: int, size: int) -> tuple[float, float]:
    """The open interval of strides s with |n - size/s| < 1: a downsampling by s (rounded up or down) gives n."""
    return size / (n + 1), (size / (n - 1) if n > 1 else math.inf)


def shape_grid(m: int, like: tuple[int, int]) -> tuple[int, int] | None:
    """The grid (h, w), h·w = ``m``, that one stride s makes of ``like`` (the input image (H, W), or a grid): h and
    w each within one of H/s and W/s (a strided downsampling, rounded up or down), the closest in aspect to H/W
    where several do; ``None`` where none does (and for m < 4: too few positions to call a grid).

    224 x 224: 49 -> 7 x 7, 16 -> 4 x 4; 224 x 320: 70 -> 7 x 10, 20 -> 4 x 5; 197 (prime) -> None."""
    if m < 4 or like[0] < 1 or like[1] < 1:
        return None
    best: tuple[float, tuple[int, int]] | None = None
    aspect = math.log(like[0] / like[1])
    for h in range(1, m + 1):
        if m % h:
            continue
        w = m // h
        (a0, a1), (b0, b1) = _strides(h, like[0]), _strides(w, like[1])
        if max(a0, b0) < min(a1, b1):  # one stride fits both sides
            off = abs(math.log(h / w) - aspect)
            if best is None or off < best[0]:
                best = (off, (h, w))
    return None if best is None else best[1]


def _side(
    n: int, grids: Iterable[tuple[K, tuple[int, int]]], like: tuple[int, int] | None, model: nn.Module | None
) -> tuple[TokenLayout, K | None] | None:
    """One side's layout (n tokens): over the first of ``grids`` (a key, e.g. the module that produced it, and its
    (H, W)) that :func:`token_layout` accepts, else read from the shapes against ``like`` (``None``: not at all),
    k = 0 first, then the model's declared prefix count."""
    for key, grid in grids:
        layout = token_layout(n, grid, model)
        if layout is not None:
            return layout, key
    if like is None:
        return None
    declared = declared_prefix(model)
    for k in (0,) if not declared else (0, declared):
        grid = shape_grid(n - k, like)
        layout = None if grid is None else token_layout(n, grid, model, shapes=True)
        if layout is not None:
            return layout, None
    return None


def attention_layout(
    shape: tuple[int, ...],
    keys: Iterable[tuple[K, tuple[int, int]]],
    queries: Iterable[tuple[K, tuple[int, int]]],
    *,
    image: tuple[int, int] | None,
    batch: int,
    model: nn.Module | None = None,
) -> tuple[TokenLayout, K | None, K | None] | None:
    """The token layout of an attention weight of ``shape`` (..., Nq, Nk): the keys' (:func:`token_layout` over the
    first of ``keys`` that fits, else from the shapes), and, where Nq differs from Nk and the queries are not the
    keys' prefix tokens alone (class attention), the queries' as :attr:`TokenLayout.query` (over ``queries``, else
    from the shapes). Also which grid key each side was read from (``None``: from the shapes, or the keys' own).

    Grids are read from the shapes (against the input ``image`` (H, W)) only for a 4-d weight (B, heads, Nq, Nk)
    whose first dimension is the ``batch``: windows or blocks stacked on the batch are not grids of the image.
    ``None`` where a side cannot be read."""
    if len(shape) < 3:
        return None
    nq, nk = int(shape[-2]), int(shape[-1])
    like = image if len(shape) == 4 and shape[0] == batch and image is not None else None
    side = _side(nk, keys, like, model)
    if side is None:
        return None
    layout, key = side
    if nq == nk or 1 <= nq <= layout.prefix:  # the same tokens, or class attention (only prefix tokens query)
        return layout, key, None
    q = _side(nq, queries, like, model)
    if q is None:
        return None
    return replace(layout, query=q[0]), key, q[1]
