"""The training loop: one dataset tensor, seeded permutations, whole-batch transforms.

The training set stays in memory (on the device) as (N, H, W, C) uint8. Each epoch draws a
permutation from a generator seeded by (seed, epoch) and slices it into batches; a batch is
converted to float and normalized in one fused op. Permuting NHWC uint8 to NCHW gives a
channels_last tensor for free, which the model runs in (faster for Conv-4 on CPU and GPU: see
benchmarks/). Because the data order of epoch e depends only on (seed, e), a resumed run draws
exactly the batches an uninterrupted one would. On CUDA the step itself is replayed as a CUDA
graph (``run_steps``).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.transforms import random_vflip
from genlab.errors import GenlabError
from genlab.seeding import generator

OPTIMIZERS = ("sgd", "adam")
# Arithmetic of the forward and backward passes: fp32, or bf16 autocast (weights, optimizer
# state and the loss stay fp32). auto is bf16 on CUDA and fp32 on the CPU. Measured on this
# 2-core CPU (AVX512-BF16): bf16 trains width 64 2.1x as fast and width 4 0.85x as fast.
PRECISIONS = ("auto", "fp32", "bf16")
# Evaluation batch per device type. On this 2-core CPU, batches of 128 evaluate Conv-4 2.3x
# (width 4), 1.3x (width 16) and 1.0x (width 64) as fast as batches of 1,024, whose activations
# leave the cache (median of 7 alternating windows); a GPU wants large batches.
EVAL_BATCH = {"cpu": 128, "cuda": 1024}


class NonFiniteLoss(GenlabError):
    pass


class Stopped(Exception):
    """An epoch left between two steps because its ``stop`` event was set (the lanes of
    genlab.training.grouped set it on Ctrl-C or another lane's error)."""


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator for the data order (and augmentation) of one epoch."""
    return generator(seed, epoch)


def make_optimizer(
    name: str, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    if not lr > 0:
        raise GenlabError(f"--lr {lr}: must be > 0")
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        fit_optimizer_to_device(optimizer)
        return optimizer
    raise GenlabError(f"--optimizer {name!r}: not one of {', '.join(OPTIMIZERS)}")


def fit_optimizer_to_device(optimizer: torch.optim.Optimizer) -> None:
    """Adam on CUDA is ``capturable`` (its step count lives on the device, so a CUDA graph can
    replay the step); elsewhere it is not. Called on a new optimizer and after loading a state
    saved on another device: ``load_state_dict`` restores the saved flag with the state."""
    for group in optimizer.param_groups:
        if "capturable" not in group or not group["params"]:
            continue
        device = group["params"][0].device
        group["capturable"] = device.type == "cuda"
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if torch.is_tensor(state.get("step")):
                place = device if group["capturable"] else torch.device("cpu")
                state["step"] = state["step"].to(place, torch.float32)


@dataclass(frozen=True)
class Normalizer:
    """uint8 (N, H, W, C) -> float (N, C, H, W) channels_last, (x/255 - mean) / std per channel,
    in the dtype of ``scale`` (float32; float64 in tests that need exact arithmetic). It holds
    only what it computes with: the arithmetic of the model it feeds is the runtime's."""

    scale: torch.Tensor  # (1, C, 1, 1): 1 / (255 std)
    shift: torch.Tensor  # (1, C, 1, 1): -mean / std
    channels_last: bool = True  # False: contiguous NCHW (only for benchmarks/ to compare)

    @classmethod
    def from_stats(
        cls,
        mean: list[float],
        std: list[float],
        device: torch.device,
        channels_last: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> Normalizer:
        m = torch.tensor(mean, dtype=torch.float64)
        s = torch.tensor(std, dtype=torch.float64)
        as4d = lambda t: t.to(dtype).view(1, -1, 1, 1).to(device)  # noqa: E731
        return cls(as4d(1.0 / (255.0 * s)), as4d(-m / s), channels_last)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(self.scale.dtype).mul_(self.scale).add_(self.shift)
        return x if self.channels_last else x.contiguous()


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise GenlabError(f"--precision {precision!r}: not one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device):
    """The autocast context for a resolved ``precision`` ("fp32" or "bf16") on ``device``. Its
    cache of cast weights is off: Conv-4 uses each weight once per step, and a CUDA graph must
    not capture the cache."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()


WARMUP_STEPS = 3  # eager steps before a capture: optimizer state and library handles exist
StepFn = Callable[[int, int], None]  # on_step(done, total): steps run of an epoch


def cuda_graphs_enabled(device: torch.device) -> bool:
    """CUDA graphs for training steps on CUDA, unless GENLAB_CUDA_GRAPHS=0."""
    text = os.environ.get("GENLAB_CUDA_GRAPHS", "1")
    if text not in ("0", "1"):
        raise GenlabError(f"GENLAB_CUDA_GRAPHS={text!r}: must be 0 or 1")
    return device.type == "cuda" and text == "1"


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model.compile()`` was called on it (it keeps its class and state dict)."""
    return getattr(model, "_compiled_call_impl", None) is not None


def run_steps(
    step: Callable[[torch.Tensor], None],
    batches: Sequence[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    graph: bool,
    stop: threading.Event | None = None,
    on_step: StepFn | None = None,
) -> None:
    """``step(index)`` for every batch of indices, in order. With ``graph`` (CUDA), the first
    steps run eagerly, then one step is captured as a CUDA graph and replayed for the rest, its
    index buffer refilled each time: at batch 64 a Conv-4 step is a few hundred small kernels,
    and launching them from Python, not running them, set the pace (benchmarks/). Every step is
    the same computation either way, in the same order; ``step`` must keep its results in
    tensors (no host sync) and draw no random numbers. A set ``stop`` raises ``Stopped``
    before the next step. ``on_step(done, total)`` is told after each step (a progress bar;
    on the host, it reads nothing back from the device)."""

    def check() -> None:
        if stop is not None and stop.is_set():
            raise Stopped

    def told(done: int) -> None:
        if on_step is not None:
            on_step(done, len(batches))

    if not graph or len(batches) < 2 * WARMUP_STEPS:  # a capture costs about a step's time
        for done, index in enumerate(batches, 1):
            check()
            step(index)
            told(done)
        return
    main = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(main)
    with torch.cuda.stream(side):  # warm-up off the capturing stream, as CUDA graphs require
        for done, index in enumerate(batches[:WARMUP_STEPS], 1):
            step(index)
            told(done)
    main.wait_stream(side)
    static_index = batches[WARMUP_STEPS].clone()
    optimizer.zero_grad(set_to_none=True)  # gradients are then allocated in the graph's pool
    graph_ = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph_):
            step(static_index)
    except RuntimeError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenlabError(
            f"capturing a training step as a CUDA graph failed ({first_line}); "
            "set GENLAB_CUDA_GRAPHS=0 to train without graphs"
        ) from e
    for done, index in enumerate(batches[WARMUP_STEPS:], WARMUP_STEPS + 1):
        check()
        static_index.copy_(index)
        graph_.replay()
        told(done)
    optimizer.zero_grad(set_to_none=True)  # let the graph's memory go with it


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,  # (N, H, W, C) uint8, on the device
    labels: torch.Tensor,  # (N,) int64, on the device
    normalize: Normalizer,
    *,
    batch_size: int,
    generator: torch.Generator,
    augment: str = "none",
    precision: str = "fp32",
    stop: threading.Event | None = None,
    on_step: StepFn | None = None,
) -> dict[str, float]:
    """One pass over the data in a seeded order; returns mean train loss and accuracy. A set
    ``stop`` ends it between two steps (``Stopped``); ``on_step`` as ``run_steps``'."""
    model.train()
    device = images.device
    order = torch.randperm(len(images), generator=generator).to(device)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        # Drop the ragged last batch (its images fall elsewhere in the next epoch's order): a
        # BatchNorm step on a handful of images is a large, noisy step and skews the running
        # statistics. Measured on digits (1,347 = 21 x 64 + 3): keeping a 3-image last batch
        # sent eval-mode test accuracy from 0.83 to 0.27 between two epochs at lr 0.01.
        batches.pop()
    total_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)

    def step(index: torch.Tensor) -> None:
        x, y = images[index], labels[index]
        if augment == "random":
            x = random_vflip(x, generator)
        with autocast(precision, device):
            logits = model(normalize(x))
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss.add_(loss.detach().double() * len(y))
        correct.add_((logits.detach().argmax(1) == y).sum())

    # random flips are drawn on the host; a compiled model is not captured (never measured)
    graph = augment != "random" and not is_compiled(model) and cuda_graphs_enabled(device)
    run_steps(step, batches, optimizer, graph=graph, stop=stop, on_step=on_step)
    seen = sum(len(index) for index in batches)
    return {"loss": total_loss.item() / seen, "acc": correct.item() / seen}


def evaluate(
    model: nn.Module,
    images: torch.Tensor,  # (N, H, W, C) uint8
    labels: torch.Tensor,  # (N,) int64
    normalize: Normalizer,
    num_classes: int,
    batch_size: int | None = None,
    precision: str = "fp32",
) -> dict[str, object]:
    """Loss, accuracy and per-class accuracy of ``model`` in eval mode."""
    return evaluate_targets(
        model, images, [(labels, None)], normalize, num_classes, batch_size, precision
    )[0]


@torch.inference_mode()
def evaluate_targets(
    model: nn.Module,
    images: torch.Tensor,  # (N, H, W, C) uint8
    targets: Sequence[tuple[torch.Tensor, torch.Tensor | None]],  # (labels, rows kept or None)
    normalize: Normalizer,
    num_classes: int,
    batch_size: int | None = None,
    precision: str = "fp32",
) -> list[dict[str, object]]:
    """``evaluate`` for several label sets (each on all rows, or on the rows its mask keeps) of
    the same images, from one forward pass over them. A set with no rows (a mask keeping none,
    e.g. the changed labels at label noise 0) has loss and accuracy None, not 0; so has the
    per-class accuracy of a class with no rows in the set (null in metrics.jsonl)."""
    model.eval()
    device = normalize.scale.device
    batch_size = batch_size or EVAL_BATCH.get(device.type, 1024)
    targets = [(y.to(device), None if m is None else m.to(device)) for y, m in targets]
    sums = [
        (
            torch.zeros((), dtype=torch.float64, device=device),
            torch.zeros(num_classes, dtype=torch.int64, device=device),
        )
        for _ in targets
    ]
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True)
        with autocast(precision, device):
            logits = model(normalize(x)).float()
        predicted = logits.argmax(1)
        for (labels, mask), (total_loss, hits) in zip(targets, sums, strict=True):
            keep = slice(None) if mask is None else mask[start : start + batch_size]
            y = labels[start : start + batch_size][keep]
            total_loss += F.cross_entropy(logits[keep], y, reduction="sum").double()
            hits += torch.bincount(y[predicted[keep] == y], minlength=num_classes)
    out = []
    for (labels, mask), (total_loss, hits) in zip(targets, sums, strict=True):
        kept = labels if mask is None else labels[mask]
        n = len(kept)
        counts = torch.bincount(kept, minlength=num_classes).cpu().tolist()
        out.append(
            {
                "loss": total_loss.item() / n if n else None,
                "acc": hits.sum().item() / n if n else None,
                "per_class_acc": [
                    h / c if c else None for h, c in zip(hits.cpu().tolist(), counts, strict=True)
                ],
            }
        )
    return out


@dataclass(frozen=True)
class View:
    """A named evaluation set, e.g. "test" or "test_vflip". ``mask`` keeps some of its rows (only
    for evaluation: ``fit`` refuses a training view with one). Views holding the very same images
    tensor are evaluated together in one pass over it."""

    images: torch.Tensor  # (N, H, W, C) uint8
    labels: torch.Tensor  # (N,) int64
    mask: torch.Tensor | None = None  # (N,) bool


def evaluate_views(
    model: nn.Module,
    views: Mapping[str, View],
    normalize: Normalizer,
    num_classes: int,
    precision: str = "fp32",
) -> dict[str, dict[str, object]]:
    shared: dict[int, list[str]] = {}
    for name, view in views.items():
        shared.setdefault(id(view.images), []).append(name)
    out = {}
    for names in shared.values():
        targets = [(views[n].labels, views[n].mask) for n in names]
        found = evaluate_targets(
            model, views[names[0]].images, targets, normalize, num_classes, precision=precision
        )
        out.update(zip(names, found, strict=True))
    return {name: out[name] for name in views}


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module,
    images: torch.Tensor,  # (N, H, W, C) uint8: the data the model was trained on
    normalize: Normalizer,
    norms: Sequence[nn.modules.batchnorm._BatchNorm],
    batch_size: int = 256,
) -> None:
    """Recompute the running statistics of the BatchNorm layers ``norms`` of ``model`` on
    ``images`` in one pass, after weights that feed them were changed: each is reset and
    averages the batch statistics of ceil(N / batch_size) near-equal consecutive batches with
    equal weights (momentum None, as ``torch.optim.swa_utils.update_bn``), while every other
    BatchNorm keeps its own and normalizes with it. The statistics a layer kept from training
    describe inputs it no longer gets; evaluated with them, a changed network would be judged
    by a mismatch of statistics, not by its weights. Leaves the model in eval mode."""
    model.eval()
    saved = []
    for norm in norms:
        saved.append(norm.momentum)
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        device = normalize.scale.device
        count = max(1, math.ceil(len(images) / batch_size))
        bounds = [round(i * len(images) / count) for i in range(count + 1)]
        for start, stop in zip(bounds, bounds[1:], strict=False):
            model(normalize(images[start:stop].to(device, non_blocking=True)))
    finally:
        for norm, momentum in zip(norms, saved, strict=True):
            norm.momentum = momentum
        model.eval()


def flatten_metrics(
    train: Mapping[str, float], views: Mapping[str, Mapping[str, object]]
) -> dict[str, object]:
    """One flat record: train_loss, train_acc, then <view>_loss, <view>_acc, <view>_per_class_acc."""
    record: dict[str, object] = {f"train_{k}": v for k, v in train.items()}
    for name, metrics in views.items():
        record.update({f"{name}_{k}": v for k, v in metrics.items()})
    return record


def check_finite(epoch: int, record: Mapping[str, object]) -> None:
    loss = record["train_loss"]
    if not math.isfinite(loss):  # type: ignore[arg-type]
        raise NonFiniteLoss(
            f"epoch {epoch}: training loss is {loss}; stopped (the last good checkpoint, if any, is kept). "
            "Try a smaller --lr."
        )


class Timer:
    """Wall time of a block; on CUDA measured with events, which time the device's own stream
    (the host returns long before the kernels it queued have run)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> Timer:
        if self.device.type == "cuda":
            self._events = (
                torch.cuda.Event(enable_timing=True),
                torch.cuda.Event(enable_timing=True),
            )
            self._events[0].record()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self._events[1].record()
            self._events[1].synchronize()
            self.seconds = self._events[0].elapsed_time(self._events[1]) / 1000.0
        else:
            self.seconds = time.perf_counter() - self.start


LogFn = Callable[[str], None]
