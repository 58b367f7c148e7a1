"""The user's own networks as sources: a function, class or ``nn.Module`` in a Python file (``path/file.py:NAME``,
kind ``"file"``) or an importable module (``package.module:NAME``, kind ``"module"``), and a whole pickled model
(``model.pt``, kind ``"pickle"``, only with ``trust_pickle``). Their weights: as built, or a checkpoint file
(:func:`attnviz.sources.statedict.load_user_checkpoint`); labels ``class i`` and ImageNet's normalisation unless the
caller gives others."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import read_checkpoint_object
from .meta import ModelMeta
from .registry import LoadOptions, register_source
from .spec import ModelSpec, Weights
from .statedict import load_user_checkpoint

__all__ = ["load_pickled", "load_user"]


def _import_file(path: Path) -> Any:
    """Import a Python file by path, as a module of its own (its folder on ``sys.path`` while it runs)."""
    if not path.is_file():
        raise ValueError(f"model file not found: {path}")
    if path.suffix != ".py":
        raise ValueError(f"model file {path} is not a .py file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"attnviz_user_{path.stem.replace('-', '_')}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ValueError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def _build_user(spec: ModelSpec) -> nn.Module:
    where, attr = str(spec.location), spec.name
    if spec.kind == "file":
        module = _import_file(Path(where).expanduser())
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ValueError(f"cannot import module {where!r} for {spec.text!r}: {e}") from None
    if not hasattr(module, attr):
        found = [k for k, v in vars(module).items() if not k.startswith("_") and callable(v)]
        close = difflib.get_close_matches(attr, found, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"{where} has no {attr!r}{hint}")
    obj = getattr(module, attr)
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise ValueError(f"{spec}: {attr} is a {type(obj).__name__}, not a function or class")
        try:
            obj = obj()
        except TypeError as e:
            raise ValueError(f"{spec}: calling {attr}() failed ({e}); give a function that takes no arguments") from e
    if not isinstance(obj, nn.Module):
        raise ValueError(f"{spec}: {attr}() returned a {type(obj).__name__}, not an nn.Module")
    return obj


@register_source("pickle")
def load_pickled(spec: ModelSpec, options: LoadOptions) -> tuple[nn.Module, ModelMeta]:
    """A whole pickled model (``torch.save(model)``), read only with ``trust_pickle`` (it runs code)."""
    if isinstance(options.weights, Path) or options.weights is Weights.DEMO:
        raise ValueError(f"{spec} is a whole model; it takes no separate weights")
    obj = read_checkpoint_object(spec.name, trust_pickle=options.trust_pickle)
    if isinstance(obj, dict):
        obj = next((obj[k] for k in ("model", "module", "net") if isinstance(obj.get(k), nn.Module)), obj)
    if not isinstance(obj, nn.Module):
        raise ValueError(
            f"{spec} holds a {type(obj).__name__}, not a whole model; give the code that builds the network "
            "(file.py:NAME) and pass this file as its weights"
        )
    trust = " (pickled model, trusted)" if options.trust_pickle else ""
    return obj, ModelMeta(spec.text, source=f"file {Path(spec.name).name}{trust}")


@register_source("file", "module")
def load_user(spec: ModelSpec, options: LoadOptions) -> tuple[nn.Module, ModelMeta]:
    """The network the user's function, class or module gives, with a checkpoint file loaded into it if one is
    given (``None``, random and ImageNet weights: as built)."""
    if options.weights is Weights.DEMO:
        raise ValueError(f"demo weights are attnviz's resnet18 only; {spec} has none")
    model = _build_user(spec)
    if not isinstance(options.weights, Path):
        return model, ModelMeta(spec.text, source=f"as built by {spec}")
    load_user_checkpoint(model, options.weights, spec.text, trust_pickle=options.trust_pickle)
    return model, ModelMeta(spec.text, source=f"file {options.weights.name}")
