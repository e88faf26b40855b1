"""Speed of the linreg study: the default run, the default ``--sweep-p``, and per-sample SGD.

    .venv/bin/python benchmarks/bench_linreg.py               # 3 repeats each, medians
    .venv/bin/python benchmarks/bench_linreg.py --repeats 1 --no-sweep

Targets (issue 4): the default study (n=500, p=1000: spectrum, min-norm, ridge path, 1,000
epochs of GD and per-sample SGD, the scikit-learn cross-check) under 30 s on 2 CPU cores, the
default sweep under 2 minutes. Each repeat runs the study as ``genlab run linreg`` does, figures
included, into a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import genlab
from genlab.fileio import read_json
from genlab.models import linear as lin
from genlab.runs import SUMMARY
from genlab.studies import linreg
from genlab.training import configure_threads


def _time_study(overrides: dict, repeats: int) -> tuple[list[float], dict]:
    wall, summary = [], {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            path = genlab.run("linreg", out=Path(tmp), quiet=True, **overrides)
            wall.append(time.perf_counter() - t)
            summary = read_json(path / SUMMARY)
    return wall, summary


def _time_sgd_updates(repeats: int) -> list[float]:
    """Microseconds per per-sample SGD update at n=500, p=1000 (20 epochs = 10,000 updates)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((500, 1000)), rng.standard_normal(500)
    out = []
    for _ in range(repeats):
        with threadpool_limits(limits=1, user_api="blas"):  # as the study runs it
            t = time.perf_counter()
            lin.sgd(x, y, 0.001, 20, 1, np.random.default_rng(1))
            out.append((time.perf_counter() - t) / (20 * 500) * 1e6)
    return out


def _line(name: str, values: list[float], unit: str = "s") -> str:
    return (
        f"{name:<44} median {statistics.median(values):8.2f} {unit}  "
        f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} runs)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-sweep", action="store_true", help="skip the default --sweep-p timing")
    args = parser.parse_args(argv)
    configure_threads()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}")
    print(_line("per-sample SGD update, p=1000", _time_sgd_updates(args.repeats), "us"))
    wall, s = _time_study({}, args.repeats)
    print(_line("default study (genlab run linreg)", wall))
    print(f"  last run's parts (s): {s['seconds_by_part']}")
    if not args.no_sweep:
        wall, s = _time_study({"sweep_p": True}, args.repeats)
        print(_line("default study + sweep (--sweep-p)", wall))
        print(
            f"  sweep alone, last run: {s['seconds_by_part']['sweep']:.2f} s "
            f"({len(s['sweep'])} values of p x {linreg.Config().sweep_seeds} seeds)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
