"""The command line: ``genlab run STUDY [flags]``, ``genlab demo``, ``genlab figures RUN...``.

Each study's flags are generated from its config dataclass, so a field, its flag and its JSON key
are one spelling (``batch_size`` <-> ``--batch-size``). Settings resolve as defaults < ``--preset``
< flags given on the command line, and the resolved config is printed before training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from genlab.config import flag, from_dict, to_dict
from genlab.errors import GenlabError


def _parse_type(hint: Any) -> tuple[Any, dict[str, Any]]:
    """argparse keyword arguments for a field's type hint."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], {"nargs": "+"}
    return hint, {}


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, extra = _parse_type(hints[f.name])
        kwargs: dict[str, Any] = {
            "default": argparse.SUPPRESS,
            "help": f"{f.metadata.get('help', '')} (default: {f.default})",
        }
        if kind is not None:
            kwargs["type"] = kind
            kwargs["metavar"] = f.name.upper().split("_")[-1]
        if f.metadata.get("choices"):  # checked by config.from_dict: a one-line error, exit 1
            kwargs["help"] = (
                f"{kwargs['help'][:-1]}; one of {', '.join(map(str, f.metadata['choices']))})"
            )
            kwargs["metavar"] = f.name.upper().split("_")[-1]
        parser.add_argument(flag(f.name), **kwargs, **extra)


def resolve_config(module: Any, args: argparse.Namespace) -> Any:
    """defaults < preset < flags."""
    values = to_dict(module.Config())
    preset = getattr(args, "preset", None)
    if preset is not None:
        if preset not in module.PRESETS:
            raise GenlabError(
                f"--preset {preset!r}: no such preset (valid: {', '.join(module.PRESETS)})"
            )
        values.update(module.PRESETS[preset])
    names = {f.name for f in dataclasses.fields(module.Config)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return from_dict(module.Config, values)


def _common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs"),
        help="parent folder of run folders (default: runs)",
    )
    parser.add_argument(
        "--force", action="store_true", help="delete an existing run folder and start again"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print nothing but errors and the final paths"
    )


def build_parser() -> argparse.ArgumentParser:
    from genlab.studies import STUDIES
    from genlab.studies.common import TrainConfig

    parser = argparse.ArgumentParser(
        prog="genlab", description="A lab for how deep networks generalize."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one study")
    studies = run.add_subparsers(dest="study", required=True)
    for name, module in STUDIES.items():
        p = studies.add_parser(
            name,
            help=(module.__doc__ or "").strip().splitlines()[0],
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if module.PRESETS:
            p.add_argument("--preset", help=f"named settings: {', '.join(module.PRESETS)}")
        if hasattr(module, "grid"):
            p.add_argument(
                "--grid",
                *getattr(module, "GRID_ALIASES", ()),  # e.g. robustness: --compare
                dest="grid",
                action="store_true",
                help=getattr(
                    module, "GRID_HELP", "run the study's grid of configs under one parent folder"
                ),
            )
        add_config_flags(p, module.Config)
        _common_flags(p)
        p.set_defaults(tensorboard=False)
        if issubclass(module.Config, TrainConfig):  # the studies that train through fit/fit_group
            p.add_argument(
                "--tensorboard",
                action="store_true",
                help="also write the per-epoch scalars as TensorBoard events in the run folder "
                "(needs: pip install 'genlab[tensorboard]')",
            )

    demo = sub.add_parser(
        "demo", help="every study, small, on the embedded digits (about a minute on 2 cores)"
    )
    _common_flags(demo)
    demo.set_defaults(out=Path("runs") / "demo")

    figures = sub.add_parser("figures", help="(re)draw the figures of run folders")
    figures.add_argument("runs", nargs="+", type=Path)

    evaluate = sub.add_parser(
        "eval", help="evaluate a trained run on views of its test split (flips, rotations)"
    )
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument(
        "--views",
        nargs="+",
        default=["all"],
        help="all (default), or names: identity vflip hflip rot90 rot180 rot270 transpose "
        "antitranspose",
    )
    evaluate.add_argument("--data-dir", help="folder holding the dataset, if not the run's")
    evaluate.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")

    report = sub.add_parser(
        "report", help="one self-contained HTML page for run folders (or folders holding them)"
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_OR_FOLDER")
    report.add_argument(
        "--out", type=Path, default=Path("runs") / "report", help="(default: runs/report)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except GenlabError as e:
        print(f"genlab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("genlab: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from genlab.training import configure_threads

    configure_threads()
    log = (lambda _msg: None) if getattr(args, "quiet", False) else print
    if args.command == "run":
        from genlab.launch import run_study
        from genlab.studies import STUDIES

        if getattr(args, "grid", False):
            return _run_grid(args, log)
        cfg = resolve_config(STUDIES[args.study], args)
        log(f"{args.study} config: {json.dumps(to_dict(cfg), sort_keys=True)}")
        path = run_study(
            args.study,
            cfg,
            out=args.out,
            force=args.force,
            quiet=args.quiet,
            log=log,
            tensorboard=args.tensorboard,
        )
        print(f"results: {path}")
        return 0
    if args.command == "demo":
        from genlab.demo import demo

        demo(args.out, force=args.force, quiet=args.quiet, log=log)
        return 0
    if args.command == "figures":
        from genlab.reporting.figures import plot_run
        from genlab.runs import find_runs

        runs = find_runs(args.runs)
        if not runs:
            raise GenlabError(f"{' '.join(map(str, args.runs))}: no run folders found")
        for path in runs:
            for file in plot_run(path):
                print(file)
        for folder in map(Path, args.runs):  # a --grid parent folder: its comparison figures too
            if folder.name.startswith("grid-") and not (folder / "config.json").exists():
                from genlab.reporting.figures import plot_grid

                for file in plot_grid(find_runs([folder]), folder / "figures"):
                    print(file)
        return 0
    if args.command == "eval":
        from genlab.reporting.views_figures import plot_views
        from genlab.studies.views import evaluate_run

        evaluate_run(args.run, args.views, data_dir=args.data_dir, device=args.device, log=print)
        for file in plot_views(args.run):
            print(file)
        return 0
    if args.command == "report":
        from genlab.reporting.html import build_report
        from genlab.runs import find_runs

        if not find_runs(args.runs):
            raise GenlabError(f"{' '.join(map(str, args.runs))}: no run folders found")
        print(f"report: {build_report(args.runs, args.out)}")
        return 0
    raise AssertionError(args.command)


def _run_grid(args: argparse.Namespace, log: Any) -> int:
    """``--grid``: the study's ``grid(flags)`` configs as runs under one parent folder, named from
    their run ids, so re-running the command resumes unfinished runs and skips finished ones."""
    import hashlib

    from genlab.config import run_id
    from genlab.launch import run_together
    from genlab.reporting.figures import plot_grid
    from genlab.studies import STUDIES

    module = STUDIES[args.study]
    if getattr(args, "preset", None) is not None:
        raise GenlabError("--grid sets the presets itself; drop --preset")
    names = {f.name for f in dataclasses.fields(module.Config)}
    cfgs = module.grid({k: v for k, v in vars(args).items() if k in names})
    ids = [run_id(cfg, module.RUN_ID_KEYS) for cfg in cfgs]
    parent = (
        args.out / args.study / ("grid-" + hashlib.sha256(" ".join(ids).encode()).hexdigest()[:8])
    )
    log(f"{args.study} grid: {len(cfgs)} runs under {parent}")
    for cfg, name in zip(cfgs, ids, strict=True):
        log(f"  {name}: {json.dumps(to_dict(cfg), sort_keys=True)}")
    # runs that differ only in what a grouped model can hold (label noise, seed) train together
    key = getattr(module, "group_key", lambda cfg: None)
    groups: dict[Any, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        k = key(cfg)
        groups.setdefault(i if k is None else k, []).append(i)
    for members in groups.values():
        log(f"\n== {args.study}: {', '.join(ids[i] for i in members)} ==")
        run_together(
            args.study,
            [cfgs[i] for i in members],
            [parent / ids[i] for i in members],
            force=args.force,
            quiet=args.quiet,
            log=log,
            tensorboard=args.tensorboard,
        )
    paths = [parent / name for name in ids]
    for file in plot_grid(paths, parent / "figures"):
        log(str(file))
    print(f"results: {parent}")
    return 0
