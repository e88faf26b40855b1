"""The one registry of studies: a ``Study`` record per study, found by name in ``STUDIES``.

Every command (``genlab run``, ``genlab sweep``, the report, the Python API) looks a study up
here and nowhere else: its config class, presets, run-id keys, how to run members (a single run
is a list of one), its named sweeps, and the reporting module that draws its figures and lists
its key numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from genlab.studies import (
    connectivity,
    linreg,
    memorization_map,
    pruning,
    random_labels,
    robustness,
)


@dataclass(frozen=True)
class NamedSweep:
    """A study's named set of members, e.g. the report's random-labels grid. ``expand(flags)``
    turns the flags given with it into member configs; ``flag`` is its ``genlab run`` spelling."""

    name: str
    help: str
    expand: Callable[[dict[str, Any]], list[Any]]
    flag: str


@dataclass(frozen=True)
class Study:
    name: str
    doc: str  # the study module's docstring: the question, what to expect, commands, cost
    config: type  # a frozen dataclass
    presets: Mapping[str, Mapping[str, Any]]
    run_id_keys: tuple[str, ...]  # the settings spelt out in a run folder's name
    # run(members, runtime) -> summaries: members are (config, Run) pairs, trained together
    # where genlab.training measured it to pay
    run: Callable[..., list[dict[str, Any]]]
    reporting: str  # the module (genlab.reporting.<...>) with its figures and key numbers
    trains: bool = False  # trains through genlab.training.fit (epochs, checkpoints, TensorBoard)
    # writes TensorBoard events (--tensorboard) without training through fit: linreg, its curves
    events: bool = False
    # setup(cfg, run, runtime, shared) -> a Setup (.member, .prep): a member's model, training
    # view and evaluation views built from its config; with run None it writes nothing, which
    # is how genlab.analysis rebuilds a trained run's data (None: no such member)
    setup: Callable[..., Any] | None = None
    sweeps: Mapping[str, NamedSweep] = field(default_factory=dict)


STUDIES: dict[str, Study] = {
    "robustness": Study(
        "robustness",
        robustness.__doc__ or "",
        robustness.Config,
        robustness.PRESETS,
        robustness.RUN_ID_KEYS,
        robustness.run,
        "genlab.reporting.robustness",
        trains=True,
        setup=robustness.setup,
        sweeps={
            "compare": NamedSweep(
                "compare",
                "baseline, double, random, and conv4-vflip at the same and at the "
                "parameter-matched width, one budget and seed",
                robustness.compare,
                "--compare",
            )
        },
    ),
    "random-labels": Study(
        "random-labels",
        random_labels.__doc__ or "",
        random_labels.Config,
        random_labels.PRESETS,
        random_labels.RUN_ID_KEYS,
        random_labels.run,
        "genlab.reporting.random_labels",
        trains=True,
        setup=random_labels.setup,
        sweeps={
            "report": NamedSweep(
                "report",
                "the report's grid: label noise p in {0, 0.5, 1} x presets under and over",
                random_labels.report_grid,
                "--grid",
            )
        },
    ),
    "pruning": Study(
        "pruning",
        pruning.__doc__ or "",
        pruning.Config,
        pruning.PRESETS,
        pruning.RUN_ID_KEYS,
        pruning.run,
        "genlab.reporting.pruning",
        trains=True,
        # no setup: a run's networks are its rounds' (rounds/*/checkpoint.pt), not one
        # checkpoint.pt that genlab analyze could rebuild
    ),
    "memorization-map": Study(
        "memorization-map",
        memorization_map.__doc__ or "",
        memorization_map.Config,
        memorization_map.PRESETS,
        memorization_map.RUN_ID_KEYS,
        memorization_map.run,
        "genlab.reporting.memorization_map",
    ),
    "connectivity": Study(
        "connectivity",
        connectivity.__doc__ or "",
        connectivity.Config,
        connectivity.PRESETS,
        connectivity.RUN_ID_KEYS,
        connectivity.run,
        "genlab.reporting.connectivity",
        trains=True,
        setup=connectivity.setup,
    ),
    "linreg": Study(
        "linreg",
        linreg.__doc__ or "",
        linreg.Config,
        linreg.PRESETS,
        linreg.RUN_ID_KEYS,
        linreg.run,
        "genlab.reporting.linreg",
        events=True,
    ),
}


def study(name: str) -> Study:
    """The registered study ``name``; a GenlabError naming the valid ones otherwise."""
    from genlab.errors import GenlabError

    if name not in STUDIES:
        raise GenlabError(f"{name!r}: no such study (valid: {', '.join(STUDIES)})")
    return STUDIES[name]


__all__ = ["STUDIES", "NamedSweep", "Study", "study"]
