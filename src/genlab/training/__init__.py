"""The training engine: one flat loop over tensor-resident data, evaluation on named views."""

from genlab.training.device import configure_threads, physical_cores, resolve_device
from genlab.training.engine import (
    OPTIMIZERS,
    NonFiniteLoss,
    Normalizer,
    View,
    epoch_generator,
    evaluate,
    evaluate_views,
    make_optimizer,
    recompute_batchnorm,
    train_epoch,
)
from genlab.training.loop import FitSpec, Member, fit
from genlab.training.runtime import Runtime

__all__ = [
    "OPTIMIZERS",
    "FitSpec",
    "Member",
    "NonFiniteLoss",
    "Normalizer",
    "Runtime",
    "View",
    "configure_threads",
    "epoch_generator",
    "evaluate",
    "evaluate_views",
    "fit",
    "recompute_batchnorm",
    "make_optimizer",
    "physical_cores",
    "resolve_device",
    "train_epoch",
]
