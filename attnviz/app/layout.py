"""The page: components and wiring only (the work is in :mod:`attnviz.app.handlers`). One builder per tab, each
returning its components; :func:`build_demo` lays the tabs out and wires them to the handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import gradio as gr

from ..render import COLORMAPS, NORM_MODES
from ..sources.catalog import TIMM_ATTENTION
from ..sources.spec import Weights
from .choices import (
    AXES,
    CHANNEL_VIEWS,
    DISCARD_MAX,
    FROM_NETWORK,
    FUSION_CHOICES,
    NONE,
    TOPK_CHOICES,
    WEIGHTS,
    arch_choices,
    attention_choices,
    brings_attention,
    compare_choices,
    example_labels,
    example_paths,
    own_attention,
    timm_status,
)
from .components import DisplayGallery, DisplayImage, DisplayPhoto, UploadImage
from .config import AppConfig
from .handlers import EMPTY_CHART, Handlers

__all__ = ["TOPK_CHOICES", "build_demo"]

T = TypeVar("T")
PRIVATE: dict[str, Any] = {"api_visibility": "private"}  # UI-only events: no public API endpoint


def _click(target: str) -> str:
    """Browser code that clicks the hidden download button ``target`` once its file is set: the file then
    downloads on the visible button's first click."""
    return f"() => {{ document.querySelector('#{target}')?.click(); }}"


def _image(image_id: str, label: str) -> DisplayImage:
    """An output image (PNG, not editable): charts and matrices."""
    return DisplayImage(label=label, format="png", interactive=False, elem_id=image_id)


def _photo(image_id: str, label: str) -> DisplayPhoto:
    """An output photo overlay (JPEG, not editable): a view over the user's image."""
    return DisplayPhoto(label=label, format="jpeg", interactive=False, elem_id=image_id)


@dataclass
class ImageTab:
    """The Image tab's inputs (image, network, display settings) and outputs (overlays, charts, status)."""

    image: gr.Image
    attention: gr.Dropdown
    arch: gr.Dropdown
    weights: gr.Dropdown
    run: gr.Button
    cmap: gr.Dropdown
    alpha: gr.Slider
    norm: gr.Radio
    topk: gr.Radio
    axis: gr.Radio
    examples: gr.Dataset
    status: gr.Markdown
    predictions: gr.Label
    about: gr.Markdown
    gallery: gr.Gallery
    block: gr.Dropdown
    head: gr.Dropdown
    big: gr.Image
    detail: gr.Image
    chart: gr.BarPlot
    channel_note: gr.Markdown
    png: gr.Button
    zipf: gr.Button
    png_file: gr.DownloadButton
    zip_file: gr.DownloadButton
    rollout_row: gr.Row
    rollout_on: gr.Checkbox
    fusion: gr.Radio
    discard: gr.Slider
    channel_view: gr.Radio  # shown for a network with channel gates (Handlers.channel_view_control)

    @property
    def rollout(self) -> list[Any]:
        """The rollout controls, in the order :meth:`Handlers.pick_rollout` takes them."""
        return [self.rollout_on, self.fusion, self.discard]

    @property
    def display(self) -> list[Any]:
        """The display settings, in the order the handlers take them."""
        return [self.cmap, self.alpha, self.norm, self.topk, self.block, self.axis]

    @property
    def outputs(self) -> list[Any]:
        """What :meth:`Handlers.draw` returns into."""
        outs = [self.predictions, self.about, self.gallery, self.block, self.big, self.chart, self.detail, self.status]
        return [*outs, self.head]


def _attention_menu(config: AppConfig) -> gr.Dropdown:
    """The attention dropdown: attnviz's types, or what the network shown first brings (timm's, a served one)."""
    if brings_attention(config.model):
        choices, value = attention_choices(own_attention(TIMM_ATTENTION.get(config.model))), FROM_NETWORK
    else:
        choices, value = attention_choices(), config.attention or NONE
    return gr.Dropdown(choices, value=value, label="Attention type", elem_id="attention-select")


def _network_inputs(config: AppConfig) -> tuple[gr.Dropdown, gr.Dropdown, gr.Dropdown]:
    """(attention, network, weights) dropdowns."""
    attention = _attention_menu(config)
    with gr.Row():
        arch = gr.Dropdown(
            arch_choices(config),
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
    return attention, arch, weights


def _display_inputs() -> tuple[Any, ...]:
    """(colormap, alpha, normalisation, channels in charts, chart axis)."""
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
    return cmap, alpha, norm, topk, axis


def _rollout_inputs() -> tuple[gr.Row, gr.Checkbox, gr.Radio, gr.Slider]:
    """The rollout controls (Abnar & Zuidema 2020), shown for a network whose token maps roll out."""
    with gr.Row(visible=False, elem_id="rollout-controls") as row:
        on = gr.Checkbox(
            value=True,
            label="Attention rollout",
            elem_id="rollout-on",
            info="the network-level view: attention multiplied through the blocks (Abnar & Zuidema 2020)",
        )
        fusion = gr.Radio(
            FUSION_CHOICES,
            value="mean",
            label="Head fusion",
            elem_id="rollout-fusion",
            info="max/min need every head: the network runs once more keeping them",
        )
        discard = gr.Slider(
            0.0, DISCARD_MAX, value=0.0, step=0.05, label="Discard ratio", elem_id="rollout-discard",
            info="the lowest weights of each block dropped (the class token's kept)",
        )  # fmt: skip
    return row, on, fusion, discard


def image_tab(config: AppConfig, panels: Callable[[], T]) -> tuple[ImageTab, T]:
    """The Image tab: the inputs on the left, what the network's attention blocks computed on the right, with
    ``panels()`` (the Checks, Compare and Live tabs) under them."""
    with gr.Row():
        with gr.Column(scale=1):
            image = UploadImage(
                type="filepath",
                image_mode=None,
                label="Image",
                elem_id="image-input",
                sources=["upload", "clipboard", "webcam"],
            )
            attention, arch, weights = _network_inputs(config)
            gr.Markdown(timm_status(config), elem_id="timm-status")
            run = gr.Button("Analyze", variant="primary", elem_id="run-button")
            cmap, alpha, norm, topk, axis = _display_inputs()
            paths = example_paths()
            examples = gr.Examples(
                paths,
                inputs=image,
                example_labels=example_labels(paths, demo=config.weights == Weights.DEMO.value),
                label="Examples (see assets/ATTRIBUTION.md)",
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
            with gr.Row():
                block = gr.Dropdown(label="Block", choices=[], elem_id="block-select", scale=3)
                head = gr.Dropdown(  # token and window attention: shown for a transformer block's view
                    label="Head", choices=[("mean", "mean")], value="mean", elem_id="head-select", visible=False
                )
            rollout_row, rollout_on, fusion, discard = _rollout_inputs()
            channel_view = gr.Radio(  # channel gates: the gate effect (default) or the former view
                CHANNEL_VIEWS, value=CHANNEL_VIEWS[0], label="Channel view", elem_id="channel-view", visible=False,
                info="channel gates: what the gates change (gate effect) or the gate-weighted mean activation",
            )  # fmt: skip
            with gr.Row():
                big = _photo("block-view", "Selected block (click to pick the query of pairwise and token maps)")
                detail = _image("block-detail", "Block detail")
            chart = gr.BarPlot(  # hidden until a network with channel gates is shown
                EMPTY_CHART,
                x="channel",
                y="weight",
                sort="-y",
                y_lim=[0.0, 1.0],
                label="Channel gate (0–1 axis unless 'fit to data')",
                x_label_angle=-90,
                elem_id="channel-chart",
                visible=False,
            )
            channel_note = gr.Markdown(
                "Select a bar (drag across it) to see that channel's activation in the large view.",
                elem_id="channel-note",
                visible=False,
            )
            with gr.Row():
                png = gr.Button("Download PNG", elem_id="download-png")
                zipf = gr.Button("Download all (zip)", elem_id="download-zip")
                png_file = gr.DownloadButton("PNG", visible="hidden", elem_id="download-png-file")
                zip_file = gr.DownloadButton("zip", visible="hidden", elem_id="download-zip-file")
            below = panels()
    tab = ImageTab(
        image, attention, arch, weights, run, cmap, alpha, norm, topk, axis, examples.dataset, status, predictions,
        about, gallery, block, head, big, detail, chart, channel_note, png, zipf, png_file, zip_file,
        rollout_row, rollout_on, fusion, discard, channel_view,
    )  # fmt: skip
    return tab, below


@dataclass
class ChecksTab:
    """The Checks tab: the button and what the checks show of the selected block."""

    run: gr.Button
    faithful: gr.Checkbox  # also the faithfulness curves (slower: the run's extra input)
    outputs: list[Any]  # ablation chart, block view, Grad-CAM, randomised view, scores, sanity line


def checks_tab() -> ChecksTab:
    """Ablation, Grad-CAM and the randomisation check of the selected block, run on demand."""
    gr.Markdown(
        "Does the selected block change the decision (switched off), does its map agree with Grad-CAM at the same "
        "block, does it depend on the trained weights (randomised from the classifier down to the block)? Several "
        "forward passes: run on demand."
    )
    with gr.Row():
        run = gr.Button("Run checks", elem_id="run-checks")
        faithful = gr.Checkbox(
            False,
            label="Faithfulness curves (deletion, insertion, ROAD: a batch of 60 images per map; slow on a CPU)",
            elem_id="checks-faithful",
        )
    ablation = _image(
        "ablation-chart",
        "What switching this block off does to the top-1 probability (red: top-1 changes); below: the block's "
        "faithfulness curves (deletion, insertion, ROAD) against Grad-CAM, a centre prior and a random map",
    )
    with gr.Row():
        view = _photo("check-view", "The block's view")
        gradcam = _photo("gradcam-view", "Grad-CAM at the block (token attention: gradient rollout)")
        randomised = _photo("sanity-view", "Sanity: the view with randomised weights")
    scores = gr.Markdown("", elem_id="check-scores")
    sanity = gr.Markdown("", elem_id="sanity-warning")
    return ChecksTab(run, faithful, [ablation, view, gradcam, randomised, scores, sanity])


@dataclass
class CompareTab:
    """The Compare tab: what to compare with, the button, the pair shown and the drawings."""

    other: gr.Dropdown
    run: gr.Button
    pair: gr.Dropdown
    outputs: list[Any]  # A, B, A - B, scores text, pair


def compare_tab(config: AppConfig) -> CompareTab:
    """The shown result against another attention type or network, on one scale per pair."""
    with gr.Row():
        other = gr.Dropdown(
            compare_choices(config),
            value=None,
            label="Compare with",
            elem_id="compare-with",
            info="the same image under another attention type (same network and weights) or another network (same "
            "attention type)",
        )
        run = gr.Button("Compare", elem_id="run-compare")
    pair = gr.Dropdown(label="Block or stage", choices=[], elem_id="compare-pair")
    with gr.Row():
        a = _photo("compare-a", "A (shared scale)")
        b = _photo("compare-b", "B (shared scale)")
        diff = _photo("compare-diff", "A − B (red: A more, blue: B more)")
    text = gr.Markdown("", elem_id="compare-scores")
    return CompareTab(other, run, pair, [a, b, diff, text, pair])


@dataclass
class DatasetTab:
    """The Dataset tab: a finished ``attnviz stats`` folder's figures and tables."""

    folder: gr.Textbox
    open: gr.Button
    table_name: gr.Dropdown
    table: gr.Dataframe
    outputs: list[Any]  # summary, figures, table choice, table


def dataset_tab() -> DatasetTab:
    """Open a stats folder on this machine (only while bound to loopback)."""
    gr.Markdown(
        "Open the output folder of a finished `attnviz stats` run (on this machine) to see its figures and tables. "
        "No dataset runs from the page; folders are read only while the app is bound to 127.0.0.1."
    )
    with gr.Row():
        folder = gr.Textbox(label="Stats folder", placeholder="/path/to/stats-out", elem_id="dataset-path")
        open_ = gr.Button("Open", elem_id="dataset-open")
    text = gr.Markdown("", elem_id="dataset-summary")
    figures = DisplayGallery(label="Figures", columns=2, height="auto", object_fit="contain", elem_id="dataset-figures")
    table_name = gr.Dropdown(label="Table", choices=[], elem_id="dataset-table-select")
    table = gr.Dataframe(label="Table (first rows; the CSV holds them all)", elem_id="dataset-table")
    return DatasetTab(folder, open_, table_name, table, [text, figures, table_name, table])


def live_tab(h: Handlers) -> tuple[gr.Markdown, gr.Button]:
    """The Live tab: hooks installed now, the last request's latency by part, the model cache."""
    return gr.Markdown(h.live_panel(), elem_id="live-panel"), gr.Button("Refresh", elem_id="live-refresh")


def panel_tabs(config: AppConfig, h: Handlers) -> tuple[ChecksTab, CompareTab, tuple[gr.Markdown, gr.Button]]:
    """The Checks, Compare and Live tabs under the Image tab's drawings."""
    with gr.Tabs(elem_id="panels"):
        with gr.Tab("Checks", id="checks-tab", elem_id="checks-tab"):
            checks = checks_tab()
        with gr.Tab("Compare", id="compare-tab", elem_id="compare-tab"):
            cmp = compare_tab(config)
        with gr.Tab("Live", id="live-tab", elem_id="live-tab"):
            live = live_tab(h)
    return checks, cmp, live


def _wire_image(h: Handlers, state: gr.State, t: ImageTab, after: list[Any], after_outputs: list[Any]) -> None:
    """The Image tab's events; ``after`` / ``after_outputs``: the panels' inputs and outputs that follow each
    request (:meth:`Handlers.panels`)."""
    model_inputs = [t.image, t.attention, t.arch, t.weights, *t.display]
    follow = [t.attention, t.examples, t.channel_note]

    def then_panels(event: Any) -> Any:
        return event.then(h.panels, after, after_outputs, **PRIVATE)

    outputs = [state, *t.outputs]
    analyses = [t.run.click(h.run_analysis, model_inputs, outputs, api_name="analyze", concurrency_id="model")]
    for trigger in (t.attention, t.arch, t.weights):
        analyses.append(trigger.input(h.run_analysis, model_inputs, outputs, concurrency_id="model", **PRIVATE))
    for event in analyses:
        then_panels(event)
        event.success(h.follow_network, [state, t.attention, t.arch], follow, **PRIVATE)
        event.success(h.rollout_controls, state, [t.rollout_row, *t.rollout], **PRIVATE)
        event.success(h.channel_view_control, state, t.channel_view, **PRIVATE)
    for setting in t.display:
        then_panels(setting.input(h.render_outputs, [state, *t.display], t.outputs, **PRIVATE))
    then_panels(t.big.select(h.pick_query, [state, *t.display], [state, *t.outputs], **PRIVATE))
    then_panels(t.head.input(h.pick_head, [state, t.head, *t.display], [state, *t.outputs], **PRIVATE))
    view_inputs = [state, t.channel_view, *t.display]
    then_panels(t.channel_view.input(h.pick_channel_view, view_inputs, [state, *t.outputs], **PRIVATE))
    for control in t.rollout:  # max/min fusion may run the network once more (every head kept)
        inputs = [state, *t.rollout, *t.display]
        then_panels(control.input(h.pick_rollout, inputs, [state, *t.outputs], concurrency_id="model", **PRIVATE))
    t.chart.select(h.pick_channel, [state, t.cmap, t.alpha, t.block], [t.big, t.channel_note], **PRIVATE)
    t.png.click(h.make_png, [state, t.cmap, t.alpha, t.norm, t.block], t.png_file, **PRIVATE).then(
        None, js=_click("download-png-file")
    )
    t.zipf.click(h.make_zip, [state, t.cmap, t.alpha, t.norm, t.topk], t.zip_file, **PRIVATE).then(
        None, js=_click("download-zip-file")
    )


def build_demo(config: AppConfig | None = None, handlers: Handlers | None = None) -> gr.Blocks:
    """The Gradio app for ``config`` (default: :meth:`AppConfig.from_env`)."""
    config = config or AppConfig.from_env()
    h = handlers or Handlers(config)
    ttl = config.cache_ttl_s  # Gradio's copies of uploads and outputs are deleted once this old (and at shutdown)
    with gr.Blocks(title="attnviz", delete_cache=(max(1, min(ttl, 600)), ttl)) as demo:
        gr.Markdown("# attnviz\nSee what the attention blocks inside a CNN compute: their own gates and softmaxes.")
        if config.note:
            gr.Markdown(config.note, elem_id="startup-note")
        state = gr.State()
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Image", id="image-tab", elem_id="image-tab"):
                image, (checks, cmp, (live, live_refresh)) = image_tab(config, lambda: panel_tabs(config, h))
            with gr.Tab("Dataset", id="dataset-tab", elem_id="dataset-tab"):
                data = dataset_tab()
        check_inputs = [state, image.cmap, image.alpha, image.norm, image.block]
        _wire_image(h, state, image, [*check_inputs, cmp.pair], [*checks.outputs, *cmp.outputs, live])
        run_inputs = [*check_inputs, checks.faithful]
        checks.run.click(h.run_checks, run_inputs, [state, *checks.outputs], concurrency_id="model", **PRIVATE).then(
            h.live_panel, state, live, **PRIVATE
        )
        compare_inputs = [state, cmp.other, image.cmap, image.alpha]
        cmp.run.click(h.run_compare, compare_inputs, [state, *cmp.outputs], concurrency_id="model", **PRIVATE).then(
            h.live_panel, state, live, **PRIVATE
        )
        cmp.pair.input(h.render_compare, [state, image.cmap, image.alpha, cmp.pair], cmp.outputs, **PRIVATE)
        live_refresh.click(h.live_panel, state, live, **PRIVATE)
        data.open.click(h.open_report, data.folder, data.outputs, **PRIVATE)
        data.folder.submit(h.open_report, data.folder, data.outputs, **PRIVATE)
        data.table_name.input(h.show_table, [data.folder, data.table_name], data.table, **PRIVATE)
    return demo
