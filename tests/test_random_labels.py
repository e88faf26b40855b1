"""Label noise, image randomizations and the random-labels study (tiny synthetic runs)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genlab.cli import main
from genlab.data.labels import corrupt_labels
from genlab.data.randomize import (
    gaussian_images,
    permute_pixels,
    pixel_permutation,
    random_pixels,
    randomize_images,
)
from genlab.errors import GenlabError

K = 10
N = 20_000


def _labels(n: int = N) -> torch.Tensor:
    return torch.randint(K, (n,), generator=torch.Generator().manual_seed(123))


@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("mode", ["uniform", "incorrect"])
def test_changed_fraction_is_within_sampling_error(p, mode):
    labels = _labels()
    new, changed = corrupt_labels(labels, p, K, mode, torch.Generator().manual_seed(0))
    expected = p * (1 - 1 / K) if mode == "uniform" else p
    sigma = math.sqrt(expected * (1 - expected) / N) or 1 / N
    assert abs(changed.float().mean().item() - expected) < 5 * sigma + 1e-12
    assert torch.equal(changed, new != labels)
    assert new.min() >= 0 and new.max() < K and new.dtype == torch.int64


def test_uniform_noise_at_p1_is_uniform_over_classes():
    new, _ = corrupt_labels(_labels(), 1.0, K, "uniform", torch.Generator().manual_seed(0))
    counts = torch.bincount(new, minlength=K).float()
    assert (counts - N / K).abs().max() < 5 * math.sqrt(N / K)


def test_same_seed_same_labels_other_seed_other_labels():
    labels = _labels(1000)
    a = corrupt_labels(labels, 0.5, K, "uniform", torch.Generator().manual_seed(7))
    b = corrupt_labels(labels, 0.5, K, "uniform", torch.Generator().manual_seed(7))
    c = corrupt_labels(labels, 0.5, K, "uniform", torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("mode", ["uniform", "incorrect"])
def test_p0_changes_nothing(mode):
    labels = _labels(1000)
    new, changed = corrupt_labels(labels, 0.0, K, mode, torch.Generator().manual_seed(0))
    assert torch.equal(new, labels) and not changed.any()


def test_incorrect_never_keeps_a_label():
    labels = _labels()
    new, changed = corrupt_labels(labels, 1.0, K, "incorrect", torch.Generator().manual_seed(0))
    assert bool(changed.all()) and not bool((new == labels).any())
    # and every other class is reachable from each class
    for k in range(K):
        assert set(new[labels == k].tolist()) == set(range(K)) - {k}


def test_noise_levels_are_nested_for_one_seed():
    labels = _labels(2000)
    _, low = corrupt_labels(labels, 0.3, K, "incorrect", torch.Generator().manual_seed(0))
    _, high = corrupt_labels(labels, 0.6, K, "incorrect", torch.Generator().manual_seed(0))
    assert bool((high | ~low).all())  # changed at 0.3 => changed at 0.6


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_p_outside_unit_interval_is_refused(p):
    with pytest.raises(GenlabError, match="label-noise"):
        corrupt_labels(_labels(10), p, K)


def _images(n: int = 6, h: int = 5, w: int = 4, c: int = 3) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, h, w, c), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )


def _pixels(images: torch.Tensor) -> torch.Tensor:
    return images.reshape(len(images), -1, images.shape[-1])  # (N, H*W, C)


def _is_pixel_permutation_of(out: torch.Tensor, images: torch.Tensor) -> bool:
    """Each image's pixels (C-tuples) are the same multiset: sort the pixels lexicographically."""

    def canon(x):
        flat = _pixels(x).long()
        key = flat[..., 0] * 65536 + flat[..., 1] * 256 + flat[..., 2]
        return key.sort(1).values

    return torch.equal(canon(out), canon(images))


def test_shuffled_pixels_is_one_permutation_for_every_image_train_and_test():
    train, test = _images(6), _images(4)
    g = torch.Generator().manual_seed(0)
    a, b = randomize_images(train, test, "shuffled-pixels", g, [0.5] * 3, [0.2] * 3)
    assert a.shape == train.shape and a.dtype == torch.uint8
    assert _is_pixel_permutation_of(a, train) and _is_pixel_permutation_of(b, test)
    perm = pixel_permutation(train, torch.Generator().manual_seed(0))
    assert torch.equal(a, permute_pixels(train, perm)) and torch.equal(
        b, permute_pixels(test, perm)
    )
    # one permutation: where pixel j of image 0 went is where pixel j of every image went
    ident = torch.arange(20, dtype=torch.uint8).reshape(1, 5, 4, 1).expand(3, 5, 4, 3).contiguous()
    moved = permute_pixels(ident, perm)
    assert all(torch.equal(moved[i], moved[0]) for i in range(3))
    assert sorted(_pixels(moved)[0, :, 0].tolist()) == list(range(20))


def test_random_pixels_is_a_permutation_per_image_and_they_differ():
    images = torch.arange(20, dtype=torch.uint8).reshape(1, 5, 4, 1).repeat(8, 1, 1, 3)
    out = random_pixels(images, torch.Generator().manual_seed(0))
    assert _is_pixel_permutation_of(out, images)
    perms = _pixels(out)[..., 0]  # (8, 20): the permutation of each image
    assert len({tuple(p.tolist()) for p in perms}) == 8
    again = random_pixels(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    real = _images(5)
    assert _is_pixel_permutation_of(random_pixels(real, torch.Generator().manual_seed(3)), real)


def test_gaussian_images_have_the_requested_channel_statistics():
    x = gaussian_images(
        2000, (8, 8, 3), [0.3, 0.5, 0.7], [0.1, 0.05, 0.1], torch.Generator().manual_seed(0)
    )
    assert x.shape == (2000, 8, 8, 3) and x.dtype == torch.uint8
    mean = x.double().div(255).mean((0, 1, 2))
    std = x.double().div(255).std((0, 1, 2))
    assert torch.allclose(mean, torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64), atol=0.005)
    assert torch.allclose(std, torch.tensor([0.1, 0.05, 0.1], dtype=torch.float64), atol=0.005)


# -- the study, through the command line -----------------------------------------------------

TINY = [
    "--dataset",
    "synthetic",
    "--train-subset",
    "96",
    "--test-subset",
    "64",
    "--width",
    "2",
    "--batch-size",
    "32",
    "--device",
    "cpu",
    "--quiet",
]


def _run_dir(out):
    (path,) = [p for p in (out / "random-labels").iterdir() if (p / "config.json").exists()]
    return path


def test_run_records_noise_metrics_and_summary(tmp_path):
    assert (
        main(
            [
                "run",
                "random-labels",
                *TINY,
                "--epochs",
                "2",
                "--label-noise",
                "0.5",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    path = _run_dir(tmp_path)
    noise = json.loads((path / "label_noise.json").read_text())
    summary = json.loads((path / "summary.json").read_text())
    records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for key in (
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "train_true_acc",
        "train_noisy_acc",
        "train_clean_acc",
    ):
        assert key in records[0]
    n = noise["train"]["num_images"]
    assert (
        noise["train"]["num_changed"]
        == len(noise["train"]["changed_indices"])
        == summary["num_noisy"]
    )
    assert summary["num_noisy"] + summary["num_clean"] == n == 96
    assert summary["fraction_changed"] == pytest.approx(summary["num_noisy"] / n)
    assert abs(summary["fraction_changed"] - 0.5 * (1 - 1 / 4)) < 5 * math.sqrt(0.375 * 0.625 / n)
    assert noise["test"]["num_changed"] == 0 and summary["test_labels"] == "clean"
    assert summary["time_to_fit"] is None and summary["stopped_early"] is False
    assert (path / "figures" / "curves.png").exists()


def test_p1_incorrect_leaves_an_empty_clean_view_and_corrupt_test(tmp_path):
    assert (
        main(
            [
                "run",
                "random-labels",
                *TINY,
                "--epochs",
                "1",
                "--label-noise",
                "1",
                "--label-noise-mode",
                "incorrect",
                "--corrupt-test",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    summary = json.loads((_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["num_clean"] == 0 and summary["fraction_changed"] == 1.0
    assert summary["test_fraction_changed"] == 1.0 and summary["test_labels"] == "corrupted"
    # an empty view has no accuracy: None (null), not 0.0, and not a crash
    assert (
        summary["final_acc"]["train_clean"] is None and summary["best_epoch"]["train_clean"] is None
    )
    assert set(summary["per_class_acc"]["train_clean"].values()) == {None}
    assert summary["final_train_fitted_acc"] == summary["final_acc"]["train_noisy"]


@pytest.mark.parametrize("randomize", ["gaussian"])  # the others are checked as data above
def test_image_randomizations_run(tmp_path, randomize):
    assert (
        main(
            [
                "run",
                "random-labels",
                *TINY,
                "--epochs",
                "1",
                "--randomize",
                randomize,
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert json.loads((_run_dir(tmp_path) / "summary.json").read_text())["randomize"] == randomize


def test_stop_at_train_acc_stops_and_records_time_to_fit(tmp_path):
    # clean synthetic labels are learned within a few epochs (0.95 at epoch 5 of 30, measured)
    flags = [
        "run",
        "random-labels",
        *TINY,
        "--epochs",
        "30",
        "--lr",
        "0.05",
        "--stop-at-train-acc",
        "0.95",
    ]
    assert main([*flags, "--out", str(tmp_path)]) == 0
    path = _run_dir(tmp_path)
    summary = json.loads((path / "summary.json").read_text())
    records = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert summary["stopped_early"] is True and summary["time_to_fit"] == len(records) < 30
    assert records[-1]["stopped"] and not any(r["stopped"] for r in records[:-1])
    last = records[-1]
    assert summary["num_noisy"] == 0 and last["train_noisy_acc"] is None  # p = 0: an empty view
    fitted = last["train_clean_acc"]
    assert fitted >= 0.95 and summary["final_train_fitted_acc"] == pytest.approx(fitted)
    # re-running the command skips the finished run and keeps its record
    assert main([*flags, "--out", str(tmp_path)]) == 0
    assert len((path / "metrics.jsonl").read_text().splitlines()) == len(records)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--label-noise", "1.5"], "--label-noise"),
        (["--label-noise", "-0.1"], "--label-noise"),
        (["--width", "0"], "--width"),
        (["--randomize", "scrambled"], "--randomize"),
        (["--label-noise-mode", "sideways"], "--label-noise-mode"),
        (["--stop-at-train-acc", "1.5"], "--stop-at-train-acc"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, flags, needle):
    assert main(["run", "random-labels", *TINY, *flags, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("genlab: error:") and needle in err
    assert not (tmp_path / "random-labels").exists()  # refused before any folder is made


def test_grid_runs_the_report_grid_resumes_and_skips(tmp_path, monkeypatch, capsys):
    """The grid is one sweep, claimed and trained in batches of as many members as one thread
    trains side by side (4: lanes x chunks of 4), each batch one ``fit``; killed after the first
    batch's first epoch, the same command resumes those members, trains the others, and then
    skips what is done."""
    from dataclasses import replace

    from genlab.studies import common

    real_fit, calls = common.fit, []

    def interrupted(members, rt, **kwargs):
        calls.append(len(members))
        if len(calls) == 1:
            real_fit([replace(m, spec=replace(m.spec, epochs=1)) for m in members], rt, **kwargs)
            raise KeyboardInterrupt
        return real_fit(members, rt, **kwargs)

    loud = [flag for flag in TINY if flag != "--quiet"]  # the skip and resume messages are checked
    grid = ["run", "random-labels", "--grid", *loud, "--epochs", "2", "--threads", "1"]
    grid += ["--out", str(tmp_path)]
    monkeypatch.setattr("genlab.reporting.plot_run", lambda path: [])  # per-run: tested above
    monkeypatch.setattr(common, "fit", interrupted)
    assert main(grid) == 130
    (parent,) = (p for p in (tmp_path / "random-labels").iterdir() if not p.name.startswith("."))
    assert parent.name.startswith("sweep-") and (parent / "sweep.json").exists()
    runs = sorted(p for p in parent.iterdir() if (p / "config.json").exists())
    assert len(runs) == 4 and not any((p / "summary.json").exists() for p in runs)
    assert all(len((p / "metrics.jsonl").read_text().splitlines()) == 1 for p in runs)
    assert not list(parent.glob(".*.lock"))  # the interrupted process released its claims
    capsys.readouterr()

    assert main(grid) == 0
    assert calls == [4, 4, 2]  # batches of 4 in the grid's order: under's 3 p, then over's
    out = capsys.readouterr().out
    runs = sorted(p for p in parent.iterdir() if (p / "config.json").exists())
    assert len(runs) == 6 and all((p / "summary.json").exists() for p in runs)
    assert out.count("resuming") == 4
    for p in runs:
        assert [
            json.loads(line)["epoch"] for line in (p / "metrics.jsonl").read_text().splitlines()
        ] == [1, 2]
    cfgs = [json.loads((p / "config.json").read_text())["config"] for p in runs]
    assert sorted((c["optimizer"], c["label_noise"]) for c in cfgs) == sorted(
        (opt, p) for opt in ("sgd", "adam") for p in (0.0, 0.5, 1.0)
    )
    assert all(c["width"] == 2 and c["epochs"] == 2 for c in cfgs)  # flags override the presets
    assert (parent / "figures" / "time_to_fit.png").exists()
    before = {p: (p / "metrics.jsonl").read_text() for p in runs}
    assert main(grid) == 0  # a third time: everything is skipped
    assert capsys.readouterr().out.count("finished already") == 6
    assert all((p / "metrics.jsonl").read_text() == text for p, text in before.items())


def test_grid_refuses_a_label_noise(tmp_path, capsys):
    assert (
        main(
            [
                "run",
                "random-labels",
                "--grid",
                *TINY,
                "--label-noise",
                "0.3",
                "--out",
                str(tmp_path),
            ]
        )
        == 1
    )
    assert "drop --label-noise" in capsys.readouterr().err
    assert not tmp_path.joinpath("random-labels").exists()


def test_grid_refuses_a_preset(tmp_path, capsys):
    assert (
        main(["run", "random-labels", "--grid", "--preset", "over", *TINY, "--out", str(tmp_path)])
        == 1
    )
    assert "--grid" in capsys.readouterr().err


def test_presets_are_the_reports():
    from genlab.models import conv4_param_count
    from genlab.studies.random_labels import PRESETS

    under, over = PRESETS["under"], PRESETS["over"]
    assert (
        conv4_param_count(under["width"]) == 6_666 and conv4_param_count(over["width"]) == 1_558_026
    )
    assert (under["optimizer"], under["lr"], under["batch_size"], under["epochs"]) == (
        "sgd",
        0.003,
        64,
        800,
    )
    assert (over["optimizer"], over["lr"], over["batch_size"], over["epochs"]) == (
        "adam",
        3e-4,
        64,
        1000,
    )
    assert under["weight_decay"] == over["weight_decay"] == 0.0


# -- an empty view at p = 0, and the regime of a preset on a subset (issue #14) ---------------------


def test_p0_digits_run_stores_null_for_the_empty_noisy_view_and_warns_of_the_regime(
    tmp_path, capsys
):
    """At p = 0 no label changes, so train_noisy has no rows: its numbers are None (null), the
    epoch line prints n/a, and summaries, aggregation and figures take it. Width 4 (the 'under'
    preset's) on 200 images is over-parametrized: one warning, and the summary says so."""
    from genlab.aggregate import aggregate
    from genlab.config import from_dict, identity_dict
    from genlab.reporting.random_labels import regime_note
    from genlab.studies.random_labels import Config

    flags = ["--dataset", "digits", "--epochs", "1", "--train-subset", "200"]
    flags += ["--test-subset", "100", "--width", "4", "--label-noise", "0", "--device", "cpu"]
    assert main(["run", "random-labels", *flags, "--threads", "1", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    path = _run_dir(tmp_path)
    (record,) = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert record["train_noisy_acc"] is None and record["train_noisy_loss"] is None
    assert record["train_noisy_per_class_acc"] == [None] * 10
    assert "null" in (path / "metrics.jsonl").read_text()
    assert "train_noisy acc n/a" in captured.out
    assert f"train_clean acc {record['train_clean_acc']:.4f}" in captured.out
    summary = json.loads((path / "summary.json").read_text())
    assert summary["num_noisy"] == 0 and summary["num_clean"] == 200
    assert (
        summary["final_acc"]["train_noisy"] is None and summary["best_acc"]["train_noisy"] is None
    )
    assert set(summary["per_class_acc"]["train_noisy"].values()) == {None}
    assert summary["final_train_fitted_acc"] == pytest.approx(record["train_clean_acc"])
    assert (path / "figures" / "curves.png").exists()
    # the regime: 6,666 parameters (the closed form) for 200 labels
    assert summary["regime"] == {
        "params": 6_666,
        "num_train": 200,
        "params_per_label": 6_666 / 200,
        "over_parametrized": True,
        "preset": "under",
        "matches_preset": False,
    }
    warnings = [line for line in captured.err.splitlines() if line.startswith("genlab: warning:")]
    assert warnings == [
        "genlab: warning: conv4 width 4 has 6,666 parameters for 200 training labels (33.3 per "
        "label): over-parametrized, although the 'under' preset (width 4) is named "
        "under-parametrized (--train-subset 200)"
    ]
    assert regime_note(summary) == (
        "6,666 parameters for 200 training labels: over-parametrized (not as the 'under' preset is named)"
    )
    # aggregation over seeds leaves the empty view out of the metrics instead of averaging zeros
    cfg = json.loads((path / "config.json").read_text())["config"]
    settings = identity_dict(from_dict(Config, cfg))
    (entry,) = aggregate([({**settings, "seed": s}, summary) for s in (0, 1)])
    assert "final_acc.train_noisy" not in entry["metrics"]
    assert entry["numbers_in"]["final_acc.train_noisy"] == 0
    assert entry["metrics"]["regime.params_per_label"]["mean"] == pytest.approx(33.33)


def test_regime_against_the_presets_names():
    from genlab.studies.random_labels import regime

    assert regime(6_666, 50_000, 4)["over_parametrized"] is False  # CIFAR-10's full train set
    assert regime(6_666, 50_000, 4)["matches_preset"] is True
    assert regime(6_666, 2_000, 4)["matches_preset"] is False  # issue #14's subset
    assert regime(1_558_026, 50_000, 64)["matches_preset"] is True
    assert regime(1_558_026, 2_000_000, 64)["matches_preset"] is False
    assert regime(6_666, 6_666, 4)["over_parametrized"] is True  # as many parameters as labels
    none = regime(100, 10, 2)
    assert none["preset"] is None and none["matches_preset"] is None


def test_no_regime_warning_where_the_run_is_no_presets_width(tmp_path, capsys):
    assert main(["run", "random-labels", *TINY, "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert "warning" not in capsys.readouterr().err
    summary = json.loads((_run_dir(tmp_path) / "summary.json").read_text())
    assert summary["regime"]["preset"] is None and summary["regime"]["num_train"] == 96
