"""How K members share the machine: grouped models and lanes (used by ``genlab.training.fit``).

Members that are at the same epoch (a cohort) train as ``plan`` says was measured to be fastest
on the device: on CUDA as one ``GroupedConv4``; on the CPU in lanes, threads side by side that
each train some members (small ones as grouped chunks) with their share of the intra-op threads.
A chunk of one member trains through ``train_epoch``, exactly as a run alone does; a grouped
chunk holds the members' weights and optimizer state, computes what each would compute alone up
to float summation order, and is copied back into the members' plain objects every epoch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.nn.functional as F

from genlab.models.conv4 import Conv4
from genlab.models.grouped import GroupedConv4
from genlab.training.engine import (
    Normalizer,
    StepFn,
    Stopped,
    autocast,
    cuda_graphs_enabled,
    epoch_generator,
    fit_optimizer_to_device,
    is_compiled,
    run_steps,
    train_epoch,
)

if TYPE_CHECKING:
    from genlab.training.loop import Member

OptimizerFactory = Callable[[object], torch.optim.Optimizer]
T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """How a cohort of K members at the same epoch trains: in chunks of ``chunk`` consecutive
    members, each chunk one ``GroupedConv4`` (a chunk of 1 trains through ``train_epoch``, as a
    single run does), and ``lanes`` threads taking chunks side by side, each thread with an
    equal share of PyTorch's intra-op threads (1 lane: one chunk after another, here)."""

    chunk: int = 1
    lanes: int = 1


GROUP_WIDTHS = {"cpu": 4, "cuda": 16}  # the widest member that trains in grouped chunks
CPU_CHUNK = 4  # the largest grouped chunk on one CPU thread (2 and 4 measured alike, 8 slower)


def plan(model: torch.nn.Module, device: torch.device, k: int, threads: int | None = None) -> Plan:
    """The fastest way measured (benchmarks/bench_training.py, aggregate images/s against
    training the K members one after another on all threads) to train ``k`` members like
    ``model``:
    - H100: one grouped model at width <= 16: K = 8 width-4 models 2.63x, K = 3 1.35x; K = 3
      width-64 models 0.9x (one by one). Widths 8-16 were not measured: grouped by extrapolation.
    - 2-core CPU: lanes, where one small model uses 2 threads poorly (1.6x one thread) and
      grouped convolutions with few channels per group lose half their speed on 2 threads but
      not on one. Width 4: K = 8 in 2 lanes of one grouped chunk of 4 each 1.5-2.1x (one
      grouped model on 2 threads 0.96-1.3x, one by one in 2 lanes 1.2-1.6x); K = 16 in chunks
      of 4 1.5-1.8x; K = 3 in chunks [2, 1] 1.1-1.3x. Width 8: K = 8 one by one in 2 lanes
      1.08-1.22x (grouped 0.57x), but K = 3 0.94x: 2 + 1 members leave a lane idle. Width 16
      (1.09x at K = 4) and 64 (1.04x at K = 2) gain nothing: one by one on all threads.
      Machines with more cores get min(K, threads) lanes by extrapolation.
    ``threads``: the intra-op threads it will train with (default: this process's now)."""
    width = getattr(model, "width", None)
    if width is None or k < 2:
        return Plan()
    if device.type == "cuda":
        return Plan(chunk=k if width <= GROUP_WIDTHS["cuda"] else 1)
    small = width <= 4 or (width <= 8 and k >= 4)
    threads = torch.get_num_threads() if threads is None else threads
    lanes = min(k, threads) if small and lanes_work() else 1
    per_lane = -(-k // lanes)
    return Plan(chunk=min(per_lane, CPU_CHUNK) if width <= GROUP_WIDTHS["cpu"] else 1, lanes=lanes)


def claim_size(device: torch.device, threads: int | None = None) -> int:
    """The most members worth claiming to train side by side (measured above): on the CPU
    ``lanes x CPU_CHUNK`` (K = 8 width-4 members fill 2 lanes of chunks of 4; K = 16 was no
    faster per member), on CUDA 8 (the largest K measured in one grouped model). A sweep claims
    its members this many at a time, so other processes can take the rest. ``threads``: as in
    ``plan``."""
    if device.type == "cuda":
        return 8
    return max(1, torch.get_num_threads() if threads is None else threads) * CPU_CHUNK


def in_lanes(jobs: Sequence[Callable[[threading.Event], T]], lanes: int) -> list[T]:
    """The results of ``jobs`` (independent of each other), in order. Each job is called with
    an event that asks it to stop early (``train_epoch``'s ``stop``). With ``lanes`` > 1 they
    run in that many threads side by side, each thread taking the next job when it is free,
    with ``torch.get_num_threads() // lanes`` (at least 1) intra-op threads of its own: PyTorch
    releases the GIL inside its ops. A job computes what it would compute alone on that many
    threads, whichever thread runs it. On the first error, or Ctrl-C here, the queued jobs are
    dropped and the running ones stopped at their next step; then the error is raised."""
    stop = threading.Event()
    if lanes <= 1:
        return [job(stop) for job in jobs]
    total = torch.get_num_threads()
    pool = ThreadPoolExecutor(
        lanes, "genlab-lane", initializer=torch.set_num_threads, initargs=(max(1, total // lanes),)
    )
    futures = []  # filled one by one: a Ctrl-C between two submits leaves none untracked
    try:
        for job in jobs:
            futures.append(pool.submit(job, stop))
        wait(futures, return_when=FIRST_EXCEPTION)
    except BaseException:  # Ctrl-C while waiting
        stop.set()
        raise
    finally:
        if any(f.done() and not f.cancelled() and f.exception() for f in futures):
            stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        # PyTorch keeps one thread count for the process, which a thread takes up when it
        # first runs a parallel op; the lanes' setting must not outlive them
        torch.set_num_threads(total)
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    for error in errors:
        if not isinstance(error, Stopped):
            raise error
    return [f.result() for f in futures]


def like(optimizer: torch.optim.Optimizer) -> OptimizerFactory:
    """A factory of optimizers of ``optimizer``'s kind and hyper-parameters over new parameters
    (a grouped chunk's)."""

    def make(params: object) -> torch.optim.Optimizer:
        new = type(optimizer)(params, **optimizer.defaults)  # type: ignore[call-arg]
        fit_optimizer_to_device(new)
        return new

    return make


def together_key(member: Member) -> tuple | None:
    """Members with equal keys can share a cohort (one grouped model or one set of lanes):
    plain Conv-4 models of one architecture, images of one shape, one batch size, one kind of
    optimizer with the same hyper-parameters, no per-batch augmentation, no pruning masks (a
    grouped model's weights are not the member's own tensors, which the masks' hooks are
    registered on); None: trains alone."""
    model, opt = member.model, member.optimizer
    if type(model) is not Conv4 or is_compiled(model) or member.spec.augment != "none":
        return None
    if member.masks is not None:
        return None
    hyper = tuple(sorted((k, repr(v)) for k, v in opt.defaults.items() if k != "capturable"))
    return (
        model.width,
        model.kernel,
        tuple(member.train.images.shape),
        str(member.train.images.device),
        member.normalize.scale.dtype,
        member.spec.batch_size,
        member.num_classes,
        type(opt),
        hyper,
    )


@cache
def lanes_work() -> bool:
    """Whether a thread can have its own intra-op thread count: with OpenMP (PyTorch's usual CPU
    backend) each thread has its own; with the native thread pool all threads share one."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def group(
    members: Sequence[Member], make_optimizer: OptimizerFactory
) -> tuple[GroupedConv4, torch.optim.Optimizer]:
    """One grouped model and optimizer holding the members' current weights and optimizer state."""
    model = GroupedConv4([m.model for m in members]).to(
        members[0].model.classifier.weight.device, memory_format=torch.channels_last
    )
    optimizer = make_optimizer(model.parameters())
    plain_states = [m.optimizer.state_dict()["state"] for m in members]
    for index, param in enumerate(model.parameters()):  # the same order as a plain Conv4's
        if index not in plain_states[0]:
            continue
        merged = {}
        for key, first in plain_states[0][index].items():
            if first.ndim == 0:  # e.g. Adam's step count: the same for members at one epoch
                merged[key] = first.clone()
            else:
                merged[key] = torch.cat(
                    [s[index][key].reshape(-1, *param.shape[1:]) for s in plain_states]
                )
        optimizer.state[param] = merged
    fit_optimizer_to_device(optimizer)
    return model, optimizer


def ungroup(
    model: GroupedConv4, optimizer: torch.optim.Optimizer, members: Sequence[Member]
) -> None:
    """Copy the group's weights and optimizer state back into each member's plain objects."""
    params = dict(model.named_parameters())
    for k, member in enumerate(members):
        member.model.load_state_dict(model.member_state(k))
        state = member.optimizer.state_dict()
        for index, (name, plain) in enumerate(member.model.named_parameters()):
            grouped_state = optimizer.state.get(params[name], {})
            if grouped_state:
                state["state"][index] = {
                    key: (
                        value.clone()
                        if value.ndim == 0
                        else model.member_view(name, value)[k].reshape(plain.shape).clone()
                    )
                    for key, value in grouped_state.items()
                }
        member.optimizer.load_state_dict(state)


def train_epoch_grouped(
    model: GroupedConv4,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,  # (N, H, W, C) uint8 shared by all members, or (K, N, H, W, C)
    labels: torch.Tensor,  # (K, N) int64: each member's labels
    normalize: Normalizer,  # for K*C channels
    *,
    batch_size: int,
    generators: Sequence[torch.Generator],
    precision: str = "fp32",
    stop: threading.Event | None = None,
) -> list[dict[str, float]]:
    """One epoch for every member, each in its own seeded order (as ``train_epoch`` draws it);
    a set ``stop`` ends it between two steps."""
    model.train()
    k, n = labels.shape
    device = labels.device
    order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)  # (K, N)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < batch_size:
        starts.pop()  # the ragged last batch is dropped, as in train_epoch
    members = torch.arange(k, device=device)[:, None]
    total_loss = torch.zeros(k, dtype=torch.float64, device=device)
    correct = torch.zeros(k, dtype=torch.int64, device=device)

    def step(index: torch.Tensor) -> None:  # index: (K, B), member k's batch in row k
        b = index.shape[1]
        x = images[index] if images.ndim == 4 else images[members, index]  # (K, B, H, W, C)
        x = x.permute(1, 2, 3, 0, 4).reshape(b, x.shape[2], x.shape[3], -1)  # (B, H, W, K*C)
        y = labels.gather(1, index)  # (K, B)
        with autocast(precision, device):  # as train_epoch
            logits = model(normalize(x))  # (B, K, classes)
            losses = F.cross_entropy(logits.transpose(1, 2), y.T, reduction="none").mean(0)  # (K,)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # members share no weight: each gets its own loss's gradient
        optimizer.step()
        total_loss.add_(losses.detach().double() * b)
        correct.add_((logits.detach().argmax(2) == y.T).sum(0))

    batches = [order[:, start : start + batch_size] for start in starts]
    run_steps(step, batches, optimizer, graph=cuda_graphs_enabled(device), stop=stop)
    seen = sum(index.shape[1] for index in batches)
    return [
        {"loss": total_loss[i].item() / seen, "acc": correct[i].item() / seen} for i in range(k)
    ]


class Chunk:
    """Consecutive members of a cohort that train as one: alone through ``train_epoch``, or
    several as one ``GroupedConv4``, built once and copied back into the members every epoch."""

    def __init__(self, members: Sequence[Member]):
        self.members = list(members)
        if len(members) == 1:
            return
        self.model, self.optimizer = group(members, like(members[0].optimizer))
        images = [m.train.images for m in members]
        shared = all(x is images[0] for x in images)
        self.images = images[0] if shared else torch.stack(images)
        self.labels = torch.stack([m.train.labels for m in members])
        self.normalize = Normalizer(
            torch.cat([m.normalize.scale for m in members], 1),
            torch.cat([m.normalize.shift for m in members], 1),
        )

    def train_epoch(
        self,
        epoch: int,
        precision: str,
        stop: threading.Event,
        *,
        on_step: StepFn | None = None,
    ) -> list[dict[str, float]]:
        """One epoch of every member; ``on_step`` (a progress bar) is told of each step of a
        chunk of one member (a grouped chunk trains several runs: no bar is drawn for it)."""
        generators = [epoch_generator(m.spec.seed, epoch) for m in self.members]
        batch_size = self.members[0].spec.batch_size  # one for all: see together_key
        if len(self.members) == 1:
            m = self.members[0]
            return [
                train_epoch(
                    m.model,
                    m.optimizer,
                    m.train.images,
                    m.train.labels,
                    m.normalize,
                    batch_size=batch_size,
                    generator=generators[0],
                    augment=m.spec.augment,
                    precision=precision,
                    stop=stop,
                    on_step=on_step,
                )
            ]
        results = train_epoch_grouped(
            self.model,
            self.optimizer,
            self.images,
            self.labels,
            self.normalize,
            batch_size=batch_size,
            generators=generators,
            precision=precision,
            stop=stop,
        )
        ungroup(self.model, self.optimizer, self.members)
        return results
