"""Random-convolution augmentation (Xu et al. 2021): which images it touches, that it keeps shapes and the [0, 1]
range, that a kernel of size k only looks k // 2 pixels away, and that the training loop applies it."""

from __future__ import annotations

import pytest
import torch

from attnviz import build_model
from attnviz.sources.checkpoint import read_card
from attnviz.train.augment import random_convolution
from attnviz.train.loop import TrainConfig, fit


def _square_batch(b: int = 6, size: int = 24) -> torch.Tensor:
    """(B, 3, S, S): a flat background with a differently coloured square in the middle."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 3, 1, 1, generator=g).expand(b, 3, size, size).clone()
    x[:, :, 8:16, 8:16] = torch.rand(b, 3, 1, 1, generator=g)
    return x


def test_p_zero_is_the_identity_and_p_one_changes_every_image(device: torch.device) -> None:
    x = _square_batch().to(device)
    assert random_convolution(x, 0.0) is x
    y = random_convolution(x, 1.0, generator=torch.Generator(device).manual_seed(1))
    assert y.device.type == device.type
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    changed = (y - x).abs().flatten(1).amax(1) > 1e-3  # (B,)
    assert bool(changed.all())


def test_each_image_is_drawn_on_its_own() -> None:
    x = torch.rand(400, 3, 8, 8)
    y = random_convolution(x, 0.5, generator=torch.Generator().manual_seed(2))
    same = torch.isclose(y, x).flatten(1).all(1)  # untouched images come back exactly
    assert 120 < int(same.sum()) < 280


def test_the_same_generator_seed_draws_the_same_images() -> None:
    x = _square_batch()
    a = random_convolution(x, 0.7, generator=torch.Generator().manual_seed(3))
    b = random_convolution(x, 0.7, generator=torch.Generator().manual_seed(3))
    c = random_convolution(x, 0.7, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_one_by_one_kernel_is_a_colour_map() -> None:
    """k = 1: a pixel's output depends on its own colour only, so the two colours stay two colours."""
    x = _square_batch()
    y = random_convolution(x, 1.0, kernel_sizes=(1,), generator=torch.Generator().manual_seed(5))
    inside, outside = y[:, :, 8:16, 8:16].flatten(2), torch.cat([y[:, :, :8].flatten(2), y[:, :, 16:].flatten(2)], 2)
    assert float((inside - inside[..., :1]).abs().max()) < 1e-5
    assert float((outside - outside[..., :1]).abs().max()) < 1e-5


def test_a_kernel_of_size_k_sees_k_over_2_pixels(device: torch.device) -> None:
    """k = 5: pixels more than 2 away from the square's edge and the image border keep one colour per region."""
    x = _square_batch().to(device)
    y = random_convolution(x, 1.0, kernel_sizes=(5,), generator=torch.Generator(device).manual_seed(6)).cpu()
    core = y[:, :, 10:14, 10:14].flatten(2)  # inside the square, 2 px from its edge
    far = y[:, :, 2:6, 2:22].flatten(2)  # background, 2 px from the border and the square
    assert float((core - core[..., :1]).abs().max()) < 1e-5
    assert float((far - far[..., :1]).abs().max()) < 1e-5
    ring = y[:, :, 7, 7:17]  # the square's edge: mixed colours differ from both sides
    assert float((ring - core[..., :1]).abs().amax()) > 1e-4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 1.5}, "p must be in"),
        ({"p": 0.5, "kernel_sizes": (2,)}, "odd and positive"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        random_convolution(_square_batch(), **kwargs)
    with pytest.raises(ValueError, match="expected"):
        random_convolution(torch.rand(3, 8, 8), 0.5)


class _Fixed(torch.utils.data.Dataset):
    """Items ``(image, label)`` that never change, so the loop's inputs can be matched back to them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


@pytest.mark.parametrize("randconv", [0.0, 1.0])
def test_the_training_loop_applies_it_and_records_it_in_the_card(randconv: float, tmp_path) -> None:
    g = torch.Generator().manual_seed(7)
    scenes = torch.rand(16, 3, 32, 32, generator=g)  # (16, 3, 32, 32) in [0, 1]
    data = _Fixed(scenes, torch.arange(16) % 3)
    card = {"arch": "resnet18", "classes": ["a", "b", "c"], "mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 32}
    model = build_model("resnet18", num_classes=3)
    seen: list[torch.Tensor] = []
    model.conv1.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()) if m.training else None)
    cfg = TrainConfig(epochs=1, batch_size=8, num_workers=0, randconv=randconv)
    fit(model, data, data, cfg, out=tmp_path / "m.safetensors", card={**card, "attention": None})
    assert read_card(tmp_path / "m.safetensors")["training"]["randconv"] == randconv
    mean, std = torch.tensor(card["mean"]).view(1, 3, 1, 1), torch.tensor(card["std"]).view(1, 3, 1, 1)
    images = torch.cat(seen) * std + mean  # (16, 3, 32, 32): what the network trained on, back in [0, 1]
    distance = (images[:, None] - scenes[None]).abs().flatten(2).amax(2).amin(1)  # (16,) to the nearest scene
    if randconv:  # no training input is a scene as given: every one went through a convolution
        assert float(distance.min()) > 1e-2
    else:
        assert float(distance.max()) < 1e-5
