"""What did not fit, said exactly: a checkpoint's keys against a model's (missing, unexpected, mis-shaped), and what
the file looks like (which of attnviz's ResNets and attention types, how many classes) when it was saved from another
network. Read by attnviz's own weights (:mod:`.weights`) and users' checkpoints (:mod:`.statedict`) alike."""

from __future__ import annotations

import functools
import re
from typing import Any

import torch
from torch import Tensor
from torchvision.models.resnet import Bottleneck

from ..blocks import list_attentions
from .resnets import ARCHS, resnet

__all__ = ["WRAPPER_PREFIXES", "Ident", "describe_state_dict", "match_keys", "misfit_message"]


#: (arch or the network's name, attention) of the model weights are loaded into: named in the misfit messages.
Ident = tuple[str | None, str | None]


# -- what did not fit, and what the file looks like ------------------------------------------------------------------
_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.bn1\.weight$")  # a block (a stage's attention module has no bn1)


def _listed(keys: list[str], n: int = 6) -> str:
    """The first ``n`` of ``keys``, then how many there are in all."""
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _resnet_arch(keys: set[str]) -> tuple[str | None, str]:
    """(attnviz's arch name or ``None``, a description) of a ResNet layout read from key names: blocks per stage
    (``layerK.i.bn1``) and bottleneck (``conv3``) or basic blocks. ``(None, "")`` when the keys are no ResNet's."""
    blocks: dict[int, set[int]] = {k: set() for k in range(1, 5)}
    for key in keys:
        m = _BLOCK_KEY.match(key)
        if m:
            blocks[int(m[1])].add(int(m[2]))
    if not all(blocks.values()) or "conv1.weight" not in keys:
        return None, ""
    layers = [len(blocks[k]) for k in range(1, 5)]
    bottleneck = "layer1.0.conv3.weight" in keys
    for name, (block, arch_layers) in ARCHS.items():
        if arch_layers == layers and issubclass(block, Bottleneck) == bottleneck:
            return name, name
    kind = "bottleneck" if bottleneck else "basic"
    return None, f"a ResNet with {kind} blocks {layers} per stage, which none of attnviz's {', '.join(ARCHS)} has"


@functools.lru_cache(maxsize=64)
def _arch_shapes(arch: str, attention: str | None, num_classes: int) -> dict[str, tuple[int, ...]] | None:
    """Key -> shape of attnviz's ``arch`` with ``attention`` (built on the meta device: no memory, no init cost);
    ``None`` when it cannot be built so."""
    try:
        with torch.device("meta"):
            model = resnet(arch, attention, num_classes=num_classes)
    except Exception:
        return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _distance(sd: dict[str, tuple[int, ...]], own: dict[str, tuple[int, ...]]) -> int:
    """Keys missing, unexpected or of another shape between a file's shapes and a model's."""
    tracked = "num_batches_tracked"
    missing = sum(1 for k in own if k not in sd and not k.endswith(tracked))
    return missing + sum(1 for k in sd if k not in own) + sum(1 for k, s in sd.items() if k in own and own[k] != s)


def _attention_words(attention: str | None) -> str:
    return "no attention" if attention is None else f"attention={attention!r}"


def describe_state_dict(sd: dict[str, Tensor]) -> dict[str, Any] | None:
    """Which of attnviz's networks a state dict looks like, from its key names and shapes: the ResNet depth from
    the blocks per stage and the block type, the attention type by comparing with every registered type's
    network (:func:`attnviz.list_attentions`), the classes from ``fc.weight``. ``None`` for a file that is no
    ResNet's. Returns ``{"arch", "attention" (a list: ties), "classes", "exact", "text"}``."""
    sd, _ = match_keys(dict(sd), {"conv1.weight"})  # DataParallel / torch.compile prefixes
    arch, text = _resnet_arch(set(sd))
    if arch is None:
        return {"arch": None, "attention": [], "classes": None, "exact": False, "text": text} if text else None
    fc = sd.get("fc.weight")
    classes = int(fc.shape[0]) if fc is not None and fc.dim() == 2 else 1000
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    scores: dict[str | None, int] = {}
    for attention in [None, *list_attentions()]:
        own = _arch_shapes(arch, attention, classes)
        if own is not None:
            scores[attention] = _distance(shapes, own)
    best = min(scores.values())
    names = [a for a, d in scores.items() if d == best]
    said = _attention_words(names[0])
    if len(names) > 1:
        said += f" (or {', '.join(map(_attention_words, names[1:]))}: the same keys and shapes)"
    if best == 0:
        text = f"{arch} with {said}, {classes} classes"
    else:
        plain = _arch_shapes(arch, None, classes) or {}
        extra = [k for k in sd if k not in plain]
        text = (
            f"{arch} ({classes} classes) with keys that none of attnviz's attention types has exactly"
            + (f" ({_listed(extra, 3)})" if extra else "")
            + f"; closest: {said}, {best} keys apart"
        )
    return {"arch": arch, "attention": names, "classes": classes, "exact": best == 0, "text": text}


def _guess_line(sd: dict[str, Tensor], ident: Ident, own_arch: bool) -> str | None:
    """The line of a misfit message that says what the file looks like, and how to load it as that (for a file
    that is no ResNet's: a line only when ``own_arch``, the model being one of attnviz's)."""
    try:
        guess = describe_state_dict(sd)
    except Exception:  # a guess must never hide the misfit itself
        return None
    if guess is None:
        return None if not own_arch else "the file does not look like any of attnviz's ResNets (resnet18 ... resnet101)"
    if guess["arch"] is None or not guess["exact"]:
        return f"the file looks like {guess['text']}"
    arch, attention, classes = guess["arch"], guess["attention"][0], guess["classes"]
    same = (arch, attention) == ident
    if same:  # only the classifier differs
        return (
            f"the file looks like {guess['text']}: the model has another number of classes; build it with "
            f"num_classes={classes} (Python: attnviz.build_model({arch!r}, {attention!r}, num_classes={classes}, "
            "weights=PATH)), or save the weights with a model card (attnviz.sources.checkpoint.save_checkpoint) that "
            "names its classes"
        )
    flag = f" --attention {attention}" if attention else ""
    return (
        f"the file looks like {guess['text']}: load it as that network (command line: --arch {arch}{flag}; "
        f"Python: attnviz.build_model({arch!r}, {attention!r}, weights=PATH))"
    )


def misfit_message(
    head: str, groups: list[tuple[str, list[str]]], sd: dict[str, Tensor], ident: Ident, own_arch: bool = True
) -> str:
    """A message for weights that do not fit the model ``ident`` names: ``head``, then each non-empty group of keys
    (title, count, the first few), then which network the file looks like (:func:`describe_state_dict`)."""
    lines = [head]
    lines += [f"  {title}: {_listed(keys)}" for title, keys in groups if keys]
    guess = _guess_line(sd, ident, own_arch)
    if guess:
        lines.append(f"  {guess}")
    return "\n".join(lines)


def _misfits(sd: dict[str, Tensor], own: dict[str, Tensor]) -> list[tuple[str, list[str]]]:
    """Missing, unexpected and misshapen keys of ``sd`` against a model's ``own`` state dict, titled."""
    return [
        ("missing keys", [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]),
        ("unexpected keys", [k for k in sd if k not in own]),
        (
            "shape mismatches",
            [
                f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})"
                for k, v in sd.items()
                if k in own and tuple(v.shape) != tuple(own[k].shape)
            ],
        ),
    ]


#: Key prefixes added by wrappers: DataParallel/DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _strip(sd: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items()}


def match_keys(sd: dict[str, Tensor], own: set[str]) -> tuple[dict[str, Tensor], list[str]]:
    """``sd`` with wrapper prefixes removed (``module.``, ``_orig_mod.``, in any nesting, and one first name shared
    by every key that the model lacks, e.g. Lightning's ``model.``) when the model's own keys do not have them.
    Returns the new dict and the prefixes removed."""
    removed: list[str] = []
    changed = True
    while changed and sd:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd) and not any(k.startswith(prefix) for k in own):
                sd, changed = _strip(sd, prefix), True
                removed.append(prefix)
    heads = {k.partition(".")[0] + "." for k in sd if "." in k}
    if len(heads) == 1 and all("." in k for k in sd) and not (set(sd) & own):
        stripped = _strip(sd, next(iter(heads)))
        if len(set(stripped) & own) > len(set(sd) & own):
            removed.append(next(iter(heads)))
            sd = stripped
    return sd, removed
