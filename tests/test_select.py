"""The selection policy lives in the library (attnviz.sources.select): the page and ``attnviz render`` ask the loader
for the same network for every attention type with ImageNet weights, and specs are parsed once into typed values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import attnviz.sources.loading as loading
from attnviz.app import AppConfig, Handlers
from attnviz.blocks import list_attentions
from attnviz.cli.main import main
from attnviz.sources.catalog import IMAGENET_BEST
from attnviz.sources.registry import register_source
from attnviz.sources.select import choose_network, default_weights
from attnviz.sources.spec import ModelSpec, Weights, parse_spec
from tests.images import ASSET


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None, str]]:
    """Every (spec, attention, weights) the pipeline asks :func:`attnviz.load_model` for; each ask stops the run."""
    seen: list[tuple[str, str | None, str]] = []

    def record(spec: Any, weights: Any = None, *, attention: str | None = None, **options: Any) -> None:
        seen.append((str(spec), attention, str(weights)))
        raise ValueError("recorded: nothing is built")

    monkeypatch.setattr(loading, "load_model", record)
    return seen


@pytest.mark.parametrize("attention", list_attentions())
def test_render_and_the_page_run_the_same_network_with_imagenet_weights(
    attention: str, asked: list, tmp_path: Path
) -> None:
    argv = ["render", ASSET, "--model", "resnet50", "--attention", attention, "--weights", "imagenet"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2  # the recording loader refuses
    app = Handlers(AppConfig(device="cpu", offline=True, export_root=tmp_path / "exports"))
    with pytest.raises(Exception, match="recorded: nothing is built"):
        app.run_analysis(ASSET, attention, "resnet50", "imagenet")
    assert len(asked) == 2 and asked[0] == asked[1], asked
    spec, chosen, _ = asked[0]
    if attention in IMAGENET_BEST:  # the best ImageNet network with that attention, bringing its own
        assert (spec, chosen) == (f"timm:{IMAGENET_BEST[attention]}", None)
    else:  # torchvision's backbone with the block (its variant for pretrained backbones where there is one)
        assert spec == "resnet50" and chosen == choose_network(attention, "resnet50", "imagenet")[0]


def test_the_policy() -> None:
    assert choose_network("se", "resnet50", "imagenet") == (None, "seresnet50.ra2_in1k", "imagenet")
    assert choose_network("mhsa", "resnet18", "pretrained") == (None, "botnet26t_256.c1_in1k", "imagenet")
    assert choose_network("epsa", "resnet50", "imagenet") == ("epsa_pre", "resnet50", "imagenet")
    assert choose_network("cbam", "resnet50", "imagenet") == ("cbam", "resnet50", "imagenet")
    assert choose_network("se", "resnet18", "demo") == ("se", "resnet18", "demo")
    assert choose_network("sk", "resnet18", "demo") == ("sk_pre", "resnet18", "demo")  # a trained backbone too
    assert choose_network("sk", "resnet18", "random") == ("sk", "resnet18", "random")  # nothing to keep
    assert choose_network("se", "timm:resnet18", "imagenet") == ("se", "timm:resnet18", "imagenet")  # not attnviz's
    assert default_weights("resnet18") is Weights.DEMO and default_weights("resnet50") is Weights.RANDOM
    assert default_weights("seresnet50.ra2_in1k") is default_weights("torchvision:resnet18") is Weights.IMAGENET
    assert default_weights("nets.py:build") is default_weights("no spec") is Weights.RANDOM


def test_specs_parse_once_into_one_kind_each() -> None:
    assert parse_spec(" resnet50 ") == ModelSpec("own", "resnet50", "resnet50")
    assert parse_spec("seresnet50.ra2_in1k") == ModelSpec("timm", "seresnet50.ra2_in1k", "timm:seresnet50.ra2_in1k")
    assert parse_spec("timm:resnet18").kind == "timm" and parse_spec("torchvision:vgg11").name == "vgg11"
    assert parse_spec("nets/model.py:build") == ModelSpec("file", "build", "nets/model.py:build", "nets/model.py")
    assert parse_spec("pkg.mod:Net") == ModelSpec("module", "Net", "pkg.mod:Net", "pkg.mod")
    assert parse_spec("whole.pt").kind == "pickle"
    spec = parse_spec("resnet18")
    assert parse_spec(spec) is spec
    with pytest.raises(ValueError, match="empty model spec"):
        parse_spec("  ")
    with pytest.raises(ValueError, match="unknown model spec 'resnet'"):
        parse_spec("resnet")


def test_a_source_is_registered_once() -> None:
    with pytest.raises(ValueError, match="a source for 'timm' specs is already registered"):
        register_source("timm")(lambda spec, options: None)


@pytest.mark.parametrize("command", ["render", "compare", "stats"])
def test_every_command_runs_sk_on_the_demo_as_the_page_does(command: str, asked: list, tmp_path: Path) -> None:
    """The demo weights (resnet18's default) put SK into a trained backbone, so every command, like the page, runs
    ``sk_pre``, whose first branch is that backbone's 3x3 convolution (the checkpoint the demo ships)."""
    out, data = str(tmp_path / "out"), tmp_path / "data" / "cat"
    data.mkdir(parents=True)
    (data / "cat.jpg").write_bytes(Path(ASSET).read_bytes())
    argv = {
        "render": ["render", ASSET, "--attention", "sk", "--out", out, "--device", "cpu"],
        "compare": ["compare", ASSET, "--attention", "sk", "se", "--out", out, "--device", "cpu"],
        "stats": ["stats", str(data.parent), "--attention", "sk", "--out", out, "--workers", "0"],
    }[command]
    try:
        assert main(argv) == 2  # the command reports the recording loader's refusal
    except ValueError as e:  # or lets it through
        assert "recorded: nothing is built" in str(e)
    assert asked and asked[0][1:] == ("sk_pre", "demo"), asked


@pytest.mark.parametrize("command", ["render", "stats"])
def test_size_reaches_the_network_the_policy_chose(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--size`` declares the input of a network not attnviz's; asked for SE on resnet50 with ImageNet weights, the
    command runs timm's SE-ResNet, so the size goes to that network's loader, as it would have given it by name."""
    options_seen: list[dict[str, Any]] = []

    def record(spec: Any, weights: Any = None, *, attention: str | None = None, **options: Any) -> None:
        options_seen.append({"spec": str(spec), **options})
        raise ValueError("recorded: nothing is built")

    monkeypatch.setattr(loading, "load_model", record)
    out, data = str(tmp_path / "out"), tmp_path / "data" / "cat"
    data.mkdir(parents=True)
    (data / "cat.jpg").write_bytes(Path(ASSET).read_bytes())
    head = {"render": ["render", ASSET, "--device", "cpu"], "stats": ["stats", str(data.parent), "--workers", "0"]}
    argv = [*head[command], "--model", "resnet50", "--attention", "se", "--weights", "imagenet", "--size", "256"]
    try:
        assert main([*argv, "--out", out]) == 2
    except ValueError as e:
        assert "recorded: nothing is built" in str(e)
    assert options_seen and options_seen[0]["spec"] == f"timm:{IMAGENET_BEST['se']}", options_seen
    assert options_seen[0].get("input_size") == 256, options_seen
