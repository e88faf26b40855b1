"""Study 2 — memorization of random labels (Zhang et al. 2017): does fitting the training set
say anything about the test set?

Each training label is, with probability p (``--label-noise``), replaced by a uniformly drawn
class (``--label-noise-mode incorrect``: only other classes); the draw is fixed for the whole run
and saved in ``label_noise.json``. ``--randomize`` replaces the images instead (one pixel
permutation for all, one per image, or Gaussian noise). Expect an over-parametrized Conv-4
(``--preset over``, width 64) to drive the fitted-label train accuracy to 1 at every p while test
accuracy falls to chance as p -> 1, taking longer to fit the more labels are random; an
under-parametrized one (``--preset under``, width 4: 6,666 parameters for CIFAR-10's 50,000
training labels) cannot fit random labels. The preset is under-parametrized only while the
training set has more labels than the model has parameters: with ``--train-subset`` 2,000 it is
over-parametrized (issue #14 measured 0.89 of 2,000 random CIFAR-10 labels fitted in 300 epochs).
Every run records its regime (parameters against training labels, ``regime`` in summary.json)
and warns when it contradicts the name of the preset whose width it has.

Per epoch: train loss/accuracy on the fitted labels (as trained, running over the epoch), and in
eval mode: ``train_true`` (train images, true labels), ``train_noisy`` (the images whose label
was changed, scored on the label they are fitted to), ``train_clean`` (the unchanged ones) and
``test`` (clean labels unless ``--corrupt-test``).

    genlab run random-labels --preset over --dataset cifar10 --label-noise 1 --stop-at-train-acc 1
    genlab run random-labels --grid --dataset cifar10     # p in {0, .5, 1} x {under, over}
    genlab run random-labels --dataset digits --label-noise 0.5 --epochs 30

Cost: the report's grid is 6 runs of 800-1,000 epochs on 50,000 images: days on a 2-core CPU,
hours on one GPU. 2,000 CIFAR-10 images at width 16 take a few seconds per epoch on 2 cores.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch

from genlab.config import from_dict, option, to_dict
from genlab.data.labels import NOISE_MODES, check_noise, corrupt_labels
from genlab.data.randomize import RANDOMIZATIONS, randomize_images
from genlab.errors import GenlabError
from genlab.models import count_params
from genlab.runs import LABEL_NOISE, Run
from genlab.seeding import fixed, stream
from genlab.studies.common import (
    Prepared,
    SharedData,
    TrainConfig,
    add_flipped_test,
    on_device,
    prepare,
    record_dataset,
    summarize_views,
    train_members,
)
from genlab.training import Member, View
from genlab.training.runtime import Runtime

VIEWS = ("test", "train_true", "train_noisy", "train_clean")


@dataclass(frozen=True)
class Config(TrainConfig):
    label_noise: float = option(
        0.0, "probability p that a training label is replaced by a random class"
    )
    label_noise_mode: str = option(
        "uniform",
        "uniform: drawn from all classes (may equal the true one); incorrect: from the others",
        choices=NOISE_MODES,
    )
    randomize: str = option(
        "labels",
        "labels: images kept; shuffled-pixels / random-pixels / gaussian: Zhang et al.'s image randomizations",
        choices=RANDOMIZATIONS,
    )
    corrupt_test: bool = option(
        False, "corrupt the test labels the same way (default: test labels stay clean)"
    )
    stop_at_train_acc: float | None = option(
        None, "stop when the fitted-label train accuracy (eval mode) reaches this"
    )
    test_subset: int | None = option(
        None, "evaluate on this many test images (a fixed random subset); default all"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_noise(self.label_noise, self.label_noise_mode)
        if self.randomize not in RANDOMIZATIONS:
            raise GenlabError(
                f"--randomize {self.randomize!r}: not one of {', '.join(RANDOMIZATIONS)}"
            )
        if self.stop_at_train_acc is not None and not 0 < self.stop_at_train_acc <= 1:
            raise GenlabError(f"--stop-at-train-acc {self.stop_at_train_acc}: must lie in (0, 1]")
        if self.test_subset is not None and self.test_subset < 1:
            raise GenlabError(f"--test-subset {self.test_subset}: must be >= 1")


PRESETS: dict[str, dict[str, Any]] = {
    # The report: no augmentation, no weight decay, constant learning rates, batch 64.
    "under": {
        "width": 4,
        "optimizer": "sgd",
        "lr": 0.003,
        "momentum": 0.0,
        "batch_size": 64,
        "epochs": 800,
        "weight_decay": 0.0,
    },  # 6,666 parameters
    "over": {
        "width": 64,
        "optimizer": "adam",
        "lr": 3e-4,
        "batch_size": 64,
        "epochs": 1000,
        "weight_decay": 0.0,
    },  # 1,558,026 parameters
}
RUN_ID_KEYS = ("dataset", "width", "label_noise", "randomize", "epochs", "seed")
GRID_PRESETS = ("under", "over")
# The regime each preset is named for, at the full training set (True: over-parametrized).
PRESET_REGIMES = {"under": False, "over": True}
GRID_NOISE = (0.0, 0.5, 1.0)


def report_grid(flags: dict[str, Any]) -> list[Config]:
    """The report's grid, p in GRID_NOISE x GRID_PRESETS: defaults < preset < ``flags`` < p."""
    if "label_noise" in flags:
        raise GenlabError(
            "the report grid (--grid, --name report) sets --label-noise itself (0, 0.5, 1); "
            "drop --label-noise"
        )
    base = to_dict(Config())
    return [
        from_dict(Config, {**base, **PRESETS[size], **flags, "label_noise": p})
        for size in GRID_PRESETS
        for p in GRID_NOISE
    ]


def fitted_acc(record: dict[str, Any], num_noisy: int, num_clean: int) -> float:
    """Eval-mode accuracy on the labels the model is fitted to: the noisy and clean views pooled
    (an empty view, whose accuracy is None, adds nothing)."""
    parts = [(record["train_noisy_acc"], num_noisy), (record["train_clean_acc"], num_clean)]
    return sum(acc * n for acc, n in parts if n) / max(num_noisy + num_clean, 1)


def regime(params: int, num_train: int, width: int) -> dict[str, Any]:
    """The model's parameters against the labels it is trained on (one per training image):
    over-parametrized when it has at least as many parameters as labels. ``preset`` is the preset
    whose width the run has (None for another width), and ``matches_preset`` whether the regime
    is the one that preset is named for (None without a preset)."""
    over = params >= num_train
    preset = next((name for name, values in PRESETS.items() if values["width"] == width), None)
    return {
        "params": params,
        "num_train": num_train,
        "params_per_label": params / num_train,
        "over_parametrized": over,
        "preset": preset,
        "matches_preset": None if preset is None else PRESET_REGIMES[preset] == over,
    }


def regime_line(r: dict[str, Any], model: str, width: int) -> str:
    """One sentence, every number from ``r``: the regime, and whether it is the preset's."""
    kind = "over" if r["over_parametrized"] else "under"
    text = (
        f"{model} width {width} has {r['params']:,} parameters for {r['num_train']:,} training labels "
        f"({r['params_per_label']:.3g} per label): {kind}-parametrized"
    )
    if r["matches_preset"] is False:
        named = "under" if r["over_parametrized"] else "over"
        text += (
            f", although the '{r['preset']}' preset (width {width}) is named {named}-parametrized"
        )
    return text


@dataclass
class _Setup:
    """A member's data, labels and views, ready to train with the others."""

    member: Member
    prep: Prepared
    noise: dict[str, Any]
    num_noisy: int
    num_clean: int
    regime: dict[str, Any]


def run(members: list[tuple[Config, Run]], rt: Runtime) -> list[dict[str, Any]]:
    """Train every member (together where that pays: a grid's cohort), then summarize each."""
    return train_members(members, rt, setup, _finish)


def setup(cfg: Config, run: Run | None, rt: Runtime, shared: SharedData) -> _Setup:
    prep = prepare(cfg, rt, shared)
    K = prep.splits.train.num_classes
    test = prep.splits.test
    if cfg.test_subset is not None:
        if cfg.test_subset > len(test):
            raise GenlabError(
                f"--test-subset {cfg.test_subset}: the test split has only {len(test)} images"
            )
        keep = torch.randperm(len(test), generator=fixed("test_subset"))[: cfg.test_subset]
        test = test.subset(keep.sort().values)
    train_x, test_x = randomize_images(
        prep.train.images,
        test.images,
        cfg.randomize,
        stream(cfg.seed, "images"),
        prep.mean,
        prep.std,
    )
    true_y = prep.train.labels  # (N,) int64
    fitted_y, changed = corrupt_labels(
        true_y,
        cfg.label_noise,
        K,
        cfg.label_noise_mode,
        stream(cfg.seed, "train_labels"),
    )
    test_y, test_changed = test.labels, torch.zeros(len(test), dtype=torch.bool)
    if cfg.corrupt_test:
        test_y, test_changed = corrupt_labels(
            test.labels,
            cfg.label_noise,
            K,
            cfg.label_noise_mode,
            stream(cfg.seed, "test_labels"),
        )
    noise = {
        "p": cfg.label_noise,
        "mode": cfg.label_noise_mode,
        "num_classes": K,
        "train": _changes(fitted_y, changed),
        "test": _changes(test_y, test_changed),
    }
    num_noisy, num_clean = int(changed.sum()), int((~changed).sum())
    found = regime(count_params(prep.model), len(prep.train), cfg.width)
    if run is not None:  # None: rebuilt for an analysis, which writes nothing and says nothing
        run.write_json(LABEL_NOISE, noise)
        _say_regime(cfg, noise, num_noisy, found, rt, shared)

    dev = rt.device
    data = (cfg.dataset, cfg.data_dir, cfg.train_subset)
    if cfg.randomize == "labels":  # the images are the dataset's: one copy for every member
        x = on_device(shared, ("train", *data), prep.train, rt).images
        test_x = on_device(shared, ("test", *data[:2], cfg.test_subset), test, rt).images
    else:  # the images are this run's own draw
        x, test_x = train_x.to(dev), test_x.to(dev)
    fitted, on_dev = fitted_y.to(dev), changed.to(dev)
    views = {  # the three train views share x: one pass over it serves them all
        "test": View(test_x, test_y.to(dev)),
        "train_true": View(x, true_y.to(dev)),
        "train_noisy": View(x, fitted, on_dev),
        "train_clean": View(x, fitted, ~on_dev),
    }
    record_dataset(
        run,
        prep,
        num_test=len(test),
        num_noisy=num_noisy,
        num_clean=num_clean,
        randomize=cfg.randomize,
        test_labels="corrupted" if cfg.corrupt_test else "clean",
    )
    threshold = cfg.stop_at_train_acc
    stop = (
        None if threshold is None else (lambda r: fitted_acc(r, num_noisy, num_clean) >= threshold)
    )
    spec = cfg.fit_spec()
    member = Member(
        run, prep.model, prep.optimizer, View(x, fitted), views, prep.normalize, K, spec, stop
    )
    return _Setup(member, prep, noise, num_noisy, num_clean, found)


@dataclass
class FlippedSetup:
    """``setup`` with the test set flipped upside down as one more view (``test_vflip``): what
    the studies built on random labels (connectivity, pruning) train and evaluate."""

    member: Member
    prep: Prepared
    inner: _Setup  # noise, num_noisy, num_clean, regime


def setup_flipped(cfg: Config, run: Run | None, rt: Runtime, shared: SharedData) -> FlippedSetup:
    inner = setup(cfg, run, rt, shared)
    key: tuple = (cfg.dataset, cfg.data_dir, cfg.test_subset)  # the test images: the dataset's
    if cfg.randomize != "labels":  # ... or this run's own draw
        key = (*key, cfg.randomize, cfg.seed)
    add_flipped_test(inner.member, shared, key)
    return FlippedSetup(inner.member, inner.prep, inner)


def _say_regime(
    cfg: Config,
    noise: dict[str, Any],
    num_noisy: int,
    found: dict[str, Any],
    rt: Runtime,
    shared: SharedData,
) -> None:
    """The label-noise line, and the regime line (a warning once per command where the regime
    is not the one its preset is named for)."""
    rt.log(
        f"label noise p={cfg.label_noise} ({cfg.label_noise_mode}): {num_noisy:,} of "
        f"{noise['train']['num_images']:,} training labels changed "
        f"({noise['train']['fraction_changed']:.4f}); randomize={cfg.randomize}"
    )
    if found["matches_preset"] is not False:
        rt.log(regime_line(found, cfg.model, cfg.width))
    else:  # a warning, once per command for members alike (not once per seed or p)
        shared.get(
            ("regime warning", cfg.width, cfg.model, cfg.dataset, found["num_train"]),
            lambda: print(
                f"genlab: warning: {regime_line(found, cfg.model, cfg.width)}"
                + (f" (--train-subset {cfg.train_subset})" if cfg.train_subset else ""),
                file=sys.stderr,
            ),
        )


def _finish(cfg: Config, run: Run, setup: _Setup, rt: Runtime) -> dict[str, Any]:
    """summary.json from the history of a finished run."""
    history = setup.member.history
    threshold = cfg.stop_at_train_acc
    fit_at = threshold if threshold is not None else 1.0
    fitted = [fitted_acc(r, setup.num_noisy, setup.num_clean) for r in history]
    summary = {
        "params": count_params(setup.prep.model),
        "regime": setup.regime,
        **summarize_views(history, list(VIEWS), setup.prep.splits.train.classes),
    }
    summary.update(
        {
            "label_noise": cfg.label_noise,
            "label_noise_mode": cfg.label_noise_mode,
            "randomize": cfg.randomize,
            "fraction_changed": setup.noise["train"]["fraction_changed"],
            "test_fraction_changed": setup.noise["test"]["fraction_changed"],
            "test_labels": "corrupted" if cfg.corrupt_test else "clean",
            "num_noisy": setup.num_noisy,
            "num_clean": setup.num_clean,
            "final_train_fitted_acc": fitted[-1],  # eval mode
            "final_train_acc_running": history[-1]["train_acc"],  # as trained, over the last epoch
            "fit_threshold": fit_at,
            # the first epoch whose eval-mode fitted-label accuracy reached the threshold, or None
            "time_to_fit": next(
                (r["epoch"] for r, a in zip(history, fitted, strict=True) if a >= fit_at), None
            ),
            "stopped_early": bool(history[-1].get("stopped")),
        }
    )
    run.write_summary(summary)
    return summary


def _changes(labels: torch.Tensor, changed: torch.Tensor) -> dict[str, Any]:
    index = changed.nonzero().flatten()
    return {
        "num_images": len(labels),
        "num_changed": len(index),
        "fraction_changed": len(index) / max(len(labels), 1),
        "changed_indices": index.tolist(),
        "new_labels": labels[index].tolist(),
    }
