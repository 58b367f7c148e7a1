"""Partitioned attention beyond Swin: MaxViT's block and grid attention, NesT's blocks, SwinV2, YOLOv12's area
attention, and window modules attnviz does not know (attnviz.capture.windows, .partitions, the adapters).

Every layout is checked against a plain loop of where each window token sits, or against the model's own partition
code applied to a map of position indices, or against the tokens the attention module really got (exact equality).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.capture.recorder import AttentionRecorder
from attnviz.capture.views import build_views
from attnviz.capture.windows import WindowLayout, query_rows, received


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _loop_grid(h: int, w: int, gh: int, gw: int) -> np.ndarray:
    """MaxViT grid partition (Tu et al., ECCV 2022) by loops: window (a, b) holds (i·H/Gh + a, j·W/Gw + b)."""
    sh, sw = h // gh, w // gw
    out = np.zeros((sh * sw, gh * gw), dtype=np.int64)
    for a in range(sh):
        for b in range(sw):
            for i in range(gh):
                for j in range(gw):
                    out[a * sw + b, i * gw + j] = (i * sh + a) * w + (j * sw + b)
    return out


def _loop_block(h: int, w: int, mh: int, mw: int) -> np.ndarray:
    """Contiguous mh x mw windows, row-major, by loops."""
    out = np.zeros(((h // mh) * (w // mw), mh * mw), dtype=np.int64)
    for a in range(h // mh):
        for b in range(w // mw):
            for i in range(mh):
                for j in range(mw):
                    out[a * (w // mw) + b, i * mw + j] = (a * mh + i) * w + (b * mw + j)
    return out


def _loop_runs(h: int, w: int, area: int) -> np.ndarray:
    """YOLOv12's areas by loops: area k holds tokens k·L ... (k + 1)·L - 1 of the row-major sequence."""
    n = h * w // area
    out = np.zeros((area, n), dtype=np.int64)
    for k in range(area):
        for t in range(n):
            y, x = divmod(k * n + t, w)
            out[k, t] = y * w + x
    return out


@pytest.mark.parametrize(
    ("layout", "expect"),
    [
        (WindowLayout((8, 12), (4, 3), partition="grid"), _loop_grid(8, 12, 4, 3)),
        (WindowLayout((16, 16), (8, 8), partition="grid"), _loop_grid(16, 16, 8, 8)),
        (WindowLayout((8, 12), (2, 4)), _loop_block(8, 12, 2, 4)),  # non-square windows
        (WindowLayout((6, 10), (1, 15), partition="runs"), _loop_runs(6, 10, 4)),  # 1.5 rows an area
        (WindowLayout((8, 8), (1, 16), partition="runs"), _loop_runs(8, 8, 4)),
    ],
)
def test_positions_match_a_loop(layout: WindowLayout, expect: np.ndarray) -> None:
    np.testing.assert_array_equal(layout.positions(), expect)
    assert layout.count == len(expect)


@pytest.mark.parametrize(
    "layout",
    [WindowLayout((8, 12), (4, 3), partition="grid"), WindowLayout((6, 10), (1, 15), partition="runs")],
)
def test_received_and_query_rows_match_a_loop(layout: WindowLayout) -> None:
    torch.manual_seed(0)
    m = layout.window[0] * layout.window[1]
    data = torch.softmax(torch.randn(layout.count, 3, m, m), -1).double().numpy()  # (nW, heads, M, M)
    h, w = layout.grid
    where = {}  # position -> (window, token), from the loop references
    ref_pos = _loop_grid(h, w, *layout.window) if layout.partition == "grid" else _loop_runs(h, w, layout.count)
    for wi in range(layout.count):
        for t in range(m):
            where[int(ref_pos[wi, t])] = (wi, t)
    expect = np.zeros(h * w)
    for p, (wi, t) in where.items():
        expect[p] = data[wi, :, :, t].mean()  # over the window's queries and heads
    np.testing.assert_allclose(received(data, layout).reshape(-1), expect, atol=1e-6)
    y, x = h - 1, 1
    wi, q = where[y * w + x]
    rows = query_rows(data, layout, (y, x))
    grid = np.zeros((3, h * w))
    for p, (wj, t) in where.items():
        if wj == wi:
            grid[:, p] = data[wi, :, q, t]
    np.testing.assert_allclose(rows[:-1].reshape(3, -1), grid, atol=1e-6)
    np.testing.assert_allclose(rows[-1].reshape(-1), grid.mean(0), atol=1e-6)


def test_layouts_refuse_what_they_cannot_be() -> None:
    with pytest.raises(ValueError, match="multiple"):
        WindowLayout((10, 12), (4, 3), partition="grid")
    with pytest.raises(ValueError, match="divide"):
        WindowLayout((5, 7), (1, 4), partition="runs")
    with pytest.raises(ValueError, match="no shift"):
        WindowLayout((8, 8), (4, 4), (2, 2), partition="grid")


# -- timm ------------------------------------------------------------------------------------------------------------


def _record(model: nn.Module, x: torch.Tensor) -> AttentionRecorder:
    """Two recorded forwards (the discovery pass, then the cached sites): logits bit-identical, no hook left."""
    model.eval()
    with torch.no_grad():
        bare = model(x)
        for _ in range(2):
            with AttentionRecorder(model) as rec:
                out = model(x)
            assert torch.equal(out, bare)
    assert _hooks(model) == 0
    return rec


def _index_map(h: int, w: int, channels_last: bool) -> torch.Tensor:
    """(1, H, W, 1) or (1, 1, H, W): each position's index y·W + x."""
    idx = torch.arange(h * w, dtype=torch.float64).view(1, h, w, 1)
    return idx if channels_last else idx.permute(0, 3, 1, 2)


@pytest.mark.slow
def test_timm_maxvit_block_and_grid_partitions() -> None:
    timm = pytest.importorskip("timm")
    from timm.models import maxxvit

    model = timm.create_model("maxvit_rmlp_pico_rw_256", pretrained=False)
    rec = _record(model, torch.randn(1, 3, 256, 256))
    parts = [n for n, m in model.named_modules() if type(m).__name__ == "PartitionAttentionCl"]
    maps = [m for m in rec.maps if m.kind == "window"]
    assert len(maps) == len(parts) == 22 and not rec.unclassified, rec.unclassified
    kinds = [m.window.partition for m in maps]
    assert kinds == ["block", "grid"] * 11, kinds
    for m in maps:  # the layout is what timm's own partition functions do to a map of position indices
        (h, w), size = m.window.grid, list(m.window.window)
        split = maxxvit.window_partition if m.window.partition == "block" else maxxvit.grid_partition
        np.testing.assert_array_equal(split(_index_map(h, w, True), size).reshape(m.window.count, -1).numpy(),
                                      m.window.positions())  # fmt: skip
        torch.testing.assert_close(m.data.sum(-1), torch.ones(m.data.shape[:-1]), atol=1e-4, rtol=0)
        assert m.window.grid == m.size and "grid" in m.layout
    assert maps[1].window.describe() == "64 grids of 8 x 8 (stride 8 x 8) over a 64 x 64 grid"


@pytest.mark.parametrize("variant", ["nchw", "parallel"])
def test_timm_maxvit_nchw_and_parallel_partitions(variant: str) -> None:
    """PartitionAttention2d (NCHW windows) and ParallelPartitionAttention (block and grid in one module), batch 2."""
    pytest.importorskip("timm")
    from timm.models import maxxvit

    block_type = ("M", "M") if variant == "nchw" else ("PM", "PM")
    tcfg = maxxvit.MaxxVitTransformerCfg(dim_head=16, use_nchw_attn=variant == "nchw", partition_ratio=16)
    cfg = maxxvit.MaxxVitCfg(embed_dim=(32, 64), depths=(1, 1), block_type=block_type, stem_width=(16, 32),
                             transformer_cfg=tcfg)  # fmt: skip
    model = maxxvit.MaxxVit(cfg, img_size=128, num_classes=10)
    rec = _record(model, torch.randn(2, 3, 128, 128))
    maps = [m for m in rec.maps if m.kind == "window"]
    assert [m.window.partition for m in maps] == ["block", "grid"] * 2 and not rec.unclassified
    for m in maps:
        (h, w), size = m.window.grid, list(m.window.window)
        if variant == "nchw":
            split = maxxvit.window_partition_nchw if m.window.partition == "block" else maxxvit.grid_partition_nchw
            got = split(_index_map(h, w, False), size)
        else:
            split = maxxvit.window_partition if m.window.partition == "block" else maxxvit.grid_partition
            got = split(_index_map(h, w, True), size)
        np.testing.assert_array_equal(got.reshape(m.window.count, -1).numpy(), m.window.positions())
        assert m.data.shape[0] == 2


@pytest.mark.slow
def test_timm_nest_blocks() -> None:
    timm = pytest.importorskip("timm")
    from timm.models.nest import blockify

    model = timm.create_model("nest_tiny", pretrained=False)
    rec = _record(model, torch.randn(1, 3, 224, 224))
    present = [n for n, m in model.named_modules() if type(m).__name__ == "Attention"]
    maps = rec.maps
    assert len(maps) == len(present) == 12 and {m.kind for m in maps} == {"window"} and not rec.unclassified
    assert [m.window.count for m in maps] == [16] * 2 + [4] * 2 + [1] * 8
    for m in maps:  # NesT's blockify of a map of position indices
        (h, w), (b, _) = m.window.grid, m.window.window
        got = blockify(_index_map(h, w, True), b)  # (1, T, N, 1)
        np.testing.assert_array_equal(got.reshape(m.window.count, -1).numpy(), m.window.positions())
        assert m.data.shape[2] == 3 * 2 ** (int(m.name.split(".")[1]))  # every head kept (keep="auto")
    assert "(1, 3, 16, 196, 196) softmax" in maps[0].layout


def _tokens_seen(model: nn.Module, x: torch.Tensor, attn_type: str, block_type: str) -> list[tuple]:
    """The blocks' inputs (B, H, W, C) and their attention modules' inputs (B·nW, M², C), read by hooks."""
    seen: list[tuple] = []
    handles = []
    for block in [m for m in model.modules() if type(m).__name__ == block_type]:
        attn = next(m for m in block.modules() if type(m).__name__ == attn_type)
        box: dict = {}
        handles.append(block.register_forward_pre_hook(lambda mod, a, box=box: box.__setitem__("x", a[0])))
        handles.append(attn.register_forward_pre_hook(lambda mod, a, box=box: box.__setitem__("w", a[0])))
        seen.append(box)
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [(b["x"], b["w"]) for b in seen]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "size", "block", "attn"),
    [
        ("swinv2_tiny_window8_256", 256, "SwinTransformerV2Block", "WindowAttention"),
        ("swinv2_cr_tiny_ns_224", 224, "SwinTransformerV2CrBlock", "WindowMultiHeadAttention"),
    ],
)
def test_timm_swinv2_windows_are_the_tokens_attended(name: str, size: int, block: str, attn: str) -> None:
    """SwinV2 (cosine attention, learned logit scale; still a softmax): one window map per block, shifted every other
    block, and each window token is exactly the block input's vector at the position its layout says."""
    timm = pytest.importorskip("timm")
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(1, 3, size, size)
    rec = _record(model, x)
    maps = rec.maps
    assert len(maps) == 12 and {m.kind for m in maps} == {"window"} and not rec.unclassified
    shifts = [m.window.shift for m in maps]
    assert shifts[1] != (0, 0) and shifts[0] == (0, 0), shifts
    for m, (inp, windows) in zip(maps, _tokens_seen(model, x, attn, block), strict=True):
        pos = m.window.positions()  # (nW, M²)
        flat = inp.reshape(-1, inp.shape[-1])  # (H·W, C) of image 0
        toks = windows.reshape(pos.shape[0], pos.shape[1], -1)
        real = pos >= 0
        assert torch.equal(toks[torch.from_numpy(real)], flat[torch.from_numpy(pos[real])])
        torch.testing.assert_close(m.data.sum(-1), torch.ones(m.data.shape[:-1]), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_torchvision_swin_v2_windows() -> None:
    tv = pytest.importorskip("torchvision")
    model = tv.models.swin_v2_t(weights=None)
    rec = _record(model, torch.randn(1, 3, 256, 256))
    assert len(rec.maps) == 12 and {m.kind for m in rec.maps} == {"window"} and not rec.unclassified
    assert [m.window.shift for m in rec.maps][:2] == [(0, 0), (4, 4)]


# -- area attention (YOLOv12) ------------------------------------------------------------------------------------------


class AAttn(nn.Module):
    """Area attention written the way YOLOv12's ``AAttn`` is (Tian et al., 2025): a 1x1 qkv convolution, the H·W
    tokens reshaped into ``area`` equal parts, F.scaled_dot_product_attention within each, a depthwise positional
    convolution on V and a 1x1 projection."""

    def __init__(self, dim: int, num_heads: int, area: int = 1) -> None:
        super().__init__()
        self.area = area
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Sequential(nn.Conv2d(dim, dim * 3, 1, bias=False), nn.BatchNorm2d(dim * 3))
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.pe = nn.Sequential(nn.Conv2d(dim, dim, 7, 1, 3, groups=dim, bias=False), nn.BatchNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = h * w
        qkv = self.qkv(x).flatten(2).transpose(1, 2)  # (B, N, 3C)
        if self.area > 1:
            qkv = qkv.reshape(b * self.area, n // self.area, c * 3)  # (B·area, N/area, 3C)
            b, n, _ = qkv.shape
        q, k, v = qkv.view(b, n, self.num_heads, self.head_dim * 3).split([self.head_dim] * 3, dim=3)
        x = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )  # (B', heads, N', d)
        x = x.transpose(1, 2)
        if self.area > 1:
            x = x.reshape(b // self.area, n * self.area, c)
            v = v.reshape(b // self.area, n * self.area, c)
            b, n, _ = x.shape
        x = x.reshape(b, h, w, c).permute(0, 3, 1, 2)
        v = v.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.proj(x + self.pe(v))


def _area_net(module_name: str | None) -> nn.Module:
    cls = AAttn if module_name is None else type("AAttn", (AAttn,), {"__module__": module_name})
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), cls(16, 2, area=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for m in net.modules():  # BatchNorm statistics of a trained net, not 0/1
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _area_reference(net: nn.Module, x: torch.Tensor, area: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) within each area by hand, from the qkv convolution's output: (area, heads, L, L)."""
    with torch.no_grad():
        feat = net[1](net[0](x))
        qkv = net[2].qkv(feat)[0]  # (3C, H, W)
    c3, h, w = qkv.shape
    heads, d = 2, c3 // 3 // 2
    tokens = qkv.reshape(c3, h * w).t()  # (N, 3C), row-major
    out = torch.zeros(area, heads, h * w // area, h * w // area)
    for a in range(area):
        part = tokens[a * (h * w // area) : (a + 1) * (h * w // area)].view(-1, heads, 3 * d)
        for hd in range(heads):
            q, k = part[:, hd, :d], part[:, hd, d : 2 * d]
            out[a, hd] = torch.softmax(q @ k.t() / d**0.5, -1)
    return out


@pytest.mark.parametrize("module_name", ["ultralytics.nn.modules.block", None], ids=["adapter", "discovered"])
@pytest.mark.parametrize("size", [(40, 40), (30, 40)], ids=["rows", "runs"])
def test_area_attention(module_name: str | None, size: tuple[int, int]) -> None:
    """The class at YOLOv12's (ultralytics') path is read by its adapter (``area``); the same code under any other
    name by discovery, which matches the SDPA's query tokens to the qkv convolution's map exactly. Either way each
    area's attention lies on the whole grid: whole rows (20 x 20: 5 rows an area), or 1.5 rows (15 x 20)."""
    net = _area_net(module_name)
    x = torch.randn(1, 3, *size)
    rec = _record(net, x)
    assert len(rec.maps) == 1 and not rec.unclassified, rec.unclassified
    m = rec.maps[0]
    h, w = size[0] // 2, size[1] // 2
    assert m.kind == "window" and m.window.partition == "runs" and m.window.grid == (h, w) and m.window.count == 4
    np.testing.assert_array_equal(m.window.positions(), _loop_runs(h, w, 4))
    torch.testing.assert_close(m.data[0], _area_reference(net, x, 4), atol=1e-6, rtol=0)
    views = build_views(type("R", (), {"maps": rec.maps, "activations": {}})())
    assert views[0].spatial.shape == (h, w)
    np.testing.assert_allclose(views[0].spatial, received(m.data[0].numpy(), m.window), atol=1e-6)
    row = query_rows(m.data[0].numpy(), m.window, (h - 1, w - 1))[-1]  # the last area's query: zero outside it
    assert row[: h * 3 // 4 - 1].sum() == 0 and abs(row.sum() - 1) < 1e-5


# -- windows attnviz does not know ---------------------------------------------------------------------------------


class ScratchWindows(nn.Module):
    """A window attention written from scratch (no class attnviz knows): (B, C, H, W) -> channels last, a cyclic
    shift, ``mode`` = "block" (Swin-like windows of m x m) or "grid" (MaxViT-like dilated m x m grids), explicit
    softmax attention per window with a linear qkv, and back. ``pos``: a per-window position embedding added after
    the split (its tokens are then no map's, and must not be read)."""

    def __init__(self, dim: int, m: int, shift: int, mode: str, pos: bool = False, glob: bool = False) -> None:
        super().__init__()
        self.m, self.shift, self.mode, self.glob = m, shift, mode, glob
        self.norm = nn.LayerNorm(dim)
        self.attn = ScratchAttention(dim)
        self.pos = nn.Parameter(torch.randn(m * m, dim)) if pos else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.norm(x.permute(0, 2, 3, 1))  # (B, H, W, C)
        t = torch.roll(t, (-self.shift, -self.shift), (1, 2))
        m = self.m
        if self.mode == "block":
            win = t.view(b, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5)
        else:
            win = t.view(b, m, h // m, m, w // m, c).permute(0, 2, 4, 1, 3, 5)
        win = win.reshape(-1, m * m, c)  # (B·nW, M, C)
        if self.pos is not None:
            win = win + self.pos
        out = self.attn(win, win.mean(0, keepdim=True)) if self.glob else self.attn(win)
        if self.mode == "block":
            out = out.view(b, h // m, w // m, m, m, c).permute(0, 1, 3, 2, 4, 5)
        else:
            out = out.view(b, h // m, w // m, m, m, c).permute(0, 3, 1, 4, 2, 5)
        out = torch.roll(out.reshape(b, h, w, c), (self.shift, self.shift), (1, 2))
        return x + out.permute(0, 3, 1, 2)


class ScratchAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, q_global: torch.Tensor | None = None) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if q_global is not None:  # GCViT-like: queries shared by every window, from elsewhere
            q = self.qkv(q_global).view(1, t, 3, self.heads, c // self.heads)[:, :, 0].transpose(1, 2).expand_as(q)
        attn = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(dim=-1)  # (B·nW, heads, M, M)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c))


def _scratch(mode: str, shift: int, pos: bool = False, glob: bool = False) -> nn.Module:
    torch.manual_seed(0)
    block = ScratchWindows(8, 4, shift, mode, pos, glob)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), block, nn.AdaptiveAvgPool2d(1))


def _scratch_reference(net: nn.Module, x: torch.Tensor, layout: WindowLayout) -> torch.Tensor:
    """The attention of each window, by hand, from the tokens at the layout's positions: (nW, heads, M, M)."""
    blk = net[1]
    with torch.no_grad():
        t = blk.norm(net[0](x).permute(0, 2, 3, 1))[0].reshape(-1, 8)  # (H·W, C)
        win = t[torch.from_numpy(layout.positions())]  # (nW, M, C)
        q, k, _ = blk.attn.qkv(win).view(win.shape[0], win.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        return (q @ k.transpose(-2, -1) * 4**-0.5).softmax(-1)


@pytest.mark.parametrize(("mode", "shift"), [("block", 0), ("block", 2), ("grid", 0)])
def test_scratch_windows_are_read_by_matching_tokens(mode: str, shift: int) -> None:
    """Discovery reads a window module it does not know: the windows' tokens equal the normed map's positions
    exactly, so the partition (block with its shift, or dilated grid) is read, not guessed; later forwards of another
    size are laid out over their own grid."""
    net = _scratch(mode, shift)
    x = torch.randn(1, 3, 16, 24)
    rec = _record(net, x)
    assert len(rec.maps) == 1 and not rec.unclassified, rec.unclassified
    m = rec.maps[0]
    assert m.kind == "window" and m.window.partition == mode and m.window.shift == (shift, shift)
    if mode == "grid":
        np.testing.assert_array_equal(m.window.positions(), _loop_grid(8, 12, 4, 4))
    torch.testing.assert_close(m.data[0], _scratch_reference(net, x, m.window), atol=1e-6, rtol=0)
    with torch.no_grad(), AttentionRecorder(net) as rec:  # cached sites, another size
        net(torch.randn(2, 3, 32, 16))
    m = rec.maps[0]
    assert m.window.grid == (16, 8) and m.data.shape[:2] == (2, 8) and m.window.partition == mode
    assert _hooks(net) == 0


def test_scratch_windows_with_changed_tokens_are_not_guessed() -> None:
    """A position embedding added after the split: the tokens are no map's, so the weight is listed, with why."""
    net = _scratch("block", 0, pos=True)
    rec = _record(net, torch.randn(1, 3, 16, 16))
    assert not rec.maps
    ((_, shape, why),) = rec.unclassified
    assert shape == (4, 2, 16, 16) and "not guessed from shapes" in why, why


def test_scratch_windows_with_queries_from_elsewhere_are_not_guessed() -> None:
    """The windows' module also got another tensor (a global query, as GCViT's): its tokens are a map's, but its
    queries may not be, so the weight is listed with why."""
    net = _scratch("block", 0, glob=True)
    rec = _record(net, torch.randn(1, 3, 16, 16))
    assert not rec.maps
    ((_, _, why),) = rec.unclassified
    assert "also got another tensor" in why, why


def _gcvit_seen(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Each GCViT attention module's inputs (x_win (B·nW, M², C), q_global (B, Mh, Mw, C) or None), read by hooks."""
    seen: dict = {}
    handles = [
        m.register_forward_pre_hook(
            lambda mod, a, path=path: seen.__setitem__(path, (a[0], a[1] if len(a) > 1 else None))
        )
        for path, m in model.named_modules()
        if type(m).__name__ == "WindowAttentionGlobal"
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _gcvit_plain(attn: nn.Module, x_win: torch.Tensor, q_global: torch.Tensor | None) -> torch.Tensor:
    """GCViT's window attention (Hatamizadeh et al., ICML 2023) from its weights: softmax(q k^T scale + B), q the
    window's own tokens, or the global context map's tokens repeated for every window of their image."""
    b, n, c = x_win.shape
    heads, d = attn.num_heads, c // attn.num_heads
    if not attn.use_global or q_global is None:  # a local block also gets q_global, and leaves it
        q, k, _ = attn.qkv(x_win).view(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    else:
        k, _ = attn.qkv(x_win).view(b, n, 2, heads, d).permute(2, 0, 3, 1, 4)
        q = q_global.reshape(q_global.shape[0], n, heads, d).permute(0, 2, 1, 3)
        q = q.repeat_interleave(b // q_global.shape[0], dim=0)
    bias = attn.rel_pos.relative_position_bias_table[attn.rel_pos.relative_position_index.view(-1)]
    bias = bias.view(n, n, heads).permute(2, 0, 1)  # (heads, N, N)
    return torch.softmax(q @ k.transpose(-2, -1) * d**-0.5 + bias, dim=-1)  # (B·nW, heads, N, N)


@pytest.mark.slow
def test_timm_gcvit_local_windows_and_global_queries() -> None:
    """GCViT: every block is a window map (12/12). A global block's queries are the global context map's tokens
    (pooled to the window's size, shared by every window), its keys each window's own positions: its block view is
    what each position receives (mean over the global queries and heads), and a clicked position shows the row of
    the global token covering it in every window; both equal plain loops over the module's own weights."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("gcvit_xxtiny", pretrained=False)
    x = torch.randn(1, 3, 224, 224)
    rec = _record(model, x)
    assert not rec.unclassified, rec.unclassified
    windows = [m for m in rec.maps if m.kind == "window"]
    assert [m.window.count for m in windows] == [64, 64, 16, 16] + [1] * 8, [m.name for m in windows]
    assert [m.window.is_global for m in windows] == [int(m.name.split(".")[3]) % 2 == 1 for m in windows]
    seen = _gcvit_seen(model, x)
    views = build_views(type("R", (), {"maps": rec.maps, "activations": {}})(), rollout=False)
    cell = (13, 40)  # (y, x) on stage 0's 56 x 56 grid; clicked as fractions of the image
    clicked = build_views(type("R", (), {"maps": rec.maps, "activations": {}})(), ((40 + 0.5) / 56, (13 + 0.5) / 56))
    modules = dict(model.named_modules())
    for m, view, click in zip(rec.maps, views, clicked, strict=False):
        if m.kind != "window":  # its MBConv's SE gates
            continue
        path = m.name.rsplit(".softmax()", 1)[0]
        with torch.no_grad():
            a = _gcvit_plain(modules[path], *seen[path]).numpy()  # (nW, heads, M², M²)
        np.testing.assert_allclose(m.data[0].numpy(), a, atol=1e-6)
        (h, w), (mh, mw) = m.window.grid, m.window.window
        pos = _loop_block(h, w, mh, mw)
        np.testing.assert_array_equal(m.window.positions(), pos)
        expect = np.zeros(h * w)
        for win in range(len(pos)):
            for j in range(mh * mw):  # what position pos[win, j] receives: mean over every query and head
                expect[pos[win, j]] = a[win, :, :, j].mean()
        np.testing.assert_allclose(view.spatial.reshape(-1), expect, atol=1e-6)
        if m.window.is_global and (h, w) == (56, 56):  # the clicked cell's global token, in every window
            assert "global" in m.layout and "global query" in click.spatial_label, (m.layout, click.spatial_label)
            q = (cell[0] * mh // h) * mw + cell[1] * mw // w
            row = np.zeros(h * w)
            for win in range(len(pos)):
                row[pos[win]] = a[win, :, q].mean(axis=0)
            np.testing.assert_allclose(click.spatial.reshape(-1), row, atol=1e-6)
            assert click.cell == cell


@pytest.mark.slow
def test_timm_tiny_vit_windows_read_by_discovery() -> None:
    """TinyViT's blocks (no adapter): discovery matches the windows' tokens to the block input exactly; each window
    token is the block input's vector at the position its layout says."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("tiny_vit_5m_224", pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224)
    rec = _record(model, x)
    windows = [m for m in rec.maps if m.kind == "window"]
    assert len(windows) == 2 and not rec.unclassified, rec.unclassified
    seen = {n: s for n, s in zip([n for n, m in model.named_modules() if type(m).__name__ == "TinyVitBlock"],
                                  _tokens_seen(model, x, "Attention", "TinyVitBlock"), strict=True)}  # fmt: skip
    for m in windows:
        inp, toks = seen[m.name.rsplit(".attn.", 1)[0]]
        pos = torch.from_numpy(m.window.positions())
        assert m.window.describe() == "16 windows of 7 x 7 over a 28 x 28 grid"
        assert torch.equal(toks.reshape(*pos.shape, -1), inp.reshape(-1, inp.shape[-1])[pos])


@pytest.mark.slow
def test_timm_mobilevit_unfolded_patches_are_a_dilated_grid() -> None:
    """MobileViT (Mehta & Rastegari, ICLR 2022) unfolds its map into 2 x 2 patches and attends across patches at one
    pixel offset: (B·4, heads, N, N), each offset's N tokens a stride-2 grid of the map. Discovery reads that from
    the unfolded tokens (exact equality), as the loop reference says."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("mobilevit_xxs", pretrained=False)
    rec = _record(model, torch.randn(1, 3, 256, 256))
    assert len(rec.maps) == 9 and {m.kind for m in rec.maps} == {"window"} and not rec.unclassified
    for m in rec.maps:
        (h, w), (gh, gw) = m.window.grid, m.window.window
        assert m.window.partition == "grid" and (h // gh, w // gw) == (2, 2) and m.window.count == 4
        np.testing.assert_array_equal(m.window.positions(), _loop_grid(h, w, gh, gw))
