"""The first screen: the app opens on its ImageNet attention network when it is in the Hugging Face cache (here a
locally made checkpoint of the exact format and name, no network), and on the demo network, saying why, when not.

Run in subprocesses: huggingface_hub reads HF_HOME when it is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("timm")
ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, socket, sys
    def refuse(self, address, *args):
        raise OSError("network disabled by the test")
    socket.socket.connect = refuse  # no request may leave: the cache must be enough

    from attnviz.app import AppConfig, Handlers
    from attnviz.app.server import startup
    from attnviz.sources.demo import example

    config = startup(AppConfig(device="cpu", offline=True, size=64))
    out = {"model": config.model, "weights": config.weights, "note": config.note}
    if config.model != "resnet18":
        state, predictions, *_ = Handlers(config).run_analysis(str(example()), "none", config.model, config.weights)
        out["labels"] = sorted(predictions)
        out["kinds"] = sorted({m.kind for m in state.result.maps})
        out["source"] = state.result.model["weights_source"]
    print(json.dumps(out))
    """
)


def _child(hf_home: Path) -> dict:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_opens_on_the_cached_imagenet_network_with_its_labels(tmp_path: Path) -> None:
    from torchvision.models import ResNet50_Weights

    from attnviz.app.config import STARTUP_NETWORK
    from tests.test_timm_models import _made_state_dict, _place_in_hub_cache

    hub = tmp_path / "hf" / "hub"
    _place_in_hub_cache(hub, STARTUP_NETWORK, _made_state_dict(STARTUP_NETWORK, 3))
    out = _child(tmp_path / "hf")
    assert out["model"] == STARTUP_NETWORK and out["weights"] == "imagenet", out
    assert "pretrained on ImageNet" in out["note"] and out["source"] == f"timm {STARTUP_NETWORK} (ImageNet)"
    imagenet = set(ResNet50_Weights.DEFAULT.meta["categories"])
    assert len(out["labels"]) == 5 and set(out["labels"]) <= imagenet  # its labels: ImageNet's class names
    assert out["kinds"] == ["spatial"]  # GCNet's global-context softmax: a heatmap per block


def test_opens_on_the_demo_and_says_why_when_not_cached(tmp_path: Path) -> None:
    out = _child(tmp_path / "empty-hf")
    assert out["model"] == "resnet18" and out["weights"] == "demo", out
    assert "Offline" in out["note"] and "demo network" in out["note"] and "not in the Hugging Face cache" in out["note"]
