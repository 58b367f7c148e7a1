"""attnviz end to end vs a bare forward and vs gradient CAMs, on the same model and image, in one run.

    python bench/analyze.py [--quick] [--archs resnet18 resnet50] [--attentions cbam] [--size 224] [--repeat 10]

Variants, interleaved round by round (medians; ratios are medians of per-round ratios):
  bare       the model's forward alone (inference_mode; on CUDA bfloat16 autocast as the app), input prepared
  analyze    attnviz.analyze: decode the file, preprocess, forward + capture (maps on the CPU)
  request    what the server does for one Analyze click: app.run_analysis (analyze + every overlay and chart the
             page shows) and Gradio's postprocessing of every output (image encoding, files in its cache)
  display    a display-setting change: render_outputs + postprocessing, no model run
  grad-cam   pytorch-grad-cam GradCAM on layer4[-1] (forward + backward + CAM), the prepared input
  torchcam   torchcam GradCAM on layer4 (forward + backward + CAM), the prepared input
Then, outside the interleaving, where the request's time goes (medians of the same number of rounds), and the
zip the page prepares after each render (exports). Prints markdown blocks for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from _common import header, interleave, med, ratio, table

from attnviz import render
from attnviz.app import AppConfig, Handlers, build_demo
from attnviz.app.state import AppState
from attnviz.capture.views import build_views
from attnviz.export import spatial_views
from attnviz.pipeline import analyze
from attnviz.pipeline.core import DEFAULT_CACHE
from attnviz.pipeline.image import decode_image, preprocess
from attnviz.sources.meta import meta_of

IMAGE = Path(__file__).resolve().parent.parent / "assets" / "chelsea_cat.jpg"
OUTPUT_IDS = ["predictions", "predictions-note", "overlays", None, "block-view", "channel-chart", "block-detail"]
OUTPUT_IDS += ["status"]
app: Handlers  # the page's handlers, made in main()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--attentions", nargs="+", default=["cbam"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ap.add_argument("--no-cams", action="store_true", help="skip pytorch-grad-cam and torchcam")
    ap.add_argument("--quick", action="store_true", help="resnet50 + cbam, 3 rounds")
    args = ap.parse_args()
    if args.quick:
        args.archs, args.attentions, args.repeat = ["resnet50"], ["cbam"], min(args.repeat, 3)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    global app
    config = AppConfig(device=device, size=args.size, offline=True)
    app = Handlers(config)
    demo = build_demo(config, app)
    comps = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    outputs = [comps[i] if i else None for i in OUTPUT_IDS]
    w, h = decode_image(IMAGE).image.size
    header(
        "End to end vs bare forward and gradient CAMs (bench/analyze.py)",
        device,
        f"image {IMAGE.name} ({w}x{h}), short side {args.size}, random weights; medians of {args.repeat} "
        "interleaved rounds; ratios = medians of per-round ratios to the bare forward",
    )
    rows, parts = [], []
    for arch in args.archs:
        for attention in args.attentions:
            row, part = bench_one(arch, attention, args, device, outputs)
            rows.append(row)
            parts.append(part)
    cols = ["arch", "attention", "bare ms", "analyze ms (x)", "request ms (x)", "request + exports ms (x)"]
    cols += ["request / request + exports", "display ms (x)"]
    if not args.no_cams:
        cols += ["pytorch-grad-cam ms (x)", "torchcam ms (x)", "request / grad-cam"]
    print("\nEnd to end (x = ratio to the bare forward):\n")
    table(cols, rows)
    print(
        "\nWhere a request's time goes (ms, medians; `exports`: the zip, now made only when its button is clicked;"
        " `request + exports` above is what every request cost before, when the page made both after each render):\n"
    )
    table(list(parts[0]), [list(p.values()) for p in parts])


def _postprocess(outputs: list, values: tuple) -> None:
    """What Gradio does with a handler's return values before sending them: encode images, write cache files."""
    import gradio as gr

    for comp, value in zip(outputs, values, strict=True):
        if comp is not None and not isinstance(value, gr.components.Component):  # an update is encoded already
            comp.postprocess(value)


def bench_one(arch: str, attention: str, args: argparse.Namespace, device: str, outputs: list) -> tuple[list, dict]:
    """One row of each table."""
    cuda = device == "cuda"
    state, *_ = app.run_analysis(str(IMAGE), attention, arch, "random", "turbo", 0.5, "map", "32", None)
    model = DEFAULT_CACHE.get(arch, attention, "random", device)
    pre = meta_of(model).preprocess
    x = preprocess(decode_image(IMAGE).image, args.size, list(pre.mean), list(pre.std)).to(device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)

    def bare() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            model(x)

    def full() -> None:
        analyze(IMAGE, attention=attention, arch=arch, device=device, size=args.size)

    def request() -> None:
        _, *values = app.run_analysis(str(IMAGE), attention, arch, "random", "turbo", 0.5, "map", "32", None)
        _postprocess(outputs, tuple(values))

    def request_with_exports() -> None:  # before: every request also made the PNG and the zip (chained after it)
        state_, *values = app.run_analysis(str(IMAGE), attention, arch, "random", "turbo", 0.5, "map", "32", None)
        _postprocess(outputs, tuple(values))
        app.make_png(state_, "turbo", 0.5, "map", None)
        app.make_zip(state_, "turbo", 0.5, "map", "32")

    def display() -> None:
        _postprocess(outputs, app.render_outputs(state, "viridis", 0.6, "stage", "32", None))

    variants = {"bare": bare, "analyze": full, "request": request, "+exports": request_with_exports, "display": display}
    if not args.no_cams:
        from pytorch_grad_cam import GradCAM
        from torchcam.methods import GradCAM as TorchcamGradCAM

        def grad_cam() -> None:
            with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
                cam(input_tensor=x, targets=None)

        def torchcam() -> None:
            with TorchcamGradCAM(model, target_layer="layer4") as extractor:
                scores = model(x)
                extractor(scores[0].argmax().item(), scores)

        variants |= {"grad-cam": grad_cam, "torchcam": torchcam}
    t = interleave(variants, args.repeat, warmup=1, device=device)
    b = med(t["bare"])

    def cell(name: str) -> str:
        return f"{med(t[name]):.1f} ({ratio(t[name], t['bare']):.2f})"

    row = [arch, attention, f"{b:.1f}", cell("analyze"), cell("request"), cell("+exports")]
    row += [f"{ratio(t['request'], t['+exports']):.2f}", cell("display")]
    if not args.no_cams:
        row += [cell("grad-cam"), cell("torchcam"), f"{ratio(t['request'], t['grad-cam']):.2f}"]
    return row, breakdown(arch, attention, state, args, device, outputs)


def breakdown(arch: str, attention: str, state: dict, args: argparse.Namespace, device: str, outputs: list) -> dict:
    """Medians of each stage of a request, timed one by one as the app runs them."""
    acc: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def clock(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        acc.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)

    gallery, big, detail = outputs[2], outputs[4], outputs[6]
    for _ in range(args.repeat):
        result = analyze(IMAGE, attention=attention, arch=arch, device=device, size=args.size)
        for k in ("decode", "preprocess", "forward", "capture"):
            acc.setdefault(k if k != "forward" else "forward+hooks", []).append(result.timings[k])
        with clock("views"):
            views = build_views(result)
        with clock("normalise"):
            shown, normed, _ = spatial_views(views, "map")
        image = np.asarray(result.image)  # fits the display sizes: the app's resize is a no-op here
        with clock("upsample"):
            ups = [render.upsample(m, (image.shape[1], image.shape[0])) for m in normed]
        with clock("colormap"):
            [render.apply_colormap(u, "turbo") for u in ups]
        with clock("overlay (all)"):
            overlays = [render.overlay(image, m, "turbo", 0.5) for m in normed]
        acc.setdefault("blend", []).append(acc["overlay (all)"][-1] - acc["upsample"][-1] - acc["colormap"][-1])
        with clock("chart table"):
            render.channel_table(views[0].data if views[0].kind == "channel" else np.ones(8))
        values = app.render_outputs(AppState(result), "turbo", 0.5, "map", "32", None)
        acc.setdefault("render (app)", []).append(result.timings["render"])
        with clock("encode gallery"):
            gallery.postprocess(list(zip(overlays, [v.title for v in shown], strict=True)))
        with clock("encode view"):
            big.postprocess(values[4])
        with clock("encode detail"):
            detail.postprocess(values[6])
    acc["exports"] = []
    for _ in range(max(1, args.repeat // 5)):
        t0 = time.perf_counter()
        app.store._zips.clear()  # a zip made anew each time (what a click on a new result costs)
        zip_path = app.make_zip(state, "turbo", 0.5, "map", "32")
        acc["exports"].append((time.perf_counter() - t0) * 1e3)
    with zipfile.ZipFile(zip_path) as zf:
        n_files = len(zf.namelist())
    out = {"arch": arch, "attention": attention}
    order = ["decode", "preprocess", "forward+hooks", "capture", "views", "normalise", "upsample", "colormap"]
    order += ["blend", "chart table", "render (app)", "encode gallery", "encode view", "encode detail", "exports"]
    for k in order:
        out[k] = f"{med(acc[k]):.1f}"
    out["exports"] += f" ({n_files} files)"
    return out


if __name__ == "__main__":
    main()
