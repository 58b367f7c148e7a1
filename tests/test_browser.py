"""The app in a real browser (Debian's chromium driven by Playwright): upload, two attention types, overlays,
the gate chart on a 0..1 axis, the demo network's label, PNG and zip downloads on the first click (made only when
asked); the Checks, Compare and Live tabs; and not one request leaves loopback."""

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


def _download(page, selector: str, name: str) -> bytes:
    """Click a download button once: the file ``name`` must come (it is made on that click); return its bytes."""
    with page.expect_download(timeout=60_000) as info:
        page.click(selector)
    assert info.value.suggested_filename == name
    return Path(info.value.path()).read_bytes()


def _wait_status(page, text: str) -> None:
    page.wait_for_function(
        "t => (document.querySelector('#status')?.innerText || '').includes(t)", arg=text, timeout=90_000
    )


def _image_shown(page, selector: str) -> dict:
    """Wait for the image in ``selector`` to be decoded; return its bounding box."""
    page.wait_for_function(
        "s => { const e = document.querySelector(s + ' img'); return e && e.complete && e.naturalWidth > 100; }",
        arg=selector,
        timeout=60_000,
    )
    box = page.locator(f"{selector} img").first.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 30, (selector, box)
    return box


def _text_has(page, selector: str, text: str) -> str:
    page.wait_for_function(
        "([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)", arg=[selector, text], timeout=60_000
    )
    return page.inner_text(selector)


def _checks_compare_live(page) -> None:
    """The Checks tab (ablation chart, the block's view, Grad-CAM with its scores, the sanity view and its line),
    the Compare tab (A, B and their difference) and the Live tab (0 hooks after a request), on the shown result."""
    import re

    page.click("#checks-tab-button")
    page.click("#run-checks")
    _image_shown(page, "#ablation-chart")
    for view in ("#check-view", "#gradcam-view", "#sanity-view"):
        _image_shown(page, view)
    scores = _text_has(page, "#check-scores", "Grad-CAM")
    cam = re.search(r"Grad-CAM \(.*?\)\s*\|?\s*([+-]\d\.\d\d)\s*\|?\s*(\d\.\d\d)", scores)
    rand = re.search(r"randomised weights\s*\|?\s*([+-]\d\.\d\d)\s*\|?\s*(\d\.\d\d)", scores)
    assert cam and rand, scores
    sanity = page.inner_text("#sanity-warning")
    if float(rand.group(1)) > 0.8:  # the warning state follows the randomised map's rank correlation
        assert "⚠️" in sanity and "hardly changes" in sanity, sanity
    else:
        assert "Sanity check passed" in sanity and "⚠️" not in sanity, sanity

    page.click("#compare-tab-button")
    page.click("#compare-with input")
    page.fill("#compare-with input", "attention type: se")
    page.keyboard.press("Enter")
    page.click("#run-compare")
    for view in ("#compare-a", "#compare-b", "#compare-diff"):
        _image_shown(page, view)
    _text_has(page, "#compare-scores", "resnet18 · se · demo")

    page.click("#live-tab-button")
    live = _text_has(page, "#live-panel", "hooks installed now")
    assert "hooks installed now: 0" in live and "forward" in live and "render" in live, live
    assert "model cache:" in live and "no GPU" in live, live


def test_browser_end_to_end(app_server: tuple, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    app_url, demo = app_server
    store = demo.handlers.store
    hosts: set[str] = set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1600}).new_page()
        page.on("request", lambda r: hosts.add(urlparse(r.url).hostname or urlparse(r.url).scheme))
        page.goto(app_url)
        page.set_input_files("#image-input input[type=file]", ASSET)
        page.wait_for_selector("#image-input img", timeout=30_000)  # the upload preview

        assert not page.is_visible("#channel-chart")  # no network shown yet: no empty gate chart taking space
        assert "cat (demo: mammal)" in page.inner_text("#image-tab")  # examples labelled for the demo network
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
        # the demo network says what it knows, next to its predictions
        note = page.inner_text("#predictions-note")
        assert "demo network: 8 categories" in note and "vehicle" in note
        # the gate chart's axis runs 0..1 (vega draws its tick labels as text)
        ticks = page.eval_on_selector_all("#channel-chart text", "els => els.map(e => e.textContent)")
        assert "1.0" in ticks and "0.0" in ticks, ticks
        assert store.count() == 0  # nothing exported until a download button is clicked
        # selecting a bar (Gradio's bar plots select by dragging across bars) shows that channel in the large view
        page.locator("#channel-chart").scroll_into_view_if_needed()
        chart = page.locator("#channel-chart canvas, #channel-chart svg").first.bounding_box()
        y = chart["y"] + chart["height"] * 0.6
        page.mouse.move(chart["x"] + chart["width"] * 0.15, y)
        page.mouse.down()
        page.mouse.move(chart["x"] + chart["width"] * 0.35, y, steps=8)
        page.mouse.up()
        page.wait_for_function(
            "(document.querySelector('#channel-note')?.innerText || '').startsWith('channel ')", timeout=30_000
        )
        assert "gate " in page.inner_text("#channel-note")

        png = Image.open(io.BytesIO(_download(page, "#download-png", "layer4.1_spatial.png")))  # the first click
        assert png.size[0] > 200 and png.size[1] > 150 and store.count() == 1

        # a second attention type: picking it re-runs the model without re-uploading
        page.click("#attention-select input")
        page.fill("#attention-select input", "eca")
        page.keyboard.press("Enter")
        _wait_status(page, "resnet18 + eca")
        page.wait_for_function("document.querySelectorAll('#overlays img').length === 8", timeout=30_000)
        page.wait_for_timeout(500)

        assert store.count() == 1  # the new analysis made no export
        with zipfile.ZipFile(io.BytesIO(_download(page, "#download-zip", "attnviz_eca.zip"))) as zf:  # first click
            sidecar = json.loads(zf.read("result.json"))
            assert sidecar["model"]["attention"] == "eca"
            overlays = [n for n in zf.namelist() if n.startswith("overlays/")]
            assert len(overlays) == 8
            assert Image.open(io.BytesIO(zf.read(overlays[0]))).size[0] > 100
            assert len([n for n in zf.namelist() if n.endswith(".npy")]) >= 8
        _checks_compare_live(page)
        page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
        browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000
    outside = {h for h in hosts if h not in ("127.0.0.1", "localhost", "data", "blob")}
    assert not outside, f"requests left loopback: {outside}"


def test_browser_transformer_head_and_rollout(app_server: tuple) -> None:
    """A listed transformer (DeiT-S, random weights: no download) picked from the network list: the rollout opens as
    the last overlay; a block's Head choice shows one head; switching rollout off drops its overlay, and head
    fusion by max (every head kept: one more forward) brings it back; not one request leaves loopback."""
    from playwright.sync_api import sync_playwright

    app_url, _ = app_server
    hosts: set[str] = set()
    count = "n => document.querySelectorAll('#overlays img').length === n"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1600}).new_page()
        page.on("request", lambda r: hosts.add(urlparse(r.url).hostname or urlparse(r.url).scheme))
        page.goto(app_url)
        page.set_input_files("#image-input input[type=file]", ASSET)
        page.wait_for_selector("#image-input img", timeout=30_000)
        for menu, value, status in (("#weights", "random", "weights: random"), ("#arch", "deit_small", "deit_small")):
            page.click(f"{menu} input")
            page.fill(f"{menu} input", value)
            page.keyboard.press("Enter")
            _wait_status(page, status)
        page.wait_for_function(count, arg=13, timeout=120_000)  # 12 blocks and the rollout
        page.wait_for_selector("#rollout-controls", state="visible", timeout=30_000)
        assert not page.is_visible("#head-select")  # the rollout is selected: head-fused
        assert page.input_value("#block-select input").startswith("model · attention rollout")  # opened on it

        page.click("#block-select input")
        page.fill("#block-select input", "blocks.11")
        page.keyboard.press("Enter")
        page.wait_for_selector("#head-select", state="visible", timeout=60_000)
        page.click("#head-select input")
        page.fill("#head-select input", "head 2")
        page.keyboard.press("Enter")
        _wait_status(page, "head 2")

        page.click("#rollout-on input")  # off: the rollout's overlay goes
        page.wait_for_function(count, arg=12, timeout=60_000)
        page.click("#rollout-on input")
        page.wait_for_function(count, arg=13, timeout=60_000)
        page.click("#rollout-fusion label:has-text('max')")
        _text_has(page, "#overlays", "head max")
        browser.close()
    outside = {h for h in hosts if h not in ("127.0.0.1", "localhost", "data", "blob")}
    assert not outside, f"requests left loopback: {outside}"
