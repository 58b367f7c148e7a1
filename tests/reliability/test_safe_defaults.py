"""Safe defaults: loopback bind, no share link, no analytics and no outbound connection at all (checked in a network
namespace with only loopback), code-free checkpoint loading, sanitised export names, enforced upload limits."""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from attnviz.app import server as app
from attnviz.app.config import AppConfig
from attnviz.cli.main import main
from attnviz.pipeline.image import MAX_BYTES
from attnviz.render.naming import safe_name
from tests.images import photo
from tests.reliability import netns_session
from tests.reliability.conftest import FIGURES, RENDER

ROOT = Path(__file__).resolve().parents[2]
SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
HOSTILE_NAMES = [
    "../../etc/passwd",
    "/etc/cron.d/x",
    "..",
    ".",
    "",
    ".bashrc",
    "a/../../b",
    "..\\..\\windows\\system32",
    "name\x00.png",
    "new\nline",
    "名前",
    "x" * 300,
    "-rf",
]

#: Loaders that unpickle unless told ``weights_only=True`` (torchvision's ``Weights.get_state_dict`` goes to the hub's).
TORCH_LOADERS = (
    "torch.load",
    "torch.serialization.load",
    "load_state_dict_from_url",
    "torch.hub.load_state_dict_from_url",
)
#: Loaders that run code from the file by design.
CODE_LOADERS = ("torch.jit.load", "torch.hub.load", "torch.package.PackageImporter", "pickle.load", "pickle.loads")


def _unshare() -> list[str]:
    """The command prefix that runs a process in a new network namespace, as root or as a user."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    for flags in (["-n"], ["-r", "-n"]):
        if subprocess.run([unshare, *flags, "true"], capture_output=True).returncode == 0:
            return [unshare, *flags]
    pytest.skip("this machine does not allow new network namespaces (unshare -n, unshare -rn)")


def _loopback(address: Any) -> bool:
    if isinstance(address, str) and not re.fullmatch(r"[\d.:a-fA-F]+", address):
        return address == "localhost"  # a name (or an AF_UNIX path, checked by the caller)
    return ipaddress.ip_address(address).is_loopback


@pytest.mark.slow
def test_the_app_goes_nowhere_outside_loopback(tmp_path: Path) -> None:
    """``python app.py --offline`` in a network namespace with only ``lo``: it binds 127.0.0.1, answers, reports what it
    cannot do, enforces the configured limits, and never tries to reach another host (audit hook in the app)."""
    proc = subprocess.run(
        [*_unshare(), sys.executable, "-m", "tests.reliability.netns_session", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.splitlines()[-1])
    assert r["interfaces"] == ["lo"]
    for key in ("normal", "normal_again"):
        assert r[key]["ok"] and r[key]["predictions"] == 5, r[key]
    assert "ImageNet weights for resnet18 are not in the cache" in r["imagenet_not_cached"]["error"]
    assert "downloads are off" in r["imagenet_not_cached"]["error"]
    assert "300x200 = 0.06 megapixels, above the limit of 0.05 MP" in r["too_many_pixels"]["error"]
    assert f"exceeds the maximum file size of {netns_session.LIMIT_BYTES} bytes" in r["too_large_client"]["error"]
    server = r["too_large_server"]
    assert server["status"] == 413 and f"maximum allowed size of {netns_session.LIMIT_BYTES} bytes" in server["text"]
    assert r["cli"]["code"] == 1 and "above the limit of 0.05 MP" in r["cli"]["stderr"]
    assert "above the upload limit of 0.0954 MiB" in r["cli"]["stderr"]
    assert "gradio.live" not in r["app_log"] and "public URL" not in r["app_log"]  # no share link

    audit = r["audit"]
    binds = [e for e in audit if e["event"] == "socket.bind" and e["family"] in (2, 10)]  # AF_INET, AF_INET6
    assert binds and all(e["address"][0] == "127.0.0.1" for e in binds), binds
    sends = [e for e in audit if e["event"] in ("socket.connect", "socket.sendto", "socket.sendmsg")]
    outside = [e for e in sends if e["family"] in (2, 10) and not _loopback(e["address"][0])]
    outside += [e for e in audit if "host" in e and e["host"] is not None and not _loopback(e["host"])]
    outside += [
        e for e in audit if e["event"] == "urllib.Request" and not re.match(r"https?://(127\.|localhost)", e["url"])
    ]
    assert not outside, outside
    assert {(e["analytics"], e["hf_offline"], e["attnviz_offline"]) for e in audit} == {("False", "1", "1")}
    FIGURES["offline"] = (
        f"app.py in a namespace with only lo: 2 normal requests answered, 4 refusals with messages; {len(audit)} "
        f"socket events audited ({len(binds)} binds, all 127.0.0.1; {len(sends)} connects, all loopback); 0 outside"
    )


def test_launch_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """``app.main``: loopback unless --host says otherwise, no share link, upload limit, bounded queue and sessions."""
    calls: list[dict[str, Any]] = []

    def launch(self: gr.Blocks, **kwargs: Any) -> None:
        calls.append({**kwargs, "queue": self._queue.max_size})

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    app.main(["--port", "7999", "--device", "cpu", "--offline"])
    app.main(["--port", "7999", "--host", "0.0.0.0", "--device", "cpu", "--offline"])
    first, second = calls
    assert first["server_name"] == "127.0.0.1" and second["server_name"] == "0.0.0.0"
    for call in calls:
        assert call["share"] is False and call["max_file_size"] == MAX_BYTES
        assert call["queue"] == AppConfig.queue_size and call["state_session_capacity"] == AppConfig.max_sessions
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """(dotted name, call) of every call in ``tree``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            out.append((ast.unparse(node.func), node))
    return out


def _keyword(call: ast.Call, name: str) -> Any:
    """The literal value of keyword ``name`` in ``call`` (its source text if not a literal), or None."""
    for k in call.keywords:
        if k.arg == name:
            try:
                return ast.literal_eval(k.value)
            except ValueError:
                return ast.unparse(k.value)
    return None


def test_checkpoints_load_only_without_running_code() -> None:
    """Every loader in the product reads safetensors or uses ``torch.load(weights_only=True)``: no pickle, no
    torch.jit, no numpy pickles, no torch.hub load without weights_only."""
    sources = [ROOT / "app.py", *sorted((ROOT / "attnviz").rglob("*.py"))]
    problems = []
    opt_in = 0  # the one load of a pickle a user vouched for: read_checkpoint_object(trust_pickle=True), CLI only
    for path in sources:
        tree = ast.parse(path.read_text(), str(path))
        trusted = {
            id(call)
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef) and path.name == "checkpoint.py" and fn.name == "read_checkpoint_object"
            for _, call in _calls(fn)
            if _keyword(call, "weights_only") is False
        }
        opt_in += len(trusted)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib", "shelve") for n in names):
                    problems.append(f"{path.name}:{node.lineno}: imports {names}")
        for name, call in _calls(tree):
            where = f"{path.name}:{call.lineno}: {name}"
            if name in TORCH_LOADERS or name.endswith(".get_state_dict"):
                if _keyword(call, "weights_only") is not True and id(call) not in trusted:
                    problems.append(f"{where} without weights_only=True")
            elif name in CODE_LOADERS:
                problems.append(where)
            elif name in ("np.load", "numpy.load") and _keyword(call, "allow_pickle"):
                problems.append(f"{where} with allow_pickle")
    assert not problems, problems
    assert opt_in == 1
    assert "trust_pickle" not in (ROOT / "app.py").read_text()  # the web page never loads a pickle


def test_export_names_cannot_escape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Names that reach the file system (module paths, input file names) are sanitised: no traversal, no hidden
    files, no separators, at most 100 characters."""
    for name in HOSTILE_NAMES:
        safe = safe_name(name)
        assert SAFE.fullmatch(safe) and ".." not in safe, (name, safe)
        assert (tmp_path / safe).resolve().parent == tmp_path.resolve(), (name, safe)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    stems = [n for n in HOSTILE_NAMES if n and "/" not in n and "\x00" not in n and n not in (".", "..")]
    for stem in stems:
        photo().save(src / f"{stem[:200]}.jpg")
    assert main(["render", str(src), *RENDER, "--out", str(out)]) == 0
    capsys.readouterr()
    folders = list(out.iterdir())
    assert len(folders) == len(stems) and all(SAFE.fullmatch(f.name) for f in folders), [f.name for f in folders]
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
