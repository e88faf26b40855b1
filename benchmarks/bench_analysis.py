"""``genlab analyze`` at the issue's scale: similarity and criticality of a sweep of 18 width-16
runs (random-labels, label noise 0, 0.5, 1 x 6 seeds) with a 2,000-image probe, side by side in
one process.

    .venv/bin/python benchmarks/bench_analysis.py                 # CIFAR-10 images, 2 windows
    .venv/bin/python benchmarks/bench_analysis.py --dataset digits --seeds 2 --windows 1

The runs are trained first (not timed; --epochs, 2,000 training images). Each window then
times, on the same rebuilt runs: (a) rebuilding the runs (data, models, final checkpoints),
(b) similarity with CKA alone, (c) with PWCCA alone, (d) criticality. Printed: seconds per
window and the median per phase, the ratio of each phase to (b), and the memory the estimators
hold: the (runs x layers)^2 HSIC accumulator and one minibatch's U-centred Grams for CKA, the
per-layer joint covariances for PWCCA, against the N x N Gram matrices a full-batch CKA of the
same probe would hold. Data: ../shared/data/cifar10-jpeg (or --data-dir) when present; else the
embedded digits.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import genlab
from genlab.analysis import criticality, similarity
from genlab.analysis.trained import load
from genlab.training import configure_threads
from genlab.training.runtime import Runtime

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="default: cifar10 if present, else digits")
    parser.add_argument("--data-dir", default=str(SHARED))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--probe", type=int, default=2000)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    threads = configure_threads(args.threads)
    cifar = args.dataset in (None, "cifar10") and Path(args.data_dir).is_dir()
    dataset = "cifar10" if cifar else (args.dataset or "digits")
    settings = {
        "dataset": dataset,
        "width": args.width,
        "epochs": args.epochs,
        "train_subset": args.train_subset if cifar else None,
        "optimizer": "adam",
        "lr": 0.001,
        "label_noise": [0.0, 0.5, 1.0],
        "seeds": args.seeds,
        "quiet": True,
        "threads": args.threads,
        **({"data_dir": args.data_dir} if cifar else {}),
    }
    rt = Runtime.resolve(device="cpu", precision="fp32", threads=args.threads, quiet=True)
    print(f"torch {torch.__version__}, {threads} threads, {dataset}, width {args.width}")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        folder = genlab.sweep("random-labels", out=tmp, **settings)
        print(f"trained {3 * args.seeds} runs in {time.perf_counter() - t:.0f} s (not timed below)")
        phases: dict[str, list[float]] = {"load": [], "cka": [], "pwcca": [], "criticality": []}
        for window in range(args.windows):
            t = time.perf_counter()
            trained, groups = load([folder], rt)
            phases["load"].append(time.perf_counter() - t)
            for measure in ("cka", "pwcca"):
                cfg = similarity.Config(probe=args.probe, measure=(measure,))
                t = time.perf_counter()
                results = similarity.measure(trained, groups, cfg, rt)
                phases[measure].append(time.perf_counter() - t)
            t = time.perf_counter()
            criticality.measure(trained, groups, criticality.Config(), rt)
            phases["criticality"].append(time.perf_counter() - t)
            shown = "  ".join(f"{k} {v[-1]:.1f} s" for k, v in phases.items())
            print(f"window {window + 1}: {shown}")
    medians = {k: statistics.median(v) for k, v in phases.items()}
    print("\nmedian seconds (ratio to CKA):")
    for k, v in medians.items():
        print(f"  {k:<12} {v:8.1f}   {v / medians['cka']:5.2f}x")
    total = sum(medians.values())
    print(f"  {'all':<12} {total:8.1f}   (both analyses of {len(trained)} runs)")
    _memory(trained, results, args.probe)


def _memory(trained: list, results: dict, probe: int) -> None:
    """What the estimators hold, in MB, from the shapes (not measured)."""
    n_runs, layers = len(trained), results["layers"]
    n = results["probe"]["num_images"]
    batch = -(-n // results["probe"]["num_batches"])
    M = n_runs * len(layers)
    t = trained[0]
    images, _ = similarity.probe_images(trained, 4)
    channels = [similarity._neurons(f).shape[1] for _, f in similarity.features(t, images)]
    mb = 1 / 2**20
    print("\nmemory held by the estimators (float64):")
    print(
        f"  CKA: HSIC accumulator {M}x{M}: {M * M * 8 * mb:.2f} MB; one minibatch's U-centred "
        f"Grams {M} x {batch}^2: {M * batch * batch * 8 * mb:.0f} MB"
    )
    print(f"  full-batch CKA instead: {M} Grams of {n}^2: {M * n * n * 8 * mb:.0f} MB")
    cov = sum((n_runs * c) ** 2 for c in channels) * 8 * mb
    print(
        f"  PWCCA: joint covariances per layer ({', '.join(str(n_runs * c) for c in channels)} "
        f"variables): {cov:.0f} MB"
    )


if __name__ == "__main__":
    main()
