"""The studies. Each module reads top to bottom and offers the same few names:
``Config`` (a frozen dataclass), ``PRESETS``, ``RUN_ID_KEYS`` and ``run(cfg, run, log=, quiet=)``."""

from genlab.studies import robustness

STUDIES = {"robustness": robustness}

__all__ = ["STUDIES"]
