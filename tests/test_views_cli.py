"""The transformation suite end to end: views after a run, ``genlab eval``, ``--compare``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genlab import cli
from genlab.data.transforms import VIEWS
from genlab.runs import FIGURES, INVARIANCE, SUMMARY, VIEW_RESULTS

FAST = ["--dataset", "synthetic", "--width", "2", "--epochs", "1", "--device", "cpu", "--quiet"]


def test_eval_refuses_a_run_whose_test_set_was_changed(tmp_path, capsys):
    from genlab.cli import main

    args = [
        "run",
        "random-labels",
        "--dataset",
        "synthetic",
        "--width",
        "2",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--quiet",
        "--test-subset",
        "50",
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    (run_dir,) = (tmp_path / "random-labels").iterdir()
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--views", "vflip"]) == 1
    assert "trained with --test-subset" in capsys.readouterr().err


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One robustness run of Conv-4 with its logits averaged over the flip (--views all)."""
    out = tmp_path_factory.mktemp("views")
    assert cli.main(["run", "robustness", *FAST, "--invariance", "average", "--out", str(out)]) == 0
    (run_dir,) = (out / "robustness").iterdir()
    return run_dir


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_run_ends_with_every_view_and_the_layer_measures(averaged_run):
    views = read(averaged_run / VIEW_RESULTS)
    assert set(views["views"]) == set(VIEWS) and views["epoch"] == 1
    classes = read(averaged_run / "dataset.json")["classes"]
    for result in views["views"].values():
        assert list(result["per_class_acc"]) == classes
    # averaging over {identity, vflip} is exactly invariant: identical predictions, class by class
    assert views["views"]["vflip"] == views["views"]["identity"]
    summary = read(averaged_run / SUMMARY)
    assert summary["views_acc"] == {v: r["acc"] for v, r in views["views"].items()}
    assert summary["final_acc"]["test"] == summary["final_acc"]["test_vflip"]
    layers = read(averaged_run / INVARIANCE)["layers"]
    assert [r["layer"] for r in layers][-1] == "logits"
    assert layers[-1]["invariance_cka"] == pytest.approx(1.0, abs=1e-9)
    assert {"views_heatmap.png", "views_table.md", "invariance.png"} <= {
        p.name for p in (averaged_run / FIGURES).iterdir()
    }


def test_eval_adds_views_and_leaves_the_summary_alone(averaged_run, capsys):
    before = read(averaged_run / VIEW_RESULTS)
    summary = (averaged_run / SUMMARY).read_bytes()
    (averaged_run / VIEW_RESULTS).unlink()
    code, out, _ = run_cli(capsys, "eval", str(averaged_run), "--views", "rot90", "vflip")
    assert code == 0 and "views_heatmap.png" in out
    after = read(averaged_run / VIEW_RESULTS)
    assert list(after["views"]) == ["rot90", "vflip"]  # JSON keys sorted
    assert after["views"]["vflip"] == before["views"]["vflip"]  # the checkpoint's model, again
    code, _, _ = run_cli(
        capsys, "eval", str(averaged_run), "--views", "identity", "--device", "cpu"
    )
    assert code == 0 and set(read(averaged_run / VIEW_RESULTS)["views"]) == {
        "identity",
        "rot90",
        "vflip",
    }
    assert (averaged_run / SUMMARY).read_bytes() == summary
    table = (averaged_run / FIGURES / "views_table.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:]] == ["| identity", "| vflip", "| rot90"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "{tmp}"], "not a run folder (no config.json)"),
        (["eval", "{run}", "--views", "upside"], "--views 'upside': no such view"),
        (["run", "robustness", *FAST, "--views", "sideways"], "--views 'sideways': no such view"),
        (
            ["run", "robustness", *FAST, "--model", "conv4-d4", "--kernel", "4"],
            "--kernel 4: must be odd",
        ),
        (
            ["run", "robustness", *FAST, "--compare", "--model", "conv4"],
            "(--compare, --name compare) sets --model",
        ),
        (["run", "robustness", *FAST, "--invariance", "max"], "--invariance: 'max' is not one of"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(averaged_run, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, run=averaged_run) for a in args]
    code, _, err = run_cli(capsys, *args, *(["--out", str(tmp_path)] if args[0] == "run" else []))
    assert code == 1
    assert err.startswith("genlab: error: ") and message in err and err.count("\n") == 1


def test_compare_trains_five_conditions_under_one_budget():
    from genlab.studies import robustness

    args = cli.build_parser().parse_args(["run", "robustness", "--compare", "--width", "16"])
    assert args.named_sweep == "compare"
    cfgs = robustness.compare({"width": 16, "epochs": 3, "seed": 2})
    assert [(c.model, c.width, c.augment) for c in cfgs] == [
        ("conv4", 16, "none"),
        ("conv4", 16, "double"),
        ("conv4", 16, "random"),
        ("conv4-vflip", 16, "none"),
        ("conv4-vflip", 11, "none"),  # 93,158 parameters against Conv-4's 99,210
    ]
    assert {(c.epochs, c.seed) for c in cfgs} == {(3, 2)}


def test_comparison_reads_run_folders(averaged_run, tmp_path):
    from genlab.reporting.robustness import plot_compare

    files = plot_compare([averaged_run, averaged_run], tmp_path / "figures")
    comparison = read(tmp_path / "comparison.json")
    (row, _) = comparison["runs"]
    assert row["params"] == read(averaged_run / SUMMARY)["params"]
    assert row["epochs"] == [1] and len(row["test_acc"]) == len(row["test_vflip_acc"]) == 1
    assert row["train_seconds_per_epoch"] > 0 and row["invariance"] == "average"
    assert {f.name for f in files} >= {"comparison.json", "comparison.md", "compare_accuracy.png"}
    assert (tmp_path / "comparison.md").read_text().count("| conv4 w2, invariance average |") == 2
