"""The model options ``render``, ``inspect``, ``stats`` and ``compare`` share: ``--model SPEC`` and what goes with it,
what :func:`attnviz.load_model` takes from them, and the weights used when none are given."""

from __future__ import annotations

import argparse
from typing import Any

from ..blocks import list_attentions
from ..sources import select
from ..sources.spec import is_own

__all__ = ["add_model_arguments", "default_weights", "model_options"]


def default_weights(spec: str) -> str:
    """``render``'s weights when none are given: the shipped demo checkpoints for attnviz's resnet18, a library
    network's pretrained ones (downloaded once), else random (a user's own code builds its model as it does)."""
    return select.default_weights(spec).value


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`attnviz.load_model` takes from the command line besides the spec and weights (hashable values)."""
    options: dict[str, Any] = {}
    if args.labels:
        options["labels"] = args.labels
    if args.offline:
        options["offline"] = True
    if args.trust_pickle:
        options["trust_pickle"] = True
    for key in ("mean", "std"):
        if getattr(args, key):
            options[key] = tuple(getattr(args, key))
    if getattr(args, "size", None) and not is_own(args.model):  # a network not attnviz's: --size declares its input
        options["input_size"] = args.size
    return options


def add_model_arguments(p: argparse.ArgumentParser, weights_default: str | None) -> None:
    """--model SPEC and what goes with it (render, inspect and stats share them)."""
    p.add_argument(
        "--model",
        "--arch",
        dest="model",
        default="resnet18",
        help="resnet18..resnet101 (attnviz's, with --attention), timm:NAME, torchvision:NAME, path/file.py:fn or "
        "package.module:fn (default resnet18)",
    )
    p.add_argument("--attention", choices=list_attentions(), default=None, help="attnviz's own ResNets only")
    p.add_argument(
        "--weights",
        default=weights_default,
        help="a checkpoint file (a state dict, safetensors, DataParallel/compile prefixes), or: demo (resnet18), "
        "imagenet/pretrained (downloaded once into the library's cache), random",
    )
    p.add_argument("--labels", default=None, help="class names: one per line, or JSON (list or {index: name})")
    p.add_argument("--mean", type=float, nargs=3, default=None, help="normalisation mean (default: the weights')")
    p.add_argument("--std", type=float, nargs=3, default=None, help="normalisation std (default: the weights')")
    p.add_argument("--offline", action="store_true", help="never download (HF_HUB_OFFLINE=1, ATTNVIZ_OFFLINE=1 too)")
    p.add_argument(
        "--trust-pickle", action="store_true", help="load a checkpoint that holds pickled objects (runs its code)"
    )
