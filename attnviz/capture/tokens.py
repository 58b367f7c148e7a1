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

What is kept of a token weight is the recorder's one policy (:class:`attnviz.capture.fused.KeepPolicy`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["MAX_PREFIX", "TokenLayout", "declared_prefix", "prefix_names", "token_layout"]

#: at most this many prefix tokens are read from shapes alone (class + distillation + a few registers)
MAX_PREFIX = 16


@dataclass(frozen=True)
class TokenLayout:
    """How N tokens lie on the image: ``prefix`` extra tokens first, then an H x W grid in row-major order.

    Attributes:
        prefix: k, the number of prefix tokens (class, distillation, registers).
        grid: (H, W) of the patch grid.
        names: what each prefix token is (``"class"``, ``"distillation"``, ``"register 1"``, ...), k names.
    """

    prefix: int
    grid: tuple[int, int]
    names: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        """N = k + H·W."""
        return self.prefix + self.grid[0] * self.grid[1]

    def describe(self) -> str:
        """``1 prefix token (class) + a 14 x 14 grid``."""
        names = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.prefix} prefix token(s){names} + a {self.grid[0]} x {self.grid[1]} grid"


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


def token_layout(n: int, grid: tuple[int, int] | None, model: nn.Module | None = None) -> TokenLayout | None:
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
    return TokenLayout(k, (int(grid[0]), int(grid[1])), prefix_names(model, k) if k else ())
