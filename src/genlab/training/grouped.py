"""Train K small models together: a seed sweep, a noise sweep or a grid cell row.

Each member keeps its own run folder, initialization, labels, data order (its seed's
``epoch_generator``) and optimizer state, and is saved every epoch exactly as ``fit`` saves a
single run (same checkpoint, same metrics records), so a member can be resumed alone and its
results equal training it alone up to float summation order. Members that are at the same epoch
train as ``plan`` says was measured to be fastest on the device: on CUDA as one
``GroupedConv4``; on the CPU in lanes, threads side by side that each train some members (small
ones as grouped chunks) with their share of the intra-op threads. A member that stops early (or
is behind after a resume) simply leaves (or joins) the cohort, whose chunks are rebuilt from the
members' plain states.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import TypeVar

import torch
import torch.nn.functional as F

from genlab.models.conv4 import Conv4
from genlab.models.grouped import GroupedConv4
from genlab.runs import TENSORBOARD, Run
from genlab.training.engine import (
    LogFn,
    Normalizer,
    Stopped,
    Timer,
    View,
    autocast,
    check_finite,
    cuda_graphs_enabled,
    epoch_generator,
    evaluate_views,
    fit_optimizer_to_device,
    flatten_metrics,
    run_steps,
    train_epoch,
)
from genlab.training.loop import FitSpec, Record, checkpoint_state, epoch_line, resume
from genlab.training.progress import EpochProgress

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


def plan(model: torch.nn.Module, device: torch.device, k: int) -> Plan:
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
      Machines with more cores get min(K, threads) lanes by extrapolation."""
    width = getattr(model, "width", None)
    if width is None or k < 2:
        return Plan()
    if device.type == "cuda":
        return Plan(chunk=k if width <= GROUP_WIDTHS["cuda"] else 1)
    small = width <= 4 or (width <= 8 and k >= 4)
    lanes = min(k, torch.get_num_threads()) if small and lanes_work() else 1
    per_lane = -(-k // lanes)
    return Plan(chunk=min(per_lane, CPU_CHUNK) if width <= GROUP_WIDTHS["cpu"] else 1, lanes=lanes)


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


@cache
def lanes_work() -> bool:
    """Whether a thread can have its own intra-op thread count: with OpenMP (PyTorch's usual CPU
    backend) each thread has its own; with the native thread pool all threads share one."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


@dataclass
class Member:
    """One run trained inside a group."""

    run: Run | None  # None: nothing is written (the caller records the result)
    model: Conv4  # its plain weights between epochs (on the device, channels_last)
    optimizer: torch.optim.Optimizer  # over ``model``'s parameters
    images: torch.Tensor  # (N, H, W, C) uint8 on the device; members may share one tensor
    labels: torch.Tensor  # (N,) int64 on the device: the labels it is fitted to
    normalize: Normalizer
    views: Mapping[str, View]
    seed: int
    stop: Callable[[Record], bool] | None = None
    epoch: int = 0
    history: list[Record] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return bool(self.history and self.history[-1].get("stopped"))


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
        with autocast(normalize):  # as train_epoch
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


def fit_group(
    members: Sequence[Member],
    make_optimizer: OptimizerFactory,
    num_classes: int,
    spec: FitSpec,  # epochs and batch size; each member's seed is its own
    *,
    log: LogFn = print,
    how: Plan | None = None,
) -> list[list[Record]]:
    """Train every member to ``spec.epochs`` (or its stop). The members at the same epoch (a
    cohort) train as ``how`` says (None: ``plan``, the fastest measured), and are evaluated in
    the same lanes; their files are written here, in member order. Models other than plain
    Conv-4 train member by member."""
    if spec.augment != "none":
        raise ValueError("grouped training takes no augmentation")
    device = members[0].labels.device
    progress = {}
    for m in members:
        if m.run is not None:
            m.epoch, m.history = resume(m.run, m.model, m.optimizer, log)
            board = m.run.file(TENSORBOARD) if m.run.tensorboard else None
            progress[id(m)] = EpochProgress(
                m.run.path.name, spec.epochs, m.epoch, log, bar=False, tensorboard=board
            )
    cohort_key: tuple[tuple[int, ...], Plan] | None = None
    groups: list[_Chunk] = []
    while active := [m for m in members if not m.done and m.epoch < spec.epochs]:
        epoch = min(m.epoch for m in active) + 1
        cohort = [m for m in active if m.epoch == epoch - 1]
        plain = any(type(m.model) is not Conv4 for m in cohort)
        now = Plan() if plain else how or plan(cohort[0].model, device, len(cohort))
        if device.type != "cpu":  # one stream: graphs are captured from one thread
            now = replace(now, lanes=1)
        if (tuple(map(id, cohort)), now) != cohort_key:  # first pass, one stopped or caught up
            cohort_key = (tuple(map(id, cohort)), now)
            groups = [
                _Chunk(cohort[i : i + now.chunk], make_optimizer)
                for i in range(0, len(cohort), now.chunk)
            ]
        with Timer(device) as t_train:
            trained = in_lanes(
                [partial(c.train_epoch, epoch, spec.batch_size) for c in groups], now.lanes
            )
        results = [r for chunk in trained for r in chunk]
        sizes = {id(m): len(c.members) for c in groups for m in c.members}
        with Timer(device) as t_eval:
            evaluations = in_lanes([partial(_evaluate, m, num_classes) for m in cohort], now.lanes)
        for m, train_metrics, view_metrics in zip(cohort, results, evaluations, strict=True):
            check_finite(epoch, {"train_loss": train_metrics["loss"]})
            record: Record = {"epoch": epoch, **flatten_metrics(train_metrics, view_metrics)}
            record["stopped"] = bool(m.stop(record)) if m.stop is not None else False
            record["seconds"] = t_train.seconds / len(cohort)  # its share of the cohort's epoch
            record["eval_seconds"] = t_eval.seconds / len(cohort)
            # how it trained: float summation orders (so the last digits) depend on these
            record["group_size"], record["lanes"] = sizes[id(m)], now.lanes
            if m.run is not None:
                m.run.append_metrics(record)
                m.run.save_checkpoint(checkpoint_state(m.model, m.optimizer, epoch))
                progress[id(m)].update(
                    record, f"[{m.run.path.name}] " + epoch_line(record, spec.epochs, m.views)
                )
            m.history.append(record)
            m.epoch = epoch
    for p in progress.values():
        p.close()
    return [m.history for m in members]


def _evaluate(member: Member, num_classes: int, _stop: threading.Event) -> dict:
    return evaluate_views(member.model, member.views, member.normalize, num_classes)


class _Chunk:
    """Consecutive members of a cohort that train as one: alone through ``train_epoch``, or
    several as one ``GroupedConv4``, built once and copied back into the members every epoch."""

    def __init__(self, members: Sequence[Member], make_optimizer: OptimizerFactory):
        self.members = list(members)
        if len(members) == 1:
            return
        self.model, self.optimizer = group(members, make_optimizer)
        shared = all(m.images is members[0].images for m in members)
        self.images = members[0].images if shared else torch.stack([m.images for m in members])
        self.labels = torch.stack([m.labels for m in members])
        self.normalize = Normalizer(
            torch.cat([m.normalize.scale for m in members], 1),
            torch.cat([m.normalize.shift for m in members], 1),
            precision=members[0].normalize.precision,
        )

    def train_epoch(
        self, epoch: int, batch_size: int, stop: threading.Event
    ) -> list[dict[str, float]]:
        generators = [epoch_generator(m.seed, epoch) for m in self.members]
        if len(self.members) == 1:
            m = self.members[0]
            return [
                train_epoch(
                    m.model,
                    m.optimizer,
                    m.images,
                    m.labels,
                    m.normalize,
                    batch_size=batch_size,
                    generator=generators[0],
                    stop=stop,
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
            stop=stop,
        )
        ungroup(self.model, self.optimizer, self.members)
        return results
