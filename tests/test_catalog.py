"""The listed ImageNet transformers (attnviz.sources.catalog.TIMM_TRANSFORMERS): real timm names with pretrained tags,
on the page's network list, and loaded offline through the page's own path from locally made files in the Hugging
Face cache (no download, every socket connect refused), each opening on its rollout or its last block's view.

The files are state dicts of each network's exact keys, shapes and dtypes with values no initialisation gives,
saved as ``model.safetensors`` at the hub cache's layout (``models--timm--NAME/snapshots/COMMIT``, ``refs/main``):
what ``hf download timm/NAME model.safetensors`` leaves there.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import Tensor

from attnviz.app import AppConfig, Handlers
from attnviz.app.choices import NONE, arch_choices
from attnviz.sources.catalog import TIMM_ATTENTION, TIMM_MODELS, TIMM_TRANSFORMERS
from tests.images import ASSET

timm = pytest.importorskip("timm")

#: the networks issue 20 lists, by what they are
ASKED = {
    "ViT-S/16": "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "DeiT-S": "deit_small_patch16_224.fb_in1k",
    "DINOv2 ViT-S/14 + registers": "vit_small_patch14_reg4_dinov2.lvd142m",
    "Swin-T": "swin_tiny_patch4_window7_224.ms_in1k",
    "CoAtNet": "coatnet_0_rw_224.sw_in1k",
    "MaxViT": "maxvit_tiny_tf_224.in1k",
}
#: the last block of the networks without rollout (Swin-T: 4 stages of 2, 2, 6, 2 blocks; CoAtNet-0: 2, 3, 5, 2;
#: MaxViT-T: 2, 2, 5, 2)
LAST_BLOCK = {
    ASKED["Swin-T"]: "layers.3.blocks.1.",
    ASKED["CoAtNet"]: "stages.3.blocks.1.",
    ASKED["MaxViT"]: "stages.3.blocks.1.",
}
ROLLS_OUT = {ASKED["ViT-S/16"], ASKED["DeiT-S"], ASKED["DINOv2 ViT-S/14 + registers"]}


def test_the_listed_transformers_are_timm_pretrained_names_on_the_page() -> None:
    from attnviz.sources.hub import timm_weights

    assert set(TIMM_TRANSFORMERS) == set(ASKED.values())
    pretrained = set(timm.list_pretrained())
    listed = dict((value, label) for label, value in arch_choices(AppConfig(offline=True)))
    for name in TIMM_TRANSFORMERS:
        assert name in pretrained and name in TIMM_MODELS and TIMM_ATTENTION[name], name
        w = timm_weights(name)
        assert w is not None and w.source == "hf-hub" and w.location == f"timm/{name}", w  # downloaded on demand
        assert listed[name] == f"{name} (timm, {TIMM_ATTENTION[name]})"


def _digest(sd: dict[str, Tensor]) -> dict[str, str]:
    """key -> sha256 of dtype, shape and bytes (the child process computes the same)."""
    return {
        k: hashlib.sha256(
            f"{v.dtype}{tuple(v.shape)}".encode() + v.reshape(-1).view(torch.uint8).numpy().tobytes()
        ).hexdigest()
        for k, v in sd.items()
    }


def _place(hub: Path, name: str, seed: int) -> dict[str, str]:
    """A state dict of ``name``'s exact keys, shapes and dtypes (values shifted away from any initialisation) at
    ``<hub>/models--timm--<name>/snapshots/<commit>/model.safetensors`` + ``refs/main``; returns its digest."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    sd = {
        k: (v + 0.02 * torch.randn(v.shape, generator=gen)).contiguous() if v.is_floating_point() else v.clone()
        for k, v in timm.create_model(name, pretrained=False).state_dict().items()
    }
    commit = hashlib.sha1(name.encode()).hexdigest()
    repo = hub / f"models--timm--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(sd, repo / "snapshots" / commit / "model.safetensors", metadata={"format": "pt"})
    return _digest(sd)


_CHILD = textwrap.dedent(
    """
    import hashlib, json, os, socket, sys
    from pathlib import Path
    attempts = []
    def refuse(self, address, *args):
        attempts.append(repr(address))
        raise OSError("network disabled by the test")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse

    import torch
    from attnviz.app import AppConfig, Handlers
    from attnviz.app.choices import NONE

    def digest(sd):
        return {k: hashlib.sha256(f"{v.dtype}{tuple(v.shape)}".encode()
                                  + v.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
                for k, v in sd.items()}

    config = json.loads(sys.argv[1])
    app = Handlers(AppConfig(device="cpu", offline=True, export_root=Path(config["exports"])))
    out = {}
    for name in config["names"]:
        entry = {}
        try:
            state, *page = app.run_analysis(config["image"], NONE, name, "imagenet")
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"
        else:
            views = state.views
            entry.update(
                digest=digest(app._model_of(state.result).state_dict()),
                opened=page[3].value,
                spatial=[v.key for v in views if v.spatial is not None],
                kinds=sorted({m.kind for m in state.result.maps}),
                status=page[7],
                predictions=len(page[0] or {}),
                rollout=app.rollout_controls(state)[0].visible,
            )
        out[name] = entry
    out["attempts"] = attempts
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_listed_transformers_load_offline_from_the_hub_cache_and_open_on_their_attention(tmp_path: Path) -> None:
    """All six through the page's own path (Handlers.run_analysis with ImageNet weights, offline): the loaded tensors
    are the cached file's, not one connection is tried; ViT, DeiT and DINOv2 open on their rollout, Swin on its last
    window map, the hybrids on their last stage's attention."""
    home = tmp_path / "hf"
    made = {name: _place(home / "hub", name, 10 + i) for i, name in enumerate(TIMM_TRANSFORMERS)}
    drop = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "ATTNVIZ_OFFLINE", "XDG_CACHE_HOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    root = Path(__file__).resolve().parents[1]
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    config = {
        "names": list(TIMM_TRANSFORMERS),
        "image": str(Path(ASSET).resolve()),
        "exports": str(tmp_path / "exports"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("attempts") == []
    for name, entry in out.items():
        assert "error" not in entry, (name, entry.get("error"))
        assert entry["digest"] == made[name], f"{name}: the loaded tensors are not the cached file's"
        assert f"weights: timm {name} (" in entry["status"] and "untrained" not in entry["status"], entry["status"]
        assert entry["rollout"] is (name in ROLLS_OUT)
        if name in ROLLS_OUT:  # the network's rollout, over its class token's attention
            assert entry["opened"] == "rollout" and entry["kinds"] == ["token"], entry
        else:  # the last attention block's view
            assert entry["opened"] == entry["spatial"][-1] != "rollout", entry
            assert entry["opened"].startswith(LAST_BLOCK[name]), entry
        if name == ASKED["Swin-T"]:
            assert entry["kinds"] == ["window"]
    assert out[ASKED["DINOv2 ViT-S/14 + registers"]]["predictions"] == 0  # features, no classifier
    assert all(out[n]["predictions"] == 5 for n in TIMM_TRANSFORMERS if n != ASKED["DINOv2 ViT-S/14 + registers"])


def test_a_transformer_whose_weights_are_missing_is_a_clear_message_and_the_page_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline with an empty Hugging Face cache: asking for ViT-S/16's ImageNet weights says what is missing, where it
    was looked for and how to get it; the same handlers then analyse with random weights."""
    import gradio as gr
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    app = Handlers(AppConfig(device="cpu", offline=True, export_root=tmp_path / "exports", size=64))
    name = ASKED["ViT-S/16"]
    with pytest.raises(gr.Error) as err:
        app.run_analysis(ASSET, NONE, name, "imagenet")
    msg = str(err.value)
    assert f"timm:{name}: offline (--offline), and its pretrained weights are not cached" in msg, msg
    assert f"model.safetensors of timm/{name}" in msg and str(tmp_path / "empty-hub") in msg, msg
    assert f"`hf download timm/{name} model.safetensors`" in msg and "random weights" in msg, msg
    state, *out = app.run_analysis(ASSET, NONE, ASKED["DeiT-S"], "random")
    assert len(state.result.maps) == 12 and out[3].value == "rollout"
