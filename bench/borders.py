"""Border peaks: how often each attention type's block views peak on the feature map's outer ring, against the
ring's share of the positions (where a spatially shuffled map peaks), on the demo checkpoints over held-out scenes;
and what it comes from:

* padding: the same forward with every padded convolution switched from zero padding to ``replicate`` or
  ``reflect`` padding (the weights stay; a view that follows the padding moves off the border);
* the checkpoints: the border rate of the network's own activation (the channel mean of each residual block's
  output, the plain network's included), which no attention view touches;
* the view: the channel gates' gate effect (the default) and the former gate-weighted mean activation.

Per block, the share of scenes whose view peaks on the ring (:func:`attnviz.stats.localisation.border_peaks`;
tied peaks count by their share); per type, the mean over its blocks, with a 95 % interval over the scenes (normal
approximation of the per-scene block mean). The baseline is the ring's share (:func:`ring_share`) averaged over the
same blocks.

    python bench/borders.py --data data/scenes --scenes 200 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnviz import build_model
from attnviz.capture import AttentionRecorder
from attnviz.data import SceneConfig, SceneDataset
from attnviz.sources.checkpoint import read_card
from attnviz.sources.demo import DEMO_ARCH, demo_file
from attnviz.sources.select import demo_attentions
from attnviz.stats.localisation import border_peaks, ring_share, views_of

TYPES = tuple(demo_attentions())
CHANNEL_ONLY = {"se", "eca", "eca_max", "channel"}


def scenes(card: dict, data: str, n: int, seed: int) -> torch.Tensor:
    """(n, 3, H, W) held-out test scenes, normalised as the model card says."""
    config = SceneConfig.from_dict(card["data"]["train"]["config"]).held_out()
    test = SceneDataset(data, "test", n, seed=seed, config=config)
    x = torch.stack([test[i][0] for i in range(len(test))])
    mean = torch.tensor(card["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def set_padding(model: nn.Module, mode: str) -> None:
    """Every padded convolution pads with ``mode`` (``zeros``, ``replicate``, ``reflect``); the weights stay."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and any(p > 0 for p in m._reversed_padding_repeated_twice):
            m.padding_mode = mode


def residual_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """``layerK.i`` -> the residual block (torchvision ResNet naming)."""
    return {n: m for n, m in model.named_modules() if n.count(".") == 1 and n.startswith("layer")}


def rates(model: nn.Module, x: torch.Tensor, view: str | None, batch: int = 50) -> dict[str, torch.Tensor]:
    """Block -> (n,) border share of its view (``view:BLOCK``) and of its residual block's activation
    (``act:layerK.i``), and the ring's share of each (``ring:...``)."""
    out: dict[str, list[torch.Tensor]] = defaultdict(list)
    acts: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda mod, a, o, n=n: acts.__setitem__(n, o.detach().float().mean(1)))
        for n, m in residual_blocks(model).items()
    ]
    try:
        for i in range(0, len(x), batch):
            with AttentionRecorder(model, activations=True) as rec, torch.inference_mode():
                model(x[i : i + batch])
            for block, (_, v) in views_of(rec.maps, rec.activations, view).items():
                out[f"view:{block}"].append(border_peaks(v))
                out[f"ring:view:{block}"].append(torch.full((len(v),), ring_share(tuple(v.shape[1:]))))
            for block, a in acts.items():
                out[f"act:{block}"].append(border_peaks(a))
                out[f"ring:act:{block}"].append(torch.full((len(a),), ring_share(tuple(a.shape[1:]))))
    finally:
        for h in handles:
            h.remove()
    return {k: torch.cat(v) for k, v in out.items()}


def summary(r: dict[str, torch.Tensor], prefix: str, stage: str = "") -> dict[str, float] | None:
    keys = [k for k in r if k.startswith(prefix) and stage in k]
    if not keys:
        return None
    per_scene = torch.stack([r[k] for k in keys]).mean(0).numpy()  # (n,) block mean per scene
    base = float(torch.stack([r["ring:" + k] for k in keys]).mean())
    half = 1.96 * per_scene.std(ddof=1) / np.sqrt(len(per_scene))
    return {"rate": float(per_scene.mean()), "ci": float(half), "ring": base, "blocks": len(keys)}


def measure(attention: str | None, data: str, n: int, seed: int) -> dict:
    path = demo_file(attention)
    card = read_card(path)
    model = build_model(DEMO_ARCH, attention, weights=str(path)).eval()
    x = scenes(card, data, n, seed)
    row: dict = {"attention": attention or "plain", "scenes": len(x)}
    t0 = time.perf_counter()
    views = [None, "gate-weighted"] if attention in CHANNEL_ONLY else [None]
    for pad in ("zeros", "replicate", "reflect"):
        set_padding(model, pad)
        for view in views:
            try:
                r = rates(model, x, view)
            except RuntimeError:  # reflect padding wider than a small map (EPSA's 9 x 9 kernel on 4 x 4): not run
                continue
            name = "view" if view is None else view
            row[f"{name} {pad}"] = summary(r, "view:")
            row[f"{name} {pad} layer2"] = summary(r, "view:", "layer2.")
            if view is None:
                row[f"activation {pad}"] = summary(r, "act:")
                row[f"activation {pad} layer2"] = summary(r, "act:", "layer2.")
    set_padding(model, "zeros")
    row["seconds"] = time.perf_counter() - t0
    return row


def _cell(s: dict | None) -> str:
    return "-" if s is None else f"{100 * s['rate']:.1f} ± {100 * s['ci']:.1f} ({100 * s['ring']:.0f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/scenes")
    ap.add_argument("--scenes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--types", default="plain," + ",".join(TYPES))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    rows = []
    print("Border-peak rate, % of scenes (ring's share of positions in brackets); mean ± 95 % CI over the scenes")
    print("| type | map | zero padding | zero padding, layer2 | replicate padding | reflect padding |")
    print("|---|---|---|---|---|---|")
    for t in args.types.split(","):
        r = measure(None if t == "plain" else t, args.data, args.scenes, args.seed)
        rows.append(r)
        for name in ("view", "gate-weighted", "activation"):
            if r.get(f"{name} zeros") is None:
                continue
            label = {"view": "block view (default)", "gate-weighted": "gate-weighted (old view)"}.get(
                name, "residual block output (channel mean)"
            )
            cells = " | ".join(_cell(r.get(k)) for k in (f"{name} zeros", f"{name} zeros layer2"))
            cells += " | " + " | ".join(_cell(r.get(f"{name} {p}")) for p in ("replicate", "reflect"))
            print(f"| {r['attention']} | {label} | {cells} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
