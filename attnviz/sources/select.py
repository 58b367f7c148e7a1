"""Which network a request runs: the policy the page, the command line and scripts share.

With ImageNet weights on attnviz's ResNets, an attention type that has an ImageNet-pretrained network
(:data:`~attnviz.sources.catalog.IMAGENET_BEST`: timm's, trained with that attention) gets that network. With
ImageNet or demo weights (both put the block into a trained backbone: the demo's attention types are fine-tuned on
its frozen scene backbone), a type with a variant made for pretrained backbones (``variant_of`` in the registry:
sk -> sk_pre, epsa -> epsa_pre) gets the variant, so the backbone's trained 3x3 convolution is kept rather than
replaced by a random one. Any other request runs as asked. So ``attnviz render IMAGE --attention se --weights
imagenet`` runs the network the page shows for SE with ImageNet weights, and the demo ships, per type, the network
this policy runs (:func:`demo_attentions`).
"""

from __future__ import annotations

from ..blocks import get_attention, list_attentions
from .catalog import IMAGENET_BEST
from .demo import DEMO_ARCH
from .spec import Weights, is_own, parse_spec, parse_weights

__all__ = ["IMAGENET_BEST", "choose_network", "default_weights", "demo_attentions", "pretrained_variant"]

_TRAINED_BACKBONE = (Weights.IMAGENET, Weights.DEMO)  # weights that put an inserted block into a trained backbone


def pretrained_variant(attention: str | None) -> str | None:
    """The registered variant of ``attention`` made for pretrained backbones (``sk`` -> ``sk_pre``), or ``None``."""
    if attention is None:
        return None
    return next((n for n in list_attentions() if get_attention(n).variant_of == attention), None)


def choose_network(attention: str | None, arch: str, weights: str | None) -> tuple[str | None, str, str | None]:
    """(attention, network, weights) a request for ``attention`` on ``arch`` with ``weights`` runs: with ImageNet
    weights on attnviz's ResNets, the best ImageNet network for the attention type (:data:`IMAGENET_BEST`, its own
    attention: attention ``None``); with ImageNet or demo weights, else the type's variant for pretrained backbones
    (:func:`pretrained_variant`); anything else unchanged."""
    source = parse_weights(weights) if weights is not None else None
    if source not in _TRAINED_BACKBONE or not is_own(arch):
        return attention, arch, weights
    if source is Weights.IMAGENET and attention in IMAGENET_BEST:
        return None, IMAGENET_BEST[attention], Weights.IMAGENET.value
    return pretrained_variant(attention) or attention, arch, weights


def demo_attentions() -> list[str]:
    """The attention types the demo ships a checkpoint for: every paper type in the registry as
    :func:`choose_network` runs it on the demo weights (``sk`` and ``epsa`` as ``sk_pre`` and ``epsa_pre``)."""
    papers = [n for n in list_attentions() if get_attention(n).variant_of is None]
    return [choose_network(n, DEMO_ARCH, Weights.DEMO.value)[0] or n for n in papers]


def default_weights(spec: str) -> Weights:
    """The weights a request without any runs with: the shipped demo checkpoints for attnviz's resnet18, a library
    network's pretrained ones (timm, torchvision), else random (a user's own code builds its model as it does)."""
    if spec == "resnet18":
        return Weights.DEMO
    try:
        kind = parse_spec(spec).kind
    except ValueError:
        return Weights.RANDOM  # the spec's own error comes when it is loaded
    return Weights.IMAGENET if kind in ("timm", "torchvision") else Weights.RANDOM
