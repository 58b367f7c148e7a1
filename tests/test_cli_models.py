"""attnviz inspect and attnviz render --model on a user's own model file and a DataParallel-style checkpoint,
end to end through the command line (offline)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from attnviz.cli.main import main
from tests.images import ASSET

MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class ChannelAttention(nn.Module):
        def __init__(self, c, r=4):
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.max_pool = nn.AdaptiveMaxPool2d(1)
            self.fc = nn.Sequential(nn.Conv2d(c, c // r, 1, bias=False), nn.ReLU(), nn.Conv2d(c // r, c, 1, bias=False))
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            return self.sigmoid(self.fc(self.avg_pool(x)) + self.fc(self.max_pool(x)))


    class SpatialAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)

        def forward(self, x):
            avg = torch.mean(x, dim=1, keepdim=True)
            mx, _ = torch.max(x, dim=1, keepdim=True)
            return torch.sigmoid(self.conv1(torch.cat([avg, mx], dim=1)))


    class Net(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.ca = ChannelAttention(16)
            self.sa = SpatialAttention()
            self.head = nn.Linear(16, classes)

        def forward(self, x):
            x = self.features(x)
            x = x * self.ca(x)
            x = x * self.sa(x)
            return self.head(x.mean((2, 3)))


    def build():
        return Net()
    """
)


@pytest.fixture()
def user_model(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A model file, a DataParallel-style checkpoint ({"state_dict": {"module.…": …}}) and a labels file."""
    src = tmp_path / "my_net.py"
    src.write_text(MODEL_FILE)
    namespace: dict = {}
    exec(compile(MODEL_FILE, str(src), "exec"), namespace)
    torch.manual_seed(3)
    net = namespace["build"]()
    ckpt = tmp_path / "best.pt"
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    return src, ckpt, labels


def test_inspect_lists_sites_kinds_shapes_and_how(user_model, capsys: pytest.CaptureFixture[str]) -> None:
    src, ckpt, _ = user_model
    assert main(["inspect", "--model", f"{src}:build", "--weights", str(ckpt), "--size", "64", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "2 attention maps at 64 x 64" in out and "file best.pt" in out
    assert "ca.sigmoid  channel  (16,)     module" in out
    assert "sa          spatial  (32, 32)  module" in out


def test_render_user_model_end_to_end(user_model, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, ckpt, labels = user_model
    out = tmp_path / "out"
    args = ["render", str(ASSET), "--model", f"{src}:build", "--weights", str(ckpt), "--labels", str(labels)]
    assert main([*args, "--out", str(out), "--offline", "--device", "cpu", "--workers", "0"]) == 0
    assert "1 of 1 images rendered" in capsys.readouterr().out
    folder = next(out.iterdir())
    sidecar = json.loads((folder / "result.json").read_text())
    assert sidecar["model"]["weights_source"] == "file best.pt"
    assert {p["label"] for p in sidecar["predictions"]} == {"cat", "dog", "bird"}
    assert len(list((folder / "maps").glob("*.npy"))) == 2
    assert len(list((folder / "overlays").glob("*.png"))) >= 1


def test_pickled_whole_model_needs_trust_pickle(user_model, tmp_path: Path, capsys) -> None:
    src, _, _ = user_model
    whole = tmp_path / "whole.pt"
    args = ["inspect", "--model", f"{src}:build", "--size", "32", "--weights"]
    net = _importable_net(src)
    torch.save(net, whole)
    assert main([*args, str(whole)]) == 2
    err = capsys.readouterr().err
    assert "torch.save(model.state_dict()" in err and "--trust-pickle" in err
    assert main([*args, str(whole), "--trust-pickle"]) == 0
    assert "2 attention maps" in capsys.readouterr().out


def _importable_net(src: Path) -> torch.nn.Module:
    """The file's Net, imported as a module (so torch.save can pickle it by reference)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("my_net", src)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["my_net"] = module
    spec.loader.exec_module(module)
    return module.build()


def test_export_keeps_full_size_gates_and_says_how_each_map_was_found(tmp_path: Path) -> None:
    """A SimAM-style full-size gate (B, C, H, W) is shown as its channel mean; the export also holds the whole
    gate (``.full.npy``) and result.json says where each map came from."""
    from attnviz import analyze
    from attnviz.export import export_files

    src = tmp_path / "simam_net.py"
    src.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class SimAM(nn.Module):
                def forward(self, x):
                    d = (x - x.mean((2, 3), keepdim=True)) ** 2
                    e = d / (4 * (d.mean((2, 3), keepdim=True) + 1e-4)) + 0.5
                    return x * torch.sigmoid(e)

            def build():
                return nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), SimAM(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                     nn.Linear(6, 2))
            """
        )
    )
    result = analyze(ASSET, attention=None, arch=f"{src}:build", weights="random", device="cpu", size=40)
    (m,) = result.maps
    assert (m.name, m.kind, m.how) == ("1.sigmoid()", "spatial", "function") and m.raw is not None
    files = dict(export_files(result, {"cmap": "turbo", "alpha": 0.5, "norm": "map", "topk": None}))
    full = [n for n in files if n.endswith(".full.npy")]
    assert len(full) == 1
    import io

    import numpy as np

    assert np.load(io.BytesIO(files[full[0]])).shape == (6, *m.data.shape[1:])
    entry = json.loads(files["result.json"])["maps"][0]
    assert entry["found_by"] == "function" and "full-size gate" in entry["computed_as"]
