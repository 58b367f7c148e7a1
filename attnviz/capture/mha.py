"""``nn.MultiheadAttention``: the per-head weights its forward computes (or, with ``need_weights=False``, never
materialises), recomputed from the module's own inputs.

torchvision's ViT and Swin call ``self_attention(x, x, x, need_weights=False)``: the weights go through a fused kernel
(``F.scaled_dot_product_attention`` or ``torch._native_multi_head_attention``) where no hook can read them. The
adapter (:mod:`attnviz.capture.adapters`) reads the module's inputs with a forward hook and :func:`mha_weights`
computes the weights exactly as ``F.multi_head_attention_forward`` does with ``need_weights=True,
average_attn_weights=False``: the in-projection (packed ``in_proj_weight`` or separate ``q/k/v_proj_weight``, with
``in_proj_bias``), Q scaled by 1/sqrt(head_dim), ``attn_mask`` (boolean: ``True`` = not allowed; float: added; 2-D
(L, S) or 3-D (B·heads, L, S)), ``key_padding_mask`` (B, S) (``True`` = ignored), the causal mask when
``is_causal`` comes without a mask, softmax over the keys (Vaswani et al., "Attention Is All You Need", NeurIPS 2017,
eq. 1 and sec. 3.2.2; PyTorch's ``torch/nn/functional.py``). Dropout is not applied to the weights shown. The module's
forward is not touched: the model gets its own output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["mha_output", "mha_unsupported", "mha_weights"]

_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")


def mha_unsupported(m: nn.Module) -> str | None:
    """Why the weights of this ``nn.MultiheadAttention`` are not recomputed, or ``None`` when they are."""
    if getattr(m, "bias_k", None) is not None or getattr(m, "bias_v", None) is not None:
        return "nn.MultiheadAttention with add_bias_kv=True (a learnt extra key/value) is not read yet"
    if getattr(m, "add_zero_attn", False):
        return "nn.MultiheadAttention with add_zero_attn=True (an extra zero key) is not read yet"
    return None


def _bound(args: tuple, kwargs: dict) -> dict:
    bound = dict(zip(_ARGS, args, strict=False))
    bound.update(kwargs)
    return bound


def mha_weights(m: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """The attention weights of one call ``m(*args, **kwargs)`` of an ``nn.MultiheadAttention``, (B, heads, L, S)
    float32, batch first whatever ``m.batch_first`` is (an unbatched call gives B = 1).

    Equal to the module's own ``need_weights=True, average_attn_weights=False`` weights (without dropout); a query
    row whose keys are all masked out is all zeros (not NaN)."""
    bound = _bound(args, kwargs)
    query, key = bound["query"], bound["key"]
    unbatched = query.dim() == 2
    if unbatched:  # (L, E) -> (L, 1, E)
        query, key = query.unsqueeze(1), key.unsqueeze(1)
    elif m.batch_first:  # (B, L, E) -> (L, B, E), as the functional form reads it
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    e, heads = m.embed_dim, m.num_heads
    hd = e // heads
    if m._qkv_same_embed_dim:
        w_q, w_k, _ = m.in_proj_weight.chunk(3)  # (E, E) each
    else:
        w_q, w_k = m.q_proj_weight, m.k_proj_weight  # (E, E), (E, kdim)
    b_q = b_k = None
    if m.in_proj_bias is not None:
        b_q, b_k, _ = m.in_proj_bias.chunk(3)
    length, batch, _ = query.shape
    keys = key.shape[0]
    q = F.linear(query.float(), w_q.float(), None if b_q is None else b_q.float())  # (L, B, E)
    k = F.linear(key.float(), w_k.float(), None if b_k is None else b_k.float())  # (S, B, E)
    q = q.reshape(length, batch * heads, hd).transpose(0, 1)  # (B·heads, L, hd)
    k = k.reshape(keys, batch * heads, hd).transpose(0, 1)  # (B·heads, S, hd)
    logits = torch.bmm(q * math.sqrt(1.0 / hd), k.transpose(1, 2))  # (B·heads, L, S)
    logits = logits.view(batch, heads, length, keys)
    mask = bound.get("attn_mask")
    masked = False
    if mask is not None:
        if mask.dim() == 3:  # (B·heads, L, S)
            mask = mask.reshape(batch, heads, length, keys) if not unbatched else mask.reshape(1, heads, length, keys)
        logits = logits.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else logits + mask.float()
        masked = True
    elif bool(bound.get("is_causal", False)):
        causal = torch.ones(length, keys, dtype=torch.bool, device=logits.device).triu(1)  # True: not allowed
        logits = logits.masked_fill(causal, float("-inf"))
        masked = True
    pad = bound.get("key_padding_mask")
    if pad is not None:  # (B, S) or (S,) unbatched
        pad = pad.reshape(batch, 1, 1, keys)
        logits = logits.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else logits + pad.float()
        masked = True
    weights = torch.softmax(logits, dim=-1)  # (B, heads, L, S)
    if masked:
        weights = weights.nan_to_num_(0.0)  # rows with every key masked out: exp(-inf) / 0
    return weights


def mha_output(m: nn.Module, args: tuple, kwargs: dict, output: tuple, weights: Tensor) -> tuple:
    """The module's output ``(attn_output, attn_weights)`` with its attention weights replaced by ``weights``
    (B, heads, L, S) (e.g. the checks' ablation, :mod:`attnviz.checks.ablate`): ``out_proj(weights @ V)`` with V the
    module's value projection, in the layout and dtype of the original ``attn_output``; the second element is kept.
    Dropout is not applied (the checks run in eval mode)."""
    value = _bound(args, kwargs)["value"]
    attn_output = output[0]
    unbatched = value.dim() == 2
    if unbatched:  # (S, E) -> (S, 1, E)
        value = value.unsqueeze(1)
    elif m.batch_first:  # (B, S, E) -> (S, B, E)
        value = value.transpose(0, 1)
    e, heads = m.embed_dim, m.num_heads
    hd = e // heads
    w_v = m.in_proj_weight.chunk(3)[2] if m._qkv_same_embed_dim else m.v_proj_weight  # (E, vdim)
    b_v = None if m.in_proj_bias is None else m.in_proj_bias.chunk(3)[2]
    keys, batch, _ = value.shape
    v = F.linear(value.float(), w_v.float(), None if b_v is None else b_v.float())  # (S, B, E)
    v = v.reshape(keys, batch * heads, hd).transpose(0, 1)  # (B·heads, S, hd)
    length = weights.shape[-2]
    a = torch.bmm(weights.float().reshape(batch * heads, length, keys), v)  # (B·heads, L, hd)
    a = a.transpose(0, 1).reshape(length, batch, e)  # (L, B, E)
    b_o = m.out_proj.bias
    out = F.linear(a, m.out_proj.weight.float(), None if b_o is None else b_o.float())  # (L, B, E)
    if unbatched:
        out = out.squeeze(1)
    elif m.batch_first:
        out = out.transpose(0, 1)
    return (out.to(attn_output.dtype), *output[1:])
