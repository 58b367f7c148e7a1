"""``attnviz eval``: accuracy and localisation of the demo checkpoints.

attnviz eval --data SCENES [--models DIR] [--scenes 1000] [--no-photos] [--photo-folder DIR] [--placements 8]
             [--write-cards] [--markdown FILE]
    accuracy and localisation of every demo checkpoint on the held-out test scenes and on real photos pasted
    onto textures (attnviz.train.evaluate, attnviz.data.PhotoDataset).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..blocks import list_attentions
from ..sources.select import demo_attentions

__all__ = ["add_eval_parser"]


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..data import SceneConfig, SceneDataset
    from ..sources import build_model
    from ..sources.checkpoint import read_card, read_checkpoint, save_checkpoint, tensors_sha256
    from ..sources.demo import DEMO_ARCH, demo_dir, demo_file
    from ..sources.weights import load_checkpoint_file
    from ..train.evaluate import (
        evaluate_model,
        evaluate_photos,
        findings,
        markdown_table,
        overall,
        photo_summary,
        summary_row,
    )

    if args.placements < 1:
        print(f"--placements must be at least 1, got {args.placements}", file=sys.stderr)
        return 2
    if args.write_cards and args.photo_folder:  # the cards describe the shipped photos, which every user has
        print("--write-cards stores the shipped photos' scores; drop --photo-folder to write cards", file=sys.stderr)
        return 2
    if args.photo_folder:
        from ..data.photos import read_manifest

        try:
            read_manifest(args.photo_folder)
        except ValueError as e:
            print(f"--photo-folder: {e}", file=sys.stderr)
            return 2
    folder = Path(args.models) if args.models else demo_dir()
    names = [None, *(args.attention or demo_attentions())]
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
            model,
            test,
            mean=card["mean"],
            std=card["std"],
            baselines=attention is None,
            batch_size=args.batch_size,
            predictions=True,  # for the paired interval of the difference to plain
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
                    folder=args.photo_folder,
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
            kept = {k: v for k, v in result.items() if k not in ("predictions", "labels")}  # per scene: JSON only
            card["test"] = {**kept, "summary": row, "findings": findings(row)}
            if photos is not None:
                card["real_photos"] = photos
            if attention is not None:  # name the base by content, so rewriting its card keeps the link
                card["base"] = base_ref
            save_checkpoint(path, sd, card)
    table = markdown_table(rows, baselines, share, photo_baselines, photo_share)
    print(table)
    for line in overall(rows, results):
        print(line)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy and localisation of the demo checkpoints on held-out scenes")
    p.add_argument("--data", required=True, help="the scene folder (objects/, distractors/, backgrounds/)")
    p.add_argument("--models", default=None, help="checkpoint folder (default: the shipped models/)")
    p.add_argument("--attention", nargs="*", choices=list_attentions(), help="default: every type")
    p.add_argument("--scenes", type=int, default=1000, help="test scenes (unseen object instances)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument(
        "--photos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score real photos pasted onto textures (attnviz/data/photos/; default: on)",
    )
    p.add_argument(
        "--photo-folder",
        default=None,
        help="score another photo folder with a manifest.json (e.g. python -m attnviz.data.more_photos's)",
    )
    p.add_argument("--placements", type=int, default=8, help="real-photo scenes per photo")
    p.add_argument("--photo-seed", type=int, default=0, help="seed of the real-photo scenes")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--write-cards", action="store_true", help="store the results in each model card")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    p.add_argument("--json", default=None, help="also write every score to this file")
    p.set_defaults(func=_cmd_eval)
