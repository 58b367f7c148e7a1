"""Fused attention: the weights of ``F.scaled_dot_product_attention`` computed explicitly while recording
(attnviz/capture/fused.py), checked against a plain softmax(Q Kᵀ/√d + mask) written here and against timm's own
explicit attention path; the recorder's guarantees (identical logits, no hooks left) and its keep/memory policy."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as nn_module

from attnviz import AttentionRecorder
from attnviz.capture.fused import KeepPolicy, MemoryLimitError, sdpa_weights
from attnviz.capture.hooks import SiteHooks
from attnviz.capture.structure import module_paths

VARIANTS = ("plain", "scale", "causal", "bool", "float", "gqa")


def _hooks(model: nn.Module) -> int:
    """Module hooks on every module, global module hooks, torch function modes."""
    mods = [m for _, m in module_paths(model).values()]
    local = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods)
    glob = len(nn_module._global_forward_hooks) + len(nn_module._global_forward_pre_hooks)
    return local + glob + torch._C._len_torch_function_stack()


def _mask(variant: str, n: int) -> torch.Tensor | None:
    """The variant's mask over (n, n): a fixed pattern (every query keeps its own key)."""
    g = torch.Generator().manual_seed(1)
    if variant == "bool":
        return (torch.rand(n, n, generator=g) > 0.4) | torch.eye(n, dtype=torch.bool)
    if variant == "float":
        return torch.randn(n, n, generator=g)
    return None


def _reference(q: torch.Tensor, k: torch.Tensor, variant: str) -> torch.Tensor:
    """softmax(Q Kᵀ · s + M), written out by hand: (B, heads, N, N) float64."""
    q, k = q.double(), k.double()
    if variant == "gqa":  # K head j serves Q heads j*g .. j*g + g - 1
        g = q.shape[1] // k.shape[1]
        k = torch.stack([k[:, h // g] for h in range(q.shape[1])], dim=1)
    s = 0.3 if variant == "scale" else 1 / math.sqrt(q.shape[-1])
    logits = torch.einsum("bhid,bhjd->bhij", q, k) * s
    n = q.shape[-2]
    if variant == "causal":
        logits = logits + torch.tensor([[0.0 if j <= i else -math.inf for j in range(n)] for i in range(n)])
    m = _mask(variant, n)
    if variant == "bool":
        logits = logits.masked_fill(~m, -math.inf)
    elif variant == "float":
        logits = logits + m.double()
    e = torch.exp(logits - logits.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


class ConvSDPA(nn.Module):
    """Self-attention over a conv feature map's positions through ``F.scaled_dot_product_attention``."""

    def __init__(self, c: int = 16, heads: int = 4, variant: str = "plain") -> None:
        super().__init__()
        self.heads, self.variant = heads, variant
        self.kv_heads = heads // 2 if variant == "gqa" else heads
        d = c // heads
        self.q = nn.Conv2d(c, c, 1)
        self.kv = nn.Conv2d(c, 2 * self.kv_heads * d, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def qk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        q = self.q(x).reshape(b, self.heads, -1, h * w).transpose(-1, -2)  # (B, heads, N, d)
        k, v = self.kv(x).reshape(b, 2, self.kv_heads, -1, h * w).transpose(-1, -2).unbind(1)  # (B, kv_heads, N, d)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qk(x)
        kw: dict = {
            "scale": {"scale": 0.3},
            "causal": {"is_causal": True},
            "bool": {"attn_mask": _mask("bool", h * w)},
            "float": {"attn_mask": _mask("float", h * w)},
            "gqa": {"enable_gqa": True},
        }.get(self.variant, {})
        o = F.scaled_dot_product_attention(q, k, v, **kw)  # (B, heads, N, d)
        return x + self.proj(o.transpose(-1, -2).reshape(b, c, h, w))


class Net(nn.Module):
    def __init__(self, variant: str) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU())
        self.attn = ConvSDPA(variant=variant)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(self.stem(x)).mean((2, 3)))


def _x(b: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("variant", VARIANTS)
def test_sdpa_weights_are_the_papers_softmax_and_give_torchs_output(variant: str) -> None:
    """sdpa_weights equals a hand-written softmax(Q Kᵀ · s + M), and (weights @ V) is the fused call's output."""
    torch.manual_seed(0)
    model = ConvSDPA(variant=variant)
    q, k, v = model.qk(torch.randn(2, 16, 6, 6))
    kwargs = {"scale": 0.3} if variant == "scale" else {}
    kwargs |= {"is_causal": True} if variant == "causal" else {}
    kwargs |= {"enable_gqa": True} if variant == "gqa" else {}
    mask = _mask(variant, 36)
    w = sdpa_weights((q, k, v), kwargs if mask is None else kwargs | {"attn_mask": mask})
    assert w.shape == (2, 4, 36, 36) and w.dtype == torch.float32
    torch.testing.assert_close(w.double(), _reference(q, k, variant), atol=1e-6, rtol=0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **kwargs)
    vv = v.repeat_interleave(2, dim=1) if variant == "gqa" else v
    torch.testing.assert_close(w @ vv, out, atol=1e-5, rtol=0)


def test_a_fully_masked_row_is_zero_not_nan() -> None:
    q = k = v = torch.randn(1, 1, 3, 4)
    mask = torch.tensor([[False, False, False], [True, True, False], [True, True, True]])
    w = sdpa_weights((q, k, v), {"attn_mask": mask})
    assert torch.equal(w[0, 0, 0], torch.zeros(3)) and torch.allclose(w[0, 0, 1:].sum(-1), torch.ones(2))


@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_attention_on_a_feature_map_is_a_pairwise_map(variant: str) -> None:
    """A module on a conv feature map that calls F.scaled_dot_product_attention gives a pairwise map (B, heads, N, N)
    equal to the plain reference, in the discovery forward and in a later one; logits bit-identical; no hooks left."""
    torch.manual_seed(0)
    model = Net(variant).eval()
    x = _x()
    with torch.no_grad():
        bare = model(x)
        with AttentionRecorder(model) as rec:
            first = model(x)
            later = model(x)
        feat = model.stem(x)
        q, k, _ = model.attn.qk(feat)
    assert torch.equal(bare, first) and torch.equal(bare, later)
    assert _hooks(model) == 0
    assert rec.unclassified == []
    ref = _reference(q, k, variant)
    assert len(rec.maps) == 2
    for m in rec.maps:
        assert (m.name, m.kind, m.how, m.kept, m.size) == (
            "attn.scaled_dot_product_attention()",
            "pairwise",
            "function",
            "full",
            (8, 8),
        )
        assert m.data.shape == (2, 4, 64, 64)
        torch.testing.assert_close(m.data.double(), ref, atol=1e-6, rtol=0)


def test_keep_mean_and_rows() -> None:
    """keep="mean": the head mean (B, 1, N, N); keep="rows": the head mean and every head's first row."""
    torch.manual_seed(0)
    model = Net("plain").eval()
    x = _x()
    with torch.no_grad():
        with AttentionRecorder(model, keep="full") as full:
            model(x)
        with AttentionRecorder(model, keep="mean") as mean:
            model(x)
        with AttentionRecorder(model, keep="rows") as rows:
            model(x)
    (f,), (m,), (r,) = full.maps, mean.maps, rows.maps
    assert (m.kind, m.kept, m.rows, tuple(m.data.shape)) == ("pairwise", "mean", None, (2, 1, 64, 64))
    torch.testing.assert_close(m.data, f.data.mean(1, keepdim=True))
    assert torch.allclose(m.data.sum(-1), torch.ones(2, 1, 64), atol=1e-5)
    assert (r.kept, tuple(r.rows.shape)) == ("rows", (2, 4, 1, 64))
    torch.testing.assert_close(r.data, m.data)
    assert torch.equal(r.rows, f.data[:, :, :1])
    with pytest.raises(ValueError, match="keep='all'; choose one of auto, full, mean, rows"):
        AttentionRecorder(model, keep="all")


def test_past_the_memory_limit_the_recorder_says_which_layer_and_how_to_keep_less() -> None:
    """A limit smaller than what is kept stops the forward with a clear error (the layer, the size, what to do);
    the hooks are gone and the model runs as before."""
    torch.manual_seed(0)
    model = Net("plain").eval()
    x = _x()
    bare = model(x)
    per_layer = 2 * 4 * 64 * 64 * 4  # (B, heads, N, N) float32
    for discovered in (False, True):  # in the discovery forward, then in a later recorder's
        match = r"attn.*\(2, 4, 64, 64\).*keep='mean' or keep='rows'"
        with pytest.raises(MemoryLimitError, match=match), AttentionRecorder(model, memory_limit=per_layer - 1):
            model(x)
        assert _hooks(model) == 0
        if not discovered:
            with AttentionRecorder(model):
                model(x)  # discovered now
    assert torch.equal(model(x), bare)
    with AttentionRecorder(model, keep="mean", memory_limit=per_layer) as rec:  # computed whole, kept as the mean
        model(x)
    assert rec.maps[0].kept == "mean"
    assert KeepPolicy("rows").kept_bytes((2, 4, 64, 64), "rows") == 4 * 2 * (64 * 64 + 4 * 64)


timm = pytest.importorskip("timm")


def test_timm_vit_fused_attention_is_recorded_and_equals_timms_explicit_path() -> None:
    """timm's ViT-Tiny as shipped (fused attention): its 12 attention modules give maps (none silently absent),
    logits bit-identical, no hooks left; the weights equal timm's own explicit softmax (a copy with fused_attn off,
    read by a hook on its attn_drop) within 1e-5, through the recorder (keep="full") and the bare site-hook engine;
    the default keep for token attention is the head mean plus each head's class-token row."""
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    explicit = copy.deepcopy(vit)
    for block in explicit.blocks:
        block.attn.fused_attn = False  # on this copy only
    assert all(b.attn.fused_attn for b in vit.blocks)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    want: list[torch.Tensor] = []
    handles = [b.attn.attn_drop.register_forward_hook(lambda m, a, o: want.append(a[0])) for b in explicit.blocks]
    with torch.no_grad():
        explicit(x)
        bare = vit(x)
        with AttentionRecorder(vit, keep="full") as full:
            logits = vit(x)
        with AttentionRecorder(vit) as default:
            again = vit(x)
    for h in handles:
        h.remove()
    assert torch.equal(bare, logits) and torch.equal(bare, again) and _hooks(vit) == 0
    names = [f"blocks.{i}.attn.scaled_dot_product_attention()" for i in range(12)]
    assert [m.name for m in full.maps] == names and full.unclassified == []
    assert [m.name for m in default.maps] == names and default.unclassified == []
    for f, d, w in zip(full.maps, default.maps, want, strict=True):
        assert (f.how, f.kept, tuple(f.data.shape)) == ("function", "full", (1, 3, 197, 197))
        torch.testing.assert_close(f.data, w, atol=1e-5, rtol=0)
        assert (d.kept, tuple(d.data.shape), tuple(d.rows.shape)) == ("rows", (1, 1, 197, 197), (1, 3, 1, 197))
        torch.testing.assert_close(d.data, w.mean(1, keepdim=True), atol=1e-5, rtol=0)
        torch.testing.assert_close(d.rows, w[:, :, :1], atol=1e-5, rtol=0)
        assert d.kind == f.kind

    got: dict[str, torch.Tensor] = {}  # the one site-hook engine, on the sites discovery found
    hooks = SiteHooks(vit, on_site=lambda site, w, op, dim: got.__setitem__(site.name, w))
    hooks.open()
    try:
        assert full.discovery is not None
        hooks.sites(full.sites)
        with torch.no_grad():
            assert torch.equal(vit(x), bare)
    finally:
        hooks.close()
    assert _hooks(vit) == 0
    assert list(got) == names
    for name, w in zip(names, want, strict=True):
        torch.testing.assert_close(got[name], w, atol=1e-5, rtol=0)
