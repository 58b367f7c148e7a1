"""Attention whose queries and keys lie on different grids (N x M), and token grids no feature map shows (issue 20,
part 2): spatial-reduction attention (PVT, Wang et al., ICCV 2021), pooling attention with a class token (MViT, Fan
et al., ICCV 2021; MViT-v2, Li et al., CVPR 2022), LeViT's attention with a learned bias on (B, N, C) tokens and its
subsampling attention (Graham et al., ICCV 2021), CrossViT's cross attention (Chen et al., ICCV 2021).

The small modules below are written the way the authors' repositories write theirs; each map is checked against a
plain softmax(Q Kᵀ · scale) on the module's own weights and inputs, its layouts (grids, prefix), its views (what the
keys receive, the class token's row, a clicked query's row), bit-identical logits and no hook left. Then timm's
``pvt_v2_b0``, ``mvitv2_tiny``, ``levit_128s`` and ``crossvit_tiny_240`` with random weights.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module

from attnviz import AttentionRecorder
from attnviz.capture.kinds import detail_image
from attnviz.capture.pooled import key_maps
from attnviz.capture.tokens import attention_layout, shape_grid
from attnviz.capture.views import build_views, head_view, rollout_view, token_heads


def hooks_left(model: nn.Module) -> int:
    """Forward hooks of the model's modules, global module hooks and torch function modes still installed."""
    own = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    glob = len(_module._global_forward_hooks) + len(_module._global_forward_pre_hooks)
    return own + glob + torch._C._len_torch_function_stack()


def inputs_of(module: nn.Module, model: nn.Module, x: Tensor) -> tuple:
    """The positional arguments ``module`` got in one forward of ``model`` on ``x``."""
    got: list[tuple] = []
    handle = module.register_forward_pre_hook(lambda m, args: got.append(args))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return got[0]


# -- PVT: spatial-reduction attention (keys and values from a strided convolution of the map) -----------------------
class SRAttention(nn.Module):
    """PVT's attention (whai362/PVT): queries on the H x W tokens, keys and values from ``sr`` (a conv of stride
    ``sr_ratio``) of the same tokens laid back on their map; ``fused``: through F.scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int = 2, sr_ratio: int = 2, fused: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.fused = fused
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
        self.norm = nn.LayerNorm(dim)

    def qk(self, x: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)
        x_ = x.permute(0, 2, 1).reshape(b, c, h, w)
        x_ = self.norm(self.sr(x_).reshape(b, c, -1).permute(0, 2, 1))
        kv = self.kv(x_).reshape(b, -1, 2, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return q, kv[0], kv[1]

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qk(x, h, w)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            x = attn @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class TinyPVT(nn.Module):
    """A patch-embed convolution (stride 4), one SRA block, mean pooling, a classifier."""

    def __init__(self, dim: int = 16, fused: bool = False) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SRAttention(dim, fused=fused)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)  # (B, C, H, W)
        _, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        x = x + self.attn(self.norm1(x), h, w)
        return self.head(x.mean(dim=1))


def sra_reference(model: TinyPVT, x: Tensor) -> Tensor:
    """softmax(Q Kᵀ · scale) of the SRA block, (B, heads, Nq, Nk), from its own weights and input."""
    tokens, h, w = inputs_of(model.attn, model, x)
    with torch.no_grad():
        q, k, _ = model.attn.qk(tokens, h, w)
        return torch.softmax((q @ k.transpose(-2, -1)) * model.attn.scale, dim=-1)


@pytest.mark.parametrize("fused", [False, True], ids=["explicit", "fused"])
def test_sra_queries_and_keys_on_their_grids(fused: bool) -> None:
    torch.manual_seed(0)
    model = TinyPVT(fused=fused).eval()
    x = torch.randn(2, 3, 32, 48)  # an 8 x 12 patch grid; keys on 4 x 6
    with torch.no_grad():
        bare = model(x)
        with AttentionRecorder(model, keep="full") as rec:
            out = model(x)
    assert torch.equal(out, bare) and hooks_left(model) == 0
    (m,) = rec.maps
    assert (m.kind, m.size, m.qgrid, tuple(m.data.shape)) == ("token", (4, 6), (8, 12), (2, 2, 96, 24))
    assert "queries Nq = 0 prefix token(s) + a 8 x 12 grid" in m.layout and "keys Nk = 0 prefix" in m.layout
    ref = sra_reference(model, x)
    assert torch.allclose(m.data, ref, atol=1e-6)

    views = build_views(rec)
    (v,) = views  # no rollout: queries and keys differ
    assert v.qgrid == (8, 12) and v.grid == (4, 6) and v.cell is None
    received = ref[0].mean(dim=(0, 1)).reshape(4, 6).numpy()  # what each key position receives
    assert v.spatial.shape == (4, 6) and np.allclose(v.spatial, received, atol=1e-6)
    assert abs(float(v.spatial.sum()) - 1.0) < 1e-5  # no key prefix: each row's mass lies on the grid
    assert "receives" in v.spatial_label
    assert token_heads(v) == 2
    one = head_view(v, 1)
    assert np.allclose(one.spatial, ref[0, 1].mean(dim=0).reshape(4, 6).numpy(), atol=1e-6)

    (clicked,) = build_views(rec, query=(0.9, 0.1))  # x, y: a query near the top right of the queries' grid
    assert clicked.cell == (0, 10)
    row = ref[0, :, 10].mean(dim=0).reshape(4, 6).numpy()
    assert np.allclose(clicked.spatial, row, atol=1e-6)
    assert np.allclose(head_view(clicked, 0).spatial, ref[0, 0, 10].reshape(4, 6).numpy(), atol=1e-6)
    tiles = detail_image(clicked)
    assert tiles is not None and tiles.ndim == 3


def test_sra_layout_read_in_every_forward() -> None:
    """The cached sites read the grids again: another input size in the same recorder gives the new grids."""
    torch.manual_seed(1)
    model = TinyPVT().eval()
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(torch.randn(1, 3, 32, 48))
        model(torch.randn(1, 3, 48, 32))
    assert [(m.size, m.qgrid) for m in rec.maps] == [((4, 6), (8, 12)), ((6, 4), (12, 8))]
    assert all(m.kept == "mean" and m.rows is None for m in rec.maps)  # no prefix query: the head mean


def test_sra_keep_mean_is_the_head_mean() -> None:
    torch.manual_seed(2)
    model = TinyPVT(fused=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), AttentionRecorder(model, keep="mean") as rec:
        model(x)
    (m,) = rec.maps
    assert m.kept == "mean" and tuple(m.data.shape) == (1, 1, 64, 16)
    assert torch.allclose(m.data[0, 0], sra_reference(model, x)[0].mean(dim=0), atol=1e-6)
    (v,) = build_views(rec)
    assert token_heads(v) == 0 and head_view(v, 0) is v


# -- MViT: pooling attention with a class token ----------------------------------------------------------------------
def attention_pool(tensor: Tensor, pool: nn.Module, hw: tuple[int, int], has_cls_embed: bool = True):
    """MViT's ``attention_pool`` (facebookresearch/mvit): pool the (B, heads, 1 + H·W, C) tokens on their map, the
    class token set aside and put back first."""
    if has_cls_embed:
        cls_tok, tensor = tensor[:, :, :1, :], tensor[:, :, 1:, :]
    b, n, _, c = tensor.shape
    tensor = tensor.reshape(b * n, hw[0], hw[1], c).permute(0, 3, 1, 2).contiguous()
    tensor = pool(tensor)
    l_pooled = tensor.shape[2] * tensor.shape[3]
    tensor = tensor.reshape(b, n, c, l_pooled).transpose(2, 3)
    if has_cls_embed:
        tensor = torch.cat((cls_tok, tensor), dim=2)
    return tensor


class PoolingAttention(nn.Module):
    """MViT's multi-scale attention: queries pooled by ``stride_q``, keys and values by ``stride_kv`` (depthwise
    convolutions on each head's map)."""

    def __init__(self, dim: int, num_heads: int = 2, stride_q: int = 2, stride_kv: int = 4) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.pool_q = nn.Conv2d(head_dim, head_dim, 3, stride_q, 1, groups=head_dim, bias=False)
        self.pool_k = nn.Conv2d(head_dim, head_dim, 3, stride_kv, 1, groups=head_dim, bias=False)
        self.pool_v = nn.Conv2d(head_dim, head_dim, 3, stride_kv, 1, groups=head_dim, bias=False)

    def qk(self, x: Tensor, hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        return (
            attention_pool(q, self.pool_q, hw),
            attention_pool(k, self.pool_k, hw),
            attention_pool(v, self.pool_v, hw),
        )

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        b = x.shape[0]
        q, k, v = self.qk(x, hw)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, q.shape[2], -1)
        return self.proj(x)


class TinyMViT(nn.Module):
    """A patch-embed convolution (stride 4), a class token, one pooling attention block, the class token's head."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = PoolingAttention(dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        hw = (x.shape[2], x.shape[3])
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        x = self.attn(x, hw)
        return self.head(x[:, 0])


def test_pooling_attention_with_a_class_token() -> None:
    torch.manual_seed(3)
    model = TinyMViT().eval()
    x = torch.randn(2, 3, 32, 48)  # 8 x 12 patches; queries 1 + 4 x 6, keys 1 + 2 x 3
    with torch.no_grad():
        bare = model(x)
        with AttentionRecorder(model) as rec:  # keep="auto": the class token's rows per head + the head mean
            out = model(x)
    assert torch.equal(out, bare) and hooks_left(model) == 0
    (m,) = rec.maps
    assert (m.kind, m.size, m.qgrid, m.kept, tuple(m.data.shape)) == ("token", (2, 3), (4, 6), "rows", (2, 1, 25, 7))
    assert "1 prefix token(s) (class) + a 4 x 6 grid" in m.layout and "1 prefix token(s) (class) + a 2 x 3" in m.layout
    tokens, hw = inputs_of(model.attn, model, x)
    with torch.no_grad():
        q, k, _ = model.attn.qk(tokens, hw)
        ref = torch.softmax((q * model.attn.scale) @ k.transpose(-2, -1), dim=-1)  # (B, heads, 25, 7)
    assert torch.allclose(m.data[:, 0], ref.mean(dim=1), atol=1e-6)
    assert m.rows is not None and torch.allclose(m.rows, ref[:, :, :1], atol=1e-6)  # the class token's, per head

    (v,) = build_views(rec)
    cls_row = ref[0, :, 0, 1:].mean(dim=0).reshape(2, 3).numpy()
    assert np.allclose(v.spatial, cls_row, atol=1e-6) and v.spatial_label.startswith("class token's attention")
    assert float(v.spatial.sum()) < 1.0  # the keys' class token takes its share
    assert token_heads(v) == 2
    assert np.allclose(head_view(v, 1).spatial, ref[0, 1, 0, 1:].reshape(2, 3).numpy(), atol=1e-6)
    (clicked,) = build_views(rec, query=(0.1, 0.9))  # a patch query: bottom left of the 4 x 6 query grid
    assert clicked.cell == (3, 0)
    assert np.allclose(clicked.spatial, ref[0, :, 1 + 3 * 6, 1:].mean(dim=0).reshape(2, 3).numpy(), atol=1e-6)
    assert "only the class token's rows" in head_view(clicked, 0).spatial_label  # a query's row needs every head


# -- LeViT: attention with a learned bias on (B, N, C) tokens, subsampling attention -------------------------------
def bias_idxs(resolution: tuple[int, int], stride: int) -> Tensor:
    """LeViT's attention_bias_idxs: for each (query, key) pair, the index of their |dy|, |dx| offset."""
    k_pos = torch.stack(torch.meshgrid(torch.arange(resolution[0]), torch.arange(resolution[1]), indexing="ij"))
    q_pos = torch.stack(
        torch.meshgrid(
            torch.arange(0, resolution[0], step=stride), torch.arange(0, resolution[1], step=stride), indexing="ij"
        )
    )
    rel = (q_pos.flatten(1)[..., :, None] - k_pos.flatten(1)[..., None, :]).abs()
    return rel[0] * resolution[1] + rel[1]


class Subsample(nn.Module):
    """LeViT's Subsample: the (B, N, C) tokens laid on their grid, every ``stride``-th row and column kept."""

    def __init__(self, stride: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.stride, self.resolution = stride, resolution

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        return x.view(b, *self.resolution, c)[:, :: self.stride, :: self.stride].reshape(b, -1, c)


class LeViTAttention(nn.Module):
    """LeViT's attention (facebookresearch/LeViT): q·kᵀ·scale plus a learned bias per head and |offset|;
    ``stride`` > 1: the subsampling attention, its queries from :class:`Subsample`."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, resolution: tuple[int, int], stride: int = 1) -> None:
        super().__init__()
        self.num_heads, self.key_dim, self.scale = num_heads, key_dim, key_dim**-0.5
        self.kv = nn.Linear(dim, num_heads * key_dim * 2)
        self.q = nn.Sequential(Subsample(stride, resolution), nn.Linear(dim, num_heads * key_dim))
        self.proj = nn.Linear(num_heads * key_dim, dim)
        self.attention_biases = nn.Parameter(torch.randn(num_heads, resolution[0] * resolution[1]))
        self.register_buffer("attention_bias_idxs", bias_idxs(resolution, stride), persistent=False)

    def logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, n, _ = x.shape
        k, v = self.kv(x).view(b, n, self.num_heads, -1).split([self.key_dim, self.key_dim], dim=3)
        q = self.q(x).view(b, -1, self.num_heads, self.key_dim).permute(0, 2, 1, 3)
        bias = self.attention_biases[:, self.attention_bias_idxs]  # (heads, Nq, Nk)
        return q @ k.permute(0, 2, 3, 1) * self.scale + bias, v.permute(0, 2, 1, 3)

    def forward(self, x: Tensor) -> Tensor:
        attn, v = self.logits(x)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(x.shape[0], attn.shape[2], -1)
        return self.proj(x)


class TinyLeViT(nn.Module):
    """A convolutional stem (stride 8: the only (B, C, H, W) map), then tokens only: a subsampling attention to a
    grid no module's output shows, and an attention with a bias on it."""

    def __init__(self, grid: tuple[int, int] = (8, 12), dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, kernel_size=8, stride=8)
        self.down = LeViTAttention(dim, 8, 2, grid, stride=2)
        small = (-(-grid[0] // 2), -(-grid[1] // 2))
        self.block = LeViTAttention(dim, 8, 2, small)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)  # (B, 96, C)
        x = self.down(x)  # (B, 24, C): a 4 x 6 grid, never a feature map
        x = x + self.block(x)
        return self.head(x.mean(dim=1))


def test_levit_token_grids_read_from_the_shapes() -> None:
    torch.manual_seed(4)
    model = TinyLeViT().eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        bare = model(x)
        with AttentionRecorder(model, keep="full") as rec:
            out = model(x)
    assert torch.equal(out, bare) and hooks_left(model) == 0
    down, block = rec.maps
    assert (down.kind, down.size, down.qgrid, tuple(down.data.shape)) == ("token", (8, 12), (4, 6), (1, 2, 24, 96))
    assert (block.kind, block.size, block.qgrid, tuple(block.data.shape)) == ("token", (4, 6), None, (1, 2, 24, 24))
    assert "a 4 x 6 grid (grid read from the shapes)" in down.layout and down.layout.endswith("a 8 x 12 grid")
    assert "grid read from the shapes" in block.layout
    for m, module in ((down, model.down), (block, model.block)):
        (tokens,) = inputs_of(module, model, x)
        with torch.no_grad():
            ref = torch.softmax(module.logits(tokens)[0], dim=-1)
        assert torch.allclose(m.data, ref, atol=1e-6), m.name
    views = build_views(rec)
    assert len(views) == 2  # no rollout: one N x N map, and no class token
    assert np.allclose(views[0].spatial, down.data[0].mean(dim=(0, 1)).reshape(8, 12).numpy(), atol=1e-6)
    assert views[1].cell == (2, 3)  # N x N without a class token: the centre query's row, as before
    (clicked, _) = build_views(rec, query=(0.3, 0.6))  # the query (2, 1) of the 4 x 6 grid, over the 8 x 12 keys
    assert clicked.cell == (2, 1)
    assert np.allclose(clicked.spatial, down.data[0, :, 2 * 6 + 1].mean(dim=0).reshape(8, 12).numpy(), atol=1e-6)


def test_levit_unreadable_without_the_image_aspect() -> None:
    """A token count that no stride makes of the image is not read as a grid: listed with its reason."""
    assert shape_grid(24, (64, 96)) == (4, 6) and shape_grid(24, (96, 64)) == (6, 4)
    assert shape_grid(24, (64, 64)) is None  # 4 x 6 is no downsampling of a square image
    assert shape_grid(197, (224, 224)) is None and shape_grid(49, (224, 224)) == (7, 7)
    assert shape_grid(70, (224, 320)) == (7, 10) and shape_grid(20, (224, 320)) == (4, 5)
    # windows stacked on the batch are not read from the shapes: (B * nW, heads, M², M²)
    assert attention_layout((4, 2, 16, 16), [], [], image=(64, 64), batch=1) is None
    found = attention_layout((1, 2, 16, 16), [], [], image=(64, 64), batch=1)
    assert found is not None and found[0].grid == (4, 4) and found[0].shapes


# -- CrossViT: one branch's class token queries the other branch's tokens ------------------------------------------
class CrossAttention(nn.Module):
    """CrossViT's cross attention (IBM/CrossViT): only the first token (a class token) queries all N tokens."""

    def __init__(self, dim: int, num_heads: int = 2) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.wq, self.wk, self.wv = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def qk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, n, c = x.shape
        q = self.wq(x[:, 0:1, ...]).reshape(b, 1, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)
        k = self.wk(x).reshape(b, n, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)
        return q, k

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k = self.qk(x)
        v = self.wv(x).reshape(b, n, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, 1, c)
        return self.proj(x)


class TinyCrossViT(nn.Module):
    """Two branches (patch 8 and 16), a class token each; branch 0's class token attends to branch 1's tokens."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.patch_embed = nn.ModuleList([nn.Conv2d(3, dim, 8, 8), nn.Conv2d(3, dim, 16, 16)])
        self.cls_token = nn.ParameterList([nn.Parameter(torch.randn(1, 1, dim) * 0.02) for _ in range(2)])
        self.fusion = CrossAttention(dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: Tensor) -> Tensor:
        xs = []
        for embed, cls in zip(self.patch_embed, self.cls_token, strict=True):
            t = embed(x).flatten(2).transpose(1, 2)
            xs.append(torch.cat([cls.expand(x.shape[0], -1, -1), t], dim=1))
        cross = torch.cat([xs[0][:, :1], xs[1][:, 1:]], dim=1)  # branch 0's class token, branch 1's patches
        return self.head(self.fusion(cross)[:, 0] + xs[0][:, 0])


def test_crossvit_class_token_queries_the_other_branch() -> None:
    torch.manual_seed(5)
    model = TinyCrossViT().eval()
    x = torch.randn(1, 3, 64, 96)  # branch 1: a 4 x 6 grid of 16-pixel patches (branch 0's is 8 x 12)
    with torch.no_grad():
        bare = model(x)
        with AttentionRecorder(model, keep="full") as rec:
            out = model(x)
    assert torch.equal(out, bare) and hooks_left(model) == 0
    (m,) = rec.maps
    assert (m.kind, m.size, m.qgrid, tuple(m.data.shape)) == ("token", (4, 6), None, (1, 2, 1, 25))
    (tokens,) = inputs_of(model.fusion, model, x)
    with torch.no_grad():
        q, k = model.fusion.qk(tokens)
        ref = torch.softmax((q @ k.transpose(-2, -1)) * model.fusion.scale, dim=-1)
    assert torch.allclose(m.data, ref, atol=1e-6)
    (v,) = build_views(rec)
    assert np.allclose(v.spatial, ref[0, :, 0, 1:].mean(dim=0).reshape(4, 6).numpy(), atol=1e-6)


def test_key_maps_plain() -> None:
    """attnviz.capture.pooled.key_maps against a loop over queries, heads and keys."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 1 + 4 * 6, 1 + 2 * 3))
    data = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)  # (heads, Nq, Nk), class token on both sides
    maps, label = key_maps(data, (2, 3), (4, 6))
    assert maps.shape == (4, 2, 3) and label == "class token's attention"
    for h in range(3):
        for p in range(6):
            assert math.isclose(maps[h].flat[p], data[h, 0, 1 + p], rel_tol=1e-6)
    no_cls = data[:, 1:, :]  # the queries without their class token: what each key receives
    maps, label = key_maps(no_cls, (2, 3), (4, 6))
    want = sum(no_cls[h, q, 1 + p] for h in range(3) for q in range(24) for p in [4]) / (3 * 24)
    assert "receives" in label and math.isclose(maps[-1, 1, 1], want, rel_tol=1e-6)
    assert math.isclose(float(maps[-1].sum()), float(no_cls[:, :, 1:].sum() / (3 * 24)), rel_tol=1e-6)


def test_rollout_leaves_n_by_m_maps_out() -> None:
    torch.manual_seed(6)
    model = TinyMViT().eval()
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(torch.randn(1, 3, 32, 32))
    assert rollout_view(rec.maps) is None


# -- timm ------------------------------------------------------------------------------------------------------------
timm = pytest.importorskip("timm")


def _timm(name: str, size: tuple[int, int] | None = None) -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = size or tuple(model.pretrained_cfg["input_size"][-2:])
    return model, torch.randn(1, 3, *size)


def _record(model: nn.Module, x: Tensor, **kw) -> AttentionRecorder:
    with torch.no_grad():
        bare = model(x)
        for _ in range(2):  # the discovery pass, then the cached sites' hooks
            with AttentionRecorder(model, **kw) as rec:
                out = model(x)
            assert torch.equal(out, bare)
    assert hooks_left(model) == 0
    return rec


def test_timm_pvt_v2() -> None:
    """PVT-v2-b0 (sr ratios 8, 4, 2, 1): 6 spatial-reduction maps (queries 56², 28², 14² over 7 x 7 keys) and the last
    stage's 2 plain ones; at 224 x 288 the grids follow the input."""
    model, x = _timm("pvt_v2_b0")
    rec = _record(model, x)
    assert not rec.unclassified and [m.kind for m in rec.maps] == ["token"] * 8
    assert [m.qgrid for m in rec.maps] == [(56, 56)] * 2 + [(28, 28)] * 2 + [(14, 14)] * 2 + [None] * 2
    assert all(m.size == (7, 7) for m in rec.maps)
    rec = _record(model, torch.randn(1, 3, 224, 288))
    queries = [(56, 72), (28, 36), (14, 18), None]  # stage 3 (sr ratio 1): queries and keys on one 7 x 9 grid
    assert [(m.qgrid, m.size) for m in rec.maps[::2]] == [(q, (7, 9)) for q in queries]
    v = build_views(rec)[0]
    assert v.spatial.shape == (7, 9) and abs(float(v.spatial.sum()) - 1.0) < 1e-4


def test_timm_mvitv2_levit_crossvit() -> None:
    model, x = _timm("mvitv2_tiny")
    rec = _record(model, x, keep="full")
    assert not rec.unclassified and len(rec.maps) == 10 and {m.kind for m in rec.maps} == {"token"}
    pooled = [(m.qgrid, m.size) for m in rec.maps if m.qgrid is not None]
    assert pooled == [((56, 56), (14, 14)), ((28, 28), (14, 14)), ((14, 14), (28, 28)), ((7, 7), (14, 14))]
    attn = model.stages[0].blocks[0].attn
    tokens, feat = inputs_of(attn, model, x)
    with torch.no_grad():  # timm's own pooling, then a plain softmax(q·scale kᵀ + relative positions)
        from timm.models.mvitv2 import cal_rel_pos_type, reshape_post_pool, reshape_pre_pool

        b, n, _ = tokens.shape
        q, k, _ = attn.qkv(tokens).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q, q_size = reshape_post_pool(attn.pool_q(reshape_pre_pool(q, feat, False)[0]), attn.num_heads, None)
        k, k_size = reshape_post_pool(attn.pool_k(reshape_pre_pool(k, feat, False)[0]), attn.num_heads, None)
        q, k = attn.norm_q(q), attn.norm_k(k)
        logits = (q * attn.scale) @ k.transpose(-2, -1)
        logits = cal_rel_pos_type(logits, q, False, q_size, k_size, attn.rel_pos_h, attn.rel_pos_w)
    assert torch.allclose(rec.maps[0].data, logits.softmax(dim=-1), atol=1e-5)

    model, x = _timm("levit_128s")
    rec = _record(model, x)
    assert not rec.unclassified and len(rec.maps) == 11 and {m.kind for m in rec.maps} == {"token"}
    down = [m for m in rec.maps if "downsample" in m.name]
    assert [(m.qgrid, m.size) for m in down] == [((7, 7), (14, 14)), ((4, 4), (7, 7))]
    shaped = [m.name for m in rec.maps if "grid read from the shapes" in m.layout]
    assert len(shaped) == 9  # every map after the first stage: no (B, C, H, W) map shows 7 x 7 or 4 x 4

    model, x = _timm("crossvit_tiny_240")
    rec = _record(model, x)
    assert not rec.unclassified and len(rec.maps) == 21 and {m.kind for m in rec.maps} == {"token"}
    sizes = {(m.size, int(m.data.shape[-2]), int(m.data.shape[-1])) for m in rec.maps}
    assert sizes == {((20, 20), 401, 401), ((14, 14), 197, 197), ((14, 14), 1, 197), ((20, 20), 1, 401)}
    assert all("1 prefix token(s)" in m.layout for m in rec.maps)


def test_export_checks_and_stats_read_n_by_m_maps() -> None:
    """The consumers read N x M maps through the kind table: result.json says the queries' grid, the checks' block
    view and the statistics' view are what each key receives, on the keys' grid."""
    import json

    from attnviz.checks.blocks import block_view, find_blocks
    from attnviz.export import export_files
    from attnviz.pipeline.run import analyze
    from attnviz.stats.localisation import views_of
    from tests.images import ASSET

    result = analyze(ASSET, attention=None, arch="timm:pvt_v2_b0", weights="random", device="cpu")
    pooled = [m for m in result.maps if m.qgrid is not None]
    assert len(pooled) == 6 and result.input_size[0] != result.input_size[1]  # the photo's own aspect
    settings = {"cmap": "turbo", "alpha": 0.5, "norm": "map", "topk": 32, "query": None}
    side = json.loads(dict(export_files(result, settings))["result.json"])
    entries = [e for e in side["maps"] if "query_grid" in e]
    assert [e["query_grid"] for e in entries] == [list(m.qgrid) for m in pooled]
    assert [e["grid"] for e in entries] == [list(m.size) for m in pooled] and pooled[0].size != (7, 7)
    assert all(e["query_prefix"] == 0 and e["prefix"] == 0 for e in entries)

    stats = views_of(result.maps, {})
    for m in pooled:
        received = m.data[0].mean(dim=(0, 1)).reshape(m.size)  # the head mean's mean over the queries
        assert torch.allclose(stats[m.block][1][0], received, atol=1e-6), m.name

    model, x = _timm("pvt_v2_b0")
    blocks, bmaps, acts = find_blocks(model, x)
    shown = 0
    for b in blocks:
        view, label, name = block_view(b, bmaps, acts)
        m = next((m for m in bmaps if m.name == name), None)
        if m is not None and m.qgrid is not None:
            assert label == "attention each key receives, query mean, head mean" and view.shape == (7, 7)
            assert np.allclose(view, m.data[0].mean(dim=(0, 1)).reshape(7, 7).numpy(), atol=1e-6)
            shown += 1
    assert shown == 6
