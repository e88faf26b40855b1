"""``genlab analyze similarity``: how alike are the representations of networks trained alike?

Morcos, Raghu & Bengio (2018) found that networks which generalize converge to more similar
representations than networks which memorize, and wider networks to more similar ones than
narrow networks. This measures it on genlab's runs: for every run, the activations of every
block (after its pool and ReLU) and the logits on one probe set of test images, the same for
every run, and between every two (run, layer) pairs

- linear CKA with the unbiased minibatch HSIC estimator (Nguyen, Raghu & Kornblith 2021), whose
  memory does not grow with the number of probe images; and
- PWCCA, projection-weighted CCA (Morcos et al. 2018), for each layer against the same layer of
  the other runs: a conv layer's channels are its neurons and every (image, position) a data
  point, so its statistics stream too; layers of different spatial size have no common data
  points, so PWCCA compares a layer only with the same layer.

The probe is ``--probe`` test images (default 2,000; all of a smaller test split), drawn once
with ``seeding.fixed("similarity_probe")`` and kept in that random order, cut into ``--batch-size``
minibatches (each minibatch HSIC is unbiased only for a random sample). Each run's model sees
the probe once, in eval mode, normalized with its own training statistics; all models are
loaded together and the probe streams through them a minibatch at a time.

Reported (similarity.json): the CKA of every pair of (run, layer); PWCCA of every pair of runs
per layer; for each group of runs alike but for the seed, per layer and measure, the similarity
between seeds (mean and 95% Student-t interval over the pairs of seeds; the pairs share runs,
so they are not independent and the interval is narrower than one over independent pairs would
be); and the same between every two groups (every run of one against every run of the other).

    genlab sweep random-labels --dataset digits --label-noise 0 1 --width 8 32 --seeds 3
    genlab analyze similarity runs/random-labels/sweep-<hash>

Cost: one forward pass per run over the probe, and per minibatch one matmul of the M = runs x
layers U-centred Grams. Measured: 12 digits runs (widths 8 and 32, 450 probe images) in 14 s on
2 CPU cores, another job sharing them; benchmarks/bench_analysis.py times 18 width-16 CIFAR-10
runs with a 2,000-image probe. PWCCA keeps the joint covariance of a layer across all runs:
(runs x channels)^2 doubles, 54 MB for 18 runs at width 16 (measured).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from genlab.aggregate import interval
from genlab.analysis.invariance import block_features
from genlab.analysis.measures import Moments, cka_from_hsic, hsic_matrix, pwcca_from_moments
from genlab.analysis.trained import Group, Trained
from genlab.config import check_fields, option
from genlab.errors import GenlabError
from genlab.seeding import fixed
from genlab.training.runtime import Runtime

MEASURES = ("cka", "pwcca")


@dataclass(frozen=True)
class Config:
    probe: int = option(2000, "test images in the probe (all of a smaller test split)", at_least=4)
    measure: tuple[str, ...] = option(MEASURES, "measures: cka, pwcca or both")
    batch_size: int = option(
        250, "probe images per minibatch of the unbiased HSIC estimator (>= 4)", at_least=4
    )

    def __post_init__(self) -> None:
        check_fields(self)
        unknown = [m for m in self.measure if m not in MEASURES]
        if unknown or not self.measure:
            raise GenlabError(
                f"--measure {' '.join(unknown)}: not one of {', '.join(MEASURES)}"
                if unknown
                else "--measure: give at least one of cka, pwcca"
            )


def probe_images(trained: list[Trained], size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """(N, H, W, C) uint8 test images, the same for every run, in a fixed random order."""
    test = trained[0].setup.prep.splits.test
    n = min(size, len(test))
    index = torch.randperm(len(test), generator=fixed("similarity_probe"))[:n]
    return test.images[index], {"split": "test", "num_images": n, "of": len(test)}


def minibatches(n: int, batch_size: int) -> list[range]:
    """``n`` rows cut into ceil(n / batch_size) consecutive minibatches of near-equal size
    (none smaller than 4, which the unbiased estimator needs)."""
    count = max(1, math.ceil(n / batch_size))
    if n < 4:
        raise GenlabError(f"--probe {n}: the unbiased estimator needs at least 4 images")
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


@torch.no_grad()
def features(t: Trained, images: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(layer, activations) of every block and the logits of run ``t`` for uint8 images."""
    normalize = t.setup.member.normalize
    x = normalize(images.to(normalize.scale.device)).contiguous()
    t.model.eval()
    return [(name, f.double()) for name, f in block_features(t.model, x)]


def _neurons(f: torch.Tensor) -> torch.Tensor:
    """(n, C[, G], H, W) -> (n * H * W, C[*G]): channels are neurons, (image, position) data
    points; (n, K) logits stay as they are."""
    if f.ndim == 2:
        return f
    g = f.flatten(1, -3)  # (n, C', H, W)
    return g.permute(0, 2, 3, 1).reshape(-1, g.shape[1])


def measure(trained: list[Trained], groups: list[Group], cfg: Config, rt: Runtime) -> dict:
    """similarity.json's content (module docstring)."""
    started = time.perf_counter()
    images, probe = probe_images(trained, cfg.probe)
    batches = minibatches(len(images), cfg.batch_size)
    layers: list[str] | None = None
    hsic: torch.Tensor | None = None
    moments: list[Moments] = []
    neurons: list[list[int]] = []  # per layer, each run's number of neurons
    for b, rows in enumerate(batches):
        per_run = [features(t, images[rows.start : rows.stop]) for t in trained]
        names = [name for name, _ in per_run[0]]
        if layers is None:
            layers = names
            moments = [Moments() for _ in layers]
            neurons = [
                [_neurons(feats[i][1]).shape[1] for feats in per_run] for i in range(len(layers))
            ]
            for t, feats in zip(trained, per_run, strict=True):
                if [name for name, _ in feats] != layers:
                    raise GenlabError(
                        f"{t.ref.path}: its layers ({', '.join(n for n, _ in feats)}) are not "
                        f"those of {trained[0].ref.path.name} ({', '.join(layers)})"
                    )
        if "cka" in cfg.measure:
            s = hsic_matrix([f for feats in per_run for _, f in feats])  # (R*L, R*L)
            hsic = s if hsic is None else hsic + s
        if "pwcca" in cfg.measure:
            for i, m in enumerate(moments):
                m.add(torch.cat([_neurons(feats[i][1]) for feats in per_run], dim=1))
        rt.log(f"  probe minibatch {b + 1}/{len(batches)}")
    assert layers is not None
    R, L = len(trained), len(layers)
    results: dict[str, Any] = {
        "runs": [t.record() for t in trained],
        "groups": [g.record() for g in groups],
        "layers": layers,
        "probe": {**probe, "batch_size": cfg.batch_size, "num_batches": len(batches)},
        "measures": list(cfg.measure),
    }
    by_measure: dict[str, torch.Tensor] = {}  # (R, L, R, L) similarity, NaN where undefined
    if hsic is not None:
        cka = cka_from_hsic(hsic).reshape(R, L, R, L)
        by_measure["cka"] = cka
        results["cka"] = {
            "matrix": _plain(cka.reshape(R * L, R * L)),
            "index": "run * layers + layer",
        }
    if "pwcca" in cfg.measure:
        pw = torch.full((R, L, R, L), math.nan, dtype=torch.float64)
        for i, m in enumerate(moments):
            cov = m.covariance()
            starts = [0, *itertools.accumulate(neurons[i])]
            for a in range(R):
                pw[a, i, a, i] = 1.0
                for b in range(a + 1, R):
                    value = pwcca_from_moments(
                        cov, range(starts[a], starts[a + 1]), range(starts[b], starts[b + 1])
                    )
                    pw[a, i, b, i] = pw[b, i, a, i] = value
        by_measure["pwcca"] = pw
        results["pwcca"] = {
            "by_layer": {name: _plain(pw[:, i, :, i]) for i, name in enumerate(layers)}
        }
    results["within"] = _within(groups, layers, by_measure)
    results["across"] = _across(groups, layers, by_measure)
    results["seconds"] = time.perf_counter() - started
    return results


def _within(
    groups: list[Group], layers: list[str], by_measure: dict[str, torch.Tensor]
) -> list[dict[str, Any]]:
    """Per group, measure and layer: the similarity between the group's seeds."""
    rows = []
    for g, group in enumerate(groups):
        pairs = list(itertools.combinations(group.runs, 2))
        if not pairs:
            continue
        for name, sim in by_measure.items():
            for i, layer in enumerate(layers):
                values = [float(sim[a, i, b, i]) for a, b in pairs]
                rows.append({"group": g, "measure": name, "layer": layer, **_stats(values)})
    return rows


def _across(
    groups: list[Group], layers: list[str], by_measure: dict[str, torch.Tensor]
) -> list[dict[str, Any]]:
    """Per two groups, measure and layer: every run of one against every run of the other."""
    rows = []
    for (g, first), (h, second) in itertools.combinations(enumerate(groups), 2):
        pairs = list(itertools.product(first.runs, second.runs))
        for name, sim in by_measure.items():
            for i, layer in enumerate(layers):
                values = [float(sim[a, i, b, i]) for a, b in pairs]
                rows.append({"groups": [g, h], "measure": name, "layer": layer, **_stats(values)})
    return rows


def _stats(values: list[float]) -> dict[str, Any]:
    """n pairs, mean, std and 95% interval over the pairs (NaN values, undefined, left out)."""
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return {"n_pairs": 0, "mean": None, "std": None, "ci95": None}
    found = interval(kept)
    return {
        "n_pairs": found["n"],
        "mean": found["mean"],
        "std": found["std"],
        "ci95": found["ci95"],
    }


def _plain(matrix: torch.Tensor) -> list[list[float | None]]:
    """A matrix as JSON: NaN (undefined: a constant representation) as null."""
    return [[None if math.isnan(v) else v for v in row] for row in matrix.tolist()]
