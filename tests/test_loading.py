"""load_model(): users' model files and modules, every checkpoint shape people save, pickled models, labels.

The model files are written by the tests (a small CNN with a squeeze-and-excitation module, as copied from a blog
post), imported by path and as a package module; the checkpoints are saved with the real wrappers
(``nn.DataParallel``, ``torch.compile``) and the real savers (``torch.save``, safetensors).
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from attnviz import load_model
from attnviz.sources.weights import PickledModelError

MODEL_SRC = textwrap.dedent(
    """
    import torch
    from torch import nn


    class SE(nn.Module):
        def __init__(self, channels, reduction=4):
            super().__init__()
            self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
            self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

        def forward(self, x):
            w = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
            return x * w


    class TinyNet(nn.Module):
        def __init__(self, num_classes=5):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.se = SE(8)
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            return self.fc(self.se(self.stem(x)).mean((2, 3)))


    def build():
        return TinyNet()


    def build_three():
        return TinyNet(num_classes=3)


    def not_a_model():
        return 42


    def needs_args(width):
        return TinyNet(width)


    def detector():
        return nn.Conv2d(3, 4, 3)  # its output is a feature map, not class logits
    """
)

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "usernet.py"
    path.write_text(MODEL_SRC)
    return path


def _trained(spec: str) -> nn.Module:
    """The user's network with weights no initialisation gives (BN statistics included)."""
    torch.manual_seed(123)
    model = load_model(spec)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.3)
    return model.eval()


def _out(model: nn.Module) -> Tensor:
    with torch.inference_mode():
        return model(X)


def test_file_function_class_and_package_module(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_fn = load_model(f"{model_file}:build")
    by_class = load_model(f"{model_file}:TinyNet")
    monkeypatch.syspath_prepend(str(model_file.parent))
    by_module = load_model("usernet:build")
    for spec, m in ((f"{model_file}:build", by_fn), (f"{model_file}:TinyNet", by_class), ("usernet:build", by_module)):
        assert type(m).__name__ == "TinyNet" and not m.training
        assert m.arch == spec and m.attention is None and m.untrained_attention is False
        assert m.weights_source == f"as built by {spec}"
        meta = m.weights_meta
        assert meta["categories"] == [f"class {i}" for i in range(5)] and m.labels_source == "class i"
        assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
        assert meta["resize_size"] == [224]
    custom = load_model(f"{model_file}:build", size=96, mean=[0.5] * 3, std=[0.25, 0.5, 1.0], attention="se")
    assert custom.weights_meta["resize_size"] == [96] and custom.weights_meta["mean"] == [0.5] * 3
    assert custom.weights_meta["std"] == [0.25, 0.5, 1.0] and custom.attention == "se"
    odd = load_model(f"{model_file}:detector")
    assert odd.weights_meta["categories"] == [] and odd.labels_source.startswith("none")


def _wrap(kind: str) -> Callable[[nn.Module], Any]:
    """How the checkpoint is made from the trained model: the shapes people save."""
    shapes: dict[str, Callable[[nn.Module], Any]] = {
        "plain": lambda m: m.state_dict(),
        "state_dict": lambda m: {"state_dict": m.state_dict(), "epoch": 7},
        "model": lambda m: {"model": m.state_dict()},
        "model_state_dict": lambda m: {"model_state_dict": m.state_dict(), "optimizer_state_dict": {"lr": 0.1}},
        "nested": lambda m: {"model": {"state_dict": m.state_dict()}, "step": 3},
        "dataparallel": lambda m: {"state_dict": nn.DataParallel(m).state_dict()},
        "compiled": lambda m: torch.compile(m).state_dict(),
        "compiled_dataparallel": lambda m: nn.DataParallel(torch.compile(m)).state_dict(),
        "lightning": lambda m: {"state_dict": {f"model.{k}": v for k, v in m.state_dict().items()}, "epoch": 1},
    }
    return shapes[kind]


@pytest.mark.parametrize(
    "kind",
    [
        "plain",
        "state_dict",
        "model",
        "model_state_dict",
        "nested",
        "dataparallel",
        "compiled",
        "compiled_dataparallel",
        "lightning",
    ],
)
def test_checkpoint_shapes_load_exactly(model_file: Path, tmp_path: Path, kind: str) -> None:
    spec = f"{model_file}:build"
    source = _trained(spec)
    obj = _wrap(kind)(source)
    if kind == "dataparallel":
        assert next(iter(obj["state_dict"])).startswith("module.")
    if kind.startswith("compiled"):
        assert any("_orig_mod." in k for k in obj)
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    model = load_model(spec, path)
    assert not torch.equal(_out(load_model(spec)), _out(source))  # a fresh build differs: the file did it
    assert torch.equal(_out(model), _out(source))
    assert model.weights_source == "file ckpt.pt" and model.untrained_attention is False and not model.training


def test_safetensors(model_file: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    spec = f"{model_file}:TinyNet"
    source = _trained(spec)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in nn.DataParallel(source).state_dict().items()}, path)
    model = load_model(spec, path)
    assert torch.equal(_out(model), _out(source)) and model.weights_source == "file weights.safetensors"


def test_mismatches_name_the_keys(model_file: Path, tmp_path: Path) -> None:
    spec = f"{model_file}:build"
    sd = _trained(spec).state_dict()
    renamed = {(k.replace("se.fc1", "se.gate") if k.startswith("se.fc1") else k): v for k, v in sd.items()}
    renamed["extra.bias"] = torch.zeros(3)
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(ValueError) as err:
        load_model(spec, tmp_path / "renamed.pt")
    msg = str(err.value)
    assert msg.startswith(f"checkpoint renamed.pt does not fit {spec}:")
    assert "missing keys: se.fc1.weight, se.fc1.bias" in msg
    assert "unexpected keys: se.gate.weight, se.gate.bias, extra.bias" in msg

    torch.save(_trained(f"{model_file}:build_three").state_dict(), tmp_path / "three.pt")
    with pytest.raises(ValueError, match=r"shape mismatches: fc\.weight \(file \(3, 8\), model \(5, 8\)\), fc\.bias"):
        load_model(spec, tmp_path / "three.pt")
    torch.save({"epoch": 3, "optimizer": 1}, tmp_path / "nothing.pt")
    with pytest.raises(ValueError, match=r"holds a dict without a state dict \(keys: epoch, optimizer\)"):
        load_model(spec, tmp_path / "nothing.pt")
    with pytest.raises(ValueError, match="checkpoint not found"):
        load_model(spec, tmp_path / "absent.pt")


def test_pickled_whole_model_is_refused_unless_trusted(model_file: Path, tmp_path: Path) -> None:
    spec = f"{model_file}:build"
    source = _trained(spec)
    path = tmp_path / "whole.pt"
    torch.save(source, path)  # the whole model, pickled
    for call in (lambda: load_model(spec, path), lambda: load_model(str(path))):
        with pytest.raises(PickledModelError) as err:
            call()
        msg = str(err.value)
        assert "holds pickled Python objects" in msg and "TinyNet" in msg
        assert 'torch.save(model.state_dict(), "model.pt")' in msg and "--trust-pickle" in msg
    assert torch.equal(_out(load_model(spec, path, trust_pickle=True)), _out(source))
    whole = load_model(str(path), trust_pickle=True)
    assert torch.equal(_out(whole), _out(source)) and "trusted" in whole.weights_source
    # a dict with a pickled object besides the tensors (an argparse namespace) is refused the same way
    torch.save({"state_dict": source.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "args.pt")
    with pytest.raises(PickledModelError, match=r"argparse\.Namespace"):
        load_model(spec, tmp_path / "args.pt")
    assert torch.equal(_out(load_model(spec, tmp_path / "args.pt", trust_pickle=True)), _out(source))


@pytest.mark.parametrize(
    "name, text",
    [
        ("labels.txt", "cat\ndog\nbird\nfish\nfrog\n\n"),
        ("labels.json", json.dumps(["cat", "dog", "bird", "fish", "frog"])),
        ("index.json", json.dumps({"4": "frog", "0": "cat", "1": "dog", "2": "bird", "3": "fish"})),
        ("class_to_idx.json", json.dumps({"bird": 2, "cat": 0, "dog": 1, "fish": 3, "frog": 4})),
    ],
)
def test_labels_files(model_file: Path, tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    model = load_model(f"{model_file}:build", labels=tmp_path / name)
    assert model.weights_meta["categories"] == ["cat", "dog", "bird", "fish", "frog"]
    assert model.labels_source == f"file {name}"


def test_label_errors(model_file: Path, tmp_path: Path) -> None:
    (tmp_path / "four.txt").write_text("a\nb\nc\nd\n")
    with pytest.raises(ValueError, match=r"file four\.txt has 4 class names, but .*:build outputs 5 classes"):
        load_model(f"{model_file}:build", labels=tmp_path / "four.txt")
    (tmp_path / "gap.json").write_text(json.dumps({"0": "a", "2": "b"}))
    with pytest.raises(ValueError, match=r"indices must be 0\.\.1"):
        load_model(f"{model_file}:build", labels=tmp_path / "gap.json")
    with pytest.raises(ValueError, match="labels file not found"):
        load_model(f"{model_file}:build", labels=tmp_path / "absent.txt")


def test_spec_errors(model_file: Path, tmp_path: Path) -> None:
    cases = {
        f"{tmp_path / 'absent.py'}:build": r"model file not found: .*absent\.py",
        f"{model_file}:buidl": r"has no 'buidl'; did you mean build",
        f"{model_file}:not_a_model": r"not_a_model\(\) returned a int, not an nn\.Module",
        f"{model_file}:needs_args": r"calling needs_args\(\) failed .*takes no arguments",
        "no_such_package_xyz.models:build": r"cannot import module 'no_such_package_xyz\.models'",
        "nonsense": r"unknown model spec 'nonsense'; use path/to/file\.py:NAME",
        "timm:seresnet5O": r"unknown timm model 'seresnet5O'; did you mean .*seresnet50",
        "timm:resnet18.nope_in1k": r"no pretrained weights 'resnet18\.nope_in1k'; those of resnet18: .*tv_in1k",
        "torchvision:resnet05": r"unknown torchvision classification model 'resnet05'; did you mean .*resnet50",
        "torchvision:fasterrcnn_resnet50_fpn": r"\(not a classification model\)",
    }
    for spec, pattern in cases.items():
        with pytest.raises(ValueError, match=pattern):
            load_model(spec, pretrained=False)
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match=r"importing .*broken\.py failed: RuntimeError: boom"):
        load_model(f"{bad}:build")
    with pytest.raises(ValueError, match="mean must be 3"):
        load_model(f"{model_file}:build", mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="std must be positive"):
        load_model(f"{model_file}:build", std=[0.5, 0.0, 0.5])


def test_attnviz_resnets() -> None:
    model = load_model("resnet18", attention="se", weights="random")
    assert model.arch == "resnet18" and model.attention == "se" and model.weights_source == "random"
    assert model.untrained_attention is True and len(model.weights_meta["categories"]) == 1000
    assert model.labels_source == "ImageNet-1k (torchvision)"
    with pytest.raises(ValueError, match=r"unknown attention .no-such-attention."):
        load_model("resnet18", attention="no-such-attention")


def test_timm_and_torchvision_with_a_users_checkpoint(tmp_path: Path) -> None:
    """A fine-tuned timm/torchvision network with 7 classes: the classifier is rebuilt at the file's size."""
    timm = pytest.importorskip("timm")
    source = timm.create_model("test_resnet", pretrained=False, num_classes=7).eval()
    torch.save({"model": nn.DataParallel(source).state_dict()}, tmp_path / "tuned.pth")
    model = load_model("timm:test_resnet", tmp_path / "tuned.pth")
    assert torch.equal(_out(model), _out(source)) and model.num_classes == 7
    assert model.weights_meta["categories"] == [f"class {i}" for i in range(7)]
    assert model.weights_source == "file tuned.pth" and model.untrained_attention is False
    assert model.weights_meta["input_size"] == [160, 160]  # preprocessing from timm's config

    import torchvision

    tv = torchvision.models.get_model("squeezenet1_1", num_classes=7).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pt")
    loaded = load_model("torchvision:squeezenet1_1", tmp_path / "tv.pt", labels=None)
    big = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(loaded(big), tv(big))
    assert len(loaded.weights_meta["categories"]) == 7 and loaded.weights_meta["resize_size"] == [256]


def test_random_timm_and_torchvision() -> None:
    pytest.importorskip("timm")
    m = load_model("timm:seresnet18", pretrained=False)
    assert m.weights_source == "random" and m.untrained_attention is True and m.arch == "timm:seresnet18"
    assert m.weights_meta["categories"][281] == "tabby" and m.weights_meta["interpolation"] == "bicubic"
    tv = load_model("torchvision:mobilenet_v3_small", pretrained=False)
    assert tv.weights_source == "random" and tv.weights_meta["categories"][281] == "tabby"
    assert tv.weights_meta["resize_size"] == [256] and tv.weights_meta["input_size"] == [224, 224]
