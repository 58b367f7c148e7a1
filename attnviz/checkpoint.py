"""Self-describing checkpoints: a safetensors file whose header carries a JSON model card.

    save_checkpoint(path, state_dict, card)        # also writes path.with_suffix(".json") for people
    sd, card = read_checkpoint(path)               # card is {} for a file without one

The card says what the weights are for (``arch``, ``attention``, ``classes``, ``mean``, ``std``, ``input_size``)
and how they were made (data recipe, seed, training settings, measured metrics). A *delta* checkpoint holds only
the tensors a fine-tune changed and names its ``base`` checkpoint (a file in the same folder) and the base's
content hash (:func:`tensors_sha256`); loading it loads the base first.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["CARD_KEY", "load_checkpoint_file", "read_card", "read_checkpoint", "save_checkpoint", "tensors_sha256"]

CARD_KEY = "attnviz"


def tensors_sha256(state_dict: dict[str, Tensor]) -> str:
    """Hex sha256 of a state dict's content (names, dtypes, shapes, bytes), independent of the file's header,
    so a model card can be rewritten without breaking the checkpoints that name this one as their base."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        v = state_dict[k].detach().to("cpu").contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def save_checkpoint(
    path: str | Path, state_dict: dict[str, Tensor], card: dict[str, Any], *, half: bool = False
) -> Path:
    """Write ``state_dict`` as safetensors with ``card`` in its header, and the card as a JSON file beside it.

    Args:
        half: store floating-point tensors as float16 (buffers such as BN's ``num_batches_tracked`` keep their
            dtype); they are cast back to the model's dtype on load.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().to("cpu")
        tensors[k] = (v.half() if half and v.is_floating_point() else v).contiguous()
    text = json.dumps(card, sort_keys=False)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={CARD_KEY: text})
    tmp.replace(path)  # atomic: a crash mid-write never leaves a half checkpoint under the real name
    path.chmod(0o644)  # readable like any other file (the temporary file was private)
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card in a safetensors header (``{}`` when there is none or the file is not safetensors).

    Raises:
        ValueError: the header's card is not valid JSON.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path.name}: {type(e).__name__}: {e}") from None
    if CARD_KEY not in meta:
        return {}
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {path.name} has a model card that is not valid JSON: {e}") from None
    if not isinstance(card, dict):
        raise ValueError(f"checkpoint {path.name} has a model card that is not a JSON object")
    return card


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """State dict and model card of a checkpoint (safetensors, or a torch file read with ``weights_only``)."""
    sd = load_checkpoint_file(path)
    return sd, read_card(path)


def load_checkpoint_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never running pickled code.

    Raises:
        ValueError: missing file, unreadable or unsafe content, or not a state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"checkpoint not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {p.name}: {type(e).__name__}: {e}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {p.name} does not hold a state dict (a mapping of names to tensors)")
    return obj
