"""Where weights come from, and loading them with the key checks that say exactly what did not fit.

Sources (DESIGN.md, "Weights"):
  ``"imagenet"``  torchvision's ImageNet weights for the backbone, through its Weights API (downloaded on
                  first use into ``$TORCH_HOME/hub/checkpoints``, read from there offline); inserted
                  attention blocks stay untrained.
  ``"demo"``      the shipped checkpoints trained on cut-and-paste scenes (:mod:`attnviz.sources.demo`).
  a file path     a checkpoint of this architecture and attention: ``.safetensors`` (with a model card in
                  its header, see :mod:`attnviz.sources.checkpoint`), or a torch file read with
                  ``torch.load(weights_only=True)`` (a pickle that would run code is refused).

Users' checkpoints into users' networks: :mod:`.statedict`; what did not fit, said exactly: :mod:`.mismatch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torchvision.models import get_model_weights

from ..blocks import attention_modules
from .checkpoint import (
    PickledModelError,
    load_checkpoint_file,
    read_card,
    read_checkpoint,
    read_checkpoint_object,
    tensors_sha256,
)
from .demo import DEMO_ARCH, demo_dir, demo_file
from .hub import OfflineError, offline_reason, torchvision_cache_file, torchvision_state_dict
from .meta import ModelMeta, Preprocess, attach_meta, meta_of
from .mismatch import Ident, _misfits, misfit_message
from .resnets import ARCHS
from .select import pretrained_variant
from .spec import Weights, parse_weights

__all__ = [
    "LoadReport",
    "PickledModelError",
    "read_checkpoint_object",
    "load_backbone_state_dict",
    "load_checkpoint_file",
    "load_weights",
    "imagenet_meta",
    "imagenet_state_dict",
    "imagenet_weights",
    "weights_card",
]


def _ident(model: nn.Module) -> Ident:
    """(arch, attention) of a model attnviz made, from its metadata; (class name, None) for any other."""
    try:
        meta = meta_of(model)
    except ValueError:
        return type(model).__name__, None
    return meta.spec, meta.attention


@dataclass
class LoadReport:
    """What happened when a backbone state dict was loaded into a model with attention.

    Attributes:
        missing_attention: the model's attention parameters and buffers the state dict did not have
            (expected: they are new).
        replaced: state-dict keys of modules the attention replaced (``conv2``/``bn2`` of a block whose 3x3
            convolution is an attention block), not loaded.
        head_reset: the classifier (``fc``) was left at its initialisation because its shape differs.
        mapped: state-dict key -> model key, for tensors of replaced modules that loaded into an attention block
            through its declared ``backbone_keys`` (``sk_pre``: ``layer1.0.conv2.weight`` ->
            ``layer1.0.conv2.paths.0.conv.weight``); they are neither in ``missing_attention`` nor in ``replaced``.
    """

    missing_attention: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    head_reset: bool = False
    mapped: dict[str, str] = field(default_factory=dict)


def _map_backbone_keys(
    attention: dict[str, nn.Module], sd: dict[str, Tensor], own: dict[str, Tensor]
) -> dict[str, str]:
    """Rename in ``sd`` the tensors that attention blocks declare they take (``backbone_keys``: a prefix relative to
    the block holding the attention module -> a submodule of the attention module); returns old key -> new key."""
    mapped: dict[str, str] = {}
    for path, module in attention.items():
        parent = path.rpartition(".")[0]
        for src, dst in getattr(module, "backbone_keys", {}).items():
            src_prefix = f"{parent}.{src}." if parent else f"{src}."
            for key in [k for k in sd if k.startswith(src_prefix)]:
                new = f"{path}.{dst}.{key[len(src_prefix) :]}"
                if new in own and new not in sd:
                    sd[new] = sd.pop(key)
                    mapped[key] = new
    return mapped


def _under(key: str, prefixes: list[str]) -> bool:
    return any(key.startswith(p + ".") for p in prefixes)


def load_backbone_state_dict(
    model: nn.Module, state_dict: dict[str, Tensor], *, ident: Ident | None = None
) -> LoadReport:
    """Load a plain-ResNet state dict (e.g. torchvision ImageNet) into ``model`` with ``strict=False``,
    checking that the only keys that do not match are attention keys.

    An attention block that declares ``backbone_keys`` (``sk_pre``, ``epsa_pre``) takes the tensors of the modules
    it replaced under its own names (:attr:`LoadReport.mapped`); those then count as loaded, not as attention.
    ``ident``: (arch, attention) named in the errors (default: the model's metadata).

    Raises:
        ValueError: a key is missing that is not an attention parameter, an unexpected key is not part of a
            module the attention replaced, or a shape differs (other than the classifier's); the message
            lists them.
    """
    attention = attention_modules(model)
    prefixes = list(attention)
    modules = dict(model.named_modules())
    own = model.state_dict()
    sd = dict(state_dict)
    report = LoadReport(mapped=_map_backbone_keys(attention, sd, own))
    fc_keys = [k for k in sd if k.startswith("fc.")]
    if any(k in own and own[k].shape != sd[k].shape for k in fc_keys):
        for k in fc_keys:
            del sd[k]
        report.head_reset = True
    mismatched = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sd
        if k in own and own[k].shape != sd[k].shape
    ]
    missing = [k for k in own if k not in sd and not (report.head_reset and k.startswith("fc."))]
    unexpected = [k for k in sd if k not in own]
    bad_missing = [k for k in missing if not _under(k, prefixes)]

    def replaced(key: str) -> bool:
        parent = key.rpartition(".")[0]
        return parent in prefixes or isinstance(modules.get(parent), nn.Identity)

    bad_unexpected = [k for k in unexpected if not replaced(k)]
    if mismatched or bad_missing or bad_unexpected:
        what = ident or _ident(model)
        groups = [
            ("shape mismatches", mismatched),
            ("missing keys that are not attention parameters", bad_missing),
            ("unexpected keys", bad_unexpected),
        ]
        head = f"this state dict does not fit {what[0]} with attention={what[1]!r}:"
        raise ValueError(misfit_message(head, groups, state_dict, what))
    model.load_state_dict(sd, strict=False)
    report.missing_attention = [k for k in missing if _under(k, prefixes)]
    report.replaced = [k for k in unexpected if replaced(k)]
    return report


def imagenet_weights(arch: str) -> Any:
    """torchvision's default ImageNet weights enum member for ``arch`` (e.g. ``ResNet50_Weights.IMAGENET1K_V2``)."""
    return get_model_weights(arch).DEFAULT


def imagenet_meta(arch: str) -> tuple[tuple[str, ...], Preprocess]:
    """Labels and preprocessing from torchvision's ImageNet weights enum for ``arch`` (no download)."""
    w = imagenet_weights(arch)
    t = w.transforms()
    pre = Preprocess(tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std), int(t.resize_size[0]))
    return tuple(w.meta["categories"]), pre


def imagenet_state_dict(arch: str, offline: bool | None = None) -> dict[str, Tensor]:
    """torchvision's ImageNet state dict for ``arch`` (:func:`attnviz.sources.hub.torchvision_state_dict`: the
    cached file in ``$TORCH_HOME/hub/checkpoints``, else downloaded there unless downloads are off).

    Raises:
        OfflineError: the file is not cached and downloads are off (the message names the file and where it belongs).
        ValueError: the download failed, or the file does not read.
    """
    w = imagenet_weights(arch)
    cached, off = torchvision_cache_file(w), offline_reason(offline)
    if off is not None and not cached.is_file():
        raise OfflineError(
            f"ImageNet weights for {arch} are not in the cache ({cached}) and downloads are off ({off}): "
            "run once without --offline, or place that file there"
        )
    return torchvision_state_dict(w, offline=offline, progress=False, what=f"ImageNet weights for {arch}")


CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def weights_card(weights: str | Path | Weights | None, arch: str, attention: str | None) -> dict[str, Any]:
    """The model card a weight source brings (``{}`` for none, random, imagenet or a file without a card).

    Raises:
        ValueError: the card's architecture or attention differs from the model asked for (both are named),
            or ``"demo"`` is asked for an architecture or attention that has no shipped checkpoint.
    """
    source = parse_weights(weights)
    if source in (Weights.RANDOM, Weights.IMAGENET):
        return {}
    if source is Weights.DEMO:
        path = demo_file(attention)
        if arch != DEMO_ARCH:
            raise ValueError(f"demo checkpoints are {DEMO_ARCH} only, not {arch}; use --arch {DEMO_ARCH}")
        if not path.is_file():
            shipped = pretrained_variant(attention)
            if shipped and demo_file(shipped).is_file():  # sk -> sk_pre: what the page runs on the demo
                raise ValueError(
                    f"no demo checkpoint for attention={attention!r}: the demo ships {shipped!r}, its variant for "
                    f"pretrained backbones (the demo's blocks go into a trained backbone); use attention={shipped!r}"
                )
            raise ValueError(f"no demo checkpoint for attention={attention!r}: {path.name} is not in {demo_dir()}")
    else:
        path = Path(source)
        if path.suffix not in CHECKPOINT_SUFFIXES and not path.exists():
            raise ValueError(
                f"unknown weights {weights!r}; use None, 'demo', 'imagenet', or a path to a .safetensors/.pt file"
            )
        if not path.is_file():
            raise ValueError(f"checkpoint not found: {path}")
    card = read_card(path)
    if card and (card.get("arch") != arch or card.get("attention") != attention):
        raise ValueError(
            f"checkpoint {path.name} is for {card.get('arch')} with attention={card.get('attention')!r}, "
            f"not {arch} with attention={attention!r}"
        )
    return card


def _load_own_checkpoint(model: nn.Module, path: Path, ident: Ident, trust_pickle: bool = False) -> dict[str, Any]:
    """Load one of attnviz's checkpoints (full, or a delta naming its base) into ``model``; returns its card.

    Raises:
        ValueError: the file does not read (:func:`attnviz.sources.checkpoint.read_checkpoint_object`), or does not
            fit: the message counts and names the missing, unexpected and misshapen keys, and says which network the
            file looks like.
    """
    sd, card = read_checkpoint(path, trust_pickle=trust_pickle)
    what = f"{ident[0]} with attention={ident[1]!r}"
    base = card.get("base")
    if base:
        base_path = path.parent / str(base.get("file"))
        if not base_path.is_file():
            raise ValueError(f"checkpoint {path.name} builds on {base_path.name}, which is not beside it")
        base_sd = load_checkpoint_file(base_path)
        if base.get("sha256") and tensors_sha256(base_sd) != base["sha256"]:
            raise ValueError(f"checkpoint {path.name} builds on {base_path.name}, but that file's weights have changed")
        load_backbone_state_dict(model, base_sd, ident=ident)
        groups = _misfits(sd, model.state_dict())[1:]  # a delta holds some keys: none is missing
        if any(keys for _, keys in groups):
            head = f"checkpoint {path.name} (a delta on {base_path.name}) does not fit {what}:"
            raise ValueError(misfit_message(head, groups, sd, ident, own_arch=False))
        model.load_state_dict(sd, strict=False)
        return card
    groups = _misfits(sd, model.state_dict())
    if any(keys for _, keys in groups):
        raise ValueError(misfit_message(f"checkpoint {path.name} does not fit {what}:", groups, sd, ident))
    model.load_state_dict(sd, strict=False)
    return card


def own_weights(
    model: nn.Module,
    weights: str | Path | Weights,
    ident: tuple[str, str | None],
    *,
    trust_pickle: bool = False,
    offline: bool | None = None,
) -> tuple[LoadReport | None, dict[str, Any]]:
    """Load ``weights`` into attnviz's ResNet ``model`` (``ident``: its arch and attention); returns the backbone
    report (ImageNet) and the :class:`~attnviz.sources.meta.ModelMeta` fields the weights decide."""
    arch, attention = ident
    source = parse_weights(weights)
    if source is Weights.IMAGENET:
        if arch not in ARCHS:
            raise ValueError("ImageNet weights need a model from attnviz.build_model (its arch is not known)")
        report = load_backbone_state_dict(model, imagenet_state_dict(arch, offline), ident=ident)
        labels, pre = imagenet_meta(arch)
        return report, {
            "source": f"imagenet ({imagenet_weights(arch)})",
            "labels": labels,
            "preprocess": pre,
            "untrained": bool(report.missing_attention),
        }
    if source is Weights.DEMO:
        p = demo_file(attention)
        weights_card(source, str(arch), attention)  # clear errors before reading
        said = f"demo ({p.name})"
    elif source is Weights.RANDOM:
        return None, {}
    else:
        p = source
        weights_card(p, str(arch), attention)  # unknown source, missing file, wrong model
        said = f"file {p.name}"
    card = _load_own_checkpoint(model, p, (arch, attention), trust_pickle)
    fields: dict[str, Any] = {"source": said, "untrained": False}
    if card:
        pre = Preprocess(tuple(card["mean"]), tuple(card["std"]), int(card.get("input_size", 224)))
        fields.update(labels=tuple(card["classes"]), preprocess=pre, card=card)
    return None, fields


def load_weights(model: nn.Module, weights: str | Path, *, trust_pickle: bool = False) -> LoadReport | None:
    """Load ``weights`` into a model made by :func:`attnviz.build_model` and record the source in its metadata.

    Sources: ``"imagenet"`` (torchvision, attention untrained), ``"demo"`` (the shipped checkpoints, see
    :mod:`attnviz.sources.demo`), or a checkpoint file (full, or a delta naming its base). The model's
    :class:`~attnviz.sources.meta.ModelMeta` gets the source, whether the attention is untrained, and the
    source's labels and preprocessing (its metadata or model card). ``trust_pickle``: a file that holds pickled
    objects may run its code.

    Raises:
        ValueError: an unknown source, or weights that do not fit (the message says which keys).
    """
    try:
        meta: ModelMeta | None = meta_of(model)
    except ValueError:
        meta = None
    if meta is None and parse_weights(weights) is Weights.IMAGENET:
        raise ValueError("ImageNet weights need a model from attnviz.build_model (model.arch is not set)")
    ident = (meta.spec, meta.attention) if meta is not None else _ident(model)
    report, fields = own_weights(model, weights, ident, trust_pickle=trust_pickle)
    if meta is not None and fields:
        attach_meta(model, replace(meta, **fields))
    return report
