"""Cold start and steady-state latency of the served app, through gradio_client.

    python bench/serve.py [--quick] [--requests 50] [--attention cbam] [--arch resnet18] [--device cpu]

Starts `python app.py` on a free loopback port and measures: seconds until the page is served (GET / answers
200), until the first /analyze request is answered (the model is built then), and the latency of the next
``--requests`` requests (upload + analyze + render + encode + the answer; median and p95); ``--download``
adds the client's download of every image of each answer (one after another, unlike a browser).
Prints markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import header, med, p95, table

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "assets" / "chelsea_cat.jpg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_page(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no page at {url} after {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--attention", default="cbam")
    ap.add_argument("--arch", default="resnet18", help="the page's default is resnet18")
    ap.add_argument("--weights", default="random", help="random | imagenet | demo (default random: always there)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ap.add_argument("--download", action="store_true", help="the client also downloads every image of each answer")
    ap.add_argument("--quick", action="store_true", help="10 requests")
    args = ap.parse_args()
    if args.quick:
        args.requests = min(args.requests, 10)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from gradio_client import Client, handle_file

    header(
        "Cold start and latency of the served app (bench/serve.py)",
        device,
        f"{args.arch} + {args.attention}, image {IMAGE.name}, {args.weights} weights; requests one after another; "
        + ("the client downloads every image" if args.download else "answers only (a browser fetches the images)")
        + "; wall time",
        clocked=False,
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, str(REPO / "app.py"), "--port", str(port), "--device", device]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_page(url, proc)
        t_page = time.perf_counter() - t0
        client = Client(url, verbose=False, download_files=str(Path(tempfile.mkdtemp())) if args.download else False)
        client.predict(handle_file(str(IMAGE)), args.attention, args.arch, args.weights, api_name="/analyze")
        t_first = time.perf_counter() - t0
        lat = []
        for _ in range(args.requests):
            t1 = time.perf_counter()
            client.predict(handle_file(str(IMAGE)), args.attention, args.arch, args.weights, api_name="/analyze")
            lat.append((time.perf_counter() - t1) * 1e3)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    table(
        ["arch", "attention", "page served s", "first answer s", "requests", "median ms", "p95 ms"],
        [
            [
                args.arch,
                args.attention,
                f"{t_page:.1f}",
                f"{t_first:.1f}",
                str(len(lat)),
                f"{med(lat):.0f}",
                f"{p95(lat):.0f}",
            ]
        ],
    )


if __name__ == "__main__":
    main()
