"""Train the shipped demo checkpoints (attnviz/checkpoints/): a ResNet-18 on cut-and-paste scenes, then each type.

    python -m attnviz.data.tuxpaint STAMPS --out data/scenes      # the cut-outs (see attnviz/data/tuxpaint.py)
    python scripts/train_demo.py --data data/scenes --out models   # backbone, then each attention type
    attnviz eval --data data/scenes                                # measured table into the model cards

Step 1 trains the plain backbone from scratch. Step 2 inserts each registered attention type and fine-tunes
what it needs on the frozen backbone (attention parameters, including convolutions a block replaces, every
BatchNorm, the classifier); the checkpoint is a delta on the backbone file. Scenes are fresh every epoch;
validation uses held-out object instances.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from attnviz import build_model, list_attentions
from attnviz.checkpoint import read_card
from attnviz.data import SceneConfig, SceneDataset
from attnviz.demo import DEMO_ARCH, DEMO_MEAN, DEMO_STD, demo_file
from attnviz.train import TrainConfig, fit
from attnviz.weights import load_backbone_state_dict, load_checkpoint_file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder with objects/<class>/, distractors/, backgrounds/")
    p.add_argument("--out", default="attnviz/checkpoints")
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
    p.add_argument("--continue-attention", action="store_true", help="attention types continue from their files")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    config = SceneConfig(size=args.size)
    train = SceneDataset(args.data, "train", args.train_scenes, seed=args.seed, config=config)
    val = SceneDataset(args.data, "val", args.val_scenes, seed=args.seed + 1, config=config)
    base_card = {
        "arch": DEMO_ARCH,
        "classes": train.classes,
        "mean": DEMO_MEAN,
        "std": DEMO_STD,
        "input_size": args.size,
        "data": {
            "recipe": "attnviz.data.SceneDataset (cut-and-paste scenes)",
            "objects": "Debian tuxpaint-stamps-default 2022.06.04 (GPL-2), built by attnviz.data.tuxpaint",
            "train": train.fingerprint(),
            "val": val.fingerprint(),
        },
    }
    names = args.attention if args.attention is not None else ["none", *list_attentions()]
    backbone = demo_file(None, out)
    for name in names:
        attention = None if name == "none" else name
        target = demo_file(attention, out)
        model = build_model(DEMO_ARCH, attention, num_classes=len(train.classes))
        card = {**base_card, "attention": attention}
        if attention is None:
            cfg = TrainConfig(epochs=args.backbone_epochs, seed=args.seed, lr=args.lr, half_checkpoint=True)
            base = None
            if args.continue_from:  # a second schedule on a trained backbone; its first run is kept in the card
                previous = read_card(args.continue_from)
                model.load_state_dict(load_checkpoint_file(args.continue_from))
                cfg.warmup_epochs = 0.25
                card["continued_from"] = {"val_acc": previous.get("val_acc"), "training": previous.get("training")}
        else:
            if not backbone.is_file():
                print(f"train the backbone first (missing {backbone})", file=sys.stderr)
                return 2
            load_backbone_state_dict(model, load_checkpoint_file(backbone))
            if args.continue_attention and target.is_file():  # more epochs on the block's own checkpoint
                previous = read_card(target)
                model.load_state_dict(load_checkpoint_file(target), strict=False)
                card["continued_from"] = {"val_acc": previous.get("val_acc"), "training": previous.get("training")}
            cfg = TrainConfig(
                epochs=args.attention_epochs,
                seed=args.seed,
                freeze_backbone=True,
                lr=args.attention_lr,
                warmup_epochs=0.25,
                half_checkpoint=True,
            )
            base = backbone
        print(f"== {name}: {cfg}", flush=True)
        floor = card.get("continued_from", {}).get("val_acc") or -1.0  # never replace a better checkpoint
        fit(model, train, val, cfg, out=target, card=card, base=base, resume=args.resume, best=floor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
