"""The command line: ``genlab run STUDY``, ``genlab sweep STUDY``, ``rerun``, ``demo``,
``eval``, ``analyze``, ``figures``, ``report``, ``export``.

Each study's flags are generated from its config dataclass, so a field, its flag and its JSON key
are one spelling (``batch_size`` <-> ``--batch-size``). Settings resolve as defaults < ``--preset``
< ``--config FILE`` < flags given on the command line; under ``genlab sweep`` every setting may
take several values and the members are their Cartesian product. Runtime flags (``--device``,
``--precision``, ``--compile``, ``--threads``, ``--quiet``, ``--tensorboard``) are resolved
once, here, into a ``Runtime``. Flags are never abbreviated (``--wid`` is not ``--width``), and
a flag that is not one is refused with the closest that is, under the command's own usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
import signal
import sys
import textwrap
import threading
import tomllib
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genlab.config import flag, sequence_fields
from genlab.errors import GenlabError

TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0")


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviations, whose usage errors are one ``genlab: error:`` line
    under the usage of the command that failed (exit code 2, as argparse's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:  # a leaf command: no one else can take them
            self.error(self._unrecognized(extras))
        return namespace, extras

    def _unrecognized(self, extras: list[str]) -> str:
        given = [e.split("=", 1)[0] for e in extras if e.startswith("-") and e != "-"]
        if not given:
            return f"unrecognized arguments: {' '.join(extras)}"
        known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        parts = []
        for name in given:
            # a flag it begins (an abbreviation) first, else the closest spelling
            close = [k for k in known if k.startswith(name) and k != "--help"][:1]
            close = close or difflib.get_close_matches(name, known, n=1)
            hint = ""
            if close:
                abbreviated = "flags are not abbreviated; " if close[0].startswith(name) else ""
                hint = f" ({abbreviated}did you mean {close[0]}?)"
            parts.append(f"{name}: no such flag of {self.prog}{hint}")
        return "; ".join(parts)

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"genlab: error: {message}\n")


def _first_sentence(doc: str, prefix: str = "") -> str:
    """The first sentence of a docstring, its lines joined (for a command's one-line help;
    ``%`` escaped, as argparse expands help strings)."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split()).removeprefix(prefix)
    found = re.match(r"(.+?[.?!])(?=\s+[A-Z]|$)", paragraph)
    return (found.group(1) if found else paragraph).replace("%", "%%")


def _version() -> str:
    """The installed package's version, else the source tree's ``genlab.__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genlab")
    except PackageNotFoundError:
        import genlab

        return genlab.__version__


def _boolean(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _optional(kind: Any) -> Any:
    """A type that also reads ``none`` as None (for settings whose default is None)."""

    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def _parse_type(hint: Any) -> tuple[Any, dict[str, Any], bool]:
    """(argparse type, keyword arguments, is a sequence) for a field's type hint."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        optional = type(None) in typing.get_args(hint)
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        return _boolean, {}, False
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], {"nargs": "+"}, True
    return (_optional(hint) if optional else hint), {}, False


def _show(value: Any) -> str:
    """A value as it is typed on the command line."""
    if isinstance(value, tuple):
        return " ".join(map(_show, value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def add_config_flags(
    parser: argparse.ArgumentParser, cls: type, *, many: bool, defaults: Any = None
) -> None:
    """A flag per config field; with ``many`` (``genlab sweep``) each takes several values.
    ``defaults`` (a config) shows its values as the defaults (``genlab rerun RUN``: the run's)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, extra, sequence = _parse_type(hints[f.name])
        default = f.default if defaults is None else getattr(defaults, f.name)
        help_ = f"{f.metadata.get('help', '')} (default: {_show(default)}"
        if f.metadata.get("choices"):  # checked by the config itself: a one-line error
            help_ += f"; one of {', '.join(map(str, f.metadata['choices']))}"
        kwargs: dict[str, Any] = {
            "default": argparse.SUPPRESS,
            "help": help_ + ")",
            "type": kind,
            "metavar": f.name.upper().split("_")[-1],
            **extra,
        }
        if kind is _boolean:  # --flag alone means true; --flag true false sweeps both
            kwargs.update(nargs="*", metavar="true|false") if many else kwargs.update(
                nargs="?", const=True, metavar="true|false"
            )
        elif many and not sequence:
            kwargs["nargs"] = "+"
        parser.add_argument(flag(f.name), **kwargs)
        if kind is _boolean:
            parser.add_argument(
                "--no-" + flag(f.name)[2:],
                dest=f.name,
                action="store_false",
                default=argparse.SUPPRESS,
                help=f"the same as {flag(f.name)} false",
            )


def _common_flags(
    parser: argparse.ArgumentParser,
    *,
    trains: bool = True,
    events: bool = False,
    rerun: bool = False,
) -> None:
    """--out, --force and the runtime flags (--compile for a study that trains, --tensorboard
    for one that trains or writes events); ``rerun``: as ``genlab rerun RUN`` means them."""
    parser.add_argument(
        "--out",
        type=Path,
        default=None if rerun else Path("runs"),
        help="parent folder of the new run folder (default: RUN's own, the folder above "
        "RUN's <study>/ folder)"
        if rerun
        else "parent folder of run folders (default: runs)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="delete the new run's existing folder and start it again (never RUN's, unless "
        "the new run is RUN itself)"
        if rerun
        else "delete existing run folders and start again",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print nothing but errors and the final paths"
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA if present), cpu, cuda or cuda:N (default: auto)",
    )
    parser.add_argument(
        "--precision",
        default=None if rerun else "auto",
        help="arithmetic: auto (bf16 autocast on CUDA, fp32 on CPU), fp32, or bf16 autocast "
        "(2-core CPU with AVX512-BF16: 2.1x at width 64, 0.85x at width 4) "
        + ("(default: RUN's, else auto)" if rerun else "(default: auto)"),
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="PyTorch threads (default: GENLAB_THREADS, else one per physical core)",
    )
    parser.set_defaults(compile=False, tensorboard=False)
    if trains:
        parser.add_argument(
            "--compile",
            action="store_true",
            help="torch.compile each model (~10 s to compile; measured slower than genlab's own "
            "engine: 2-core CPU 0.87x at width 4, 0.98x at 64; H100 0.97x, 0.87x)",
        )
    if trains or events:
        parser.add_argument(
            "--tensorboard",
            action="store_true",
            help="also write the per-epoch scalars and the run's settings as TensorBoard events "
            "in each run folder's tensorboard/ (needs: pip install 'genlab[tensorboard]')",
        )


def _launcher_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "launchers",
        "hand the sweep to a Slurm cluster or Dask workers (run folders on a path "
        "every node sees, genlab installed on every node)",
    )
    group.add_argument(
        "--launcher",
        choices=("local", "slurm", "dask"),
        default="local",
        help="local: train here (default); slurm: one job array via submitit; dask: tasks on "
        "a Dask cluster (--scheduler) or on a local one",
    )
    group.add_argument(
        "--no-wait",
        action="store_true",
        help="submit and return (slurm, or dask with --scheduler); run the command again to see "
        "the state and retry what failed",
    )
    group.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="the Dask scheduler")
    from genlab.launchers.slurm import SlurmOptions  # imports without submitit

    defaults = {f.name: f.default for f in dataclasses.fields(SlurmOptions)}
    for name, kind, help_ in (
        ("partition", str, "partition; none: the cluster's default"),
        ("gpus_per_task", int, "GPUs per array task"),
        ("cpus_per_task", int, "CPUs per array task, also its PyTorch threads"),
        ("mem_gb", float, "memory per array task, GB"),
        ("time_min", int, "time limit per task in minutes (then requeued, resumed)"),
        ("array_parallelism", int, "the most tasks running at once"),
    ):
        group.add_argument(
            f"--slurm-{name.replace('_', '-')}",
            type=kind,
            default=argparse.SUPPRESS,
            metavar=name.split("_")[0].upper(),
            help=f"{help_} (default: {_show(defaults[name])})",
        )
    group.add_argument(
        "--slurm-extra",
        nargs="+",
        default=argparse.SUPPRESS,
        metavar="KEY=VALUE",
        help="any other sbatch option: account=lab qos=high constraint=a100 exclusive",
    )


def build_parser() -> argparse.ArgumentParser:
    from genlab.studies import STUDIES

    parser = _Parser(prog="genlab", description="A lab for how deep networks generalize.")
    parser.add_argument("--version", action="version", version=f"genlab {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one study")
    sweep = sub.add_parser(
        "sweep", help="run a study over several values of any settings, with seeds"
    )
    runs = run.add_subparsers(dest="study", required=True)
    sweeps = sweep.add_subparsers(dest="study", required=True)
    for name, study in STUDIES.items():
        first = _first_sentence(study.doc) if study.doc.strip() else name
        for parent, many in ((runs, False), (sweeps, True)):
            p = parent.add_parser(
                name,
                help=first,
                description=study.doc,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            if study.presets:
                p.add_argument("--preset", help=f"named settings: {', '.join(study.presets)}")
            p.add_argument(
                "--config",
                type=Path,
                metavar="FILE",
                help="settings from a TOML or JSON file: the keys of config.json (a run's whole "
                "config.json, or a bare table of settings); the flags given override it"
                + ("; each value is one value of the sweep" if many else ""),
            )
            if many:
                p.add_argument(
                    "--seeds", type=int, help="seeds 0..N-1 for every combination (or --seed S ...)"
                )
                if study.sweeps:
                    p.add_argument(
                        "--name",
                        choices=list(study.sweeps),
                        help="a named sweep: "
                        + "; ".join(f"{s.name}: {s.help}" for s in study.sweeps.values()),
                    )
                p.add_argument(
                    "--list", action="store_true", help="print each member's state and exit"
                )
                p.add_argument(
                    "--index",
                    help="run only member I or members I-J (0-based; what a job-array task runs)",
                )
                p.add_argument(
                    "--dry-run", action="store_true", help="print the members and train nothing"
                )
                _launcher_flags(p)
            else:
                for named in study.sweeps.values():  # e.g. --grid, --compare
                    p.add_argument(
                        named.flag,
                        dest="named_sweep",
                        action="store_const",
                        const=named.name,
                        help=f"the named sweep {named.name!r}: {named.help} "
                        f"(as genlab sweep {name} --name {named.name})",
                    )
            add_config_flags(p, study.config, many=many)
            _common_flags(p, trains=study.trains, events=study.events)

    demo = sub.add_parser(
        "demo", help="every study, small, on the embedded digits (about a minute on 2 cores)"
    )
    _common_flags(demo)
    demo.set_defaults(out=Path("runs") / "demo")

    figures = sub.add_parser(
        "figures", help="(re)draw the figures of run, sweep and analysis folders"
    )
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

    analyze = sub.add_parser(
        "analyze", help="measure trained runs: representational similarity, layer criticality"
    )
    kinds = analyze.add_subparsers(dest="analysis", required=True)
    from genlab.analysis import analyses

    for name, (config, doc) in analyses().items():
        p = kinds.add_parser(
            name,
            help=_first_sentence(doc, prefix=f"``genlab analyze {name}``: "),
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("runs", nargs="+", type=Path, metavar="RUN_OR_SWEEP")
        add_config_flags(p, config, many=False)
        p.add_argument("--data-dir", help="folder holding the dataset, if not the runs' own")
        p.add_argument(
            "--out",
            type=Path,
            default=Path("runs"),
            help="parent folder: the analysis goes into OUT/analysis/ (default: runs)",
        )
        p.add_argument("--force", action="store_true", help="compute a finished analysis again")
        p.add_argument("--quiet", action="store_true", help="print nothing but errors and the path")
        p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
        p.add_argument(
            "--threads",
            type=int,
            default=None,
            help="PyTorch threads (default: GENLAB_THREADS, else one per physical core)",
        )

    report = sub.add_parser(
        "report", help="one self-contained HTML page for run folders (or folders holding them)"
    )
    report.add_argument("runs", nargs="+", type=Path, metavar="RUN_OR_FOLDER")
    report.add_argument(
        "--out", type=Path, default=Path("runs") / "report", help="(default: runs/report)"
    )

    rerun = sub.add_parser(
        "rerun",
        help="a run's config again with changes (--continue: on from its last checkpoint)",
        description="Train RUN's config again with the changes given as flags, into the folder "
        "the new config names (under RUN's own --out folder unless --out is given); with no "
        "change it is RUN itself. The flags are RUN's study's: genlab rerun RUN --help lists "
        "them with RUN's values as defaults. --continue starts from RUN's last checkpoint "
        "(genlab rerun RUN --epochs 20 --continue trains epochs 11..20 of a 10-epoch run) and "
        "never changes RUN.",
    )
    rerun.add_argument("run", type=Path, metavar="RUN", help="a run folder")
    rerun.add_argument(
        "flags",
        nargs=argparse.REMAINDER,
        metavar="...",
        help="the study's flags, --continue, --out, --force and the runtime flags "
        "(--device, --precision, --threads, --quiet, --tensorboard, --compile)",
    )

    export = sub.add_parser("export", help="run folders' metrics as a CSV table or TensorBoard")
    formats = export.add_subparsers(dest="format", required=True)
    csv = formats.add_parser("csv", help="the per-epoch metrics of run folders as one CSV table")
    csv.add_argument("runs", nargs="+", type=Path, metavar="RUN_OR_FOLDER")
    csv.add_argument("--out", type=Path, required=True, metavar="FILE", help="the CSV file")
    csv.add_argument("--force", action="store_true", help="replace an existing FILE")
    board = formats.add_parser(
        "tensorboard", help="TensorBoard events of metrics.jsonl in each run's tensorboard/"
    )
    board.add_argument("runs", nargs="+", type=Path, metavar="RUN_OR_FOLDER")
    board.add_argument("--force", action="store_true", help="write existing events again")
    return parser


def _rerun_parser(source: Any) -> argparse.ArgumentParser:
    """``genlab rerun RUN``'s second phase: RUN's study's flags (RUN's values as defaults),
    --continue, --out, --force and the runtime flags."""
    study = source.study
    p = _Parser(
        prog=f"genlab rerun {source.path}",
        description=f"Rerun a {study.name} run with the changes given as flags.",
    )
    p.add_argument(
        "--continue",
        dest="from_checkpoint",
        action="store_true",
        help="start from RUN's last checkpoint (only changes that leave its trained epochs as "
        "they were: more --epochs, --keep-checkpoints, --views, --data-dir)",
    )
    add_config_flags(p, study.config, many=False, defaults=source.config)
    _common_flags(p, trains=study.trains, events=study.events, rerun=True)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's cancel), handled as Ctrl-C is: training stops at the
    next step, the last checkpoint stays, the command says how to resume."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


def _say(text: str) -> None:
    """One line on stderr, whatever it holds (a file name that is not valid UTF-8 included)."""
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    print(text.encode(encoding, "backslashreplace").decode(encoding), file=sys.stderr)


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handles = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if handles else None
    try:
        return _dispatch(args)
    except GenlabError as e:
        _say(f"genlab: error: {e}")
        return 1
    except OSError as e:  # one genlab did not foresee: still one line, naming the file
        where = f"{os.fsdecode(e.filename)}: " if e.filename else ""
        _say(f"genlab: error: {where}{e.strerror or e}")
        return 1
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        _say(
            "genlab: error: out of memory (the model or batch is too large for this machine: "
            "a smaller --width or --batch-size, or fewer members at once with --threads)"
        )
        return 1
    except Terminated:
        _say("genlab: terminated; re-run the same command to resume")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        _say("genlab: interrupted; re-run the same command to resume")
        return 130
    finally:
        if handles:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _runtime(args: argparse.Namespace) -> Any:
    from genlab.training.runtime import Runtime

    elsewhere = getattr(args, "launcher", "local") != "local"  # the nodes resolve the device
    return Runtime.resolve(
        device="cpu" if elsewhere else args.device,
        precision=args.precision,
        compile=args.compile,
        threads=args.threads,
        quiet=args.quiet,
        tensorboard=args.tensorboard,
    )


def resolve_config(study: Any, args: argparse.Namespace) -> Any:
    """The config of ``genlab run STUDY ...``: defaults < --preset < --config FILE < flags."""
    from genlab import sweeps

    filed, given = _file_settings(study, args), _settings(study, args)
    with _blaming(args, filed, given):
        return sweeps.resolve(study, getattr(args, "preset", None), {**filed, **given})


def _settings(study: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The config settings given on the command line, in the config's field order."""
    given = vars(args)
    return {f.name: given[f.name] for f in dataclasses.fields(study.config) if f.name in given}


def _file_settings(study: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The settings of ``--config FILE`` (none without it), checked: see ``read_settings``."""
    path = getattr(args, "config", None)
    return {} if path is None else read_settings(study, path)


def read_settings(study: Any, path: Path) -> dict[str, Any]:
    """The settings a TOML or JSON file gives for ``study``, keyed and typed as config.json's:
    a run's whole config.json record ({"study", "config", ...}: its "config"), or a bare table
    of settings. A sequence setting takes a list (one value, even in a sweep); a setting whose
    default is none takes "none" (TOML has no null). One line naming the file and the key for
    anything else."""
    path = Path(path)
    kind = {".toml": "TOML", ".json": "JSON"}.get(path.suffix.lower())
    if kind is None:
        raise GenlabError(f"--config {path}: not a .toml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GenlabError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise GenlabError(f"--config {path}: is a folder, not a file") from None
    except OSError as e:
        raise GenlabError(
            f"--config {path}: unreadable ({e.strerror or type(e).__name__})"
        ) from None
    except UnicodeDecodeError:
        raise GenlabError(f"--config {path}: not valid {kind} (not UTF-8 text)") from None
    try:
        data = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise GenlabError(f"{path}: not valid {kind} ({e})") from None
    if not isinstance(data, dict):
        raise GenlabError(f"{path}: not a table of settings (holds a {type(data).__name__})")
    if "study" in data:  # a run's config.json record
        if data["study"] != study.name:
            raise GenlabError(f"{path}: the config of a {data['study']} run, not of {study.name}")
        data = data.get("config")
        if not isinstance(data, dict):
            raise GenlabError(f"{path}: its 'config' is not a table of settings")
    hints = typing.get_type_hints(study.config)
    names = [f.name for f in dataclasses.fields(study.config)]
    settings = {}
    for key, value in data.items():
        if key not in hints:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise GenlabError(f"{path}: {key}: no such setting of {study.name}{hint}")
        settings[key] = _file_value(path, key, hints[key], value)
    return {name: settings[name] for name in names if name in settings}


def _file_value(path: Path, key: str, hint: Any, value: Any) -> Any:
    """``value`` of setting ``key`` as its field holds it; a GenlabError naming both if not."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
    sequence = typing.get_origin(hint) is tuple
    kind = typing.get_args(hint)[0] if sequence else hint
    items = value if sequence and isinstance(value, list) else [value]
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    plural = {bool: "true or false values", int: "integers", float: "numbers", str: "strings"}
    for item in items:
        fits = isinstance(item, kind) and not (kind is int and isinstance(item, bool))
        if kind is float:
            fits = isinstance(item, (int, float)) and not isinstance(item, bool)
        if not fits or (sequence and not isinstance(value, list)):
            want = f"a list of {plural[kind]}" if sequence else names[kind]
            shown = json.dumps(value) if _jsonable(value) else str(value)
            raise GenlabError(f"{path}: {key} = {shown}: not {want}")
    if kind is float:
        items = [float(i) for i in items]
    return tuple(items) if sequence else items[0]


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@contextmanager
def _blaming(args: argparse.Namespace, filed: dict[str, Any], given: dict[str, Any]) -> Iterator:
    """A setting's error (``--width 0: ...``) names ``--config FILE`` when the file gave it."""
    try:
        yield
    except GenlabError as e:
        text = str(e)
        keys = [k for k in filed if k not in given]
        if any(text.startswith((f"{flag(k)} ", f"{flag(k)}:")) for k in keys):
            raise GenlabError(f"{args.config}: {text}") from None
        raise


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "rerun":  # its runtime comes with its second phase
        return _rerun(args)
    if args.command in ("run", "sweep", "demo"):
        rt = _runtime(args)
    elif args.command == "analyze":
        from genlab.training.runtime import Runtime

        # fp32 everywhere: an analysis compares numbers, and bf16 would move their last digits
        rt = Runtime.resolve(
            device=args.device, precision="fp32", threads=args.threads, quiet=args.quiet
        )
    else:
        from genlab.training import configure_threads

        configure_threads()
    if args.command == "run":
        return _run(args, rt)
    if args.command == "sweep":
        return _sweep(args, rt)
    if args.command == "demo":
        from genlab.demo import demo

        demo(args.out, rt, force=args.force)
        return 0
    if args.command == "figures":
        from genlab.reporting import plot_analysis, plot_run, plot_sweep
        from genlab.runs import find_analyses, find_runs, find_sweeps

        runs, found = find_runs(args.runs), find_analyses(args.runs)
        if not runs and not found:
            raise GenlabError(f"{' '.join(map(str, args.runs))}: no run or analysis folders found")
        for path in runs:
            for file in plot_run(path):
                print(file)
        for folder in find_sweeps(args.runs):
            for file in plot_sweep(folder):
                print(file)
        for folder in found:
            for file in plot_analysis(folder):
                print(file)
        return 0
    if args.command == "eval":
        from genlab.reporting import plot_run
        from genlab.studies.views import evaluate_run

        evaluate_run(args.run, args.views, data_dir=args.data_dir, device=args.device, log=print)
        for file in plot_run(args.run):
            print(file)
        return 0
    if args.command == "analyze":
        return _analyze(args, rt)
    if args.command == "report":
        from genlab.reporting.html import build_report
        from genlab.runs import find_analyses, find_runs

        if not find_runs(args.runs) and not find_analyses(args.runs):
            raise GenlabError(f"{' '.join(map(str, args.runs))}: no run folders found")
        print(f"report: {build_report(args.runs, args.out)}")
        return 0
    if args.command == "export":
        return _export(args)
    raise AssertionError(args.command)


def _export(args: argparse.Namespace) -> int:
    from genlab import export

    if args.format == "csv":
        rows = export.write_csv(args.runs, args.out, force=args.force)
        print(f"csv: {args.out} ({rows} rows)")
        return 0
    for folder in export.write_tensorboard(args.runs, force=args.force):
        print(f"tensorboard: {folder}")
    return 0


def _analyze(args: argparse.Namespace, rt: Any) -> int:
    from genlab.analysis import analyses, analyze
    from genlab.config import from_dict

    config, _ = analyses()[args.analysis]
    names = {f.name for f in dataclasses.fields(config)}
    cfg = from_dict(config, {k: v for k, v in vars(args).items() if k in names})
    folder = analyze(
        args.analysis, args.runs, cfg, rt, args.out, force=args.force, data_dir=args.data_dir
    )
    print(f"results: {folder}")
    return 0


def _run(args: argparse.Namespace, rt: Any) -> int:
    from genlab import sweeps
    from genlab.launch import run_members
    from genlab.studies import STUDIES

    study = STUDIES[args.study]
    if getattr(args, "named_sweep", None):
        if getattr(args, "preset", None) is not None:
            raise GenlabError(
                f"{study.sweeps[args.named_sweep].flag} sets its own settings; drop --preset"
            )
        filed, given = _file_settings(study, args), _settings(study, args)
        single = {k: [v] for k, v in {**filed, **given}.items()}
        with _blaming(args, filed, given):
            sweep = sweeps.build(study, single, args.out, name=args.named_sweep)
        _print_members(sweep, rt.log)
        print(f"results: {sweeps.run_sweep(sweep, rt, force=args.force)}")
        return 0
    cfg = resolve_config(study, args)
    path = _run_dir(study, cfg, args.out, rt, force=args.force)  # before anything is printed
    _print_config(study, cfg, rt.log)
    run_members(study, [(cfg, path)], rt, force=args.force)
    print(f"results: {path}")
    return 0


def _run_dir(study: Any, cfg: Any, out: Path, rt: Any, *, force: bool) -> Path:
    """The run folder of ``cfg`` under ``out``; one there already trained in another arithmetic
    than ``rt``'s is refused here, before anything is printed (``--force`` replaces it)."""
    from genlab.launch import run_dir_for
    from genlab.runs import CONFIG, check_precision, read_record

    path = run_dir_for(study, cfg, out)
    if not force and (path / CONFIG).is_file():
        try:
            record = read_record(path / CONFIG)
        except GenlabError:
            return path  # a damaged folder: Run.open names what is wrong with it
        check_precision(path, record, rt.precision)
    return path


def _rerun(args: argparse.Namespace) -> int:
    """``genlab rerun RUN ...``: RUN's config.json says the study, whose flags parse the rest."""
    from genlab import rerun

    source = rerun.source(args.run)
    flags = _rerun_parser(source).parse_args(args.flags)
    if flags.precision is None:  # computed as RUN was (it is refused in another arithmetic)
        flags.precision = source.precision or "auto"
    rt = _runtime(flags)
    planned = rerun.plan(
        source,
        _settings(source.study, flags),
        precision=rt.precision,
        out=flags.out,
        from_checkpoint=flags.from_checkpoint,
    )
    changed = " ".join(f"{flag(k)} {_show(v)}" for k, v in planned.changes.items())
    how = f", continued after epoch {planned.epoch}" if planned.epoch is not None else ""
    rt.log(f"rerun of {source.path}: {changed or 'no change'}{how}")
    _print_config(source.study, planned.config, rt.log)
    print(f"results: {rerun.start(planned, rt, force=flags.force)}")
    return 0


# The settings most studies share, by what they are about; any other setting is grouped under
# the study whose config class declares it (pruning's config extends random-labels').
_GROUPS = {
    "data": ("dataset", "data_dir", "train_subset", "test_subset"),
    "model": ("model", "width", "kernel"),
    "training": ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "seed"),
}
_OUTPUT = ("keep_checkpoints",)  # the last group, "output"


def config_lines(study: Any, cfg: Any, width: int = 80) -> list[str]:
    """The resolved config, one setting per line as it is typed (``--width 16``), grouped,
    aligned, wrapped within ``width`` columns."""
    from genlab.studies import STUDIES

    owners = {s.config.__module__: s.name for s in STUDIES.values()}
    grouped: dict[str, list[str]] = {name: [] for name in _GROUPS}
    names = [f.name for f in dataclasses.fields(cfg)]  # a base class's fields first
    for name in names:
        group = next((g for g, keys in _GROUPS.items() if name in keys), None)
        if group is None and name not in _OUTPUT:
            first = next(
                c for c in reversed(type(cfg).__mro__) if name in vars(c).get("__annotations__", {})
            )
            group = owners.get(first.__module__, first.__module__.rsplit(".", 1)[-1])
        grouped.setdefault(group or "output", []).append(name)
    grouped["output"] = grouped.pop("output", [])  # last
    grouped = {group: keys for group, keys in grouped.items() if keys}
    label = max(map(len, grouped)) + 2
    column = max(len(flag(n)) for n in names) + 2
    lines = [f"{study.name} config:"]
    for group, keys in grouped.items():
        for i, name in enumerate(keys):
            head = f"  {group if i == 0 else '':<{label}}{flag(name):<{column}}"
            value = textwrap.wrap(_show(getattr(cfg, name)), max(width - len(head), 20)) or [""]
            lines.append((head + value[0]).rstrip())
            lines += [" " * len(head) + more for more in value[1:]]
    return lines


def _print_config(study: Any, cfg: Any, log: Callable[[str], None]) -> None:
    for line in config_lines(study, cfg):
        log(line)


def _sweep(args: argparse.Namespace, rt: Any) -> int:
    from genlab import launchers, sweeps
    from genlab.studies import STUDIES

    study = STUDIES[args.study]
    # a sequence setting (the map's --widths, --views) is one value; any other flag's values
    # are swept, and a bare boolean flag means true
    sequences = sequence_fields(study.config)
    filed, given = _file_settings(study, args), _settings(study, args)
    values = {
        **{k: [v] for k, v in filed.items()},  # a file's value is one value
        **{
            k: [tuple(v)] if k in sequences else (v or [True]) if isinstance(v, list) else [v]
            for k, v in given.items()
        },
    }
    with _blaming(args, filed, given):
        sweep = sweeps.build(
            study,
            values,
            args.out,
            seeds=args.seeds,
            name=getattr(args, "name", None),
            preset=getattr(args, "preset", None),
        )
    index = None if args.index is None else sweeps.parse_index(args.index, len(sweep.configs))
    slurm = {k[6:]: v for k, v in vars(args).items() if k.startswith("slurm_")}
    if slurm and args.launcher != "slurm":  # named: the generic check says --slurm-*
        given = ", ".join(f"--slurm-{k.replace('_', '-')}" for k in slurm)
        raise GenlabError(f"{given}: only with --launcher slurm")
    launchers.check_options(
        args.launcher,
        scheduler=args.scheduler,
        wait=not args.no_wait,
        index=args.index,
        force=args.force,
    )
    if args.launcher != "local" and not args.dry_run:
        return _launch(args, sweep, slurm, rt)
    if args.list:
        for i, _, path in sweep.members(index):
            print(f"{i:>4}  {path.name}  {sweeps.member_state(path)}")
        return 0
    _print_members(sweep, print if args.dry_run else rt.log, index)
    if args.dry_run:
        return 0
    print(f"results: {sweeps.run_sweep(sweep, rt, index=index, force=args.force)}")
    return 0


def _launch(args: argparse.Namespace, sweep: Any, slurm: dict[str, Any], rt: Any) -> int:
    """``genlab sweep ... --launcher slurm|dask``: submit, wait, aggregate (or list). The
    device is the nodes' (``rt`` here is this machine's: logging, threads)."""
    from genlab import launchers

    options: dict[str, Any] = {
        "device": args.device,
        "precision": args.precision,
        "compile": args.compile,
        "threads": args.threads,
        "tensorboard": args.tensorboard,
        "scheduler": args.scheduler,
    }
    if args.launcher == "slurm":
        from genlab.launchers.slurm import SlurmOptions, parse_extra

        slurm["extra"] = parse_extra(slurm.get("extra", []))
        options["slurm"] = SlurmOptions.of(slurm)
    if args.list:
        for line in launchers.listing(sweep, args.launcher, rt, **options):
            print(line)
        return 0
    folder = launchers.send(
        sweep,
        args.launcher,
        rt,
        wait=not args.no_wait,
        announce=lambda: _print_members(sweep, rt.log),
        **options,
    )
    if not args.no_wait:
        print(f"results: {folder}")
    return 0


def _print_members(sweep: Any, log: Any, index: range | None = None) -> None:
    swept = sweep.swept
    log(f"{sweep.study.name} sweep: {len(sweep.configs)} members in {sweep.folder}")
    for i, cfg, path in sweep.members(index):
        shown = " ".join(f"{flag(k)} {_show(getattr(cfg, k))}" for k in swept)
        log(f"  [{i}] {path.name}  {shown}")
