"""The page: components and wiring only (the work is in :mod:`attnviz.app.handlers`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from .. import list_attentions
from ..render import COLORMAPS, NORM_MODES
from ..sources.demo import examples_dir
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
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Image", id="image-tab", elem_id="image-tab"), gr.Row():
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
                            info="demo: trained on scenes (resnet18, 8 categories); imagenet: the best ImageNet "
                            "network with that attention (se, eca, sk, mhsa), else the ImageNet backbone with the "
                            "block untrained; random; or type the path of your checkpoint (attnviz train)",
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
                        detail = DisplayImage(
                            label="Block detail", format="png", interactive=False, elem_id="block-detail"
                        )
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
                    channel_note = gr.Markdown(
                        "Select a bar (drag across it) to see that channel's activation in the large view.",
                        elem_id="channel-note",
                    )
                    with gr.Row():
                        png = gr.Button("Download PNG", elem_id="download-png")
                        zipf = gr.Button("Download all (zip)", elem_id="download-zip")
                        png_file = gr.DownloadButton("PNG", visible="hidden", elem_id="download-png-file")
                        zip_file = gr.DownloadButton("zip", visible="hidden", elem_id="download-zip-file")
                    with gr.Tabs(elem_id="panels"):
                        with gr.Tab("Checks", id="checks-tab", elem_id="checks-tab"):
                            gr.Markdown(
                                "Does the selected block change the decision (switched off), does its map agree "
                                "with Grad-CAM at the same block, does it depend on the trained weights (randomised "
                                "from the classifier down to the block)? Several forward passes: run on demand."
                            )
                            checks_run = gr.Button("Run checks", elem_id="run-checks")
                            ablation = DisplayImage(
                                label="What switching this block off does to the top-1 probability "
                                "(red: top-1 changes)",
                                format="png",
                                interactive=False,
                                elem_id="ablation-chart",
                            )
                            with gr.Row():
                                check_view = DisplayImage(
                                    label="The block's view", format="png", interactive=False, elem_id="check-view"
                                )
                                gradcam = DisplayImage(
                                    label="Grad-CAM at the block",
                                    format="png",
                                    interactive=False,
                                    elem_id="gradcam-view",
                                )
                                randomised = DisplayImage(
                                    label="Sanity: the view with randomised weights",
                                    format="png",
                                    interactive=False,
                                    elem_id="sanity-view",
                                )
                            check_scores = gr.Markdown("", elem_id="check-scores")
                            sanity = gr.Markdown("", elem_id="sanity-warning")
                        with gr.Tab("Compare", id="compare-tab", elem_id="compare-tab"):
                            with gr.Row():
                                compare_with = gr.Dropdown(
                                    h.compare_choices(),
                                    value=None,
                                    label="Compare with",
                                    elem_id="compare-with",
                                    info="the same image under another attention type (same network and weights) or "
                                    "another network (same attention type)",
                                )
                                compare_run = gr.Button("Compare", elem_id="run-compare")
                            pair = gr.Dropdown(label="Block or stage", choices=[], elem_id="compare-pair")
                            with gr.Row():
                                cmp_a = DisplayImage(
                                    label="A (shared scale)", format="png", interactive=False, elem_id="compare-a"
                                )
                                cmp_b = DisplayImage(
                                    label="B (shared scale)", format="png", interactive=False, elem_id="compare-b"
                                )
                                cmp_diff = DisplayImage(
                                    label="A − B (red: A more, blue: B more)",
                                    format="png",
                                    interactive=False,
                                    elem_id="compare-diff",
                                )
                            compare_text = gr.Markdown("", elem_id="compare-scores")
                        with gr.Tab("Live", id="live-tab", elem_id="live-tab"):
                            live = gr.Markdown(h.live_panel(), elem_id="live-panel")
                            live_refresh = gr.Button("Refresh", elem_id="live-refresh")
            with gr.Tab("Dataset", id="dataset-tab", elem_id="dataset-tab"):
                gr.Markdown(
                    "Open the output folder of a finished `attnviz stats` run (on this machine) to see its figures and "
                    "tables. No dataset runs from the page; folders are read only while the app is bound to 127.0.0.1."
                )
                with gr.Row():
                    folder = gr.Textbox(label="Stats folder", placeholder="/path/to/stats-out", elem_id="dataset-path")
                    folder_open = gr.Button("Open", elem_id="dataset-open")
                report_text = gr.Markdown("", elem_id="dataset-summary")
                figures = DisplayGallery(
                    label="Figures", columns=2, height="auto", object_fit="contain", elem_id="dataset-figures"
                )
                table_name = gr.Dropdown(label="Table", choices=[], elem_id="dataset-table-select")
                table = gr.Dataframe(label="Table (first rows; the CSV holds them all)", elem_id="dataset-table")
        display = [cmap, alpha, norm, topk, block, axis]
        outputs = [predictions, about, gallery, block, big, chart, detail, status]
        model_inputs = [image, attention, arch, weights, *display]
        private: dict[str, Any] = {"api_visibility": "private"}
        check_inputs = [state, cmap, alpha, norm, block]
        check_outputs = [ablation, check_view, gradcam, randomised, check_scores, sanity]
        compare_outputs = [cmp_a, cmp_b, cmp_diff, compare_text, pair]

        def panels(event: Any) -> Any:
            """After a request: the checks and compare panels follow the kept result, the live panel updates."""
            return event.then(h.panels, [*check_inputs, pair], [*check_outputs, *compare_outputs, live], **private)

        panels(run.click(h.run_analysis, model_inputs, [state, *outputs], api_name="analyze", concurrency_id="model"))
        for trigger in (attention, arch, weights):
            panels(trigger.input(h.run_analysis, model_inputs, [state, *outputs], concurrency_id="model", **private))
        for setting in display:
            panels(setting.input(h.render_outputs, [state, *display], outputs, **private))
        panels(big.select(h.pick_query, [state, *display], [state, *outputs], **private))
        chart.select(h.pick_channel, [state, cmap, alpha, block], [big, channel_note], **private)
        checks_run.click(h.run_checks, check_inputs, [state, *check_outputs], concurrency_id="model", **private).then(
            h.live_panel, state, live, **private
        )
        compare_run.click(
            h.run_compare,
            [state, compare_with, cmap, alpha],
            [state, *compare_outputs],
            concurrency_id="model",
            **private,
        ).then(h.live_panel, state, live, **private)
        pair.input(h.render_compare, [state, cmap, alpha, pair], compare_outputs, **private)
        live_refresh.click(h.live_panel, state, live, **private)
        folder_open.click(h.open_report, folder, [report_text, figures, table_name, table], **private)
        folder.submit(h.open_report, folder, [report_text, figures, table_name, table], **private)
        table_name.input(h.show_table, [folder, table_name], table, **private)
        png.click(h.make_png, [state, cmap, alpha, norm, block], png_file, **private).then(
            None, js=_click("download-png-file")
        )
        zipf.click(h.make_zip, [state, cmap, alpha, norm, topk], zip_file, **private).then(
            None, js=_click("download-zip-file")
        )
    return demo
