"""The transformation suite: a trained run evaluated on named views of its test split.

Each view is one tensor operation on the (N, H, W, C) test images (``genlab.data.transforms``):
identity, vflip, hflip, rot90, rot180, rot270, transpose, antitranspose. A robustness run
evaluates ``--views all`` after its last epoch; ``genlab eval RUN --views ...`` evaluates any
finished or interrupted image run from its checkpoint and adds the views to its ``views.json``
(existing views are replaced by the new numbers, others kept). It also measures invariance
inside the network (``invariance.json``: per layer, cosine and linear CKA under vflip).

    genlab eval runs/robustness/<run id> --views all

Cost: one pass over the test set per view (8 x 10,000 CIFAR-10 images: seconds at width 16 on
a 2-core CPU) plus two passes over 512 images for the per-layer measures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.analysis.invariance import layer_invariance
from genlab.config import flag, option
from genlab.data import ImageDataset, load_dataset
from genlab.data.transforms import VIEWS, parse_views, view
from genlab.errors import GenlabError
from genlab.fileio import read_json
from genlab.models import apply_invariance, make_model
from genlab.runs import (
    CHECKPOINT,
    CONFIG,
    INVARIANCE,
    VIEW_RESULTS,
    Run,
    check_files,
    read_dataset,
)
from genlab.seeding import fixed
from genlab.training import Normalizer, evaluate, resolve_device
from genlab.training.engine import LogFn
from genlab.training.loop import load_state

INVARIANCE_IMAGES = 512  # test images for the per-layer measures (CKA needs an N x N Gram)
INVARIANCE_VIEW = "vflip"


def views_option() -> Any:
    """The ``views`` field a study config adds to evaluate views after its last epoch."""
    return option(
        ("all",),
        "views of the test set to evaluate after training: all, none, or names "
        "(identity vflip hflip rot90 rot180 rot270 transpose antitranspose)",
        identity=False,
    )


def evaluate_on_views(
    model: nn.Module,
    test: ImageDataset,
    normalize: Normalizer,
    names: tuple[str, ...],
    precision: str = "fp32",
) -> dict[str, dict[str, Any]]:
    """{view: {"acc", "loss", "per_class_acc": {class: acc}}} on each view of ``test``."""
    out = {}
    for name in names:
        x = view(name, test.images)
        m = evaluate(model, x, test.labels, normalize, test.num_classes, precision=precision)
        per_class = dict(zip(test.classes, m["per_class_acc"], strict=True))  # type: ignore[arg-type]
        out[name] = {"acc": m["acc"], "loss": m["loss"], "per_class_acc": per_class}
    return out


def measure_invariance(
    model: nn.Module, test: ImageDataset, normalize: Normalizer
) -> dict[str, Any]:
    """Per-layer equivariance and invariance under ``INVARIANCE_VIEW`` on a test subset that is
    the same for every run (``seeding.fixed``)."""
    n = min(INVARIANCE_IMAGES, len(test))
    index = torch.randperm(len(test), generator=fixed("invariance_probe"))[:n].sort()
    x = normalize(test.images[index.values].to(normalize.scale.device)).contiguous()
    return {
        "view": INVARIANCE_VIEW,
        "num_images": n,
        "layers": layer_invariance(model, x, INVARIANCE_VIEW),
    }


def record(run: Run, results: dict[str, dict[str, Any]], epoch: int) -> dict[str, Any]:
    """Add ``results`` to the run's views.json (a view evaluated again is replaced); each view
    records the epoch of the weights it was measured with, "epoch" the latest."""
    target = run.file(VIEW_RESULTS)
    current = read_json(target) if target.exists() else {"split": "test", "views": {}}
    current["views"].update({name: {**r, "epoch": epoch} for name, r in results.items()})
    current["epoch"] = epoch
    run.write_json(VIEW_RESULTS, current)
    return current


def load_trained(
    run_dir: Path, *, data_dir: str | None = None, device: str = "auto"
) -> tuple[dict[str, Any], nn.Module, ImageDataset, Normalizer, int]:
    """The run's config, its model with the checkpoint's weights, its test split and
    normalization, and the checkpoint's epoch."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise GenlabError(f"{run_dir}: not a run folder (no {CONFIG})")
    check_files(run_dir)
    cfg = read_json(run_dir / CONFIG)["config"]
    if "model" not in cfg or "width" not in cfg:
        raise GenlabError(f"{run_dir}: not an image-model run (its config names no model)")
    changed = [k for k in ("corrupt_test", "test_subset") if cfg.get(k)]
    changed += ["randomize"] if cfg.get("randomize", "labels") != "labels" else []
    if changed:  # its own test set was not the clean, full, unrandomized split eval would load
        flags = ", ".join(flag(k) for k in changed)
        raise GenlabError(f"{run_dir}: trained with {flags}; its views would not be its test set")
    state = Run(run_dir, "resume").load_checkpoint()
    if state is None or state["epoch"] == 0:
        raise GenlabError(f"{run_dir}: no trained epoch yet (train at least one epoch first)")
    stats = read_dataset(run_dir)
    dev = resolve_device(device)
    splits = load_dataset(cfg["dataset"], data_dir or cfg.get("data_dir"), quiet=True)
    if list(splits.test.classes) != stats["classes"]:
        raise GenlabError(f"{run_dir}: the dataset's classes differ from those it trained on")
    model = make_model(
        cfg["model"], cfg["width"], cfg["kernel"], splits.test.num_classes, splits.test.shape[-1]
    )
    model = apply_invariance(model, cfg.get("invariance", "none"))
    load_state(model, None, state, run_dir / CHECKPOINT)
    model = model.to(dev, memory_format=torch.channels_last).eval()
    norm = stats["normalization"]
    normalize = Normalizer.from_stats(norm["mean"], norm["std"], dev)
    return cfg, model, splits.test, normalize, int(state["epoch"])


def evaluate_run(
    run_dir: Path,
    names: tuple[str, ...] | list[str] = ("all",),
    *,
    data_dir: str | None = None,
    device: str = "auto",
    log: LogFn = print,
) -> dict[str, Any]:
    """``genlab eval``: the views of a run's test split, added to views.json; invariance.json."""
    wanted = parse_views(names)
    _, model, test, normalize, epoch = load_trained(run_dir, data_dir=data_dir, device=device)
    run = Run(Path(run_dir), "resume")
    results = record(run, evaluate_on_views(model, test, normalize, wanted), epoch)
    run.write_json(INVARIANCE, measure_invariance(model, test, normalize))
    log(format_table(results, list(test.classes)))
    return results


def format_table(results: dict[str, Any], classes: list[str]) -> str:
    """Views x classes accuracy as a plain-text table (the heat map's numbers)."""
    short = [c[:6] for c in classes]
    head = f"{'view':<14}{'all':>7}" + "".join(f"{c:>8}" for c in short)
    lines = [head]
    for name in [v for v in VIEWS if v in results["views"]]:
        r = results["views"][name]
        cells = "".join(f"{r['per_class_acc'][c]:>8.3f}" for c in classes)
        lines.append(f"{name:<14}{r['acc']:>7.3f}{cells}")
    return "\n".join(lines)
