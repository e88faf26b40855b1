"""The studies. Each module reads top to bottom and offers the same few names:
``Config`` (a frozen dataclass), ``PRESETS``, ``RUN_ID_KEYS`` and ``run(cfg, run, log=, quiet=)``."""

from genlab.studies import linreg, memorization_map, random_labels, robustness

STUDIES = {
    "robustness": robustness,
    "random-labels": random_labels,
    "memorization-map": memorization_map,
    "linreg": linreg,
}

__all__ = ["STUDIES"]
