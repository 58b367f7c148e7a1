"""attnviz's own ResNets as a source: :func:`build_model` (the architecture of :mod:`attnviz.sources.resnets` with
weights from :mod:`attnviz.sources.weights`) and the ``"own"`` loader :func:`attnviz.load_model` dispatches to."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from .meta import ModelMeta, attach_meta
from .registry import LoadOptions, register_source
from .resnets import ARCHS, AttnBasicBlock, AttnBottleneck, attention_modules, count_parameters, resnet
from .spec import ModelSpec, Weights
from .weights import imagenet_meta, own_weights, weights_card

__all__ = ["ARCHS", "AttnBasicBlock", "AttnBottleneck", "attention_modules", "build_model", "count_parameters"]


def _build(
    arch: str,
    attention: str | None,
    *,
    num_classes: int | None = None,
    weights: str | Path | Weights | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    trust_pickle: bool = False,
    offline: bool | None = None,
) -> tuple[nn.Module, ModelMeta]:
    """:func:`build_model`'s work: the model (eval mode) and its metadata, not yet attached."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid archs: {', '.join(ARCHS)}")
    card = weights_card(weights, arch, attention)
    if card and num_classes is not None and num_classes != len(card["classes"]):
        raise ValueError(f"these weights have {len(card['classes'])} classes, not num_classes={num_classes}")
    num_classes = len(card["classes"]) if card else 1000 if num_classes is None else num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    model = resnet(arch, attention, num_classes, attention_kwargs)
    labels, pre = imagenet_meta(arch)
    if num_classes != len(labels):
        labels = tuple(f"class {i}" for i in range(num_classes))
    meta = ModelMeta(arch, attention, "random", attention is not None, labels, preprocess=pre)
    if weights is not None:
        _, fields = own_weights(model, weights, (arch, attention), trust_pickle=trust_pickle, offline=offline)
        meta = replace(meta, **fields)
    return model.eval(), meta


def build_model(
    arch: str = "resnet50",
    attention: str | None = None,
    *,
    num_classes: int | None = None,
    weights: str | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    trust_pickle: bool = False,
) -> nn.Module:
    """A torchvision ResNet with ``attention`` blocks inserted at the paper's placement.

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet101``.
        attention: a registry name (:func:`attnviz.list_attentions`) or ``None`` for the plain network.
        num_classes: size of the classifier (default: the weights' classes, else 1000).
        weights: ``None`` (random init); ``"imagenet"``: torchvision's ImageNet weights through its Weights API
            (cached under ``$TORCH_HOME``), attention blocks then untrained (``sk``/``epsa`` replace the pretrained 3x3
            convolutions; ``sk_pre``/``epsa_pre`` take them as their first branch); ``"demo"``: the shipped checkpoints
            trained on cut-and-paste scenes (resnet18; ``sk``/``epsa`` as ``sk_pre``/``epsa_pre``:
            :func:`attnviz.sources.select.demo_attentions`); or a checkpoint path.
        attention_kwargs: extra keyword arguments for every inserted block (e.g. ``{"reduction": 8}``).
        trust_pickle: load a checkpoint file that holds pickled Python objects (it runs their code); without it
            such a file is refused (:class:`attnviz.sources.checkpoint.PickledModelError`).

    Returns:
        The model in eval mode, with its :class:`~attnviz.sources.meta.ModelMeta` attached
        (:func:`attnviz.sources.meta.meta_of`): labels and preprocessing from torchvision's ImageNet metadata for
        1000 classes, until a source with its own (a model card) replaces them.

    Raises:
        ValueError: unknown arch, attention or weights, or block arguments the block rejects.
    """
    model, meta = _build(
        arch,
        attention,
        num_classes=num_classes,
        weights=weights,
        attention_kwargs=attention_kwargs,
        trust_pickle=trust_pickle,
    )
    return attach_meta(model, meta)


@register_source("own")
def load_own(spec: ModelSpec, options: LoadOptions) -> tuple[nn.Module, ModelMeta]:
    """attnviz's ResNet ``spec.name`` with ``options.attention`` inserted; weights ``demo``, ``imagenet`` (refused at
    once when offline and not cached), ``random``/``None`` or a file."""
    weights = None if options.weights is Weights.RANDOM else options.weights
    model, meta = _build(
        spec.name, options.attention, weights=weights, trust_pickle=options.trust_pickle, offline=options.offline
    )
    n = len(meta.labels or ())
    labels = "model card" if meta.card else "ImageNet-1k (torchvision)" if n == 1000 else "class i"
    return model, replace(meta, labels_source=labels, num_outputs=n)
