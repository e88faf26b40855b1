"""``genlab demo``: every study, small, on the embedded digits; prints a table and the paths.

Flip robustness: Conv-4 width 16 on the 1,347 digit training images, baseline and ``double``
augmentation. Digits make the flip's effect easy to read: 0, 1 and 8 look alike upside down,
6 and 9 swap, and the rest become strangers.
"""

from __future__ import annotations

from pathlib import Path

from genlab.config import with_overrides
from genlab.launch import run_study
from genlab.runs import FIGURES, read_json
from genlab.studies import robustness
from genlab.training.engine import LogFn

DEMO_ROBUSTNESS = {"dataset": "digits", "width": 16, "epochs": 12, "lr": 0.05, "seed": 0}


def demo(out: Path, *, force: bool = False, quiet: bool = False, log: LogFn = print) -> list[Path]:
    base = with_overrides(robustness.Config(), DEMO_ROBUSTNESS)
    paths = []
    for augment in ("none", "double"):
        cfg = with_overrides(base, {"augment": augment})
        log(f"\n== flip robustness, augment={augment} ==")
        paths.append(run_study("robustness", cfg, out=out, force=force, quiet=quiet, log=log))
    rows = []
    for path in paths:
        cfg, summary = read_json(path / "config.json")["config"], read_json(path / "summary.json")
        acc = summary["final_acc"]
        rows.append(
            (cfg["augment"], summary["params"], acc["test"], acc["test_vflip"], summary["seconds"])
        )
    print("\nFlip robustness on digits (Conv-4 width 16, 12 epochs):")
    print(f"{'augment':<8} {'params':>8} {'test acc':>9} {'flipped acc':>12} {'seconds':>8}")
    for augment, n, test, flipped, seconds in rows:
        print(f"{augment:<8} {n:>8,} {test:>9.3f} {flipped:>12.3f} {seconds:>8.1f}")
    print("\nruns and figures:")
    for path in paths:
        print(f"  {path}  (figures in {path / FIGURES})")
    return paths
