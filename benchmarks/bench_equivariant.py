"""Cost of built-in invariance: one SGD step (forward + backward, batch 64, 32x32x3, channels_last)
for Conv-4, conv4-vflip and conv4-d4 at the same and at the parameter-matched width, and for
Conv-4 wrapped in ``--invariance average``, side by side in one run.

    .venv/bin/python benchmarks/bench_equivariant.py --width 8
    .venv/bin/python benchmarks/bench_equivariant.py --width 16 --steps 10 --repeats 5

Each model takes ``steps`` steps, ``repeats`` times; the *minimum* per-step time is reported (the
least disturbed by other processes on a shared CPU). Expect, at the same width, about |G| times
Conv-4's parameters and |G|^2 times its multiply-adds after the lifting layer.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from genlab import seeding
from genlab.models import apply_invariance, count_params, make_model, matched_width
from genlab.training import configure_threads


def step_seconds(model: torch.nn.Module, steps: int, repeats: int, batch: int = 64) -> float:
    model = model.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g)
    best = float("inf")
    for r in range(repeats + 1):  # the first repeat warms up
        t = time.perf_counter()
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if r:
            best = min(best, (time.perf_counter() - t) / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    threads = configure_threads()
    w = args.width
    rows = [
        ("conv4", w, "none"),
        ("conv4", w, "average"),
        ("conv4-vflip", w, "none"),
        ("conv4-vflip", matched_width("conv4-vflip", w), "none"),
        ("conv4-d4", w, "none"),
        ("conv4-d4", matched_width("conv4-d4", w), "none"),
    ]
    print(f"torch {torch.__version__}, {threads} threads, batch 64, 32x32x3")
    print(f"{'model':<12}{'width':>6}{'invariance':>12}{'params':>12}{'ms/step':>10}{'x conv4':>9}")
    base = None
    for name, width, invariance in rows:
        with seeding.init(0):
            model = apply_invariance(make_model(name, width, 3, 10), invariance)
        ms = 1e3 * step_seconds(model, args.steps, args.repeats)
        base = base or ms
        print(
            f"{name:<12}{width:>6}{invariance:>12}{count_params(model):>12,}{ms:>10.1f}"
            f"{ms / base:>9.2f}"
        )


if __name__ == "__main__":
    main()
