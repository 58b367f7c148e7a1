"""The public API is what DESIGN.md documents: nine names, sorted, no mutable globals; the rest through subpackages."""

import importlib
import types

import attnviz

DESIGN = {
    "AttentionMap",
    "AttentionRecorder",
    "analyze",
    "analyze_many",
    "build_model",
    "compare",
    "create_attention",
    "list_attentions",
    "load_model",
}


def test_all_is_designs_names_sorted():
    assert attnviz.__all__ == sorted(attnviz.__all__)
    assert set(attnviz.__all__) == DESIGN


def test_no_mutable_globals_exported():
    for name in attnviz.__all__:
        value = getattr(attnviz, name)
        assert callable(value) or isinstance(value, type), name
        assert not isinstance(value, (dict, list, set)), name


def test_analyze_is_the_function_and_modules_stay_reachable():
    assert isinstance(attnviz.analyze, types.FunctionType)  # no module of the same name shadows or is shadowed
    assert isinstance(attnviz.compare, types.FunctionType)
    assert importlib.import_module("attnviz.comparison").compare is attnviz.compare
    assert importlib.import_module("attnviz.pipeline").analyze is attnviz.analyze
    for mod in ("attnviz.blocks", "attnviz.capture", "attnviz.sources", "attnviz.pipeline", "attnviz.render"):
        assert isinstance(importlib.import_module(mod), types.ModuleType)
