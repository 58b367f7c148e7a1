"""Capture: read every attention block's own weights through forward hooks on its taps.

    with AttentionRecorder(model) as rec:
        logits = model(x)
    for m in rec.maps:  # one AttentionMap per tap call, in forward order
        print(m.name, m.stage, m.kind, tuple(m.data.shape))

Only :class:`~attnviz.blocks.Tap` submodules are hooked, so capture never special-cases a block. Hooks
are removed on exit even when the forward raises; the model's train/eval flags are restored; a shared
model is hooked under a per-model lock, so concurrent hooked forwards of one model are serialised.
"""

from __future__ import annotations

import re
import threading
import weakref
from dataclasses import dataclass
from types import TracebackType

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .blocks.tap import KINDS, Tap

__all__ = ["AttentionMap", "AttentionRecorder", "to_cpu"]

# torchvision/timm ResNets name blocks layerK.i (K = 1..4); timm's ByobNet (GC-ResNet-t, BoTNet) stages.S.i (S from 0)
_STAGE_RE = re.compile(r"(?:^|\.)(?:layer(\d+)|stages\.(\d+))\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class AttentionMap:
    """One captured attention weight.

    Attributes:
        name: module path of the tap in the model, e.g. ``"layer2.1.attn.spatial.tap"``.
        kind: ``channel`` (B, C), ``spatial`` (B, H, W), ``branch`` (B, K, C),
            ``pairwise`` (B, heads, N, N), ``channel_pairwise`` (B, C, C) or ``memory`` (B, S, H, W).
        data: detached copy on the CPU, float32, in the kind's canonical shape.
        size: (H, W) of the feature map the weight refers to, where the shape does not already say it
            plainly (``pairwise``), or the map's own (H, W) for ``spatial`` and ``memory``; else ``None``.
    """

    name: str
    kind: str
    data: Tensor
    size: tuple[int, int] | None = None

    @property
    def stage(self) -> int | None:
        """The ResNet stage (1..4) of the block the tap belongs to, or ``None`` outside ``layerK``."""
        m = _STAGE_RE.search(self.name)
        if m is None:
            return None
        return int(m.group(1)) if m.group(1) is not None else int(m.group(2)) + 1

    @property
    def block(self) -> str:
        """Module path of the residual block (``"layer2.1"``) or stage module (``"layer3.6"``) holding the tap;
        for a tap outside ``layerK.i``, the path of the tap's parent module."""
        m = _STAGE_RE.search(self.name)
        if m:
            return self.name[: m.end()].rstrip(".")
        return self.name.rpartition(".")[0]


def to_cpu(tensors: list[Tensor]) -> list[Tensor]:
    """The tensors on the CPU, in order, each in ordinary (pageable) memory of its own; those on a GPU travel
    together.

    One device-to-host copy of them all, as one flat buffer, into pinned memory (non-blocking) and one wait,
    however many tensors. Each is then copied out of that staging buffer into its own memory, so what a caller
    keeps (a result held for a session, a map sent to another process) holds no page-locked memory and no other
    tensor's bytes; the staging buffer goes back to PyTorch's pinned-memory cache at once, for the next call.
    CPU tensors are returned as they are.
    """
    out = list(tensors)
    on_gpu = [i for i, t in enumerate(out) if t.device.type != "cpu"]
    if not on_gpu:
        return out
    by_device: dict[torch.device, list[int]] = {}
    for i in on_gpu:
        by_device.setdefault(out[i].device, []).append(i)
    for device, idx in by_device.items():
        flat = torch.cat([out[i].reshape(-1) for i in idx])  # on the device: float32, contiguous
        cuda = device.type == "cuda"
        staging = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=cuda)
        staging.copy_(flat, non_blocking=cuda)
        if cuda:
            torch.cuda.current_stream(device).synchronize()  # the one wait: the copy has landed
        del flat
        offset = 0
        for i in idx:
            n = out[i].numel()
            own = torch.empty(out[i].shape, dtype=staging.dtype)  # pageable, this tensor's alone
            out[i] = own.copy_(staging[offset : offset + n].view(out[i].shape))
            offset += n
        del staging  # back to the pinned-memory cache (the copy has landed: reusable at once)
    return out


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock that serialises hooked forwards of ``model`` (one per model object)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


class AttentionRecorder:
    """Context manager recording every tap's output during the forwards run inside it.

    Args:
        model: any ``nn.Module`` containing :class:`~attnviz.blocks.Tap` submodules.
        names: tap module paths to record (default: every tap). Checked against the model's modules
            before any hook is registered.
        kinds: record only taps of these kinds (default: all).
        eval_mode: put the model in eval mode while recording (default ``False``: the model is run as it
            is). The train/eval flag of every submodule is restored on exit either way.
        activations: also record, for every inserted attention module, the channel mean of its output
            (B, H, W) in :attr:`activations` (for SE/ECA that is the gate-weighted mean activation).

    Raises:
        ValueError: a requested name is not a tap of the model, or an unknown kind.
    """

    def __init__(
        self,
        model: nn.Module,
        names: list[str] | None = None,
        kinds: list[str] | None = None,
        *,
        eval_mode: bool = False,
        activations: bool = False,
    ) -> None:
        self.model = model
        named = list(model.named_modules())  # walked once: __enter__ saves these modules' flags
        self._modules = [m for _, m in named]
        taps = {n: m for n, m in named if isinstance(m, Tap)}
        if names is not None:
            unknown = [n for n in names if n not in taps]
            if unknown:
                raise ValueError(f"not taps of this model: {unknown}; its taps are: {list(taps) or 'none'}")
            taps = {n: taps[n] for n in names}
        if kinds is not None:
            bad = [k for k in kinds if k not in KINDS]
            if bad:
                raise ValueError(f"unknown kinds {bad}; valid kinds: {list(KINDS)}")
            taps = {n: m for n, m in taps.items() if m.kind in kinds}
        self.taps: dict[str, Tap] = taps
        self.eval_mode = eval_mode
        self.record_activations = activations
        self._acts: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self._pending: list[tuple[str, str, Tensor, tuple[int, int] | None]] = []
        self._maps: list[AttentionMap] = []
        self._flags: list[tuple[nn.Module, bool]] = []
        self._lock = model_lock(model)
        self._locked = False

    # -- context manager -------------------------------------------------------------------------------
    def __enter__(self) -> AttentionRecorder:
        if self._handles:
            raise RuntimeError("this AttentionRecorder is already active; use a new one per 'with'")
        self._lock.acquire()
        self._locked = True
        try:
            self._pending.clear()
            self._maps.clear()
            self._flags = [(m, m.training) for m in self._modules]
            if self.eval_mode:
                self.model.eval()
            self._acts.clear()
            for name, tap in self.taps.items():
                self._handles.append(tap.register_forward_hook(self._hook(name), with_kwargs=True))
            if self.record_activations:
                from .models import attention_modules

                for name, module in attention_modules(self.model).items():
                    self._handles.append(module.register_forward_hook(self._act_hook(name)))
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def remove(self) -> None:
        """Remove the hooks and restore the model's flags now (idempotent; ``__exit__`` calls it)."""
        self._release()

    def _release(self) -> None:
        try:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            for module, flag in self._flags:
                if module.training != flag:  # nn.Module.__setattr__ is slow: only what changed
                    module.training = flag
            self._flags = []
        finally:
            if self._locked:
                self._locked = False
                self._lock.release()

    # -- recording -------------------------------------------------------------------------------------
    def _hook(self, name: str):
        def hook(module: Tap, args: tuple, kwargs: dict, output: Tensor) -> None:
            data = module.canonical(output).detach()
            # A copy, not a view: later in-place ops (out += identity, ReLU(inplace)) would overwrite it
            # (ATTENTION.md, bug 10); a channel mean or a cast is already a new tensor and is not copied again,
            # nor is the output of a read_only tap (its block never changes it). It stays on the device until
            # read, so a GPU batch is moved to the CPU in one transfer.
            shared = data.untyped_storage().data_ptr() == output.untyped_storage().data_ptr()
            data = data.to(dtype=torch.float32, copy=shared and not module.read_only)
            size = kwargs.get("size")
            if size is None and module.kind in ("spatial", "memory"):
                size = (int(data.shape[-2]), int(data.shape[-1]))
            self._pending.append((name, module.kind, data, None if size is None else (int(size[0]), int(size[1]))))

        return hook

    def _act_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            self._acts[name] = output.detach().mean(dim=1, dtype=torch.float32)  # (B, H, W), a new tensor

        return hook

    def _flush(self) -> None:
        """Move the pending maps and the activations to the CPU together: one transfer, one sync on a GPU."""
        n = len(self._pending)
        moved = to_cpu([data for _, _, data, _ in self._pending] + list(self._acts.values()))
        for (name, kind, _, size), data in zip(self._pending, moved[:n], strict=True):
            self._maps.append(AttentionMap(name, kind, data, size))
        self._acts = dict(zip(self._acts, moved[n:], strict=True))
        self._pending.clear()

    @property
    def activations(self) -> dict[str, Tensor]:
        """Channel mean of each attention module's output, (B, H, W) CPU float32, by module path."""
        if any(v.device.type != "cpu" for v in self._acts.values()):
            self._flush()
        return dict(self._acts)

    @property
    def maps(self) -> list[AttentionMap]:
        """Every captured map so far, in call order, as CPU float32 tensors."""
        if self._pending:
            self._flush()
        return list(self._maps)

    def clear(self) -> None:
        """Forget the maps captured so far (the hooks stay)."""
        self._pending.clear()
        self._maps.clear()
        self._acts.clear()

    def __len__(self) -> int:
        return len(self._maps) + len(self._pending)
