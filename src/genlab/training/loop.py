"""``fit``: epochs of training and evaluation, written to a run folder, resumable after a kill.

Per epoch, in this order: train, evaluate every view, append the metrics record, save the
checkpoint. A kill between the last two leaves a record the checkpoint does not cover; resuming
drops it and recomputes that epoch, so a resumed run writes exactly what an uninterrupted one
would (the data order of an epoch depends only on the seed and the epoch number).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from genlab.runs import TENSORBOARD, Run
from genlab.training.engine import (
    LogFn,
    Normalizer,
    Timer,
    View,
    check_finite,
    epoch_generator,
    evaluate_views,
    fit_optimizer_to_device,
    flatten_metrics,
    train_epoch,
)
from genlab.training.progress import EpochProgress

Record = dict[str, object]


@dataclass(frozen=True)
class FitSpec:
    epochs: int
    batch_size: int
    seed: int
    augment: str = "none"  # "none" or "random"; "double" is a change of the data, not the loop


def fit(
    run: Run,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: View,
    views: Mapping[str, View],
    normalize: Normalizer,
    num_classes: int,
    spec: FitSpec,
    *,
    log: LogFn = print,
    stop: Callable[[Record], bool] | None = None,
) -> list[Record]:
    """Train ``model`` for ``spec.epochs`` (or until ``stop(record)``), resuming from ``run``."""
    if train.mask is not None:
        raise ValueError("the training view takes every row: pass the kept rows, not a mask")
    device = normalize.scale.device
    start, history = resume(run, model, optimizer, log)
    if history and history[-1].get("stopped"):
        return history
    tensorboard = run.file(TENSORBOARD) if run.tensorboard else None
    progress = EpochProgress(run.path.name, spec.epochs, start, log, tensorboard=tensorboard)
    for epoch in range(start + 1, spec.epochs + 1):
        with Timer(device) as t_train:
            train_metrics = train_epoch(
                model,
                optimizer,
                train.images,
                train.labels,
                normalize,
                batch_size=spec.batch_size,
                generator=epoch_generator(spec.seed, epoch),
                augment=spec.augment,
            )
        check_finite(epoch, {"train_loss": train_metrics["loss"]})
        with Timer(device) as t_eval:
            view_metrics = evaluate_views(model, views, normalize, num_classes)
        record: Record = {"epoch": epoch, **flatten_metrics(train_metrics, view_metrics)}
        record["stopped"] = bool(stop(record)) if stop is not None else False
        record["seconds"] = t_train.seconds
        record["eval_seconds"] = t_eval.seconds
        run.append_metrics(record)
        run.save_checkpoint(checkpoint_state(model, optimizer, epoch))
        history.append(record)
        progress.update(record, epoch_line(record, spec.epochs, views))
        if record["stopped"]:
            break
    progress.close()  # (after an exception tqdm closes the bar when it is collected)
    return history


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


def resume(
    run: Run, model: nn.Module, optimizer: torch.optim.Optimizer, log: LogFn
) -> tuple[int, list[Record]]:
    state = run.load_checkpoint()
    if state is None:
        return 0, run.keep_metrics(0)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    fit_optimizer_to_device(optimizer)  # saved on another device, or before graphs existed
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    log(f"resuming {run.path} after epoch {state['epoch']}")
    return state["epoch"], run.keep_metrics(state["epoch"])


def epoch_line(record: Record, epochs: int, views: Mapping[str, View]) -> str:
    parts = [
        f"epoch {record['epoch']:>3}/{epochs}",
        f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}",
    ]
    parts += [f"{name} acc {record[f'{name}_acc']:.4f}" for name in views]
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)
