"""Linear mode connectivity (Frankle, Dziugaite, Roy & Carbin 2020): from which epoch on does the
noise of SGD (the order of the data) no longer change which minimum a network ends in?

A parent run trains as a random-labels run does (``--label-noise`` etc. work the same). At each
spawn epoch k (``--spawn-epochs``) its weights and optimizer state are copied into
``--children`` children, which train on to ``--epochs`` with data orders of their own (seed
``seed_from(seed, SALT, k, i)``) and everything else the same. For each pair of children of one
k, the network θ(α) = (1 − α)θ₁ + αθ₂ is evaluated at ``--points`` evenly spaced α in [0, 1]
on the training images with the labels they are fitted to, the test set and the test set
flipped upside down. The *error barrier* of a pair (Frankle et al.'s instability) is the
largest rise of the error (1 − accuracy) along the path above the mean of the two ends:
max_α err(α) − (err(0) + err(1)) / 2, which is 0 for a network with itself and at least half
the gap between the ends. Children spawned at k are *stable* when their barrier is about 0:
they lie in one linearly connected basin. Expect a large barrier at k = 0 (different data
orders from one initialization end in different basins) that falls within the first few epochs
(Frankle et al.: 3% of training for ResNet-20 on CIFAR-10); with random labels the question is
whether memorizing networks ever become stable.

BatchNorm at each α: the running statistics of every BatchNorm are recomputed on the training
images (``recompute_batchnorm``), the two ends included, so α = 0 and 1 measure exactly the
children themselves under the same procedure. Interpolating the running statistics would be
wrong: they are the mean and variance of the activations each end network produces, and the
activations of θ(α) are neither interpolations of the ends' activations (the network is
nonlinear, and units of two networks need not match one to one) nor have their variance (mixing
two uncorrelated sets of filters shrinks the variance of what a layer outputs, Jordan et al.
2022). With interpolated statistics a path would be judged by misnormalized activations, not by
its weights, and the barrier would be inflated by an artefact.

    genlab run connectivity                                  # digits, width 8, 10 epochs
    genlab run connectivity --spawn-epochs 0 1 2 5 --children 3 --points 11 --label-noise 1
    genlab sweep connectivity --label-noise 0 1 --seeds 3    # intervals over parent seeds
    genlab run connectivity --preset report                  # CIFAR-10, width 64

The run folder is the parent's run folder (config.json, env.json, dataset.json,
label_noise.json, metrics.jsonl, checkpoint.pt, checkpoints/epoch-k.pt for every spawn epoch)
with ``children/k<k>-c<i>/`` (each a run folder as ``fit`` writes one: metrics.jsonl records
1..k copied from the parent, then its own; checkpoint.pt), ``interpolation.json`` (per k, per
pair, per α: loss and accuracy per view; the barriers) and ``summary.json``, written last: per
k the barrier's mean and 95% interval over pairs (pairs share children, so the interval is
optimistic; none with one pair), the children's final accuracies, the parent's. A kill resumes
the parent, then the children, then recomputes the interpolation.

Cost: the default (parent 10 epochs, 8 children 64 epochs in all, 44 points) about 2.5 minutes
on a 2-core CPU, from the rates measured with ``--children 3`` (5 minutes with another job on
the CPU: 1.4-1.8 s an epoch, 0.8 s a point). The report preset (estimated from README's Speed rates, not measured): 646
epochs of 50,000 CIFAR-10 images and 198 points on the path, each a pass over the 50,000
training images for the statistics and 70,000 evaluated; about 20 minutes on one H100 (1.25 s
an epoch; the points some 2 minutes), about 2 days on a 2-core CPU in bf16.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.aggregate import interval
from genlab.config import option
from genlab.errors import GenlabError, MembersFailed
from genlab.fileio import atomic_write, remove_stale, temp_prefix, write_error
from genlab.models import count_params
from genlab.runs import (
    CHECKPOINT,
    CHILDREN,
    INTERPOLATION,
    KEPT,
    METRICS,
    PREVIOUS,
    Run,
    kept_name,
)
from genlab.seeding import seed_from
from genlab.studies import random_labels
from genlab.studies.common import SharedData, prepare, summarize_views
from genlab.training import FitSpec, Member, View, evaluate_views, fit, recompute_batchnorm
from genlab.training.runtime import Runtime

SALT = 271829  # keeps the children's data-order seeds apart from every other stream
PATH_VIEWS = ("train", "test", "test_vflip")  # train: the training images, fitted labels
RUN_VIEWS = (*random_labels.VIEWS, "test_vflip")  # what every epoch of parent and child records
BATCHNORM_BATCH = 256  # training images per batch when the statistics are recomputed


@dataclass(frozen=True)
class Config(random_labels.Config):
    # CPU defaults: digits, a small Conv-4, SGD with momentum (so the optimizer state a child
    # inherits is more than nothing)
    width: int = option(8, "Conv-4 width c (channels c, 2c, 4c, 8c)")
    epochs: int = option(10, "number of training epochs (parent and children)")
    lr: float = option(0.05, "constant learning rate")
    momentum: float = option(0.9, "SGD momentum", at_least=0.0, below=1.0)
    spawn_epochs: tuple[int, ...] = option(
        (0, 1, 2, 5),
        "epochs k of the parent from which children are spawned (0: its initialization)",
        at_least=0,
    )
    children: int = option(2, "children per spawn epoch, each with its own data order", at_least=2)
    points: int = option(11, "evenly spaced alpha in [0, 1] evaluated on each path", at_least=2)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.spawn_epochs:
            raise GenlabError("--spawn-epochs: give at least one epoch")
        for k in self.spawn_epochs:
            if k >= self.epochs:
                raise GenlabError(
                    f"--spawn-epochs {k}: must be below --epochs {self.epochs} (children train "
                    "on from it)"
                )
        if len(set(self.spawn_epochs)) != len(self.spawn_epochs):
            raise GenlabError(f"--spawn-epochs {self.spawn_epochs}: an epoch is given twice")
        if self.stop_at_train_acc is not None:
            raise GenlabError(
                f"--stop-at-train-acc {self.stop_at_train_acc}: not with connectivity (every "
                "child trains to --epochs, so pairs compare networks trained as long)"
            )

    def fit_spec(self, augment: str = "none") -> FitSpec:
        """The parent's: it keeps the checkpoints (weights and optimizer state) of the spawn
        epochs as well as those of --keep-checkpoints."""
        spec = super().fit_spec(augment)
        return replace(spec, keep=tuple(sorted({*spec.keep, *self.spawn_epochs})))


PRESETS: dict[str, dict[str, Any]] = {
    # CIFAR-10 at width 64 (1,558,026 parameters), SGD with momentum, a constant learning rate;
    # 3 children (3 pairs: an interval) at 6 spawn epochs. Cost: see the module docstring.
    "report": {
        "dataset": "cifar10",
        "width": 64,
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "batch_size": 64,
        "epochs": 40,
        "spawn_epochs": (0, 1, 2, 5, 10, 20),
        "children": 3,
    },
}
RUN_ID_KEYS = ("dataset", "width", "label_noise", "epochs", "seed")


# a run's data, labels and views: random labels' (with run None nothing is written), plus the
# flipped test set
setup = random_labels.setup_flipped
_Setup = random_labels.FlippedSetup


def child_seed(seed: int, k: int, i: int) -> int:
    """The data-order seed of child i spawned at epoch k of the parent with ``seed``."""
    return seed_from(seed, SALT, k, i)


def child_name(k: int, i: int) -> str:
    return f"k{k}-c{i}"


def alphas(points: int) -> list[float]:
    """``points`` evenly spaced values in [0, 1], exactly 0.0 first and 1.0 last."""
    return [i / (points - 1) for i in range(points)]


def run(members: list[tuple[Config, Run]], rt: Runtime) -> list[dict[str, Any]]:
    """Train the parents together (where that pays), then per parent: its children (one fit),
    the paths between them, summary.json. A member that fails does not stop the others."""
    shared = SharedData()
    ready: list[tuple[Config, Run, _Setup]] = []
    failures: list[tuple[Path, GenlabError]] = []
    for cfg, r in members:
        try:
            ready.append((cfg, r, setup(cfg, r, rt, shared)))
        except GenlabError as e:
            failures.append((r.path, e))
    fit([s.member for _, _, s in ready], rt)
    summaries = []
    for cfg, r, s in ready:
        if s.member.error is not None:
            failures.append((r.path, s.member.error))
            continue
        try:
            summaries.append(_finish(cfg, r, s, rt, shared))
        except GenlabError as e:
            failures.append((r.path, e))
    if failures:
        raise MembersFailed(failures, len(members))
    return summaries


# -- children -------------------------------------------------------------------------------------
def spawn(parent: Run, path: Path, k: int) -> Run:
    """The child folder ``path`` started from the parent's epoch k: metrics.jsonl holds the
    parent's records 1..k (written first), then checkpoint.pt is the parent's kept epoch-k
    checkpoint (weights and optimizer state), so ``fit`` resumes it at epoch k. A folder whose
    checkpoint.pt exists was spawned already (and maybe trained on) and is left as it is."""
    child = Run(Path(path), "resume")
    if child.file(CHECKPOINT).exists():
        remove_stale(child.path)
        remove_stale(child.path / KEPT)
        return child
    parent.load_kept(k)  # a GenlabError naming the flag if it was not kept; Damaged if broken
    records = [r for r in parent.metrics() if r["epoch"] <= k]
    if [r["epoch"] for r in records] != list(range(1, k + 1)):
        raise GenlabError(f"{parent.file(METRICS)}: does not hold the records 1..{k} to spawn from")
    try:
        child.path.mkdir(parents=True, exist_ok=True)
        child.file(METRICS).unlink(missing_ok=True)  # left by a kill before the checkpoint
    except OSError as e:
        raise write_error(child.path, e) from None
    child.extend_metrics(records)
    _link_or_copy(parent.file(f"{KEPT}/{kept_name(k)}"), child.file(CHECKPOINT))
    return child


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link of ``source`` (checkpoints are replaced, never written in
    place, so the two stay independent), else an atomic copy."""
    link = target.with_name(f"{temp_prefix(target)}link.tmp")
    try:
        link.unlink(missing_ok=True)
        os.link(source, link)
        os.replace(link, target)
    except OSError:
        data = source.read_bytes()
        atomic_write(target, lambda f: f.write(data))


def child_member(
    cfg: Config, parent: _Setup, child: Run | None, seed: int, rt: Runtime, shared: SharedData
) -> Member:
    """A child: a model and optimizer like the parent's (``fit`` loads the spawned state into
    them), the parent's data, labels and views, its own data-order seed."""
    prep = prepare(cfg, rt, shared)
    p = parent.member
    spec = FitSpec(cfg.epochs, cfg.batch_size, seed, p.spec.augment)
    return Member(
        child, prep.model, prep.optimizer, p.train, p.views, p.normalize, p.num_classes, spec
    )


# -- the path between two networks ----------------------------------------------------------------
def interpolate(
    first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """θ(α) = (1 − α)θ₁ + αθ₂ for every floating-point tensor of two state dicts (others, such
    as BatchNorm's batch counter, are the first's). α = 0 and α = 1 return the ends' own tensors,
    so they are the ends exactly (not up to rounding); between them ``torch.lerp``."""
    if alpha == 0:
        return dict(first)
    if alpha == 1:
        return dict(second)
    return {
        key: torch.lerp(value, second[key], alpha) if value.is_floating_point() else value
        for key, value in first.items()
    }


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def measure_at(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    train: View,
    views: Mapping[str, View],
    member: Member,
    precision: str,
) -> dict[str, dict[str, float]]:
    """Load ``state`` into ``model``, recompute every BatchNorm's running statistics on the
    training images ``train.images``, and return loss and accuracy on each of ``views``."""
    model.load_state_dict(state)
    recompute_batchnorm(model, train.images, member.normalize, batchnorms(model), BATCHNORM_BATCH)
    found = evaluate_views(model, views, member.normalize, member.num_classes, precision)
    return {v: {"loss": r["loss"], "acc": r["acc"]} for v, r in found.items()}  # type: ignore[misc]


def barrier(values: Sequence[float]) -> float:
    """The largest rise of ``values`` (errors or losses along a path, ends first and last) above
    the mean of its two ends: 0 (exactly) on a flat path, and >= half the gap between the ends."""
    ends = (values[0] + values[-1]) / 2
    return max(v - ends for v in values)


def path(
    model: nn.Module,
    first: Mapping[str, torch.Tensor],
    second: Mapping[str, torch.Tensor],
    points: Sequence[float],
    member: Member,
    precision: str,
) -> dict[str, Any]:
    """Per view, loss, accuracy and error at each α of ``points`` along the line from ``first``
    to ``second``; the error and loss barriers per view."""
    views = {"train": member.train, **{v: member.views[v] for v in PATH_VIEWS if v != "train"}}
    found = [
        measure_at(model, interpolate(first, second, a), member.train, views, member, precision)
        for a in points
    ]
    curves = {
        v: {
            "loss": [f[v]["loss"] for f in found],
            "acc": [f[v]["acc"] for f in found],
            "error": [1.0 - f[v]["acc"] for f in found],
        }
        for v in views
    }
    return {
        "path": curves,
        "barrier": {v: barrier(c["error"]) for v, c in curves.items()},
        "loss_barrier": {v: barrier(c["loss"]) for v, c in curves.items()},
    }


# -- one parent, end to end -----------------------------------------------------------------------
def _finish(cfg: Config, parent: Run, s: _Setup, rt: Runtime, shared: SharedData) -> dict:
    """Children (spawned, trained in one fit), the paths between each pair, summary.json."""
    kids: dict[tuple[int, int], Member] = {}
    for k in sorted(cfg.spawn_epochs):
        for i in range(cfg.children):
            child = spawn(parent, parent.file(f"{CHILDREN}/{child_name(k, i)}"), k)
            kids[k, i] = child_member(cfg, s, child, child_seed(cfg.seed, k, i), rt, shared)
    rt.log(
        f"{parent.path.name}: {len(kids)} children at epochs "
        f"{' '.join(map(str, sorted(cfg.spawn_epochs)))}"
    )
    fit(list(kids.values()), rt)
    failed = [m for m in kids.values() if m.error is not None]
    if failed:
        raise failed[0].error  # type: ignore[misc]

    work = prepare(cfg, rt, shared).model
    points = alphas(cfg.points)
    spawns = []
    for k in sorted(cfg.spawn_epochs):
        states = [
            {n: t.detach().clone() for n, t in kids[k, i].model.state_dict().items()}
            for i in range(cfg.children)
        ]
        pairs = []
        for i, j in itertools.combinations(range(cfg.children), 2):
            rt.log(f"{parent.path.name}: k={k}, children {i} and {j}: {len(points)} points")
            found = path(work, states[i], states[j], points, s.member, rt.precision)
            pairs.append({"children": [i, j], **found})
        spawns.append(
            {
                "epoch": k,
                "children": [child_name(k, i) for i in range(cfg.children)],
                "seeds": [kids[k, i].spec.seed for i in range(cfg.children)],
                "pairs": pairs,
            }
        )
    parent.write_json(
        INTERPOLATION,
        {
            "alphas": points,
            "views": list(PATH_VIEWS),
            "batchnorm": (
                "running statistics of every BatchNorm recomputed at each alpha on the "
                f"{len(s.member.train.images):,} training images in batches of {BATCHNORM_BATCH}"
            ),
            "barrier": "max over alpha of error(alpha) - (error(0) + error(1)) / 2",
            "spawn_epochs": spawns,
        },
    )
    summary = _summary(cfg, s, spawns, kids)
    for m in kids.values():  # a finished run is never rolled back
        assert m.run is not None
        m.run.file(PREVIOUS).unlink(missing_ok=True)
    parent.write_summary(summary)
    return summary


def _summary(
    cfg: Config, s: _Setup, spawns: list[dict[str, Any]], kids: dict[tuple[int, int], Member]
) -> dict[str, Any]:
    inner = s.inner
    history = s.member.history
    fitted = lambda r: random_labels.fitted_acc(r, inner.num_noisy, inner.num_clean)  # noqa: E731
    by_k: dict[str, dict[str, Any]] = {"barrier": {}, "loss_barrier": {}}
    for what in by_k:
        by_k[what] = {
            v: {f"k{e['epoch']}": interval([p[what][v] for p in e["pairs"]]) for e in spawns}
            for v in PATH_VIEWS
        }
    first, last = f"k{spawns[0]['epoch']}", f"k{spawns[-1]['epoch']}"
    children_acc = {}
    for e in spawns:
        finals = [kids[e["epoch"], i].history[-1] for i in range(cfg.children)]
        children_acc[f"k{e['epoch']}"] = {
            "train": interval([fitted(r) for r in finals]),
            "test": interval([r["test_acc"] for r in finals]),
            "test_vflip": interval([r["test_vflip_acc"] for r in finals]),
        }
    return {
        "params": count_params(s.prep.model),
        "regime": inner.regime,
        **summarize_views(history, list(RUN_VIEWS), s.prep.splits.train.classes),
        "final_train_fitted_acc": fitted(history[-1]),
        "label_noise": cfg.label_noise,
        "label_noise_mode": cfg.label_noise_mode,
        "randomize": cfg.randomize,
        "fraction_changed": inner.noise["train"]["fraction_changed"],
        "spawn_epochs": [e["epoch"] for e in spawns],
        "children": cfg.children,
        "points": cfg.points,
        "pairs": len(spawns[0]["pairs"]),
        **by_k,
        # the barrier's mean over pairs at the first and the last spawn epoch, per view
        "barrier_first": {v: by_k["barrier"][v][first]["mean"] for v in PATH_VIEWS},
        "barrier_last": {v: by_k["barrier"][v][last]["mean"] for v in PATH_VIEWS},
        "children_final_acc": children_acc,
        "children_seconds": sum(
            r["seconds"] + r["eval_seconds"]
            for (k, _), m in kids.items()
            for r in m.history
            if r["epoch"] > k
        ),
    }
