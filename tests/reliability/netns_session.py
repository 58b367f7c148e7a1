"""A session with the app as a user starts it, inside a network namespace that has only loopback.

    unshare -n python -m tests.reliability.netns_session WORKDIR

Brings ``lo`` up, starts ``python app.py --port N --offline`` (no --host: the default bind) with an audit hook
(``sitecustomize``) that records every socket bind, connect, send and name lookup of the app's process, makes
requests with gradio_client (a normal one, ImageNet weights that are not cached, uploads over the configured
limits, a normal one again), runs the CLI on an image over the pixel limit, stops the app with Ctrl-C, and prints
a JSON report as the last line of stdout. ``GRADIO_ANALYTICS_ENABLED``, ``HF_HUB_OFFLINE`` and
``ATTNVIZ_OFFLINE`` are removed from the app's environment: ``--offline`` and the app's own defaults are tested.
tests/reliability/test_safe_defaults.py makes the assertions.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 100_000  # ATTNVIZ_MAX_BYTES for this session
LIMIT_PIXELS = 50_000  # ATTNVIZ_MAX_PIXELS for this session

AUDIT_HOOK = """
import json, os, sys

_fd = os.open(os.environ["ATTNVIZ_AUDIT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
_SOCKET = {"socket.bind", "socket.connect", "socket.sendto", "socket.sendmsg"}


def _attnviz_audit(event, args):
    try:
        if event in _SOCKET:
            record = {"family": int(getattr(args[0], "family", -1)), "address": args[1]}
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
            record = {"host": args[0]}
        elif event == "http.client.connect":
            record = {"host": args[1], "port": args[2]}
        elif event == "urllib.Request":
            record = {"url": args[0]}
        else:
            return
        record.update(event=event, pid=os.getpid(), analytics=os.environ.get("GRADIO_ANALYTICS_ENABLED"),
                      hf_offline=os.environ.get("HF_HUB_OFFLINE"), attnviz_offline=os.environ.get("ATTNVIZ_OFFLINE"))
        os.write(_fd, (json.dumps(record, default=repr) + "\\n").encode())
    except Exception:
        pass


sys.addaudithook(_attnviz_audit)
"""


def loopback_up() -> None:
    """``ip link set lo up``, without needing iproute2."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, siocgifflags, req))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


def _outcome(call: Callable[[], Any]) -> dict[str, Any]:
    try:
        out = call()
    except Exception as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return {"ok": True, "predictions": len(out[0]["confidences"]), "status": out[7]}  # status (then the head)


def _wait_for(url: str, proc: subprocess.Popen) -> None:
    """Until ``url`` answers 200 (at most 3 minutes); fails early if the app exits."""
    for _ in range(600):
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        try:
            code = proc.wait(0.3)
        except subprocess.TimeoutExpired:
            continue
        raise RuntimeError(f"the app exited with {code} before serving")
    raise RuntimeError("the app did not serve within 3 minutes")


def _images(work: Path) -> dict[str, Path]:
    """A normal photo, one over the pixel limit (small file), one over the byte limit (few pixels)."""
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    images = {
        "normal.png": Image.open(ROOT / "assets" / "chelsea_cat.jpg").convert("RGB").resize((96, 64)),
        "too_many_pixels.png": Image.new("RGB", (300, 200)),  # 60000 px, a few hundred bytes
        "too_large.bmp": Image.fromarray(noise),  # 40000 px, 120054 bytes
    }
    paths = {}
    for name, im in images.items():
        im.save(work / name)
        paths[name.partition(".")[0]] = work / name
    return paths


def run(work: Path) -> dict[str, Any]:
    import httpx
    from gradio_client import Client, handle_file

    from tests.conftest import free_port

    loopback_up()
    report: dict[str, Any] = {"interfaces": sorted(name for _, name in socket.if_nameindex())}
    hook = work / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(AUDIT_HOOK)
    audit = work / "audit.jsonl"
    defaults = ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE", "ATTNVIZ_OFFLINE")  # the app must set these itself
    env = {k: v for k, v in os.environ.items() if k not in defaults}
    env.update(
        PYTHONPATH=os.pathsep.join([str(hook), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        ATTNVIZ_AUDIT_LOG=str(audit),
        TORCH_HOME=str(work / "torch"),  # empty: ImageNet weights are not cached
        HF_HOME=str(work / "hf"),
        GRADIO_TEMP_DIR=str(work / "gradio"),
        ATTNVIZ_MAX_BYTES=str(LIMIT_BYTES),
        ATTNVIZ_MAX_PIXELS=str(LIMIT_PIXELS),
        PYTHONUNBUFFERED="1",
    )
    images = _images(work)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = work / "app.log"
    with open(log, "w") as out:
        app = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port), "--device", "cpu", "--size", "64", "--offline"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(url, app)
        client = Client(url, verbose=False, download_files=False)

        def analyze(image: str, weights: str = "random") -> Callable[[], Any]:
            path = handle_file(str(images[image]))
            return lambda: client.predict(path, "cbam", "resnet18", weights, api_name="/analyze")

        report["normal"] = _outcome(analyze("normal"))
        report["imagenet_not_cached"] = _outcome(analyze("normal", "imagenet"))
        report["too_many_pixels"] = _outcome(analyze("too_many_pixels"))
        report["too_large_client"] = _outcome(analyze("too_large"))
        data = images["too_large"].read_bytes()
        raw = httpx.post(f"{url}gradio_api/upload", files=[("files", ("big.bmp", data, "image/bmp"))], timeout=60)
        report["too_large_server"] = {"status": raw.status_code, "text": raw.text, "bytes": len(data)}
        report["normal_again"] = _outcome(analyze("normal"))
        inputs = [str(images["too_many_pixels"]), str(images["too_large"])]
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "attnviz.cli.main",
                "render",
                *inputs,
                "--attention",
                "se",
                "--out",
                str(work / "cli"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        report["cli"] = {"code": cli.returncode, "stdout": cli.stdout, "stderr": cli.stderr[-3000:]}
    finally:
        app.send_signal(signal.SIGINT)
        try:
            app.wait(60)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
    report["app_exit"] = app.returncode
    report["app_log"] = log.read_text()[-6000:]
    report["audit"] = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
    return report


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1])), default=repr))
