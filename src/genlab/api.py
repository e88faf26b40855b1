"""The Python API: what the command line does, from a notebook or a script.

    import genlab
    path = genlab.run("robustness", dataset="digits", width=8, epochs=5)
    folder = genlab.sweep("robustness", width=[4, 8], augment=["none", "double"], seeds=3)
    run = genlab.load_run(path)            # config, model (eval mode), normalizer, metrics
    frame = genlab.runs_frame([folder])    # one row per run: settings and summary numbers
    analysis = genlab.analyze("similarity", [folder], probe=500)   # -> the analysis folder

Settings are the config fields of the study (``genlab run STUDY --help`` lists them, with
underscores for dashes); a Config built in Python is checked as one from the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.fileio import read_json


def _runtime(
    device: str, precision: str, compile: bool, threads: int | None, quiet: bool, tensorboard: bool
) -> Any:
    from genlab.training.runtime import Runtime

    return Runtime.resolve(
        device=device,
        precision=precision,
        compile=compile,
        threads=threads,  # None: GENLAB_THREADS, else one per physical core (as the CLI)
        quiet=quiet,
        tensorboard=tensorboard,
    )


def run(
    study: str,
    *,
    out: str | Path = "runs",
    preset: str | None = None,
    force: bool = False,
    quiet: bool = False,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    threads: int | None = None,
    tensorboard: bool = False,
    **settings: Any,
) -> Path:
    """Run (or resume, or find finished) one run of ``study``; returns its run folder."""
    from genlab.launch import run_dir_for, run_members
    from genlab.studies import study as find
    from genlab.sweeps import resolve

    entry = find(study)
    cfg = resolve(entry, preset, settings)
    rt = _runtime(device, precision, compile, threads, quiet, tensorboard)
    path = run_dir_for(entry, cfg, Path(out))
    run_members(entry, [(cfg, path)], rt, force=force)
    return path


def sweep(
    study: str,
    *,
    out: str | Path = "runs",
    name: str | None = None,
    seeds: int | None = None,
    index: str | None = None,
    preset: str | None = None,
    force: bool = False,
    quiet: bool = False,
    device: str = "auto",
    precision: str = "auto",
    compile: bool = False,
    threads: int | None = None,
    tensorboard: bool = False,
    launcher: str = "local",
    scheduler: str | None = None,
    slurm: dict[str, Any] | None = None,
    wait: bool = True,
    **settings: Any,
) -> Path:
    """Run a sweep of ``study``: a list value sweeps that setting (the Cartesian product of all
    lists; a sequence setting such as the map's ``widths`` takes a list of lists); ``seeds=N``
    adds seeds 0..N-1 (or give ``seed=[...]``); ``name`` runs a named sweep (e.g. ``"report"``,
    ``"compare"``) with single values. Returns the sweep folder.

    ``launcher="slurm"`` submits it as one job array (``slurm``: the ``SlurmOptions`` fields,
    e.g. ``{"partition": "gpu", "gpus_per_task": 1, "extra": {"account": "lab"}}``);
    ``launcher="dask"`` sends it to the Dask scheduler at ``scheduler`` (or a local cluster);
    ``wait=False`` returns once submitted (``genlab.launchers``)."""
    from genlab import launchers, sweeps
    from genlab.config import sequence_fields
    from genlab.studies import study as find

    entry = find(study)
    sequences = sequence_fields(entry.config)

    def options(key: str, value: Any) -> list[Any]:
        if key in sequences:  # widths=[1, 2] is one value; widths=[[1, 2], [4]] two
            nested = isinstance(value, list) and value and isinstance(value[0], (list, tuple))
            return [tuple(v) for v in value] if nested else [tuple(value)]
        return list(value) if isinstance(value, list) else [value]

    values = {k: options(k, v) for k, v in settings.items()}
    planned = sweeps.build(entry, values, Path(out), seeds=seeds, name=name, preset=preset)
    picked = None if index is None else sweeps.parse_index(index, len(planned.configs))
    launchers.check_options(
        launcher, slurm=slurm is not None, scheduler=scheduler, wait=wait, index=index, force=force
    )
    elsewhere = launcher != "local"  # the nodes resolve the device
    rt = _runtime("cpu" if elsewhere else device, precision, compile, threads, quiet, tensorboard)
    if not elsewhere:
        return sweeps.run_sweep(planned, rt, index=picked, force=force)
    options: dict[str, Any] = {"scheduler": scheduler}
    if launcher == "slurm":
        from genlab.launchers.slurm import SlurmOptions

        options["slurm"] = SlurmOptions.of(slurm or {})
    return launchers.send(
        planned,
        launcher,
        rt,
        wait=wait,
        device=device,
        precision=precision,
        compile=compile,
        threads=threads,
        tensorboard=tensorboard,
        **options,
    )


def analyze(
    kind: str,
    runs: list[str | Path] | str | Path,
    *,
    out: str | Path = "runs",
    force: bool = False,
    quiet: bool = False,
    device: str = "auto",
    threads: int | None = None,
    data_dir: str | None = None,
    **settings: Any,
) -> Path:
    """``genlab analyze KIND RUNS...``: "similarity" or "criticality" of the finished runs at
    or below ``runs`` (run or sweep folders); ``settings`` are the analysis' flags (``probe=``,
    ``measure=``, ``batch_size=``). Returns the analysis folder (OUT/analysis/<kind>-<hash>)."""
    from genlab.analysis import analyses
    from genlab.analysis import analyze as run_analysis
    from genlab.config import from_dict
    from genlab.training.runtime import Runtime

    if kind not in analyses():
        raise GenlabError(f"{kind!r}: no such analysis (valid: {', '.join(analyses())})")
    cfg = from_dict(analyses()[kind][0], settings)
    rt = Runtime.resolve(device=device, precision="fp32", threads=threads, quiet=quiet)
    paths = [Path(runs)] if isinstance(runs, (str, Path)) else [Path(p) for p in runs]
    return run_analysis(kind, paths, cfg, rt, Path(out), force=force, data_dir=data_dir)


@dataclass
class LoadedRun:
    """A run folder read back: ``model`` (eval mode, the checkpoint's weights, on ``device``) and
    ``normalize`` are None for studies without a network of their own (linreg, the map)."""

    path: Path
    study: str
    config: Any  # the study's Config
    model: Any  # torch.nn.Module | None
    normalize: Any  # genlab.training.Normalizer | None
    metrics: Any  # pandas.DataFrame, one row per record of metrics.jsonl
    summary: dict[str, Any] | None  # None: unfinished
    epoch: int | None  # the checkpoint's epoch


def load_run(path: str | Path, *, device: str = "cpu") -> LoadedRun:
    """Read a run folder: its config, its trained model, normalizer, metrics and summary."""
    import pandas as pd

    from genlab.runs import CHECKPOINT, CONFIG, SUMMARY, Run, check_files, read_dataset
    from genlab.studies import study as find

    path = Path(path)
    if not (path / CONFIG).is_file():
        raise GenlabError(f"{path}: not a run folder (no {CONFIG})")
    check_files(path)
    record = read_json(path / CONFIG)
    entry = find(record["study"])
    names = {f.name for f in dataclasses.fields(entry.config)}
    config = entry.config(
        **{  # older folders also list runtime fields (device, ...): dropped
            k: tuple(v) if isinstance(v, list) else v
            for k, v in record["config"].items()
            if k in names
        }
    )
    run = Run(path, "resume")
    model = normalize = epoch = None
    if entry.trains and (path / CHECKPOINT).exists():
        import torch

        from genlab.models import apply_invariance, make_model
        from genlab.training import Normalizer, resolve_device
        from genlab.training.loop import load_state

        data = read_dataset(path)
        state = run.load_checkpoint()
        assert state is not None
        dev = resolve_device(device)
        model = make_model(
            config.model, config.width, config.kernel, len(data["classes"]), data["image_shape"][-1]
        )
        model = apply_invariance(model, getattr(config, "invariance", "none"))
        load_state(model, None, state, path / CHECKPOINT)
        model = model.to(dev, memory_format=torch.channels_last).eval()
        stats = data["normalization"]
        normalize = Normalizer.from_stats(stats["mean"], stats["std"], dev)
        epoch = int(state["epoch"])
    summary = read_json(path / SUMMARY) if (path / SUMMARY).exists() else None
    return LoadedRun(
        path, entry.name, config, model, normalize, pd.DataFrame(run.metrics()), summary, epoch
    )


def runs_frame(paths: list[str | Path] | str | Path) -> Any:
    """One pandas DataFrame, a row per run folder at or below ``paths``: ``path``, ``study``,
    ``sweep`` (the sweep folder's name, if in one), ``state`` (finished or unfinished), a column
    per identity setting and per summary number (nested keys joined with dots)."""
    import pandas as pd

    from genlab.aggregate import flatten
    from genlab.runs import CONFIG, SUMMARY, SWEEP, find_runs

    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows = []
    for folder in find_runs([Path(p) for p in paths]):
        record = read_json(folder / CONFIG)
        finished = (folder / SUMMARY).exists()
        summary = flatten(read_json(folder / SUMMARY)) if finished else {}
        rows.append(
            {
                "path": str(folder),
                "study": record.get("study"),
                "sweep": folder.parent.name if (folder.parent / SWEEP).exists() else None,
                "state": "finished" if finished else "unfinished",
                **summary,
                **record.get("identity", {}),  # a setting repeated in the summary: one column
            }
        )
    return pd.DataFrame(rows)
