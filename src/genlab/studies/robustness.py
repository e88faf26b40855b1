"""Study 1 — flip robustness: does a CNN trained on upright images recognise them upside down?

Conv-4 is trained on the training split and, after every epoch, tested on the test set and on
the same test set flipped vertically (row i becomes row H-1-i). Expect the flipped accuracy to
sit far below the upright one, class by class very unevenly (CIFAR-10, width 16, 4 epochs:
airplane keeps 84% of its accuracy upside down, horse 3%), and the gap to close when training sees flipped images
(``--augment double``: the report's 2N-image set; ``random``: each image flipped with
probability 1/2 each time it is drawn).

    genlab run robustness --preset report            # the report: CIFAR-10, width 64, 80 epochs
    genlab run robustness --dataset digits --epochs 20 --augment double

Cost: the report's preset is 80 epochs of 50,000 (or 100,000 with ``double``) images at width 64
— hours on a 2-core CPU, minutes on one GPU. The digits default takes about 30 s on 2 cores.

Built to be invariant instead of trained to be: ``--model conv4-vflip`` (group convolutions over
{identity, vflip}, exactly invariant), ``--model conv4-d4`` (all 8 symmetries of the square), or
``--invariance average`` (any model's logits averaged over the image and its flip). After the last
epoch a run is evaluated on ``--views`` (default all 8 symmetries: views.json) and measured layer
by layer (invariance.json). ``--compare`` trains, under one budget and seed, the baseline,
``double``, ``random``, and conv4-vflip at the same width and at the width matching Conv-4's
parameter count, then writes one comparison:

    genlab run robustness --compare --dataset cifar10 --train-subset 5000 --width 8 --epochs 5
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from genlab.config import option, with_overrides
from genlab.data import ImageDataset
from genlab.data.transforms import double_with_vflip, parse_views, vflip
from genlab.errors import GenlabError
from genlab.models import INVARIANCES, apply_invariance, count_params, matched_width
from genlab.runs import INVARIANCE, Run
from genlab.studies import views as view_suite
from genlab.studies.common import (
    Prepared,
    SharedData,
    TrainConfig,
    on_device,
    prepare,
    record_dataset,
    summarize_views,
    train_members,
)
from genlab.training import Member, View
from genlab.training.runtime import Runtime

AUGMENTS = ("none", "double", "random")
VIEWS = ("test", "test_vflip")


@dataclass(frozen=True)
class Config(TrainConfig):
    augment: str = option(
        "none",
        "none; double: every image plus its flipped copy; random: flip w.p. 1/2",
        choices=AUGMENTS,
    )
    invariance: str = option(
        "none",
        "average: average the logits over the image and its flip (invariant, 2x the cost)",
        choices=INVARIANCES,
    )
    views: tuple[str, ...] = view_suite.views_option()

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_views(self.views)


PRESETS: dict[str, dict[str, Any]] = {
    # The original report: CIFAR-10, width 64, kernel 3, batch 64, SGD lr 0.1 constant, 80 epochs.
    "report": {
        "dataset": "cifar10",
        "width": 64,
        "kernel": 3,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "epochs": 80,
        "augment": "none",
    },
}
RUN_ID_KEYS = ("dataset", "model", "width", "augment", "epochs", "seed")


def run(members: list[tuple[Config, Run]], rt: Runtime) -> list[dict[str, Any]]:
    """Train every member (together where that pays), then evaluate and summarize each."""
    return train_members(members, rt, setup, _finish)


@dataclass
class _Setup:
    member: Member
    prep: Prepared


def setup(cfg: Config, run: Run | None, rt: Runtime, shared: SharedData) -> _Setup:
    prep = prepare(cfg, rt, shared)
    model = apply_invariance(prep.model, cfg.invariance)  # shares prep.optimizer's parameters
    key = (cfg.dataset, cfg.data_dir, cfg.train_subset)
    if cfg.augment == "double":
        doubled = shared.get(("double", *key), lambda: _doubled(prep.train))
        train = on_device(shared, ("double", *key), doubled, rt)
    else:
        train = on_device(shared, ("train", *key), prep.train, rt)
    test = on_device(shared, ("test", *key[:2]), prep.splits.test, rt)
    flipped = shared.get(("test_vflip", *key[:2], str(rt.device)), lambda: vflip(test.images))
    views = {"test": test, "test_vflip": View(flipped, test.labels)}
    record_dataset(run, prep, num_train_seen_per_epoch=len(train.labels))
    augment = "random" if cfg.augment == "random" else "none"
    spec = cfg.fit_spec(augment)
    member = Member(
        run, model, prep.optimizer, train, views, prep.normalize, prep.train.num_classes, spec
    )
    return _Setup(member, prep)


def _doubled(train: ImageDataset) -> ImageDataset:
    images, labels = double_with_vflip(train.images, train.labels)
    return replace(train, images=images, labels=labels)


def _finish(cfg: Config, run: Run, setup: _Setup, rt: Runtime) -> dict[str, Any]:
    """summary.json, views.json and invariance.json of a trained member."""
    prep, model, history = setup.prep, setup.member.model, setup.member.history
    summary = {
        "params": count_params(model),
        **summarize_views(history, list(VIEWS), prep.splits.train.classes),
    }
    summary["flip_gap"] = summary["final_acc"]["test"] - summary["final_acc"]["test_vflip"]
    names = parse_views(cfg.views)
    if names:
        results = view_suite.evaluate_on_views(
            model, prep.splits.test, prep.normalize, names, rt.precision
        )
        view_suite.record(run, results, history[-1]["epoch"])
        summary["views_acc"] = {name: r["acc"] for name, r in results.items()}
    run.write_json(
        INVARIANCE, view_suite.measure_invariance(model, prep.splits.test, prep.normalize)
    )
    run.write_summary(summary)
    return summary


COMPARE = (  # (name, overrides): one budget and seed, the width from the flags
    ("baseline", {"model": "conv4", "augment": "none"}),
    ("double", {"model": "conv4", "augment": "double"}),
    ("random", {"model": "conv4", "augment": "random"}),
    ("vflip", {"model": "conv4-vflip", "augment": "none"}),
    ("vflip-matched", {"model": "conv4-vflip", "augment": "none"}),
)


def compare(flags: dict[str, Any]) -> list[Config]:
    """``--compare``: baseline, double, random, conv4-vflip at the same width and at the width
    whose parameter count is closest to Conv-4's (counted for 10 classes and 3 channels)."""
    for key in ("model", "augment", "invariance"):
        if key in flags:
            raise GenlabError(
                f"the comparison (--compare, --name compare) sets --{key} itself; drop --{key}"
            )
    base = with_overrides(Config(), flags)
    cfgs = []
    for name, overrides in COMPARE:
        if name == "vflip-matched":
            overrides = {
                **overrides,
                "width": matched_width("conv4-vflip", base.width, base.kernel),
            }
        cfgs.append(with_overrides(base, overrides))
    return cfgs
