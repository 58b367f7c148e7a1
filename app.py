"""attnviz web app: upload an image, pick an attention type, see each block's own weights.

    python app.py [--host 127.0.0.1] [--port 7860] [--device cpu|cuda] [--model SPEC --weights W --labels L] [--offline]

Thin wiring over the library: handlers call attnviz.analyze (model) and attnviz.render/views/export (drawing).
Changing a display setting re-renders the kept Result; only the image, attention, arch or weights re-run the model.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, no checks
# The server never downloads: weights come from local caches and files (ATTNVIZ_OFFLINE=0 allows downloads).
os.environ.setdefault("ATTNVIZ_OFFLINE", "1")
if os.environ["ATTNVIZ_OFFLINE"] == "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

import attnviz
from attnviz.analyze import AnalyzeError, Result, analyze, default_device
from attnviz.export import export_zip, safe_name, spatial_views
from attnviz.image import MAX_BYTES, ImageError
from attnviz.render import (
    COLORMAPS,
    NORM_MODES,
    apply_colormap,
    branch_chart_png,
    channel_stats,
    channel_table,
    display_size,
    encode_jpeg,
    encode_png,
    figure_png,
    matrix_png,
    overlay,
    pairwise_query,
    tile_maps,
)
from attnviz.views import View, build_views

ASSETS = Path(__file__).resolve().parent / "attnviz" / "examples"
EXPORT_ROOT = Path(tempfile.gettempdir()) / "attnviz-exports"
KEEP_EXPORTS = 64  # export folders kept on disk (oldest removed first) ...
EXPORT_MAX_BYTES = int(os.environ.get("ATTNVIZ_EXPORT_MAX_BYTES", 1 << 30))  # ... and at most this many bytes in all
KEEP_NEWEST = 4  # the newest exports stay whatever their size: their files may still be on their way to a browser
CACHE_TTL_S = int(os.environ.get("ATTNVIZ_CACHE_TTL", 3600))  # Gradio's copies of uploads and outputs live this long
QUEUE_SIZE = int(os.environ.get("ATTNVIZ_QUEUE_SIZE", 32))  # requests waiting; one more gets "busy, try again"
MAX_SESSIONS = int(os.environ.get("ATTNVIZ_MAX_SESSIONS", 64))  # sessions whose last result is kept in memory
GALLERY_SIDE = 800  # longest side of a gallery overlay (thumbnails; exports keep the image's own size)
VIEW_SIDE = 1600  # longest side of the large view
NONE = "none (plain ResNet)"
WEIGHTS = ["demo", "imagenet", "random"]
DEFAULTS = {"arch": "resnet18", "attention": "cbam", "weights": "demo"}  # app.py --model/--attention/--weights
SERVED: dict[str, Any] = {}  # app.py --model SPEC [--labels L]: the network served first, and its load options
# A checkpoint path typed into the page is read from the server's disk: allowed only while the app is bound to
# loopback (the person typing is at this machine); launch() turns it off for any other address.
TYPED_PATHS = {"allowed": True}
TOPK_CHOICES = ["16", "32", "64", "all"]
DEVICE = os.environ.get("ATTNVIZ_DEVICE") or None
SIZE = int(os.environ.get("ATTNVIZ_SIZE") or 0) or None  # short side the model sees (default: the weights')
EMPTY_CHART = pd.DataFrame({"channel": pd.Series(dtype=str), "weight": pd.Series(dtype=float)})


class UploadImage(gr.Image):
    """``gr.Image`` whose uploaded file reaches attnviz's decoder untouched.

    Gradio's own preprocessing opens the file with PIL first, so a non-image, an empty file or a decompression
    bomb would fail there with an unclear message; attnviz.decode_image gives each a clear one.
    """

    def get_block_name(self) -> str:
        return "image"  # the same browser component as gr.Image

    def preprocess(self, payload: Any) -> str | None:
        if payload is None:
            return None
        if getattr(payload, "path", None) is None:  # e.g. a data: URL: let Gradio decode it
            return super().preprocess(payload)  # type: ignore[return-value]
        return str(payload.path)


_EXPORT_LOCK = threading.Lock()
# The last zips made, by (result, display settings): choosing another block changes the PNG, not the zip.
_ZIPS: OrderedDict[tuple, tuple[weakref.ref, Path]] = OrderedDict()
_ZIPS_KEPT = 16


def _tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _cache_file(cache_dir: str, data: bytes, suffix: str) -> str:
    """Write ``data`` into Gradio's cache under a folder named by its hash, as Gradio does; return the path."""
    folder = Path(cache_dir) / hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"image{suffix}"
    if not path.exists():
        tmp = folder / f".{uuid.uuid4().hex}{suffix}"
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    return str(path)


class DisplayGallery(gr.Gallery):
    """``gr.Gallery`` that sends numpy images as JPEG (quality 90, no chroma subsampling): Gradio's own PNG
    encoding (zlib level 6) of a page of overlays costs several forward passes; JPEG about a twentieth of that."""

    def get_block_name(self) -> str:
        return "gallery"

    def postprocess(self, value: Any) -> Any:
        if value:
            value = [
                (_cache_file(self.GRADIO_CACHE, encode_jpeg(item[0]), ".jpg"), item[1])
                if isinstance(item, tuple) and isinstance(item[0], np.ndarray)
                else item
                for item in value
            ]
        return super().postprocess(value)


class DisplayImage(gr.Image):
    """``gr.Image`` that sends numpy images as PNG at zlib level 1 (lossless; about 4x faster than Gradio's 6)."""

    def get_block_name(self) -> str:
        return "image"

    def postprocess(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = _cache_file(self.GRADIO_CACHE, encode_png(value, compress_level=1), ".png")
        return super().postprocess(value)


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` at ``size`` (width, height), or itself when it has that size."""
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _export_dir() -> Path:
    """A fresh folder for one export; older ones are removed first (oldest first), so that at most
    ``KEEP_EXPORTS`` folders and about ``EXPORT_MAX_BYTES`` stay on disk (the ``KEEP_NEWEST`` newest always stay)."""
    with _EXPORT_LOCK:
        EXPORT_ROOT.mkdir(parents=True, exist_ok=True)
        dated = []
        for p in EXPORT_ROOT.iterdir():
            try:
                dated.append((p.stat().st_mtime, p, _tree_bytes(p)))
            except FileNotFoundError:  # removed meanwhile (another process sharing the folder)
                continue
        dated.sort(key=lambda t: t[0])
        total = sum(size for _, _, size in dated)
        while dated and (len(dated) >= KEEP_EXPORTS or total > EXPORT_MAX_BYTES) and len(dated) > KEEP_NEWEST:
            _, p, size = dated.pop(0)
            shutil.rmtree(p, ignore_errors=True)
            total -= size
        d = EXPORT_ROOT / uuid.uuid4().hex
        d.mkdir()
        return d


def _topk(value: str | int | None) -> int | None:
    return None if value in (None, "all") else int(value)


def _status(result: Result, extra: list[str]) -> str:
    t = result.timings
    timing = " · ".join(f"{k} {v:.0f} ms" for k, v in t.items())
    lines = []
    if result.warning:
        lines.append(f"⚠️ **{result.warning}**")
    m = result.model
    lines.append(
        f"{m['arch']} + {m['attention'] or 'no attention'} · weights: {m['weights_source']} · "
        f"device: {result.settings['device']} · input {result.input_size[0]}×{result.input_size[1]}"
    )
    lines.append(timing)
    if m.get("measured"):
        lines.append(measured_line(m["measured"]))
    lines += [f"note: {n}" for n in result.notes + extra]
    return "\n\n".join(lines)


def measured_line(summary: dict) -> str:
    """The checkpoint's held-out scores from its model card: accuracy and, per stage, how often the map's peak
    falls on the object (pointing game), so users see which stages localise and which do not."""
    stages = ", ".join(f"{k.replace('stage', 'stage ')} {100 * v:.0f} %" for k, v in summary["stage_pointing"].items())
    text = f"measured on held-out scenes: top-1 {100 * summary['accuracy']:.0f} %"
    if stages:
        text += f" · map peak on the object (pointing game): {stages}"
        if summary.get("average_pointing") is not None:
            text += f"; stage average {100 * summary['average_pointing']:.0f} %"
        if summary.get("centre_prior") is not None:
            text += f" (centre prior {100 * summary['centre_prior']:.0f} %)"
    return text


def _gray_tiles(tile01: np.ndarray, min_side: int = 384) -> np.ndarray:
    """A 0..1 tiling as uint8, enlarged by whole pixels (nearest) so small feature grids stay visible."""
    k = max(1, min_side // max(tile01.shape))
    return apply_colormap(tile01, "gray").repeat(k, 0).repeat(k, 1)


def _detail(view: View, channel: View | None, topk: int | None) -> tuple[Any, Any]:
    """(bar chart DataFrame, detail image) for the selected view; ``channel`` is its block's channel gate, if any."""
    chart = EMPTY_CHART if channel is None else channel_table(channel.data, topk)
    detail = None
    if view.kind == "branch":
        detail = branch_chart_png(view.data, view.title, topk=topk)
    elif view.kind == "channel_pairwise":
        detail = matrix_png(view.data, view.title)
    elif view.kind == "memory":
        detail = _gray_tiles(tile_maps(view.data))
    elif view.kind == "pairwise" and view.grid is not None and view.cell is not None:
        heads = pairwise_query(view.data, view.grid, view.cell)
        detail = _gray_tiles(tile_maps(heads, cols=len(heads)))
    if isinstance(detail, bytes):  # a chart rendered to PNG
        detail = np.asarray(Image.open(io.BytesIO(detail)).convert("RGB"))
    return chart, detail


def render_outputs(
    state: dict | None, cmap: str, alpha: float, norm: str, topk: str, block: str | None
) -> tuple[Any, ...]:
    """Everything drawn from a kept Result; no model runs here."""
    if not state or "result" not in state:
        raise gr.Error("Run an analysis first: upload an image and press Analyze.")
    t0 = time.perf_counter()
    result: Result = state["result"]
    query = state.get("query")
    k = _topk(topk)
    views = build_views(result, query)
    # maps are drawn at display sizes (exports keep the full size); the thumbnails come from the large view
    large = _resized(result.image, display_size(result.image.size, VIEW_SIDE))
    small = _resized(large, display_size(result.image.size, GALLERY_SIDE))
    view_image = np.asarray(large)
    thumb_image = view_image if small is large else np.asarray(small)
    shown, normed, _ = spatial_views(views, norm)
    gallery = [(overlay(thumb_image, m01, cmap, alpha), v.title) for v, m01 in zip(shown, normed, strict=True)]
    keys = [v.key for v in views]
    if block not in keys:
        block = shown[-1].key if shown else (keys[-1] if keys else None)
    choices = [(v.title, v.key) for v in views]
    extra: list[str] = []
    big, chart, detail = None, EMPTY_CHART, None
    if block is not None:
        view = views[keys.index(block)]
        channel = next((v for v in views if v.block == view.block and v.kind == "channel"), None)
        chart, detail = _detail(view, channel, k)
        if channel is not None:
            extra.append(f"{channel.block} channel gate: {channel_stats(channel.data)['note']}")
        if view in shown:
            big = overlay(view_image, normed[shown.index(view)], cmap, alpha)
    result.timings["render"] = (time.perf_counter() - t0) * 1e3
    predictions = {label: p for label, p in result.predictions}
    return (
        predictions,
        gallery,
        gr.Dropdown(choices=choices, value=block),
        big,
        chart,
        detail,
        _status(result, extra),
    )


def make_exports(
    state: dict | None, cmap: str, alpha: float, norm: str, topk: str, block: str | None
) -> tuple[str | None, str | None]:
    """Files for the download buttons: the selected overlay with a colorbar (PNG) and everything (zip).

    Chained after each render, so the page updates first and the files follow."""
    if not state or "result" not in state:
        return None, None
    result: Result = state["result"]
    settings = {"cmap": cmap, "alpha": alpha, "norm": norm, "topk": _topk(topk), "query": state.get("query")}
    out = _export_dir()
    views = build_views(result, settings["query"])
    shown, normed, ranges = spatial_views(views, norm)
    png_path = None
    match = [i for i, v in enumerate(shown) if v.key == block] or ([len(shown) - 1] if shown else [])
    if match:
        i = match[0]
        v = shown[i]
        png_path = out / f"{safe_name(v.block)}_{v.kind}.png"
        png_path.write_bytes(
            figure_png(np.asarray(result.image), normed[i], cmap, alpha, v.title, ranges[i], v.spatial_label)
        )
    key = (id(result), cmap, alpha, norm, settings["topk"], settings["query"])
    with _EXPORT_LOCK:
        ref, zip_path = _ZIPS.get(key, (None, None))
        if ref is None or ref() is not result or zip_path is None or not zip_path.is_file():
            zip_path = None
        else:
            os.utime(zip_path.parent)  # in use again: the folder is removed last
    if zip_path is None:  # ~3 s of figures for ResNet-50 + CBAM: only when the zip's content changes
        zip_path = export_zip(result, settings, out / f"attnviz_{safe_name(result.model['attention'] or 'plain')}.zip")
        with _EXPORT_LOCK:
            _ZIPS[key] = (weakref.ref(result), zip_path)
            while len(_ZIPS) > _ZIPS_KEPT:
                _ZIPS.popitem(last=False)
    return (str(png_path) if png_path else None), str(zip_path)


def arch_choices() -> list[tuple[str, str]]:
    """Network dropdown entries: the one served with ``--model`` first, attnviz's ResNets, timm's ImageNet
    attention networks. The page can ask for these and nothing else (a user's model file is never loaded from it)."""
    from attnviz.timm_models import TIMM_ATTENTION, TIMM_MODELS

    listed = [(a, a) for a in attnviz.ARCHS] + [(f"{n} (timm, {TIMM_ATTENTION[n]})", n) for n in TIMM_MODELS]
    served = SERVED.get("spec")
    if served and served not in dict((v, k) for k, v in listed):
        listed.insert(0, (f"{served} (served)", served))
    elif served:
        listed.sort(key=lambda choice: choice[1] != served)
    return listed


def timm_status() -> str:
    """Which timm ImageNet networks can load here, and why the others cannot (no download is attempted)."""
    from attnviz.timm_models import TIMM_MODELS, timm_availability

    lines = []
    for name in TIMM_MODELS:
        ok, reason = timm_availability(name)
        lines.append(f"- {name}: {'available' if ok else 'unavailable'} ({reason})")
    return "<details><summary>timm ImageNet attention networks</summary>\n\n" + "\n".join(lines) + "\n</details>"


def run_analysis(
    image: str | None,
    attention: str,
    arch: str = "resnet18",
    weights: str = "demo",
    cmap: str = "turbo",
    alpha: float = 0.5,
    norm: str = "map",
    topk: str = "32",
    block: str | None = None,
) -> tuple[Any, ...]:
    """The `analyze` endpoint: (image path, attention type, ...) -> state and every output."""
    if image is None:
        raise gr.Error("Upload an image first (drag and drop, paste, or pick an example).")
    if arch not in {value for _, value in arch_choices()}:
        raise gr.Error(f"unknown network {arch!r}: pick one from the list (app.py --model SPEC serves another)")
    options = {k: v for k, v in SERVED.items() if k != "spec"} if arch == SERVED.get("spec") else {}
    if weights not in (*WEIGHTS, DEFAULTS["weights"]) and not TYPED_PATHS["allowed"]:
        raise gr.Error(
            "Checkpoint paths typed into the page are accepted only when the app is bound to 127.0.0.1; "
            "start it with --weights PATH to serve a checkpoint to others."
        )
    try:
        result = analyze(
            image,
            attention=None if attention in (None, "", NONE) else attention,
            arch=arch,
            weights=weights,
            device=DEVICE,
            size=SIZE,
            **options,
        )
    except ImageError as e:
        raise gr.Error(f"Cannot use this image: {e}") from None
    except (ValueError, AnalyzeError) as e:
        raise gr.Error(str(e)) from None
    state = {"result": result, "query": None}
    return (state, *render_outputs(state, cmap, alpha, norm, topk, block))


def pick_query(
    state: dict | None, cmap: str, alpha: float, norm: str, topk: str, block: str | None, evt: gr.SelectData
) -> tuple[Any, ...]:
    """A click on the large view picks the query position for pairwise maps."""
    if not state or "result" not in state:
        raise gr.Error("Run an analysis first.")
    w, h = display_size(state["result"].image.size, VIEW_SIDE)  # the large view's size: clicks come in its pixels
    x, y = evt.index
    state = {**state, "query": (min(max(x / w, 0.0), 1.0), min(max(y / h, 0.0), 1.0))}
    return (state, *render_outputs(state, cmap, alpha, norm, topk, block))


def build_demo() -> gr.Blocks:
    """The Gradio app: wiring only."""
    attentions = attnviz.list_attentions()
    examples = sorted(str(p) for p in ASSETS.glob("*.jpg"))
    # Gradio's copies of uploads and outputs are deleted once CACHE_TTL_S old (and all of them at shutdown).
    with gr.Blocks(title="attnviz", delete_cache=(max(1, min(CACHE_TTL_S, 600)), CACHE_TTL_S)) as demo:
        gr.Markdown("# attnviz\nSee what the attention blocks inside a ResNet compute: their own gates and softmaxes.")
        state = gr.State()
        with gr.Row():
            with gr.Column(scale=1):
                image = UploadImage(
                    type="filepath",
                    image_mode=None,
                    label="Image",
                    elem_id="image-input",
                    sources=["upload", "clipboard", "webcam"],
                )
                attention = gr.Dropdown(
                    [*attentions, NONE],
                    value=DEFAULTS["attention"] or NONE,
                    label="Attention type",
                    elem_id="attention-select",
                )
                with gr.Row():
                    arch = gr.Dropdown(
                        arch_choices(),
                        value=DEFAULTS["arch"],
                        label="Architecture",
                        elem_id="arch",
                        info="timm networks bring their own attention (the attention type is not used)",
                    )
                    weights = gr.Dropdown(
                        list(dict.fromkeys([*WEIGHTS, DEFAULTS["weights"]])),
                        value=DEFAULTS["weights"],
                        label="Weights",
                        elem_id="weights",
                        allow_custom_value=True,
                        info="demo: trained on scenes (resnet18, every type); imagenet: backbone only, attention "
                        "untrained; random; or type the path of your checkpoint (attnviz train)",
                    )
                gr.Markdown(timm_status(), elem_id="timm-status")
                run = gr.Button("Analyze", variant="primary", elem_id="run-button")
                with gr.Accordion("Display", open=True):
                    cmap = gr.Dropdown(list(COLORMAPS), value="turbo", label="Colormap", elem_id="cmap")
                    alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Overlay alpha", elem_id="alpha")
                    norm = gr.Radio(
                        list(NORM_MODES),
                        value="map",
                        label="Normalisation",
                        elem_id="norm",
                        info="; ".join(f"{k}: {v}" for k, v in NORM_MODES.items()),
                    )
                    topk = gr.Radio(TOPK_CHOICES, value="32", label="Channels in charts", elem_id="topk")
                gr.Examples(examples, inputs=image, label="Examples (see attnviz/examples/ATTRIBUTION.md)")
            with gr.Column(scale=2):
                status = gr.Markdown("Upload an image and press **Analyze**.", elem_id="status")
                predictions = gr.Label(num_top_classes=5, label="Predictions", elem_id="predictions")
                gallery = DisplayGallery(
                    label="Overlays, by stage and block",
                    columns=4,
                    height="auto",
                    format="png",
                    object_fit="contain",
                    elem_id="overlays",
                )
                block = gr.Dropdown(label="Block", choices=[], elem_id="block-select")
                with gr.Row():
                    big = DisplayImage(
                        label="Selected block (click to pick the query of pairwise maps)",
                        format="png",
                        interactive=False,
                        elem_id="block-view",
                    )
                    detail = DisplayImage(label="Block detail", format="png", interactive=False, elem_id="block-detail")
                chart = gr.BarPlot(
                    EMPTY_CHART,
                    x="channel",
                    y="weight",
                    sort="-y",
                    label="Channel weights",
                    x_label_angle=-90,
                    elem_id="channel-chart",
                )
                with gr.Row():
                    png = gr.DownloadButton("Download PNG", elem_id="download-png")
                    zipf = gr.DownloadButton("Download all (zip)", elem_id="download-zip")
        display = [cmap, alpha, norm, topk, block]
        outputs = [predictions, gallery, block, big, chart, detail, status]
        model_inputs = [image, attention, arch, weights, *display]
        private: dict[str, Any] = {"api_visibility": "private"}
        events = [run.click(run_analysis, model_inputs, [state, *outputs], api_name="analyze", concurrency_id="model")]
        for trigger in (attention, arch, weights):
            events.append(
                trigger.input(run_analysis, model_inputs, [state, *outputs], concurrency_id="model", **private)
            )
        for setting in display:
            events.append(setting.input(render_outputs, [state, *display], outputs, **private))
        events.append(big.select(pick_query, [state, *display], [state, *outputs], **private))
        for event in events:  # the page updates first; the download files follow
            event.success(make_exports, [state, *display], [png, zipf], **private)
    return demo


def launch(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    queue_size: int | None = None,
    max_sessions: int | None = None,
    **kwargs: Any,
) -> gr.Blocks:
    """Queue and launch with the safe defaults: loopback unless told otherwise, no share link, upload limit,
    a bounded queue (``queue_size`` waiting requests, default ``QUEUE_SIZE``; one more is refused at once and the
    page says the app is busy), at most ``max_sessions`` sessions' results kept (default ``MAX_SESSIONS``), errors
    shown to the user."""
    demo.queue(max_size=queue_size or QUEUE_SIZE, default_concurrency_limit=1)
    TYPED_PATHS["allowed"] = host in ("127.0.0.1", "localhost", "::1")
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        show_error=True,
        max_file_size=MAX_BYTES,
        state_session_capacity=max_sessions or MAX_SESSIONS,
        footer_links=["gradio", "settings"],
        **kwargs,
    )
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="app.py", description="attnviz web app")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: CUDA when available")
    parser.add_argument("--size", type=int, default=None, help="short side the model sees (default: the weights')")
    parser.add_argument(
        "--model",
        "--arch",
        dest="model",
        default=DEFAULTS["arch"],
        help="network shown first: resnet18..resnet101, timm:NAME, torchvision:NAME, path/file.py:fn, pkg.mod:fn",
    )
    parser.add_argument("--labels", default=None, help="class names of --model: one per line, or JSON")
    parser.add_argument("--offline", action="store_true", help="never download (default unless ATTNVIZ_OFFLINE=0)")
    parser.add_argument("--attention", default=DEFAULTS["attention"], help="attention type shown first (default cbam)")
    parser.add_argument("--weights", default=DEFAULTS["weights"], help="demo | imagenet | random | a checkpoint path")
    args = parser.parse_args(argv)
    DEFAULTS.update(arch=args.model, attention=args.attention, weights=args.weights)
    SERVED.update(spec=args.model, **({"labels": args.labels} if args.labels else {}))
    if args.offline:
        SERVED["offline"] = True
    global DEVICE, SIZE
    DEVICE = args.device or DEVICE or default_device()
    SIZE = args.size or SIZE
    launch(build_demo(), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
