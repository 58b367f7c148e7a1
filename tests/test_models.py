"""build_model: torchvision's ResNet and names, blocks at the paper's placement, ImageNet state-dict loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import attnviz
from attnviz.blocks import get_attention
from attnviz.sources.own import attention_modules
from attnviz.sources.weights import imagenet_weights, load_backbone_state_dict, load_checkpoint_file

NAMES = attnviz.list_attentions()
ARCHS = ["resnet18", "resnet34", "resnet50", "resnet101"]


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_model_is_torchvision_resnet(arch: str) -> None:
    ours = attnviz.build_model(arch)
    ref = getattr(torchvision.models, arch)().eval()
    assert list(ours.state_dict()) == list(ref.state_dict())  # same names, same order
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    assert not attention_modules(ours)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("name", NAMES)
def test_placement_follows_the_registry(arch: str, name: str) -> None:
    spec = get_attention(name)
    model = attnviz.build_model(arch, name)
    found = attention_modules(model)
    for stage in range(1, 5):
        layer = getattr(model, f"layer{stage}")
        if spec.placement == "stage":
            has = isinstance(layer[-1], spec.cls)
            assert has == (stage in spec.stages)
            continue
        for i, block in enumerate(layer):
            if stage not in spec.stages:
                assert block.attn is None and not isinstance(block.conv2, spec.cls)
            elif spec.placement == "conv":
                assert isinstance(block.conv2, spec.cls) and f"layer{stage}.{i}.conv2" in found
                assert isinstance(block.bn2, nn.Identity) == spec.owns_norm
            else:
                assert isinstance(block.attn, spec.cls) and block.attn_at == spec.placement
    assert all(isinstance(m, spec.cls) for m in found.values())


def test_mhsa_only_in_the_last_stage_and_pools_stride_two() -> None:
    model = attnviz.build_model("resnet50", "mhsa")
    assert [p for p in attention_modules(model)] == ["layer4.0.conv2", "layer4.1.conv2", "layer4.2.conv2"]
    assert isinstance(model.layer4[0].conv2.pool, nn.AvgPool2d)
    assert isinstance(model.layer4[1].conv2.pool, nn.Identity)


@pytest.mark.parametrize("name", ["da", "ea"])
def test_stage_modules_are_identity_at_init(name: str) -> None:
    plain = attnviz.build_model("resnet18")
    model = attnviz.build_model("resnet18", name)
    load_backbone_state_dict(model, plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x))


def _attention_keys(model: nn.Module) -> set[str]:
    return {f"{p}.{k}" for p, m in attention_modules(model).items() for k in m.state_dict()}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("name", NAMES)
def test_backbone_state_dict_misses_exactly_the_attention_keys(arch: str, name: str) -> None:
    spec = get_attention(name)
    plain = attnviz.build_model(arch).state_dict()  # an ImageNet state dict has exactly these keys
    model = attnviz.build_model(arch, name)
    report = load_backbone_state_dict(model, plain)
    # sk_pre, epsa_pre take the replaced modules' tensors (report.mapped); every other attention key is new
    assert set(report.missing_attention) == _attention_keys(model) - set(report.mapped.values())
    assert bool(report.mapped) == (spec.variant_of is not None)
    assert not report.head_reset
    if spec.variant_of:
        assert report.replaced == []
    elif spec.placement == "conv":
        # the replaced 3x3 convs (and, for SK, their BNs) are the only state-dict keys left unused
        convs = attention_modules(model)  # "layerK.i.conv2" paths
        owners = {p.removesuffix("conv2") + n for p in convs for n in ("conv2", "bn2" if spec.owns_norm else "")}
        expected = {k for k in plain if k.rpartition(".")[0] in owners}
        assert set(report.replaced) == expected and expected
    else:
        assert report.replaced == []
    # every backbone tensor was loaded
    own = model.state_dict()
    for k, v in plain.items():
        if report.mapped.get(k, k) in own and k not in report.replaced:
            assert torch.equal(own[report.mapped.get(k, k)], v), k


def test_backbone_loading_names_every_misfit() -> None:
    model = attnviz.build_model("resnet18", "se")
    sd = attnviz.build_model("resnet18").state_dict()
    del sd["layer1.0.bn1.weight"]
    sd["layer9.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys that are not attention parameters: layer1\.0\.bn1\.weight"):
        load_backbone_state_dict(model, sd)
    with pytest.raises(ValueError, match=r"unexpected keys: layer9\.0\.conv1\.weight"):
        load_backbone_state_dict(model, sd)
    r50 = attnviz.build_model("resnet50").state_dict()
    with pytest.raises(
        ValueError, match=r"shape mismatches: layer1\.0\.conv1\.weight: file \(64, 64, 1, 1\) vs model \(64, 64, 3, 3\)"
    ):
        load_backbone_state_dict(model, r50)


def test_head_of_another_size_is_reset_not_loaded() -> None:
    plain = attnviz.build_model("resnet18").state_dict()
    model = attnviz.build_model("resnet18", "eca", num_classes=10)
    fc_before = model.fc.weight.clone()
    report = load_backbone_state_dict(model, plain)
    assert report.head_reset and torch.equal(model.fc.weight, fc_before)


def test_imagenet_weights_load_through_torchvision_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real loader (torchvision Weights API -> load_state_dict_from_url) reads a locally made file placed under
    the exact name it looks for in $TORCH_HOME/hub/checkpoints; nothing is downloaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    w = imagenet_weights("resnet18")
    ckpt_dir = tmp_path / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    made = attnviz.build_model("resnet18").state_dict()
    torch.save(made, ckpt_dir / Path(w.url).name)  # resnet18-f37072fd.pth
    model = attnviz.build_model("resnet18", "cbam", weights="imagenet")
    assert torch.equal(model.layer3[1].conv2.weight, made["layer3.1.conv2.weight"])
    assert model.weights_source == "imagenet (ResNet18_Weights.IMAGENET1K_V1)"
    assert model.untrained_attention is True
    assert len(model.weights_meta["categories"]) == 1000 and model.weights_meta["mean"] == [0.485, 0.456, 0.406]


def test_checkpoint_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = attnviz.build_model("resnet18", "spatial")
    with torch.no_grad():
        model.layer1[0].attn.conv.weight.fill_(0.25)
    save_file(model.state_dict(), tmp_path / "m.safetensors")
    torch.save(model.state_dict(), tmp_path / "m.pt")
    for f in ("m.safetensors", "m.pt"):
        other = attnviz.build_model("resnet18", "spatial", weights=str(tmp_path / f))
        assert torch.equal(other.layer1[0].attn.conv.weight, model.layer1[0].attn.conv.weight)
        assert other.weights_source == f"file {f}"
    with pytest.raises(ValueError, match="does not fit resnet18 with attention='cbam'"):
        attnviz.build_model("resnet18", "cbam", weights=str(tmp_path / "m.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot read checkpoint bad\.pt"):
        load_checkpoint_file(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="checkpoint not found"):
        load_checkpoint_file(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arch": "resnet9"}, "unknown arch 'resnet9'; valid archs: resnet18, resnet34, resnet50, resnet101"),
        ({"attention": "sa"}, "unknown attention 'sa'"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"weights": "hub"}, "unknown weights 'hub'"),
    ],
)
def test_build_model_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        attnviz.build_model(**{"arch": "resnet18", **kwargs})
