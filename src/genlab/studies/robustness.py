"""Study 1 — flip robustness: does a CNN trained on upright images recognise them upside down?

Conv-4 is trained on the training split and, after every epoch, tested on the test set and on
the same test set flipped vertically (row i becomes row H-1-i). Expect the flipped accuracy to
sit far below the upright one, class by class very unevenly (symmetric objects such as ships and
airplanes suffer least), and the gap to close when training sees flipped images
(``--augment double``: the report's 2N-image set; ``random``: each image flipped with
probability 1/2 each time it is drawn).

    genlab run robustness --preset report            # the report: CIFAR-10, width 64, 80 epochs
    genlab run robustness --dataset digits --epochs 20 --augment double

Cost: the report's preset is 80 epochs of 50,000 (or 100,000 with ``double``) images at width 64
— hours on a 2-core CPU, minutes on one GPU. The digits default takes about 30 s on 2 cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from genlab.config import option
from genlab.data.transforms import double_with_vflip, vflip
from genlab.models import count_params
from genlab.runs import Run
from genlab.studies.common import TrainConfig, prepare, record_dataset, summarize_views, to_view
from genlab.training import FitSpec, View, fit
from genlab.training.engine import LogFn

AUGMENTS = ("none", "double", "random")
VIEWS = ("test", "test_vflip")


@dataclass(frozen=True)
class Config(TrainConfig):
    augment: str = option(
        "none",
        "none; double: every image plus its flipped copy; random: flip w.p. 1/2",
        choices=AUGMENTS,
    )


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


def run(cfg: Config, run: Run, *, log: LogFn = print, quiet: bool = False) -> dict[str, Any]:
    prep = prepare(cfg, quiet=quiet)
    images, labels = prep.train.images, prep.train.labels
    if cfg.augment == "double":
        images, labels = double_with_vflip(images, labels)
    train = View(images.to(prep.device), labels.to(prep.device))
    test = to_view(prep.splits.test, prep.device)
    views = {"test": test, "test_vflip": View(vflip(test.images), test.labels)}
    record_dataset(run, prep, num_train_seen_per_epoch=len(labels))
    spec = FitSpec(
        cfg.epochs, cfg.batch_size, cfg.seed, "random" if cfg.augment == "random" else "none"
    )
    history = fit(
        run,
        prep.model,
        prep.optimizer,
        train,
        views,
        prep.normalize,
        prep.splits.train.num_classes,
        spec,
        log=log,
    )
    summary = {
        "params": count_params(prep.model),
        **summarize_views(history, list(VIEWS), prep.splits.train.classes),
    }
    summary["flip_gap"] = summary["final_acc"]["test"] - summary["final_acc"]["test_vflip"]
    run.write_summary(summary)
    return summary
