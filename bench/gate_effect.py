"""The sanity check of the channel-gate views: the cascading randomisation test (Adebayo et al., "Sanity Checks for
Saliency Maps", NeurIPS 2018; :mod:`attnviz.checks.sanity`) of the gate effect view (the default) and the former
gate-weighted mean activation (``view="gate-weighted"``), on the demo checkpoints, over held-out scenes and the
example photos.

Per image, each block's view is computed with the trained weights and again with the weights re-drawn from the
classifier down to that block (the cascade of :func:`attnviz.checks.randomised_views`, both views read from each of
its forwards); the figure is Spearman's rank correlation of the two, averaged over the image's blocks, then mean and
95 % interval over the images (normal approximation, 1.96 standard errors). SE, ECA, ECA avg+max and CBAM's channel
gate alone (``channel``) are read through the library's views; the channel gate inside CBAM (whose block view is its
spatial gate) is read with hooks on its ``channel`` submodule and the same :func:`attnviz.capture.kinds.gate_effect`.
A timm ImageNet SE network is not measured: no ImageNet weights are cached on this machine and nothing is downloaded.

    python bench/gate_effect.py --data data/scenes --scenes 40 [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from attnviz import build_model
from attnviz.blocks.tap import Tap
from attnviz.capture.kinds import gate_effect
from attnviz.checks import call_order, find_blocks, randomise_from, spearman
from attnviz.checks.blocks import block_view
from attnviz.data import SceneConfig, SceneDataset
from attnviz.pipeline.image import preprocess
from attnviz.sources.checkpoint import read_card
from attnviz.sources.demo import DEMO_ARCH, demo_file, examples_dir

LIBRARY = ("se", "eca", "eca_max", "channel")  # channel-only blocks: the block view is the channel map's
HOOKED = ("cbam", "cbam_sc")  # the channel gate inside CBAM, read with hooks
VIEWS = {"new": None, "old": "gate-weighted"}


def images(card: dict, data: str, scenes: int, seed: int) -> list[tuple[str, torch.Tensor]]:
    """Held-out test scenes and the example photos, preprocessed as the model card says."""
    config = SceneConfig.from_dict(card["data"]["train"]["config"]).held_out()
    test = SceneDataset(data, "test", scenes, seed=seed, config=config)
    mean = torch.tensor(card["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["std"]).view(1, 3, 1, 1)
    out = [(f"scene {i}", (test[i][0][None] - mean) / std) for i in range(len(test))]
    for p in sorted(examples_dir().glob("*.jpg")):
        out.append((p.name, preprocess(Image.open(p).convert("RGB"), card["input_size"], card["mean"], card["std"])))
    return out


def library_rhos(model: nn.Module, x: torch.Tensor, seed: int) -> dict[str, list[float]]:
    """Per view name, each block's randomisation Spearman for one image: the cascade of
    :func:`attnviz.checks.randomised_views` (one deep copy, re-drawn from the last block down), both views read from
    each of its forwards."""
    blocks, maps, acts = find_blocks(model, x)
    base = {k: {b.path: block_view(b, maps, acts, None, view)[0] for b in blocks} for k, view in VIEWS.items()}
    twin = copy.deepcopy(model)
    order = call_order(twin, x)
    mods = dict(twin.named_modules())
    out: dict[str, list[float]] = {k: [] for k in VIEWS}
    done = None
    for b in sorted(blocks, key=lambda b: -order[id(mods[b.path])]):
        start = order[id(mods[b.path])]
        randomise_from(twin, start, order, seed, done)
        done = start
        tb, tmaps, tacts = find_blocks(twin, x)
        mine = next(t for t in tb if t.path == b.path)
        for k, view in VIEWS.items():
            r = block_view(mine, tmaps, tacts, None, view)[0]
            if base[k][b.path] is not None and r is not None:
                out[k].append(spearman(base[k][b.path], r))
    return out


def _gates(model: nn.Module) -> dict[str, nn.Module]:
    """Module path -> the module that multiplies its input by a channel gate tap (``x * tap(g)``)."""
    return {
        name: m
        for name, m in model.named_modules()
        if any(isinstance(c, Tap) and c.kind == "channel" for c in m.children())
    }


def _hooked_views(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Gating module path -> (gate effect, gate-weighted mean activation), from its input, output and gate."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    gate: dict[str, torch.Tensor] = {}
    handles = []
    for name, m in _gates(model).items():

        def io(mod: nn.Module, args: tuple, out: torch.Tensor, name: str = name) -> None:
            seen[name] = (args[0][0].float().mean(0), out[0].float().mean(0))  # (h, w) input and output means

        def tap(mod: nn.Module, args: tuple, out: torch.Tensor, name: str = name) -> None:
            gate[name] = out[0].reshape(-1).float()  # (C,)

        handles.append(m.register_forward_hook(io))
        handles += [c.register_forward_hook(tap) for c in m.children() if isinstance(c, Tap)]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {k: (gate_effect(gate[k].numpy(), o.numpy(), i.numpy()), o.numpy().copy()) for k, (i, o) in seen.items()}


def hooked_rhos(model: nn.Module, x: torch.Tensor, seed: int) -> dict[str, list[float]]:
    """As :func:`library_rhos` for the channel gates inside CBAM: the cascade runs down to the whole CBAM module (the
    block the checks randomise), the views are the channel gate's."""
    base = _hooked_views(model, x)
    twin = copy.deepcopy(model)
    order = call_order(twin, x)
    mods = dict(twin.named_modules())
    gates = _gates(twin)
    out: dict[str, list[float]] = {"new": [], "old": []}
    done = None
    for name in sorted(gates, key=lambda k: -order[id(mods[k.rpartition(".")[0]])]):
        start = order[id(mods[name.rpartition(".")[0]])]  # the CBAM module (``layerK.i.attn``)
        randomise_from(twin, start, order, seed, done)
        done = start
        rand = _hooked_views(twin, x)[name]
        out["new"].append(spearman(base[name][0], rand[0]))
        out["old"].append(spearman(base[name][1], rand[1]))
    return out


def summary(per_image: list[float]) -> dict[str, float]:
    a = np.asarray([v for v in per_image if np.isfinite(v)], dtype=np.float64)
    half = 1.96 * a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")
    return {"mean": float(a.mean()), "ci": float(half), "n": len(a)}


def measure(attention: str, data: str, scenes: int, seed: int) -> dict:
    path = demo_file(attention)
    card = read_card(path)
    model = build_model(DEMO_ARCH, attention, weights=str(path)).eval()
    per: dict[str, list[float]] = {k: [] for k in VIEWS}
    blocks = 0
    t0 = time.perf_counter()
    for _, x in images(card, data, scenes, seed):
        rhos = hooked_rhos(model, x, seed) if attention in HOOKED else library_rhos(model, x, seed)
        for k in VIEWS:
            per[k].append(float(np.nanmean(rhos[k])))
        blocks = len(rhos["new"])
    return {
        "attention": attention,
        "blocks": blocks,
        **{k: summary(v) for k, v in per.items()},
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/scenes")
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--types", default=",".join(LIBRARY + HOOKED))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one image at a time: threads only contend
    rows = []
    print("| type | blocks | images | gate effect (new) | gate-weighted (old) |")
    print("|---|---|---|---|---|")
    for t in args.types.split(","):
        r = measure(t, args.data, args.scenes, args.seed)
        rows.append(r)
        new, old = r["new"], r["old"]
        where = " (channel gate in CBAM, hooked)" if t in HOOKED else ""
        print(
            f"| {t}{where} | {r['blocks']} | {new['n']} | {new['mean']:+.3f} ± {new['ci']:.3f} | "
            f"{old['mean']:+.3f} ± {old['ci']:.3f} |",
            flush=True,
        )
    print(
        "\nSpearman of each block's view before/after cascading randomisation (classifier down to the block), "
        "mean over the blocks of an image; mean ± 95 % CI over the images (held-out scenes + example photos). "
        "timm ImageNet SE network: no cached weights here (nothing is downloaded), not measured.",
        file=sys.stderr,
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
