"""Three attention modules as public collections of attention modules (External-Attention-pytorch and the like) and
their authors' repositories write them, written here from the papers and their well-known structure, placed into a
small ResNet-like CNN. Each one was read wrong by discovery (issue 20):

- pyramid split attention (PSA, EPSANet, Zhang et al. 2021): the per-scale SE weights are expanded to the full
  feature size before the softmax over the S scales (``SE_out.expand_as(SPC_out)``), so the softmax is a
  (B, S, C/S, H, W) tensor constant over H and W: a ``branch`` map (B, S, C/S);
- triplet attention (Misra et al., WACV 2021): Z-pool + 7x7 conv + BN + sigmoid on three layouts of the map: the
  H x W plane (a spatial gate), and the C x W and H x C planes of the map permuted to (B, H, C, W) and (B, W, H, C);
- criss-cross attention (CCNet, Huang et al., ICCV 2019): per query, a softmax over the H + W positions of its
  column and row (its own position masked in the column part), ``softmax(cat([energy_H, energy_W], 3))`` of shape
  (B, H, W, H + W); CCNet applies it R = 2 times (recurrent criss-cross attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# -- PSA as External-Attention-pytorch writes it: plain-list convs and SE blocks, in-place writes into a view of the
#    input, the SE weights expanded to the full size before the softmax over the S scales ----------------------------
class PSAExpanded(nn.Module):
    def __init__(self, channel: int = 16, reduction: int = 2, s: int = 4) -> None:
        super().__init__()
        self.S = s
        self.convs = [nn.Conv2d(channel // s, channel // s, 2 * (i + 1) + 1, padding=i + 1) for i in range(s)]
        self.se_blocks = [
            nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(channel // s, channel // (s * reduction), 1, bias=False),
                nn.ReLU(inplace=True),
                nn.Conv2d(channel // (s * reduction), channel // s, 1, bias=False),
                nn.Sigmoid(),
            )
            for _ in range(s)
        ]
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.size()
        spc_out = x.view(b, self.S, c // self.S, h, w)  # (B, S, C/S, H, W), a view of the input
        for idx, conv in enumerate(self.convs):
            spc_out[:, idx, :, :, :] = conv(spc_out[:, idx, :, :, :])
        se_out = [se(spc_out[:, idx, :, :, :]) for idx, se in enumerate(self.se_blocks)]
        se_out = torch.stack(se_out, dim=1)  # (B, S, C/S, 1, 1)
        se_out = se_out.expand_as(spc_out)  # (B, S, C/S, H, W), stride 0 over H, W
        softmax_out = self.softmax(se_out)
        return (spc_out * softmax_out).view(b, -1, h, w)


# -- PSA with the SE weights expanded one by one, then stacked (a copy, no stride 0 left), softmax as a function -----
class SEWeight(nn.Module):
    def __init__(self, c: int, r: int = 2) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.sigmoid(self.fc2(F.relu(self.fc1(self.avg_pool(x)))))


class PSAStacked(nn.Module):
    def __init__(self, c: int = 16, s: int = 4) -> None:
        super().__init__()
        self.s = s
        self.convs = nn.ModuleList(nn.Conv2d(c, c // s, 2 * i + 3, padding=i + 1) for i in range(s))
        self.se = SEWeight(c // s)

    def forward(self, x: Tensor) -> Tensor:
        feats = [conv(x) for conv in self.convs]  # S x (B, C/S, H, W)
        se_outs = [self.se(f).expand_as(f) for f in feats]
        attention_vectors = torch.softmax(torch.stack(se_outs, 1), dim=1)  # (B, S, C/S, H, W), equal over H, W
        return (torch.stack(feats, 1) * attention_vectors).flatten(1, 2)


# -- triplet attention as its authors write it (Z-pool, BasicConv 7x7 + BN, sigmoid_, three permuted branches) -----
class BasicConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=(k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.01, affine=True)
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return self.relu(x) if self.relu is not None else x


class ZPool(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class AttentionGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.compress = ZPool()
        self.conv = BasicConv(2, 1, 7, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.sigmoid_(self.conv(self.compress(x)))  # (B, 1, d2, d3) of the layout it got
        return x * scale


class TripletAttention(nn.Module):
    def __init__(self, no_spatial: bool = False) -> None:
        super().__init__()
        self.cw = AttentionGate()
        self.hc = AttentionGate()
        self.no_spatial = no_spatial
        if not no_spatial:
            self.hw = AttentionGate()

    def forward(self, x: Tensor) -> Tensor:
        x_perm1 = x.permute(0, 2, 1, 3).contiguous()  # (B, H, C, W)
        x_out11 = self.cw(x_perm1).permute(0, 2, 1, 3).contiguous()
        x_perm2 = x.permute(0, 3, 2, 1).contiguous()  # (B, W, H, C)
        x_out21 = self.hc(x_perm2).permute(0, 3, 2, 1).contiguous()
        if not self.no_spatial:
            return 1 / 3 * (self.hw(x) + x_out11 + x_out21)
        return 1 / 2 * (x_out11 + x_out21)


# -- criss-cross attention as CCNet's pure-PyTorch code writes it (bmm per column and per row) ------------------------
def neg_inf_diag(b: int, h: int, w: int, device: torch.device) -> Tensor:
    """(B*W, H, H) with -inf on the diagonal: a query's own position is counted once (in its row), not in its column."""
    return -torch.diag(torch.tensor(float("inf"), device=device).repeat(h), 0).unsqueeze(0).repeat(b * w, 1, 1)


class CrissCrossAttention(nn.Module):
    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 8, 1)
        self.value_conv = nn.Conv2d(in_dim, in_dim, 1)
        self.softmax = nn.Softmax(dim=3)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.size()
        q = self.query_conv(x)
        q_h = q.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h).permute(0, 2, 1)  # (B*W, H, C')
        q_w = q.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w).permute(0, 2, 1)  # (B*H, W, C')
        k = self.key_conv(x)
        k_h = k.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h)
        k_w = k.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w)
        v = self.value_conv(x)
        v_h = v.permute(0, 3, 1, 2).contiguous().view(b * w, -1, h)
        v_w = v.permute(0, 2, 1, 3).contiguous().view(b * h, -1, w)
        energy_h = (torch.bmm(q_h, k_h) + neg_inf_diag(b, h, w, x.device)).view(b, w, h, h).permute(0, 2, 1, 3)
        energy_w = torch.bmm(q_w, k_w).view(b, h, w, w)
        concate = self.softmax(torch.cat([energy_h, energy_w], 3))  # (B, H, W, H + W)
        att_h = concate[:, :, :, 0:h].permute(0, 2, 1, 3).contiguous().view(b * w, h, h)
        att_w = concate[:, :, :, h : h + w].contiguous().view(b * h, w, w)
        out_h = torch.bmm(v_h, att_h.permute(0, 2, 1)).view(b, w, -1, h).permute(0, 2, 3, 1)
        out_w = torch.bmm(v_w, att_w.permute(0, 2, 1)).view(b, h, -1, w).permute(0, 2, 1, 3)
        return self.gamma * (out_h + out_w) + x


class CrissCrossEinsum(CrissCrossAttention):
    """The same attention as the einsum form of later libraries writes it: F.softmax(dim=-1) of (B, H, W, H + W)."""

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[2]
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        diag = torch.diag(torch.full((h,), float("-inf"), device=x.device))  # (H, H)
        energy_h = torch.einsum("bchw,bciw->bwhi", q, k) + diag  # (B, W, H, H)
        energy_h = energy_h.transpose(1, 2)  # (B, H, W, H)
        energy_w = torch.einsum("bchw,bchj->bhwj", q, k)  # (B, H, W, W)
        attn = F.softmax(torch.cat([energy_h, energy_w], dim=-1), dim=-1)  # (B, H, W, H + W)
        out = torch.einsum("bciw,bhwi->bchw", v, attn[..., :h])
        out = out + torch.einsum("bchj,bhwj->bchw", v, attn[..., h:])
        return self.gamma * out + x


class RCCAModule(nn.Module):
    """CCNet's head: conv, criss-cross attention ``recurrence`` times (R = 2 in the paper), conv, concat, bottleneck."""

    def __init__(self, cin: int, inter: int, recurrence: int = 2, einsum: bool = False) -> None:
        super().__init__()
        self.conva = nn.Sequential(nn.Conv2d(cin, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU())
        self.cca = (CrissCrossEinsum if einsum else CrissCrossAttention)(inter)
        self.convb = nn.Sequential(nn.Conv2d(inter, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU())
        self.bottleneck = nn.Sequential(nn.Conv2d(cin + inter, cin, 3, padding=1, bias=False), nn.BatchNorm2d(cin))
        self.recurrence = recurrence

    def forward(self, x: Tensor) -> Tensor:
        out = self.conva(x)
        for _ in range(self.recurrence):
            out = self.cca(out)
        out = self.convb(out)
        return self.bottleneck(torch.cat([x, out], 1))


# -- a small ResNet-like CNN ------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn, the attention module after bn2 and before the residual add (ATTENTION.md, placement)."""

    def __init__(self, cin: int, cout: int, stride: int, attn: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.attn = attn
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.attn is not None:
            out = self.attn(out)
        return F.relu(out + identity)


class SmallResNet(nn.Module):
    """stem (stride 2) -> layer1 (C1, stride 1) -> layer2 (C2, stride 2) -> [head] -> pool -> fc; the attention
    module ``attn(c)`` in each block when ``attn`` is given, ``head(C2)`` on the last feature map when given."""

    def __init__(self, attn=None, head=None, widths: tuple[int, int] = (16, 32), classes: int = 5) -> None:
        super().__init__()
        c1, c2 = widths
        self.conv1 = nn.Conv2d(3, c1, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.layer1 = nn.Sequential(BasicBlock(c1, c1, 1, attn(c1) if attn else None))
        self.layer2 = nn.Sequential(BasicBlock(c1, c2, 2, attn(c2) if attn else None))
        self.head = head(c2) if head else None
        self.fc = nn.Linear(c2, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x)))))
        if self.head is not None:
            x = self.head(x)
        return self.fc(x.mean((2, 3)))


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and a non-zero criss-cross gain, so every weight reaches the logits."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        if isinstance(m, CrissCrossAttention):
            m.gamma.data.fill_(0.5)
    return model.eval()


def psa_net(stacked: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(SmallResNet(attn=PSAStacked if stacked else PSAExpanded))


def triplet_net() -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(SmallResNet(attn=lambda c: TripletAttention()))


def ccnet(einsum: bool = False) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(SmallResNet(head=lambda c: RCCAModule(c, 16, recurrence=2, einsum=einsum)))
