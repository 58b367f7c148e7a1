"""The networks attnviz lists by name: timm's ImageNet-pretrained attention networks (convolutional gates, and the
vision transformers and hybrids of :data:`TIMM_TRANSFORMERS`) and which attention each has, and for each attention
type the best ImageNet network that has it (the selection policy's table, :mod:`attnviz.sources.select`). Plain
data: the sources, the spec parser, the page and the policy all read it. Every name carries its pretrained tag;
the weights download on first use (timm, through huggingface_hub) or are read from the Hugging Face cache."""

from __future__ import annotations

__all__ = ["IMAGENET_BEST", "TIMM_ATTENTION", "TIMM_MODELS", "TIMM_TRANSFORMERS"]

#: timm model name (with its pretrained tag) -> a short description: attention, paper, ImageNet top-1 (timm's; given
#: for the convolutional ones).
TIMM_MODELS: dict[str, str] = {
    "seresnet50.ra2_in1k": "SE-ResNet-50: squeeze-and-excitation channel gates (SENet, Hu et al., CVPR 2018); 80.3 %",
    "ecaresnet50d.miil_in1k": "ECA-ResNet-50d: efficient channel attention (ECA-Net, Wang et al., CVPR 2020); 80.6 %",
    "skresnet34.ra_in1k": "SK-ResNet-34: selective kernel branch weights (SKNet, Li et al., CVPR 2019); 77.0 %",
    "resnest50d.in1k": "ResNeSt-50d: split attention over radix splits (ResNeSt, Zhang et al., 2020); 81.0 %",
    "gcresnet50t.ra2_in1k": "GC-ResNet-50t: global context spatial softmax (GCNet, Cao et al., ICCVW 2019); 80.9 %",
    "botnet26t_256.c1_in1k": "BoTNet-26t: multi-head self-attention, 256 px only (BoTNet, Srinivas et al., "
    "CVPR 2021); 79.3 %",
    "vit_small_patch16_224.augreg_in21k_ft_in1k": "ViT-S/16: token attention over 14 x 14 patches and a class token "
    "(Dosovitskiy et al., ICLR 2021; AugReg, Steiner et al., TMLR 2022)",
    "deit_small_patch16_224.fb_in1k": "DeiT-S: token attention, trained on ImageNet-1k alone (Touvron et al., "
    "ICML 2021)",
    "vit_small_patch14_reg4_dinov2.lvd142m": "DINOv2 ViT-S/14 with 4 registers: self-supervised features, no "
    "classifier, 518 px (Oquab et al., TMLR 2024; Darcet et al., ICLR 2024)",
    "swin_tiny_patch4_window7_224.ms_in1k": "Swin-T: shifted-window attention, 7 x 7 windows (Liu et al., ICCV 2021)",
    "coatnet_0_rw_224.sw_in1k": "CoAtNet-0: convolution (MBConv, SE) then relative-position attention (Dai et al., "
    "NeurIPS 2021)",
    "maxvit_tiny_tf_224.in1k": "MaxViT-T: MBConv with SE, block (window) and grid attention (Tu et al., ECCV 2022)",
}

#: The vision transformers and hybrids of :data:`TIMM_MODELS`. The page opens each on the network's attention rollout
#: where its blocks roll out (a class token and one grid: ViT, DeiT, DINOv2), else on its last attention block's view
#: (Swin's last window map; the hybrids' last stage).
TIMM_TRANSFORMERS: tuple[str, ...] = (
    "vit_small_patch16_224.augreg_in21k_ft_in1k",
    "deit_small_patch16_224.fb_in1k",
    "vit_small_patch14_reg4_dinov2.lvd142m",
    "swin_tiny_patch4_window7_224.ms_in1k",
    "coatnet_0_rw_224.sw_in1k",
    "maxvit_tiny_tf_224.in1k",
)

#: timm model name -> the short attention label of its own attention.
TIMM_ATTENTION: dict[str, str] = {
    "seresnet50.ra2_in1k": "se",
    "ecaresnet50d.miil_in1k": "eca",
    "skresnet34.ra_in1k": "sk",
    "resnest50d.in1k": "splat",
    "gcresnet50t.ra2_in1k": "gc",
    "botnet26t_256.c1_in1k": "bot",
    "vit_small_patch16_224.augreg_in21k_ft_in1k": "token",
    "deit_small_patch16_224.fb_in1k": "token",
    "vit_small_patch14_reg4_dinov2.lvd142m": "token + registers",
    "swin_tiny_patch4_window7_224.ms_in1k": "window",
    "coatnet_0_rw_224.sw_in1k": "se + relative attention",
    "maxvit_tiny_tf_224.in1k": "se + block/grid attention",
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
