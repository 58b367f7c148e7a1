"""What the page offers and how it names it: the dropdowns' entries, the attention a network brings, the examples'
labels, and which timm networks can load here. Plain functions of the configuration (no model runs)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ..blocks import list_attentions
from ..capture.kinds import KIND_SPECS
from ..capture.rollout import FUSIONS
from ..sources.catalog import TIMM_ATTENTION, TIMM_MODELS
from ..sources.demo import examples_dir
from ..sources.hub import hf_cached_file
from ..sources.resnets import ARCHS
from ..sources.spec import Weights, is_own
from ..sources.timm import timm_availability
from .config import AppConfig

__all__ = [
    "AXES",
    "CHANNEL_VIEWS",
    "DISCARD_MAX",
    "FROM_NETWORK",
    "FUSION_CHOICES",
    "NONE",
    "TOPK_CHOICES",
    "WEIGHTS",
    "arch_choices",
    "brings_attention",
    "attention_choices",
    "compare_choices",
    "example_labels",
    "example_paths",
    "own_attention",
    "timm_status",
]

NONE = "none (plain ResNet)"
#: The attention dropdown's value for a network that brings its own attention (timm's, a served one): the type
#: picked in the dropdown does not apply to it.
FROM_NETWORK = "network"
WEIGHTS = [w.value for w in (Weights.DEMO, Weights.IMAGENET, Weights.RANDOM)]
AXES = ["0–1", "fit to data"]  # the channel chart's y axis: gates live in 0..1
TOPK_CHOICES = ["16", "32", "64", "all"]
#: Attention rollout's head fusion (Abnar & Zuidema 2020, as in vit-explain) and the discard ratio's slider top
#: (rollout needs a ratio below 1).
FUSION_CHOICES = list(FUSIONS)
DISCARD_MAX = 0.95
#: A channel gate's spatial views (attnviz.capture.kinds): the gate effect (the default, ``gate_effect``), then the
#: former gate-weighted mean activation (``attnviz render --channel-view``).
CHANNEL_VIEWS = [KIND_SPECS["channel"].view_name, *KIND_SPECS["channel"].views]

#: What each example shows, and the demo network's category for it (``None``: not one of its 8 categories).
EXAMPLES = {
    "chelsea_cat.jpg": ("cat", "mammal"),
    "rocket.jpg": ("rocket", "vehicle"),
    "astronaut.jpg": ("astronaut", None),
    "coffee.jpg": ("coffee", None),
}


def arch_choices(config: AppConfig) -> list[tuple[str, str]]:
    """Network dropdown entries: the one served with ``--model`` first, attnviz's ResNets, timm's ImageNet attention
    networks. The page can ask for these and nothing else (a user's model file is never loaded from the page, and a
    page served beyond loopback downloads only these)."""
    listed = [(a, a) for a in ARCHS] + [(f"{n} (timm, {TIMM_ATTENTION[n]})", n) for n in TIMM_MODELS]
    served = config.served
    if served and served not in {v for _, v in listed}:
        listed.insert(0, (f"{served} (served)", served))
    elif served:
        listed.sort(key=lambda choice: choice[1] != served)
    return listed


def compare_choices(config: AppConfig) -> list[tuple[str, str]]:
    """What a result can be compared with: another attention type (same network and weights) or another listed
    network (same attention type)."""
    attentions = [(f"attention type: {a}", f"attention:{a}") for a in list_attentions()]
    return attentions + [(f"network: {label}", f"network:{value}") for label, value in arch_choices(config)]


def own_attention(attention: str | None = None, kinds: Iterable[str] = ()) -> str:
    """The attention dropdown's label for a network with its own attention: its type (``"gc"``), else the kinds of
    the maps found in it, else that none was found."""
    what = attention or ", ".join(sorted(set(kinds)))
    return f"{what} (the network's own)" if what else "the network's own (none found)"


def attention_choices(own: str | None = None) -> list[tuple[str, str]]:
    """Attention dropdown entries: attnviz's types and :data:`NONE`; with ``own`` (a label from
    :func:`own_attention`), the entry :data:`FROM_NETWORK` of a network that brings its own."""
    listed = [(a, a) for a in list_attentions()] + [(NONE, NONE)]
    return [*listed, (own, FROM_NETWORK)] if own else listed


def brings_attention(arch: str) -> bool:
    """Whether the network ``arch`` has its own attention (anything but attnviz's ResNets)."""
    return not is_own(arch)


def example_paths() -> list[str]:
    """The shipped example photos, in the order the page lists them."""
    return sorted(str(p) for p in examples_dir().glob("*.jpg"))


def example_labels(paths: Sequence[str | Path], demo: bool) -> list[str]:
    """Each example's label: what it shows, and, for the demo network (``demo``), its category there or that it
    has none; other networks' categories are not guessed."""
    labels = []
    for p in paths:
        subject, category = EXAMPLES.get(Path(p).name, (Path(p).stem, None))
        if demo:
            subject += f" (demo: {category})" if category else " (not a demo category)"
        labels.append(subject)
    return labels


def timm_status(config: AppConfig) -> str:
    """Which timm ImageNet networks can load here, and why the others cannot (no download is attempted)."""
    lines = []
    for name in TIMM_MODELS:
        if config.offline:
            ok = hf_cached_file(f"timm/{name}", "model.safetensors") is not None
            reason = "cached" if ok else "not cached, and the app is offline"
        else:
            ok, reason = timm_availability(name)
        lines.append(f"- {name}: {'available' if ok else 'unavailable'} ({reason})")
    return "<details><summary>timm ImageNet attention networks</summary>\n\n" + "\n".join(lines) + "\n</details>"
