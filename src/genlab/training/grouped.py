"""Train K small models together: a seed sweep, a noise sweep or a grid cell row.

Each member keeps its own run folder, initialization, labels, data order (its seed's
``epoch_generator``) and optimizer state, and is saved every epoch exactly as ``fit`` saves a
single run (same checkpoint, same metrics records), so a member can be resumed alone and its
results equal training it alone up to float summation order. Members that are at the same epoch
train as one ``GroupedConv4`` where that was measured to be faster (``worth_grouping``), else one
after another; a member that stops early (or is behind after a resume) simply leaves (or joins)
the group, which is rebuilt from the members' plain states.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from genlab.models.conv4 import Conv4
from genlab.models.grouped import GroupedConv4
from genlab.runs import TENSORBOARD, Run
from genlab.training.engine import (
    LogFn,
    Normalizer,
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


def worth_grouping(model: torch.nn.Module, device: torch.device, k: int) -> bool:
    """Whether ``k`` models like ``model`` train faster as one grouped model, by measurement
    (benchmarks/bench_training.py, aggregate images/s grouped vs one after another):
    - H100: K = 8 width-4 models 2.63x; K = 3 width-4 models 1.35x (the random-label grid);
      K = 3 width-64 models 0.9x. Widths 8-16 were not measured: grouped there by extrapolation;
    - 2-core CPU, where genlab's BatchNorm made single small models 1.5x faster and grouped
      convolutions with few channels per group run at half the speed of separate ones: width 4
      1.3x at K = 8 and 16 but 0.8x at K = 3; width 8 0.62x at K = 8 and 16; width 16 0.81x and
      width 64 0.70x at K = 3."""
    width = getattr(model, "width", None)
    if width is None:
        return False
    if device.type == "cuda":
        return width <= 16
    return width <= 4 and k >= 8


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
) -> list[dict[str, float]]:
    """One epoch for every member, each in its own seeded order (as ``train_epoch`` draws it)."""
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
    run_steps(step, batches, optimizer, graph=cuda_graphs_enabled(device))  # never compiled
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
    grouped: bool | None = None,
) -> list[list[Record]]:
    """Train every member to ``spec.epochs`` (or its stop), grouping those at the same epoch
    when ``grouped`` (None: where it was measured to pay, see ``worth_grouping``). A cohort of
    one, or of models other than plain Conv-4, trains member by member."""
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
    cohort_key: tuple[int, ...] | None = None
    while active := [m for m in members if not m.done and m.epoch < spec.epochs]:
        epoch = min(m.epoch for m in active) + 1
        cohort = [m for m in active if m.epoch == epoch - 1]
        with Timer(device) as t_train:
            worth = worth_grouping(cohort[0].model, device, len(cohort))
            group_now = worth if grouped is None else grouped
            if not group_now or len(cohort) == 1 or any(type(m.model) is not Conv4 for m in cohort):
                # one member, or a model GroupedConv4 cannot hold: each trains on its own
                cohort_key = None
                results = [
                    train_epoch(
                        m.model,
                        m.optimizer,
                        m.images,
                        m.labels,
                        m.normalize,
                        batch_size=spec.batch_size,
                        generator=epoch_generator(m.seed, epoch),
                    )
                    for m in cohort
                ]
            else:
                if tuple(map(id, cohort)) != cohort_key:  # first pass, one stopped or caught up
                    cohort_key = tuple(map(id, cohort))
                    model, optimizer = group(cohort, make_optimizer)
                    shared = all(m.images is cohort[0].images for m in cohort)
                    images = cohort[0].images if shared else torch.stack([m.images for m in cohort])
                    labels = torch.stack([m.labels for m in cohort])
                    wide = Normalizer(
                        torch.cat([m.normalize.scale for m in cohort], 1),
                        torch.cat([m.normalize.shift for m in cohort], 1),
                        precision=cohort[0].normalize.precision,
                    )
                results = train_epoch_grouped(
                    model,
                    optimizer,
                    images,
                    labels,
                    wide,
                    batch_size=spec.batch_size,
                    generators=[epoch_generator(m.seed, epoch) for m in cohort],
                )
                ungroup(model, optimizer, cohort)
        for m, train_metrics in zip(cohort, results, strict=True):
            check_finite(epoch, {"train_loss": train_metrics["loss"]})
            with Timer(device) as t_eval:
                view_metrics = evaluate_views(m.model, m.views, m.normalize, num_classes)
            record: Record = {"epoch": epoch, **flatten_metrics(train_metrics, view_metrics)}
            record["stopped"] = bool(m.stop(record)) if m.stop is not None else False
            record["seconds"] = t_train.seconds / len(cohort)  # its share of the cohort's epoch
            record["eval_seconds"] = t_eval.seconds
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
