"""sk_pre and epsa_pre: SK and EPSA whose first branch is the backbone's pretrained 3x3 convolution (groups = 1), so an
ImageNet ResNet's conv2 (and, for SK, bn2) load into them through the blocks' declared ``backbone_keys``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import attnviz
from attnviz.blocks import attention_modules, get_attention
from attnviz.cli.main import main
from attnviz.sources.weights import imagenet_weights, load_backbone_state_dict, load_weights

VARIANTS = {"sk_pre": "sk", "epsa_pre": "epsa"}
#: the block's parameters that no ImageNet ResNet has: what stays untrained in each variant
NEW = {"sk_pre": ("paths.1.", "attn."), "epsa_pre": ("convs.", "se.")}


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(f"layer{s}.{i}", b) for s in range(1, 5) for i, b in enumerate(getattr(model, f"layer{s}"))]


@pytest.fixture(scope="module")
def imagenet_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A $TORCH_HOME whose hub cache holds a locally made resnet50 ImageNet file: random tensors with torchvision's
    exact keys and shapes, under the file name torchvision's weights URL gives (nothing is downloaded)."""
    home = tmp_path_factory.mktemp("torch")
    g = torch.Generator().manual_seed(0)
    sd = {
        k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in torchvision.models.resnet50().state_dict().items()
    }
    for k in sd:
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 0.5
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(sd, folder / Path(imagenet_weights("resnet50").url).name)
    return home, sd


@pytest.mark.parametrize("name", list(VARIANTS))
def test_registered_as_variants_listed_by_the_cli(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    spec, base = get_attention(name), get_attention(VARIANTS[name])
    assert spec.variant_of == base.name and base.variant_of is None
    assert (spec.placement, spec.kinds, spec.stages, spec.owns_norm) == (
        base.placement,
        base.kinds,
        base.stages,
        base.owns_norm,
    )
    assert issubclass(spec.cls, base.cls) and spec.title != base.title
    names = attnviz.list_attentions()
    assert names.index(name) == names.index(base.name) + 1  # listed right after the paper's block
    assert main(["list"]) == 0
    assert any(line.split()[:2] == [name, "conv"] for line in capsys.readouterr().out.splitlines())


def test_variant_of_must_name_a_registered_block() -> None:
    with pytest.raises(ValueError, match="variant of 'nope', which is not registered"):
        attnviz.blocks.register_attention("x_pre", placement="conv", kinds=("branch",), paper="x", variant_of="nope")


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_first_branch_has_the_shapes_of_conv2_and_bn2(arch: str) -> None:
    plain = attnviz.build_model(arch)
    sk, epsa = attnviz.build_model(arch, "sk_pre"), attnviz.build_model(arch, "epsa_pre")
    paper_sk, paper_epsa = attnviz.build_model(arch, "sk"), attnviz.build_model(arch, "epsa")
    for (path, ref), (_, a), (_, b), (_, c), (_, d) in zip(
        _blocks(plain), _blocks(sk), _blocks(epsa), _blocks(paper_sk), _blocks(paper_epsa), strict=True
    ):
        conv, bn = ref.conv2, ref.bn2
        first = a.conv2.paths[0]
        assert first.conv.groups == 1 and first.conv.weight.shape == conv.weight.shape, path
        assert (first.conv.stride, first.conv.padding, first.conv.dilation) == (conv.stride, (1, 1), (1, 1))
        shapes = {k: v.shape for k, v in bn.state_dict().items()}
        assert {k: v.shape for k, v in first.bn.state_dict().items()} == shapes
        assert isinstance(first.act, nn.ReLU) and isinstance(a.bn2, nn.Identity)  # SK's branch: conv, BN, ReLU
        assert a.conv2.paths[1].conv.groups == 32 and a.conv2.paths[1].conv.dilation == (2, 2)  # the paper's
        assert b.conv2.dense.groups == 1 and b.conv2.dense.weight.shape == conv.weight.shape
        assert b.conv2.dense.stride == conv.stride and isinstance(b.bn2, nn.BatchNorm2d)  # EPSA keeps bn2
        c_out = conv.out_channels
        assert [m.weight.shape[:2] for m in b.conv2.convs] == [(c_out // 4, c_out // g) for g in (4, 8, 16)]
        assert all((m.weight == 0).all() for m in b.conv2.convs)  # the added kernels start at zero
        # the paper's blocks are unchanged: grouped, no dense convolution, nothing to take from the backbone
        assert c.conv2.paths[0].conv.groups == 32 and d.conv2.dense is None and len(d.conv2.convs) == 4
        assert c.conv2.backbone_keys == {} == d.conv2.backbone_keys


@pytest.mark.parametrize("name", list(VARIANTS))
def test_imagenet_loads_into_the_first_branch(
    name: str, imagenet_home: tuple[Path, dict[str, torch.Tensor]], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, sd = imagenet_home
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("ATTNVIZ_OFFLINE", "1")
    model = attnviz.build_model("resnet50", name, weights="imagenet")
    assert model.weights_source.startswith("imagenet") and model.untrained_attention
    for path, block in _blocks(model):
        first = block.conv2.paths[0].conv if name == "sk_pre" else block.conv2.dense
        assert torch.equal(first.weight, sd[f"{path}.conv2.weight"]), path
        bn = block.conv2.paths[0].bn if name == "sk_pre" else block.bn2
        for k in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(getattr(bn, k), sd[f"{path}.bn2.{k}"]), (path, k)

    report = load_weights(attnviz.build_model("resnet50", name), "imagenet")
    assert report is not None and report.replaced == [] and not report.head_reset
    assert len(report.mapped) == 16 * (6 if name == "sk_pre" else 1)  # conv2 (+ bn2's five tensors) per block
    # what stayed untrained is exactly the block's new parameters and buffers, nothing of the backbone
    own = model.state_dict()
    new = {k for k in own for p in attention_modules(model) for n in NEW[name] if k.startswith(f"{p}.{n}")}
    assert set(report.missing_attention) == new


def test_untrained_share_drops_to_the_attention_parameters() -> None:
    """With the paper's blocks 44 % of an ImageNet ResNet-50's numbers have nowhere to go (every 3x3 convolution
    is random); with the variants nothing is left out and only the blocks' new parameters are untrained."""
    plain = attnviz.build_model("resnet50").state_dict()
    total = sum(v.numel() for v in plain.values() if v.is_floating_point())
    share = {}
    for name in ("sk", "sk_pre", "epsa", "epsa_pre"):
        model = attnviz.build_model("resnet50", name)
        report = load_backbone_state_dict(model, plain)
        params = dict(model.named_parameters())
        unused = sum(plain[k].numel() for k in report.replaced if plain[k].is_floating_point()) / total
        untrained = sum(params[k].numel() for k in report.missing_attention if k in params)
        share[name] = (unused, untrained / sum(p.numel() for p in params.values()))
    assert share["sk"][0] > share["epsa"][0] > 0.44  # SK also leaves bn2 out
    assert share["sk_pre"][0] == share["epsa_pre"][0] == 0
    assert share["sk_pre"][1] < 0.03 and share["epsa_pre"][1] < 0.2 < share["epsa"][1]


def test_sk_pre_first_branch_is_the_pretrained_layers() -> None:
    plain = attnviz.build_model("resnet18")
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
    model = attnviz.build_model("resnet18", "sk_pre")
    load_backbone_state_dict(model, plain.state_dict())
    x = torch.randn(2, 256, 9, 7)
    ref = plain.eval().layer3[1]
    with torch.no_grad():
        torch.testing.assert_close(model.layer3[1].conv2.paths[0](x), torch.relu(ref.bn2(ref.conv2(x))))


def test_epsa_pre_starts_from_the_pretrained_response() -> None:
    """At initialisation every scale F_i is its rows of the dense 3x3 convolution: out = cat_i(F_i * att_i)."""
    block = attnviz.create_attention("epsa_pre", 64, stride=2).eval()
    x = torch.randn(2, 64, 10, 9)
    with attnviz.AttentionRecorder(block) as rec, torch.no_grad():
        out = block(x)
        dense = block.dense(x)
    (att,) = rec.maps
    assert att.kind == "branch" and att.data.shape == (2, 4, 16)
    torch.testing.assert_close(att.data.sum(1), torch.ones(2, 16))
    torch.testing.assert_close(out, dense * att.data.flatten(1)[:, :, None, None])
    with torch.no_grad():  # trained kernels add to scales 1..3, never to scale 0
        for conv in block.convs:
            conv.weight.normal_(std=0.05)
    with attnviz.AttentionRecorder(block) as rec, torch.no_grad():
        out = block(x)
        feats = out / rec.maps[0].data.flatten(1)[:, :, None, None]  # F_i, concatenated
        added = torch.cat([conv(x) for conv in block.convs], dim=1)
    torch.testing.assert_close(feats[:, :16], dense[:, :16])
    torch.testing.assert_close(feats[:, 16:], dense[:, 16:] + added)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_capture_gives_the_branch_maps_of_the_paper_blocks(arch: str, name: str) -> None:
    model = attnviz.build_model(arch, name)
    with attnviz.AttentionRecorder(model) as rec, torch.inference_mode():
        model(torch.randn(1, 3, 64, 80))
    blocks = _blocks(model)
    assert [m.kind for m in rec.maps] == ["branch"] * len(blocks)
    for m, (path, block) in zip(rec.maps, blocks, strict=True):
        c = block.conv2.attn.fc_select.out_channels // 2 if name == "sk_pre" else block.bn2.num_features
        assert m.block == path
        assert tuple(m.data.shape) == ((1, 2, c) if name == "sk_pre" else (1, 4, c // 4))
        torch.testing.assert_close(m.data.sum(1), torch.ones(1, m.data.shape[2]))


def test_wrong_options_and_weights_say_what_to_use() -> None:
    with pytest.raises(ValueError, match=r"first kernel must be 3 and its groups 1"):
        attnviz.create_attention("epsa_pre", 64, kernels=(5, 7), groups=(1, 4))
    with pytest.raises(ValueError, match="use 'sk' for the paper's block"):
        attnviz.create_attention("sk_pre", 64, pretrained_branch=False)
    with pytest.raises(ValueError, match="the demo ships 'epsa_pre', its variant for pretrained backbones"):
        attnviz.build_model("resnet18", "epsa", weights="demo")


def test_declared_keys_are_checked_like_any_other() -> None:
    """A declaration that points at a parameter of another shape is refused with the key named, not loaded."""
    model = attnviz.build_model("resnet18", "sk_pre")
    model.layer1[0].conv2.backbone_keys = {"conv2": "paths.1.conv", "bn2": "paths.0.bn"}  # grouped: 64x2x3x3
    with pytest.raises(ValueError, match=r"shape mismatches: layer1\.0\.conv2\.paths\.1\.conv\.weight"):
        load_backbone_state_dict(model, attnviz.build_model("resnet18").state_dict())
