"""The app in a real browser (Debian's chromium driven by Playwright): upload, two attention types, overlays,
chart, PNG and zip downloads; and not one request leaves loopback."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image

from tests.images import ASSET

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# In CI (.ci/run installs chromium) a missing browser is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="Debian's chromium is not installed"
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _download(page, selector: str, name: str, tries: int = 12) -> bytes:
    """Click a download button until it gives the file ``name`` (exports follow the render); return its bytes."""
    for _ in range(tries):
        try:
            with page.expect_download(timeout=5000) as info:
                page.click(selector)
            if info.value.suggested_filename == name:
                return Path(info.value.path()).read_bytes()
            page.wait_for_timeout(500)
        except Exception:
            continue
    raise AssertionError(f"no download from {selector}")


def _wait_status(page, text: str) -> None:
    page.wait_for_function(
        "t => (document.querySelector('#status')?.innerText || '').includes(t)", arg=text, timeout=90_000
    )


def test_browser_end_to_end(app_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    hosts: set[str] = set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1600}).new_page()
        page.on("request", lambda r: hosts.add(urlparse(r.url).hostname or urlparse(r.url).scheme))
        page.goto(app_url)
        page.set_input_files("#image-input input[type=file]", ASSET)
        page.wait_for_selector("#image-input img", timeout=30_000)  # the upload preview

        page.click("#run-button")
        _wait_status(page, "resnet18 + cbam")
        page.wait_for_function(
            "[...document.querySelectorAll('#overlays img')].filter(e => e.complete && e.naturalWidth).length >= 8",
            timeout=30_000,
        )
        decoded = page.eval_on_selector_all("#overlays img", "els => els.map(e => e.complete && e.naturalWidth)")
        assert len(decoded) == 8 and all(w and w > 100 for w in decoded), decoded
        page.wait_for_selector("#channel-chart canvas, #channel-chart svg", timeout=30_000)
        box = page.locator("#channel-chart canvas, #channel-chart svg").first.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50

        png = Image.open(io.BytesIO(_download(page, "#download-png", "layer4.1_spatial.png")))
        assert png.size[0] > 200 and png.size[1] > 150

        # a second attention type: picking it re-runs the model without re-uploading
        page.click("#attention-select input")
        page.fill("#attention-select input", "eca")
        page.keyboard.press("Enter")
        _wait_status(page, "resnet18 + eca")
        page.wait_for_function("document.querySelectorAll('#overlays img').length === 8", timeout=30_000)
        page.wait_for_timeout(500)

        with zipfile.ZipFile(io.BytesIO(_download(page, "#download-zip", "attnviz_eca.zip"))) as zf:
            sidecar = json.loads(zf.read("result.json"))
            assert sidecar["model"]["attention"] == "eca"
            overlays = [n for n in zf.namelist() if n.startswith("overlays/")]
            assert len(overlays) == 8
            assert Image.open(io.BytesIO(zf.read(overlays[0]))).size[0] > 100
            assert len([n for n in zf.namelist() if n.endswith(".npy")]) >= 8
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000
    outside = {h for h in hosts if h not in ("127.0.0.1", "localhost", "data", "blob")}
    assert not outside, f"requests left loopback: {outside}"
