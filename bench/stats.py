"""``attnviz stats`` throughput at 1 and 2 processes, and the SENet-style finding on the demo checkpoints.

    python bench/stats.py speed [--images 256] [--size 128] [--batch 32]
        images/s of the same run three ways, side by side: one process with one thread, one process with every
        thread, and torchrun with two gloo ranks of one thread each (each rank reads and runs its own shard).
    python bench/stats.py finding --scenes data/scenes [--n 500] [--attentions se eca channel cbam sk]
        class specificity per stage of each demo checkpoint's channel gates on the held-out test scenes (unseen
        objects, the same 500 scenes as ``attnviz eval``): mean pairwise correlation of the class-wise mean gate
        profiles (Hu et al., CVPR 2018, section 7.2) and the between-class share of the gates' variance.

``--device cuda --batch 64`` runs the speed bench on a GPU (bf16 autocast, one rank per GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _attnviz(args: list[str], ranks: int, threads: int | None) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "attnviz", *args]
    if ranks > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), *cmd[1:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    out = args[args.index("--out") + 1]
    return wall, json.loads((Path(out) / "summary.json").read_text())


def speed(a: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        for i in range(a.images):
            folder = data / f"class{i % 4}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (a.size, a.size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        base = [str(data), "--arch", "resnet18", "--attention", a.attention, "--weights", "random"]
        base += ["--size", str(a.size), "--batch-size", str(a.batch), "--workers", "1", "--chunk-size", "64"]
        base += ["--device", a.device]
        cores = os.cpu_count() or 1
        runs = [
            ("1 process, 1 thread", 1, 1),
            (f"1 process, {cores} threads", 1, None),
            ("torchrun 2 ranks x 1 thread", 2, 1),
        ]
        if a.device == "cuda":
            runs = [("1 process (1 GPU)", 1, None), ("torchrun 2 ranks (2 GPUs)", 2, None)]
        rows = []
        for round_ in range(a.rounds):
            for name, ranks, threads in runs:
                out = Path(tmp) / f"out-{round_}-{ranks}-{threads}"
                wall, s = _attnviz(["stats", *base, "--out", str(out)], ranks, threads)
                rows.append((name, s["run"]["images_per_s"], a.images / wall))
    print(
        f"attnviz stats, resnet18 + {a.attention}, {a.images} images at {a.size} px, batch {a.batch}, "
        f"{a.device}, {os.cpu_count()} CPUs, {a.rounds} rounds (median)"
    )
    print(f"{'run':32} {'images/s (loop)':>16} {'images/s (command)':>19} {'vs 1 process, 1 thread':>23}")
    ref = None
    for name, _, _ in runs:
        loop = float(np.median([r[1] for r in rows if r[0] == name]))
        cmd = float(np.median([r[2] for r in rows if r[0] == name]))
        ref = ref or loop
        print(f"{name:32} {loop:16.1f} {cmd:19.1f} {loop / ref:22.2f}x")


def _write_scenes(scenes: str, n: int, out: Path) -> None:
    from attnviz.data import SceneConfig, SceneDataset
    from attnviz.sources.checkpoint import read_card
    from attnviz.sources.demo import demo_file

    recipe = read_card(demo_file("se"))["data"]["train"]["config"]
    config = SceneConfig.from_dict(recipe).held_out()  # test scenes: no training-only augmentation
    ds = SceneDataset(scenes, "test", n, seed=1234, config=config)  # attnviz eval's test scenes
    for i in range(len(ds)):
        s = ds.scene(i)
        for sub, arr in (("images", s.image), ("masks", s.mask.astype(np.uint8) * 255)):
            (out / sub / ds.classes[s.label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(out / sub / ds.classes[s.label] / f"{i:05d}.png")


def finding(a: argparse.Namespace) -> None:
    work = Path(a.work or tempfile.mkdtemp())
    if not (work / "images").is_dir():
        _write_scenes(a.scenes, a.n, work)
    rows = []
    for attention in a.attentions:
        out = work / f"stats-{attention}"
        args = ["stats", str(work / "images"), "--masks", str(work / "masks"), "--attention", attention]
        args += ["--weights", "demo", "--out", str(out), "--workers", "1"]
        _, s = _attnviz(args, 1, None)
        rows.append((attention, s))
    print(f"Class specificity of the demo checkpoints' gates on {a.n} held-out test scenes (8 classes):")
    print("mean pairwise correlation of class-wise mean gate profiles per stage (between-class share of variance)")
    print("| attention | stage 1 | stage 2 | stage 3 | stage 4 | top-1 % |")
    print("|---|---|---|---|---|---|")
    for attention, s in rows:
        corr, share = s["stage_profile_correlation"], s["stage_between_class_share"]
        cells = [
            f"{corr[k]:.3f} ({share[k]:.3f})" if k in corr else "–" for k in ("stage1", "stage2", "stage3", "stage4")
        ]
        acc = "–" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}"
        print(f"| {attention} | {' | '.join(cells)} | {acc} |")
    print(f"reports: {work}/stats-*/report.md")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--images", type=int, default=256)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--attention", default="se")
    s.add_argument("--device", default="cpu")
    s.add_argument("--rounds", type=int, default=2)
    s.set_defaults(func=speed)
    f = sub.add_parser("finding")
    f.add_argument("--scenes", required=True, help="the scene folder (python -m attnviz.data.tuxpaint)")
    f.add_argument("--n", type=int, default=500)
    f.add_argument("--attentions", nargs="*", default=["se", "eca", "channel", "cbam", "sk"])
    f.add_argument("--work", default=None, help="folder for the exported scenes and the reports")
    f.set_defaults(func=finding)
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
