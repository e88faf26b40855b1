"""What every image study does the same way: the training settings every study shares, data on
the device (loaded once per command and shared by every member that uses it), the model, and the
pieces of summary.json that every study reports."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from genlab import seeding
from genlab.config import check_fields, flag, option
from genlab.data import DATASETS, ImageDataset, Splits, channel_stats, load_dataset, take_subset
from genlab.errors import GenlabError, MembersFailed
from genlab.models import MODELS, make_model
from genlab.models.conv4 import check_architecture
from genlab.runs import DATASET, Run
from genlab.training import OPTIMIZERS, FitSpec, Member, Normalizer, View, fit, make_optimizer
from genlab.training.runtime import Runtime

T = TypeVar("T")

# The settings every image study spells the same way: (default, help, option keywords).
_SHARED: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "dataset": ("digits", f"dataset: {', '.join(DATASETS)}, or the path of an image folder", {}),
    "data_dir": (
        None,
        "folder holding an existing copy of the dataset (downloads nothing)",
        {"identity": False},
    ),
    "model": ("conv4", "architecture", {"choices": MODELS}),
    "kernel": (3, "odd convolution kernel size k", {}),
    "epochs": (20, "number of training epochs", {}),
    "batch_size": (64, "training batch size", {}),
    "optimizer": ("sgd", "optimizer", {"choices": OPTIMIZERS}),
    "lr": (0.1, "constant learning rate", {}),
    "seed": (0, "seed for initialization, data order and every random choice of the run", {}),
}
_DEFAULT = object()


def shared_option(name: str, default: Any = _DEFAULT) -> Any:
    """The shared setting ``name`` as a config field, with another default if given."""
    value, help, keywords = _SHARED[name]
    return option(value if default is _DEFAULT else default, help, **keywords)


def check_training(epochs: int, batch_size: int, lr: float) -> None:
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise GenlabError(f"{flag(name)} {value}: must be >= 1")
    if not (lr > 0 and math.isfinite(lr)):
        raise GenlabError(f"--lr {lr}: must be a finite number > 0")


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by the image studies (each study's config extends it)."""

    dataset: str = shared_option("dataset")
    data_dir: str | None = shared_option("data_dir")
    train_subset: int | None = option(None, "train on this many images (a fixed random subset)")
    model: str = shared_option("model")
    width: int = option(16, "Conv-4 width c (channels c, 2c, 4c, 8c)")
    kernel: int = shared_option("kernel")
    epochs: int = shared_option("epochs")
    batch_size: int = shared_option("batch_size")
    optimizer: str = shared_option("optimizer")
    lr: float = shared_option("lr")
    momentum: float = option(0.0, "SGD momentum", at_least=0.0, below=1.0)
    weight_decay: float = option(0.0, "weight decay", at_least=0.0)
    seed: int = shared_option("seed")
    keep_checkpoints: tuple[int, ...] = option(
        (0,),
        "keep the checkpoints of these epochs as checkpoints/epoch-K.pt (0: the initial weights, "
        "which genlab analyze criticality re-initializes layers to)",
        identity=False,
        at_least=0,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        check_architecture(self.width, self.kernel)  # before any run folder is made
        check_training(self.epochs, self.batch_size, self.lr)
        beyond = [k for k in self.keep_checkpoints if k > self.epochs]
        if beyond:
            raise GenlabError(
                f"--keep-checkpoints {beyond[0]}: beyond the run's --epochs {self.epochs}"
            )

    def fit_spec(self, augment: str = "none") -> FitSpec:
        """How ``fit`` trains a member of this config."""
        return FitSpec(
            self.epochs,
            self.batch_size,
            self.seed,
            augment,
            tuple(sorted(set(self.keep_checkpoints))),
        )


class SharedData:
    """What members of one command share: each dataset is loaded once, each tensor moved to the
    device once, so K members of a sweep hold one copy of the images, not K."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        if key not in self._values:
            self._values[key] = make()
        return self._values[key]


@dataclass
class Prepared:
    """Everything a study needs to build a ``Member``."""

    splits: Splits
    train: ImageDataset
    device: torch.device
    normalize: Normalizer
    mean: list[float]
    std: list[float]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer


def prepare(cfg: TrainConfig, rt: Runtime, shared: SharedData) -> Prepared:
    """Load the data (shared), compute normalization from the training split, build the model
    from the run's seed."""
    data = (cfg.dataset, cfg.data_dir)
    splits = shared.get(("splits", *data), lambda: load_dataset(*data, quiet=rt.quiet))
    subset = (*data, cfg.train_subset)
    train = shared.get(("train", *subset), lambda: take_subset(splits.train, cfg.train_subset))
    mean, std = shared.get(("stats", *subset), lambda: channel_stats(train.images))
    normalize = shared.get(
        ("normalize", *subset), lambda: Normalizer.from_stats(mean, std, rt.device)
    )
    with seeding.init(cfg.seed):
        model = make_model(
            cfg.model, cfg.width, cfg.kernel, splits.train.num_classes, splits.train.shape[-1]
        )
    model = model.to(rt.device, memory_format=torch.channels_last)
    if rt.compile:
        model.compile()  # in place: the state dict keeps its keys, so checkpoints stay plain
    optimizer = make_optimizer(
        cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay
    )
    return Prepared(splits, train, rt.device, normalize, mean, std, model, optimizer)


class Setup(Protocol):
    """What a study's setup returns: at least the member to train and what it was built from."""

    member: Member
    prep: Prepared


S = TypeVar("S", bound=Setup)


def train_members(
    members: list[tuple[Any, Run]],
    rt: Runtime,
    setup: Callable[[Any, Run, Runtime, SharedData], S],
    finish: Callable[[Any, Run, S, Runtime], dict[str, Any]],
) -> list[dict[str, Any]]:
    """The shape of every image study's ``run``: set each member up (data shared), train them
    all with one ``fit``, finish each (summary.json). A member that fails (bad data, a diverged
    loss) does not stop the others: the failures are raised together at the end."""
    shared = SharedData()
    ready: list[tuple[Any, Run, S]] = []
    failures: list[tuple[Path, GenlabError]] = []
    for cfg, run in members:
        try:
            ready.append((cfg, run, setup(cfg, run, rt, shared)))
        except GenlabError as e:
            failures.append((run.path, e))
    fit([s.member for _, _, s in ready], rt)
    summaries = []
    for cfg, run, s in ready:
        if s.member.error is not None:
            failures.append((run.path, s.member.error))
        else:
            summaries.append(finish(cfg, run, s, rt))
    if failures:
        raise MembersFailed(failures, len(members))
    return summaries


def run_each(
    members: list[tuple[Any, Run]], run_one: Callable[[Any, Run], dict[str, Any]]
) -> list[dict[str, Any]]:
    """``run_one`` for each member in turn (studies whose members do not train together); one
    that fails does not stop the others, and the failures are raised together at the end."""
    summaries, failures = [], []
    for cfg, run in members:
        try:
            summaries.append(run_one(cfg, run))
        except GenlabError as e:
            failures.append((run.path, e))
    if failures:
        raise MembersFailed(failures, len(members))
    return summaries


def on_device(shared: SharedData, key: Hashable, dataset: ImageDataset, rt: Runtime) -> View:
    """``dataset`` as a view on the device, moved once per command for ``key``."""
    return shared.get(("view", key, str(rt.device)), lambda: to_view(dataset, rt.device))


def to_view(dataset: ImageDataset, device: torch.device) -> View:
    return View(dataset.images.to(device), dataset.labels.to(device))


def add_flipped_test(member: Member, shared: SharedData, key: Hashable) -> None:
    """Add the view ``test_vflip`` (the test images flipped upside down, its labels) to a
    member's views, the flipped images made once per command for ``key``."""
    from genlab.data.transforms import vflip

    test = member.views["test"]
    images = shared.get(("test_vflip", key, str(test.images.device)), lambda: vflip(test.images))
    member.views = {**member.views, "test_vflip": View(images, test.labels, test.mask)}


def record_dataset(run: Run | None, prep: Prepared, **extra: Any) -> None:
    """dataset.json: what the run trained and was tested on, and its normalization (nothing
    without a run: a setup rebuilt for an analysis writes nothing)."""
    if run is None:
        return
    run.write_json(
        DATASET,
        {
            "name": prep.splits.name,
            "classes": list(prep.splits.train.classes),
            "image_shape": list(prep.splits.train.shape),
            "num_train": len(prep.train),
            "num_test": len(prep.splits.test),
            "normalization": {"mean": prep.mean, "std": prep.std, "computed_on": "train split"},
            **extra,
        },
    )


def summarize_views(
    history: list[dict[str, Any]], views: list[str], classes: tuple[str, ...]
) -> dict[str, Any]:
    """Final and best accuracy per view, and final per-class accuracy keyed by class name. An
    empty view (no rows: its accuracy is None) gets None for every number, not 0."""
    last = history[-1]
    out: dict[str, Any] = {"final_acc": {}, "best_acc": {}, "best_epoch": {}, "per_class_acc": {}}
    for v in views:
        accs = [r[f"{v}_acc"] for r in history]
        if last[f"{v}_acc"] is None:
            for key in ("final_acc", "best_acc", "best_epoch"):
                out[key][v] = None
            out["per_class_acc"][v] = dict.fromkeys(classes)
            continue
        best = max(range(len(accs)), key=accs.__getitem__)
        out["final_acc"][v] = last[f"{v}_acc"]
        out["best_acc"][v] = accs[best]
        out["best_epoch"][v] = history[best]["epoch"]
        out["per_class_acc"][v] = dict(zip(classes, last[f"{v}_per_class_acc"], strict=True))
    out["epochs"] = last["epoch"]
    out["seconds"] = sum(r["seconds"] + r["eval_seconds"] for r in history)
    out["seconds_per_epoch"] = out["seconds"] / len(history)
    return out


def cohort_width(cfg: Any) -> int | None:
    """The Conv-4 width at which members like ``cfg`` (equal but for the seed) can share a
    cohort in ``fit``, or None when each trains alone: what ``together_key`` finds on the
    members built from such configs (a plain Conv-4, no per-batch flips, no invariance
    wrapper), known before any data is loaded."""
    plain = (
        getattr(cfg, "model", None) == "conv4"
        and getattr(cfg, "augment", "none") != "random"
        and getattr(cfg, "invariance", "none") == "none"
    )
    return cfg.width if plain else None
