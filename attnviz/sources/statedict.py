"""Users' checkpoints into users' networks: find the state dict in whatever the file holds (plain, or under
``state_dict``, ``model_state_dict``, ``model``, ..., nested), remove wrapper prefixes (``module.``, ``_orig_mod.``,
Lightning's ``model.``), rebuild a classifier of another size when asked, and load it exactly, naming missing,
unexpected and mis-shaped keys (:mod:`.mismatch`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .checkpoint import SAVE_STATE_DICT, read_checkpoint_object
from .mismatch import _misfits, match_keys, misfit_message

__all__ = ["STATE_DICT_KEYS", "fit_state_dict", "load_user_checkpoint", "unwrap_state_dict"]


# -- users' checkpoints ----------------------------------------------------------------------------------------------
#: Keys under which training scripts keep the state dict, in the order they are looked for.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def unwrap_state_dict(obj: Any, name: str = "checkpoint") -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint object: itself, or under one of :data:`STATE_DICT_KEYS` (nested
    too, e.g. ``{"model": {"state_dict": ...}}``); an ``nn.Module`` gives its ``state_dict()``.

    Raises:
        ValueError: no state dict found (the message lists the keys that are there).
    """
    for _ in range(4):
        if isinstance(obj, nn.Module):
            return obj.state_dict()
        if _is_state_dict(obj):
            return dict(obj)
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), (dict, nn.Module))), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, dict):
        keys = ", ".join(map(str, list(obj)[:12])) + (", ..." if len(obj) > 12 else "")
        raise ValueError(
            f"{name} holds a dict without a state dict (keys: {keys}); expected a state dict (names -> tensors), "
            f"or one under {', '.join(STATE_DICT_KEYS)}"
        )
    raise ValueError(f"{name} holds a {type(obj).__name__}, not a state dict; save one with {SAVE_STATE_DICT}")


def fit_state_dict(
    model: nn.Module, sd: dict[str, Tensor], name: str = "checkpoint", what: str | None = None
) -> list[str]:
    """Load ``sd`` into ``model`` exactly (after :func:`match_keys`); returns the prefixes removed. ``what``: the
    network named in the errors (default: the model's class).

    Raises:
        ValueError: keys missing, unexpected, or of another shape: the message names them.
    """
    own = model.state_dict()
    sd, removed = match_keys(sd, set(own))
    groups = _misfits(sd, own)
    if any(keys for _, keys in groups):
        what = what or type(model).__name__
        msg = misfit_message(f"{name} does not fit {what}:", groups, sd, (what, None), own_arch=False)
        if removed:
            msg += f"\n  (prefixes removed from the file's keys: {', '.join(removed)})"
        raise ValueError(msg)
    model.load_state_dict(sd, strict=False)
    return removed


def load_user_checkpoint(
    model: nn.Module,
    weights: str | Path,
    what: str,
    *,
    trust_pickle: bool = False,
    rebuild: Callable[[int], nn.Module] | None = None,
) -> nn.Module:
    """Load a user's checkpoint file into ``model`` (a network that is not attnviz's; ``what`` names it in the
    errors): the state dict found in it (:func:`unwrap_state_dict`), wrapper prefixes removed, loaded exactly
    (:func:`fit_state_dict`). With ``rebuild``, a file whose only difference is the classifier's size gets a model
    rebuilt with the file's class count (returned).

    Raises:
        ValueError: the file does not read, holds no state dict, or does not fit (the keys are named).
    """
    p = Path(weights)
    sd = unwrap_state_dict(read_checkpoint_object(p, trust_pickle=trust_pickle), f"checkpoint {p.name}")
    if rebuild is not None:
        n = _head_classes(model, sd)
        if n is not None:
            model = rebuild(n)
    fit_state_dict(model, sd, f"checkpoint {p.name}", what)
    return model


def _head_classes(model: nn.Module, sd: dict[str, Tensor]) -> int | None:
    """The file's class count when the only shapes that differ are one classifier layer's (Linear or 1x1 conv)."""
    own = model.state_dict()
    sd, _ = match_keys(sd, set(own))
    bad = {k.rpartition(".")[0] for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)}
    if len(bad) != 1:
        return None
    layer = model.get_submodule(next(iter(bad)))
    key = next(iter(bad)) + ".weight"
    return int(sd[key].shape[0]) if isinstance(layer, (nn.Linear, nn.Conv2d)) and key in sd else None
