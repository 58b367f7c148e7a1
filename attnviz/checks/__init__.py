"""Checks for every attention block: does switching it off change the decision (ablation), does its map agree with
Grad-CAM at the same place (Selvaraju et al., ICCV 2017) or, for token attention, the network's gradient rollout
(Chefer et al., ICCV 2021: :mod:`attnviz.checks.gradient`), does it depend on the trained weights (cascading
randomisation, Adebayo et al., NeurIPS 2018)? Is it faithful: does removing the pixels it ranks first lower the
class's probability faster than Grad-CAM, a centre prior or a random map (deletion/insertion, Petsiuk et al., BMVC
2018; ROAD, Rong et al., ICML 2022; the math in :mod:`attnviz.checks.faithfulness`)?

    checks = attnviz.checks.run_checks(model, x)           # a model and one preprocessed image (1, 3, H, W)
    checks = attnviz.checks.check_result(result)           # or an analyze() result (its model from the cache)
    checks.blocks["layer2.1.attn"].ablation.top1_prob_delta, checks.all_off.top1_changed
    checks.blocks["layer2.1.attn"].gradcam_scores          # {"spearman": ..., "top20_iou": ...}
    checks.blocks["layer2.1.attn"].faithfulness["gradcam"].json()["deletion"]   # AUC; also insertion, road_*
    checks.json()                                          # {"checks": {...}, "checks_all_off": {...}}

Every check works on attnviz's own blocks, adapted timm/torchvision classes and discovered sites alike (one
mechanism: :mod:`attnviz.checks.ablate`), and leaves the model as it was (no hook, no ``.grad``, the same logits).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..capture.fused import MemoryLimitError
from ..capture.hooks import model_lock
from ..pipeline.core import cached_model, model_input
from ..render import figure_png, normalize, value_range
from ..render.naming import safe_name
from ..sources.meta import meta_of
from .ablate import OFF, Ablation, AblationResult, Effect, NotAClassifierError, ablate, neutral
from .attribution import agreement, gradcam, rank, resize, spearman, top_iou
from .blocks import Block, block_view, find_blocks
from .faithfulness import BLUR_SIGMA, ROAD_FRACTIONS, ROAD_NOISE, STEPS, Curves, centre_prior, curve_inputs, random_map
from .gradient import GradientRollout, gradient_rollout_check
from .sanity import WARN_ABOVE, call_order, randomise_from, randomised_views, warn

__all__ = [
    "OFF",
    "WARN_ABOVE",
    "Ablation",
    "AblationResult",
    "Block",
    "BlockCheck",
    "Checks",
    "Curves",
    "Effect",
    "GradientRollout",
    "NotAClassifierError",
    "ablate",
    "ablation_chart_png",
    "agreement",
    "block_view",
    "block_faithfulness",
    "call_order",
    "check_files",
    "check_result",
    "centre_prior",
    "faithfulness",
    "faithfulness_chart_png",
    "find_blocks",
    "gradcam",
    "gradient_rollout_check",
    "neutral",
    "randomise_from",
    "randomised_views",
    "random_map",
    "rank",
    "resize",
    "run_checks",
    "spearman",
    "top_iou",
    "warn",
]


@dataclass
class BlockCheck:
    """Every check of one block.

    Attributes:
        path: the attention module's path (the key in result.json's ``"checks"``).
        stage: the network's stage, or ``None``.
        maps: names of the block's maps; kinds: their kinds.
        off: what switching it off means (:data:`OFF`).
        ablation: the :class:`Effect` of switching it alone off (``None``: the model is no classifier).
        view: its spatial view (h, w) as the app draws it, or ``None`` (a block without one: no Grad-CAM scores).
        view_label: what ``view`` shows.
        gradcam: Grad-CAM at the module's output for the checks' class, (h, w) at the module's resolution, or None.
        gradcam_scores: ``{"spearman", "top20_iou"}`` of ``view`` and ``gradcam`` (on the view's grid), or None.
        gradient_rollout_scores: ``{"spearman", "top20_iou"}`` of ``view`` and the network's gradient rollout
            (:attr:`Checks.gradient_rollout`), for the blocks of token attention it runs over; else None.
        randomised: the view with the weights randomised down to this block (:mod:`attnviz.checks.sanity`), or None.
        randomised_scores: ``{"spearman", "top20_iou"}`` of ``view`` and ``randomised``, or None.
        warning: '' or the sanity warning (randomised Spearman above :data:`WARN_ABOVE`).
        faithfulness: method (``attention``: ``view``; ``gradcam``; ``centre``: a centred Gaussian on the view's
            grid; ``random``: a seeded uniform map on it) -> its :class:`~attnviz.checks.faithfulness.Curves`, or None.
    """

    path: str
    stage: int | None
    maps: list[str]
    kinds: list[str]
    off: str
    ablation: Effect | None
    view: np.ndarray | None = None
    view_label: str = ""
    gradcam: np.ndarray | None = None
    gradcam_scores: dict[str, float] | None = None
    gradient_rollout_scores: dict[str, float] | None = None
    randomised: np.ndarray | None = None
    randomised_scores: dict[str, float] | None = None
    warning: str = ""
    faithfulness: dict[str, Curves] | None = None

    def json(self) -> dict[str, Any]:
        """This block's entry of result.json's ``"checks"``."""
        out: dict[str, Any] = {} if self.ablation is None else {"ablation": self.ablation.json()}
        if self.gradcam_scores is not None:
            out["gradcam"] = dict(self.gradcam_scores)
        if self.gradient_rollout_scores is not None:
            out["gradient_rollout"] = dict(self.gradient_rollout_scores)
        if self.randomised_scores is not None:
            out["randomised"] = {**self.randomised_scores, "warning": self.warning}
        if self.faithfulness is not None:
            out["faithfulness"] = {k: c.json() for k, c in self.faithfulness.items()}
        out.update({"stage": self.stage, "maps": list(self.maps), "off": self.off})
        return out


@dataclass
class Checks:
    """What :func:`run_checks` returns.

    Attributes:
        target: the class the ablation follows and Grad-CAM explains (the prediction unless another was asked for);
            ``None`` when the model's output is not class logits (a detector's): no ablation, no Grad-CAM.
        prob: its probability with every block on (``None`` likewise).
        blocks: block path -> :class:`BlockCheck`, in forward order.
        all_off: the :class:`Effect` of every block off at once (``None`` likewise).
        seed: the randomisation's seed.
        timings: milliseconds per check (find, ablation, gradcam, randomisation).
        note: what was skipped and why ('' when every check ran).
        gradient_rollout: the network's class-specific gradient rollout of its token attention
            (:class:`~attnviz.checks.gradient.GradientRollout`), or ``None`` (no token attention it applies to, not
            asked for, or no class).
    """

    target: int | None
    prob: float | None
    blocks: dict[str, BlockCheck]
    all_off: Effect | None
    seed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    note: str = ""
    gradient_rollout: GradientRollout | None = None

    def json(self) -> dict[str, Any]:
        """``{"checks": {block path: {...}}, "checks_all_off": {...}}``, the keys result.json gets (and
        ``"checks_gradient_rollout"`` where the gradient rollout ran)."""
        info = {"target": self.target, "prob": self.prob, "seed": self.seed, "timings_ms": self.timings}
        if any(c.faithfulness for c in self.blocks.values()):
            info["faithfulness"] = FAITHFULNESS_SETTINGS
        out = {
            "checks": {k: v.json() for k, v in self.blocks.items()},
            "checks_all_off": None if self.all_off is None else self.all_off.json(),
            "checks_info": {**info, "note": self.note} if self.note else info,
        }
        if self.gradient_rollout is not None:
            out["checks_gradient_rollout"] = self.gradient_rollout.json()
        return out


#: how the faithfulness curves are made (result.json's ``checks_info.faithfulness``)
FAITHFULNESS_SETTINGS: dict[str, Any] = {
    "steps": STEPS,
    "road_fractions": list(ROAD_FRACTIONS),
    "road_noise": ROAD_NOISE,
    "deletion": "pixels replaced by the dataset mean (0 in the normalised input), highest first; AUC, lower = more "
    "faithful",
    "insertion": f"pixels revealed on the image blurred with sigma {BLUR_SIGMA:g} px; AUC, higher = more faithful",
    "road_morf": "ROAD, most relevant removed first, noisy-linear imputation; mean probability, lower = more faithful",
    "road_lerf": "ROAD, least relevant removed first; mean probability, higher = more faithful",
}


@torch.inference_mode()
def target_probs(model: nn.Module, batch: Tensor, target: int, chunk: int = 64) -> list[float]:
    """Softmax probability of class ``target`` for each image of ``batch`` (K, C, H, W), ``chunk`` per forward."""
    out = []
    with model_lock(model):
        for i in range(0, batch.shape[0], chunk):
            logits = model(batch[i : i + chunk])
            out += logits.float().softmax(1)[:, target].cpu().tolist()
    return out


def faithfulness(
    model: nn.Module,
    x: Tensor,
    maps: dict[str, np.ndarray],
    target: int,
    *,
    steps: int = STEPS,
    fractions: tuple[float, ...] = ROAD_FRACTIONS,
    chunk: int = 64,
    seed: int = 0,
    cache: dict[tuple, Curves] | None = None,
    solver: str = "auto",
) -> dict[str, Curves]:
    """Deletion, insertion and ROAD MoRF/LeRF curves of each map for class ``target``: per map, the four curves'
    inputs (:func:`attnviz.checks.faithfulness.curve_inputs`) go through the model as one batch (``chunk`` images per
    forward). Equal maps (a centre prior or random map on a grid already seen) are computed once.

    Args:
        model: the classifier. x: (1, 3, H, W) the preprocessed image. maps: name -> (h, w) map, any resolution.
        cache: curves already made for this image and target, by map (shared across calls: blocks on one grid share
            their centre prior and random map).
        solver: ROAD's imputation solver (:func:`attnviz.checks.faithfulness.road_impute`: direct with scipy, else
            conjugate gradients).
    """
    done: dict[tuple, Curves] = {} if cache is None else cache
    out: dict[str, Curves] = {}
    for name, m in maps.items():
        key = (m.shape, np.asarray(m, dtype=np.float32).tobytes())
        if key not in done:
            batch, lens = curve_inputs(x[:1], m, steps=steps, fractions=fractions, seed=seed, solver=solver)
            p = target_probs(model, batch, target, chunk)
            cut = np.cumsum([0, *lens])
            parts = [p[a:b] for a, b in itertools.pairwise(cut)]
            done[key] = Curves(*parts, fractions=list(fractions))
        out[name] = done[key]
    return out


def block_faithfulness(model: nn.Module, x: Tensor, *, steps: int = STEPS, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Each block's faithfulness scores for one image (what ``attnviz stats --faithfulness`` keeps): block path ->
    ``{"stage", "scores": {method: {"deletion", "insertion", "road_morf", "road_lerf"}}}`` (:func:`run_checks`
    without the randomisation; empty when the model is no classifier)."""
    c = run_checks(model, x, randomise=False, faithful=True, seed=seed, steps=steps)
    return {
        p: {
            "stage": b.stage,
            "scores": {m: {k: v for k, v in cv.json().items() if k != "curves"} for m, cv in b.faithfulness.items()},
        }
        for p, b in c.blocks.items()
        if b.faithfulness
    }


def _kind_off(kinds: list[str], residual: bool) -> str:
    if residual:
        return "skip path: the module's output replaced by its input"
    return "; ".join(dict.fromkeys(f"{k}: {OFF[k]}" for k in kinds))


def run_checks(
    model: nn.Module,
    x: Tensor,
    *,
    target: int | None = None,
    gradcam_on: bool = True,
    gradient_rollout_on: bool = True,
    randomise: bool = True,
    seed: int = 0,
    query: tuple[float, float] | None = None,
    batch_size: int = 16,
    faithful: bool = False,
    steps: int = STEPS,
) -> Checks:
    """Ablation, Grad-CAM agreement and the randomisation check for every attention block, for one image.

    Args:
        model: a classifier (any network the recorder reads), in the mode it serves in; it is left as it was.
        x: (1, 3, H, W) the preprocessed image on the model's device.
        target: the class followed and explained (default: the predicted one).
        gradcam_on: compute Grad-CAM and its agreement (one forward and one backward for every block).
        gradient_rollout_on: for token attention (ViT, DeiT, registers, torchvision's ViT), compute the network's
            gradient rollout (Chefer et al. 2021; one forward and one backward) and its agreement with each token
            block's view.
        randomise: compute the randomised maps (one deep copy, one forward per block).
        seed: the randomisation's seed.
        query: (x, y) fractions of the image: the query of pairwise and token views (``None``: each kind's default,
            the centre for pairwise maps, the class token for token maps).
        batch_size: most images per ablation forward.
        faithful: the faithfulness curves of each block's view, Grad-CAM, a centre prior and a random map
            (:func:`faithfulness`: one batch of 2 (steps + 1) + 10 images per map, about 1 s of ROAD imputation at
            224 px; per map on a CPU over 100x a plain forward of the one image (bench/faithfulness.py), so only on
            request).
        steps: deletion/insertion steps.
    """
    t = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(key: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[key] = (now - t) * 1e3
        t = now

    blocks, maps, acts = find_blocks(model, x)
    lap("find")
    abl: AblationResult | None = None
    note = ""
    try:
        abl = ablate(model, x, blocks, target=target, batch_size=batch_size)
    except NotAClassifierError as e:
        note = f"{e}: ablation and Grad-CAM skipped (they follow a class); the randomisation check ran"
    lap("ablation")
    cams: dict[str, np.ndarray] = {}
    if gradcam_on and abl is not None:
        cams, _ = gradcam(model, x, blocks, abl.target)
        lap("gradcam")
    grad_rollout: GradientRollout | None = None
    if gradient_rollout_on and abl is not None:
        try:
            grad_rollout = gradient_rollout_check(model, x, blocks, maps, abl.target)
        except (ValueError, MemoryLimitError) as e:  # a layout it cannot follow, or past the memory limit: said
            note = f"gradient rollout skipped: {e}"
        lap("gradient_rollout")
    rand: dict[str, np.ndarray | None] = {}
    if randomise:
        rand = randomised_views(model, x, blocks, seed=seed, query=query)
        lap("randomisation")
    out: dict[str, BlockCheck] = {}
    for b in blocks:
        view, label, _ = block_view(b, maps, acts, query)
        off = _kind_off(b.kinds, b.residual)
        check = BlockCheck(b.path, b.stage, list(b.maps), list(b.kinds), off, abl and abl.blocks[b.path])
        if view is not None:
            check.view, check.view_label = view, label
            cam = cams.get(b.path)
            if cam is not None:
                check.gradcam = cam
                check.gradcam_scores = agreement(view, cam)
            if grad_rollout is not None and b.path in grad_rollout.layout.blocks:
                check.gradient_rollout_scores = agreement(view, grad_rollout.map)
            r = rand.get(b.path)
            if r is not None:
                check.randomised = r
                check.randomised_scores = agreement(view, r)
                check.warning = warn(check.randomised_scores["spearman"])
        out[b.path] = check
    if faithful and abl is not None:
        made: dict[tuple, Curves] = {}
        for check in out.values():
            if check.view is None:
                continue
            maps = {"attention": check.view}
            if check.gradcam is not None:
                maps["gradcam"] = check.gradcam
            maps["centre"] = centre_prior(check.view.shape)
            maps["random"] = random_map(check.view.shape, seed)
            check.faithfulness = faithfulness(model, x, maps, abl.target, steps=steps, seed=seed, cache=made)
        lap("faithfulness")
    if abl is None:
        return Checks(None, None, out, None, seed, timings, note)
    return Checks(abl.target, abl.prob, out, abl.all_off, seed, timings, note, grad_rollout)


def check_result(result: Any, model: nn.Module | None = None, cache: Any = None, **kwargs: Any) -> Checks:
    """:func:`run_checks` for an :func:`attnviz.analyze` / ``analyze_many`` result, and store them on it as
    ``result.checks`` (the export writes them: :func:`check_files`).

    Args:
        result: the :class:`~attnviz.pipeline.core.Result`.
        model: the model that made it (default: from ``cache``, or the process-wide cache, by its settings).
        cache: the :class:`~attnviz.pipeline.core.ModelCache` it came from.
        kwargs: for :func:`run_checks` (``target``, ``gradcam_on``, ``randomise``, ``seed``, ``query``, ...).
    """

    s = result.settings
    if model is None:
        model = cached_model(s["arch"], s["attention"], s["weights"], s["device"], cache)
    x = model_input(result.image, meta_of(model).preprocess, s["size"]).to(s["device"])
    checks = run_checks(model, x, **kwargs)
    result.checks = checks
    return checks


def check_files(result: Any, settings: dict[str, Any]) -> list[tuple[str, bytes]]:
    """The files of ``result.checks`` for an export: per block with a spatial view, ``checks/<i>_<block>.gradcam``
    and ``.randomised`` as ``.npy`` (the raw (h, w) map) and ``.png`` (overlay with a colorbar, drawn as the block's
    view: same colormap and alpha, normalised with the export's mode, ``absolute`` taken as ``map`` for Grad-CAM),
    ``checks/gradient_rollout.npy`` and ``.png`` (the network's gradient rollout, drawn as Grad-CAM) where it ran, and
    ``checks/ablation.png`` (the per-block bar chart)."""
    import io

    checks: Checks | None = getattr(result, "checks", None)
    if checks is None:
        return []
    image = np.asarray(result.image)
    cmap, alpha, norm = settings["cmap"], settings["alpha"], settings["norm"]
    files: list[tuple[str, bytes]] = []
    for i, (path, c) in enumerate(checks.blocks.items()):
        stem = f"checks/{i:02d}_{safe_name(path)}"
        for what, m in (("gradcam", c.gradcam), ("randomised", c.randomised)):
            if m is None:
                continue
            buf = io.BytesIO()
            np.save(buf, m.astype(np.float32))
            files.append((f"{stem}.{what}.npy", buf.getvalue()))
            mode = "map" if what == "gradcam" and norm == "absolute" else norm
            mode = "map" if mode in ("stage", "network") else mode  # a single map: its own range
            m01 = normalize([m], mode)[0]
            vr = value_range([m], mode)[0]
            label = "Grad-CAM" if what == "gradcam" else f"randomised: {c.view_label}"
            scores = c.gradcam_scores if what == "gradcam" else c.randomised_scores
            title = f"{path} · {what}" + (f" (Spearman {scores['spearman']:.2f})" if scores else "")
            files.append((f"{stem}.{what}.png", figure_png(image, m01, cmap, alpha, title, vr, label)))
    gr = checks.gradient_rollout
    if gr is not None:
        buf = io.BytesIO()
        np.save(buf, gr.map.astype(np.float32))
        files.append(("checks/gradient_rollout.npy", buf.getvalue()))
        mode = "map" if norm in ("absolute", "stage", "network") else norm
        title = f"model · {gr.json()['method']}, class {gr.target}"
        label = f"class token's relevance over {len(gr.sites)} blocks"
        m01, vr = normalize([gr.map], mode)[0], value_range([gr.map], mode)[0]
        files.append(("checks/gradient_rollout.png", figure_png(image, m01, cmap, alpha, title, vr, label)))
    if checks.all_off is not None:
        files.append(("checks/ablation.png", ablation_chart_png(checks)))
    return files


def ablation_chart_png(checks: Checks, title: str = "") -> bytes:
    """A bar per block: the change of the top-1 class's probability when that block alone is off, and all off."""
    import io

    from matplotlib.figure import Figure

    if checks.all_off is None:
        raise ValueError(f"no ablation to draw: {checks.note}")
    effects = [c.ablation for c in checks.blocks.values() if c.ablation is not None] + [checks.all_off]
    names = [*checks.blocks, "all off"]
    deltas = [e.top1_prob_delta for e in effects]
    changed = [e.top1_changed for e in effects]
    fig = Figure(figsize=(max(4.0, 0.45 * len(names) + 1.5), 3.2), dpi=120)
    ax = fig.add_subplot()
    colors = ["#d62728" if c else "#1f77b4" for c in changed]
    ax.bar(range(len(names)), deltas, color=colors)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("Δ p(top-1), block off")
    ax.set_title(title or f"switching a block off (red: top-1 changes); p = {checks.prob:.3f}", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


#: the methods' colours in the faithfulness chart
_COLORS = {"attention": "#d62728", "gradcam": "#1f77b4", "centre": "#7f7f7f", "random": "#bcbd22"}


def faithfulness_chart_png(check: BlockCheck, title: str = "") -> bytes:
    """A small figure of one block's faithfulness curves: deletion, insertion, ROAD (MoRF solid, LeRF dashed), one
    line per method, the AUC (deletion, insertion) or mean (ROAD) in the legend."""
    import io

    from matplotlib.figure import Figure

    if not check.faithfulness:
        raise ValueError(f"{check.path} has no faithfulness curves")
    fig = Figure(figsize=(7.5, 2.4), dpi=110)
    axes = fig.subplots(1, 3, sharey=True)
    for name, c in check.faithfulness.items():
        j, color = c.json(), _COLORS.get(name)
        f = np.linspace(0, 1, len(c.deletion))
        axes[0].plot(f, c.deletion, color=color, lw=1.2, label=f"{name} {j['deletion']:.2f}")
        axes[1].plot(f, c.insertion, color=color, lw=1.2, label=f"{name} {j['insertion']:.2f}")
        axes[2].plot(c.fractions, c.road_morf, color=color, lw=1.2, label=f"{name} {j['road_morf']:.2f}")
        axes[2].plot(c.fractions, c.road_lerf, color=color, lw=1.0, ls="--", label=f"{j['road_lerf']:.2f}")
    titles = ("deletion (lower = faithful)", "insertion (higher)", "ROAD MoRF — / LeRF --")
    for ax, t in zip(axes, titles, strict=True):
        ax.set_title(t, fontsize=8)
        ax.set_xlabel("fraction of pixels", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5, loc="best", ncol=2 if ax is axes[2] else 1)
    axes[0].set_ylabel("p(class)", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
