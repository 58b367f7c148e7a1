"""Self-describing checkpoints: a safetensors file whose header carries a JSON model card.

    save_checkpoint(path, state_dict, card)        # also writes path.with_suffix(".json") for people
    sd, card = read_checkpoint(path)               # card is {} for a file without one

The card says what the weights are for (``arch``, ``attention``, ``classes``, ``mean``, ``std``, ``input_size``)
and how they were made (data recipe, seed, training settings, measured metrics). A *delta* checkpoint holds only
the tensors a fine-tune changed and names its ``base`` checkpoint (a file in the same folder) and the base's
content hash (:func:`tensors_sha256`); loading it loads the base first.

Every checkpoint a user names is read by :func:`read_checkpoint_object` (the one reader, on every path): the
format comes from the file's first bytes, not its name (:func:`checkpoint_format`); a file that would import and
run code is refused with one message (:class:`PickledModelError`) unless ``trust_pickle`` is given.
"""

from __future__ import annotations

import hashlib
import json
import pickletools
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CARD_KEY",
    "PickledModelError",
    "checkpoint_format",
    "load_checkpoint_file",
    "read_card",
    "read_checkpoint",
    "read_checkpoint_object",
    "save_checkpoint",
    "tensors_sha256",
]

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
        ValueError: the file cannot be read as a checkpoint (:func:`checkpoint_format`), its safetensors header
            is broken, or the card is not valid JSON.
    """
    path = Path(path)
    if path.suffix != ".safetensors" and not path.is_file():
        return {}
    if checkpoint_format(path) != "safetensors":
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path.name}: {_broken_safetensors(e)}") from None
    if CARD_KEY not in meta:
        return {}
    try:
        card = json.loads(meta[CARD_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {path.name} has a model card that is not valid JSON: {e}") from None
    if not isinstance(card, dict):
        raise ValueError(f"checkpoint {path.name} has a model card that is not a JSON object")
    return card


def read_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """State dict and model card of a checkpoint (read by :func:`read_checkpoint_object`)."""
    sd = load_checkpoint_file(path, trust_pickle=trust_pickle)
    return sd, read_card(path)


def load_checkpoint_file(path: str | Path, *, trust_pickle: bool = False) -> dict[str, Tensor]:
    """A state dict from a checkpoint file (read by :func:`read_checkpoint_object`): the file's dict of tensors,
    the one under ``state_dict``, or a trusted pickled model's ``state_dict()``.

    Raises:
        ValueError: missing file, not a checkpoint, unreadable or unsafe content (:class:`PickledModelError`),
            or not a state dict.
    """
    p = Path(path)
    obj = read_checkpoint_object(p, trust_pickle=trust_pickle)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {p.name} does not hold a state dict (a mapping of names to tensors)")
    return obj


# -- the one reader --------------------------------------------------------------------------------------------------
SAVE_STATE_DICT = 'torch.save(model.state_dict(), "model.pt")'
TRUST_HINT = (
    " If you trust this file, load it anyway with the command line's --trust-pickle (Python: trust_pickle=True)"
)
_PICKLE_PROTOCOLS = {bytes([0x80, n]) for n in range(2, 6)}


class PickledModelError(ValueError):
    """A checkpoint holds pickled Python objects (a whole model, or a plain ``pickle.dump``) that would import and
    run code; only ``trust_pickle=True`` loads it."""


def _first_op_is_torch_magic(head: bytes) -> bool:
    """Whether a pickle starts with torch's legacy (non-zip) ``torch.save`` magic number."""
    try:
        for op, arg, _ in pickletools.genops(head):
            if op.name in ("PROTO", "FRAME"):
                continue
            return op.name in ("LONG1", "LONG4") and arg == torch.serialization.MAGIC_NUMBER
    except Exception:  # a truncated head: the first ops were read, or it is not a pickle
        return False
    return False


def checkpoint_format(path: str | Path) -> str:
    """The checkpoint format of ``path`` from its first bytes: ``"safetensors"``, ``"torch"`` (``torch.save``'s zip
    archive or its older pickle format) or ``"pickle"`` (a plain ``pickle.dump``, which is not torch's format).

    Raises:
        ValueError: the file is missing, empty, or none of these (the message names it and says what to pass).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"checkpoint not found: {p}")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(64)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # torch.save's zip archive
        return "torch"
    if len(head) > 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"  # an 8-byte header length, then the JSON header
    if head[:2] in _PICKLE_PROTOCOLS:
        return "torch" if _first_op_is_torch_magic(head) else "pickle"
    what = "is empty" if size == 0 else "is neither a safetensors file nor a torch file (torch.save)"
    raise ValueError(
        f"cannot read checkpoint {p.name}: the file {what}. Pass the weights as safetensors, or as a torch file "
        f"saved with {SAVE_STATE_DICT}"
    )


def _opcode_globals(p: Path) -> set[str]:
    """The globals a pickle imports, from its opcodes (``GLOBAL``, and ``STACK_GLOBAL`` with the two strings it
    takes, also through the memo), without running it; what was read before an unreadable opcode."""
    found: set[str] = set()
    memo: dict[int, str | None] = {}
    last: list[str | None] = [None, None]  # the two values pushed last (None: not a string)
    try:
        with open(p, "rb") as f:
            for op, arg, _ in pickletools.genops(f):
                name = op.name
                if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                    last = [last[1], str(arg)]
                elif name == "MEMOIZE":
                    memo[len(memo)] = last[1]
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = last[1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    last = [last[1], memo.get(int(arg))]
                elif name == "GLOBAL":
                    found.add(str(arg).replace(" ", "."))
                    last = [last[1], None]
                elif name == "STACK_GLOBAL":
                    if last[0] and last[1]:
                        found.add(f"{last[0]}.{last[1]}")
                    last = [None, None]
                elif name not in ("PROTO", "FRAME"):
                    last = [last[1], None]
    except Exception:
        pass
    return found


def _pickle_globals(p: Path) -> list[str]:
    """The classes and functions a file's pickle would import, read without running it (``[]`` when they cannot
    be listed): torch's own listing for its zip archives, the pickle's opcodes otherwise."""
    try:
        found = set(torch.serialization.get_unsafe_globals_in_checkpoint(p))
    except Exception:
        found = _opcode_globals(p)
    library = ("torch.", "collections.", "builtins.", "typing.", "functools.", "numpy.")
    return sorted(found, key=lambda name: (name.startswith(library), name))


def _refusal(p: Path, plain: bool) -> PickledModelError:
    """The one message for a checkpoint that would run code (every path that reads a user's file gives it)."""
    found = _pickle_globals(p)
    listed = f" ({', '.join(found[:6])}{', ...' if len(found) > 6 else ''})" if found else ""
    what = "is a plain Python pickle (pickle.dump, not torch.save) and " if plain else ""
    return PickledModelError(
        f"checkpoint {p.name} {what}holds pickled Python objects{listed}, such as a whole model saved with "
        f"torch.save(model); loading it would import and run code, so it is refused. Save the weights instead: "
        f"{SAVE_STATE_DICT} (or torch.save({{'state_dict': model.state_dict()}}, ...)) and pass that file."
        + ("" if plain else TRUST_HINT)
    )


def _broken_safetensors(e: Exception) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"it starts like a safetensors file but does not read as one ({type(e).__name__}: {first})"


def read_checkpoint_object(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """What a checkpoint file holds, never running pickled code unless ``trust_pickle``: safetensors (a dict of
    tensors), a torch file read with ``torch.load(weights_only=True)``; a pickle that would import classes or
    functions (a whole model saved with ``torch.save(model)``, or any plain ``pickle.dump``) only with
    ``trust_pickle``. The format comes from the content (:func:`checkpoint_format`), not the file's suffix.

    Raises:
        PickledModelError: pickled objects and not ``trust_pickle`` (the message shows how to save a state dict).
        ValueError: a missing file, one that is no checkpoint, or one that does not read.
    """
    p = Path(path)
    fmt = checkpoint_format(p)
    if fmt == "safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except Exception as e:
            raise ValueError(f"cannot read checkpoint {p.name}: {_broken_safetensors(e)}") from None
    if fmt == "pickle":  # never unpickled, trusted or not: torch.load's one opt-in below is the only one
        if not trust_pickle:
            raise _refusal(p, plain=True)
        raise ValueError(
            f"cannot read checkpoint {p.name}: it is a plain Python pickle (pickle.dump), which attnviz does not "
            f"load even when trusted; save it with torch.save (best: {SAVE_STATE_DICT}) or as safetensors"
        )
    try:  # an open file: torch.load reads a path whose name ends in .safetensors as safetensors
        with open(p, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        if type(e).__name__ != "UnpicklingError":  # weights_only's refusal is an UnpicklingError
            first = (str(e).strip().splitlines() or [""])[0]
            raise ValueError(
                f"cannot read checkpoint {p.name}: it starts like a torch file but does not load "
                f"({type(e).__name__}: {first}); pass the weights as safetensors, or as a torch file saved with "
                f"{SAVE_STATE_DICT}"
            ) from None
    if not trust_pickle:
        raise _refusal(p, plain=False)
    try:
        with open(p, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"cannot unpickle checkpoint {p.name}: {type(e).__name__}: {e}") from None
