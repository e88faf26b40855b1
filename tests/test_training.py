"""The loop: determinism under a seed, one record per epoch, resume after SIGKILL, non-finite loss."""

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
from genlab import seeding
from genlab.data import make_synthetic
from genlab.models import Conv4
from genlab.runs import CHECKPOINT, METRICS, SUMMARY, Run
from genlab.training import Normalizer, epoch_generator, train_epoch

TINY = {
    "dataset": "synthetic",
    "width": 2,
    "epochs": 3,
    "batch_size": 32,
    "lr": 0.05,
}
TIMING = {"seconds", "eval_seconds"}


def train(out: Path, *, force: bool = False, quiet: bool = True, **overrides) -> Path:
    """A tiny robustness run through the Python API; returns its folder."""
    return genlab.run("robustness", out=out, force=force, quiet=quiet, **{**TINY, **overrides})


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / CHECKPOINT, weights_only=True)["model"]


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_runs_with_one_seed_give_identical_weights(tmp_path):
    a = train(tmp_path / "a", augment="random")
    b = train(tmp_path / "b", augment="random")
    c = train(tmp_path / "c", augment="random", seed=1)
    assert same_weights(weights(a), weights(b))
    assert metrics(a) == metrics(b)
    assert not same_weights(weights(a), weights(c))


def test_one_metrics_record_per_epoch_with_every_view(tmp_path):
    path = train(tmp_path)
    rows = metrics(path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        for view in ("test", "test_vflip"):
            assert 0 <= r[f"{view}_acc"] <= 1 and r[f"{view}_loss"] > 0
            assert len(r[f"{view}_per_class_acc"]) == 4
    summary = json.loads((path / SUMMARY).read_text())
    assert summary["params"] == sum(
        t.numel() for k, t in weights(path).items() if "running" not in k and "num_batches" not in k
    )
    assert set(summary["per_class_acc"]["test_vflip"]) == {"class0", "class1", "class2", "class3"}
    assert summary["final_acc"]["test"] == rows[-1]["test_acc"]


def test_a_finished_run_is_skipped_and_force_reruns(tmp_path, capsys):
    path = train(tmp_path, epochs=1)
    before = (path / SUMMARY).stat().st_mtime_ns
    capsys.readouterr()
    train(tmp_path, epochs=1, quiet=False)
    assert "finished already" in capsys.readouterr().out
    assert (path / SUMMARY).stat().st_mtime_ns == before
    train(tmp_path, epochs=1, force=True)
    assert (path / SUMMARY).stat().st_mtime_ns != before


def test_resume_after_sigkill_gives_the_same_weights_and_metrics(tmp_path):
    """Kill a real run mid-training with SIGKILL, re-run the command, compare with a clean run."""
    args = [
        "run",
        "robustness",
        "--dataset",
        "synthetic",
        "--width",
        "4",
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--augment",
        "random",
    ]
    env = {**os.environ, "GENLAB_THREADS": "1"}
    cmd = [sys.executable, "-m", "genlab", *args, "--out", str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics_file = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed").rglob(METRICS))
        if found and len(found[0].read_text().splitlines()) >= 2:
            metrics_file = found[0]
            break
        time.sleep(0.005)
    assert metrics_file is not None, (
        proc.stderr.read().decode() if proc.poll() is not None else "timed out"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = metrics_file.parent
    assert not (run_dir / SUMMARY).exists()
    killed_at = torch.load(run_dir / CHECKPOINT, weights_only=True)["epoch"]
    assert 1 <= killed_at < 6

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    clean = subprocess.run(
        [*cmd[:-1], str(tmp_path / "clean")], env=env, capture_output=True, text=True, timeout=300
    )
    assert clean.returncode == 0, clean.stderr
    clean_dir = tmp_path / "clean" / run_dir.relative_to(tmp_path / "killed")
    assert same_weights(weights(run_dir), weights(clean_dir))
    assert metrics(run_dir) == metrics(clean_dir)
    state = torch.load(run_dir / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 6 and "optimizer" in state and "rng" in state


def test_a_record_written_after_the_last_checkpoint_is_dropped_on_resume(tmp_path):
    path = train(tmp_path / "a", epochs=2)
    # simulate a kill between appending epoch 3's record and saving its checkpoint
    run = Run(path, "resume")
    run.keep_metrics(1)
    (path / SUMMARY).unlink()
    state = torch.load(path / CHECKPOINT, weights_only=True)
    ref = train(tmp_path / "b", epochs=1)
    run.save_checkpoint(torch.load(ref / CHECKPOINT, weights_only=True))
    run.append_metrics(
        {**metrics(path)[0], "epoch": 2, "train_loss": -1.0, "seconds": 0, "eval_seconds": 0}
    )
    train(tmp_path / "a", epochs=2)
    rows = metrics(path)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["train_loss"] > 0
    assert same_weights(weights(path), state["model"])


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    from genlab import cli
    from genlab.training import grouped as fit_module  # where a member's epoch is trained

    real = fit_module.train_epoch
    calls = []

    def explodes_in_epoch_2(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        return {**out, "loss": float("nan")} if len(calls) == 2 else out

    monkeypatch.setattr(fit_module, "train_epoch", explodes_in_epoch_2)
    args = [
        "run",
        "robustness",
        "--dataset",
        "synthetic",
        "--width",
        "2",
        "--epochs",
        "3",
        "--device",
        "cpu",
    ]
    assert cli.main([*args, "--out", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("genlab: error: epoch 2: training loss is nan") and "\n" not in err
    (run_dir,) = (tmp_path / "robustness").iterdir()
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["epoch"] == 1
    assert [r["epoch"] for r in metrics(run_dir)] == [1]
    assert not (run_dir / SUMMARY).exists()


def test_epoch_generator_depends_on_seed_and_epoch_only():
    a = torch.randperm(100, generator=epoch_generator(3, 7))
    assert torch.equal(a, torch.randperm(100, generator=epoch_generator(3, 7)))
    assert not torch.equal(a, torch.randperm(100, generator=epoch_generator(3, 8)))
    assert not torch.equal(a, torch.randperm(100, generator=epoch_generator(4, 7)))


def test_train_epoch_uses_full_batches_of_distinct_images():
    images = torch.randint(0, 256, (50, 8, 8, 3), dtype=torch.uint8)
    labels = torch.arange(50) % 2
    seen = []
    pixels = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3 * 8 * 8, 2)

        def forward(self, x):
            seen.append(x.shape[0])
            pixels.append(x.detach().flatten(1))
            return self.lin(x.flatten(1))

    model = Spy()
    norm = Normalizer.from_stats([0.5] * 3, [0.25] * 3, torch.device("cpu"))
    out = train_epoch(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        images,
        labels,
        norm,
        batch_size=16,
        generator=epoch_generator(0, 1),
    )
    assert seen == [16, 16, 16] and 0 <= out["acc"] <= 1  # the ragged last batch of 2 is dropped
    assert len(torch.unique(torch.cat(pixels), dim=0)) == 48  # no image twice in one epoch


@pytest.mark.slow
def test_compile_trains_and_keeps_plain_checkpoints(tmp_path):
    """--compile (torch.compile in place): the checkpoint's keys are Conv-4's own, and the run
    reaches the same accuracy as an uncompiled one up to float tolerance (slow: compiles C++)."""
    plain = train(tmp_path / "a", epochs=1)
    compiled = train(tmp_path / "b", epochs=1, compile=True)
    assert weights(compiled).keys() == weights(plain).keys()
    for name, tensor in weights(plain).items():
        torch.testing.assert_close(weights(compiled)[name], tensor, rtol=1e-3, atol=1e-4)


def test_bf16_precision_on_the_cpu_is_deterministic_and_keeps_fp32_weights():
    """--precision bf16: autocast on the CPU (width 64 trains ~2x as fast with AVX512-BF16)."""
    data = make_synthetic(n_train=256, n_test=8, num_classes=4, seed=0).train
    results = {}
    norm = Normalizer.from_stats([0.5] * 3, [0.25] * 3, torch.device("cpu"))
    for precision in ("bf16", "bf16", "fp32"):
        with seeding.init(0):
            model = Conv4(4, num_classes=4).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        metrics = train_epoch(
            model,
            opt,
            data.images,
            data.labels,
            norm,
            batch_size=32,
            generator=epoch_generator(0, 1),
            precision=precision,
        )
        assert all(p.dtype == torch.float32 for p in model.parameters())
        results.setdefault(precision, []).append((metrics["loss"], model.state_dict()))
    (loss_a, state_a), (loss_b, state_b) = results["bf16"]
    assert loss_a == loss_b and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    loss_fp32, state_fp32 = results["fp32"][0]
    assert loss_a == pytest.approx(loss_fp32, rel=0.05)  # close, but computed in bf16
    assert not torch.equal(state_a["features.0.weight"], state_fp32["features.0.weight"])


def test_views_sharing_images_take_one_pass_and_equal_separate_subsets():
    """random-labels' train_true, train_noisy and train_clean share the training images: one
    forward pass serves all three, with the numbers evaluating each subset alone gives."""
    from genlab.training import View, evaluate, evaluate_views

    data = make_synthetic(n_train=300, n_test=8, num_classes=4, seed=0).train
    norm = Normalizer.from_stats([0.5] * 3, [0.25] * 3, torch.device("cpu"))
    with seeding.init(0):
        model = Conv4(4, num_classes=4).to(memory_format=torch.channels_last)
    changed = torch.rand(len(data.labels), generator=torch.Generator().manual_seed(1)) < 0.4
    fitted = torch.where(changed, (data.labels + 1) % 4, data.labels)
    views = {
        "train_true": View(data.images, data.labels),
        "train_noisy": View(data.images, fitted, changed),
        "train_clean": View(data.images, fitted, ~changed),
        "empty": View(data.images, fitted, torch.zeros_like(changed)),
    }
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    together = evaluate_views(model, views, norm, 4)
    assert len(calls) == -(-300 // 128)  # one pass over the shared images (eval batch 128 on CPU)
    alone = {
        "train_true": evaluate(model, data.images, data.labels, norm, 4),
        "train_noisy": evaluate(model, data.images[changed], fitted[changed], norm, 4),
        "train_clean": evaluate(model, data.images[~changed], fitted[~changed], norm, 4),
    }
    for name, expected in alone.items():
        assert together[name]["acc"] == expected["acc"]
        assert together[name]["per_class_acc"] == expected["per_class_acc"]
        assert together[name]["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert together["empty"] == {"loss": None, "acc": None, "per_class_acc": [None] * 4}
    assert list(together) == list(views)


def test_an_adam_state_saved_as_capturable_resumes_on_the_cpu():
    """A checkpoint from CUDA holds Adam's capturable flag (and its step count on the device);
    load_state_dict restores the flag, which the CPU refuses: the loop makes it fit again."""
    from genlab.training.engine import fit_optimizer_to_device, make_optimizer

    model = torch.nn.Linear(3, 2)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    assert opt.param_groups[0]["capturable"] is False
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    saved = opt.state_dict()
    saved["param_groups"][0]["capturable"] = True  # as written on CUDA
    fresh = make_optimizer("adam", model.parameters(), 1e-3)
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["capturable"] is True
    fit_optimizer_to_device(fresh)
    assert fresh.param_groups[0]["capturable"] is False
    model(torch.randn(4, 3)).sum().backward()
    fresh.step()  # raised before: capturable=True needs params and steps on CUDA
    assert int(fresh.state[model.weight]["step"]) == 2
