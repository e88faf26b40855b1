"""genlab: a lab for the science of how deep networks generalize.

The public API (see genlab.api): ``run``, ``sweep``, ``analyze``, ``load_run``, ``runs_frame``.
"""

__version__ = "0.1.0"

from genlab.api import LoadedRun, analyze, load_run, run, runs_frame, sweep  # noqa: E402

__all__ = ["LoadedRun", "__version__", "analyze", "load_run", "run", "runs_frame", "sweep"]
