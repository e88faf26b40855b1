"""The effective number of parameters by pruning: how few of a trained network's
weights still fit its training labels, with true labels and with random ones?

Iterative magnitude pruning (Frankle & Carbin 2019), with rewinding (Frankle et al. 2020). The
network is trained densely (round 0) as a random-labels run is (``--label-noise`` etc. work the
same). Each round r = 1..R (``--rounds``) then removes the fraction f (``--prune-fraction``) of
the weights that remain, those of smallest magnitude in the previous round's final weights,
globally across layers; rewinds the survivors to their values after epoch K (``--rewind-epoch``)
of the dense training (K = 0: the initialization, the original lottery ticket), with a fresh
optimizer (no momentum or Adam moments carried over: the epoch-K optimizer state belongs to the
dense network); and trains again from epoch K to ``--epochs``, the data order of epoch e drawn
from (seed, e) as in every run. What is pruned: the weights of the conv and linear layers (every
parameter of two or more dimensions). Never pruned: BatchNorm scales and shifts and all biases
(rewound all the same, as are BatchNorm's running statistics). Pruned weights stay exactly zero
through training (``genlab.training.fit`` with ``Member.masks``).

The control: random pruning with the lottery mask's per-layer sparsity in every round: in each
layer, as many survivors as the lottery mask of that round keeps, drawn uniformly among the
control's own survivors of the previous round (a generator keyed by the run's seed and the
round, never the global one), rewound and trained the same way.

Rounding: after round r exactly ``round(N * (1 - f) ** r)`` of the N prunable weights remain
(Python's ``round``, ties to even): round r removes the difference to the previous round's count,
so the fractions do not drift by compounding rounded steps.

Per round (0 = dense), for lottery and random: the remaining weights (count and fraction of the
prunable ones), eval-mode accuracy on the fitted training labels, test and flipped test accuracy.
The answer, in summary.json's ``smallest_fitting``: the fewest remaining weights that still fit
the training labels (fitted-label train accuracy >= ``--fit-threshold``), against the dense count.
Expect true labels (p = 0) to survive heavy pruning and random labels (p = 1), which need
memorization, to stop fitting after fewer rounds; random pruning to fail sooner than lottery
pruning.

    genlab run pruning                                          # digits, width 8, 3 rounds
    genlab run pruning --label-noise 1 --rounds 5 --prune-fraction 0.3 --rewind-epoch 1
    genlab sweep pruning --label-noise 0 0.5 1 --seeds 3        # intervals over seeds
    genlab run pruning --preset report                          # CIFAR-10, width 64

A run folder: config.json, env.json, dataset.json, label_noise.json, metrics.jsonl (one line per
round once it has trained an epoch: which round, how many weights remain), summary.json (written
last), and ``rounds/lottery-<r>/`` (``lottery-0``: the dense network) and ``rounds/random-<r>/``
(r >= 1), each a folder as ``fit`` writes a run: metrics.jsonl (epochs K+1..E for r >= 1),
checkpoint.pt (with the masks inside), checkpoints/epoch-K.pt, and mask.pt (its masks, written
atomically before the round trains, computed from the previous round's final checkpoint alone),
and summary.json (the round's numbers). A kill resumes the round it was training from its
checkpoint; finished rounds are read back, masks from their mask.pt.

Cost: the default is 70 epochs of 1,347 digits at width 8 (10 dense + 6 rounds of 10): a few
minutes on a 2-core CPU (not timed on a quiet machine; 13 s an epoch on a loaded one). The report
preset, estimated (not measured) from the rates in README's Speed section: 60 dense epochs +
20 rounds of 58 = 1,220 epochs of 50,000 CIFAR-10 images trained and 70,000 evaluated
(train views, test, flipped test); about 1.25 s an epoch on one H100 (54,760 img/s training,
about 206,000 img/s evaluating), so some 25 minutes; on a 2-core CPU in bf16 (274 img/s training)
about 4-5 minutes an epoch, so some 4 days. Pruned weights are zeros, not removed: a pruned
round costs what a dense one does.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from genlab.config import option
from genlab.errors import GenlabError
from genlab.fileio import atomic_write, remove_stale, write_error
from genlab.models import count_params
from genlab.runs import CHECKPOINT, KEPT, MASK, ROUNDS, SUMMARY, Damaged, Run
from genlab.seeding import generator
from genlab.studies import random_labels
from genlab.studies.common import (
    Prepared,
    SharedData,
    prepare,
    run_each,
)
from genlab.training import Member, fit
from genlab.training.runtime import Runtime

LOTTERY, RANDOM = "lottery", "random"
KINDS = (LOTTERY, RANDOM)
VIEWS = ("test", "test_vflip", "train_true")  # reported per round, with the fitted labels
_RANDOM_MASK_SALT = 15485863  # keeps (seed, salt, round) apart from other keyed draws
Masks = dict[str, torch.Tensor]  # parameter name -> bool mask of its shape (False: pruned)


@dataclass(frozen=True)
class Config(random_labels.Config):
    width: int = option(8, "Conv-4 width c (channels c, 2c, 4c, 8c)")
    epochs: int = option(10, "number of training epochs (of the dense run and of every round)")
    rounds: int = option(3, "rounds of pruning after the dense training", at_least=1)
    prune_fraction: float = option(
        0.2, "fraction of the remaining conv and linear weights each round removes", below=1.0
    )
    rewind_epoch: int = option(
        0, "rewind survivors to their weights after this dense epoch (0: initialization)",
        at_least=0,
    )  # fmt: skip
    fit_threshold: float = option(
        0.99, "fitted-label train accuracy (eval mode) that counts as fitting the labels"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.prune_fraction > 0:
            raise GenlabError(f"--prune-fraction {self.prune_fraction}: must be > 0")
        if self.rewind_epoch >= self.epochs:
            raise GenlabError(
                f"--rewind-epoch {self.rewind_epoch}: must be < --epochs {self.epochs}"
            )
        if not 0 < self.fit_threshold <= 1:
            raise GenlabError(f"--fit-threshold {self.fit_threshold}: must lie in (0, 1]")
        if self.stop_at_train_acc is not None:
            raise GenlabError(
                f"--stop-at-train-acc {self.stop_at_train_acc}: not for pruning (every round "
                "trains to --epochs; use --fit-threshold)"
            )


PRESETS: dict[str, dict[str, Any]] = {
    # the defaults, spelt out: digits, Conv-4 width 8 (25,048 prunable weights, 1,347 labels)
    "cpu": {"dataset": "digits", "width": 8, "epochs": 10, "optimizer": "sgd", "lr": 0.1},
    # CIFAR-10 at width 64 (1,558,026 parameters), Adam 3e-4 as the random-labels "over"
    # preset, rewound to epoch 2 (Frankle et al. 2020: larger networks need a late rewind)
    "report": {
        "dataset": "cifar10",
        "width": 64,
        "optimizer": "adam",
        "lr": 3e-4,
        "batch_size": 64,
        "epochs": 60,
        "rounds": 10,
        "prune_fraction": 0.2,
        "rewind_epoch": 2,
    },
}
RUN_ID_KEYS = (
    "dataset",
    "width",
    "label_noise",
    "rounds",
    "prune_fraction",
    "rewind_epoch",
    "seed",
)


# -- masks --------------------------------------------------------------------------------------
def prunable(model: torch.nn.Module) -> list[str]:
    """The names of the weights that can be pruned: every parameter of two or more dimensions
    (conv and linear weights). BatchNorm scales and shifts and all biases are 1-D: never."""
    return [name for name, p in model.named_parameters() if p.ndim >= 2]


def remaining_count(total: int, fraction: float, r: int) -> int:
    """The weights left after round r: ``round(total * (1 - fraction) ** r)`` (ties to even)."""
    return round(total * (1 - fraction) ** r)


def dense_masks(model: torch.nn.Module) -> Masks:
    params = dict(model.named_parameters())
    return {n: torch.ones(params[n].shape, dtype=torch.bool) for n in prunable(model)}


def magnitude_masks(weights: Mapping[str, torch.Tensor], previous: Masks, keep: int) -> Masks:
    """``previous`` with its survivors of smallest magnitude in ``weights`` removed, globally
    across layers, until exactly ``keep`` remain. Ties go to the earlier weight (layer order,
    then position): a stable sort, so the mask is a function of the weights alone."""
    names = list(previous)
    alive = torch.cat([previous[n].flatten() for n in names])  # (N,) bool
    remove = int(alive.sum()) - keep
    if remove < 0:
        raise ValueError(f"cannot keep {keep} of {int(alive.sum())} weights")
    scores = torch.cat(
        [
            torch.where(previous[n], weights[n].detach().cpu().abs(), torch.inf).flatten()
            for n in names
        ]
    )
    kept = alive.clone()
    kept[torch.argsort(scores, stable=True)[:remove]] = False  # pruned ones sort last (inf)
    out, start = {}, 0
    for n in names:
        size = previous[n].numel()
        out[n] = kept[start : start + size].view(previous[n].shape).clone()
        start += size
    return out


def random_masks(counts: Mapping[str, int], previous: Masks, rng: torch.Generator) -> Masks:
    """In each layer ``counts[name]`` survivors drawn uniformly among ``previous``'s, with
    ``rng`` (layers in order)."""
    out = {}
    for n, mask in previous.items():
        alive = mask.flatten().nonzero().flatten()
        if counts[n] > len(alive):
            raise ValueError(f"{n}: cannot keep {counts[n]} of {len(alive)} weights")
        chosen = alive[torch.randperm(len(alive), generator=rng)[: counts[n]]]
        kept = torch.zeros(mask.numel(), dtype=torch.bool)
        kept[chosen] = True
        out[n] = kept.view(mask.shape)
    return out


def layer_counts(masks: Masks) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}


def write_masks(path: Path, masks: Masks) -> None:
    """mask.pt, atomically (a kill leaves the old file or the new one, never a cut one)."""
    buffer = io.BytesIO()
    torch.save({"masks": {n: m.to(torch.bool).cpu() for n, m in masks.items()}}, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def read_masks(path: Path, like: Masks) -> Masks:
    """mask.pt, checked against the parameters' names and shapes (``like``); ``Damaged``
    otherwise."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same error
        raise Damaged(path, f"unreadable masks ({type(e).__name__})") from None
    masks = state.get("masks") if isinstance(state, dict) else None
    if not isinstance(masks, dict) or set(masks) != set(like):
        raise Damaged(path, "does not hold a mask for every prunable weight")
    for n, m in masks.items():
        if not torch.is_tensor(m) or m.dtype != torch.bool or m.shape != like[n].shape:
            raise Damaged(path, f"its mask {n!r} is not a bool tensor of the weight's shape")
    return {n: masks[n] for n in like}


# -- the study ----------------------------------------------------------------------------------
# a run's data, labels and views: random labels' (with run None nothing is written), plus the
# flipped test set
setup = random_labels.setup_flipped
_Setup = random_labels.FlippedSetup


def run(members: list[tuple[Config, Run]], rt: Runtime) -> list[dict[str, Any]]:
    """Each member's rounds, one after another (round r prunes round r - 1's result); the
    lottery and random rounds of one r train in one ``fit``."""
    shared = SharedData()
    return run_each(members, lambda cfg, r: _run_one(cfg, r, rt, shared))


def round_name(kind: str, r: int) -> str:
    return f"{kind}-{r}"


def _open_round(run: Run, name: str) -> Run:
    path = run.file(f"{ROUNDS}/{name}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    remove_stale(path)
    remove_stale(path / KEPT)
    return Run(path, "resume" if (path / CHECKPOINT).exists() else "new")


def _run_one(cfg: Config, run: Run, rt: Runtime, shared: SharedData) -> dict[str, Any]:
    s = setup(cfg, run, rt, shared)
    dense = dense_masks(s.prep.model)
    total = sum(m.numel() for m in dense.values())
    started = {(r.get("kind"), r.get("round")) for r in run.metrics()}
    K = cfg.rewind_epoch
    keep = set(cfg.keep_checkpoints)
    results: dict[str, dict[str, Any]] = {}

    def member(name: str, kind: str, r: int, prep: Prepared, masks: Masks | None) -> Member:
        start = 0 if r == 0 else K
        # epoch K is kept in every round: the dense one's is what the others rewind to
        spec = replace(
            cfg.fit_spec(),
            keep=tuple(sorted({k for k in keep if k >= start} | {K})),
            start_epoch=start,
        )
        counts = layer_counts(masks if masks is not None else dense)
        line = {
            "round": r,
            "kind": kind,
            "remaining": sum(counts.values()),
            "remaining_fraction": sum(counts.values()) / total,
            "start_epoch": start,
        }

        # fit calls a member's stop once per trained epoch. This one never stops: it writes the
        # round's line in the run's own metrics.jsonl at its first epoch, so the run folder shows
        # that it holds training (the launcher discards a new folder without a record when a
        # command is interrupted or a member fails: the dense round's epochs would go with it)
        def log_start(_record: dict[str, Any]) -> bool:
            if (kind, r) not in started:
                run.append_metrics(line)
                started.add((kind, r))
            return False  # never stops: every round trains to --epochs

        b = s.member
        return Member(
            _open_round(run, name), prep.model, prep.optimizer, b.train, b.views,
            b.normalize, b.num_classes, spec, log_start, masks=masks,
        )  # fmt: skip

    # round 0: the dense network
    base = member(round_name(LOTTERY, 0), LOTTERY, 0, s.prep, None)
    _train([base], rt)
    results[round_name(LOTTERY, 0)] = _result(s, base, dense, total)
    assert base.run is not None
    rewind = base.run.load_kept(K)["model"]
    previous = {LOTTERY: (base.run, dense), RANDOM: (base.run, dense)}
    for r in range(1, cfg.rounds + 1):
        keep_n = remaining_count(total, cfg.prune_fraction, r)
        masks: dict[str, Masks] = {}
        lottery_path = run.file(f"{ROUNDS}/{round_name(LOTTERY, r)}/{MASK}")
        if lottery_path.exists():  # written before the round trained: read back
            masks[LOTTERY] = read_masks(lottery_path, dense)
        else:
            weights = _final_weights(previous[LOTTERY][0], cfg)
            masks[LOTTERY] = magnitude_masks(weights, previous[LOTTERY][1], keep_n)
            write_masks(lottery_path, masks[LOTTERY])
        if sum(layer_counts(masks[LOTTERY]).values()) != keep_n:
            raise Damaged(lottery_path, f"keeps other than the {keep_n} weights of round {r}")
        rt.log(
            f"pruning round {r}/{cfg.rounds}: {keep_n:,} of {total:,} weights remain "
            f"({keep_n / total:.4f}), rewound to epoch {K}"
        )
        random_path = run.file(f"{ROUNDS}/{round_name(RANDOM, r)}/{MASK}")
        if random_path.exists():
            masks[RANDOM] = read_masks(random_path, dense)
        else:
            rng = generator(cfg.seed, _RANDOM_MASK_SALT, r)
            counts = layer_counts(masks[LOTTERY])
            masks[RANDOM] = random_masks(counts, previous[RANDOM][1], rng)
            write_masks(random_path, masks[RANDOM])
        if layer_counts(masks[RANDOM]) != layer_counts(masks[LOTTERY]):
            raise Damaged(random_path, f"keeps other per-layer counts than round {r}'s lottery")
        members = []
        for kind in KINDS:
            prep = prepare(cfg, rt, shared)  # a fresh model and optimizer
            prep.model.load_state_dict(rewind)  # rewound; fit zeroes the pruned weights
            m = member(round_name(kind, r), kind, r, prep, masks[kind])
            _check_saved_masks(m)
            members.append(m)
        _train(members, rt)
        for kind, m in zip(KINDS, members, strict=True):
            results[round_name(kind, r)] = _result(s, m, masks[kind], total)
            assert m.run is not None
            previous[kind] = (m.run, masks[kind])
    return _finish(cfg, run, s, results, total)


def _final_weights(prev: Run, cfg: Config) -> dict[str, torch.Tensor]:
    state = prev.load_checkpoint()
    if state is None or state["epoch"] != cfg.epochs:
        raise Damaged(prev.file(CHECKPOINT), f"not the checkpoint after epoch {cfg.epochs}")
    return state["model"]


def _check_saved_masks(m: Member) -> None:
    """A round's checkpoint holds the masks it trained with: a mask.pt that differs from them
    (replaced by hand, another genlab) is refused, not trained on."""
    assert m.run is not None and m.masks is not None
    state = m.run.load_checkpoint()
    if state is None:
        return
    saved = state.get("masks")
    if (
        not isinstance(saved, dict)
        or set(saved) != set(m.masks)
        or not all(torch.equal(saved[n], m.masks[n]) for n in m.masks)
    ):
        raise Damaged(m.run.file(CHECKPOINT), f"trained with other masks than its {MASK}")


def _train(members: list[Member], rt: Runtime) -> None:
    """Train (or resume, or find finished) the members; the first failure is the run's."""
    fit(members, rt)
    for m in members:
        if m.error is not None:
            raise m.error


def _result(s: _Setup, m: Member, masks: Masks, total: int) -> dict[str, Any]:
    """A round's numbers from its last record; written to the round's summary.json."""
    assert m.run is not None
    last = m.history[-1]
    counts = layer_counts(masks)
    result = {
        "remaining": sum(counts.values()),
        "remaining_fraction": sum(counts.values()) / total,
        "train_fitted_acc": random_labels.fitted_acc(last, s.inner.num_noisy, s.inner.num_clean),
        **{f"{v}_acc": last[f"{v}_acc"] for v in VIEWS},
        "start_epoch": m.spec.start_epoch,
        "epochs": last["epoch"],
        "seconds": sum(r["seconds"] + r["eval_seconds"] for r in m.history),
    }
    if not m.run.file(SUMMARY).exists():
        m.run.write_summary({**result, "per_layer": counts})
    return result


def _finish(
    cfg: Config, run: Run, s: _Setup, results: dict[str, dict[str, Any]], total: int
) -> dict[str, Any]:
    """summary.json: every round's numbers, and per kind the fewest weights that fit."""

    def smallest(kind: str) -> dict[str, Any]:
        names = [round_name(LOTTERY, 0)] + [round_name(kind, r) for r in range(1, cfg.rounds + 1)]
        fits = [
            (n, results[n]) for n in names if results[n]["train_fitted_acc"] >= cfg.fit_threshold
        ]
        name, best = min(fits, key=lambda f: f[1]["remaining"]) if fits else (None, None)
        return {
            "round": None if name is None else int(name.rsplit("-", 1)[1]),
            "remaining": None if best is None else best["remaining"],
            "remaining_fraction": None if best is None else best["remaining_fraction"],
        }

    last = cfg.rounds
    summary = {
        "params": count_params(s.prep.model),
        "prunable_weights": total,
        "regime": s.inner.regime,
        "label_noise": cfg.label_noise,
        "label_noise_mode": cfg.label_noise_mode,
        "randomize": cfg.randomize,
        "fraction_changed": s.inner.noise["train"]["fraction_changed"],
        "prune_fraction": cfg.prune_fraction,
        "rewind_epoch": cfg.rewind_epoch,
        "fit_threshold": cfg.fit_threshold,
        "epochs": cfg.epochs,
        "rounds": results,  # "lottery-0" (dense), "lottery-r", "random-r"
        # the smallest remaining count whose fitted-label train accuracy reaches fit_threshold
        # (rounds need not fit monotonically: the fewest weights among those that fit), or None
        "smallest_fitting": {kind: smallest(kind) for kind in KINDS},
        "dense": results[round_name(LOTTERY, 0)],
        "last_round": {kind: results[round_name(kind, last)] for kind in KINDS},
        "seconds": sum(r["seconds"] for r in results.values()),
    }
    run.write_summary(summary)
    return summary
