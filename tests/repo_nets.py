"""Small networks of the shapes public repositories give theirs (written here, not copied): a ResidualNet with a
fixed ``nn.AvgPool2d(7)`` head and CBAM, a detector whose head ends in ``torch.cat((box, cls.sigmoid()), 1)``,
EPSANet's shared SE module feeding a softmax across scales, a ViT-style token softmax, and a plain CNN.

Each is loaded through ``attnviz render --model tests/repo_nets.py:NAME`` in the tests, as a user would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# -- the CBAM authors' ResidualNet layout: CBAM inside each block, avgpool = nn.AvgPool2d(7) -------------------------
class ChannelGate(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(c, c // r), nn.ReLU(), nn.Linear(c // r, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = F.avg_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3)))
        mx = F.max_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3)))
        scale = torch.sigmoid(self.mlp(avg) + self.mlp(mx)).unsqueeze(2).unsqueeze(3).expand_as(x)
        return x * scale


class SpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spatial = nn.Sequential(nn.Conv2d(2, 1, 7, padding=3, bias=False), nn.BatchNorm2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAMBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1), nn.BatchNorm2d(cout))
        self.ca, self.sa = ChannelGate(cout), SpatialGate()
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.sa(self.ca(self.body(x))) + self.down(x))


class ResidualNet(nn.Module):
    """Stride 32, then ``nn.AvgPool2d(7)``: it runs at 224 px only (at 64 px the pool gets a 2 x 2 map)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 8, 2), nn.MaxPool2d(3, 2, 1))
        self.layer1, self.layer2 = CBAMBlock(8, 16, 2), CBAMBlock(16, 24, 2)
        self.layer3 = CBAMBlock(24, 32, 2)
        self.avgpool = nn.AvgPool2d(7)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.avgpool(x).view(x.size(0), -1))


def residualnet() -> nn.Module:
    torch.manual_seed(0)
    return ResidualNet()


# -- a detector: SE in the backbone, a head that returns (B, 4 + classes, anchors) with sigmoid class scores --------
class SE(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class Detect(nn.Module):
    def __init__(self, c: int, nc: int = 3) -> None:
        super().__init__()
        self.box, self.cls = nn.Conv2d(c, 4, 1), nn.Conv2d(c, nc, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box, cls = self.box(x).flatten(2), self.cls(x).flatten(2)  # (B, 4, N), (B, nc, N)
        return torch.cat((box, cls.sigmoid()), 1)


class Detector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(_conv_bn(3, 16, 2), _conv_bn(16, 16, 2), SE(16), _conv_bn(16, 24, 2), SE(24))
        self.detect = Detect(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detect(self.backbone(x))


def detector() -> nn.Module:
    torch.manual_seed(0)
    return Detector()


# -- EPSANet: one SE module shared by the four scales; its sigmoid only feeds the softmax across scales ---------------
class SEWeight(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.fc2(F.relu(self.fc1(self.avg_pool(x)))))


class PSA(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.split = c // 4
        self.conv_1 = nn.Conv2d(c, self.split, 3, padding=1)
        self.conv_2 = nn.Conv2d(c, self.split, 5, padding=2, groups=4)
        self.conv_3 = nn.Conv2d(c, self.split, 7, padding=3, groups=8)
        self.conv_4 = nn.Conv2d(c, self.split, 9, padding=4, groups=16)
        self.se = SEWeight(self.split)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x1, x2, x3, x4 = self.conv_1(x), self.conv_2(x), self.conv_3(x), self.conv_4(x)
        feats = torch.cat((x1, x2, x3, x4), dim=1).view(b, 4, self.split, x.shape[2], x.shape[3])
        x_se = torch.cat((self.se(x1), self.se(x2), self.se(x3), self.se(x4)), dim=1)
        attention = self.softmax(x_se.view(b, 4, self.split, 1, 1))
        out = feats * attention
        return torch.cat([out[:, i] for i in range(4)], 1)


class EPSANet(nn.Module):
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 64, 4)
        self.psa1, self.psa2 = PSA(64), PSA(64)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.psa1(x))
        x = F.relu(x + self.psa2(x))
        return self.fc(x.mean((2, 3)))


def epsanet() -> nn.Module:
    torch.manual_seed(0)
    return EPSANet()


# -- a ViT-style encoder at 224 px (16 px patches, a class token): attention (B, 3, 197, 197) ------------------------
class TokenAttention(nn.Module):
    def __init__(self, dim: int = 24, heads: int = 3) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class TinyViT(nn.Module):
    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 24, 16, 16)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 24))
        self.pos = nn.Parameter(torch.randn(1, 197, 24) * 0.02)
        self.attn = TokenAttention()
        self.head = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), t), 1) + self.pos
        t = t + self.attn(t)
        return self.head(t[:, 0])


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return TinyViT()


class PooledViT(TinyViT):
    """Its attention runs over the class token, a 7 x 7 grid pooled by a function call (no module makes that grid)
    and 3 learned memory tokens appended after the grid: N = 1 + 49 + 3 = 53, a token layout attnviz cannot read
    (no prefix count k with 53 - k a grid of the image's aspect; extra tokens after the grid are not a layout it
    knows). A pooled grid alone (1 + 7 x 7) is read from the shapes (tests/test_pooled.py)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__(num_classes)
        self.memory = nn.Parameter(torch.randn(1, 3, 24) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.nn.functional.avg_pool2d(self.patch(x), 2)  # (B, 24, 7, 7)
        b = x.shape[0]
        t = torch.cat(
            (self.cls_token.expand(b, -1, -1), g.flatten(2).transpose(1, 2), self.memory.expand(b, -1, -1)), 1
        )
        t = t + self.attn(t)
        return self.head(t[:, 0])


def pooled_vit() -> nn.Module:
    torch.manual_seed(0)
    return PooledViT()


# -- no attention at all -------------------------------------------------------------------------------------------
def plain_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(_conv_bn(3, 8, 2), _conv_bn(8, 16, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
