"""Attention sites: where a weight is computed in a network, and how its tensor becomes an :class:`AttentionMap`.

A *site* is one place that computes an attention weight: a gate or softmax module's output, the k-th gate or
softmax function call inside a module's forward, or a module the user declared. Three sources produce sites
(DESIGN.md, "Any network"), and all three go through this file:

- adapters for known library classes (:mod:`attnviz.capture.adapters`): the class says where its weight is;
- discovery (:mod:`attnviz.capture.discover`): one instrumented pass finds every gate and softmax in any network;
- declarations by the user (``AttentionRecorder(model, sites={"layer*.cbam.sa": "spatial"})``).

:func:`canonical` turns the weight, in whatever layout the code computed it, into the kind's canonical shape
(:data:`attnviz.capture.kinds.KIND_SPECS`), judging the layout against the feature map (B, C, H, W) that the site's
*reference* module received:

==========================================  =====================  ==============================================
layout computed                             kind                   canonical
==========================================  =====================  ==============================================
(B,C,1,1) (B,1,C) (B,C,1) (B,C) gate        channel                (B, C)
(B,1,H,W) (B,H,W) (B,1,N) (B,N) gate        spatial                (B, H, W)
(B,C,H,W) full-size gate                    spatial                channel mean (B, H, W); ``raw`` keeps it all
(B·G,1,H,W) grouped gate                    spatial                group mean (B, H, W); ``raw`` is (B, G, H, W)
(B,C,H,1) and (B,C,1,W) axis gates          axis -> spatial        paired by the recorder: mean_c(g_h · g_w)
softmax over K: (K,B,C,…) dim 0, (B,K,C,…)  branch                 (B, K, C)
softmax (B,[heads,]N,N), (B·heads,N,N)      pairwise               (B, heads, N, N), N = H·W
softmax (B,[1,]C,C)                         channel_pairwise       (B, C, C)
softmax (B,heads,d,d), heads·d = C tokens'   channel_pairwise       (B, C, C) block-diagonal (XCiT)
softmax (B,N,S) or (B,S,N), S > 1           memory                 (B, S, H, W)
softmax (B,heads,N,N), N = k + H·W tokens    token                  (B, heads, N, N), k prefix tokens + the grid
softmax (B,heads,q,N), q <= k (CaiT)         token                  (B, heads, q, N): class attention
softmax (B,heads,Nq,Nk), Nq = kq + Hq·Wq     token                  (B, heads, Nq, Nk): queries and keys on
  queries, Nk = k + Hk·Wk keys (PVT, MViT)                          different grids (``qgrid``)
softmax (B,H,W,H+W[-1]) over dim 3 (CCNet)  pairwise               (B, 1, N, N), zero off each query's cross
==========================================  =====================  ==============================================

Two readings come before the table (DESIGN.md, "Any network"):

- a weight constant over its trailing H x W positions (a weight expanded to the feature map's size before the softmax
  or gate, as pyramid split attention's ``softmax(se.expand_as(feats))`` over the scales, Zhang et al. 2021) is read
  as its real shape, with 1 x 1 there (:func:`unexpand`): (B, S, C, H, W) over dim 1 is ``branch`` (B, S, C);
- a gate applied to a permuted copy of the feature map whose product is permuted back (triplet attention, Misra et
  al., WACV 2021: (B, 1, C, W) on the map permuted to (B, H, C, W)) is laid back on the map's own axes by the
  discovery pass (:func:`unpermuted_gate`), as the gate it acts as there: (B, C, 1, W) over the C x W plane,
  broadcast over H; shown as ``spatial``, its channel mean at each position, ``raw`` keeping the plane.

Anything else is *unclassified*: reported with its shape and the reason, never dropped in silence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kinds import KIND_SPECS, KINDS, Canon, grid_of, shape_str
from .tokens import TokenLayout

__all__ = [
    "GATE_FUNCS",
    "GATE_MODULES",
    "Site",
    "Unpermute",
    "canonical",
    "cross_pairwise",
    "gate_module_op",
    "gate_op",
    "softmax_dim",
    "unexpand",
    "unpermuted_gate",
]

#: function -> op, for every function that computes a gate or a softmax (torch, Tensor methods, F).
GATE_FUNCS: dict[Callable, str] = {
    torch.sigmoid: "sigmoid",
    torch.sigmoid_: "sigmoid",
    torch.Tensor.sigmoid: "sigmoid",
    torch.Tensor.sigmoid_: "sigmoid",
    torch.special.expit: "sigmoid",
    F.sigmoid: "sigmoid",
    torch.softmax: "softmax",
    torch.Tensor.softmax: "softmax",
    torch.special.softmax: "softmax",
    F.softmax: "softmax",
    F.hardsigmoid: "hardsigmoid",
}

#: module classes whose output is a gate or a softmax, by qualified name (timm's are matched without importing it).
GATE_MODULES: dict[str, str] = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.Hardsigmoid": "hardsigmoid",
    "torch.nn.modules.activation.Softmax": "softmax",
    "torch.nn.modules.activation.Softmax2d": "softmax",
    "timm.layers.activations.Sigmoid": "sigmoid",
    "timm.layers.activations.HardSigmoid": "hardsigmoid",
    "timm.layers.activations_me.HardSigmoidMe": "hardsigmoid",
}


def qualname(obj: object) -> str:
    """``module.Class`` of an object's type."""
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}"


def gate_module_op(module: nn.Module) -> str | None:
    """The op of a gate or softmax module (``"sigmoid"``, ``"hardsigmoid"``, ``"softmax"``), else ``None``."""
    return GATE_MODULES.get(qualname(module))


def gate_op(func: Callable) -> str | None:
    """The op of a gate or softmax function (:data:`GATE_FUNCS`), else ``None`` (also for an unhashable callable)."""
    try:
        return GATE_FUNCS.get(func)
    except TypeError:
        return None


def softmax_dim(func: Callable, args: tuple, kwargs: dict, ndim: int) -> int | None:
    """The (non-negative) dim a softmax call normalises over; ``None`` for a gate."""
    if GATE_FUNCS.get(func) != "softmax":
        return None
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    if dim is None:  # F.softmax's legacy implicit dim
        dim = 0 if ndim in (0, 1, 3) else 1
    return int(dim) % max(ndim, 1)


@dataclass(eq=False)
class Site:
    """One place in a network where an attention weight is computed.

    Attributes:
        name: the map's name: the module path where the weight is computed; a function call or a module that is
            not registered gets its nearest registered module's path plus a short suffix (``"layer1.0.se.sigmoid()"``).
        how: ``"adapter"``, ``"module"``, ``"function"`` or ``"declared"``.
        owner: the module hooked: the gate module whose output is the weight, or the module in whose forward the
            weight is computed by a function call.
        ordinal: for function sites, the weight is the ``ordinal``-th gate/softmax call (0-based) during one call of
            ``owner`` (calls inside its submodules count too); ``None``: the owner's output is the weight.
        call: which call of ``owner`` during one forward of the model (0-based); ``None``: every call.
        ref: the module whose input is the feature map (B, C, H, W) the weight refers to (``None``: the owner).
        attention: the attention module whose output's channel mean is the block's activation (or ``None``).
        kind: the kind when an adapter or a declaration fixes it; ``None``: judged from the layout (:func:`canonical`).
        op: ``"sigmoid"``, ``"hardsigmoid"``, ``"softmax"``, or ``"output"`` (a module output of any kind).
        dim: the dim a softmax function normalises over.
        transform: an adapter's ``fn(owner, weight, ref_shape) -> weight`` applied before :func:`canonical`.
        fused: the weight is a fused attention call's (``F.scaled_dot_product_attention``, op ``"softmax"``), computed
            explicitly while recording (:mod:`attnviz.capture.fused`); what is kept of it follows the recorder's
            :class:`~attnviz.capture.fused.KeepPolicy`.
        grid: for token attention, the module whose output (B, C, H, W) is the patch grid the tokens come from (a
            ViT's patch-embed convolution, :mod:`attnviz.capture.tokens`); its shape is read in every forward. For
            queries and keys on different grids (N x M), the keys' grid.
        qgrid: for N x M token attention, the module whose output (B, C, H, W) is the queries' grid (``None``: the
            keys' tokens, or read from the shapes).
        tokens: token attention whose layout is read again in every forward (:func:`attnviz.capture.tokens.
            attention_layout`): from ``grid``'s and ``qgrid``'s outputs, and from the shapes and the input image
            where no module showed a side's grid.
        compute: ``fn(owner, args, kwargs) -> weight`` (B, heads, Nq, Nk): the weight is computed from the owner's
            inputs after its forward, while the site is kept (an adapter's ``Computed`` entry, e.g.
            ``nn.MultiheadAttention``, :mod:`attnviz.capture.mha`); ``None``: the weight is read where it is computed.
        apply: ``fn(owner, args, kwargs, output, weight) -> output``: the owner's output with a computed weight
            replaced (the checks' ablation); ``None``: a replacement cannot be applied (refused, never ignored).
        why: why the weight cannot be read (an adapter's unsupported configuration): the site is listed as
            unclassified with this reason and never hooked; ``""``: readable.
    """

    name: str
    how: str
    owner: nn.Module
    ordinal: int | None = None
    call: int | None = None
    ref: nn.Module | None = None
    attention: nn.Module | None = None
    kind: str | None = None
    op: str = "output"
    dim: int | None = None
    transform: Callable[[nn.Module, Tensor, tuple[int, ...] | None], Any] | None = field(default=None, repr=False)
    fused: bool = False
    grid: nn.Module | None = None
    qgrid: nn.Module | None = None
    tokens: bool = False
    compute: Callable[[nn.Module, tuple, dict], Tensor] | None = field(default=None, repr=False)
    apply: Callable[[nn.Module, tuple, dict, Any, Tensor], Any] | None = field(default=None, repr=False)
    why: str = ""


def canonical(
    t: Tensor,
    *,
    batch: int,
    ref: tuple[int, ...] | None,
    kind: str | None = None,
    op: str = "sigmoid",
    dim: int | None = None,
    declared: bool = False,
    tokens: TokenLayout | None = None,
) -> Canon | str:
    """The weight ``t`` as a :class:`Canon`, or the reason it cannot be classified.

    Args:
        t: the weight as computed (any layout; batch first, or batch times groups/heads, or branches first).
        batch: B, the batch size of the model's input.
        ref: shape of the reference feature map, normally (B, C, H, W); ``None`` if unknown.
        kind: force this kind (adapters, declarations); ``None``: judge it from the layout (module table).
        op: ``"sigmoid"``/``"hardsigmoid"`` (gates), ``"softmax"``, or ``"output"`` (a module output).
        dim: the dim a softmax normalised over (non-negative).
        declared: ``kind`` is the user's declaration: the map must also mean what the kind says
            (:func:`declared_meaning`), or it is refused with the reason.
        tokens: the token layout of the model's patch grid in this forward (:mod:`attnviz.capture.tokens`): an
            N x N softmax with N = k + H·W that fits no feature map is ``token`` attention; with ``tokens.query``,
            an Nq x Nk softmax whose queries and keys lie on those two layouts is (N x M).
    """
    if kind is not None:
        if kind not in KIND_SPECS:
            return f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}"
        c = KIND_SPECS[kind].force(t, batch, ref)
        if declared and isinstance(c, Canon):
            why = declared_meaning(c, ref)
            return c if why is None else f"{shape_str(tuple(t.shape))} declared {kind!r}: {why}"
        return c
    reduced = unexpand(t, op, dim)
    if reduced is not t:  # constant over its H x W positions: judged as its real shape, the layout says so
        h, w = t.shape[-2:]
        read = canonical(reduced, batch=batch, ref=ref, op=op, dim=dim, tokens=tokens)
        note = f"{shape_str(tuple(t.shape))} constant over its {h} x {w} positions (expanded), read as "
        if isinstance(read, str):
            return note + read
        return dataclasses.replace(read, layout=note + read.layout)
    s = tuple(t.shape)
    nd = len(s)
    if nd < 2:
        return f"{shape_str(s)}: no batch dimension"
    c = int(ref[1]) if ref is not None and len(ref) == 4 else None
    grid_ref = (int(ref[2]), int(ref[3])) if ref is not None and len(ref) == 4 else None
    n = grid_ref[0] * grid_ref[1] if grid_ref else None
    if op == "softmax":
        return _softmax(t, s, dim, batch, ref, c, n, tokens)
    if s[0] != batch:
        if s[0] % batch == 0 and nd == 4:  # (B*G, c, h, w): grouped gates
            g = s[0] // batch
            if s[2] * s[3] > 1:
                raw = t.reshape(batch, g * s[1], s[2], s[3])
                mean = raw.mean(dim=1, dtype=torch.float32)
                return Canon("spatial", mean, (s[2], s[3]), raw, f"{shape_str(s)} grouped gate, G = {g}")
            return Canon("channel", t.reshape(batch, -1), None, None, f"{shape_str(s)} grouped channel gate, G = {g}")
        return f"{shape_str(s)}: the first dimension is not the batch ({batch})"
    if nd == 4:
        _, ch, h, w = s
        if h == 1 and w == 1:
            return Canon("channel", t.reshape(batch, ch), None, None, f"{shape_str(s)} gate")
        if ch == 1:
            return Canon("spatial", t[:, 0], (h, w), None, f"{shape_str(s)} gate")
        if w == 1 or h == 1:
            return Canon("axis", t, (h, w), None, f"{shape_str(s)} axis gate")
        mean = t.mean(dim=1, dtype=torch.float32)
        return Canon("spatial", mean, (h, w), t, f"{shape_str(s)} full-size gate (channel mean)")
    if nd == 3:
        _, a, b = s
        if a == 1 or b == 1:
            x = b if a == 1 else a
            if c is not None and x == c:
                return Canon("channel", t.reshape(batch, x), None, None, f"{shape_str(s)} gate")
            if n is not None and x == n and grid_ref is not None:
                layout = f"{shape_str(s)} gate over positions"
                return Canon("spatial", t.reshape(batch, *grid_ref), grid_ref, None, layout)
            return Canon("channel", t.reshape(batch, x), None, None, f"{shape_str(s)} gate (C = {x})")
        if grid_ref is not None and (a, b) == grid_ref:
            return Canon("spatial", t, (a, b), None, f"{shape_str(s)} gate")
        return f"{shape_str(s)}: a 3-d gate that is neither (B, 1, C), (B, C, 1) nor (B, H, W) of the feature map"
    if nd == 2:
        x = s[1]
        if n is not None and x == n and x != c and grid_ref is not None:
            return Canon("spatial", t.reshape(batch, *grid_ref), grid_ref, None, f"{shape_str(s)} gate over positions")
        return Canon("channel", t, None, None, f"{shape_str(s)} gate")
    return f"{shape_str(s)}: a {nd}-d gate"


def _softmax(
    t: Tensor,
    s: tuple[int, ...],
    dim: int | None,
    batch: int,
    ref: tuple[int, ...] | None,
    c: int | None,
    n: int | None,
    tokens: TokenLayout | None = None,
) -> Canon | str:
    nd = len(s)
    d = nd - 1 if dim is None else dim
    if d == 0 and nd >= 3 and s[1] == batch:  # branches stacked first: (K, B, C, ...)
        k = s[0]
        data = t.movedim(0, 1).reshape(batch, k, -1)
        return Canon("branch", data, None, None, f"{shape_str(s)} softmax over {k} branches (dim 0)")
    if s[0] % batch:
        return f"{shape_str(s)}: the first dimension is not the batch ({batch})"
    lead = s[0] // batch
    query = None if tokens is None else tokens.query
    if nd >= 4 and d == nd - 1 and query is not None and (s[-2], s[-1]) == (query.n, tokens.n):  # type: ignore[union-attr]
        # queries and keys on different grids (PVT, MViT, LeViT); (B, heads, ...), never (B, N, S) memory
        heads = lead * math.prod(s[1:-2])
        layout = f"{shape_str(s)} softmax, {heads} head(s), queries Nq = {query.describe()}, keys Nk = "
        data = t.reshape(batch, heads, s[-2], s[-1])
        return Canon("token", data, tokens.grid, None, layout + tokens.describe(), tokens=tokens)  # type: ignore[union-attr]
    if nd >= 3 and s[-1] == s[-2] and d >= nd - 2:  # (B, [heads,] M, M)
        m = s[-1]
        heads = lead * math.prod(s[1:-2])
        grid = grid_of(m, ref, strict=True)
        width = int(ref[2]) if ref is not None and len(ref) == 3 else None  # C of the tokens (B, N, C) it refers to
        if width is not None and heads > 1 and m * heads == width and m != ref[1] and (tokens is None or tokens.n != m):
            # cross-covariance attention (XCiT, El-Nouby et al., NeurIPS 2021): a d x d softmax per head over the
            # C = heads·d channels, laid out as the block-diagonal C x C matrix it acts as
            blocks = t.reshape(batch, heads, m, m)
            data = torch.zeros(batch, width, width, dtype=t.dtype, device=t.device)
            for h in range(heads):
                data[:, h * m : (h + 1) * m, h * m : (h + 1) * m] = blocks[:, h]
            layout = f"{shape_str(s)} softmax, {heads} head(s) of d x d = {m} x {m}: block-diagonal C x C, C = {width}"
            return Canon("channel_pairwise", data, None, None, layout)
        if c is not None and m == c and m != n:
            if heads != 1:
                return f"{shape_str(s)}: a C x C softmax with {heads} heads"
            return Canon("channel_pairwise", t.reshape(batch, m, m), None, None, f"{shape_str(s)} softmax, C x C")
        if grid is not None and (n == m or tokens is None or tokens.n != m):  # a guessed square grid yields to tokens
            data = t.reshape(batch, heads, m, m)
            return Canon("pairwise", data, grid, None, f"{shape_str(s)} softmax, {heads} head(s), N x N")
        if tokens is not None and tokens.n == m:
            data = t.reshape(batch, heads, m, m)
            layout = f"{shape_str(s)} softmax, {heads} head(s), N = {tokens.describe()}"
            return Canon("token", data, tokens.grid, None, layout, tokens=tokens)
        return f"{shape_str(s)}: an M x M softmax with M = {m}, neither C nor H*W of the feature map"
    if nd >= 3 and tokens is not None and s[-1] == tokens.n and 1 <= s[-2] <= tokens.prefix and d == nd - 1:
        # class attention (CaiT, Touvron et al., ICCV 2021): only the prefix (class) tokens query all N tokens
        q, m = s[-2], s[-1]
        heads = lead * math.prod(s[1:-2])
        layout = f"{shape_str(s)} softmax, {heads} head(s), class attention: {q} prefix query(ies)"
        layout += f", N = {tokens.describe()}"
        return Canon("token", t.reshape(batch, heads, q, m), tokens.grid, None, layout, tokens=tokens)
    if lead != 1:
        return f"{shape_str(s)}: the first dimension is not the batch ({batch})"
    if nd == 4 and d == 3 and ref is not None and len(ref) == 4 and s[1:3] == tuple(ref[2:]):
        h, w = s[1], s[2]
        if h > 1 and w > 1 and s[3] in (h + w, h + w - 1):  # criss-cross attention (CCNet): each query's cross
            layout = f"{shape_str(s)} softmax over each query's column and row ({s[3]} of {h} x {w}), criss-cross"
            return Canon("pairwise", cross_pairwise(t), (h, w), None, layout + ": N x N, zero off the cross")
    if nd == 3 and n is not None and n in s[1:]:  # (B, N, S) or (B, S, N): weights over memory units per position
        pos = 1 if s[1] == n else 2
        other = s[3 - pos]
        grid = grid_of(n, ref, strict=True)
        assert grid is not None
        data = t if pos == 2 else t.transpose(1, 2)  # (B, S, N)
        if other == 1:
            return Canon("spatial", data.reshape(batch, *grid), grid, None, f"{shape_str(s)} softmax over positions")
        return Canon("memory", data.reshape(batch, other, *grid), grid, None, f"{shape_str(s)} softmax, {other} units")
    if nd == 2:
        if n is not None and s[1] == n and s[1] != c:
            grid = grid_of(n, ref, strict=True)
            assert grid is not None
            return Canon("spatial", t.reshape(batch, *grid), grid, None, f"{shape_str(s)} softmax over positions")
        return Canon("channel", t, None, None, f"{shape_str(s)} softmax over channels")
    if nd == 4 and s[1] == 1 and d >= 2 and (ref is None or len(ref) != 4 or s[2:] == tuple(ref[2:])):
        # on the reference map's grid: (B, 1, Nq, Nk) over the keys (one head's attention) is not a spatial map
        return Canon("spatial", t[:, 0], (s[2], s[3]), None, f"{shape_str(s)} softmax over positions")
    if nd == 4 and s[2] == 1 and s[3] == 1 and d == 1:
        return Canon("channel", t.reshape(batch, -1), None, None, f"{shape_str(s)} softmax over channels")
    if d == 1 and nd >= 3 and s[1] <= 16:  # (B, K, C, ...): a softmax over K branches
        k = s[1]
        return Canon("branch", t.reshape(batch, k, -1), None, None, f"{shape_str(s)} softmax over {k} branches (dim 1)")
    return f"{shape_str(s)}: a softmax over dim {d} that fits no kind"


def unexpand(t: Tensor, op: str, dim: int | None) -> Tensor:
    """``t`` with its trailing H x W axes reduced to 1 x 1 (a view) where it is constant over them, else ``t``.

    A weight computed on a tensor expanded (broadcast) to the feature map's size, as pyramid split attention does
    (EPSANet, Zhang et al. 2021: the per-scale SE weights ``expand_as`` the (B, S, C/S, H, W) features, then a softmax
    over the S scales), holds one value per (b, s, c) at every position; its real shape is (B, S, C/S, 1, 1). Only a
    4-d or wider weight with H, W > 1, more than one value per image besides them, and (for a softmax) normalised
    over another axis is tested: stride 0 over H and W, or values equal to the first position's within a few ulps
    (a softmax kernel may round a vectorised lane differently).
    """
    s = t.shape
    nd = t.dim()
    if nd < 4 or s[-2] < 2 or s[-1] < 2 or math.prod(s[1:-2]) < 2:
        return t
    if op == "softmax" and (dim is None or dim % nd >= nd - 2):
        return t
    first = t[..., :1, :1]
    if t.stride()[-2:] == (0, 0):
        return first
    if not t.is_floating_point():
        return t
    tol = torch.finfo(t.dtype).eps * (4 if t.element_size() >= 4 else 1) * max(1.0, float(first.abs().amax()))
    if float((t[..., -1:, -1:] - first).abs().amax()) > tol:  # cheap first: the last position differs
        return t
    return first if float((t - first).abs().amax()) <= tol else t


def cross_pairwise(t: Tensor) -> Tensor:
    """Criss-cross attention (CCNet, Huang et al., ICCV 2019) as the N x N matrix it acts as, (B, 1, N, N), N = H*W.

    ``t`` (B, H, W, H + W) is each query (i, j)'s softmax over its column, keys (k, j) for k < H, then its row, keys
    (i, k) for k < W: ``softmax(cat([energy_H, energy_W], 3))`` as CCNet's code computes it (the query itself masked
    by -inf in the column part, so counted once); with H + W - 1 the column part leaves the query out. A key met in
    both parts gets both weights, so every row still sums to 1; everything off the cross is 0.
    """
    b, h, w, m = t.shape
    col, row = t[..., : m - w], t[..., m - w :]  # (B, H, W, H or H - 1), (B, H, W, W)
    if m - w == h - 1:  # the query's own position left out of its column: put a 0 back at k = i
        k = torch.arange(h, device=t.device)
        i = k.view(h, 1)
        idx = (k - (k > i).long()).clamp(0, h - 2)  # (H, H): column entry k of query row i
        full = col.gather(3, idx.view(1, h, 1, h).expand(b, h, w, h))
        col = full * (k != i).view(1, h, 1, h).to(t.dtype)
    eye_w = torch.eye(w, dtype=t.dtype, device=t.device).view(1, 1, w, 1, w)  # key column l == query column j
    eye_h = torch.eye(h, dtype=t.dtype, device=t.device).view(1, h, 1, h, 1)  # key row k == query row i
    pairs = col.unsqueeze(-1) * eye_w + row.unsqueeze(3) * eye_h  # (B, H, W, H, W): query (i, j) -> key (k, l)
    return pairs.reshape(b, 1, h * w, h * w)


def unpermuted_gate(t: Tensor, perm: tuple[int, ...], ref: tuple[int, ...] | None) -> Canon | str:
    """A gate computed on the feature map permuted by ``perm`` (``x.permute(perm)``), laid back on the map's own
    axes and read as the gate it acts as there.

    Triplet attention (Misra et al., WACV 2021) gates the map (B, C, H, W) permuted to (B, H, C, W) with a
    (B, 1, C, W) gate and permutes the product back: on the map that is a gate over the C x W plane, (B, C, 1, W),
    the same for every row; the (B, W, H, C) branch gives (B, C, H, 1), the H x C plane. Such a plane gate is
    neither a channel gate nor a spatial one: it is shown as ``spatial``, its channel mean at each position of the
    map's H x W grid (it varies along one axis), with ``raw`` keeping the plane. A gate that is one of the plain
    layouts on the map's axes (a channels-last (B, 1, 1, C) gate is (B, C, 1, 1)) is read as that.
    """
    if t.dim() != len(perm) or ref is None or len(ref) != len(perm):
        return f"{shape_str(tuple(t.shape))}: a gate on a permuted map that cannot be laid back on {ref}"
    inverse = tuple(perm.index(i) for i in range(len(perm)))
    g = t.permute(inverse)  # the gate on the map's own axes, broadcast where it has 1
    c = canonical(g, batch=int(ref[0]), ref=ref, op="sigmoid")
    own = shape_str(tuple(g.shape))
    note = f"{shape_str(tuple(t.shape))} gate on the map permuted by {perm}, on the map's own axes {own}"
    if isinstance(c, str):
        return f"{note}: {c}"
    if c.kind != "axis":
        return dataclasses.replace(c, layout=f"{note}: {c.layout}")
    plane = "C x W" if g.shape[2] == 1 else "H x C"
    data = axis_alone(g, ref)  # (B, H, W): the plane's channel mean, broadcast along the axis it does not vary
    layout = f"{note}: a gate over the {plane} plane (channel mean per position)"
    return Canon("spatial", data, (int(data.shape[1]), int(data.shape[2])), g, layout)


@dataclass(frozen=True)
class Unpermute:
    """A discovered site's transform: its gate was computed on the map permuted by ``perm`` (:func:`unpermuted_gate`,
    against the reference map's shape); a gate that cannot be laid back goes on as computed, judged as it is."""

    perm: tuple[int, ...]

    def __call__(self, owner: nn.Module, t: Tensor, ref: tuple[int, ...] | None) -> Canon | Tensor:
        c = unpermuted_gate(t, self.perm, ref)
        return t if isinstance(c, str) else c


def _sums_to_one(x: Tensor, dim: int) -> bool:
    return bool(torch.allclose(x.float().sum(dim), torch.ones(()), atol=1e-3))


def declared_meaning(c: Canon, ref: tuple[int, ...] | None) -> str | None:
    """Why a weight laid out as a declared kind would not mean what the kind says, or ``None`` when it does.

    The kinds' contracts (DESIGN.md): ``pairwise`` and ``channel_pairwise`` rows sum to 1; ``branch`` weights sum to
    1 over the K branches; ``memory`` weights sum to 1 over the S units at each position (External Attention's
    double normalisation) or over the positions for each unit (a softmax over N); ``spatial`` and ``memory`` maps
    lie on the grid of the feature map (B, C, H, W) the site received, and ``channel`` gates have its C.
    """
    grid = (int(ref[2]), int(ref[3])) if ref is not None and len(ref) == 4 else None
    tokens = ref is not None and len(ref) == 3
    d = c.data
    spec = KIND_SPECS[c.kind]
    if spec.grid == "shape" and c.size is not None:
        if grid is not None and tuple(c.size) != grid:
            return f"its {c.size[0]} x {c.size[1]} grid is not the feature map's {grid[0]} x {grid[1]}"
        if tokens:
            return f"the site receives tokens {shape_str(ref)}, not a feature map (B, C, H, W) for a map to lie on"
    channels = ref[1] if grid is not None else ref[2] if tokens else None  # type: ignore[index]
    if c.kind == "channel" and channels is not None and d.shape[1] != channels:
        return f"{d.shape[1]} weights, but the site's input has C = {channels}"
    over_positions = c.kind == "memory" and _sums_to_one(d.flatten(2), 2)  # memory: a softmax over N for each unit
    if spec.normalised is not None and not _sums_to_one(d, spec.normalised) and not over_positions:
        return spec.not_normalised
    return None


def pair_axes(h_gate: Tensor, w_gate: Tensor) -> Tensor | None:
    """Coordinate attention's spatial map from its two axis gates g_h (B, C, H, 1) and g_w (B, C, 1, W):
    mean over C of g_h * g_w, (B, H, W), without building the (B, C, H, W) product. ``None`` if they do not pair."""
    if h_gate.shape[3] != 1 and w_gate.shape[2] == 1:
        h_gate, w_gate = w_gate, h_gate
    if h_gate.dim() != 4 or h_gate.shape[3] != 1 or w_gate.shape[2] != 1 or h_gate.shape[:2] != w_gate.shape[:2]:
        return None
    gh = h_gate[..., 0].float()  # (B, C, H)
    gw = w_gate[:, :, 0].float()  # (B, C, W)
    return torch.einsum("bch,bcw->bhw", gh, gw) / gh.shape[1]


def axis_alone(gate: Tensor, ref: tuple[int, ...] | None) -> Tensor:
    """One axis gate (B, C, H, 1) or (B, C, 1, W) without its partner: broadcast to the reference's (H, W) and
    averaged over channels, (B, H, W)."""
    b, _, h, w = gate.shape
    hh = int(ref[2]) if ref is not None and h == 1 else h
    ww = int(ref[3]) if ref is not None and w == 1 else w
    return gate.float().mean(dim=1).expand(b, hh, ww).contiguous()
