"""The pruning study: exact remaining counts, pruned weights and gradients exactly zero inside a
real fit (SGD with momentum, Adam), rewinding to epoch K, the random control's per-layer counts,
resume after SIGKILL mid-round, one-line errors for bad flags, figures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import genlab
from genlab import cli
from genlab.data import make_synthetic
from genlab.models import Conv4
from genlab.runs import CHECKPOINT, KEPT, MASK, METRICS, ROUNDS, SUMMARY
from genlab.studies import pruning
from genlab.training import FitSpec, Member, Normalizer, Runtime, View, fit, make_optimizer
from genlab.training.grouped import together_key

TINY = {
    "dataset": "digits",
    "train_subset": 120,
    "test_subset": 100,
    "width": 4,
    "epochs": 3,
    "batch_size": 32,
    "lr": 0.05,
    "rounds": 2,
    "prune_fraction": 0.3,
}
TIMING = ("seconds", "eval_seconds")


def tiny_run(out: Path, **overrides) -> Path:
    return genlab.run("pruning", out=out, quiet=True, device="cpu", **{**TINY, **overrides})


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def masks_of(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return load(run_dir / ROUNDS / name / MASK)["masks"]


def records(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def rewound(tmp_path_factory) -> Path:
    """A tiny run rewound to epoch 1 (module-scoped: several tests read it)."""
    os.environ.setdefault("GENLAB_THREADS", "1")
    return tiny_run(tmp_path_factory.mktemp("pruning"), rewind_epoch=1)


# -- counts, masks, rewinding (one real run) ------------------------------------------------------
def test_each_round_keeps_exactly_round_n_times_one_minus_f_to_the_r(rewound):
    dense = load(rewound / ROUNDS / "lottery-0" / CHECKPOINT)["model"]
    model = Conv4(4, 3, 10, 3)
    names = pruning.prunable(model)
    # conv and linear weights only: every BatchNorm parameter and every bias stays
    assert names == [n for n, p in model.named_parameters() if p.ndim >= 2]
    assert not any(n.endswith("bias") for n in names) and len(names) == 5
    total = sum(dense[n].numel() for n in names)
    summary = json.loads((rewound / SUMMARY).read_text())
    assert summary["prunable_weights"] == total
    for r in (1, 2):
        want = round(total * (1 - 0.3) ** r)
        for kind in ("lottery", "random"):
            masks = masks_of(rewound, f"{kind}-{r}")
            assert set(masks) == set(names)
            assert sum(int(m.sum()) for m in masks.values()) == want
            assert summary["rounds"][f"{kind}-{r}"]["remaining"] == want


def test_the_lottery_mask_removes_the_smallest_magnitudes_globally(rewound):
    previous = load(rewound / ROUNDS / "lottery-0" / CHECKPOINT)["model"]
    masks = masks_of(rewound, "lottery-1")
    kept = torch.cat([previous[n][m].abs().flatten() for n, m in masks.items()])
    pruned = torch.cat([previous[n][~m].abs().flatten() for n, m in masks.items()])
    assert pruned.max() <= kept.min()
    # round 2 prunes only among round 1's survivors, from round 1's final weights
    second = masks_of(rewound, "lottery-2")
    assert all(not (second[n] & ~masks[n]).any() for n in masks)
    final1 = load(rewound / ROUNDS / "lottery-1" / CHECKPOINT)["model"]
    kept2 = torch.cat([final1[n][m].abs().flatten() for n, m in second.items()])
    gone2 = torch.cat([final1[n][masks[n] & ~second[n]].abs().flatten() for n in masks])
    assert gone2.max() <= kept2.min()


def test_the_random_control_has_the_lottery_per_layer_counts_among_its_own_survivors(rewound):
    for r in (1, 2):
        lottery, control = masks_of(rewound, f"lottery-{r}"), masks_of(rewound, f"random-{r}")
        assert {n: int(m.sum()) for n, m in lottery.items()} == {
            n: int(m.sum()) for n, m in control.items()
        }
        assert any(not torch.equal(lottery[n], control[n]) for n in lottery)
    first, second = masks_of(rewound, "random-1"), masks_of(rewound, "random-2")
    assert all(not (second[n] & ~first[n]).any() for n in first)


def test_rewinding_restores_the_dense_epoch_k_weights_of_the_survivors(rewound, tmp_path):
    for run_dir, k in ((rewound, 1), (tiny_run(tmp_path, rounds=1, rewind_epoch=0), 0)):
        dense = load(run_dir / ROUNDS / "lottery-0" / KEPT / f"epoch-{k}.pt")["model"]
        for name in ("lottery-1", "random-1"):
            start = load(run_dir / ROUNDS / name / KEPT / f"epoch-{k}.pt")
            masks = masks_of(run_dir, name)
            assert start["epoch"] == k
            assert all(torch.equal(start["masks"][n], masks[n]) for n in masks)  # in the checkpoint
            for key, value in dense.items():
                want = value * masks[key] if key in masks else value  # BatchNorm, biases: as is
                assert torch.equal(start["model"][key], want), (name, key)
            rows = records(run_dir / ROUNDS / name / METRICS)
            assert [r["epoch"] for r in rows] == list(range(k + 1, 4))  # epochs K+1..E
            final = load(run_dir / ROUNDS / name / CHECKPOINT)
            assert all((final["model"][n][~m] == 0).all() for n, m in masks.items())
    assert (rewound / "figures" / "pruning.png").stat().st_size > 10_000


# -- masks inside fit -----------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_and_gradients_are_zero_after_every_step(optimizer):
    data = make_synthetic(96, 32, 4, 16, seed=0)
    torch.manual_seed(0)
    model = Conv4(4, 3, 4, 3).to(memory_format=torch.channels_last)
    opt = make_optimizer(optimizer, model.parameters(), 0.05, 0.9 if optimizer == "sgd" else 0.0)
    normalize = Normalizer.from_stats([0.5] * 3, [0.25] * 3, torch.device("cpu"))
    train = View(data.train.images, data.train.labels)
    # a few dense steps first: momentum and Adam's moments are non-zero where the mask will prune
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(normalize(train.images)), train.labels).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)  # every gradient seen below is one fit computed
    gen = torch.Generator().manual_seed(1)
    masks = {
        n: torch.rand(p.shape, generator=gen) > 0.5
        for n, p in model.named_parameters()
        if p.ndim >= 2
    }
    params = dict(model.named_parameters())
    seen = {"steps": 0, "grads": 0}

    def check(_module, _inputs):  # before every forward: after the previous step
        seen["steps"] += 1
        for n, m in masks.items():
            assert (params[n].detach()[~m] == 0).all(), n
            if params[n].grad is not None:
                seen["grads"] += 1
                assert (params[n].grad[~m] == 0).all(), n

    hook = model.register_forward_pre_hook(check)
    member = Member(
        None, model, opt, train, {"test": View(data.test.images, data.test.labels)},
        normalize, 4, FitSpec(3, 16, 0), masks=masks,
    )  # fmt: skip
    assert together_key(member) is None  # never in a cohort
    fit([member], Runtime.resolve(device="cpu", threads=1, quiet=True))
    hook.remove()
    assert member.error is None and seen["steps"] > 15 and seen["grads"] > 0
    for n, m in masks.items():
        assert (params[n].detach()[~m] == 0).all()
        assert (params[n].detach()[m] != 0).all()  # the survivors trained
        assert not params[n]._backward_hooks  # fit's hooks are gone


# -- resume after SIGKILL -------------------------------------------------------------------------
def test_a_run_killed_mid_round_resumes_to_the_same_masks_and_weights(tmp_path):
    args = ["run", "pruning", *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]]
    args += ["--epochs", "4", "--train-subset", "300", "--device", "cpu", "--quiet"]
    env = {**os.environ, "GENLAB_THREADS": "1"}
    cmd = [sys.executable, "-m", "genlab", *args, "--out", str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    target = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed").glob(f"pruning/*/{ROUNDS}/lottery-1/{METRICS}"))
        if found and found[0].read_text().count("\n") >= 1:  # round 1 has trained an epoch
            target = found[0].parents[2]
            break
        time.sleep(0.002)
    assert target is not None, proc.stderr.read().decode() if proc.poll() is not None else "slow"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (target / SUMMARY).exists()
    killed_in = [
        d.name
        for d in (target / ROUNDS).iterdir()
        if d.name != "lottery-0" and not (d / SUMMARY).exists()
    ]
    assert killed_in, "killed after every round had finished"
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    clean = subprocess.run(
        [*cmd[:-1], str(tmp_path / "clean")], env=env, capture_output=True, text=True, timeout=300
    )
    assert clean.returncode == 0, clean.stderr
    other = tmp_path / "clean" / target.relative_to(tmp_path / "killed")
    names = sorted(d.name for d in (other / ROUNDS).iterdir())
    assert names == sorted(d.name for d in (target / ROUNDS).iterdir())
    assert len(names) == 5
    for name in names:
        a, b = load(target / ROUNDS / name / CHECKPOINT), load(other / ROUNDS / name / CHECKPOINT)
        assert a["model"].keys() == b["model"].keys()
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
        assert records(target / ROUNDS / name / METRICS) == records(other / ROUNDS / name / METRICS)
        if name != "lottery-0":
            ma, mb = masks_of(target, name), masks_of(other, name)
            assert all(torch.equal(ma[n], mb[n]) for n in ma), name
    summary = lambda d: {  # noqa: E731
        k: v for k, v in json.loads((d / SUMMARY).read_text()).items() if k != "seconds"
    }
    assert summary(target)["smallest_fitting"] == summary(other)["smallest_fitting"]


# -- flags ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--prune-fraction", "1.5"], "--prune-fraction 1.5: must be < 1"),
        (["--prune-fraction", "0"], "--prune-fraction 0.0: must be > 0"),
        (["--rounds", "0"], "--rounds 0: must be >= 1"),
        (["--rewind-epoch", "3", "--epochs", "3"], "--rewind-epoch 3: must be < --epochs 3"),
        (["--rewind-epoch", "-1"], "--rewind-epoch -1: must be >= 0"),
        (["--fit-threshold", "0"], "--fit-threshold 0.0: must lie in (0, 1]"),
        (["--stop-at-train-acc", "0.9"], "--stop-at-train-acc 0.9: not for pruning"),
    ],
)
def test_a_bad_flag_is_one_line_and_leaves_no_folder(tmp_path, capsys, flags, fragment):
    out = tmp_path / "runs"
    code = cli.main(["run", "pruning", *flags, "--out", str(out)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("genlab: error: ") and fragment in lines[0], err
    assert not out.exists() or not any(out.rglob("*"))


# -- a sweep and its figure -----------------------------------------------------------------------
def test_a_sweep_aggregates_and_draws_one_line_per_label_noise(tmp_path):
    sweep = genlab.sweep(
        "pruning", out=tmp_path, quiet=True, device="cpu", seeds=2,
        **{**TINY, "rounds": 1, "epochs": 2, "label_noise": [0.0, 1.0]},
    )  # fmt: skip
    entries = json.loads((sweep / "aggregate.json").read_text())["entries"]
    assert len(entries) == 2 and all(e["n"] == 2 for e in entries)
    assert all("rounds.random-1.train_fitted_acc" in e["metrics"] for e in entries)
    assert (sweep / "figures" / "pruning_sweep.png").stat().st_size > 10_000
