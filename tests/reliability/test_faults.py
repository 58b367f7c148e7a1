"""Faults: GPU out of memory (injected), corrupt, mismatched and code-running checkpoints, a weight source that is
missing; each becomes a clear message and the app keeps serving."""

from __future__ import annotations

import importlib
import pickle
import re
import urllib.error
from pathlib import Path
from typing import Any

import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

import attnviz
from attnviz.cli.main import main
from attnviz.sources.weights import imagenet_weights, load_checkpoint_file
from tests.images import ASSET
from tests.reliability.conftest import FIGURES, analyze_api, check_ok, hook_count

pipeline = importlib.import_module("attnviz.pipeline.core")  # the module (attnviz.analyze is the function)
OOM_ERRORS = {
    "OutOfMemoryError": torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    "cuDNN": RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
}


def _cached(attention: str) -> torch.nn.Module:
    """The served model with ``attention``, from the app's model cache."""
    return next(m for m in reversed(pipeline.DEFAULT_CACHE.models()) if m.attention == attention)


@pytest.mark.parametrize("kind", list(OOM_ERRORS))
def test_out_of_memory_in_the_forward_is_a_clear_message(
    client: Client, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_ok(analyze_api(client, ASSET, "cbam"))
    model = _cached("cbam")

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OOM_ERRORS[kind]

    monkeypatch.setattr(model.layer3[0].attn, "forward", fail)  # mid-forward, while the recorder's hooks are on
    with pytest.raises(AppError, match="the GPU ran out of memory; try a smaller image, a smaller model or --device"):
        analyze_api(client, ASSET, "cbam")
    monkeypatch.undo()
    assert hook_count(model) == 0
    check_ok(analyze_api(client, ASSET, "cbam"))


def test_out_of_memory_while_loading_is_a_clear_message(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OOM_ERRORS["OutOfMemoryError"]

    import attnviz.sources.loading

    monkeypatch.setattr(attnviz.sources.loading, "load_model", fail)  # the pipeline builds every network through it
    with pytest.raises(AppError, match="cannot load resnet18 with coord: the GPU ran out of memory"):
        analyze_api(client, ASSET, "coord")
    monkeypatch.undo()
    check_ok(analyze_api(client, ASSET, "coord"))


def _checkpoints(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (attention the file is loaded for, a regex the error must match), the files written to ``folder``."""
    from safetensors.torch import save_file

    good = attnviz.build_model("resnet18", "spatial").state_dict()
    save_file(good, folder / "good.safetensors")
    raw = (folder / "good.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "garbage.pt").write_bytes(b"PK\x03\x04 this is not a checkpoint" * 10)
    torch.save(good, folder / "spatial.pt")
    torch.save(attnviz.build_model("resnet50").state_dict(), folder / "resnet50.pt")
    torch.save({k: v for k, v in good.items() if not k.startswith("fc.")}, folder / "headless.pt")
    torch.save(torch.zeros(3), folder / "tensor.pt")
    return {
        "truncated.safetensors": ("spatial", r"truncated\.safetensors"),
        "empty.safetensors": ("spatial", r"empty\.safetensors"),
        "garbage.pt": ("spatial", r"cannot read checkpoint garbage\.pt"),
        "spatial.pt": ("cbam", r"checkpoint spatial\.pt does not fit resnet18 with attention='cbam'"),
        "resnet50.pt": (None, r"checkpoint resnet50\.pt does not fit resnet18 with attention=None:\n  unexpected keys"),
        "headless.pt": ("spatial", r"checkpoint headless\.pt does not fit .*\n  missing keys: fc\.weight, fc\.bias\n"),
        "tensor.pt": ("spatial", r"checkpoint tensor\.pt does not hold a state dict"),
    }


def test_corrupt_and_mismatched_checkpoints_are_named(
    client: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _checkpoints(tmp_path)
    for name, (attention, match) in files.items():
        with pytest.raises(ValueError, match=match):
            attnviz.analyze(ASSET, attention=attention, weights=str(tmp_path / name), size=64, device="cpu")
    for name in ("truncated.safetensors", "spatial.pt"):  # a path typed as the app's weights: the same message
        attention, match = files[name]
        with pytest.raises(AppError, match=match):
            analyze_api(client, ASSET, attention, "resnet18", str(tmp_path / name))
        check_ok(analyze_api(client, ASSET, attention))
    result = attnviz.analyze(ASSET, attention="spatial", weights=str(tmp_path / "good.safetensors"), size=64)
    assert result.model["weights_source"] == "file good.safetensors"
    for name in ("truncated.safetensors", "spatial.pt"):  # the CLI stops at once, with the same message
        attention, match = files[name]
        args = ["render", ASSET, "--attention", attention, "--weights", str(tmp_path / name), "--out", str(tmp_path)]
        capsys.readouterr()  # what the server logged so far
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("attnviz render: ") and "Traceback" not in err and re.search(match, err), err
    FIGURES["checkpoints"] = f"{len(files)} corrupt or mismatched files: each refused with a message naming it"


class _Evil:
    """Unpickling this runs ``Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickles_that_would_run_code_are_refused(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way a checkpoint enters (a path typed in the app, a path in the library and the CLI, a cached ImageNet
    file) reads it without running its code: safetensors, or torch.load(weights_only=True)."""
    marker = tmp_path / "pwned"
    for name in ("evil.pt", "evil.pth", "evil.bin", "evil.safetensors", "evil.ckpt"):
        with open(tmp_path / name, "wb") as f:
            pickle.dump({"conv1.weight": _Evil(marker)}, f)
    torch.save({"w": _Evil(marker)}, tmp_path / "evil_zip.pt")  # torch's own zip format, same payload
    for name in ("evil.pt", "evil.pth", "evil.bin", "evil.safetensors", "evil_zip.pt"):
        with pytest.raises(ValueError, match=rf"checkpoint {name} .*holds pickled Python objects.* so it is refused"):
            load_checkpoint_file(tmp_path / name)
    for name in ("evil.ckpt", "evil_zip.pt"):
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            attnviz.analyze(ASSET, attention="se", weights=str(tmp_path / name), size=64, device="cpu")
    assert main(["render", ASSET, "--attention", "se", "--weights", str(tmp_path / "evil.pt"), "--out", "o"]) == 2
    with pytest.raises(AppError, match=r"checkpoint evil\.pt is a plain Python pickle .* so it is refused"):
        analyze_api(client, ASSET, "se", "resnet18", str(tmp_path / "evil.pt"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torchvision's ImageNet cache holds a pickle
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(imagenet_weights("resnet18").url).name
    cached.parent.mkdir(parents=True)
    torch.save({"conv1.weight": _Evil(marker)}, cached)
    with pytest.raises(Exception, match=r"Weights only load failed|weights_only"):
        attnviz.build_model("resnet18", weights="imagenet")
    assert not marker.exists()


def test_missing_imagenet_weights_are_reported_and_the_app_keeps_serving(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("ATTNVIZ_OFFLINE", "1")  # the app's default: it never downloads
    with pytest.raises(AppError, match=r"ImageNet weights for resnet18 are not in the cache \(.*resnet18-\w+\.pth\) "):
        analyze_api(client, ASSET, "cbam", "resnet18", "imagenet")  # the backbone, the block inserted untrained
    with pytest.raises(AppError, match=r"seresnet50.ra2_in1k: offline .* not cached .* run once without --offline"):
        analyze_api(client, ASSET, "se", "resnet18", "imagenet")  # SE's ImageNet network: timm's SE-ResNet-50
    check_ok(analyze_api(client, ASSET, "se"))
    check_ok(analyze_api(client, ASSET, "eca"))

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("ATTNVIZ_OFFLINE", "0")  # downloads allowed (the library's default) but no network
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(ValueError, match=r"could not be downloaded \(\[Errno -3\] Temporary failure in name"):
        attnviz.analyze(ASSET, attention="se", weights="imagenet", size=64, device="cpu")
