"""``genlab analyze criticality``: which layers of a trained Conv-4 matter?

Zhang, Bengio & Singer (2019, "Are all layers created equal?") call a layer *ambient* when
resetting it to its weights at initialization costs the trained network little, and *critical*
when it destroys it. For each layer of each run (block i: its conv with its BatchNorm's scale
and shift; and the final linear layer), with every other layer kept as trained:

- re-initialization: the layer's weights at each kept epoch k (``--keep-checkpoints``; epoch 0
  is the initialization, kept by default) read from ``checkpoints/epoch-k.pt``, never drawn
  again: the criticality of the layer over training;
- re-randomization: fresh random weights, drawn by the layer's own initializer from a stream
  of the run's seed (``seeding.seed_from(seed, RERANDOMIZE, layer)``), never from the global
  generator.

After a change, the running statistics of the changed block's BatchNorm and of every later one
are recomputed on the run's training images (``recompute_batchnorm``): the statistics kept from
training describe activations those layers no longer receive, and evaluated with them a network
would be judged by that mismatch rather than by its weights. BatchNorms before the changed
layer keep theirs (nothing they see changed); changing only the linear layer recomputes none.
Then the accuracy on the training images with the labels the run was fitted to (``train``) and
on every view the run was evaluated on (``test``; ``test_vflip`` for the flip study; the
random-labels views) is measured. With no layer changed the numbers are the run's own final
ones, exactly.

Across runs alike but for the seed: the mean and 95% interval over seeds of every number, e.g.
the test accuracy after re-initializing each layer to epoch 0 at p = 0 and at p = 1.

    genlab sweep random-labels --dataset digits --label-noise 0 1 --seeds 3 --keep-checkpoints 0 1 2 5
    genlab analyze criticality runs/random-labels/sweep-<hash>

Cost: per run, layers x (kept epochs + 1) changes, each one pass over the training images for
the statistics and one evaluation of every view. Measured: 12 digits runs (400 training and 450
test images, widths 8 and 32, 6 sources) in 230 s on 2 CPU cores, another job sharing them;
benchmarks/bench_analysis.py times 18 width-16 CIFAR-10 runs, where the 10,000 test images of
every change dominate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from genlab.aggregate import interval
from genlab.analysis.trained import Group, Trained
from genlab.config import option
from genlab.errors import GenlabError
from genlab.models.conv4 import Conv4
from genlab.models.equivariant import GroupAverage
from genlab.seeding import init, seed_from
from genlab.training import evaluate_views, recompute_batchnorm
from genlab.training.runtime import Runtime

RERANDOMIZE = 104729  # keeps the re-randomization's seeds apart from every other stream
RANDOM = "random"  # the source name of re-randomization


@dataclass(frozen=True)
class Config:
    batch_size: int = option(
        256, "training images per batch when BatchNorm statistics are recomputed", at_least=1
    )


@dataclass(frozen=True)
class Layer:
    """A layer of Conv-4 as criticality changes it: its modules (a conv and its BatchNorm, or
    the linear layer) and the BatchNorms whose statistics a change of it invalidates."""

    name: str
    modules: tuple[nn.Module, ...]
    after: tuple[nn.modules.batchnorm._BatchNorm, ...]


def layers(model: nn.Module) -> list[Layer]:
    """block1..block4 (conv + BatchNorm) and linear, of a Conv-4 (or one averaged over views)."""
    inner = model.model if isinstance(model, GroupAverage) else model
    if type(inner) is not Conv4:
        raise GenlabError(
            f"criticality re-initializes the layers of Conv-4; this run's model is "
            f"{type(inner).__name__}"
        )
    convs = [m for m in inner.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in inner.features if isinstance(m, nn.BatchNorm2d)]
    found = [
        Layer(f"block{i + 1}", (conv, norm), tuple(norms[i:]))
        for i, (conv, norm) in enumerate(zip(convs, norms, strict=True))
    ]
    return [*found, Layer("linear", (inner.classifier,), ())]


def set_layers(
    model: nn.Module, chosen: list[Layer], source: Mapping[str, torch.Tensor] | None, seed: int
) -> None:
    """Replace the parameters of ``chosen`` layers of ``model``: with those of the state dict
    ``source`` (a checkpoint's model), or with None fresh draws of each layer's initializer
    from the seed stream (seed, RERANDOMIZE, layer index). BatchNorm statistics are left to
    the caller."""
    names = {id(m): name for name, m in model.named_modules()}
    order = {layer.name: i for i, layer in enumerate(layers(model))}
    with torch.no_grad():
        for layer in chosen:
            for module in layer.modules:
                if source is None:
                    with init(seed_from(seed, RERANDOMIZE, order[layer.name])):
                        module.reset_parameters()
                    continue
                prefix = names[id(module)]
                for key, param in module.named_parameters(recurse=False):
                    param.copy_(source[f"{prefix}.{key}"])


def criticality_of(t: Trained, sources: list[int | str], cfg: Config, rt: Runtime) -> dict:
    """One run's table: per layer and source, every view's accuracy and loss."""
    member = t.setup.member
    model = member.model
    views = {"train": member.train, **member.views}
    trained_state = {k: v.clone() for k, v in model.state_dict().items()}

    def measure() -> dict[str, dict[str, float | None]]:
        found = evaluate_views(model, views, member.normalize, member.num_classes, rt.precision)
        return {v: {"acc": r["acc"], "loss": r["loss"]} for v, r in found.items()}  # type: ignore[misc]

    table: dict[str, Any] = {"trained": measure(), "changed": {}}
    # the reference the changed networks compare with: no layer changed, every BatchNorm's
    # statistics recomputed as they are after a change of block1 (after a short run, running
    # statistics averaged with momentum 0.1 may lag the weights, and recomputing alone moves
    # the accuracy)
    every = layers(model)[0].after  # block1 feeds every BatchNorm
    recompute_batchnorm(model, member.train.images, member.normalize, every, cfg.batch_size)
    table["recomputed"] = measure()
    model.load_state_dict(trained_state)
    states = {k: t.run.load_kept(k)["model"] for k in sources if k != RANDOM}
    for layer in layers(model):
        row = {}
        for src in sources:
            set_layers(model, [layer], None if src == RANDOM else states[src], t.seed)
            if layer.after:
                recompute_batchnorm(
                    model, member.train.images, member.normalize, layer.after, cfg.batch_size
                )
            row[_source_name(src)] = measure()
            model.load_state_dict(trained_state)
        table["changed"][layer.name] = row
    return table


def _source_name(src: int | str) -> str:
    return RANDOM if src == RANDOM else f"epoch {src}"


def check(trained: list[Trained]) -> None:
    """Every run is a Conv-4, before anything is measured."""
    for t in trained:
        layers(t.model)


def measure(trained: list[Trained], groups: list[Group], cfg: Config, rt: Runtime) -> dict:
    """criticality.json's content: per run its table, per group the intervals over seeds."""
    started = time.perf_counter()
    runs = []
    for i, t in enumerate(trained):
        kept = [k for k in t.run.kept_epochs() if k < t.epoch]
        if 0 not in kept:
            rt.log(f"{t.ref.path.name}: its initial weights were not kept (--keep-checkpoints 0)")
        rt.log(f"[{i + 1}/{len(trained)}] {t.ref.path.name}: re-init to epochs {kept}, random")
        table = criticality_of(t, [*kept, RANDOM], cfg, rt)
        runs.append(
            {
                **t.record(),
                "sources": [_source_name(k) for k in [*kept, RANDOM]],
                **table,
            }
        )
    return {
        "runs": runs,
        "groups": [g.record() for g in groups],
        "layers": [layer.name for layer in layers(trained[0].model)],
        "batchnorm": (
            "running statistics of the changed block's BatchNorm and every later one recomputed "
            f"on the training images in batches of {cfg.batch_size}; earlier ones as trained"
        ),
        "by_group": _by_group(runs, groups),
        "seconds": time.perf_counter() - started,
    }


def _by_group(runs: list[dict[str, Any]], groups: list[Group]) -> list[dict[str, Any]]:
    """Per group, layer, source and view: the accuracy's mean and 95% interval over seeds
    (sources every run of the group has); the trained networks' as layer None, source None
    (their own statistics) and source "recomputed" (every BatchNorm recomputed)."""
    rows = []
    for g, group in enumerate(groups):
        members = [runs[i] for i in group.runs]
        shared = [s for s in members[0]["sources"] if all(s in m["sources"] for m in members)]
        for view in members[0]["trained"]:
            values = [m["trained"][view]["acc"] for m in members]
            rows.append(_row(g, None, None, view, values))
            values = [m["recomputed"][view]["acc"] for m in members]
            rows.append(_row(g, None, "recomputed", view, values))
            for layer in members[0]["changed"]:
                for source in shared:
                    values = [m["changed"][layer][source][view]["acc"] for m in members]
                    rows.append(_row(g, layer, source, view, values))
    return rows


def _row(g: int, layer: str | None, source: str | None, view: str, values: list) -> dict:
    kept = [v for v in values if v is not None]
    found = interval(kept) if kept else {"n": 0, "mean": None, "std": None, "ci95": None}
    return {"group": g, "layer": layer, "source": source, "view": view, **found}
