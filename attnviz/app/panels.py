"""What the Checks, Compare, Live and Dataset panels show: functions of a Result (and its checks), a comparison,
the model cache or a finished ``attnviz stats`` folder. The handlers call them; the work is in the library
(:mod:`attnviz.checks`, :mod:`attnviz.comparison`, :mod:`attnviz.stats`), drawn with :mod:`attnviz.render`."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from ..checks import WARN_ABOVE, BlockCheck, Checks
from ..checks.gradient import LABEL as GRADIENT_ROLLOUT
from ..comparison import Comparison
from ..render import diff_overlay, display_size, normalize, overlay
from ..sources.meta import meta_of

__all__ = [
    "PANEL_SIDE",
    "TABLE_ROWS",
    "ablation_chart",
    "check_for_view",
    "checks_panel",
    "compare_panel",
    "hook_counts",
    "live_text",
    "report_panel",
    "report_table",
    "resolve_report",
]

PANEL_SIDE = 640  # longest side of the images of the checks and compare panels (three side by side)
TABLE_ROWS = 500  # rows of a stats table shown on the page (the CSV in the folder has them all)


def panel_image(image: Image.Image) -> np.ndarray:
    """The analysed image at the panels' display size."""
    size = display_size(image.size, PANEL_SIDE)
    return np.asarray(image if size == image.size else image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))


# -- checks ------------------------------------------------------------------------------------------------------


def check_for_view(checks: Checks, key: str | None) -> BlockCheck | None:
    """The checked block that owns the page's selected view ``key`` (a tap's path): the block listing that map, else
    the innermost block whose path prefixes it, else the last block with a spatial view."""
    blocks = list(checks.blocks.values())
    for c in blocks:
        if key in c.maps:
            return c
    owners = [c for c in blocks if key and key.startswith(c.path + ".")]
    if owners:
        return max(owners, key=lambda c: len(c.path))
    with_view = [c for c in blocks if c.view is not None]
    return (with_view or blocks or [None])[-1]


_CHARTS: OrderedDict[int, tuple[weakref.ref, bytes]] = OrderedDict()  # id(checks) -> (checks, its chart PNG)
_CHARTS_LOCK = threading.Lock()
CHARTS_KEPT = 16


def ablation_chart(checks: Checks) -> bytes:
    """The ablation bar chart of ``checks`` (:func:`attnviz.checks.ablation_chart_png`), drawn once per checks:
    matplotlib takes about as long as a forward, and the panel is redrawn on every display change."""
    from ..checks import ablation_chart_png

    with _CHARTS_LOCK:
        ref, png = _CHARTS.get(id(checks), (None, b""))
        if ref is not None and ref() is checks:
            return png
    png = ablation_chart_png(checks)
    with _CHARTS_LOCK:
        _CHARTS[id(checks)] = (weakref.ref(checks), png)
        while len(_CHARTS) > CHARTS_KEPT:
            _CHARTS.popitem(last=False)
    return png


def with_curves(chart: bytes | None, check: BlockCheck) -> bytes | None:
    """The ablation chart with the block's faithfulness curves below it (:func:`attnviz.checks.faithfulness_chart_png`;
    one image, so the Checks tab keeps its outputs), or the chart alone when the block has none."""
    import io

    from ..checks import faithfulness_chart_png

    if chart is None or not check.faithfulness:
        return chart
    top = Image.open(io.BytesIO(chart)).convert("RGB")
    low = Image.open(io.BytesIO(faithfulness_chart_png(check, f"{check.path}: faithfulness"))).convert("RGB")
    both = Image.new("RGB", (max(top.width, low.width), top.height + low.height), "white")
    both.paste(top, (0, 0))
    both.paste(low, (0, top.height))
    buf = io.BytesIO()
    both.save(buf, format="PNG")
    return buf.getvalue()


def _single_mode(norm: str, gradcam: bool = False) -> str:
    """The page's normalisation for one map on its own, as the export draws the checks' maps
    (:func:`attnviz.checks.check_files`): "stage" and "network" are the map's own range; Grad-CAM is never a gate."""
    mode = "map" if norm in ("stage", "network") else norm
    return "map" if gradcam and mode == "absolute" else mode


def _label(categories: list[str] | None, index: int) -> str:
    return categories[index] if categories and 0 <= index < len(categories) else f"class {index}"


def _scores_row(name: str, scores: dict[str, float] | None) -> str:
    if scores is None:
        return f"| {name} | – | – |"
    return f"| {name} | {scores['spearman']:+.2f} | {scores['top20_iou']:.2f} |"


def checks_panel(
    result: Any, key: str | None, cmap: str, alpha: float, norm: str, categories: list[str] | None = None
) -> tuple[Any, ...]:
    """(ablation chart PNG, block view, Grad-CAM, randomised view, scores text, sanity text) for the checked block
    owning the selected view; placeholders before the checks have run. A token attention block has no Grad-CAM (its
    output is no feature map): the attribution shown beside its view is the network's gradient rollout (Chefer et
    al. 2021, :mod:`attnviz.checks.gradient`)."""
    checks: Checks | None = getattr(result, "checks", None)
    if checks is None:
        text = (
            "Press **Run checks**: switching each block off (ablation), Grad-CAM at each block and the block's map "
            "with randomised weights. They cost several forward passes, so they run only when asked."
        )
        return None, None, None, None, text, ""
    c = check_for_view(checks, key)
    chart = ablation_chart(checks) if checks.all_off is not None else None
    if c is None:
        return chart, None, None, None, "This network has no attention block the checks can switch off.", ""
    image = panel_image(result.image)

    def draw(m: np.ndarray | None, gradcam: bool = False) -> np.ndarray | None:
        return None if m is None else overlay(image, normalize([m], _single_mode(norm, gradcam))[0], cmap, alpha)

    e, every = c.ablation, checks.all_off
    stage = f" (stage {c.stage})" if c.stage is not None else ""
    top = _label(categories, checks.target) if checks.target is not None else ""
    if e is None or every is None or checks.prob is None:
        lines = [f"**{c.path}**{stage} · {checks.note}"]
    else:
        moved = f"top-1 changes to **{_label(categories, e.top1)}**" if e.top1_changed else "top-1 unchanged"
        every_moved = f"top-1 changes to {_label(categories, every.top1)}" if every.top1_changed else "top-1 unchanged"
        lines = [
            f"**{c.path}**{stage} · class followed: **{top}** (p = {checks.prob:.3f})",
            f"Switching it off ({c.off}): p = {e.prob:.3f} (Δ {e.top1_prob_delta:+.3f}), {moved}. "
            f"Every block off: Δ {every.top1_prob_delta:+.3f}, {every_moved}.",
        ]
    if c.view is None:
        lines.append("This block has no spatial view: no Grad-CAM or sanity scores.")
    else:
        table = [
            "| compared with the block's view | Spearman | top-20 % IoU |",
            "|---|---|---|",
            _scores_row(f"Grad-CAM ({top})", c.gradcam_scores),
            *(
                [_scores_row(f"gradient rollout ({top})", c.gradient_rollout_scores)]
                if c.gradient_rollout_scores
                else []
            ),
            _scores_row("the view with randomised weights", c.randomised_scores),
        ]
        lines.append("\n".join(table))
    attribution = c.gradcam
    if attribution is None and c.gradient_rollout_scores is not None and checks.gradient_rollout is not None:
        attribution = checks.gradient_rollout.map  # token attention: the class-specific gradient rollout
        lines.append(f"Shown beside the view: the network's {GRADIENT_ROLLOUT} for {top}.")
    timing = ", ".join(f"{k} {v:.0f} ms" for k, v in checks.timings.items())
    lines.append(f"block view: {c.view_label or '–'}; the checks took {timing}")
    if c.warning:
        sanity = f"⚠️ **Sanity check: {c.warning}.**"
    elif c.randomised_scores is not None:
        rho = c.randomised_scores["spearman"]
        sanity = f"✅ Sanity check passed: the map changes with randomised weights (Spearman {rho:.2f} ≤ {WARN_ABOVE})."
    else:
        sanity = ""
    chart = with_curves(chart, c)
    return chart, draw(c.view), draw(attribution, gradcam=True), draw(c.randomised), "\n\n".join(lines), sanity


# -- compare -----------------------------------------------------------------------------------------------------


def compare_panel(cmp: Comparison | None, key: str | None, cmap: str, alpha: float) -> tuple[Any, ...]:
    """(A, B, A − B, text, pair key, pair keys) for the compared pair ``key`` (default: the last)."""
    if cmp is None:
        return None, None, None, "Pick another attention type or network and press **Compare**.", None, []
    keys = [p.key for p in cmp.pairs]
    if not keys:
        text = f"**{cmp.label_a}** and **{cmp.label_b}** have no spatial views at a common block or stage."
        return None, None, None, text, None, []
    key = key if key in keys else keys[-1]
    p = cmp.pairs[keys.index(key)]
    image = panel_image(cmp.a.image)
    a, b = overlay(image, p.a, cmap, alpha), overlay(image, p.b, cmap, alpha)
    rows = [f"| {q.key} | {q.scores['spearman']:+.2f} | {q.scores['top20_iou']:.2f} |" for q in cmp.pairs]
    lines = [
        f"A: **{cmp.label_a}** · B: **{cmp.label_b}** · matched by {cmp.unit}",
        f"**{p.key}**: one scale for both, {p.vrange[0]:.4g} .. {p.vrange[1]:.4g} (their joint range); "
        "difference A − B in −1..1 (red: A weights the place more, blue: B).",
        "\n".join([f"| {cmp.unit} | Spearman | top-20 % IoU |", "|---|---|---|", *rows]),
    ]
    lines += [f"⚠️ {side}: {r.warning}" for side, r in (("A", cmp.a), ("B", cmp.b)) if r.warning]
    return a, b, diff_overlay(image, p.diff, max(alpha, 0.5)), "\n\n".join(lines), key, keys


# -- live panel --------------------------------------------------------------------------------------------------


def hook_counts(models: list[nn.Module]) -> tuple[int, int]:
    """(hooks on the modules of ``models``, global module hooks): forward, pre-forward and backward hooks."""
    from torch.nn.modules import module as nn_module

    local = sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for model in models
        for m in model.modules()
    )
    glob = sum(
        len(getattr(nn_module, name, {}))
        for name in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    )
    return local, glob


def _model_line(model: nn.Module) -> str:
    params = sum(p.numel() for p in model.parameters()) / 1e6
    device = next((str(p.device) for p in model.parameters()), "?")
    attention = getattr(model, "attention", None) or "no attention"
    return f"- {type(model).__name__} · {attention} · {meta_of(model).source} · {device} · {params:.1f} M parameters"


def _ms(timings: dict[str, float]) -> str:
    return " · ".join(f"{k} {v:.0f} ms" for k, v in timings.items()) + f" · total {sum(timings.values()):.0f} ms"


def live_text(models: list[nn.Module], result: Any = None, device: str = "cpu", cmp: Comparison | None = None) -> str:
    """The live panel: hooks installed now, the last request's latency by part, peak GPU memory, the model cache."""
    local, glob = hook_counts(models)
    lines = [f"**hooks installed now: {local + glob}** ({local} on the cached models' modules, {glob} global)"]
    if result is not None:
        lines.append(f"last analysis: {_ms(result.timings)}")
        checks = getattr(result, "checks", None)
        if checks is not None:
            lines.append(f"checks: {_ms(checks.timings)}")
        if cmp is not None and cmp.a is result:
            lines.append(f"compare (B's analysis): {_ms(cmp.b.timings)}")
    else:
        lines.append("last analysis: none yet")
    if device == "cuda" and torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
        lines.append(f"peak GPU memory: {peak:.0f} MiB ({torch.cuda.get_device_name()})")
    else:
        lines.append(f"peak GPU memory: no GPU (device {device})")
    cache = f"model cache: {len(models)} model{'s' if len(models) != 1 else ''}"
    lines.append("\n".join([cache, *(_model_line(m) for m in models)]))
    return "\n\n".join(lines)


# -- dataset tab -------------------------------------------------------------------------------------------------


def resolve_report(folder: str) -> tuple[Path, dict[str, Any]]:
    """The stats folder ``folder`` (resolved) and :func:`attnviz.stats.read_report`'s view of it, limited to files
    inside the folder (a summary.json pointing elsewhere, or a link leading out, shows nothing of it). Listed names
    that lead out are dropped by path arithmetic before anything is looked at on disk (``read_report``), so the
    answer neither depends on nor names a file outside the folder.

    Raises:
        ValueError: not a folder, not a finished stats folder.
    """
    from ..stats import read_report

    root = Path(folder.strip()).expanduser()
    if not folder.strip() or not root.is_dir():
        raise ValueError(f"{folder!r} is not a folder on the server")
    root = root.resolve()
    if not _inside(root / "summary.json", root):
        raise ValueError(f"{root} is not a finished `attnviz stats` folder: no summary.json inside it")
    report = read_report(root)
    report["figures"] = [f for f in report["figures"] if _inside(Path(f["path"]), root)]
    report["tables"] = {k: t for k, t in report["tables"].items() if _inside(Path(t["csv"]), root)}
    return root, report


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is a file within ``root`` once links are followed."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return real.is_file() and real.is_relative_to(root)


def _headline_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_headline_value(v)}" for k, v in value.items()) or "–"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return "–" if value is None else str(value)


def report_panel(root: Path, report: dict[str, Any]) -> tuple[str, list[tuple[bytes, str]], list[str]]:
    """(headline text, figures as (PNG bytes, title), table names) of a resolved stats folder."""
    lines = [f"**{report['title']}** · `{root}`", "", "| headline | value |", "|---|---|"]
    lines += [
        f"| {k.replace('_', ' ')} | {_headline_value(v)} |" for k, v in report["headline"].items() if v is not None
    ]
    run = report.get("run") or {}
    if run:
        lines += ["", "run: " + _headline_value(run)]
    if report.get("outside"):
        lines += ["", f"{report['outside']} file(s) listed in summary.json lie outside this folder: not shown"]
    figures = [(Path(f["path"]).read_bytes(), f["title"]) for f in report["figures"]]
    return "\n".join(lines), figures, list(report["tables"])


def report_table(report: dict[str, Any], name: str | None) -> pd.DataFrame:
    """The first :data:`TABLE_ROWS` rows of the folder's table ``name`` (its CSV), or an empty table."""
    table = report["tables"].get(name) if name else None
    if table is None:
        return pd.DataFrame()
    return pd.read_csv(table["csv"], nrows=TABLE_ROWS)
