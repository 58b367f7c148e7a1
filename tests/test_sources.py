"""Weights sources are one typed value (attnviz.sources.spec), whatever the spelling that reaches the library."""

from __future__ import annotations

from pathlib import Path

from attnviz.sources.spec import Weights, model_request, parse_weights


def test_spellings_map_to_one_source() -> None:
    assert parse_weights(None) is parse_weights("none") is parse_weights("random") is Weights.RANDOM
    assert parse_weights("pretrained") is parse_weights("imagenet") is Weights.IMAGENET
    assert parse_weights("demo") is Weights.DEMO and parse_weights(Weights.DEMO) is Weights.DEMO
    assert parse_weights("runs/best.pt") == Path("runs/best.pt")
    assert str(Weights.IMAGENET) == "imagenet" and Weights.RANDOM == "random"  # what settings record


def test_the_cache_keys_one_value_per_source() -> None:
    assert model_request("resnet18", "se", None).key == ("resnet18", "se", "random")
    assert model_request("seresnet50.ra2_in1k", "cbam", "pretrained").key == (
        "timm:seresnet50.ra2_in1k",
        None,
        "imagenet",
    )
    assert model_request("timm:resnet18", None, "imagenet") == model_request("timm:resnet18", None, "pretrained")
