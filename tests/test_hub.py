"""Pretrained weights on demand, offline: timm's download through the real huggingface_hub client against a loopback
hub, and torchvision's Weights API reading ``$TORCH_HOME/hub/checkpoints``. Nothing is mocked; every other socket
connection is refused and recorded.

The loopback hub serves locally made files in the hub's URL layout (``/{repo_id}/resolve/{revision}/{filename}``,
HEAD and GET, with the ``ETag``, ``X-Repo-Commit`` and ``Content-Length`` headers huggingface_hub reads), found
through ``HF_ENDPOINT``. huggingface_hub reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is
imported, so the timm side runs in fresh interpreters.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import torch
from torch import Tensor, nn

from attnviz import load_model
from attnviz.sources.hub import OfflineError

COMMIT = hashlib.sha1(b"attnviz loopback hub").hexdigest()  # 40 hex digits, like a git commit
NAME = "test_efficientnet.r160_in1k"  # a tiny timm network with squeeze-and-excitation gates
UNCACHED = "test_resnet.r160_in1k"
MISSING = "test_convnext.r160_in1k"  # not on the loopback hub


class _Hub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[tuple[str, str], bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.files = files
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()


class _HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Hub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        with self.server.lock:
            self.server.requests.append((self.command, self.path))
        m = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", urlparse(self.path).path)
        data = None
        if m and m["rev"] in ("main", COMMIT):
            data = self.server.files.get((m["repo"], m["file"]))
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if m else "RepoNotFound")
            self.send_header("X-Error-Message", "not on the loopback hub")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if rng:
            start = int(rng[1])
        part = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(part)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if body:
            self.wfile.write(part)


@pytest.fixture
def hub() -> Iterator[_Hub]:
    server = _Hub({})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _digest(sd: dict[str, Tensor]) -> dict[str, str]:
    return {
        k: hashlib.sha256(v.detach().contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()
        for k, v in sd.items()
    }


_CHILD = textwrap.dedent(
    """
    import hashlib, json, os, socket, sys
    port = int(os.environ["HF_ENDPOINT"].rsplit(":", 1)[1])
    attempts = []
    real_connect = socket.socket.connect
    def guarded(self, address, *args):  # the loopback hub only; anything else is refused and recorded
        if isinstance(address, tuple) and address[:2] == ("127.0.0.1", port):
            return real_connect(self, address, *args)
        attempts.append(repr(address))
        raise OSError("network disabled by the test")
    socket.socket.connect = guarded
    socket.socket.connect_ex = guarded

    import torch
    from attnviz import load_model
    from attnviz.sources.hub import OfflineError

    def digest(sd):
        return {k: hashlib.sha256(v.detach().contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest()
                for k, v in sd.items()}

    out = []
    for step in json.loads(sys.argv[1]):
        os.environ.update(step.get("env", {}))
        entry = {"spec": step["spec"]}
        try:
            m = load_model(step["spec"], offline=step.get("offline"), progress=False)
        except OfflineError as e:
            entry["offline_error"] = str(e)
        except ValueError as e:
            entry["error"] = str(e)
        else:
            entry.update(digest=digest(m.state_dict()), source=m.weights_source, meta=m.weights_meta,
                         labels=m.labels_source, untrained=m.untrained_attention)
        out.append(entry)
    print(json.dumps({"steps": out, "attempts": attempts}))
    """
)


def _child(tmp_path: Path, port: int, steps: list[dict[str, Any]], env: dict[str, str] | None = None) -> dict:
    drop = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "ATTNVIZ_OFFLINE", "XDG_CACHE_HOME", "TORCH_HOME")
    full = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    full.update(
        HF_HOME=str(tmp_path / "hf"),
        HF_ENDPOINT=f"http://127.0.0.1:{port}",
        TORCH_HOME=str(tmp_path / "torch"),
        OMP_NUM_THREADS="1",
        **(env or {}),
    )
    root = Path(__file__).resolve().parents[1]
    full["PYTHONPATH"] = os.pathsep.join([str(root), full.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(steps)],
        env=full,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_timm_download_through_the_loopback_hub_then_cache_then_offline(hub: _Hub, tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    pytest.importorskip("huggingface_hub")
    from safetensors.torch import save

    torch.manual_seed(7)
    made = {
        k: (v + 0.1 * torch.randn_like(v)) if v.is_floating_point() else v + 3
        for k, v in timm.create_model(NAME, pretrained=False).state_dict().items()
    }
    hub.files[(f"timm/{NAME}", "model.safetensors")] = save(made, metadata={"format": "pt"})
    port = hub.server_address[1]

    # 1. online: the first load downloads through huggingface_hub; the second reads the cache with no request;
    #    a file the hub does not have is a clear error
    spec, missing = f"timm:{NAME}", f"timm:{MISSING}"
    out = _child(tmp_path, port, [{"spec": spec}, {"spec": spec}, {"spec": missing}])
    assert out["attempts"] == []  # no other host was contacted
    first, second, absent = out["steps"]
    assert "error" not in first and "offline_error" not in first, first
    assert first["digest"] == _digest(made) and second["digest"] == _digest(made)
    assert first["source"] == f"timm {NAME} (ImageNet)" and first["untrained"] is False
    assert first["meta"]["categories"][281] == "tabby" and first["meta"]["input_size"] == [160, 160]
    assert first["meta"]["resize_size"] == [168] and first["meta"]["crop_pct"] == 0.95
    weights_path = f"/timm/{NAME}/resolve/main/model.safetensors"
    ours = [r for r in hub.requests if NAME in r[1]]
    assert ours == [("HEAD", weights_path), ("GET", weights_path)], hub.requests  # one download; then the cache
    cached = tmp_path / "hf" / "hub" / f"models--timm--{NAME}" / "snapshots" / COMMIT / "model.safetensors"
    assert cached.is_file()
    assert "could not be" in absent.get("error", "") or "failed" in absent.get("error", ""), absent
    assert f"timm:{MISSING}:" in absent["error"] and "check the network and run again" in absent["error"], absent[
        "error"
    ]
    assert any(MISSING in path for _, path in hub.requests)
    assert not any(path.startswith("/api/") for _, path in hub.requests), hub.requests  # no other hub calls

    # 2. offline three ways: the cached network loads, the uncached one is refused at once; no request at all
    hub.requests.clear()
    steps = [
        {"spec": spec, "offline": True},
        {"spec": f"timm:{UNCACHED}", "offline": True},
        {"spec": f"timm:{UNCACHED}", "env": {"ATTNVIZ_OFFLINE": "1"}},
    ]
    out = _child(tmp_path, port, steps)
    out_env = _child(tmp_path, port, [{"spec": spec}, {"spec": f"timm:{UNCACHED}"}], env={"HF_HUB_OFFLINE": "1"})
    assert hub.requests == [] and out["attempts"] == [] and out_env["attempts"] == []
    assert out["steps"][0]["digest"] == _digest(made) and out_env["steps"][0]["digest"] == _digest(made)
    folder = tmp_path / "hf" / "hub" / f"models--timm--{UNCACHED}"
    for entry, why in (
        (out["steps"][1], "--offline"),
        (out["steps"][2], "ATTNVIZ_OFFLINE=1"),
        (out_env["steps"][1], "HF_HUB_OFFLINE=1"),
    ):
        msg = entry.get("offline_error", "")
        assert msg.startswith(f"timm:{UNCACHED}: offline ({why}), and its pretrained weights are not cached"), entry
        assert (
            f"missing: model.safetensors of timm/{UNCACHED}, looked for in the Hugging Face cache folder {folder}"
            in msg
        )
        assert "run once without --offline" in msg and f"`hf download timm/{UNCACHED} model.safetensors`" in msg


def _no_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def refuse(self: socket.socket, address: Any, *args: Any) -> None:
        attempts.append(repr(address))
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_torchvision_weights_api_reads_the_torch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("ATTNVIZ_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    attempts = _no_connections(monkeypatch)
    weights = tvm.get_model_weights("squeezenet1_1").DEFAULT
    torch.manual_seed(3)
    source = tvm.get_model("squeezenet1_1", num_classes=1000).eval()
    with torch.no_grad():
        for t in source.state_dict().values():
            t.add_(0.05)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    name = Path(urlparse(weights.url).path).name
    buf = io.BytesIO()
    torch.save(source.state_dict(), buf)
    (folder / name).write_bytes(buf.getvalue())

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for offline in (None, True):
        model = load_model("torchvision:squeezenet1_1", offline=offline)
        with torch.inference_mode():
            assert torch.equal(model(x), source(x))
        assert model.weights_source == f"torchvision {weights}" == "torchvision SqueezeNet1_1_Weights.IMAGENET1K_V1"
        meta = model.weights_meta
        assert meta["categories"] == list(weights.meta["categories"]) and meta["resize_size"] == [256]
        assert model.untrained_attention is False and model.labels_source == f"torchvision {weights}"

    # not cached and offline: refused at once, naming the file, where it belongs and how to get it
    other = tvm.get_model_weights("shufflenet_v2_x0_5").DEFAULT
    missing = folder / Path(urlparse(other.url).path).name
    for offline, env, why in ((True, {}, "--offline"), (None, {"ATTNVIZ_OFFLINE": "1"}, "ATTNVIZ_OFFLINE=1")):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(OfflineError) as err:
            load_model("torchvision:shufflenet_v2_x0_5", offline=offline)
        msg = str(err.value)
        assert msg.startswith(
            f"torchvision {other}: offline ({why}), and its weights are not cached (missing: {missing})"
        )
        assert "run once without --offline" in msg and other.url in msg
    assert attempts == []


def test_a_cached_file_that_is_a_code_running_pickle_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchvision's builders read with weights_only=False; load_model reads the file with weights_only=True first."""
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    attempts = _no_connections(monkeypatch)
    weights = tvm.get_model_weights("squeezenet1_1").DEFAULT
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(nn.Linear(2, 2), folder / Path(urlparse(weights.url).path).name)  # a pickled module, not a dict
    with pytest.raises(ValueError, match=r"could not be read .*squeezenet1_1-\w+\.pth: .*Weights only load failed"):
        load_model("torchvision:squeezenet1_1", offline=True)
    assert attempts == []
