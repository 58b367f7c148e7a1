"""The app's event handlers: each calls the library (analyze for the model, views/render/export for drawing).

:class:`Handlers` holds the configuration, the model cache and the export store; ``layout.build_demo`` wires its
methods to the page. Changing a display setting re-renders the kept Result; only the image, attention, network or
weights run the model. Exports are made when their button is clicked, not after every render. What the page offers
and how it names it is in :mod:`.choices`, the status text in :mod:`.status`, the downloads in :mod:`.exports`.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from ..capture.fused import MemoryLimitError
from ..capture.kinds import detail_image
from ..capture.views import View, head_view, owner_module, rollout_heads, rollout_maps, token_heads
from ..checks import check_result
from ..comparison import compare
from ..pipeline.core import (
    DEFAULT_CACHE,
    AnalyzeError,
    ModelCache,
    cached_model,
    channel_activation,
    default_device,
)
from ..pipeline.image import ImageError
from ..pipeline.run import analyze
from ..render import channel_stats, channel_table, display_size, normalize, overlay
from ..sources.meta import meta_of
from ..sources.select import choose_network
from ..sources.spec import Weights, is_own, parse_weights
from .choices import (
    AXES,
    CHANNEL_VIEWS,
    DISCARD_MAX,
    FROM_NETWORK,
    FUSION_CHOICES,
    NONE,
    WEIGHTS,
    arch_choices,
    attention_choices,
    brings_attention,
    compare_choices,
    example_labels,
    example_paths,
    own_attention,
)
from .config import LOOPBACK, AppConfig
from .errors import user_error
from .exports import png_file, zip_file
from .files import ExportStore
from .panels import checks_panel, compare_panel, live_text, report_panel, report_table, resolve_report
from .state import AppState, Display, Rollout, kept
from .status import demo_note, is_demo, side_label, status_text

__all__ = ["EMPTY_CHART", "GALLERY_SIDE", "VIEW_SIDE", "Handlers"]

GALLERY_SIDE = 800  # longest side of a gallery overlay (thumbnails; exports keep the image's own size)
VIEW_SIDE = 1600  # longest side of the large view
EMPTY_CHART = pd.DataFrame({"channel": pd.Series(dtype=str), "weight": pd.Series(dtype=float)})
NOT_YET = "Run an analysis first: upload an image and press Analyze."
#: Draws a page's overlays side by side.
_DRAWERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="attnviz-draw")


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` at ``size`` (width, height), or itself when it has that size."""
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _display_images(state: AppState) -> tuple[np.ndarray, np.ndarray]:
    """(large view, gallery thumbnail) images of the state's result at their display sizes (made once per state:
    the thumbnail is the large view itself when both fit)."""

    def make() -> tuple[np.ndarray, np.ndarray]:
        image = state.result.image
        large = _resized(image, display_size(image.size, VIEW_SIDE))
        small = _resized(large, display_size(image.size, GALLERY_SIDE))
        view = np.asarray(large)
        return view, view if small is large else np.asarray(small)

    return state.cached("display images", make)


def _head_menu(view: View | None, head: int | None) -> Any:
    """The Head choice for the selected view: the head mean or one of its heads (shown for token and window views
    that kept their heads)."""
    n = 0 if view is None else token_heads(view)
    value = "mean" if head is None or head >= n else str(head)
    choices = [("mean", "mean"), *((f"head {i}", str(i)) for i in range(n))]
    return gr.Dropdown(choices=choices, value=value, visible=n > 0)


def _chart(channel: View | None, topk: int | None, axis: str, visible: bool) -> tuple[Any, str]:
    """The channel-gate bar chart (0..1 axis unless "fit to data"; hidden for a network without channel gates) and
    a line giving the gate's range."""
    if channel is None:
        return gr.BarPlot(value=EMPTY_CHART, y_lim=[0.0, 1.0], visible=visible), ""
    table = channel_table(channel.data, topk)
    lo, hi = float(channel.data.min()), float(channel.data.max())
    if axis == AXES[1] or lo < 0 or hi > 1:  # fit to data (a gate outside 0..1 is not a sigmoid gate)
        pad = max((hi - lo) * 0.05, 1e-6)
        y_lim = [lo - pad, hi + pad]
    else:
        y_lim = [0.0, 1.0]
    note = f"{channel.block} channel gate: range {lo:.4f} to {hi:.4f}; {channel_stats(channel.data)['note']}"
    return gr.BarPlot(value=table, y_lim=y_lim, visible=True), note


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

    def _typed_paths_allowed(self) -> bool:
        """A typed checkpoint path reads the server's disk: only when configured for loopback and really bound to it
        (``build_demo(config).launch(server_name="0.0.0.0")`` would otherwise open the server's files to anyone)."""
        bound = self.server_name if self.server_name is not None else self.config.host
        return self.config.typed_paths and bound in LOOPBACK

    def _analyze(self, image: Any, attention: str | None, arch: str, weights: str, keep: str = "auto") -> Any:
        """:func:`attnviz.analyze` as the page runs it; the library's errors become user errors."""
        try:
            return analyze(
                image,
                attention=attention,
                arch=arch,
                weights=weights,
                device=self.config.device,
                size=self.config.size,
                cache=self.cache,
                keep=keep,
                **self.config.load_options(arch),
            )
        except ImageError as e:
            raise user_error(f"Cannot use this image: {e}") from None
        except (ValueError, AnalyzeError, MemoryLimitError) as e:
            raise user_error(str(e)) from None

    # -- the Image tab ---------------------------------------------------------------------------------------------
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
            raise user_error("Upload an image first (drag and drop, paste, or pick an example).")
        if arch not in {value for _, value in arch_choices(self.config)}:
            raise user_error(f"unknown network {arch!r}: pick one from the list (serve another with --model SPEC)")
        if weights not in (*WEIGHTS, self.config.weights) and not self._typed_paths_allowed():
            raise user_error(
                "Checkpoint paths typed into the page are accepted only when the app is bound to 127.0.0.1; "
                "start it with --weights PATH to serve a checkpoint to others."
            )
        attention = None if attention in (None, "", NONE, FROM_NETWORK) else attention
        state = AppState(self._analyze(image, *choose_network(attention, arch, weights)))
        return (state, *self.draw(state, Display(cmap, alpha, norm, topk, block, axis)))

    def render_outputs(
        self,
        state: AppState | None,
        cmap: str,
        alpha: float,
        norm: str,
        topk: str,
        block: str | None,
        axis: str = AXES[0],
    ) -> tuple[Any, ...]:
        """A display setting changed: everything drawn again from the kept Result; no model runs."""
        return self.draw(kept(state, NOT_YET), Display(cmap, alpha, norm, topk, block, axis))

    def draw(self, state: AppState, display: Display) -> tuple[Any, ...]:
        """Everything the Image tab shows of a kept Result: (predictions, the demo note, gallery, block choice, large
        view, gate chart, detail, status, head choice). No model runs here, and no file is written; the result's
        timings get ``views`` and ``render`` (the drawing)."""
        t0 = time.perf_counter()
        result = state.result
        views = state.views
        shown, normed, _ = state.spatial(display.norm)
        t1 = time.perf_counter()
        # maps are drawn at display sizes (exports keep the full size); the thumbnails come from the large view
        view_image, thumb_image = _display_images(state)
        cmap, alpha = display.cmap, display.alpha
        drawn = _DRAWERS.map(lambda m01: overlay(thumb_image, m01, cmap, alpha), normed)  # OpenCV frees the GIL
        gallery = [(img, v.title) for img, v in zip(drawn, shown, strict=True)]
        keys = [v.key for v in views]
        block = display.block
        if block not in keys:
            block = shown[-1].key if shown else (keys[-1] if keys else None)
        gates = any(v.kind == "channel" for v in views)
        extra: list[str] = []
        big, detail, view, channel = None, None, None, None
        if block is not None:
            view = views[keys.index(block)]
            channel = next((v for v in views if v.block == view.block and v.kind == "channel"), None)
            detail = None if view.kind == "channel" else detail_image(view, display.top)  # a gate: the chart
            one = head_view(view, state.head)  # a token or window view: the chosen head in place of the head mean
            if one is not view and one.spatial is not None:
                big = overlay(view_image, normalize([one.spatial], display.norm, [one.stage])[0], cmap, alpha)
                extra.append(f"large view: {one.title}")
            elif view in shown:
                i = shown.index(view)  # the large view: the thumbnail's overlay when both have one size
                big = gallery[i][0] if thumb_image is view_image else overlay(view_image, normed[i], cmap, alpha)
        chart, note = _chart(channel, display.top, display.axis, gates)
        if note:
            extra.append(note)
        result.timings["views"] = (t1 - t0) * 1e3
        result.timings["render"] = (time.perf_counter() - t1) * 1e3
        return (
            dict(result.predictions),
            demo_note(result),
            gallery,
            gr.Dropdown(choices=[(v.title, v.key) for v in views], value=block),
            big,
            chart,
            detail,
            status_text(result, extra),
            _head_menu(view, state.head),
        )

    def follow_network(self, state: AppState | None, attention: str | None, arch: str) -> tuple[Any, Any, Any]:
        """After an analysis, what the page says follows the network it ran: the attention dropdown names the
        attention a network brings (timm's, a served one) instead of attnviz's types; the examples are labelled
        against the demo network's categories only while it is loaded; the channel note shows only for a network
        with channel gates."""
        if state is None:
            return gr.skip(), gr.skip(), gr.skip()
        result = state.result
        if brings_attention(arch):
            own = own_attention(result.model["attention"], (m.kind for m in result.maps))
            menu = gr.Dropdown(choices=attention_choices(own), value=FROM_NETWORK)
        else:  # attnviz's ResNets: the type asked for (none when the dropdown named a network's own)
            menu = gr.Dropdown(choices=attention_choices(), value=NONE if attention == FROM_NETWORK else attention)
        labels = example_labels(example_paths(), demo=is_demo(result))
        gates = any(m.kind == "channel" for m in result.maps)
        return menu, gr.Dataset(sample_labels=labels), gr.Markdown(visible=gates)

    def pick_query(
        self,
        state: AppState | None,
        cmap: str,
        alpha: float,
        norm: str,
        topk: str,
        block: str | None,
        axis: str,
        evt: gr.SelectData,
    ) -> tuple[Any, ...]:
        """A click on the large view picks the query position for pairwise and token maps (a token map: the clicked
        patch's row)."""
        state = kept(state, "Run an analysis first.")
        w, h = display_size(state.result.image.size, VIEW_SIDE)  # the large view's size: clicks in its pixels
        x, y = evt.index
        state = dataclasses.replace(state, query=(min(max(x / w, 0.0), 1.0), min(max(y / h, 0.0), 1.0)))
        return (state, *self.draw(state, Display(cmap, alpha, norm, topk, block, axis)))

    def pick_head(
        self,
        state: AppState | None,
        head: str | None,
        cmap: str,
        alpha: float,
        norm: str,
        topk: str,
        block: str | None,
        axis: str = AXES[0],
    ) -> tuple[Any, ...]:
        """The Head choice: the selected token view shows one head ("0", "1", ...) or the head mean ("mean")."""
        state = kept(state, "Run an analysis first.")
        try:
            index = None if head in (None, "", "mean") else int(head)  # type: ignore[arg-type]
        except ValueError:
            raise user_error(f"not a head: {head!r}") from None
        state = dataclasses.replace(state, head=index)
        return (state, *self.draw(state, Display(cmap, alpha, norm, topk, block, axis)))

    def pick_rollout(
        self,
        state: AppState | None,
        on: bool,
        fusion: str,
        discard_ratio: float,
        cmap: str,
        alpha: float,
        norm: str,
        topk: str,
        block: str | None,
        axis: str = AXES[0],
    ) -> tuple[Any, ...]:
        """The rollout controls (Abnar & Zuidema 2020): on or off, head fusion, discard ratio. Drawn again from the
        kept maps; only head fusion by max or min of maps that kept their head mean alone (``keep="auto"``) runs the
        network once more, keeping every head (``keep="full"``), and the state keeps those maps for what follows."""
        state = kept(state, "Run an analysis first.")
        if fusion not in FUSION_CHOICES:
            raise user_error(f"not a head fusion: {fusion!r}; pick one of {', '.join(FUSION_CHOICES)}")
        try:
            ratio = float(discard_ratio)
        except (TypeError, ValueError):
            raise user_error(f"not a discard ratio: {discard_ratio!r}") from None
        if not 0.0 <= ratio <= DISCARD_MAX:
            raise user_error(f"the discard ratio must be between 0 and {DISCARD_MAX}, got {ratio}")
        rollout = Rollout(bool(on), fusion, ratio)
        result = state.result
        if rollout.on and fusion != "mean" and rollout_maps(result.maps) and not rollout_heads(result.maps):
            s = result.settings  # head max/min need every head's matrix: one forward that keeps them
            result = self._analyze(result.image, s["attention"], s["arch"], s["weights"], keep="full")
            state = AppState(result, state.query, state.head, view=state.view, categories=state.categories)
        state = dataclasses.replace(state, rollout=rollout)
        return (state, *self.draw(state, Display(cmap, alpha, norm, topk, block, axis)))

    def rollout_controls(self, state: AppState | None) -> tuple[Any, Any, Any, Any]:
        """After an analysis: the rollout controls show for a network whose blocks roll out (token maps over one
        grid with a class token), set to the state's rollout (a new analysis: on, head mean, nothing discarded)."""
        if state is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        r = state.rollout
        shown = bool(rollout_maps(state.result.maps))
        ratio = gr.Slider(value=r.discard_ratio)
        return gr.Row(visible=shown), gr.Checkbox(value=r.on), gr.Radio(value=r.fusion), ratio

    def pick_channel_view(
        self,
        state: AppState | None,
        view: str | None,
        cmap: str,
        alpha: float,
        norm: str,
        topk: str,
        block: str | None,
        axis: str = AXES[0],
    ) -> tuple[Any, ...]:
        """The Channel view choice: a channel gate's view as the gate effect (the default,
        :func:`attnviz.capture.kinds.gate_effect`) or the former gate-weighted mean activation; drawn again from the
        kept maps (no forward)."""
        state = kept(state, "Run an analysis first.")
        if view not in CHANNEL_VIEWS:
            raise user_error(f"not a channel view: {view!r}; pick one of {', '.join(CHANNEL_VIEWS)}")
        state = dataclasses.replace(state, view=None if view == CHANNEL_VIEWS[0] else view)
        return (state, *self.draw(state, Display(cmap, alpha, norm, topk, block, axis)))

    def channel_view_control(self, state: AppState | None) -> Any:
        """After an analysis: the Channel view choice shows for a network with channel gates, set to the state's
        view (a new analysis: the gate effect)."""
        if state is None:
            return gr.skip()
        shown = any(m.kind == "channel" for m in state.result.maps)
        return gr.Radio(visible=shown, value=state.view or CHANNEL_VIEWS[0])

    def pick_channel(
        self, state: AppState | None, cmap: str, alpha: float, block: str | None, evt: gr.SelectData
    ) -> tuple[Any, str]:
        """Selecting a bar of the gate chart shows that channel of the block's output over the image in the large
        view (one forward of the kept input, reading that module's output), with its index and gate value."""
        state = kept(state, "Run an analysis first.")
        picked = evt.index[0] if isinstance(evt.index, (list, tuple)) and evt.index else evt.index
        try:
            c = int(str(picked).lstrip("c"))
        except ValueError:
            raise user_error(f"not a channel of the chart: {picked!r}") from None
        result, views = state.result, state.views
        view = next((v for v in views if v.key == block), None) or (views[-1] if views else None)
        gate = next((v for v in views if view is not None and v.block == view.block and v.kind == "channel"), None)
        owner = owner_module(list(result.activations), gate.key) if gate is not None else None
        if gate is None or owner is None or not 0 <= c < gate.data.shape[0]:
            raise user_error("This block has no channel gate to pick a channel from.")
        fmap = channel_activation(self._model_of(result), result, owner, c)  # (h, w) float32
        lo, hi = float(fmap.min()), float(fmap.max())
        big = overlay(_display_images(state)[0], (fmap - lo) / max(hi - lo, 1e-12), cmap, alpha)
        note = (
            f"channel {c} of {owner}: gate {float(gate.data[c]):.4f}; its output activation over the image "
            f"(min-max {lo:.4g} to {hi:.4g}) is in the large view"
        )
        return big, note

    def make_png(self, state: AppState | None, cmap: str, alpha: float, norm: str, block: str | None) -> str | None:
        """The selected view as a PNG with its colorbar (the chosen head, as the large view shows it), written when
        its button is clicked."""
        state = kept(state, "Run an analysis first: there is nothing to download yet.")
        return str(png_file(self.store, state, Display(cmap, alpha, norm, block=block)))

    def make_zip(
        self,
        state: AppState | None,
        cmap: str,
        alpha: float,
        norm: str,
        topk: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio's progress tracker)
    ) -> str:
        """Everything (overlays, charts, raw maps, result.json) as a zip, built when its button is clicked, with the
        chosen head and rollout; asking again with the same result and settings returns the zip already made."""
        state = kept(state, "Run an analysis first: there is nothing to download yet.")
        return str(zip_file(self.store, state, Display(cmap, alpha, norm, topk), progress))

    # -- checks, compare, live panel -------------------------------------------------------------------------------
    def _model_of(self, result: Any) -> Any:
        """The cached model a result came from (built again, with the same options, if it left the cache)."""
        s = result.settings
        try:
            return cached_model(
                s["arch"], s["attention"], s["weights"], s["device"], self.cache, **self.config.load_options(s["arch"])
            )
        except (ValueError, AnalyzeError) as e:
            raise user_error(str(e)) from None

    def render_checks(
        self, state: AppState | None, cmap: str, alpha: float, norm: str, block: str | None
    ) -> tuple[Any, ...]:
        """The Checks panel from the kept Result's checks (no model runs): the ablation chart, the selected block's
        view, its Grad-CAM and its randomised view (one normalisation and overlay), their scores, the sanity line."""
        if state is None:
            return None, None, None, None, "Run an analysis first, then press **Run checks**.", ""
        return checks_panel(state.result, block, cmap, alpha, norm, list(state.categories) or None)

    def run_checks(
        self,
        state: AppState | None,
        cmap: str,
        alpha: float,
        norm: str,
        block: str | None,
        faithful: bool = False,
        progress: gr.Progress = gr.Progress(),  # noqa: B008  (Gradio's progress tracker)
    ) -> tuple[Any, ...]:
        """The Checks button: ablation of every block, Grad-CAM at every block and the randomisation check
        (:func:`attnviz.checks.check_result`, several forwards: only on demand), and with ``faithful`` each block's
        faithfulness curves; kept on the Result."""
        state = kept(state, "Run an analysis first: the checks are made on its image and network.")
        model = self._model_of(state.result)
        what = "ablation, Grad-CAM, randomised weights" + (", faithfulness curves" if faithful else "")
        progress(0.05, desc=f"checks: {what}")
        try:
            check_result(state.result, model=model, query=state.query, faithful=bool(faithful))
        except (RuntimeError, ValueError) as e:
            raise user_error(f"The checks could not run on this network: {e}") from None
        state = dataclasses.replace(state, categories=tuple(meta_of(model).categories))
        return (state, *self.render_checks(state, cmap, alpha, norm, block))

    def _other_side(self, result: Any, other: str) -> tuple[str | None, str, str]:
        """(attention, network, weights) of the comparison's B side."""
        s = result.settings
        kind, _, value = other.partition(":")
        if kind == "attention":
            if not is_own(s["arch"]):
                raise user_error(f"{s['arch']} brings its own attention: compare it with another network instead.")
            return choose_network(value, s["arch"], s["weights"])
        arch = value
        weights = s["weights"]
        if arch != s["arch"] and parse_weights(weights) not in (Weights.RANDOM, Weights.IMAGENET):  # one network's
            weights = (Weights.RANDOM if is_own(arch) else Weights.IMAGENET).value
        return s["attention"] if is_own(arch) else None, arch, weights

    def run_compare(
        self,
        state: AppState | None,
        other: str | None,
        cmap: str,
        alpha: float,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008  (a download's progress bar)
    ) -> tuple[Any, ...]:
        """The Compare button: the kept result (A) against the same image under another attention type or network
        (B), one shared normalisation per pair and their difference (:func:`attnviz.compare`)."""
        state = kept(state, "Run an analysis first: it is the comparison's A side.")
        if other not in {value for _, value in compare_choices(self.config)}:
            raise user_error("Pick what to compare with from the list.")
        a = state.result
        attention, arch, weights = self._other_side(a, other)
        s = a.settings
        if (attention, arch, weights) == (s["attention"], s["arch"], s["weights"]):
            raise user_error("That is what is shown already: pick another attention type or network.")
        b = self._analyze(a.image, attention, arch, weights)
        t0 = time.perf_counter()
        cmp = compare(a, b, label_a=side_label(a), label_b=side_label(b), query=state.query)
        b.timings["compare"] = (time.perf_counter() - t0) * 1e3
        state = dataclasses.replace(state, compare=cmp)
        return (state, *self.render_compare(state, cmap, alpha, None))

    def render_compare(self, state: AppState | None, cmap: str, alpha: float, pair: str | None) -> tuple[Any, ...]:
        """The Compare panel from the kept comparison (none, or one made on another result: the placeholders)."""
        cmp = state.compare if state is not None else None
        t0 = time.perf_counter()
        a, b, diff, text, key, keys = compare_panel(cmp, pair, cmap, alpha)
        if cmp is not None:
            cmp.b.timings["render"] = (time.perf_counter() - t0) * 1e3
        return a, b, diff, text, gr.Dropdown(choices=keys, value=key)

    def live_panel(self, state: AppState | None = None) -> str:
        """Hooks installed now (0 between requests), the last request's latency by part, peak GPU memory and the
        model cache's contents."""
        models = (self.cache or DEFAULT_CACHE).models()
        device = self.config.device or default_device()
        if state is None:
            return live_text(models, None, device, None)
        return live_text(models, state.result, device, state.compare)

    def panels(
        self, state: AppState | None, cmap: str, alpha: float, norm: str, block: str | None, pair: str | None
    ) -> tuple[Any, ...]:
        """After each request, in one event: the Checks and Compare panels follow the kept result (placeholders for a
        new one), and the live panel updates."""
        return (
            *self.render_checks(state, cmap, alpha, norm, block),
            *self.render_compare(state, cmap, alpha, pair),
            self.live_panel(state),
        )

    # -- the Dataset tab -------------------------------------------------------------------------------------------
    def _stats_folder(self, folder: str | None) -> tuple[Path, dict]:
        if not self._typed_paths_allowed():
            raise user_error(
                "Stats folders typed into the page are opened only when the app is bound to 127.0.0.1 "
                "(the page would read the server's disk)."
            )
        try:
            return resolve_report(folder or "")
        except ValueError as e:
            raise user_error(str(e)) from None

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
