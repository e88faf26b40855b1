"""Trained runs as an analysis reads them: each run's config, its model with the weights of
its last checkpoint, and its data and views, rebuilt by the study's own ``setup`` (the one
that trained it) with nothing written.

Only finished image-model runs are read (summary.json written), so every network of an
analysis is the end of its training. Runs that cannot be compared are refused with one line
that says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from genlab.aggregate import setting_label, varying_keys
from genlab.analysis.folders import RunRef
from genlab.config import flag, from_dict, identity_dict
from genlab.errors import GenlabError
from genlab.runs import CHECKPOINT, CONFIG, SUMMARY, Run, check_files, find_runs, read_record
from genlab.studies import STUDIES
from genlab.studies.common import SharedData
from genlab.training.loop import load_state
from genlab.training.runtime import Runtime


@dataclass
class Trained:
    """One finished run, rebuilt: ``setup.member`` holds the model (eval mode, the final
    weights), its training view (the labels it was fitted to) and its evaluation views."""

    ref: RunRef
    run: Run
    cfg: Any
    setup: Any  # the study's Setup: .member, .prep
    epoch: int  # the epoch of the final checkpoint
    group: int = 0  # index into the groups: runs alike but for the seed

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def model(self) -> torch.nn.Module:
        return self.setup.member.model

    def record(self) -> dict[str, Any]:
        """How an analysis' results name the run."""
        return {
            "name": self.ref.path.name,
            "path": str(self.ref.path),
            "study": self.ref.study,
            "seed": self.seed,
            "group": self.group,
            "epoch": self.epoch,
        }


@dataclass(frozen=True)
class Group:
    """Runs alike but for the seed; ``settings`` holds the settings that vary between groups."""

    settings: dict[str, Any]
    runs: list[int]  # indices into the analysis's runs

    @property
    def label(self) -> str:
        return setting_label(self.settings)

    def record(self) -> dict[str, Any]:
        return {"settings": self.settings, "label": self.label, "runs": self.runs}


def find(paths: list[Path]) -> list[Path]:
    """The run folders at or below ``paths`` (sweep folders hold theirs), each once."""
    for p in map(Path, paths):
        if not p.exists():
            raise GenlabError(f"{p}: no such run or sweep folder")
    runs = find_runs(paths)
    if not runs:
        raise GenlabError(f"{' '.join(map(str, paths))}: no run folders found")
    seen: dict[Path, Path] = {}
    for r in runs:
        seen.setdefault(r.resolve(), r)
    return sorted(seen.values())


def load(
    paths: list[Path], rt: Runtime, *, data_dir: str | None = None
) -> tuple[list[Trained], list[Group]]:
    """Every finished image-model run at or below ``paths``, rebuilt, and their groups.
    ``data_dir`` replaces the runs' own dataset folder (a run moved to another machine)."""
    quiet = replace(rt, log=lambda _message: None, quiet=True)  # the setups say nothing
    shared = SharedData()
    trained = []
    for path in find(paths):
        check_files(path)
        record = read_record(path / CONFIG)
        study = STUDIES.get(record["study"])
        if study is None or study.setup is None:
            raise GenlabError(
                f"{path}: a {record['study']} run; only the image studies' runs "
                "(robustness, random-labels) hold a trained network to analyse"
            )
        if not (path / SUMMARY).exists():
            raise GenlabError(
                f"{path}: not finished (no {SUMMARY}); finish it with the command that started "
                "it, or leave it out"
            )
        values = dict(record["config"])
        if data_dir is not None:
            values["data_dir"] = data_dir
        cfg = from_dict(study.config, values)
        if getattr(cfg, "randomize", "labels") != "labels":
            raise GenlabError(
                f"{path}: trained on randomized images ({flag('randomize')} {cfg.randomize}); "
                "the test images an analysis shows it are not the inputs it was trained on"
            )
        setup = study.setup(cfg, None, quiet, shared)
        run = Run(path, "finished")
        state = run.load_checkpoint()
        if state is None:
            raise GenlabError(f"{path}: no {CHECKPOINT}")
        load_state(setup.member.model, None, state, path / CHECKPOINT)
        setup.member.model.eval()
        ref = RunRef(path.resolve(), study.name, dict(record["identity"]))
        trained.append(Trained(ref, run, cfg, setup, int(state["epoch"])))
    _check_compatible(trained)
    return trained, _groups(trained)


def _check_compatible(trained: list[Trained]) -> None:
    """The runs were trained on one dataset: same name, classes and image shape."""
    first = trained[0]
    for t in trained[1:]:
        for what, get in (
            ("dataset", lambda t: t.cfg.dataset),
            ("classes", lambda t: list(t.setup.prep.splits.train.classes)),
            ("image shape", lambda t: list(t.setup.prep.splits.train.shape)),
        ):
            if get(t) != get(first):
                raise GenlabError(
                    f"{t.ref.path}: its {what} ({get(t)}) is not that of {first.ref.path.name} "
                    f"({get(first)}); an analysis compares runs of one dataset"
                )


def _groups(trained: list[Trained]) -> list[Group]:
    keyed: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for i, t in enumerate(trained):
        rest = {k: v for k, v in identity_dict(t.cfg).items() if k != "seed"}
        rest = {"study": t.ref.study, **rest}
        key = json.dumps(rest, sort_keys=True, default=repr)
        keyed.setdefault(key, (rest, []))[1].append(i)
    varying = varying_keys([rest for rest, _ in keyed.values()])
    groups = [Group({k: rest.get(k) for k in varying}, runs) for rest, runs in keyed.values()]
    for g, group in enumerate(groups):
        seeds = [trained[i].seed for i in group.runs]
        if len(set(seeds)) != len(seeds):
            raise GenlabError(
                f"{trained[group.runs[0]].ref.path}: two runs of the same settings and seed "
                f"({group.label}); an analysis reads each run once"
            )
        for i in group.runs:
            trained[i].group = g
    return groups
