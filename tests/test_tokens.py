"""Token attention of vision transformers (issue 20): the `token` kind's layouts (prefix tokens + a patch grid,
non-square grids), its views, attention rollout against a plain implementation of Abnar & Zuidema's equations, and the
class token's rows against timm's own extractor (timm.utils.AttentionExtract). Fused attention is switched off on the
test's own model instances only (never a global switch)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attnviz.capture.kinds import KIND_SPECS, detail_image
from attnviz.capture.recorder import AttentionRecorder
from attnviz.capture.rollout import rollout
from attnviz.capture.tokens import TokenLayout, declared_prefix, prefix_names, token_layout
from attnviz.capture.views import build_views

timm = pytest.importorskip("timm")


# -- a ViT as public repositories write it (explicit softmax) ----------------------------------------------------------
class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, d)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 32, depth: int = 3, heads: int = 4, patch: int = 16, registers: int = 0) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.register_tokens = nn.Parameter(torch.randn(1, registers, dim) * 0.02) if registers else None
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, img: Tensor) -> Tensor:
        x = self.patch_embed(img).flatten(2).transpose(1, 2)  # (B, H*W, C)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.register_tokens is not None:
            prefix.append(self.register_tokens.expand(x.shape[0], -1, -1))
        x = torch.cat([*prefix, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _unfused(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kw).eval()
    for b in model.blocks:  # this instance only: no global switch
        b.attn.fused_attn = False
    return model


# -- layouts ---------------------------------------------------------------------------------------------------------
def test_layout_from_model_and_shapes() -> None:
    vit = TinyViT(registers=4)
    assert declared_prefix(vit) == 5
    assert prefix_names(vit, 5) == ("class", "register 1", "register 2", "register 3", "register 4")
    assert token_layout(5 + 14 * 20, (14, 20), vit) == TokenLayout(5, (14, 20), prefix_names(vit, 5))
    assert token_layout(1 + 14 * 20, (14, 20), vit) is None  # the model says 5 prefix tokens
    assert token_layout(197, (14, 14)) == TokenLayout(1, (14, 14), ("class",))
    assert token_layout(196 - 1, (14, 14)) is None


@pytest.mark.parametrize("registers", [0, 4])
def test_handwritten_vit_non_square(registers: int) -> None:
    torch.manual_seed(0)
    vit = TinyViT(registers=registers).eval()
    x = torch.randn(2, 3, 224, 320)  # a 14 x 20 grid
    with torch.inference_mode():
        bare = vit(x)
    for _ in range(2):  # the discovery pass, then the cached sites' cheap hooks
        with AttentionRecorder(vit, keep="full") as rec, torch.inference_mode():
            logits = vit(x)
        assert torch.equal(logits, bare)
        assert _no_hooks(vit)
        maps = rec.maps
        assert [m.kind for m in maps] == ["token"] * 3, rec.unclassified
        k = 1 + registers
        for m in maps:
            assert m.size == (14, 20) and tuple(m.data.shape) == (2, 4, k + 280, k + 280)
            assert torch.allclose(m.data.sum(-1), torch.ones(()), atol=1e-5)
    # against the weights computed here by hand, from the block's own q and k
    blk = vit.blocks[0]
    with torch.inference_mode():
        tokens = torch.cat(
            [vit.cls_token.expand(2, -1, -1)]
            + ([vit.register_tokens.expand(2, -1, -1)] if registers else [])
            + [vit.patch_embed(x).flatten(2).transpose(1, 2)],
            1,
        )
        h = blk.norm1(tokens)
        qkv = blk.attn.qkv(h).reshape(2, -1, 3, 4, 8).permute(2, 0, 3, 1, 4)
        ref = ((qkv[0] @ qkv[1].transpose(-2, -1)) * blk.attn.scale).softmax(-1)
    assert torch.allclose(maps[0].data, ref, atol=1e-6)


def test_keep_rows_default_and_views() -> None:
    torch.manual_seed(0)
    vit = TinyViT(registers=2).eval()
    x = torch.randn(1, 3, 224, 224)
    with AttentionRecorder(vit, keep="full") as full, torch.inference_mode():
        vit(x)
    with AttentionRecorder(vit) as rec, torch.inference_mode():  # default: rows (prefix rows per head) + head mean
        vit(x)
    for f, m in zip(full.maps, rec.maps, strict=True):
        assert m.kept == "rows" and tuple(m.data.shape) == (1, 1, 199, 199) and tuple(m.rows.shape) == (1, 4, 3, 199)
        assert torch.allclose(m.data[:, 0], f.data.mean(1), atol=1e-6)
        assert torch.equal(m.rows, f.data[:, :, :3])

    class Res:
        maps = rec.maps
        activations = types.MappingProxyType({})

    views = build_views(Res())  # no query: the class token's attention over the grid, head mean
    v = views[0]
    assert v.kind == "token" and v.cell is None and v.spatial.shape == (14, 14)
    expect = full.maps[0].data[0].mean(0)[0, 3:].reshape(14, 14).numpy()
    np.testing.assert_allclose(v.spatial, expect, atol=1e-6)
    assert detail_image(v) is not None
    q = build_views(Res(), query=(0.99, 0.0))[0]  # the top-right patch: row 0, column 13
    assert q.cell == (0, 13)
    np.testing.assert_allclose(q.spatial, full.maps[0].data[0].mean(0)[3 + 13, 3:].reshape(14, 14), atol=1e-6)
    assert KIND_SPECS["token"].normalised == -1


# -- timm --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kw", "size", "k", "grid"),
    [
        ("vit_tiny_patch16_224", {}, (224, 224), 1, (14, 14)),
        ("deit_tiny_distilled_patch16_224", {}, (224, 224), 2, (14, 14)),
        ("vit_tiny_patch16_224", {"reg_tokens": 4, "no_embed_class": True}, (224, 224), 5, (14, 14)),
        ("vit_tiny_patch16_224", {"dynamic_img_size": True}, (224, 320), 1, (14, 20)),
    ],
)
def test_timm_vit_parity_with_attention_extract(name: str, kw: dict, size: tuple[int, int], k: int, grid) -> None:
    from timm.utils import AttentionExtract

    model = _unfused(name, **kw)
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        bare = model(x)
    with AttentionRecorder(model) as rec, torch.inference_mode():
        logits = model(x)
    assert torch.equal(logits, bare) and _no_hooks(model)
    maps = rec.maps
    assert len(maps) == len(model.blocks) and {m.kind for m in maps} == {"token"}, rec.unclassified
    assert all(m.size == grid and m.rows.shape[2] == k for m in maps)
    extract = AttentionExtract(model, method="fx")
    with torch.inference_mode():
        theirs = list(extract(x).values())  # (B, heads, N, N) per block, in order
    assert len(theirs) == len(maps)
    for m, t in zip(maps, theirs, strict=True):
        assert torch.allclose(m.rows[:, :, 0], t[:, :, 0], atol=1e-5)  # the class token's rows, per head
        assert torch.allclose(m.data[:, 0], t.mean(1), atol=1e-5)


# -- rollout -------------------------------------------------------------------------------------------------------
def _reference_rollout(attns: list[np.ndarray], prefix: int, grid, fusion: str, ratio: float) -> np.ndarray:
    """Abnar & Zuidema (2020), written out plainly for one image: per layer fuse the heads, zero the lowest weights
    (never column 0), A = 0.5 W + 0.5 I, normalise rows, R = A_l R."""
    n = attns[0].shape[-1]
    r = np.eye(n)
    for a in attns:
        w = {"mean": a.mean(0), "max": a.max(0), "min": a.min(0)}[fusion].astype(np.float64)
        if ratio > 0:
            order = sorted((w[i, j], i, j) for i in range(n) for j in range(n) if j != 0)
            for _, i, j in order[: int(n * n * ratio)]:
                w[i, j] = 0.0
        aug = 0.5 * w + 0.5 * np.eye(n)
        aug = aug / aug.sum(axis=1, keepdims=True)
        r = aug @ r
    return r[0, prefix:].reshape(grid)


@pytest.mark.parametrize(("fusion", "ratio"), [("mean", 0.0), ("max", 0.0), ("min", 0.3), ("mean", 0.9)])
def test_rollout_equals_the_papers_equations(fusion: str, ratio: float) -> None:
    g = torch.Generator().manual_seed(1)
    attns = [torch.randn(2, 3, 1 + 12, 1 + 12, generator=g).softmax(-1) for _ in range(4)]  # 3 x 4 grid
    got = rollout(attns, (3, 4), prefix=1, fusion=fusion, discard_ratio=ratio)
    for i in range(2):
        ref = _reference_rollout([a[i].numpy() for a in attns], 1, (3, 4), fusion, ratio)
        np.testing.assert_allclose(got[i].numpy(), ref, atol=1e-6)


def test_rollout_of_identity_attention_is_identity() -> None:
    eye = torch.eye(1 + 16).expand(1, 2, 17, 17)
    out = rollout([eye] * 5, (4, 4))
    assert torch.equal(out, torch.zeros(1, 4, 4))  # the class token only ever attends to itself
    uniform = torch.full((1, 1, 17, 17), 1 / 17)
    u = rollout([uniform] * 3, (4, 4))
    assert torch.allclose(u, u.flatten()[0].expand_as(u))  # uniform attention spreads evenly over the grid
