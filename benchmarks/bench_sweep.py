"""A sweep against its members one by one: ``genlab.sweep`` of a flip-study (robustness) sweep
against the same members, each as its own ``genlab.run``, side by side in one process.

    .venv/bin/python benchmarks/bench_sweep.py            # CIFAR-10 images, widths 8 16, 3 seeds
    .venv/bin/python benchmarks/bench_sweep.py --dataset digits --epochs 1 --seeds 2 \\
        --widths 4 8 --windows 1                          # the smoke run: 2 min on 2 busy cores

Each window times (a) ``genlab.sweep(..., seeds=S, width=[...])`` of all members into a fresh
temporary folder and (b) the same members, width by width and seed by seed, each as
``genlab.run(...)`` into another fresh temporary folder; a and b swap order every other window,
so drift on a shared machine falls on both. Both are what a user runs: data loading, training,
evaluation, the views after training and figures; (a) also writes the aggregate over seeds and
the sweep's figures. Printed: seconds per window, the medians, the ratio b/a (> 1: the sweep is
faster), and whether (a) and (b) gave identical final accuracies per member. The sweep trains
members together only where ``genlab.training.grouped.plan`` says so, printed first: on a
2-core CPU widths 8 and 16 with 3 seeds train one after another on all threads, as the single
runs do, so the numbers are bit-identical; width 4 trains in lanes of one thread each, equal to
a single run on one thread (checked), not to one on two (the summation order differs); on CUDA
widths <= 16 train as one grouped model (equal up to float summation order). Data:
../shared/data/cifar10-jpeg (or --data-dir) when present, 5,000 of its training images; else
the embedded digits.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import genlab
from genlab.data import load_dataset
from genlab.fileio import read_json
from genlab.models import Conv4
from genlab.runs import SUMMARY
from genlab.training import configure_threads, resolve_device
from genlab.training.grouped import Plan, plan

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"
STUDY = "robustness"


def time_sweep(settings: dict, widths: list[int], seeds: int) -> tuple[float, dict]:
    """(a): seconds, and run id -> final accuracies of every member."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        folder = genlab.sweep(STUDY, out=tmp, seeds=seeds, width=list(widths), **settings)
        seconds = time.perf_counter() - t
        return seconds, {p.name: read_json(p / SUMMARY)["final_acc"] for p in _members(folder)}


def time_one_by_one(settings: dict, widths: list[int], seeds: int) -> tuple[float, dict]:
    """(b): the same members in the sweep's order (width slowest, seed fastest), one run each."""
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        paths = [
            genlab.run(STUDY, out=tmp, width=width, seed=seed, **settings)
            for width in widths
            for seed in range(seeds)
        ]
        seconds = time.perf_counter() - t
        return seconds, {p.name: read_json(p / SUMMARY)["final_acc"] for p in paths}


def _members(folder: Path) -> list[Path]:
    return [folder / m["run_id"] for m in read_json(folder / "sweep.json")["members"]]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", help="default: cifar10 if --data-dir exists, else digits")
    parser.add_argument("--data-dir", type=Path, default=SHARED, help="CIFAR-10 image folder")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--train-subset", type=int, help="training images (default: 5000 of CIFAR-10, all digits)"
    )
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    threads = configure_threads()
    dataset = args.dataset or ("cifar10" if args.data_dir.is_dir() else "digits")
    subset = args.train_subset or (5000 if dataset == "cifar10" else None)
    settings = {"dataset": dataset, "epochs": args.epochs, "train_subset": subset}
    if dataset == "cifar10":
        settings["data_dir"] = str(args.data_dir)
    settings.update(quiet=True, threads=threads)
    load_dataset(dataset, settings.get("data_dir"), quiet=True)  # fills the cache
    print(
        f"torch {torch.__version__}, {threads} threads, {STUDY} on {dataset} "
        f"(train subset {subset or 'all'}), widths {args.widths}, {args.seeds} seeds, "
        f"{args.epochs} epochs: {len(args.widths) * args.seeds} members"
    )
    device = resolve_device("auto")  # genlab.run's and genlab.sweep's default
    for width in args.widths:
        how = plan(Conv4(width), device, args.seeds)
        together = f"in chunks of {how.chunk}, {how.lanes} lanes"
        shown = together if how != Plan() else "one after another on all threads"
        print(f"  width {width} on {device}: the sweep trains its {args.seeds} seeds {shown}")
    seconds: dict[str, list[float]] = {"sweep": [], "one by one": []}
    identical = []
    for w in range(args.windows):
        order = [time_sweep, time_one_by_one] if w % 2 == 0 else [time_one_by_one, time_sweep]
        results = {f.__name__: f(settings, args.widths, args.seeds) for f in order}
        (a, acc_a), (b, acc_b) = results["time_sweep"], results["time_one_by_one"]
        seconds["sweep"].append(a)
        seconds["one by one"].append(b)
        identical.append({rid: acc_a[rid] == acc_b[rid] for rid in acc_b})
        print(f"window {w + 1}: sweep {a:.2f} s, one by one {b:.2f} s")
    a, b = (statistics.median(v) for v in seconds.values())
    print(f"medians over {args.windows} windows: sweep {a:.2f} s, one by one {b:.2f} s")
    print(f"ratio b/a (one by one / sweep): {b / a:.2f}x")
    for rid in identical[-1]:
        same = all(window[rid] for window in identical)
        print(f"  {rid}: final accuracies {'bit-identical' if same else 'differ'}")
        if not same:
            print(f"    sweep {acc_a[rid]}\n    alone {acc_b[rid]}")
    print(f"identical in every window, every member: {all(all(w.values()) for w in identical)}")


if __name__ == "__main__":
    main()
