"""``attnviz train`` and ``attnviz eval``: fine-tune on an image folder; measure the demo checkpoints.

attnviz train --data DIR --arch resnet50 --attention cbam --weights imagenet|demo|none|CKPT
              [--freeze-backbone] --epochs N --out CKPT.safetensors [--resume]
    DIR is ImageFolder-style (DIR/<class>/*.jpg), or holds train/ and val/ folders of that layout; without
    val/, a seeded share of DIR is held out. Runs under torchrun for DDP (one process per GPU or node).
attnviz eval --data SCENES [--models DIR] [--scenes 1000] [--no-photos] [--placements 8] [--write-cards]
             [--markdown FILE]
    accuracy and localisation of every demo checkpoint on the held-out test scenes and on real photos pasted
    onto textures (attnviz.train.evaluate, attnviz.data.PhotoDataset).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

from ..blocks import list_attentions
from ..sources.own import ARCHS

__all__ = ["add_eval_parser", "add_train_parser"]

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _folders(data: Path, size: int, val_split: float, seed: int):
    """(train set, val set, classes) from an ImageFolder-style directory."""
    from torchvision import datasets, transforms

    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=(0.35, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.2, 0.2, 0.2),
            transforms.ToTensor(),
        ]
    )
    val_tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
    if (data / "train").is_dir() and (data / "val").is_dir():
        train, val = datasets.ImageFolder(data / "train", train_tf), datasets.ImageFolder(data / "val", val_tf)
        if train.classes != val.classes:
            raise ValueError(f"train/ and val/ have different classes: {train.classes} vs {val.classes}")
        return train, val, train.classes
    full_train, full_val = datasets.ImageFolder(data, train_tf), datasets.ImageFolder(data, val_tf)
    n = len(full_train)
    n_val = max(1, round(val_split * n))
    if n - n_val < 1:
        raise ValueError(f"{data} has {n} images: too few to hold out {val_split:.0%} for validation")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(full_train, order[n_val:]), Subset(full_val, order[:n_val]), full_train.classes


def _cmd_train(args: argparse.Namespace) -> int:
    from .. import build_model
    from ..sources.spec import Weights, parse_weights
    from ..sources.weights import load_backbone_state_dict, load_checkpoint_file, load_weights
    from ..train.loop import TrainConfig, fit

    data = Path(args.data)
    if not data.is_dir():
        print(f"--data {data} is not a folder", file=sys.stderr)
        return 2
    try:
        train, val, classes = _folders(data, args.size, args.val_split, args.seed)
    except (ValueError, FileNotFoundError) as e:
        print(f"cannot use --data {data}: {e}", file=sys.stderr)
        return 2
    attention = None if args.attention == "none" else args.attention
    model = build_model(args.arch, attention, num_classes=len(classes))
    source = parse_weights(args.weights)  # imagenet | demo | none (random) | a backbone checkpoint
    if source is Weights.IMAGENET:
        load_weights(model, "imagenet")
    elif source is Weights.DEMO:
        from ..sources.demo import demo_file

        load_backbone_state_dict(model, load_checkpoint_file(demo_file(None)))
        delta = demo_file(attention)
        if attention is not None and delta.is_file():
            sd = {k: v for k, v in load_checkpoint_file(delta).items() if not k.startswith("fc.")}
            model.load_state_dict(sd, strict=False)
    elif source is not Weights.RANDOM:
        load_backbone_state_dict(model, load_checkpoint_file(source))
    card = {
        "arch": args.arch,
        "attention": attention,
        "classes": list(classes),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "input_size": args.size,
        "init": args.weights,
        "data": {"folder": str(data.resolve()), "train_images": len(train), "val_images": len(val)},
    }
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        freeze_backbone=args.freeze_backbone,
        num_workers=args.workers,
        seed=args.seed,
        warmup_epochs=min(1.0, args.epochs / 4),
    )
    out = Path(args.out)
    if out.suffix != ".safetensors":
        out = out.with_suffix(".safetensors")
    try:
        fit(model, train, val, config, out=out, card=card, device=args.device, resume=args.resume)
    except ValueError as e:  # a device this process cannot use (no GPU, more ranks than GPUs), a bad resume file
        print(f"attnviz train: {e}", file=sys.stderr)
        return 2
    print(f"best checkpoint: {out} (model card: {out.with_suffix('.json')})")
    print(f"view it: python app.py --arch {args.arch} --weights {out}")
    return 0


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model with attention on an image folder")
    p.add_argument("--data", required=True, help="ImageFolder-style folder (or one with train/ and val/)")
    p.add_argument("--arch", choices=list(ARCHS), default="resnet50")
    p.add_argument("--attention", choices=["none", *list_attentions()], required=True)
    p.add_argument("--weights", default="imagenet", help="imagenet | demo | none | a backbone checkpoint path")
    p.add_argument("--freeze-backbone", action="store_true", help="train only attention, BatchNorm and fc")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", required=True, help="the best checkpoint (.safetensors, model card beside it)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-split", type=float, default=0.1, help="held out when DIR has no val/ folder")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the local GPU, else CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT.last.pt")
    p.set_defaults(func=_cmd_train)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .. import build_model
    from ..data import SceneConfig, SceneDataset
    from ..sources.checkpoint import read_card, read_checkpoint, save_checkpoint, tensors_sha256
    from ..sources.demo import DEMO_ARCH, demo_dir, demo_file
    from ..sources.weights import load_checkpoint_file
    from ..train.evaluate import evaluate_model, evaluate_photos, findings, markdown_table, photo_summary, summary_row

    if args.placements < 1:
        print(f"--placements must be at least 1, got {args.placements}", file=sys.stderr)
        return 2
    folder = Path(args.models) if args.models else demo_dir()
    names = [None] + [a for a in (args.attention or list_attentions())]
    rows, results, plain, baselines, share = [], {}, None, {}, 0.0
    photo_baselines, photo_share = None, None
    base = demo_file(None, folder)
    base_ref = None
    if args.write_cards and base.is_file():  # rewriting cards keeps tensors: one hash serves every delta
        base_ref = {"file": base.name, "sha256": tensors_sha256(load_checkpoint_file(base))}
    for attention in names:
        path = demo_file(attention, folder)
        if not path.is_file():
            print(f"{attention or 'plain'}: no checkpoint {path}, skipped", file=sys.stderr)
            continue
        card = read_card(path)  # the header only: build_model reads the tensors
        model = build_model(DEMO_ARCH, attention, weights=str(path))
        recipe = card["data"]["train"]["config"]
        config = SceneConfig.from_dict(recipe).held_out()  # test scenes: no training-only augmentation
        test = SceneDataset(args.data, "test", args.scenes, seed=args.seed, config=config)
        if test.classes != card["classes"]:
            print(f"--data has classes {test.classes}, the checkpoint {card['classes']}", file=sys.stderr)
            return 2
        torch.manual_seed(0)
        result = evaluate_model(
            model, test, mean=card["mean"], std=card["std"], baselines=attention is None, batch_size=args.batch_size
        )
        result["test_split"] = test.fingerprint()
        if attention is None:
            plain, baselines, share = result, result["baselines"], result["mask_share"]
        row = summary_row(attention, result, plain)
        stages = " ".join(f"{k}={v:.2f}" for k, v in row["stage_pointing"].items())
        print(f"{row['attention']:14} acc {row['accuracy']:.3f}  pointing {stages}  avg={row['average_pointing']}")
        photos = None
        if args.photos:
            try:
                torch.manual_seed(0)
                photos = evaluate_photos(
                    model,
                    card["classes"],
                    card["mean"],
                    card["std"],
                    card["input_size"],
                    placements=args.placements,
                    seed=args.photo_seed,
                    batch_size=args.batch_size,
                    baselines=attention is None,
                )
            except ValueError as e:  # none of the shipped photos is of this checkpoint's classes
                print(f"{row['attention']:14} real photos skipped: {e}", file=sys.stderr)
        if photos is None:
            rows.append(row)
            results[attention or "none"] = result
        else:
            head = photo_summary(photos)
            photos = {**head, **photos}  # headline first, then every score, per photo and the photos' fingerprint
            if attention is None:
                photo_baselines, photo_share = photos["baselines"], photos["mask_share"]
            best = "–" if head["best_block"] is None else f"{head['best_block']}={head['best_block_pointing']:.2f}"
            print(f"{'':14} real photos: acc {head['accuracy']:.3f}  best block {best}  avg={head['average_pointing']}")
            rows.append({**row, "real_photos": {k: v for k, v in head.items() if k != "per_photo"}})
            results[attention or "none"] = {**result, "real_photos": photos}
        if args.write_cards:
            sd, card = read_checkpoint(path)
            card["test"] = {**result, "summary": row, "findings": findings(row)}
            if photos is not None:
                card["real_photos"] = photos
            if attention is not None:  # name the base by content, so rewriting its card keeps the link
                card["base"] = base_ref
            save_checkpoint(path, sd, card)
    table = markdown_table(rows, baselines, share, photo_baselines, photo_share)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy and localisation of the demo checkpoints on held-out scenes")
    p.add_argument("--data", required=True, help="the scene folder (objects/, distractors/, backgrounds/)")
    p.add_argument("--models", default=None, help="checkpoint folder (default: the shipped attnviz/checkpoints/)")
    p.add_argument("--attention", nargs="*", choices=list_attentions(), help="default: every type")
    p.add_argument("--scenes", type=int, default=1000, help="test scenes (unseen object instances)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument(
        "--photos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score real photos pasted onto textures (attnviz/data/photos/; default: on)",
    )
    p.add_argument("--placements", type=int, default=8, help="real-photo scenes per photo")
    p.add_argument("--photo-seed", type=int, default=0, help="seed of the real-photo scenes")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--write-cards", action="store_true", help="store the results in each model card")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    p.add_argument("--json", default=None, help="also write every score to this file")
    p.set_defaults(func=_cmd_eval)
