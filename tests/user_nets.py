"""Networks written the way users write them: attention modules as copied from blog posts and module collections,
placed into small CNNs. attnviz has no taps or adapters for any of them; discovery must find their sites.

Each factory returns (model, expected) where expected lists (name, kind, canonical shape without the batch) for an
input of (B, 3, 32, 32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _stem(c: int = 16) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU())  # 32 -> 16


class Net(nn.Module):
    """stem (16 x 16) -> layer1 (one block with ``attn``) -> pool -> fc."""

    def __init__(self, attn: nn.Module, c: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.stem = _stem(c)
        self.layer1 = nn.Sequential(Block(c, attn))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layer1(self.stem(x))).flatten(1))


class Block(nn.Module):
    def __init__(self, c: int, attn: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)
        self.bn = nn.BatchNorm2d(c)
        self.attn = attn

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.attn(self.bn(self.conv(x))))


# -- gates as nn.Sigmoid attributes (SE as in most blog posts) ------------------------------------------------------
class SEBlog(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(inplace=True), nn.Linear(c // r, c))
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.sigmoid(self.fc(y)).view(b, c, 1, 1)
        return x * y.expand_as(x)


# -- CBAM as in the blog code: channel module returns its gate, spatial one uses torch.sigmoid -----------------------
class ChannelAttentionBlog(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.max = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(c, c // r, 1, bias=False)
        self.fc2 = nn.Conv2d(c // r, c, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        a = self.fc2(F.relu(self.fc1(self.avg(x))))
        m = self.fc2(F.relu(self.fc1(self.max(x))))
        return self.sigmoid(a + m)  # (B, C, 1, 1)


class SpatialAttentionBlog(nn.Module):
    def __init__(self, k: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        avg = torch.mean(x, dim=1, keepdim=True)
        mx, _ = torch.max(x, dim=1, keepdim=True)
        return torch.sigmoid(self.conv1(torch.cat([avg, mx], dim=1)))  # (B, 1, H, W)


class CBAMBlog(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.ca = ChannelAttentionBlog(c)
        self.sa = SpatialAttentionBlog()

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.ca(x)
        return x * self.sa(x)


# -- ECA with Tensor.sigmoid_() in place and a (B, 1, C) layout -------------------------------------------------------
class ECAInplace(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        k = int(abs((math.log2(c) + 1) / 2))
        k = k if k % 2 else k + 1
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, _, _ = x.shape
        y = self.conv(x.mean((2, 3)).view(b, 1, c))  # (B, 1, C)
        y.sigmoid_()
        return x * y.view(b, c, 1, 1)


class ECAMethod(nn.Module):
    """Tensor.sigmoid() on a (B, 1, C) gate."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x.mean((2, 3)).unsqueeze(1)).sigmoid()  # (B, 1, C)
        return x * y.transpose(1, 2).unsqueeze(-1)


# -- PSA/EPSA as in the seed code: modules kept in plain lists, softmax (B, S, C/S, 1, 1) over dim 1 -----------------
class SEWeightModule(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(c // 4, 1), 1)
        self.fc2 = nn.Conv2d(max(c // 4, 1), c, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class PSAPlainList(nn.Module):
    def __init__(self, c: int, s: int = 4) -> None:
        super().__init__()
        self.s = s
        self.convs = [nn.Conv2d(c, c // s, 2 * i + 3, padding=i + 1) for i in range(s)]  # not registered
        self.se_blocks = [SEWeightModule(c // s) for _ in range(s)]  # not registered
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        feats = torch.stack([conv(x) for conv in self.convs], dim=1)  # (B, S, C/S, H, W)
        x_se = torch.stack([se(feats[:, i]) for i, se in enumerate(self.se_blocks)], dim=1)  # (B, S, C/S, 1, 1)
        attention = self.softmax(x_se)
        return (feats * attention).reshape(b, -1, *feats.shape[3:])


# -- SK as in the blog code: branches stacked on dim 0, softmax over dim 0 --------------------------------------------
class SKDim0(nn.Module):
    def __init__(self, c: int, m: int = 2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1 + i, dilation=1 + i) for i in range(m))
        self.fc = nn.Linear(c, 8)
        self.fcs = nn.ModuleList(nn.Linear(8, c) for _ in range(m))
        self.softmax = nn.Softmax(dim=0)

    def forward(self, x: Tensor) -> Tensor:
        b, c, _, _ = x.shape
        feats = torch.stack([conv(x) for conv in self.convs], 0)  # (K, B, C, H, W)
        z = self.fc(feats.sum(0).mean((2, 3)))
        weights = torch.stack([fc(z) for fc in self.fcs], 0).view(len(self.fcs), b, c, 1, 1)  # (K, B, C, 1, 1)
        weights = self.softmax(weights)
        return (weights * feats).sum(0)


# -- SGE: grouped (B*G, 1, H, W) gates --------------------------------------------------------------------------------
class SpatialGroupEnhance(nn.Module):
    def __init__(self, groups: int = 4) -> None:
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.ones(1, groups, 1, 1) * 0.5)
        self.bias = nn.Parameter(torch.zeros(1, groups, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, -1, h, w)
        t = (x * x.mean((2, 3), keepdim=True)).sum(1, keepdim=True)  # (B*G, 1, H, W)
        t = (t - t.mean((2, 3), keepdim=True)) / (t.std((2, 3), keepdim=True) + 1e-5)
        t = t.view(b, self.groups, h, w) * self.weight + self.bias
        x = x * torch.sigmoid(t.view(b * self.groups, 1, h, w))
        return x.view(b, c, h, w)


# -- self-attention on (B, N, C) tokens inside a CNN, 2 heads --------------------------------------------------------
class TokenSelfAttention(nn.Module):
    def __init__(self, c: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)

    def forward(self, t: Tensor) -> Tensor:  # (B, N, C)
        b, n, c = t.shape
        q, k, v = self.qkv(t).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(c // self.heads), dim=-1)  # (B, heads, N, N)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TokenBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.mhsa = TokenSelfAttention(c)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, N, C)
        return x + self.mhsa(t).transpose(1, 2).reshape(b, c, h, w)


# -- Dual attention with hard-coded sizes (a 16-channel net), External Attention on tokens ---------------------------
class PAMHardCoded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Conv2d(16, 2, 1)  # hard-coded 16 channels
        self.k = nn.Conv2d(16, 2, 1)
        self.v = nn.Conv2d(16, 16, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q = self.q(x).view(b, -1, h * w).permute(0, 2, 1)
        attn = self.softmax(torch.bmm(q, self.k(x).view(b, -1, h * w)))  # (B, N, N)
        out = torch.bmm(self.v(x).view(b, -1, h * w), attn.permute(0, 2, 1)).view(b, c, h, w)
        return self.gamma * out + x


class CAMBlog(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        a = x.view(b, c, -1)
        energy = torch.bmm(a, a.permute(0, 2, 1))
        attn = torch.softmax(energy.max(-1, keepdim=True)[0].expand_as(energy) - energy, dim=-1)  # (B, C, C)
        return self.gamma * torch.bmm(attn, a).view(b, c, h, w) + x


class DABlog(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pam = PAMHardCoded()
        self.cam = CAMBlog()

    def forward(self, x: Tensor) -> Tensor:
        return self.pam(x) + self.cam(x)


class ExternalAttentionTokens(nn.Module):
    """External-Attention-pytorch's ExternalAttention: (B, N, d) queries, softmax over N, l1 over S."""

    def __init__(self, d_model: int = 16, s: int = 8) -> None:
        super().__init__()
        self.mk = nn.Linear(d_model, s, bias=False)
        self.mv = nn.Linear(s, d_model, bias=False)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, queries: Tensor) -> Tensor:
        attn = self.softmax(self.mk(queries))  # (B, N, S)
        attn = attn / torch.sum(attn, dim=2, keepdim=True)
        return self.mv(attn)


class EABlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ea = ExternalAttentionTokens()

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        return x + self.ea(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)


# -- coordinate attention (two axis gates), a shared sigmoid, a sigmoid module made inside forward -------------------
class CoordAttBlog(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, 8, 1)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(8, c, 1)
        self.conv_w = nn.Conv2d(8, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        x_h = x.mean(3, keepdim=True)  # (B, C, H, 1)
        x_w = x.mean(2, keepdim=True).permute(0, 1, 3, 2)  # (B, C, W, 1)
        y = self.act(self.conv1(torch.cat([x_h, x_w], dim=2)))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = self.conv_h(y_h).sigmoid()  # (B, C, H, 1)
        a_w = self.conv_w(y_w.permute(0, 1, 3, 2)).sigmoid()  # (B, C, 1, W)
        return x * a_w * a_h


class SharedSigmoid(nn.Module):
    """One nn.Sigmoid used for a channel and a spatial gate."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.sig = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.sig(self.fc(x.mean((2, 3), keepdim=True)))
        return x * self.sig(self.conv(x.mean(1, keepdim=True)))


class InlineSigmoidModule(nn.Module):
    """nn.Sigmoid() built inside forward (never registered)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * nn.Sigmoid()(self.fc(x.mean((2, 3), keepdim=True)))


class FiveD(nn.Module):
    """A gate with a layout no kind fits: (B, 2, C/2, 2, 1) -> must be listed as unclassified."""

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        g = torch.sigmoid(x.mean((2, 3)).view(b, 2, c // 2, 1, 1).expand(b, 2, c // 2, 2, 1).contiguous())
        return x * g.mean((1, 3, 4)).view(b, c // 2, 1, 1).repeat(1, 2, 1, 1)


# -- activations: none of these is attention ------------------------------------------------------------------------
class Swish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x)


class SwishModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.sigmoid(x)


class HSwish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * F.hardsigmoid(x)


class SwishMethod(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mul(x.sigmoid())


def swish_resnet(act: type[nn.Module]) -> nn.Module:
    """torchvision's ResNet-18 with every ReLU replaced by ``act()``."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=10)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, act())
    return model


class SoftmaxHead(nn.Module):
    """A CNN that returns class probabilities: the softmax is the classifier's, not attention."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_stem(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.softmax(self.body(x))


C = 16
H = W = 16  # the stem halves 32 x 32
N = H * W

#: name -> (attention module factory, expected [(map name, kind, shape without B, how)]).
USER_NETS = {
    "se_sigmoid_attr": (lambda: SEBlog(C), [("layer1.0.attn.sigmoid", "channel", (C,), "module")]),
    "cbam_blog": (
        lambda: CBAMBlog(C),
        [("layer1.0.attn.ca.sigmoid", "channel", (C,), "module"), ("layer1.0.attn.sa", "spatial", (H, W), "module")],
    ),
    "eca_inplace_sigmoid_": (lambda: ECAInplace(C), [("layer1.0.attn.sigmoid_()", "channel", (C,), "function")]),
    "eca_method_b1c": (lambda: ECAMethod(C), [("layer1.0.attn.sigmoid()", "channel", (C,), "function")]),
    "psa_plain_lists": (
        lambda: PSAPlainList(C),  # the SE sigmoids only feed the softmax: part of it, not sites (issue 18)
        [("layer1.0.attn.softmax", "branch", (4, C // 4), "module")],
    ),
    "sk_softmax_dim0": (lambda: SKDim0(C), [("layer1.0.attn.softmax", "branch", (2, C), "module")]),
    "sge_grouped": (lambda: SpatialGroupEnhance(4), [("layer1.0.attn.sigmoid()", "spatial", (H, W), "function")]),
    "tokens_mhsa": (lambda: TokenBlock(C), [("layer1.0.attn.mhsa.softmax()", "pairwise", (2, N, N), "function")]),
    "dual_hard_coded": (
        DABlog,
        [
            ("layer1.0.attn.pam.softmax", "pairwise", (1, N, N), "module"),
            ("layer1.0.attn.cam.softmax()", "channel_pairwise", (C, C), "function"),
        ],
    ),
    "external_tokens": (EABlock, [("layer1.0.attn.ea.softmax", "memory", (8, H, W), "module")]),
    "coord_axis_gates": (lambda: CoordAttBlog(C), [("layer1.0.attn.sigmoid()", "spatial", (H, W), "function")]),
    "shared_sigmoid": (
        lambda: SharedSigmoid(C),
        [("layer1.0.attn.sig", "channel", (C,), "module"), ("layer1.0.attn.sig#2", "spatial", (H, W), "module")],
    ),
    "inline_sigmoid_module": (
        lambda: InlineSigmoidModule(C),
        [("layer1.0.attn.Sigmoid()", "channel", (C,), "function")],
    ),
}
