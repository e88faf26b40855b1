"""Analysis folders: ``genlab analyze KIND RUNS...`` writes ``OUT/analysis/<kind>-<hash>/``.

An analysis folder holds ``analysis.json`` (the kind, its settings and the runs it read, each by
path, study and identity), ``env.json``, the results (``similarity.json`` or
``criticality.json``) and ``figures/``. Its name hashes the kind, the settings and the runs'
identities (not their paths: the same runs moved elsewhere are the same analysis).

The folder is built under a temporary name and renamed into place when its results are
written, so a failed or killed analysis leaves nothing half-made; an analysis is not resumed
(it is minutes of evaluation, not training), the same command computes it again. A finished
one is reported as such and kept; ``--force`` replaces it (the old one is removed only after
the new one is complete).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.errors import GenlabError
from genlab.fileio import read_object, remove_stale, temp_prefix, write_error, write_json
from genlab.runs import ANALYSES, ANALYSIS, CRITICALITY, ENV, SIMILARITY, check_out

RESULTS = {"similarity": SIMILARITY, "criticality": CRITICALITY}


@dataclass(frozen=True)
class RunRef:
    """A run an analysis reads: its folder, study and identity."""

    path: Path
    study: str
    identity: dict[str, Any]

    def record(self) -> dict[str, Any]:
        return {"path": str(self.path), "study": self.study, "identity": self.identity}


def analysis_dir(kind: str, settings: dict[str, Any], runs: list[RunRef], out: Path) -> Path:
    """``out/analysis/<kind>-<hash>``: the hash of the kind, settings and run identities (in
    any order: the same runs found in another order are the same analysis)."""
    identities = sorted(json.dumps([r.study, r.identity], sort_keys=True) for r in runs)
    blob = json.dumps({"kind": kind, "settings": settings, "runs": identities}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
    return check_out(out) / ANALYSES / f"{kind}-{digest}"


def record(kind: str, settings: dict[str, Any], runs: list[RunRef]) -> dict[str, Any]:
    return {"analysis": kind, "settings": settings, "runs": [r.record() for r in runs]}


def finished(folder: Path, kind: str) -> bool:
    """Whether ``folder`` holds the finished analysis ``kind`` (its results written)."""
    return (folder / RESULTS[kind]).is_file()


def check_existing(folder: Path, wanted: dict[str, Any], *, force: bool) -> bool:
    """True when ``folder`` already holds this analysis, finished (and not ``force``); a
    GenlabError when it holds something else and ``force`` is not given."""
    if not (folder.exists() or folder.is_symlink()):
        return False
    if not folder.is_dir():
        raise GenlabError(f"{folder}: exists and is not a folder")
    if force:
        return False
    target = folder / ANALYSIS
    old = read_object(target) if target.exists() else None
    if old is None or old.get("analysis") != wanted["analysis"]:
        raise GenlabError(f"{folder}: holds something else than this analysis; use --force")

    def runs(content: dict[str, Any]) -> list[str]:
        return sorted(
            json.dumps([r.get("study"), r.get("identity")], sort_keys=True)
            for r in content.get("runs") or []
            if isinstance(r, dict)
        )

    same = (old.get("settings"), runs(old)) == (wanted["settings"], runs(wanted))
    if not same:
        raise GenlabError(f"{target}: holds another analysis; use --force to replace it")
    return finished(folder, wanted["analysis"])


def write_folder(
    folder: Path,
    content: dict[str, Any],
    env: dict[str, Any],
    results: dict[str, Any],
    draw: Callable[[Path], list[Path]],
) -> Path:
    """Write the analysis folder: built under a temporary name (analysis.json, env.json, the
    results, then the figures ``draw(folder)`` makes), renamed into place when complete; an
    existing folder (``--force``) is removed only after that."""
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(parent, e) from None
    remove_stale(parent)  # a folder a killed analysis left under its temporary name
    building = parent / f"{temp_prefix(folder)}building.tmp"
    old = parent / f"{temp_prefix(folder)}old.tmp"
    try:
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        write_json(building / ANALYSIS, content)
        write_json(building / ENV, env)
        write_json(building / RESULTS[content["analysis"]], results)
        draw(building)
        if folder.exists():
            os.replace(folder, old)
        os.replace(building, folder)
    except OSError as e:
        raise write_error(folder, e) from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder


__all__ = ["ANALYSES", "RESULTS", "RunRef", "analysis_dir", "check_existing", "write_folder"]
