"""The seed posts' two variants: CBAM with the spatial gate first (``cbam_sc``, seed 001's ``SCAttention``) and ECA
with average and max pooling through one 1-D convolution (``eca_max``, seed 003). Their equations against a direct
computation (a swapped order or a dropped max branch fails), shapes, captured maps in forward order, ImageNet
backbones loading with only the attention keys missing, and the names on the page and in ``attnviz list``."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import attnviz
from attnviz.blocks import CBAM, ECA, CBAMSpatialFirst, ECAAvgMax, attention_modules, get_attention
from attnviz.sources.weights import load_backbone_state_dict
from tests.blockutil import capture, randomise

SHAPES = [(64, 8, 8), (32, 7, 11), (16, 1, 1), (8, 13, 9)]  # (C, H, W): square, non-square, tiny, odd
VARIANTS = {"cbam_sc": ("cbam", {"order": "sc"}), "eca_max": ("eca", {"pool": "avgmax"})}


# -- CBAM, spatial first -------------------------------------------------------------------------------------------
def _spatial_gate(block: CBAM, x: torch.Tensor) -> torch.Tensor:
    """Ms = sigmoid(BN(conv7x7([mean_c x; max_c x]))), written out: (B, C, H, W) -> (B, 1, H, W)."""
    s = block.spatial
    desc = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)  # (B, 2, H, W)
    z = F.conv2d(desc, s.conv.weight, s.conv.bias, padding=s.conv.padding)
    bn = s.bn
    z = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return torch.sigmoid(z)


def _channel_gate(block: CBAM, x: torch.Tensor) -> torch.Tensor:
    """Mc = sigmoid(MLP(avg_hw x) + MLP(max_hw x)), one shared MLP, written out: (B, C, H, W) -> (B, C, 1, 1)."""
    c = block.channel
    w1, w2 = c.fc1.weight.flatten(1), c.fc2.weight.flatten(1)  # (d, C), (C, d)
    mlp = lambda v: F.relu(v @ w1.T) @ w2.T  # noqa: E731  (B, C) -> (B, C)
    return torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]


@pytest.mark.parametrize("make", [lambda c: attnviz.create_attention("cbam_sc", c),
                                  lambda c: attnviz.create_attention("cbam", c, order="sc")])  # fmt: skip
def test_cbam_sc_is_spatial_then_channel(make) -> None:
    block = randomise(make(32), 0.5)
    x = torch.randn(2, 32, 9, 7)
    y, maps = capture(block, x)
    with torch.no_grad():
        ms = _spatial_gate(block, x)  # (B, 1, H, W) from the input itself
        x1 = ms * x
        mc = _channel_gate(block, x1)  # (B, C, 1, 1) from the spatially gated map
        ref = mc * x1
        swapped = _spatial_gate(block, _channel_gate(block, x) * x) * (_channel_gate(block, x) * x)
    torch.testing.assert_close(y, ref)
    assert not torch.allclose(y, swapped, atol=1e-3)  # the paper's order gives another output
    assert [m.kind for m in maps] == ["spatial", "channel"]  # forward order
    assert [m.name for m in maps] == ["spatial.tap", "channel.tap"]
    torch.testing.assert_close(maps[0].data, ms[:, 0])  # (B, H, W)
    torch.testing.assert_close(maps[1].data, mc.flatten(1))  # (B, C)


def test_cbam_keeps_the_paper_order_and_the_same_parameters() -> None:
    paper = randomise(attnviz.create_attention("cbam", 32), 0.5)
    sc = attnviz.create_attention("cbam_sc", 32).eval()
    assert list(paper.state_dict()) != list(sc.state_dict())  # registered in forward order ...
    assert set(paper.state_dict()) == set(sc.state_dict())  # ... under the same names: a cbam file loads
    sc.load_state_dict(paper.state_dict())
    x = torch.randn(2, 32, 6, 6)
    y, maps = capture(paper, x)
    assert [m.kind for m in maps] == ["channel", "spatial"] and paper.order == "cs"
    with torch.no_grad():
        torch.testing.assert_close(y, paper.spatial(paper.channel(x)))
        torch.testing.assert_close(sc(x), sc.channel(sc.spatial(x)))
        assert not torch.allclose(sc(x), y, atol=1e-3)


def test_cbam_sc_reuses_cbams_modules() -> None:
    block = attnviz.create_attention("cbam_sc", 64)
    assert isinstance(block, CBAM) and isinstance(block, CBAMSpatialFirst)
    assert type(block.spatial) is attnviz.blocks.SpatialAttention
    assert type(block.channel) is attnviz.blocks.ChannelAttention
    assert [n for n, _ in block.named_children()] == ["spatial", "channel"]
    assert "order='sc'" in repr(block)


# -- ECA with average and max pooling ------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda c: attnviz.create_attention("eca_max", c),
                                  lambda c: attnviz.create_attention("eca", c, pool="avgmax")])  # fmt: skip
@pytest.mark.parametrize("channels", [32, 256])
def test_eca_max_equation(make, channels: int) -> None:
    block = randomise(make(channels), scale=1.0)
    k = block.kernel_size
    assert k == attnviz.blocks.eca_kernel_size(channels) and block.conv.bias is None
    x = torch.randn(2, channels, 5, 7)
    y, (m,) = capture(block, x)
    weight = block.conv.weight  # (1, 1, k): one convolution for both pooled descriptors
    conv = lambda v: F.conv1d(v[:, None, :], weight, padding=(k - 1) // 2)[:, 0]  # noqa: E731  (B, C) -> (B, C)
    with torch.no_grad():
        gate = torch.sigmoid(conv(x.mean((2, 3))) + conv(x.amax((2, 3))))  # (B, C)
        avg_only = torch.sigmoid(conv(x.mean((2, 3))))
    assert m.kind == "channel" and m.data.shape == (2, channels)
    torch.testing.assert_close(m.data, gate)
    torch.testing.assert_close(y, x * gate[:, :, None, None])
    with torch.no_grad():  # the bias-free convolution is linear: the same as one conv on avg + max
        torch.testing.assert_close(gate, torch.sigmoid(conv(x.mean((2, 3)) + x.amax((2, 3)))))
    assert not torch.allclose(m.data, avg_only, atol=1e-3)  # the max branch matters


def test_eca_keeps_the_paper_pooling_and_the_same_parameters() -> None:
    paper = randomise(attnviz.create_attention("eca", 64), scale=1.0)
    avgmax = attnviz.create_attention("eca_max", 64).eval()
    avgmax.load_state_dict(paper.state_dict())  # the same k weights: an eca file loads
    assert sum(p.numel() for p in avgmax.parameters()) == sum(p.numel() for p in paper.parameters()) == 3
    x = torch.randn(2, 64, 4, 5)
    _, (a,) = capture(paper, x)
    _, (b,) = capture(avgmax, x)
    conv = lambda v: paper.conv(v[:, None, :])[:, 0]  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(a.data, torch.sigmoid(conv(x.mean((2, 3)))))
    assert paper.pool == "avg" and avgmax.pool == "avgmax" and not torch.allclose(a.data, b.data, atol=1e-3)
    assert isinstance(avgmax, ECA) and isinstance(avgmax, ECAAvgMax) and "pool='avgmax'" in repr(avgmax)


def test_eca_max_gate_ignores_spatial_order() -> None:
    block = randomise(attnviz.create_attention("eca_max", 32), scale=1.0)
    x = torch.randn(2, 32, 5, 6)
    xp = x.flatten(2)[:, :, torch.randperm(30)].view_as(x)
    _, (a,) = capture(block, x)
    _, (b,) = capture(block, xp)
    torch.testing.assert_close(a.data, b.data)


# -- both ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("cbam", {"order": "cc"}, "cbam: order must be 'cs' .* or 'sc'"),
        ("cbam_sc", {"order": "cs"}, "cbam_sc: order is always 'sc'.* use 'cbam'"),
        ("cbam_sc", {"kernel_size": 4}, "kernel_size must be a positive odd integer"),
        ("eca", {"pool": "max"}, "eca: pool must be 'avg' .* or 'avgmax'"),
        ("eca_max", {"pool": "avg"}, "eca_max: pool is always 'avgmax'.* use 'eca'"),
        ("eca_max", {"kernel_size": 2}, "kernel_size must be a positive odd integer"),
    ],
)
def test_bad_options_say_what_to_change(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        attnviz.create_attention(name, 64, **kwargs)


@pytest.mark.parametrize("name", VARIANTS)
def test_registered_as_types_of_their_own(name: str) -> None:
    spec, base = get_attention(name), get_attention(VARIANTS[name][0])
    assert name in attnviz.list_attentions()
    # not ``variant_of``: that marks blocks made for pretrained backbones, which the app swaps in for ImageNet
    # and demo weights; these change the attention equations and ship a demo beside their paper block's
    assert spec.variant_of is None and spec.placement == base.placement == "post" and spec.stages == base.stages
    assert spec.paper.startswith(base.paper)
    assert spec.kinds == {"cbam_sc": ("spatial", "channel"), "eca_max": ("channel",)}[name]
    assert "Woo et al" in (spec.cls.__doc__ or "") or "Wang et al" in (spec.cls.__doc__ or "")


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_shapes_and_map_shapes(name: str, shape: tuple[int, int, int]) -> None:
    c, h, w = shape
    block = randomise(attnviz.create_attention(name, c), scale=0.1)
    x = torch.randn(3, c, h, w)
    y, maps = capture(block, x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    expected = {"spatial": (3, h, w), "channel": (3, c)}
    assert [tuple(m.data.shape) for m in maps] == [expected[k] for k in get_attention(name).kinds]
    for m in maps:
        assert m.data.min() > 0 and m.data.max() < 1  # sigmoid gates


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("name", VARIANTS)
def test_in_a_resnet_maps_in_forward_order_and_backbone_loads(arch: str, name: str) -> None:
    spec = get_attention(name)
    plain = attnviz.build_model(arch).state_dict()  # an ImageNet state dict has exactly these keys
    model = attnviz.build_model(arch, name).eval()
    report = load_backbone_state_dict(model, plain)
    attention_keys = {f"{p}.{k}" for p, m in attention_modules(model).items() for k in m.state_dict()}
    assert set(report.missing_attention) == attention_keys and attention_keys
    assert not report.mapped and not report.replaced and not report.head_reset
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in plain.items())
    with attnviz.AttentionRecorder(model) as rec, torch.no_grad():
        model(torch.randn(1, 3, 64, 80))
    blocks = [m for m in model.modules() if isinstance(m, spec.cls)]
    assert len(blocks) == (8 if arch == "resnet18" else 16)
    assert tuple(m.kind for m in rec.maps) == spec.kinds * len(blocks)  # block by block, in forward order
    if name == "cbam_sc":
        assert rec.maps[0].name.endswith("layer1.0.attn.spatial.tap")
        assert rec.maps[1].name.endswith("layer1.0.attn.channel.tap")


def test_offered_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from attnviz.cli.main import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "cbam_sc  post      1,2,3,4  spatial, channel" in out and "spatial gate first" in out
    assert "eca_max  post      1,2,3,4  channel" in out and "avg + max pooling" in out
    with pytest.raises(SystemExit) as err:  # argparse's choices come from the registry too
        main(["info", "--arch", "resnet18", "--attention", "nope"])
    assert err.value.code == 2 and "cbam_sc" in capsys.readouterr().err


def test_offered_by_the_page() -> None:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from attnviz.app import AppConfig, build_demo

    demo = build_demo(AppConfig(device="cpu", offline=True))
    (dropdown,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "attention-select"]
    values = [v for _, v in dropdown.choices]
    assert {"cbam_sc", "eca_max"} <= set(values)
    assert values.index("cbam_sc") == values.index("cbam") + 1 and values.index("eca_max") == values.index("eca") + 1
