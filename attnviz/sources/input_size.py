"""The input size a network runs at, read from the network itself when its source does not say.

timm's and torchvision's configs give an input size; a user's file does not, and many public networks only run
at one: a ResNet whose head is ``nn.AvgPool2d(7)`` (the CBAM and BAM authors' ResidualNet) needs a 7 x 7 map at
that pool, so 224 px; a ``nn.Linear(512 * 7 * 7, ...)`` after a flatten, or a ViT with a fixed position
embedding, need exactly their size. :func:`probe_input` finds it with blank forwards:

1. the declared size (``load_model(..., input_size=)``, ``--size``), else the source's, else :data:`SIZES` in order
   (224 first): the first size at which a forward succeeds;
2. that size is *fixed* when the source says so, when a fixed-window pooling layer (``AvgPool2d``/``MaxPool2d``,
   not the adaptive ones) reduced a map of more than one position to a single one (the window was made for that
   size; any other input would pool a part of the map, or fail), or when a forward at a wider input fails.

A fixed size makes the pipeline stretch every image to it (:func:`attnviz.pipeline.image.fixed_size`), so a portrait
photo
does not feed a 7 x 10 map to a 7 x 7 pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SIZES", "InputProbe", "probe_input"]

#: sizes tried, in order, when neither the user nor the model's source gives one
SIZES = (224, 256, 192, 288, 320, 384, 160, 128, 448, 512, 96, 64, 32)
_FIXED_POOLS = (nn.AvgPool2d, nn.MaxPool2d)


@dataclass
class InputProbe:
    """What the blank forwards found.

    Attributes:
        size: (H, W) the network ran at.
        fixed: whether it runs at that size only (see the module docstring).
        why: the reason it is fixed ('' when it is not).
        output: the network's output at ``size`` (for the class count).
    """

    size: tuple[int, int]
    fixed: bool
    why: str
    output: Any


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(v) for v in size[-2:])
    return h, w


def _forward(model: nn.Module, size: tuple[int, int], pools: list[str] | None = None) -> Any:
    """The model's output on a blank (1, 3, H, W) image; ``pools`` collects the fixed-window pools that reduced a
    map to one position."""
    param = next(iter(model.parameters()), None)
    x = torch.zeros(1, 3, *size, device=param.device if param is not None else "cpu")
    handles = []
    if pools is not None:

        def hook(mod: nn.Module, args: tuple, out: Any) -> None:
            inp = args[0] if args and isinstance(args[0], Tensor) else None
            whole = (
                isinstance(out, Tensor)
                and inp is not None
                and min(inp.dim(), out.dim()) >= 3
                and inp.shape[-2] * inp.shape[-1] > 1
                and out.shape[-2] * out.shape[-1] == 1
            )
            if whole:
                pools.append(f"{type(mod).__name__}({mod.kernel_size}) on a {inp.shape[-2]} x {inp.shape[-1]} map")

        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _FIXED_POOLS)]
    try:
        with torch.inference_mode():
            return model(x)
    finally:
        for h in handles:
            h.remove()


def probe_input(
    model: nn.Module,
    *,
    declared: int | Sequence[int] | None = None,
    known: Sequence[int] | None = None,
    fixed: bool | None = None,
    name: str = "the model",
) -> InputProbe:
    """The size ``model`` runs at (see the module docstring).

    Args:
        model: the network, in eval mode.
        declared: the size the user declared: the only one tried.
        known: the size its source gives (timm's or torchvision's config), tried first.
        fixed: whether the source says the size is fixed (``None``: unknown, found out here).
        name: the model's name in the error.

    Raises:
        ValueError: no size tried runs; the message names the sizes tried, the first error and the flag to use.
    """
    if declared is not None:
        sizes = [_pair(declared)]
    else:
        sizes = [_pair(known)] if known else []
        sizes += [(s, s) for s in SIZES if (s, s) not in sizes]
    first: tuple[tuple[int, int], Exception] | None = None
    for size in sizes:
        pools: list[str] = []
        try:
            out = _forward(model, size, pools)
        except Exception as e:  # any failure of the user's code: the next size
            first = first or (size, e)
            continue
        why = ""
        if fixed is None and pools:
            why = f"its {pools[0]} pools the whole map at this size only"
        elif fixed is None:
            wider = (size[0], size[1] + 32)
            try:
                _forward(model, wider)
            except Exception as e:
                why = f"it fails at {wider[0]} x {wider[1]} ({type(e).__name__})"
        return InputProbe(size, bool(fixed) or bool(why), why, out)
    assert first is not None
    (h, w), err = first
    tried = ", ".join(f"{a}" if a == b else f"{a}x{b}" for a, b in sizes)
    how = "at the declared size" if declared is not None else f"at any size tried ({tried})"
    raise ValueError(
        f"{name} does not run on a blank 3-channel image {how}; at {h} x {w}: {type(err).__name__}: {err}. "
        "Declare the input size it takes with --size N (load_model(..., input_size=N))"
    )
