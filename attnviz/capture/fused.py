"""Fused attention: the weights that ``F.scaled_dot_product_attention`` never materialises, and what is kept of them.

Vision transformers (timm's fused path, torchvision through ``nn.MultiheadAttention``) compute
``softmax(Q Kᵀ · scale + mask) V`` in one kernel: no softmax exists where a hook could read it (DESIGN.md, "Token
attention"). While a recorder is active, and only for the sites it keeps, :func:`sdpa_weights` computes the same
weights explicitly from the call's own arguments (Vaswani et al., "Attention Is All You Need", NeurIPS 2017, eq. 1;
PyTorch's reference implementation in the ``scaled_dot_product_attention`` docs): ``scale`` defaults to 1/sqrt(E),
``is_causal`` keeps the lower triangle, a boolean mask keeps ``True`` (``False`` = masked out), a float mask is
added, and ``enable_gqa`` repeats each K head for its group of Q heads. The original call's output is what the
model gets, so logits stay bit-identical; dropout is not applied to the weights shown.

:class:`KeepPolicy` says what is kept of a (B, heads, Nq, Nk) weight per layer (the full matrices of every layer of a
ViT-B at 518 px are about 1 GB), and refuses, with the layer, the size and how to keep less, past a memory limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FUSED_FUNCS", "KEEP", "Kept", "KeepPolicy", "MemoryLimitError", "fused_op", "sdpa_weights"]

#: function -> op, for the fused attention functions whose weights are computed explicitly while recording.
FUSED_FUNCS: dict[Callable, str] = {F.scaled_dot_product_attention: "attention"}
#: what a recorder can keep of a fused weight (:class:`KeepPolicy`)
KEEP = ("auto", "full", "mean", "rows")
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")


def fused_op(func: Callable) -> str | None:
    """``"attention"`` for a fused attention function (:data:`FUSED_FUNCS`), else ``None`` (also when unhashable)."""
    try:
        return FUSED_FUNCS.get(func)
    except TypeError:
        return None


def sdpa_weights(args: tuple, kwargs: dict) -> Tensor:
    """The attention weights of one ``F.scaled_dot_product_attention(*args, **kwargs)`` call, (..., Hq, L, S) float32.

    softmax(Q Kᵀ · scale + mask) over the keys, as PyTorch's reference implementation computes it (without dropout);
    a query row whose keys are all masked out is all zeros (not NaN).
    """
    bound = dict(zip(_SDPA_ARGS, args, strict=False))
    bound.update(kwargs)
    q, k = bound["query"], bound["key"]  # (..., Hq, L, E), (..., Hk, S, E)
    mask = bound.get("attn_mask")
    scale = bound.get("scale")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if bound.get("enable_gqa", False) and q.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)  # each K head serves a group of Q heads
    logits = torch.matmul(q.float() * scale, k.float().transpose(-2, -1))  # (..., Hq, L, S); scaled on the small side
    length, keys = logits.shape[-2], logits.shape[-1]
    causal = bool(bound.get("is_causal", False))
    if causal:
        keep = torch.ones(length, keys, dtype=torch.bool, device=q.device).tril()
        logits = logits.masked_fill_(~keep, float("-inf"))
    if mask is not None:
        logits = logits.masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else logits.add_(mask.float())
    weights = torch.softmax(logits, dim=-1)
    if causal or mask is not None:
        weights.nan_to_num_(0.0)  # rows with every key masked out: exp(-inf) / 0
    return weights


class MemoryLimitError(MemoryError):
    """What a recorder would keep of fused attention weights passes its memory limit."""


@dataclass(frozen=True)
class Kept:
    """What a :class:`KeepPolicy` keeps of one weight (B, heads, Nq, Nk).

    Attributes:
        weight: ``full``: the weight itself; ``mean`` and ``rows``: the head mean (B, 1, Nq, Nk).
        rows: ``rows``: the first ``KeepPolicy.rows`` query rows of every head, (B, heads, k, Nk); else ``None``.
        how: ``"full"``, ``"mean"`` or ``"rows"``.
        shape: the weight's shape as computed, (B, heads, Nq, Nk), before it was reduced.
    """

    weight: Tensor
    rows: Tensor | None
    how: str
    shape: tuple[int, ...] = ()

    def describe(self, layout: str) -> str:
        """``layout`` (a site's description of the kept weight, e.g. ``"(1, 1, 197, 197) softmax, 1 head(s), ..."``)
        with the shape and head count as computed, and what was kept: the head mean's shape and "1 head(s)" would
        otherwise read as the network's own."""
        if self.how == "full" or len(self.shape) < 4:
            return layout
        kept = tuple(self.weight.shape)
        text = layout.replace(str(kept), str(self.shape), 1).replace("1 head(s)", f"{self.shape[1]} head(s)", 1)
        k = 0 if self.rows is None else self.rows.shape[2]
        what = f"the head mean + the first {k} row(s) per head" if k else "the head mean"
        return f"{text}; kept: {what}"


@dataclass
class KeepPolicy:
    """What a recorder keeps of the fused attention weights it computes, and how much memory it may hold.

    ``keep``:

    - ``"full"``: every head's (B, heads, Nq, Nk);
    - ``"mean"``: the head mean (B, 1, Nq, Nk) (rows still sum to 1);
    - ``"rows"``: the head mean plus the first ``rows`` query rows of every head (B, heads, rows, Nk): for token
      attention, the class token's (prefix tokens') attention per head;
    - ``"auto"`` (default): ``rows`` for token attention (the module's input is not a (B, C, H, W) map with H·W = Nk),
      ``full`` for attention over a feature map's positions (as an explicit softmax is read).

    ``limit``: bytes the kept weights of one recording may take together (and the explicit (B, heads, Nq, Nk) of one
    call, computed before it is reduced); past it the forward stops with :class:`MemoryLimitError` naming the layer,
    the size and how to keep less. ``None``: no limit.
    """

    keep: str = "auto"
    limit: int | None = 2 * 1024**3
    rows: int = 1
    used: int = 0

    def __post_init__(self) -> None:
        if self.keep not in KEEP:
            raise ValueError(f"keep={self.keep!r}; choose one of {', '.join(KEEP)}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"memory limit {self.limit} bytes: give a positive number of bytes or None")
        if self.rows < 1:
            raise ValueError(f"rows={self.rows}: keep at least one query row per head")

    def how(self, shape: tuple[int, ...], ref: tuple[int, ...] | None) -> str:
        """``full``, ``mean`` or ``rows`` for a weight of ``shape`` (B, heads, Nq, Nk) whose module received ``ref``."""
        if self.keep != "auto":
            return self.keep
        grid = ref is not None and len(ref) == 4 and int(ref[2]) * int(ref[3]) == shape[-1]
        return "full" if grid else "rows"

    def kept_bytes(self, shape: tuple[int, ...], how: str) -> int:
        """Bytes (float32) of what ``how`` keeps of a weight of ``shape`` (..., heads, Nq, Nk)."""
        *lead, heads, nq, nk = shape if len(shape) >= 3 else (1, *shape[-2:])
        b = math.prod(lead)
        per = {"full": heads * nq * nk, "mean": nq * nk, "rows": nq * nk + heads * min(self.rows, nq) * nk}[how]
        return 4 * b * per

    def admit(
        self, name: str, shape: tuple[int, ...], ref: tuple[int, ...] | None, *, how: str | None = None, note: str = ""
    ) -> str:
        """Check that the weight of layer ``name`` fits under the limit (computed, then kept), count what is kept,
        and say how it is kept (``how`` forces it: discovery holds every weight whole; ``note`` ends the message).

        Raises:
            MemoryLimitError: the explicit weight, or what is kept with what is already kept, passes the limit.
        """
        how = how or self.how(shape, ref)
        kept = self.kept_bytes(shape, how)
        full = self.kept_bytes(shape, "full")
        if self.limit is not None and (full > self.limit or self.used + kept > self.limit):
            mib = 1024**2
            raise MemoryLimitError(
                f"attention weights of {name} {tuple(shape)}: computing them takes {full / mib:.1f} MiB and keeping "
                f"them ({how}) {kept / mib:.1f} MiB, with {self.used / mib:.1f} MiB already kept; the memory limit "
                f"is {self.limit / mib:.1f} MiB. Keep less: keep='mean' or keep='rows' (now {self.keep!r}), fewer "
                "layers (names= or exclude=), a smaller batch or input, or a larger memory_limit (bytes; None: none)"
                + note
            )
        self.used += kept
        return how

    def reduce(self, weight: Tensor, how: str, rows: int | None = None) -> Kept:
        """What ``how`` keeps of ``weight`` (B, heads, Nq, Nk); ``rows``: how many first query rows ``"rows"`` keeps
        (a token layout's prefix tokens, :mod:`attnviz.capture.tokens`; default :attr:`rows`; 0: the mean alone)."""
        if how == "full" or weight.dim() < 4:
            return Kept(weight, None, "full", tuple(weight.shape))
        k = self.rows if rows is None else rows
        how = "mean" if k == 0 else how
        mean = weight.mean(dim=1, keepdim=True)  # (B, 1, Nq, Nk)
        rows = weight[:, :, :k].clone() if how == "rows" else None  # (B, heads, k, Nk), not a view
        return Kept(mean, rows, how, tuple(weight.shape))
