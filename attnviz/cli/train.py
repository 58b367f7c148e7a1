"""``attnviz train``: fine-tune a ResNet with attention on an image folder.

attnviz train --data DIR --arch resnet50 --attention cbam --weights imagenet|demo|none|CKPT
              [--freeze-backbone] --epochs N --out CKPT.safetensors [--resume]
    DIR is ImageFolder-style (DIR/<class>/*.jpg), or holds train/ and val/ folders of that layout; without
    val/, a seeded share of DIR is held out. Runs under torchrun for DDP (one process per GPU or node).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import Subset

from ..blocks import list_attentions
from ..sources.meta import IMAGENET_MEAN, IMAGENET_STD
from ..sources.own import ARCHS

__all__ = ["add_train_parser"]


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
    from ..sources import build_model
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
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
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
