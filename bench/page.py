"""How long a page takes after the forward: the request's parts side by side, each as a ratio to the forward.

    python bench/page.py [--arch resnet50] [--attention cbam] [--size 224] [--repeat 20] [--profile]

One Analyze click as the server runs it, on attnviz's own network (random weights) and the example photo, per round:
  forward   the model's bare forward on the prepared input (inference_mode): the yardstick
  hooked    analyze's forward inside the AttentionRecorder (its own timing)
  capture   the maps read back (analyze's timing)
  views     the handler's views and their normalisation (its ``views`` timing)
  drawing   the handler's overlays, chart table, detail and status (its ``render`` timing)
  encoding  Gradio's postprocessing of every output (gallery JPEGs, PNG views, files in its cache)
Ratios are medians of per-round ratios to the bare forward. Target: capture + views + drawing + encoding (all that
follows the forward) <= 0.3x. ``--profile`` adds cProfile's top functions of drawing + encoding.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

import torch
from _common import header, med, ratio, table

from attnviz.app import AppConfig, Handlers, build_demo
from attnviz.pipeline.core import DEFAULT_CACHE, model_input
from attnviz.pipeline.image import decode_image
from attnviz.sources.meta import meta_of

IMAGE = Path(__file__).resolve().parent.parent / "assets" / "chelsea_cat.jpg"
OUTPUT_IDS = ["predictions", "predictions-note", "overlays", "block-select", "block-view", "channel-chart"]
OUTPUT_IDS += ["block-detail", "status", "head-select"]
PARTS = ["capture", "views", "drawing", "encoding"]


def encoder(demo: object) -> object:
    """Gradio's postprocessing of the Image tab's outputs (what happens to a handler's return values before they
    are sent: images encoded, files written into its cache); component updates are already processed."""
    import gradio as gr

    comps = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}  # type: ignore[attr-defined]
    outputs = [comps[i] for i in OUTPUT_IDS]

    def encode(values: tuple) -> None:
        for comp, value in zip(outputs, values, strict=True):
            if not isinstance(value, gr.components.Component):
                comp.postprocess(value)

    return encode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--attention", default="cbam")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="3 rounds: a smoke run (not for the record)")
    ap.add_argument("--profile", action="store_true", help="cProfile of drawing + encoding (10 display changes)")
    args = ap.parse_args()
    if args.quick:
        args.repeat = 3
    config = AppConfig(device="cpu", size=args.size, offline=True)
    app = Handlers(config)
    encode = encoder(build_demo(config, app))
    request = (str(IMAGE), args.attention, args.arch, "random", "turbo", 0.5, "map", "32", None)
    state, *values = app.run_analysis(*request)  # warm: the model is built and cached
    encode(tuple(values))
    model = DEFAULT_CACHE.get(args.arch, args.attention, "random", "cpu")
    x = model_input(decode_image(IMAGE).image, meta_of(model).preprocess, args.size)
    w, h = decode_image(IMAGE).image.size
    header(
        "A page's time after the forward (bench/page.py)",
        "cpu",
        f"{args.arch} + {args.attention}, random weights, image {IMAGE.name} ({w}x{h}), short side {args.size}; "
        f"medians of {args.repeat} rounds; x = median of per-round ratios to the bare forward",
    )
    t: dict[str, list[float]] = {k: [] for k in ["forward", "hooked", *PARTS]}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(x)
        t["forward"].append((time.perf_counter() - t0) * 1e3)
        state, *values = app.run_analysis(*request)
        timings = state.result.timings
        t0 = time.perf_counter()
        encode(tuple(values))
        t["encoding"].append((time.perf_counter() - t0) * 1e3)
        t["hooked"].append(timings["forward"])
        t["capture"].append(timings["capture"])
        t["views"].append(timings["views"])
        t["drawing"].append(timings["render"])
    after = [sum(t[k][i] for k in PARTS) for i in range(args.repeat)]
    rows = [[k, f"{med(v):.1f}", f"{ratio(v, t['forward']):.3f}"] for k, v in t.items()]
    rows.append(["**after the forward**", f"{med(after):.1f}", f"**{ratio(after, t['forward']):.3f}**"])
    table(["part", "ms", "x forward"], rows)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(10):
            encode(app.render_outputs(state, "turbo", 0.5, "map", "32", None))
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
