"""Beyond the report: how many parameters does memorization need?

On one fixed subset of n training images, Conv-4 is trained at every width c in ``--widths`` and
every label noise p in ``--noise-levels`` (labels corrupted as in the random-labels study, the
same draw at every width), each cell until its fitted-label train accuracy (eval mode) reaches
``--stop-at-train-acc`` or the epoch budget runs out. Every cell reports its final fitted train
accuracy and test accuracy; the summary gives, per p, the smallest width (and parameter count)
that fits, to compare with n. Expect the parameters needed to grow with p: clean labels are fitted
by tiny networks that learn the rule, random labels only once the parameters are of the order of
n or more.

    genlab run memorization-map                        # digits, n = 1,000, 8 widths x 5 p
    genlab run memorization-map --dataset cifar10 --data-dir ../shared/data/cifar10-jpeg

A cell is one line of metrics.jsonl. The cells of one row (a width) train together, so they are
written together, in one atomic write: re-running the command skips the rows already done, and a
row a kill cut is trained again whole, from the same seeds and in the same grouping, so the map is
bit for bit the uninterrupted one.
Images are resized to 16x16 by default (``--image-size 0`` keeps 32x32): Conv-4 ends in a global
max pool, so the parameter counts are unchanged while every cell costs a quarter; the embedded
digits hold only 8x8 of detail. Width 16 fits 1,000 random digit labels in 24 epochs this way.
Cost on 2 CPU cores: see the closing note of issue 3 (minutes; the widest cells dominate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from genlab import seeding
from genlab.config import check_fields, option
from genlab.data import channel_stats, load_dataset, take_subset
from genlab.data.labels import NOISE_MODES, check_noise, corrupt_labels
from genlab.data.resize import resize
from genlab.errors import GenlabError
from genlab.models import count_params, make_model
from genlab.models.conv4 import check_architecture
from genlab.runs import DATASET, Run
from genlab.seeding import seed_from, stream
from genlab.studies.common import check_training, run_each, shared_option
from genlab.training import FitSpec, Member, Normalizer, View, evaluate, fit, make_optimizer
from genlab.training.runtime import Runtime


@dataclass(frozen=True)
class Config:
    dataset: str = shared_option("dataset")
    data_dir: str | None = shared_option("data_dir")
    n: int = option(1000, "training images (a fixed random subset, the same in every cell)")
    image_size: int = option(
        16, "images resized to this many pixels a side (digits hold 8x8 of detail); 0 keeps them"
    )
    widths: tuple[int, ...] = option((1, 2, 3, 4, 6, 8, 12, 16), "Conv-4 widths c")
    noise_levels: tuple[float, ...] = option((0.0, 0.25, 0.5, 0.75, 1.0), "label noise levels p")
    label_noise_mode: str = option(
        "uniform",
        "uniform: drawn from all classes; incorrect: from the others",
        choices=NOISE_MODES,
    )
    stop_at_train_acc: float = option(
        0.99, "a cell stops, and counts as fitted, at this fitted-label train accuracy"
    )
    model: str = shared_option("model")
    kernel: int = shared_option("kernel")
    epochs: int = shared_option("epochs", 40)  # the budget of each cell
    batch_size: int = shared_option("batch_size")
    optimizer: str = shared_option("optimizer", "adam")
    lr: float = shared_option("lr", 0.003)
    seed: int = shared_option("seed")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.image_size < 0 or 0 < self.image_size < 4:
            raise GenlabError(f"--image-size {self.image_size}: must be 0 (keep) or >= 4")
        if self.n < 1:
            raise GenlabError(f"--n {self.n}: must be >= 1")
        if not self.widths or min(self.widths) < 1:
            raise GenlabError(
                f"--widths {' '.join(map(str, self.widths))}: every width must be >= 1"
            )
        check_architecture(max(self.widths), self.kernel)
        if not self.noise_levels or not all(0 <= p <= 1 for p in self.noise_levels):
            raise GenlabError(
                f"--noise-levels {' '.join(map(str, self.noise_levels))}: each p must lie in [0, 1]"
            )
        check_noise(0.0, self.label_noise_mode)
        if not 0 < self.stop_at_train_acc <= 1:
            raise GenlabError(f"--stop-at-train-acc {self.stop_at_train_acc}: must lie in (0, 1]")
        check_training(self.epochs, self.batch_size, self.lr)


PRESETS: dict[str, dict[str, Any]] = {}
RUN_ID_KEYS = ("dataset", "n", "epochs", "seed")


def run(members: list[tuple[Config, Run]], rt: Runtime) -> list[dict[str, Any]]:
    """Each map in turn (a map's cells already train together, row by row)."""
    return run_each(members, lambda cfg, run: _run_map(cfg, run, rt))


def _run_map(cfg: Config, run: Run, rt: Runtime) -> dict[str, Any]:
    device, log = rt.device, rt.log
    splits = load_dataset(cfg.dataset, cfg.data_dir, quiet=rt.quiet)
    if cfg.n > len(splits.train):
        raise GenlabError(f"--n {cfg.n}: the training split has only {len(splits.train)} images")
    train, test = take_subset(splits.train, cfg.n), splits.test
    if cfg.image_size:  # the cost of a cell scales with the pixels; the parameter count does not
        train = train.with_images(resize(train.images, cfg.image_size))
        test = test.with_images(resize(test.images, cfg.image_size))
    K = train.num_classes
    mean, std = channel_stats(train.images)
    normalize = Normalizer.from_stats(mean, std, device)
    x, test_x, test_y = (
        train.images.to(device),
        test.images.to(device),
        test.labels.to(device),
    )
    run.write_json(
        DATASET,
        {
            "name": splits.name,
            "classes": list(train.classes),
            "num_train": len(train),
            "num_test": len(test),
            "image_shape": list(train.shape),
            "normalization": {"mean": mean, "std": std},
        },
    )
    # cells done; a line cut by a kill is dropped now, or later cells would be appended after it
    done = {(c["width"], c["label_noise"]): c for c in run.keep_metrics()}
    labels = {}  # p -> (fitted labels, changed mask): the same draw at every width
    for p in cfg.noise_levels:
        labels[p] = corrupt_labels(
            train.labels, p, K, cfg.label_noise_mode, stream(cfg.seed, "train_labels")
        )
    true_y = train.labels.to(device)
    for width in cfg.widths:
        todo = [p for p in cfg.noise_levels if (width, p) not in done]
        if not todo:
            continue
        # one row of the map: the noise levels of one width train together, as
        # genlab.training.grouped.plan measured fastest (lanes and grouped chunks)
        cells = _train_row(
            cfg, width, todo, x, {p: labels[p][0].to(device) for p in todo}, normalize, K, rt
        )
        row = []
        for p, (model, history) in zip(todo, cells, strict=True):
            test = evaluate(model, test_x, test_y, normalize, K, precision=rt.precision)
            last = history[-1]
            cell = {
                "width": width,
                "params": count_params(model),
                "label_noise": p,
                "num_train": len(x),
                "epochs": last["epoch"],
                "time_to_fit": last["epoch"] if last["stopped"] else None,
                "fitted": bool(last["stopped"]),
                "train_fitted_acc": last["train_fitted_acc"],
                "train_true_acc": evaluate(model, x, true_y, normalize, K, precision=rt.precision)[
                    "acc"
                ],
                "test_acc": test["acc"],
                "test_loss": test["loss"],
                "seconds": sum(r["seconds"] + r["eval_seconds"] for r in history),
                "fraction_changed": labels[p][1].float().mean().item(),
            }
            row.append(cell)
            done[(width, p)] = cell
        run.extend_metrics(row)
        for cell in row:
            log(
                f"c={width:>3} ({cell['params']:>9,} params)  p={cell['label_noise']:<5} epochs {cell['epochs']:>3}  "
                f"fitted train acc {cell['train_fitted_acc']:.3f}  test acc {cell['test_acc']:.3f}  {cell['seconds']:.1f}s"
            )
    cells = [done[(w, p)] for p in cfg.noise_levels for w in cfg.widths]
    summary = {
        "n": cfg.n,
        "stop_at_train_acc": cfg.stop_at_train_acc,
        "cells": len(cells),
        "seconds": sum(c["seconds"] for c in cells),
        "smallest_fitting": {},
    }
    for p in cfg.noise_levels:
        fits = sorted(
            (c["params"], c["width"]) for c in cells if c["label_noise"] == p and c["fitted"]
        )
        summary["smallest_fitting"][str(p)] = (
            {"width": fits[0][1], "params": fits[0][0], "params_per_image": fits[0][0] / cfg.n}
            if fits
            else None
        )
        log(
            f"p={p}: smallest fitting width "
            + (
                f"{fits[0][1]} ({fits[0][0]:,} params = {fits[0][0] / cfg.n:.1f} n)"
                if fits
                else "none within the budget"
            )
        )
    run.write_summary(summary)
    return summary


def _train_row(
    cfg: Config,
    width: int,
    noise_levels: list[float],
    x: torch.Tensor,  # (N, H, W, C) uint8 on the device
    fitted: dict[float, torch.Tensor],  # p -> (N,) labels
    normalize: Normalizer,
    K: int,
    rt: Runtime,
) -> list[tuple[torch.nn.Module, list[dict[str, Any]]]]:
    """Train the cells of one width, each from its own seed, until it fits or the budget runs
    out; they share one training tensor, so ``fit`` trains them together."""
    members = []
    spec = FitSpec(cfg.epochs, cfg.batch_size, cfg.seed)
    stop = lambda r: r["train_fitted_acc"] >= cfg.stop_at_train_acc  # noqa: E731
    for p in noise_levels:
        with seeding.init(seed_from(cfg.seed, width, round(p * 10_000))):
            model = make_model(cfg.model, width, cfg.kernel, K, x.shape[-1])
        model = model.to(x.device, memory_format=torch.channels_last)
        optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
        train = View(x, fitted[p])
        views = {"train_fitted": train}
        members.append(Member(None, model, optimizer, train, views, normalize, K, spec, stop))
    histories = fit(members, rt)
    return [(m.model, h) for m, h in zip(members, histories, strict=True)]
