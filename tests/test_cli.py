"""The command line end to end on synthetic data, and one clear line for each bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genlab import cli
from genlab.runs import CONFIG, DATASET, ENV, FIGURE_LIST, FIGURES, METRICS, SUMMARY

FAST = ["--width", "2", "--epochs", "2", "--device", "cpu", "--quiet"]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_robustness_end_to_end(tmp_path, capsys):
    code, out, _ = run_cli(
        capsys,
        "run",
        "robustness",
        "--dataset",
        "synthetic",
        "--augment",
        "double",
        *FAST,
        "--out",
        str(tmp_path),
    )
    assert code == 0
    run_dir = Path(out.strip().removeprefix("results: "))
    assert run_dir.parent == tmp_path / "robustness"
    for name in (CONFIG, ENV, DATASET, METRICS, SUMMARY):
        assert (run_dir / name).exists(), name
    cfg = json.loads((run_dir / CONFIG).read_text())
    assert cfg["study"] == "robustness" and cfg["config"]["augment"] == "double"
    assert cfg["config"]["kernel"] == 3 and cfg["config"]["optimizer"] == "sgd"  # defaults resolved
    env = json.loads((run_dir / ENV).read_text())
    assert {"git_commit", "torch", "device", "torch_threads", "seed"} <= set(env)
    dataset = json.loads((run_dir / DATASET).read_text())
    assert dataset["num_train"] == 256 and dataset["num_train_seen_per_epoch"] == 512
    assert len(dataset["normalization"]["mean"]) == 3
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert summary["epochs"] == 2 and summary["params"] > 0
    drawn = {
        "accuracy.png",
        "per_class_accuracy.png",
        "per_class_bars.png",
        "views_heatmap.png",  # the eight views after the last epoch (--views all)
        "views_table.md",
        "invariance.png",
    }
    assert {p.name for p in (run_dir / FIGURES).iterdir()} == drawn | {FIGURE_LIST}
    assert set(json.loads((run_dir / FIGURES / FIGURE_LIST).read_text())) == drawn  # written last


def test_preset_then_flags(tmp_path, capsys):
    from genlab.studies import STUDIES

    args = cli.build_parser().parse_args(
        ["run", "robustness", "--preset", "report", "--epochs", "3"]
    )
    cfg = cli.resolve_config(STUDIES["robustness"], args)
    assert (cfg.dataset, cfg.width, cfg.lr, cfg.batch_size, cfg.epochs) == (
        "cifar10",
        64,
        0.1,
        64,
        3,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dataset", "imagenet"],
            "--dataset 'imagenet': no such dataset (valid: digits, cifar10, synthetic",
        ),
        (
            ["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"],
            "--data-dir /nonexistent/cifar: no such folder",
        ),
        (["--dataset", "/nonexistent/folder"], "/nonexistent/folder: no such folder"),
        (["--kernel", "4"], "--kernel 4: must be odd"),
        (["--width", "0"], "--width 0: must be an integer >= 1"),
        (["--epochs", "0"], "--epochs 0: must be >= 1"),
        (["--lr", "-1"], "--lr -1.0: must be a finite number > 0"),
        (["--preset", "nope"], "--preset 'nope': no such preset (valid: report)"),
        (["--train-subset", "100000"], "--train-subset 100000: must be between 1 and 256"),
        (["--precision", "fp16"], "--precision"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(tmp_path, capsys, args, message):
    code, _, err = run_cli(
        capsys, "run", "robustness", "--dataset", "synthetic", *FAST, *args, "--out", str(tmp_path)
    )
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("genlab: error: ")
    assert message in err


def test_a_bad_architecture_leaves_no_run_folder(tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "run",
        "robustness",
        "--dataset",
        "synthetic",
        *FAST,
        "--kernel",
        "4",
        "--out",
        str(tmp_path),
    )
    assert code == 1 and "--kernel 4: must be odd" in err
    assert not (tmp_path / "robustness").exists()


def test_a_folder_that_holds_something_else_is_not_overwritten(tmp_path, capsys):
    args = ["run", "robustness", "--dataset", "synthetic", *FAST, "--out", str(tmp_path)]
    code, out, _ = run_cli(capsys, *args)
    run_dir = Path(out.strip().removeprefix("results: "))
    cfg = json.loads((run_dir / CONFIG).read_text())
    cfg["identity"]["width"] = 999  # as if another config had written this folder
    (run_dir / CONFIG).write_text(json.dumps(cfg))
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "different config; use --force" in err
    assert json.loads((run_dir / CONFIG).read_text())["identity"]["width"] == 999


def test_python_dash_m_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "genlab", "run", "robustness", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--dataset",
        "--data-dir",
        "--width",
        "--kernel",
        "--epochs",
        "--batch-size",
        "--optimizer",
        "--lr",
        "--augment",
        "--train-subset",
        "--seed",
        "--device",
        "--out",
        "--preset",
        "--force",
    ):
        assert flag in out


def test_figures_command_redraws(tmp_path, capsys):
    code, out, _ = run_cli(
        capsys, "run", "robustness", "--dataset", "synthetic", *FAST, "--out", str(tmp_path)
    )
    run_dir = Path(out.strip().removeprefix("results: "))
    for png in (run_dir / FIGURES).iterdir():
        png.unlink()
    code, out, _ = run_cli(capsys, "figures", str(tmp_path))
    assert code == 0 and len(list((run_dir / FIGURES).glob("*.png"))) == 5  # 3 + views, invariance
    code, _, err = run_cli(capsys, "figures", str(tmp_path / "none"))
    assert code == 1 and "no run or analysis folders found" in err


def test_figures_of_a_run_killed_before_its_first_epoch(tmp_path, capsys):
    from genlab.runs import Run

    run = Run.open(
        tmp_path / "robustness" / "r", {"study": "robustness", "config": {}, "identity": {}}
    )
    run.append_metrics({"epoch": 1})
    with open(run.path / METRICS, "a") as f:
        f.write('{"epoch": 2, "cut by a ki')
    code, _, err = run_cli(capsys, "figures", str(tmp_path))
    assert code == 0, err
    assert [r["epoch"] for r in run.keep_metrics()] == [1]  # the cut line is gone for good
    assert (run.path / METRICS).read_text() == '{"epoch": 1}\n'


def test_written_files_are_readable_by_others(tmp_path):
    import os
    import stat

    from genlab.fileio import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
