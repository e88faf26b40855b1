"""Measurements on trained runs: nothing here trains.

``measures`` holds the estimators (linear CKA, PWCCA) as functions of tensors; ``invariance``
measures one network under a view; ``similarity`` and ``criticality`` are ``genlab analyze``'s
two analyses over sets of run folders, each written into an analysis folder (``folders``).
"""

from __future__ import annotations

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


def analyze(kind: str, *args: Any, **kwargs: Any) -> Any:
    """Run the analysis ``kind`` (``genlab.analysis.<kind>.analyze``)."""
    import importlib

    if kind not in analyses():
        from genlab.errors import GenlabError

        raise GenlabError(f"{kind!r}: no such analysis (valid: {', '.join(analyses())})")
    return importlib.import_module(f"genlab.analysis.{kind}").analyze(*args, **kwargs)
