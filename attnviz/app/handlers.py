"""The app's event handlers: each calls the library (analyze for the model, views/render/export for drawing).

:class:`Handlers` holds the configuration, the model cache and the export store; ``layout.build_demo`` wires its
methods to the page. Changing a display setting re-renders the kept Result; only the image, attention, network or
weights run the model. Exports are made when their button is clicked, not after every render.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from .. import ARCHS, get_attention, list_attentions
from ..capture.kinds import detail_image
from ..capture.views import View, build_views, owner_module, spatial_views
from ..checks import check_result
from ..compare import compare
from ..export import export_zip
from ..pipeline.core import (
    DEFAULT_CACHE,
    AnalyzeError,
    ModelCache,
    Result,
    analyze,
    channel_activation,
    default_device,
    load_model,
)
from ..pipeline.image import ImageError
from ..render import (
    channel_stats,
    channel_table,
    display_size,
    figure_png,
    overlay,
)
from ..render.naming import safe_name
from ..sources.spec import Weights, parse_weights
from ..sources.timm import TIMM_ATTENTION, TIMM_MODELS, timm_availability
from .config import LOOPBACK, AppConfig
from .files import ExportStore
from .panels import checks_panel, compare_panel, live_text, report_panel, report_table, resolve_report

__all__ = ["IMAGENET_BEST", "NONE", "WEIGHTS", "Handlers", "demo_note", "measured_line"]

NONE = "none (plain ResNet)"
WEIGHTS = [w.value for w in (Weights.DEMO, Weights.IMAGENET, Weights.RANDOM)]
GALLERY_SIDE = 800  # longest side of a gallery overlay (thumbnails; exports keep the image's own size)
VIEW_SIDE = 1600  # longest side of the large view
AXES = ["0–1", "fit to data"]  # the channel chart's y axis: gates live in 0..1
EMPTY_CHART = pd.DataFrame({"channel": pd.Series(dtype=str), "weight": pd.Series(dtype=float)})

#: With weights "imagenet", an attention type gives the best ImageNet-pretrained network that has it (timm's,
#: trained with that attention); the other types get torchvision's ImageNet backbone with the block inserted
#: (flagged "attention untrained").
IMAGENET_BEST = {
    "se": "seresnet50.ra2_in1k",
    "eca": "ecaresnet50d.miil_in1k",
    "sk": "skresnet34.ra_in1k",
    "mhsa": "botnet26t_256.c1_in1k",
}


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
    if summary.get("real_photos_accuracy") is not None:
        text += f" · real photos pasted on textures: top-1 {100 * summary['real_photos_accuracy']:.0f} %"
    return text


def demo_note(result: Result) -> str:
    """What the demo network knows, said next to its predictions (its 8 categories); '' for other networks."""
    if not str(result.model.get("weights_source", "")).startswith("demo"):
        return ""
    from ..sources.demo import demo_categories

    names = demo_categories()
    return (
        f"**demo network: {len(names)} categories** ({', '.join(names)}), trained by attnviz on cut-and-paste "
        "scenes; a photo of anything else still gets one of these."
    )


def _side_label(result: Result) -> str:
    """A comparison side's name: network, attention, weights."""
    m = result.model
    return f"{m['arch']} · {m['attention'] or 'no attention'} · {m['weights']}"


def _topk(value: str | int | None) -> int | None:
    return None if value in (None, "all") else int(value)


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` at ``size`` (width, height), or itself when it has that size."""
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _detail(view: View, topk: int | None) -> Any:
    """The detail image of the selected view (:mod:`attnviz.capture.kinds`); a channel gate is the chart below
    instead."""
    return None if view.kind == "channel" else detail_image(view, topk)


def _chart(channel: View | None, topk: int | None, axis: str) -> tuple[Any, str]:
    """The channel-gate bar chart (0..1 axis unless "fit to data") and a line giving the gate's range."""
    if channel is None:
        return gr.BarPlot(value=EMPTY_CHART, y_lim=[0.0, 1.0]), ""
    table = channel_table(channel.data, topk)
    lo, hi = float(channel.data.min()), float(channel.data.max())
    if axis == AXES[1] or lo < 0 or hi > 1:  # fit to data (a gate outside 0..1 is not a sigmoid gate)
        pad = max((hi - lo) * 0.05, 1e-6)
        y_lim = [lo - pad, hi + pad]
    else:
        y_lim = [0.0, 1.0]
    note = f"{channel.block} channel gate: range {lo:.4f} to {hi:.4f}; {channel_stats(channel.data)['note']}"
    return gr.BarPlot(value=table, y_lim=y_lim), note


class Handlers:
    """The page's handlers for one configuration (shared by every session).

    Args:
        config: the app's configuration.
        cache: where built models are kept (default: the process-wide cache of :mod:`attnviz.pipeline`).
        store: where export files go (default: one under ``config.export_root``).
    """

    def __init__(self, config: AppConfig, cache: ModelCache | None = None, store: ExportStore | None = None) -> None:
        self.config = config
        self.cache = cache
        self.store = store or ExportStore(config.export_root, config.keep_exports, config.export_max_bytes)
        self.server_name: str | None = None  # the address the server listens on (set by serve.launch)

    # -- choices ---------------------------------------------------------------------------------------------------
    def arch_choices(self) -> list[tuple[str, str]]:
        """Network dropdown entries: the one served with ``--model`` first, attnviz's ResNets, timm's ImageNet
        attention networks. The page can ask for these and nothing else (a user's model file is never loaded from
        the page, and a page served beyond loopback downloads only these)."""
        listed = [(a, a) for a in ARCHS] + [(f"{n} (timm, {TIMM_ATTENTION[n]})", n) for n in TIMM_MODELS]
        served = self.config.served
        if served and served not in {v for _, v in listed}:
            listed.insert(0, (f"{served} (served)", served))
        elif served:
            listed.sort(key=lambda choice: choice[1] != served)
        return listed

    def timm_status(self) -> str:
        """Which timm ImageNet networks can load here, and why the others cannot (no download is attempted)."""
        lines = []
        for name in TIMM_MODELS:
            if self.config.offline:
                from ..sources.hub import hf_cached_file

                ok = hf_cached_file(f"timm/{name}", "model.safetensors") is not None
                reason = "cached" if ok else "not cached, and the app is offline"
            else:
                ok, reason = timm_availability(name)
            lines.append(f"- {name}: {'available' if ok else 'unavailable'} ({reason})")
        return "<details><summary>timm ImageNet attention networks</summary>\n\n" + "\n".join(lines) + "\n</details>"

    def choice(self, attention: str | None, arch: str, weights: str) -> tuple[str | None, str, str]:
        """(attention, network, weights) a request runs: with weights "imagenet" on attnviz's ResNets, an attention
        type that has an ImageNet-pretrained network (:data:`IMAGENET_BEST`) gets that network, and one with a variant
        for pretrained backbones (``variant_of`` in the registry: epsa -> epsa_pre) gets the variant."""
        imagenet = parse_weights(weights) is Weights.IMAGENET
        if imagenet and arch in ARCHS and attention in IMAGENET_BEST:
            return None, IMAGENET_BEST[attention], Weights.IMAGENET.value
        if imagenet and arch in ARCHS:  # a variant made for pretrained backbones (epsa -> epsa_pre)
            variant = next((n for n in list_attentions() if get_attention(n).variant_of == attention), None)
            return variant or attention, arch, weights
        return attention, arch, weights

    def _typed_paths_allowed(self) -> bool:
        """A typed checkpoint path reads the server's disk: only when configured for loopback and really bound to it
        (``build_demo(config).launch(server_name="0.0.0.0")`` would otherwise open the server's files to anyone)."""
        bound = self.server_name if self.server_name is not None else self.config.host
        return self.config.typed_paths and bound in LOOPBACK

    # -- events ----------------------------------------------------------------------------------------------------
    def run_analysis(
        self,
        image: str | None,
        attention: str,
        arch: str = "resnet18",
        weights: str = "demo",
        cmap: str = "turbo",
        alpha: float = 0.5,
        norm: str = "map",
        topk: str = "32",
        block: str | None = None,
        axis: str = AXES[0],
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008  (a download's progress bar, in the page)
    ) -> tuple[Any, ...]:
        """The `analyze` endpoint: (image path, attention type, ...) -> state and every output. A network's first
        use may download its weights (listed networks only): the library's progress bar shows in the page."""
        if image is None:
            raise gr.Error("Upload an image first (drag and drop, paste, or pick an example).")
        if arch not in {value for _, value in self.arch_choices()}:
            raise gr.Error(f"unknown network {arch!r}: pick one from the list (serve another with --model SPEC)")
        if weights not in (*WEIGHTS, self.config.weights) and not self._typed_paths_allowed():
            raise gr.Error(
                "Checkpoint paths typed into the page are accepted only when the app is bound to 127.0.0.1; "
                "start it with --weights PATH to serve a checkpoint to others."
            )
        attention = None if attention in (None, "", NONE) else attention
        attention, arch, weights = self.choice(attention, arch, weights)
        try:
            result = analyze(
                image,
                attention=attention,
                arch=arch,
                weights=weights,
                device=self.config.device,
                size=self.config.size,
                cache=self.cache,
                **self.config.load_options(arch),
            )
        except ImageError as e:
            raise gr.Error(f"Cannot use this image: {e}") from None
        except (ValueError, AnalyzeError) as e:
            raise gr.Error(str(e)) from None
        state = {"result": result, "query": None}
        return (state, *self.render_outputs(state, cmap, alpha, norm, topk, block, axis))

    def render_outputs(
        self,
        state: dict | None,
        cmap: str,
        alpha: float,
        norm: str,
        topk: str,
        block: str | None,
        axis: str = AXES[0],
    ) -> tuple[Any, ...]:
        """Everything drawn from a kept Result; no model runs here, and no file is written."""
        if not state or "result" not in state:
            raise gr.Error("Run an analysis first: upload an image and press Analyze.")
        t0 = time.perf_counter()
        result: Result = state["result"]
        views = build_views(result, state.get("query"))
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
        big, detail = None, None
        chart, note = _chart(None, None, axis)
        if block is not None:
            view = views[keys.index(block)]
            channel = next((v for v in views if v.block == view.block and v.kind == "channel"), None)
            chart, note = _chart(channel, _topk(topk), axis)
            detail = _detail(view, _topk(topk))
            if note:
                extra.append(note)
            if view in shown:
                big = overlay(view_image, normed[shown.index(view)], cmap, alpha)
        result.timings["render"] = (time.perf_counter() - t0) * 1e3
        predictions = {label: p for label, p in result.predictions}
        return (
            predictions,
            demo_note(result),
            gallery,
            gr.Dropdown(choices=choices, value=block),
            big,
            chart,
            detail,
            self.status(result, extra),
        )

    def pick_query(
        self,
        state: dict | None,
        cmap: str,
        alpha: float,
        norm: str,
        topk: str,
        block: str | None,
        axis: str,
        evt: gr.SelectData,
    ) -> tuple[Any, ...]:
        """A click on the large view picks the query position for pairwise maps."""
        if not state or "result" not in state:
            raise gr.Error("Run an analysis first.")
        w, h = display_size(state["result"].image.size, VIEW_SIDE)  # the large view's size: clicks in its pixels
        x, y = evt.index
        state = {**state, "query": (min(max(x / w, 0.0), 1.0), min(max(y / h, 0.0), 1.0))}
        return (state, *self.render_outputs(state, cmap, alpha, norm, topk, block, axis))

    def make_png(self, state: dict | None, cmap: str, alpha: float, norm: str, block: str | None) -> str | None:
        """The selected view as a PNG with its colorbar, written when its button is clicked."""
        if not state or "result" not in state:
            raise gr.Error("Run an analysis first: there is nothing to download yet.")
        result: Result = state["result"]
        shown, normed, ranges = spatial_views(build_views(result, state.get("query")), norm)
        match = [i for i, v in enumerate(shown) if v.key == block] or ([len(shown) - 1] if shown else [])
        if not match:
            raise gr.Error("This network's maps have no spatial view to save as PNG; download the zip instead.")
        i = match[0]
        v = shown[i]
        path = self.store.new_dir() / f"{safe_name(v.block)}_{v.kind}.png"
        path.write_bytes(
            figure_png(np.asarray(result.image), normed[i], cmap, alpha, v.title, ranges[i], v.spatial_label)
        )
        return str(path)

    def make_zip(
        self,
        state: dict | None,
        cmap: str,
        alpha: float,
        norm: str,
        topk: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio's progress tracker)
    ) -> str:
        """Everything (overlays, charts, raw maps, result.json) as a zip, built when its button is clicked; asking
        again with the same result and display settings returns the zip already made."""
        if not state or "result" not in state:
            raise gr.Error("Run an analysis first: there is nothing to download yet.")
        result: Result = state["result"]
        settings = {"cmap": cmap, "alpha": alpha, "norm": norm, "topk": _topk(topk), "query": state.get("query")}
        progress(0.05, desc="building the zip")
        name = f"attnviz_{safe_name(result.model['attention'] or 'plain')}.zip"
        key = (cmap, alpha, norm, settings["topk"], settings["query"])
        path = self.store.zip_for(result, key, lambda folder: export_zip(result, settings, folder / name))
        progress(1.0, desc="zip ready")
        return str(path)

    # -- checks, compare, live panel, dataset ----------------------------------------------------------------------
    def _model_of(self, result: Result) -> Any:
        """The cached model a result came from (built again, with the same options, if it left the cache)."""
        s = result.settings
        try:
            return load_model(
                s["arch"], s["attention"], s["weights"], s["device"], self.cache, **self.config.load_options(s["arch"])
            )
        except (ValueError, AnalyzeError) as e:
            raise gr.Error(str(e)) from None

    def pick_channel(
        self, state: dict | None, cmap: str, alpha: float, block: str | None, evt: gr.SelectData
    ) -> tuple[Any, str]:
        """Selecting a bar of the gate chart shows that channel of the block's output over the image in the large
        view (one forward of the kept input, reading that module's output), with its index and gate value."""
        if not state or "result" not in state:
            raise gr.Error("Run an analysis first.")
        picked = evt.index[0] if isinstance(evt.index, (list, tuple)) and evt.index else evt.index
        try:
            c = int(str(picked).lstrip("c"))
        except ValueError:
            raise gr.Error(f"not a channel of the chart: {picked!r}") from None
        result: Result = state["result"]
        views = build_views(result, state.get("query"))
        view = next((v for v in views if v.key == block), None) or (views[-1] if views else None)
        gate = next((v for v in views if view is not None and v.block == view.block and v.kind == "channel"), None)
        owner = owner_module(list(result.activations), gate.key) if gate is not None else None
        if gate is None or owner is None or not 0 <= c < gate.data.shape[0]:
            raise gr.Error("This block has no channel gate to pick a channel from.")
        model = self._model_of(result)
        fmap = channel_activation(model, result, owner, c)  # (h, w) float32
        large = _resized(result.image, display_size(result.image.size, VIEW_SIDE))
        lo, hi = float(fmap.min()), float(fmap.max())
        big = overlay(np.asarray(large), (fmap - lo) / max(hi - lo, 1e-12), cmap, alpha)
        note = (
            f"channel {c} of {owner}: gate {float(gate.data[c]):.4f}; its output activation over the image "
            f"(min-max {lo:.4g} to {hi:.4g}) is in the large view"
        )
        return big, note

    def render_checks(self, state: dict | None, cmap: str, alpha: float, norm: str, block: str | None) -> tuple:
        """The Checks panel from the kept Result's checks (no model runs): the ablation chart, the selected block's
        view, its Grad-CAM and its randomised view (one normalisation and overlay), their scores, the sanity line."""
        if not state or "result" not in state:
            return None, None, None, None, "Run an analysis first, then press **Run checks**.", ""
        return checks_panel(state["result"], block, cmap, alpha, norm, state.get("categories"))

    def run_checks(
        self,
        state: dict | None,
        cmap: str,
        alpha: float,
        norm: str,
        block: str | None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio's progress tracker)
    ) -> tuple[Any, ...]:
        """The Checks button: ablation of every block, Grad-CAM at every block and the randomisation check
        (:func:`attnviz.checks.check_result`, several forwards: only on demand); kept on the Result."""
        if not state or "result" not in state:
            raise gr.Error("Run an analysis first: the checks are made on its image and network.")
        result: Result = state["result"]
        model = self._model_of(result)
        progress(0.05, desc="checks: ablation, Grad-CAM, randomised weights")
        query = state.get("query") or (0.5, 0.5)
        try:
            check_result(result, model=model, query=query)
        except (RuntimeError, ValueError) as e:
            raise gr.Error(f"The checks could not run on this network: {e}") from None
        state = {**state, "categories": list(model.weights_meta.get("categories", []))}
        return (state, *self.render_checks(state, cmap, alpha, norm, block))

    def compare_choices(self) -> list[tuple[str, str]]:
        """What the current result can be compared with: another attention type (same network and weights) or
        another listed network (same attention type)."""
        attentions = [(f"attention type: {a}", f"attention:{a}") for a in list_attentions()]
        return attentions + [(f"network: {label}", f"network:{value}") for label, value in self.arch_choices()]

    def _other_side(self, result: Result, other: str) -> tuple[str | None, str, str]:
        """(attention, network, weights) of the comparison's B side."""
        s = result.settings
        kind, _, value = other.partition(":")
        if kind == "attention":
            if s["arch"] not in ARCHS:
                raise gr.Error(f"{s['arch']} brings its own attention: compare it with another network instead.")
            return self.choice(value, s["arch"], s["weights"])
        arch = value
        weights = s["weights"]
        if arch != s["arch"] and parse_weights(weights) not in (Weights.RANDOM, Weights.IMAGENET):  # one network's
            weights = (Weights.RANDOM if arch in ARCHS else Weights.IMAGENET).value
        return s["attention"] if arch in ARCHS else None, arch, weights

    def run_compare(
        self,
        state: dict | None,
        other: str | None,
        cmap: str,
        alpha: float,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008  (a download's progress bar)
    ) -> tuple[Any, ...]:
        """The Compare button: the kept result (A) against the same image under another attention type or network
        (B), one shared normalisation per pair and their difference (:func:`attnviz.compare.compare`)."""
        if not state or "result" not in state:
            raise gr.Error("Run an analysis first: it is the comparison's A side.")
        if other not in {value for _, value in self.compare_choices()}:
            raise gr.Error("Pick what to compare with from the list.")
        a: Result = state["result"]
        attention, arch, weights = self._other_side(a, other)
        s = a.settings
        if (attention, arch, weights) == (s["attention"], s["arch"], s["weights"]):
            raise gr.Error("That is what is shown already: pick another attention type or network.")
        try:
            b = analyze(
                a.image,
                attention=attention,
                arch=arch,
                weights=weights,
                device=self.config.device,
                size=self.config.size,
                cache=self.cache,
                **self.config.load_options(arch),
            )
        except (ValueError, AnalyzeError, ImageError) as e:
            raise gr.Error(str(e)) from None
        t0 = time.perf_counter()
        cmp = compare(a, b, label_a=_side_label(a), label_b=_side_label(b), query=state.get("query"))
        b.timings["compare"] = (time.perf_counter() - t0) * 1e3
        state = {**state, "compare": cmp}
        return (state, *self.render_compare(state, cmap, alpha, None))

    def render_compare(self, state: dict | None, cmap: str, alpha: float, pair: str | None) -> tuple[Any, ...]:
        """The Compare panel from the kept comparison (none, or one made on another result: the placeholders)."""
        cmp = (state or {}).get("compare")
        if cmp is not None and cmp.a is not state.get("result"):
            cmp = None
        t0 = time.perf_counter()
        a, b, diff, text, key, keys = compare_panel(cmp, pair, cmap, alpha)
        if cmp is not None:
            cmp.b.timings["render"] = (time.perf_counter() - t0) * 1e3
        return a, b, diff, text, gr.Dropdown(choices=keys, value=key)

    def live_panel(self, state: dict | None = None) -> str:
        """Hooks installed now (0 between requests), the last request's latency by part, peak GPU memory and the
        model cache's contents."""
        state = state or {}
        models = (self.cache or DEFAULT_CACHE).models()
        device = self.config.device or default_device()
        return live_text(models, state.get("result"), device, state.get("compare"))

    def panels(
        self, state: dict | None, cmap: str, alpha: float, norm: str, block: str | None, pair: str | None
    ) -> tuple[Any, ...]:
        """After each request, in one event: the Checks and Compare panels follow the kept result (placeholders for a
        new one), and the live panel updates."""
        return (
            *self.render_checks(state, cmap, alpha, norm, block),
            *self.render_compare(state, cmap, alpha, pair),
            self.live_panel(state),
        )

    def _stats_folder(self, folder: str | None) -> tuple[Path, dict]:
        if not self._typed_paths_allowed():
            raise gr.Error(
                "Stats folders typed into the page are opened only when the app is bound to 127.0.0.1 "
                "(the page would read the server's disk)."
            )
        try:
            return resolve_report(folder or "")
        except ValueError as e:
            raise gr.Error(str(e)) from None

    def open_report(self, folder: str | None) -> tuple[Any, ...]:
        """The Dataset tab: a finished ``attnviz stats`` folder's headline numbers, figures and first table (files
        inside that folder only; no model runs)."""
        root, report = self._stats_folder(folder)
        text, figures, tables = report_panel(root, report)
        first = tables[0] if tables else None
        return text, figures, gr.Dropdown(choices=tables, value=first), report_table(report, first)

    def show_table(self, folder: str | None, name: str | None) -> pd.DataFrame:
        """One table of the opened stats folder."""
        _, report = self._stats_folder(folder)
        return report_table(report, name)

    # -- text ------------------------------------------------------------------------------------------------------
    def status(self, result: Result, extra: list[str]) -> str:
        t = result.timings
        timing = " · ".join(f"{k} {v:.0f} ms" for k, v in t.items())
        lines = []
        if result.warning:
            lines.append(f"⚠️ **{result.warning}**")
        if result.capture_warning:
            lines.append(f"⚠️ **{result.capture_warning}**")
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
