"""One reader and one message for a user's weight file, on every path it enters by: the CLI (``--arch`` with
``--attention``, and ``--model SPEC``), the Python API (:func:`attnviz.build_model`, :func:`attnviz.load_model`)
and the app's Weights field. Files that would run code, files that are no checkpoint, and checkpoints of another
network, each crafted here; nothing is mocked."""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import attnviz
from attnviz.app import AppConfig, Handlers
from attnviz.cli.main import main
from attnviz.sources.checkpoint import PickledModelError, checkpoint_format
from attnviz.sources.mismatch import describe_state_dict
from tests.images import ASSET


class _Evil:
    """Unpickling this runs ``Path.touch(marker)``: a file that would run code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _cli(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> str:
    """``attnviz render`` with ``args``: it must stop with exit 2 and a message without a traceback."""
    capsys.readouterr()
    code = main(["render", ASSET, *args, "--out", str(out), "--size", "64", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("attnviz render: "), err
    return err.removeprefix("attnviz render: ").strip()


def _app(tmp_path: Path, weights: Path, attention: str = "se") -> str:
    """The message the app shows for ``weights`` typed into its Weights field (bound to loopback)."""
    import gradio as gr

    app = Handlers(AppConfig(device="cpu", offline=True, export_root=tmp_path / "exports"))
    app.server_name = "127.0.0.1"
    with pytest.raises(gr.Error) as err:
        app.run_analysis(ASSET, attention, "resnet18", str(weights))
    return str(err.value.message)


def _raises(call: Callable[[], object], kind: type[Exception] = ValueError) -> str:
    with pytest.raises(kind) as err:
        call()
    return str(err.value)


def _every_path(capsys: pytest.CaptureFixture[str], tmp_path: Path, path: Path) -> dict[str, str]:
    """path name -> the message each way in gives for the weight file ``path`` (resnet18 with SE where it asks)."""
    out = tmp_path / "out"
    return {
        "cli --arch --attention": _cli(capsys, out, "--arch", "resnet18", "--attention", "se", "--weights", str(path)),
        "cli --model torchvision": _cli(capsys, out, "--model", "torchvision:resnet18", "--weights", str(path)),
        "build_model": _raises(lambda: attnviz.build_model("resnet18", "se", weights=str(path))),
        "load_model resnet18": _raises(lambda: attnviz.load_model("resnet18", path, attention="se")),
        "load_model torchvision": _raises(lambda: attnviz.load_model("torchvision:resnet18", path, pretrained=False)),
        "app": _app(tmp_path, path),
    }


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump", "pickle.dump as .bin"])
def test_code_running_pickles_get_one_refusal_on_every_path(
    how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    payload = {"conv1.weight": _Evil(marker)}
    if how == "torch.save":
        path = tmp_path / "evil.pth"
        torch.save(payload, path)
    else:
        path = tmp_path / ("evil.bin" if how.endswith(".bin") else "evil.pkl")
        path.write_bytes(pickle.dumps(payload, protocol=4))
    messages = _every_path(capsys, tmp_path, path)
    assert not marker.exists()
    first = messages["build_model"]
    assert all(m == first for m in messages.values()), messages  # one message, word for word
    assert first.startswith(f"checkpoint {path.name} ") and "holds pickled Python objects" in first
    assert "pathlib" in first  # what it would import, read without running it
    assert "so it is refused" in first and 'torch.save(model.state_dict(), "model.pt")' in first
    for torch_words in ("weights_only", "Unsupported operand", "UnpicklingError", "will likely succeed"):
        assert torch_words not in first
    if how == "torch.save":
        assert "--trust-pickle" in first and "trust_pickle=True" in first
    else:  # a plain pickle is never unpickled, trusted or not: no --trust-pickle to offer
        assert "plain Python pickle" in first and "--trust-pickle" not in first
        with pytest.raises(ValueError, match="does not load even when trusted"):
            attnviz.build_model("resnet18", "se", weights=str(path), trust_pickle=True)
    with pytest.raises(PickledModelError):
        attnviz.build_model("resnet18", "se", weights=str(path))
    assert not marker.exists()


def test_trust_pickle_reaches_attnvizs_own_resnets(tmp_path: Path) -> None:
    """The refusal names --trust-pickle / trust_pickle=True; on attnviz's ResNets they must work too."""
    source = attnviz.build_model("resnet18", "se")
    path = tmp_path / "with_args.pt"
    torch.save({"state_dict": source.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(PickledModelError, match=r"argparse\.Namespace"):
        attnviz.build_model("resnet18", "se", weights=str(path))
    with pytest.raises(PickledModelError, match=r"argparse\.Namespace"):
        attnviz.load_model("resnet18", path, attention="se")
    for model in (
        attnviz.build_model("resnet18", "se", weights=str(path), trust_pickle=True),
        attnviz.load_model("resnet18", path, attention="se", trust_pickle=True),
    ):
        assert torch.equal(model.layer1[0].attn.fc1.weight, source.layer1[0].attn.fc1.weight)
        assert model.weights_source == "file with_args.pt"


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("passwd", b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n", "neither"),
        ("notes.pt", b"these are my notes, not weights\n", "neither"),
        ("weights.safetensors", b"<html>403 Forbidden</html>", "neither"),
        ("empty.pth", b"", "empty"),
    ],
)
def test_a_file_that_is_no_checkpoint_is_named_and_explained(
    name: str, content: bytes, what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    messages = _every_path(capsys, tmp_path, path)
    first = messages["build_model"]
    assert all(m == first for m in messages.values()), messages
    assert first.startswith(f"cannot read checkpoint {name}: ")
    if what == "neither":
        assert "neither a safetensors file nor a torch file" in first
    else:
        assert "the file is empty" in first
    assert 'torch.save(model.state_dict(), "model.pt")' in first  # what to pass instead
    assert "IndexError" not in first and "root:x" not in first and "403" not in first  # never the file's content
    with pytest.raises(ValueError, match=r"neither a safetensors file nor a torch file|empty"):
        checkpoint_format(path)


def test_formats_come_from_the_content_not_the_name(tmp_path: Path) -> None:
    """A safetensors file named .bin and a torch file named .safetensors both load; the suffix is a name only."""
    from safetensors.torch import save_file

    source = attnviz.build_model("resnet18", "eca")
    save_file(source.state_dict(), tmp_path / "model.bin")
    torch.save(source.state_dict(), tmp_path / "torch.safetensors")
    torch.save(source.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert [checkpoint_format(tmp_path / n) for n in ("model.bin", "torch.safetensors", "legacy.pt")] == [
        "safetensors",
        "torch",
        "torch",
    ]
    for name in ("model.bin", "torch.safetensors", "legacy.pt"):
        model = attnviz.build_model("resnet18", "eca", weights=str(tmp_path / name))
        assert torch.equal(model.layer2[0].attn.conv.weight, source.layer2[0].attn.conv.weight)


@pytest.fixture(scope="module")
def resnet50_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain ResNet-50 state dict and one with SE blocks, as torch files."""
    folder = tmp_path_factory.mktemp("r50")
    torch.save(attnviz.build_model("resnet50").state_dict(), folder / "resnet50.pth")
    torch.save(attnviz.build_model("resnet50", "se").state_dict(), folder / "resnet50_se.pth")
    return folder


def test_a_resnet50_file_in_resnet18_with_se_names_every_kind_of_misfit(
    resnet50_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = resnet50_files / "resnet50.pth"
    msg = _cli(capsys, tmp_path / "out", "--arch", "resnet18", "--attention", "se", "--weights", str(path))
    assert msg == _raises(lambda: attnviz.build_model("resnet18", "se", weights=str(path)))
    assert msg == _app(tmp_path, path)
    lines = msg.splitlines()
    assert lines[0] == "checkpoint resnet50.pth does not fit resnet18 with attention='se':"
    # SE's 32 parameters are missing, bottleneck keys unexpected, 1x1 convs where the model has 3x3
    assert lines[1].startswith("  missing keys: layer1.0.attn.fc1.weight, layer1.0.attn.fc1.bias, ")
    assert lines[1].endswith("(32 in all)")
    assert lines[2].startswith("  unexpected keys: layer1.0.conv3.weight, ") and lines[2].endswith("(198 in all)")
    assert lines[3].startswith(
        "  shape mismatches: layer1.0.conv1.weight (file (64, 64, 1, 1), model (64, 64, 3, 3)), "
    )
    assert lines[3].endswith("(24 in all)")
    assert "fc.weight (file (1000, 2048), model (1000, 512))" not in lines[3]  # the first few, not all
    # what the file is, and how to load it as that (SimAM has no parameters: its keys are a plain ResNet's)
    assert lines[4].startswith("  the file looks like resnet50 with no attention (or attention='simam'")
    assert "1000 classes" in lines[4] and "--arch resnet50;" in lines[4]
    assert "attnviz.build_model('resnet50', None, weights=PATH)" in lines[4]
    assert len(lines) == 5


def test_the_file_is_named_as_the_network_and_attention_it_looks_like(
    resnet50_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = resnet50_files / "resnet50_se.pth"
    for msg in (
        _raises(lambda: attnviz.load_model("resnet18", path, attention="cbam")),
        _raises(lambda: attnviz.load_model("torchvision:resnet50", path, pretrained=False)),  # a spec's own loader
    ):
        assert "the file looks like resnet50 with attention='se', 1000 classes" in msg
        assert "--arch resnet50 --attention se" in msg
    # only the classifier differs: the class count, and how to build for it
    small = attnviz.build_model("resnet18", "spatial", num_classes=10)
    torch.save(small.state_dict(), tmp_path / "ten.pt")
    msg = _raises(lambda: attnviz.build_model("resnet18", "spatial", weights=str(tmp_path / "ten.pt")))
    assert "shape mismatches: fc.weight (file (10, 512), model (1000, 512)), fc.bias" in msg
    assert "looks like resnet18 with attention='spatial', 10 classes" in msg and "num_classes=10" in msg


@pytest.mark.parametrize("attention", [None, *attnviz.list_attentions()])
def test_every_attention_type_is_recognised_from_its_keys(attention: str | None) -> None:
    guess = describe_state_dict(attnviz.build_model("resnet18", attention, num_classes=7).state_dict())
    assert guess is not None and guess["exact"]
    assert guess["arch"] == "resnet18" and guess["classes"] == 7 and attention in guess["attention"]


def test_wrapper_prefixes_and_other_layouts() -> None:
    """DataParallel's ``module.`` prefix is no obstacle; a ResNet layout attnviz lacks is described, not guessed."""
    from torchvision.models.resnet import BasicBlock, ResNet

    wrapped = {f"module.{k}": v for k, v in attnviz.build_model("resnet34", "eca").state_dict().items()}
    guess = describe_state_dict(wrapped)
    assert guess is not None and guess["arch"] == "resnet34" and "eca" in guess["attention"]
    odd = describe_state_dict(ResNet(BasicBlock, [1, 1, 1, 1]).state_dict())
    assert odd is not None and odd["arch"] is None
    assert odd["text"].startswith("a ResNet with basic blocks [1, 1, 1, 1] per stage, which none of attnviz's")
    assert describe_state_dict({"encoder.weight": torch.zeros(2, 2)}) is None
