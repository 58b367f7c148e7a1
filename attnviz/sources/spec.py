"""Which network and which weights: typed values, parsed once, instead of loose strings.

A model spec (``load_model``'s first argument, the CLI's ``--model``, ``analyze(arch=...)``) becomes a
:class:`ModelSpec` through :func:`parse_spec`; its ``kind`` picks the source that loads it
(:mod:`attnviz.sources.registry`). A weights argument (``--weights``, the app's Weights field) is one of
:class:`Weights` or a checkpoint path; :func:`parse_weights` reads it, with the spellings people use
(``None``/``"none"`` for random, ``"pretrained"`` for ImageNet). :func:`model_request` gives both, with the
attention type, as the one :class:`ModelRequest` the pipeline's model cache keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .catalog import TIMM_MODELS
from .resnets import ARCHS

__all__ = [
    "SPEC_FORMS",
    "ModelRequest",
    "ModelSpec",
    "Weights",
    "is_own",
    "model_request",
    "parse_spec",
    "parse_weights",
]

SPEC_FORMS = (
    "path/to/file.py:NAME, package.module:NAME, timm:NAME, torchvision:NAME, resnet18|resnet34|resnet50|resnet101, "
    "or a pickled model file (with trust_pickle)"
)
#: Suffixes of a whole pickled model given as the spec itself (``torch.save(model)``).
PICKLE_SUFFIXES = (".pt", ".pth", ".pth.tar", ".bin", ".ckpt", ".pkl")


class Weights(str, Enum):
    """A named source of weights (a ``str``, so it is also what settings and result.json record)."""

    RANDOM = "random"  # random initialisation, drawn from a fixed seed (untrained: maps are not meaningful)
    DEMO = "demo"  # the shipped demo checkpoints (attnviz's resnet18, every attention type)
    IMAGENET = "imagenet"  # ImageNet-pretrained: torchvision's backbone for attnviz's ResNets, the library's own
    # weights for timm: and torchvision: networks

    def __str__(self) -> str:
        return self.value


_ALIASES = {"none": Weights.RANDOM, "pretrained": Weights.IMAGENET}


def parse_weights(value: str | Path | Weights | None) -> Weights | Path:
    """The source ``value`` names: a :class:`Weights` member (``None``, ``"none"`` and ``"random"`` are random;
    ``"pretrained"`` is ImageNet), else a checkpoint path."""
    if value is None:
        return Weights.RANDOM
    if isinstance(value, (Weights, Path)):
        return value
    text = str(value).strip()
    if text in Weights._value2member_map_:
        return Weights(text)
    if text in _ALIASES:
        return _ALIASES[text]
    return Path(text)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        kind: the source that loads it: ``"own"`` (attnviz's ResNets), ``"timm"``, ``"torchvision"``, ``"file"``
            (a function, class or module in a Python file), ``"module"`` (the same in an importable module) or
            ``"pickle"`` (a whole pickled model).
        name: the arch, the library's model name, the attribute of the file or module, or the pickle's path.
        text: the spec as written, normalised (one of timm's listed networks named alone gets ``timm:``).
        location: the Python file (``kind="file"``) or the module name (``kind="module"``), else ``None``.
    """

    kind: str
    name: str
    text: str
    location: str | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def own(self) -> bool:
        """Whether it is one of attnviz's own ResNets (attention blocks inserted by attnviz)."""
        return self.kind == "own"


def parse_spec(spec: str | ModelSpec) -> ModelSpec:
    """The :class:`ModelSpec` ``spec`` names (see :func:`attnviz.load_model` for the forms).

    Raises:
        ValueError: an empty spec, or one of no known form (the forms are listed).
    """
    if isinstance(spec, ModelSpec):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty model spec; use {SPEC_FORMS}")
    text = spec.strip()
    if text in ARCHS:
        return ModelSpec("own", text, text)
    if text in TIMM_MODELS:
        return ModelSpec("timm", text, f"timm:{text}")
    for library in ("timm", "torchvision"):
        if text.startswith(f"{library}:"):
            return ModelSpec(library, text.partition(":")[2].strip(), text)
    if ":" not in text.replace(":\\", "").replace(":/", "") and text.lower().endswith(PICKLE_SUFFIXES):
        return ModelSpec("pickle", text, text)
    where, _, attr = text.rpartition(":")
    if not where or not attr:
        raise ValueError(f"unknown model spec {text!r}; use {SPEC_FORMS}")
    kind = "file" if where.endswith(".py") or "/" in where or "\\" in where else "module"
    return ModelSpec(kind, attr, text, where)


def is_own(spec: str | ModelSpec) -> bool:
    """Whether ``spec`` names one of attnviz's own ResNets (a spec of no known form does not; it is refused when
    loaded)."""
    try:
        return parse_spec(spec).own
    except ValueError:
        return False


@dataclass(frozen=True)
class ModelRequest:
    """A network asked for: its spec, the attention type inserted (attnviz's ResNets only: other networks bring
    their own) and the weights."""

    spec: ModelSpec
    attention: str | None
    weights: Weights | Path

    @property
    def key(self) -> tuple[str, str | None, str]:
        """(spec, attention, weights) as text: what settings and result.json record."""
        return self.spec.text, self.attention, str(self.weights)


def model_request(spec: str | ModelSpec, attention: str | None, weights: str | Path | Weights | None) -> ModelRequest:
    """The :class:`ModelRequest` for ``spec`` (:func:`parse_spec`), ``attention`` (dropped for networks that are not
    attnviz's) and ``weights`` (:func:`parse_weights`: ``None``/``"none"`` random, ``"pretrained"`` ImageNet)."""
    parsed = parse_spec(spec)
    return ModelRequest(parsed, attention if parsed.own else None, parse_weights(weights))
