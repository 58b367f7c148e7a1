"""The page: components and wiring only (the work is in :mod:`attnviz.app.handlers`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from .. import list_attentions
from ..demo import examples_dir
from ..render import COLORMAPS, NORM_MODES
from .components import DisplayGallery, DisplayImage, UploadImage
from .config import AppConfig
from .handlers import AXES, EMPTY_CHART, NONE, WEIGHTS, Handlers

__all__ = ["TOPK_CHOICES", "build_demo"]

TOPK_CHOICES = ["16", "32", "64", "all"]
#: What each example shows, and whether the demo network's 8 categories include it (ImageNet networks know all).
EXAMPLE_LABELS = {
    "chelsea_cat.jpg": "cat (demo: mammal)",
    "rocket.jpg": "rocket (demo: vehicle)",
    "astronaut.jpg": "astronaut (not a demo category)",
    "coffee.jpg": "coffee (not a demo category)",
}


def _click(target: str) -> str:
    """Browser code that clicks the hidden download button ``target`` once its file is set: the file then
    downloads on the visible button's first click."""
    return f"() => {{ document.querySelector('#{target}')?.click(); }}"


def build_demo(config: AppConfig | None = None, handlers: Handlers | None = None) -> gr.Blocks:
    """The Gradio app for ``config`` (default: :meth:`AppConfig.from_env`)."""
    config = config or AppConfig.from_env()
    h = handlers or Handlers(config)
    examples = sorted(str(p) for p in examples_dir().glob("*.jpg"))
    ttl = config.cache_ttl_s  # Gradio's copies of uploads and outputs are deleted once this old (and at shutdown)
    with gr.Blocks(title="attnviz", delete_cache=(max(1, min(ttl, 600)), ttl)) as demo:
        gr.Markdown("# attnviz\nSee what the attention blocks inside a CNN compute: their own gates and softmaxes.")
        if config.note:
            gr.Markdown(config.note, elem_id="startup-note")
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
                    [*list_attentions(), NONE],
                    value=config.attention or NONE,
                    label="Attention type",
                    elem_id="attention-select",
                )
                with gr.Row():
                    arch = gr.Dropdown(
                        h.arch_choices(),
                        value=config.model,
                        label="Network",
                        elem_id="arch",
                        info="timm networks bring their own attention (the attention type is not used)",
                    )
                    weights = gr.Dropdown(
                        list(dict.fromkeys([*WEIGHTS, config.weights])),
                        value=config.weights,
                        label="Weights",
                        elem_id="weights",
                        allow_custom_value=True,
                        info="demo: trained on scenes (resnet18, 8 categories); imagenet: the best ImageNet network "
                        "with that attention (se, eca, sk, mhsa), else the ImageNet backbone with the block "
                        "untrained; random; or type the path of your checkpoint (attnviz train)",
                    )
                gr.Markdown(h.timm_status(), elem_id="timm-status")
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
                    axis = gr.Radio(AXES, value=AXES[0], label="Gate chart axis", elem_id="chart-axis")
                gr.Examples(
                    examples,
                    inputs=image,
                    example_labels=[EXAMPLE_LABELS.get(Path(p).name, Path(p).stem) for p in examples],
                    label="Examples (see attnviz/examples/ATTRIBUTION.md)",
                )
            with gr.Column(scale=2):
                status = gr.Markdown("Upload an image and press **Analyze**.", elem_id="status")
                predictions = gr.Label(num_top_classes=5, label="Predictions", elem_id="predictions")
                about = gr.Markdown("", elem_id="predictions-note")
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
                    y_lim=[0.0, 1.0],
                    label="Channel gate (0–1 axis unless 'fit to data')",
                    x_label_angle=-90,
                    elem_id="channel-chart",
                )
                with gr.Row():
                    png = gr.Button("Download PNG", elem_id="download-png")
                    zipf = gr.Button("Download all (zip)", elem_id="download-zip")
                    png_file = gr.DownloadButton("PNG", visible="hidden", elem_id="download-png-file")
                    zip_file = gr.DownloadButton("zip", visible="hidden", elem_id="download-zip-file")
        display = [cmap, alpha, norm, topk, block, axis]
        outputs = [predictions, about, gallery, block, big, chart, detail, status]
        model_inputs = [image, attention, arch, weights, *display]
        private: dict[str, Any] = {"api_visibility": "private"}
        run.click(h.run_analysis, model_inputs, [state, *outputs], api_name="analyze", concurrency_id="model")
        for trigger in (attention, arch, weights):
            trigger.input(h.run_analysis, model_inputs, [state, *outputs], concurrency_id="model", **private)
        for setting in display:
            setting.input(h.render_outputs, [state, *display], outputs, **private)
        big.select(h.pick_query, [state, *display], [state, *outputs], **private)
        png.click(h.make_png, [state, cmap, alpha, norm, block], png_file, **private).then(
            None, js=_click("download-png-file")
        )
        zipf.click(h.make_zip, [state, cmap, alpha, norm, topk], zip_file, **private).then(
            None, js=_click("download-zip-file")
        )
    return demo
