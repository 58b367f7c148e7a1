"""Exact adapters (attnviz.capture.adapters): every adapted timm and torchvision class gives its maps with the right
kind,
shape and values, inside real networks too (torchvision EfficientNet/MobileNetV3/RegNet-Y, timm ResNet + CBAM)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnviz import AttentionRecorder

timm = pytest.importorskip("timm")
from timm.layers import (  # noqa: E402
    CecaModule,
    EcaModule,
    EffectiveSEModule,
    GatherExcite,
    GlobalContext,
    SelectiveKernel,
    SEModule,
    SplitAttn,
)
from timm.layers.bottleneck_attn import BottleneckAttn  # noqa: E402
from timm.layers.cbam import CbamModule, LightCbamModule  # noqa: E402
from timm.layers.coord_attn import CoordAttn, EfficientLocalAttn, SimpleCoordAttn, StripAttn  # noqa: E402
from timm.layers.halo_attn import HaloAttn  # noqa: E402
from timm.models._efficientnet_blocks import SqueezeExcite  # noqa: E402
from torchvision.ops.misc import SqueezeExcitation  # noqa: E402

B, C, H, W = 2, 32, 8, 6
N = H * W

#: factory -> [(map name, kind, shape without B)] for an input (B, C, H, W) (BoTNet/Halo: their own sizes).
CASES = {
    "SEModule": (lambda: SEModule(C), [("gate", "channel", (C,))]),
    "EffectiveSEModule": (lambda: EffectiveSEModule(C), [("gate", "channel", (C,))]),
    "SqueezeExcite": (lambda: SqueezeExcite(C, rd_ratio=0.25), [("gate", "channel", (C,))]),
    "EcaModule": (lambda: EcaModule(C), [("gate", "channel", (C,))]),
    "CecaModule": (lambda: CecaModule(C), [("gate", "channel", (C,))]),
    "CbamModule": (lambda: CbamModule(C), [("channel.gate", "channel", (C,)), ("spatial.gate", "spatial", (H, W))]),
    "LightCbamModule": (
        lambda: LightCbamModule(C),
        [("channel.sigmoid()", "channel", (C,)), ("spatial.gate", "spatial", (H, W))],
    ),
    "SelectiveKernel": (lambda: SelectiveKernel(C, C), [("attn", "branch", (2, C))]),
    "SplitAttn": (lambda: SplitAttn(C, C, radix=2, norm_layer=nn.BatchNorm2d), [("rsoftmax", "branch", (2, C))]),
    "GlobalContext": (
        lambda: GlobalContext(C, fuse_add=False, fuse_scale=True),
        [("softmax()", "spatial", (H, W)), ("gate", "channel", (C,))],
    ),
    # use_mlp=False: timm 1.0.31's ConvMlp call in GatherExcite.__init__ raises with the default use_mlp=True
    "GatherExcite": (lambda: GatherExcite(C, use_mlp=False), [("gate", "channel", (C,))]),
    "GatherExcite_extent": (lambda: GatherExcite(C, extent=2, use_mlp=False), [("gate", "spatial", (H, W))]),
    "CoordAttn": (lambda: CoordAttn(C), [("gate", "spatial", (H, W))]),
    "EfficientLocalAttn": (lambda: EfficientLocalAttn(C), [("gate", "spatial", (H, W))]),
    "StripAttn": (lambda: StripAttn(C), [("gate", "spatial", (H, W))]),
    "SimpleCoordAttn": (lambda: SimpleCoordAttn(C), [("gate", "spatial", (H, W))]),
    "SqueezeExcitation": (lambda: SqueezeExcitation(C, 8), [("scale_activation", "channel", (C,))]),
}


def _record(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, AttentionRecorder]:
    module.eval()
    with torch.no_grad():
        bare = module(x)
        with AttentionRecorder(module, dtype=torch.float64) as rec:
            out = module(x)
    assert torch.equal(out, bare)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules()) == 0
    return out, rec


@pytest.mark.parametrize("key", list(CASES))
def test_each_adapted_class(key: str) -> None:
    torch.manual_seed(0)
    module = CASES[key][0]().double()
    x = torch.randn(B, C, H, W, dtype=torch.float64)
    out, rec = _record(module, x)
    assert [(m.name, m.kind, tuple(m.data.shape[1:])) for m in rec.maps] == CASES[key][1]
    assert {m.how for m in rec.maps} == {"adapter"} and not rec.unclassified
    first = rec.maps[0]
    if key in ("SEModule", "EffectiveSEModule", "SqueezeExcite", "EcaModule", "CecaModule", "SqueezeExcitation"):
        # the gate recorded is the one the module scaled its input by
        torch.testing.assert_close(out, x * first.data[:, :, None, None], rtol=0, atol=1e-12)
    if first.kind == "branch":
        torch.testing.assert_close(first.data.sum(1), torch.ones(B, C, dtype=torch.float64), rtol=0, atol=1e-12)
    if key == "SimpleCoordAttn":  # a full-size gate: the spatial view is its channel mean, the whole gate is kept
        assert first.raw is not None and tuple(first.raw.shape) == (B, C, H, W)
        torch.testing.assert_close(out, x * first.raw, rtol=0, atol=1e-12)
    if key == "CoordAttn":  # g_h (B, C, H, 1) and g_w (B, C, 1, W) paired: out = x * g_w * g_h
        assert "axis gate x" in first.layout


def test_bottleneck_and_halo_attention_are_pairwise() -> None:
    torch.manual_seed(0)
    bot = BottleneckAttn(C, C, feat_size=(H, W), num_heads=4).double()
    _, rec = _record(bot, torch.randn(B, C, H, W, dtype=torch.float64))
    (m,) = rec.maps
    assert (m.name, m.kind, tuple(m.data.shape), m.size) == ("softmax()", "pairwise", (B, 4, N, N), (H, W))
    torch.testing.assert_close(m.data.sum(-1), torch.ones(B, 4, N, dtype=torch.float64))

    halo = HaloAttn(C, C, num_heads=2, block_size=4, halo_size=1).double()
    side = 12  # 3 x 3 blocks of 4: the centre block's windows lie inside the image
    _, rec = _record(halo, torch.randn(B, C, side, side, dtype=torch.float64))
    (m,) = rec.maps
    assert (m.kind, tuple(m.data.shape), m.size) == ("pairwise", (B, 2, side * side, side * side), (side, side))
    rows = m.data.sum(-1)  # weights on the zero padding past the border are not shown: rows there sum below 1
    centre = [(4 + i) * side + 4 + j for i in range(4) for j in range(4)]
    torch.testing.assert_close(rows[:, :, centre], torch.ones(B, 2, 16, dtype=torch.float64))
    assert (rows <= 1 + 1e-12).all() and (rows > 0).all()
    q = 5 * side + 5  # a query attends only within its block's window (rows 3..8, cols 3..8)
    weights = m.data[0, 0, q].view(side, side)
    assert weights[3:9, 3:9].sum() == pytest.approx(1.0) and weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("name", "stages"),
    [("efficientnet_b0", {1, 2, 3, 4, 5, 6, 7}), ("mobilenet_v3_small", None), ("regnet_y_400mf", {1, 2, 3, 4})],
)
def test_torchvision_networks_se_gates_are_channel_maps(name: str, stages: set[int] | None) -> None:
    from torchvision.models import get_model

    torch.manual_seed(0)
    model = get_model(name, weights=None).eval()
    n_se = sum(isinstance(m, SqueezeExcitation) for m in model.modules())
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(torch.randn(1, 3, 64, 64))
    assert n_se > 0 and len(rec.maps) == n_se and not rec.unclassified
    assert {(m.kind, m.how) for m in rec.maps} == {("channel", "adapter")}
    assert all(m.name.endswith("scale_activation") for m in rec.maps)
    if stages is not None:
        assert {m.stage for m in rec.maps} == stages


def test_timm_resnet_with_cbam_blocks() -> None:
    model = timm.create_model("resnet18", pretrained=False, block_args={"attn_layer": "cbam"}).eval()
    with torch.no_grad(), AttentionRecorder(model) as rec:
        model(torch.randn(1, 3, 64, 64))
    kinds = [(m.name.rsplit(".", 2)[-2], m.kind) for m in rec.maps]
    assert kinds == [("channel", "channel"), ("spatial", "spatial")] * 8
    assert [m.block for m in rec.maps[::2]] == [f"layer{s}.{i}" for s in (1, 2, 3, 4) for i in (0, 1)]
    assert not rec.skipped and not rec.unclassified
