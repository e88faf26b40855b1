"""``fit``: the one training loop, for one member or many, written to run folders, resumable.

A member is one run: its model, optimizer, training data, evaluation views, normalization and
schedule. A single run is a list of one member; a seed sweep, a noise grid or a map row are
longer lists. Members that can share a cohort (``together_key``) train side by side as
``genlab.training.grouped.plan`` measured fastest; the others, and cohorts the plan would train
one by one anyway, train one member after another.

Per epoch, in this order: train, evaluate every view, append the metrics record, save the
checkpoint. A kill between the last two leaves a record the checkpoint does not cover; resuming
drops it and recomputes that epoch, so a resumed run writes exactly what an uninterrupted one
would (the data order of an epoch depends only on the seed and the epoch number).

Members of a cohort are written one after another, so a kill can leave some at epoch e and
their cohort-mates at e - 1. How a member is computed depends on its cohort (grouped chunks
sum in another order; lanes have fewer threads), so a member that saved an epoch that a mate
(named in the record's ``cohort``) did not is rolled back to its previous checkpoint on resume,
and the cohort trains that epoch again as it did: the resumed runs are bit for bit the
uninterrupted ones. Where no rollback is possible (no previous.pt) it says so, and the records'
``cohort``, ``group_size`` and ``lanes`` show how each epoch was computed.

Pruned members (``Member.masks``: parameter name -> bool mask, False where a weight is pruned)
keep their pruned weights exactly zero: ``fit`` zeroes them before training (and before the
first checkpoint), masks their gradients (a tensor hook on each masked parameter), and zeroes
them again after every optimizer step (a step post-hook), so neither SGD momentum nor Adam's
moments nor weight decay can revive them; the masks are saved inside every checkpoint, and the
hooks are removed when ``fit`` returns. A masked member never shares a cohort (``together_key``
is None for it): it trains alone, through ``train_epoch``. A member whose ``spec.start_epoch``
is K > 0 (a rewound run) starts from the weights it holds as they stand after epoch K: its
first checkpoint is saved as epoch K and it trains epochs K + 1 .. ``spec.epochs``, the data
order of each still drawn from (seed, epoch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from torch import nn

from genlab.errors import GenlabError
from genlab.runs import CHECKPOINT, METRICS, PREVIOUS, Damaged, Run
from genlab.training.engine import (
    LogFn,
    NonFiniteLoss,
    Normalizer,
    StepFn,
    Timer,
    View,
    check_finite,
    evaluate_views,
    fit_optimizer_to_device,
    flatten_metrics,
)
from genlab.training.grouped import Chunk, Plan, in_lanes, plan, together_key
from genlab.training.progress import EpochProgress
from genlab.training.runtime import Runtime

Record = dict[str, object]


@dataclass(frozen=True)
class FitSpec:
    epochs: int
    batch_size: int
    seed: int  # the data order (and random flips) of epoch e come from (seed, e)
    augment: str = "none"  # "none" or "random"; "double" is a change of the data, not the loop
    keep: tuple[int, ...] = ()  # epochs whose checkpoints stay (checkpoints/epoch-K.pt)
    # the epoch its starting weights stand at (a rewound run trains start_epoch+1 .. epochs)
    start_epoch: int = 0


@dataclass
class Member:
    """One run to train. Members may share tensors (one dataset on the device for all)."""

    run: Run | None  # None: nothing is written (the caller records the result)
    model: nn.Module  # on the device, channels_last
    optimizer: torch.optim.Optimizer  # over ``model``'s parameters
    train: View  # the images and the labels it is fitted to (no mask)
    views: Mapping[str, View]  # evaluated after every epoch
    normalize: Normalizer
    num_classes: int
    spec: FitSpec
    stop: Callable[[Record], bool] | None = None  # True: stop after this epoch's record
    epoch: int = 0
    history: list[Record] = field(default_factory=list)
    error: GenlabError | None = None  # why it left training early (a non-finite loss)
    # parameter name -> bool mask of its shape (False: pruned, kept exactly 0); None: dense
    masks: Mapping[str, torch.Tensor] | None = None

    @property
    def done(self) -> bool:
        stopped = bool(self.history and self.history[-1].get("stopped"))
        return stopped or self.error is not None or self.epoch >= self.spec.epochs


def fit(members: Sequence[Member], rt: Runtime, *, how: Plan | None = None) -> list[list[Record]]:
    """Train every member to its ``spec.epochs`` (or its ``stop``), resuming each from its run
    folder; returns each member's records. A member whose loss turns non-finite leaves with its
    ``error`` set (its last good checkpoint kept) and the others go on. ``how`` fixes the plan
    (tests, benchmarks); None takes ``plan``'s, the fastest measured."""
    for m in members:
        if m.train.mask is not None:
            raise ValueError("the training view takes every row: pass the kept rows, not a mask")
    alone = len(members) == 1
    progress: dict[int, EpochProgress] = {}
    for m in members:
        if m.run is not None:
            try:
                m.epoch, m.history = resume(
                    m.run, m.model, m.optimizer, rt.log, m.spec.epochs, m.spec.start_epoch
                )
            except GenlabError as e:  # a damaged run folder: this member fails, the others go on
                m.error = e
        else:
            m.epoch = max(m.epoch, m.spec.start_epoch)
    roll_back_cohorts(members, rt.log)
    hooks: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for m in members:  # before the first checkpoint: it holds the pruned weights as zeros
            if m.masks is not None and m.error is None:
                hooks += _enforce(m)
        for m in members:  # epoch 0 too: one cut before its mates saved epoch 1 goes back to it
            if m.run is not None and m.error is None and not m.run.file(CHECKPOINT).exists():
                _save(m, m.spec.start_epoch)
        for m in members:
            if m.run is not None and m.error is None:
                progress[id(m)] = EpochProgress(
                    m.run.path.name,
                    m.spec.epochs,
                    m.epoch,
                    rt.log,
                    bar=None if alone else False,
                    tensorboard=m.run.path if rt.tensorboard else None,
                )
        for together in _partition(members):
            first = how or plan(together[0].model, rt.device, len(together))
            # a plan of one chunk in one lane trains one after another: each member to its end
            groups = [together] if first != Plan() else [[m] for m in together]
            for group in groups:
                _train(group, rt, how, progress, prefix=not alone)
    finally:
        for p in progress.values():
            p.close()
        for hook in hooks:
            hook.remove()
    return [m.history for m in members]


def _enforce(member: Member) -> list[torch.utils.hooks.RemovableHandle]:
    """Zero the member's pruned weights now, mask their gradients and zero them again after
    every optimizer step (module docstring); returns the hooks, for ``fit`` to remove."""
    assert member.masks is not None
    params = dict(member.model.named_parameters())
    pruned: list[tuple[torch.Tensor, torch.Tensor]] = []  # (parameter, True where pruned)
    hooks = []
    for name, mask in member.masks.items():
        if name not in params or tuple(mask.shape) != tuple(params[name].shape):
            raise ValueError(f"mask {name!r} of shape {tuple(mask.shape)} fits no parameter")
        param = params[name]
        off = ~mask.to(param.device, torch.bool)
        pruned.append((param, off))
        hooks.append(param.register_hook(partial(_masked_grad, off)))

    def zero_pruned(*_: object) -> None:
        with torch.no_grad():
            for param, off in pruned:
                param.masked_fill_(off, 0)

    zero_pruned()
    hooks.append(member.optimizer.register_step_post_hook(zero_pruned))
    return hooks


def _masked_grad(off: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad.masked_fill(off, 0)


def _partition(members: Sequence[Member]) -> list[list[Member]]:
    """Members that can share a cohort, in order of first appearance; the others alone."""
    groups: dict[object, list[Member]] = {}
    for m in members:
        key = together_key(m)
        groups.setdefault(id(m) if key is None else key, []).append(m)
    return list(groups.values())


def _train(
    members: list[Member],
    rt: Runtime,
    how: Plan | None,
    progress: Mapping[int, EpochProgress],
    *,
    prefix: bool,
) -> None:
    """The epochs of members that can share a cohort: each epoch the members at the lowest
    epoch train and are evaluated as the plan says; their files are written here, in order."""
    cohort_key: tuple[tuple[int, ...], Plan] | None = None
    chunks: list[Chunk] = []
    while active := [m for m in members if not m.done]:
        epoch = min(m.epoch for m in active) + 1
        cohort = [m for m in active if m.epoch == epoch - 1]
        plain = together_key(cohort[0]) is None
        now = Plan() if plain else how or plan(cohort[0].model, rt.device, len(cohort))
        if rt.device.type != "cpu":  # one stream: graphs are captured from one thread
            now = replace(now, lanes=1)
        if (tuple(map(id, cohort)), now) != cohort_key:  # first pass, one stopped or caught up
            cohort_key = (tuple(map(id, cohort)), now)
            chunks = [Chunk(cohort[i : i + now.chunk]) for i in range(0, len(cohort), now.chunk)]
        with Timer(rt.device) as t_train:
            trained = in_lanes(
                [
                    partial(c.train_epoch, epoch, rt.precision, on_step=_on_step(c, progress))
                    for c in chunks
                ],
                now.lanes,
            )
        results = [r for chunk in trained for r in chunk]
        sizes = {id(m): len(c.members) for c in chunks for m in c.members}
        with Timer(rt.device) as t_eval:
            evaluations = in_lanes([partial(_evaluate, m, rt.precision) for m in cohort], now.lanes)
        for m, train_metrics, view_metrics in zip(cohort, results, evaluations, strict=True):
            try:
                check_finite(epoch, {"train_loss": train_metrics["loss"]})
            except NonFiniteLoss as e:
                m.error = e  # not recorded, not saved: its last good checkpoint stays
                continue
            record: Record = {"epoch": epoch, **flatten_metrics(train_metrics, view_metrics)}
            record["stopped"] = bool(m.stop(record)) if m.stop is not None else False
            record["seconds"] = t_train.seconds / len(cohort)  # its share of the cohort's epoch
            record["eval_seconds"] = t_eval.seconds / len(cohort)
            # how it trained: float summation orders (so the last digits) depend on these
            record["group_size"], record["lanes"] = sizes[id(m)], now.lanes
            record["cohort"] = [c.run.path.name for c in cohort if c.run is not None]
            if m.run is not None:
                m.run.append_metrics(record)
                _save(m, epoch)
                line = epoch_line(record, m.spec.epochs, m.views)
                progress[id(m)].update(record, f"[{m.run.path.name}] {line}" if prefix else line)
            m.history.append(record)
            m.epoch = epoch


def _on_step(chunk: Chunk, progress: Mapping[int, EpochProgress]) -> StepFn | None:
    """The in-epoch progress of a chunk of one member whose run draws a bar (None else)."""
    shown = progress.get(id(chunk.members[0]))
    return shown.batch if len(chunk.members) == 1 and shown and shown.bar else None


def _save(member: Member, epoch: int) -> None:
    """The member's checkpoint after ``epoch``, kept as well if its spec keeps that epoch."""
    assert member.run is not None
    state = checkpoint_state(member.model, member.optimizer, epoch)
    if member.masks is not None:
        state["masks"] = {k: v.detach().to("cpu", torch.bool) for k, v in member.masks.items()}
    member.run.save_checkpoint(state)
    if epoch in member.spec.keep:
        member.run.keep_checkpoint(epoch)


def _evaluate(member: Member, precision: str, _stop: threading.Event) -> dict:
    return evaluate_views(
        member.model, member.views, member.normalize, member.num_classes, precision
    )


def checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "rng": rng,
    }


def load_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: Mapping[str, object],
    source: Path,
) -> None:
    """Load a checkpoint's model (and optimizer) state; ``Damaged`` naming ``source`` when it
    does not fit them (missing or unexpected keys, other shapes)."""
    try:
        model.load_state_dict(state["model"])  # type: ignore[arg-type]
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Damaged(source, f"does not fit the model or optimizer ({text[:300]})") from None
    if optimizer is None:
        return
    for group in optimizer.param_groups:  # load_state_dict checks counts, not shapes
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.ndim and value.shape != param.shape:
                    raise Damaged(
                        source,
                        f"does not fit the optimizer ({key} of shape {tuple(value.shape)} "
                        f"for a parameter of shape {tuple(param.shape)})",
                    )
    fit_optimizer_to_device(optimizer)  # saved on another device, or before graphs existed


def resume(
    run: Run,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    log: LogFn,
    epochs: int,
    start: int = 0,
) -> tuple[int, list[Record]]:
    """The epoch the run's checkpoint was saved after (``start``: none) and the records up to
    it, the checkpoint loaded into ``model`` and ``optimizer``; ``Damaged`` for a checkpoint
    that does not fit them or the run's epochs ``start`` .. ``epochs``, or records that do not
    reach it (a run started at epoch ``start`` holds the records of ``start + 1`` on)."""
    state = run.load_checkpoint()
    if state is None:
        return start, run.keep_metrics(start)
    epoch = int(state["epoch"])  # type: ignore[call-overload]
    if epoch > epochs or epoch < start:
        raise Damaged(run.file(CHECKPOINT), f"saved after epoch {epoch} of a run of {epochs}")
    load_state(model, optimizer, state, run.file(CHECKPOINT))
    # nothing in training draws from PyTorch's global generators (the data order of an epoch
    # comes from (seed, epoch)), so their saved state is a record, not something to restore
    found = [r.get("epoch") for r in run.metrics()][: epoch - start]
    if found != list(range(start + 1, epoch + 1)):
        raise Damaged(
            run.file(METRICS),
            f"holds {len(found)} records for the checkpoint's {epoch - start} epochs",
        )
    if epoch > start:
        log(f"resuming {run.path} after epoch {epoch}")
    return epoch, run.keep_metrics(epoch)


def roll_back_cohorts(members: Sequence[Member], log: LogFn) -> None:
    """Members that saved an epoch a cohort-mate of it (in this call) did not go back to their
    previous checkpoint, so the cohort trains that epoch again together (module docstring)."""
    by_name: dict[str, list[Member]] = {}
    for m in members:
        if m.run is not None:
            by_name.setdefault(m.run.path.name, []).append(m)
    changed = True
    while changed:
        changed = False
        for m in members:
            if m.run is None or not m.history:
                continue
            names = m.history[-1].get("cohort") or []
            mates = [by_name[n][0] for n in names if len(by_name.get(n, [])) == 1]  # type: ignore[union-attr]
            behind = [o for o in mates if o.error is None and o.epoch == m.epoch - 1]
            if m.error is not None or not behind:
                continue
            shown = f"{m.run.path}: its cohort-mate {behind[0].run.path.name} did not save epoch {m.epoch}"  # type: ignore[union-attr]
            try:
                previous = m.run.load_checkpoint(PREVIOUS)
            except GenlabError as e:
                previous, why = None, str(e)
            else:
                why = f"no {PREVIOUS} of epoch {m.epoch - 1}"
            if previous is None or previous["epoch"] != m.epoch - 1:
                log(
                    f"{shown}, and {why} to go back to: the next epochs train in another cohort "
                    f"(see cohort and group_size in {METRICS})"
                )
                continue
            load_state(m.model, m.optimizer, previous, m.run.file(PREVIOUS))
            m.run.restore_previous()
            m.epoch -= 1
            m.history = m.run.keep_metrics(m.epoch)
            log(f"{shown}: back to epoch {m.epoch}, to train it again with its cohort")
            changed = True


def epoch_line(record: Record, epochs: int, views: Mapping[str, View]) -> str:
    parts = [
        f"epoch {record['epoch']:>3}/{epochs}",
        f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}",
    ]
    for name in views:  # an empty view (no rows) has accuracy None
        acc = record[f"{name}_acc"]
        parts.append(f"{name} acc {'n/a' if acc is None else f'{acc:.4f}'}")
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)
