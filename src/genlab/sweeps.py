"""Sweeps: many members of one study in one folder, the normal unit of work.

A sweep is the Cartesian product of the values given for each setting (``--width 4 8 --seeds
3`` is six members), or a study's named sweep (the report's random-labels grid). It lives in
``runs/<study>/sweep-<hash>/``, the hash taken over its members' run ids, with ``sweep.json``
(the members in order: index, run id, config) and the member run folders inside. Re-running the
command resumes unfinished members and skips finished ones; ``index`` runs some of them (what a
job-array task calls); many processes on one sweep each claim (lock) a member before training it
and skip those another holds, so together they train every member once. Members that differ only
in their seed are aggregated into ``aggregate.json``/``aggregate.csv`` (mean, std and Student-t
95% interval over seeds).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.aggregate import aggregate, write_aggregate
from genlab.config import flag, from_dict, identity_dict, run_id, to_dict
from genlab.errors import GenlabError, MembersFailed
from genlab.fileio import read_json, remove_stale, write_json
from genlab.launch import run_members
from genlab.locks import lock_state
from genlab.runs import CONFIG, SUMMARY, SWEEP, check_out
from genlab.studies import Study
from genlab.studies import study as find_study
from genlab.training.runtime import Runtime


def resolve(study: Study, preset: str | None, settings: Mapping[str, Any]) -> Any:
    """One config: defaults < ``preset`` < ``settings``."""
    names = {f.name for f in dataclasses.fields(study.config)}
    unknown = [flag(k) for k in settings if k not in names]
    if unknown:
        raise GenlabError(f"{study.name} has no setting {', '.join(unknown)}")
    values = to_dict(study.config())
    if preset is not None:
        if preset not in study.presets:
            valid = ", ".join(study.presets) or "none"
            raise GenlabError(f"--preset {preset!r}: no such preset (valid: {valid})")
        values.update(study.presets[preset])
    values.update(settings)
    return from_dict(study.config, values)


def expand(study: Study, preset: str | None, values: Mapping[str, Sequence[Any]]) -> list[Any]:
    """The configs of the Cartesian product of ``values`` (setting -> the values it takes), the
    first setting varying slowest; defaults < ``preset`` < each combination."""
    for key, options in values.items():
        if not options:
            raise GenlabError(f"--{key.replace('_', '-')}: give at least one value")
    keys = list(values)
    return [
        resolve(study, preset, dict(zip(keys, combo, strict=True)))
        for combo in itertools.product(*(values[k] for k in keys))
    ]


def named(study: Study, name: str, flags: Mapping[str, Any]) -> list[Any]:
    """The configs of the study's named sweep ``name`` with single-valued ``flags``."""
    if name not in study.sweeps:
        valid = ", ".join(study.sweeps) or "none"
        raise GenlabError(f"--name {name!r}: {study.name} has no such sweep (valid: {valid})")
    return study.sweeps[name].expand(dict(flags))


def build(
    study: Study,
    values: Mapping[str, Sequence[Any]],
    out: Path,
    *,
    seeds: int | None = None,
    name: str | None = None,
    preset: str | None = None,
) -> Sweep:
    """The sweep the command line and the Python API describe: ``values`` maps each setting
    given to the values it takes (a sequence setting's values are tuples); ``seeds`` adds
    seeds 0..N-1; ``name`` is a named sweep, which takes single values. The seed varies
    fastest in both."""
    values = dict(values)
    seed_values = seeds_values(seeds, values.pop("seed", None))
    if name is None:
        if seed_values is not None:
            values["seed"] = seed_values
        return make_sweep(study, expand(study, preset, values), out)
    many = [flag(k) for k, v in values.items() if len(v) > 1]
    if many or preset is not None:
        given = ", ".join(many) or "--preset"
        raise GenlabError(f"--name {name}: takes one value per setting and no --preset ({given})")
    single = {k: v[0] for k, v in values.items()}
    per_seed = [
        named(study, name, single if s is None else {**single, "seed": s})
        for s in seed_values or [None]
    ]
    cfgs = [cfgs[i] for i in range(len(per_seed[0])) for cfgs in per_seed]
    return make_sweep(study, cfgs, out, name)


def seeds_values(seeds: int | None, seed: Sequence[int] | None) -> list[int] | None:
    """``--seeds N`` means seeds 0..N-1; it and ``--seed`` exclude each other."""
    if seeds is None:
        return None if seed is None else list(seed)
    if seed is not None:
        raise GenlabError("--seeds N and --seed: give one of them")
    if seeds < 1:
        raise GenlabError(f"--seeds {seeds}: must be >= 1")
    return list(range(seeds))


@dataclass(frozen=True)
class Sweep:
    study: Study
    configs: list[Any]
    folder: Path
    name: str | None = None  # a named sweep's name

    @property
    def run_ids(self) -> list[str]:
        return [run_id(cfg, self.study.run_id_keys) for cfg in self.configs]

    @property
    def swept(self) -> list[str]:
        """The settings whose values differ between members."""
        values = [to_dict(cfg) for cfg in self.configs]
        return [k for k in values[0] if len({repr(v[k]) for v in values}) > 1]

    def members(self, index: range | None = None) -> list[tuple[int, Any, Path]]:
        picked = range(len(self.configs)) if index is None else index
        return [(i, self.configs[i], self.folder / self.run_ids[i]) for i in picked]

    def record(self) -> dict[str, Any]:
        return {
            "study": self.study.name,
            "name": self.name,
            "swept": self.swept,
            "members": [
                {"index": i, "run_id": rid, "config": to_dict(cfg)}
                for i, (rid, cfg) in enumerate(zip(self.run_ids, self.configs, strict=True))
            ],
        }


def make_sweep(study: Study, configs: list[Any], out: Path, name: str | None = None) -> Sweep:
    """The sweep of ``configs`` under ``out/<study>/sweep-<hash>``; two members with the same
    identity are refused (they would be one run folder)."""
    if not configs:
        raise GenlabError("the sweep has no members")
    ids = [run_id(cfg, study.run_id_keys) for cfg in configs]
    seen: dict[str, int] = {}
    for i, rid in enumerate(ids):
        if rid in seen:
            raise GenlabError(
                f"members {seen[rid]} and {i} of the sweep are the same run ({rid}): a value "
                "is given twice, or a preset or named sweep sets it to one already given"
            )
        seen[rid] = i
    digest = hashlib.sha256(" ".join(ids).encode()).hexdigest()[:8]
    return Sweep(study, configs, check_out(out) / study.name / f"sweep-{digest}", name)


def parse_index(text: str, size: int) -> range:
    """``I`` or ``I-J`` (inclusive), 0-based, within the sweep's ``size`` members."""
    try:
        first, dash, last = text.partition("-")
        lo, hi = int(first), int(last if dash else first)
    except ValueError:
        raise GenlabError(f"--index {text!r}: must be I or I-J (e.g. 3 or 0-7)") from None
    if not 0 <= lo <= hi < size:
        raise GenlabError(f"--index {text}: the sweep has members 0-{size - 1}")
    return range(lo, hi + 1)


def member_state(path: Path) -> str:
    """finished, locked (another process trains it now), partial (started) or new."""
    if (path / SUMMARY).exists():
        return "finished"
    if lock_state(path) is not None:
        return "locked"
    return "partial" if (path / CONFIG).exists() else "new"


def write_record(sweep: Sweep) -> None:
    """sweep.json, written once; an existing one must list the same members."""
    target = sweep.folder / SWEEP
    record = sweep.record()
    if target.exists():
        old = read_json(target)
        members = old.get("members") if isinstance(old, dict) else None
        if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
            raise GenlabError(f"{target}: not a sweep record; remove it to start the sweep again")
        if [m.get("run_id") for m in members] != sweep.run_ids:
            raise GenlabError(f"{target}: lists other members; use another --out")
        return
    write_json(target, record)


def run_sweep(
    sweep: Sweep, rt: Runtime, *, index: range | None = None, force: bool = False
) -> Path:
    """Train the sweep's members (those in ``index``) that are not finished, skipping members
    another process holds; then aggregate and draw what is finished (also when members failed:
    their ``MembersFailed`` is raised after). Returns the sweep folder."""
    write_record(sweep)
    members = [(cfg, path) for _, cfg, path in sweep.members(index)]
    try:
        run_members(sweep.study, members, rt, force=force, skip_locked=True)
    except MembersFailed:  # what finished is aggregated and drawn even when some failed
        finish(sweep)
        raise
    finish(sweep)  # not after Ctrl-C, SIGTERM or a full disk: those stop the command
    return sweep.folder


def finish(sweep: Sweep) -> None:
    """Aggregate and draw the members that are finished (aggregate.json/.csv, the figures)."""
    from genlab.reporting import plot_sweep

    remove_stale(sweep.folder)  # what a killed aggregation left
    write_aggregate(aggregate_members(sweep), sweep.folder)
    plot_sweep(sweep.folder)


def load(folder: Path) -> Sweep:
    """The sweep recorded in ``folder/sweep.json`` (what a launcher's task trains from)."""
    target = Path(folder) / SWEEP
    if not target.is_file():
        raise GenlabError(f"{target}: no such sweep record")
    record = read_json(target)
    try:
        entry = find_study(record["study"])
        configs = [from_dict(entry.config, m["config"]) for m in record["members"]]
        recorded = [m["run_id"] for m in record["members"]]
    except (KeyError, TypeError) as e:
        raise GenlabError(f"{target}: not a sweep record ({e})") from None
    sweep = Sweep(entry, configs, Path(folder), record.get("name"))
    if sweep.run_ids != recorded:
        raise GenlabError(f"{target}: its run ids do not match its configs (another genlab?)")
    return sweep


def aggregate_members(sweep: Sweep) -> list[dict[str, Any]]:
    """The finished members' summaries grouped over seeds (``genlab.aggregate``)."""
    pairs = []
    for _, cfg, path in sweep.members():
        if (path / SUMMARY).exists():
            pairs.append((identity_dict(cfg), read_json(path / SUMMARY)))
    return aggregate(pairs) if pairs else []
