"""Measurements on trained runs: nothing here trains.

``measures`` holds the estimators (linear CKA, PWCCA) as functions of tensors; ``invariance``
measures one network under a view; ``similarity`` and ``criticality`` are ``genlab analyze``'s
two analyses over sets of run folders, each written into an analysis folder (``folders``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def analyses() -> dict[str, tuple[type, str]]:
    """The registry of analyses: name -> (its config class, its module docstring). Imported
    when asked for, not with the package: the invariance measures are imported by the studies,
    which the analyses import."""
    from genlab.analysis import criticality, similarity

    return {
        "similarity": (similarity.Config, similarity.__doc__ or ""),
        "criticality": (criticality.Config, criticality.__doc__ or ""),
    }


def analyze(
    kind: str,
    paths: list[Path],
    cfg: Any,
    rt: Any,
    out: Path,
    *,
    force: bool = False,
    data_dir: str | None = None,
) -> Path:
    """Run the analysis ``kind`` on the finished runs at or below ``paths`` into
    ``out/analysis/<kind>-<hash>`` (``genlab.analysis.folders``); returns the folder. A finished
    one is kept unless ``force``. The module of the kind gives ``measure(trained, groups, cfg,
    rt) -> results`` and may give ``check(trained)``, run before anything is measured."""
    import importlib

    from genlab.analysis import folders
    from genlab.analysis.trained import load
    from genlab.config import to_dict
    from genlab.errors import GenlabError
    from genlab.reporting import plot_analysis
    from genlab.runs import environment

    if kind not in analyses():
        raise GenlabError(f"{kind!r}: no such analysis (valid: {', '.join(analyses())})")
    module = importlib.import_module(f"genlab.analysis.{kind}")
    trained, groups = load(paths, rt, data_dir=data_dir)
    settings = to_dict(cfg)
    refs = [t.ref for t in trained]
    content = folders.record(kind, settings, refs)
    folder = folders.analysis_dir(kind, settings, refs, out)
    if folders.check_existing(folder, content, force=force):
        rt.log(f"{folder}: finished already (use --force to compute it again)")
        return folder
    getattr(module, "check", lambda _trained: None)(trained)
    rt.log(f"{kind} of {len(trained)} runs in {len(groups)} groups")
    results = module.measure(trained, groups, cfg, rt)
    env = environment(None, rt.environment())
    return folders.write_folder(folder, content, env, results, plot_analysis)
