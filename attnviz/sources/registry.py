"""The sources of networks: one loader per :attr:`ModelSpec.kind <attnviz.sources.spec.ModelSpec.kind>`.

A source registers itself with ``@register_source("timm")``; a second one for the same kind is refused.
:func:`attnviz.load_model` parses the spec once and hands it to the loader of its kind, which returns the model and
its :class:`~attnviz.sources.meta.ModelMeta`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .meta import ModelMeta
from .spec import ModelSpec, Weights

__all__ = ["LoadOptions", "Loader", "get_source", "register_source", "source_kinds"]


@dataclass(frozen=True)
class LoadOptions:
    """What a loader gets besides the spec.

    Attributes:
        weights: ``None`` for the source's default (pretrained for timm/torchvision, random for attnviz's ResNets,
            as built for a user's code), a :class:`~attnviz.sources.spec.Weights` member, or a checkpoint file.
        attention: attnviz's ResNets: the attention type inserted.
        pretrained: timm/torchvision with default weights: their pretrained ones (``False``: random).
        offline: ``True`` forbids downloads (the environment may too, see :func:`attnviz.sources.hub.offline_reason`).
        progress: show download progress.
        trust_pickle: allow checkpoints that hold pickled Python objects.
    """

    weights: Weights | Path | None = None
    attention: str | None = None
    pretrained: bool = True
    offline: bool | None = None
    progress: bool = True
    trust_pickle: bool = False


Loader = Callable[[ModelSpec, LoadOptions], tuple[nn.Module, ModelMeta]]
_SOURCES: dict[str, Loader] = {}


def register_source(*kinds: str) -> Callable[[Loader], Loader]:
    """Register the decorated loader for spec ``kinds``.

    Raises:
        ValueError: a kind already has a loader.
    """

    def add(loader: Loader) -> Loader:
        for kind in kinds:
            if kind in _SOURCES:
                raise ValueError(f"a source for {kind!r} specs is already registered ({_SOURCES[kind].__qualname__})")
            _SOURCES[kind] = loader
        return loader

    return add


def get_source(kind: str) -> Loader:
    """The loader registered for ``kind``.

    Raises:
        ValueError: no source for ``kind`` (the registered kinds are named).
    """
    try:
        return _SOURCES[kind]
    except KeyError:
        raise ValueError(f"no source for {kind!r} specs; registered: {', '.join(_SOURCES)}") from None


def source_kinds() -> list[str]:
    """The registered kinds, in registration order."""
    return list(_SOURCES)
