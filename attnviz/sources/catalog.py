"""The networks attnviz lists by name: timm's ImageNet-pretrained attention networks and which attention type each
has, and for each attention type the best ImageNet network that has it (the selection policy's table,
:mod:`attnviz.sources.select`). Plain data: the sources, the spec parser and the policy all read it."""

from __future__ import annotations

__all__ = ["IMAGENET_BEST", "TIMM_ATTENTION", "TIMM_MODELS"]

#: timm model name (with its pretrained tag) -> a short description: attention, paper, ImageNet top-1 (timm's).
TIMM_MODELS: dict[str, str] = {
    "seresnet50.ra2_in1k": "SE-ResNet-50: squeeze-and-excitation channel gates (SENet, Hu et al., CVPR 2018); 80.3 %",
    "ecaresnet50d.miil_in1k": "ECA-ResNet-50d: efficient channel attention (ECA-Net, Wang et al., CVPR 2020); 80.6 %",
    "skresnet34.ra_in1k": "SK-ResNet-34: selective kernel branch weights (SKNet, Li et al., CVPR 2019); 77.0 %",
    "resnest50d.in1k": "ResNeSt-50d: split attention over radix splits (ResNeSt, Zhang et al., 2020); 81.0 %",
    "gcresnet50t.ra2_in1k": "GC-ResNet-50t: global context spatial softmax (GCNet, Cao et al., ICCVW 2019); 80.9 %",
    "botnet26t_256.c1_in1k": "BoTNet-26t: multi-head self-attention, 256 px only (BoTNet, Srinivas et al., "
    "CVPR 2021); 79.3 %",
}

#: timm model name -> the short attention label of its own attention.
TIMM_ATTENTION: dict[str, str] = {
    "seresnet50.ra2_in1k": "se",
    "ecaresnet50d.miil_in1k": "eca",
    "skresnet34.ra_in1k": "sk",
    "resnest50d.in1k": "splat",
    "gcresnet50t.ra2_in1k": "gc",
    "botnet26t_256.c1_in1k": "bot",
}

#: With weights "imagenet", an attention type gives the best ImageNet-pretrained network that has it (timm's,
#: trained with that attention); the other types get torchvision's ImageNet backbone with the block inserted
#: (flagged "attention untrained").
IMAGENET_BEST: dict[str, str] = {
    "se": "seresnet50.ra2_in1k",
    "eca": "ecaresnet50d.miil_in1k",
    "sk": "skresnet34.ra_in1k",
    "mhsa": "botnet26t_256.c1_in1k",
}
