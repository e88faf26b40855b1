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


TINY = ["--dataset", "synthetic", "--width", "2", "--epochs", "1", "--device", "cpu"]


def usage_error(capsys, *args: str) -> str:
    """The stderr of a usage error, which exits 2 as argparse's do."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(args))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith("\n")
    return err


@pytest.mark.parametrize(
    ("flag", "line"),
    [
        ("--widht", "--widht: no such flag of genlab run robustness (did you mean --width?)"),
        (
            "--wid",  # an abbreviation is not the flag it abbreviates
            "--wid: no such flag of genlab run robustness "
            "(flags are not abbreviated; did you mean --width?)",
        ),
    ],
)
def test_a_misspelt_flag_names_the_right_one_under_the_study_usage(tmp_path, capsys, flag, line):
    err = usage_error(capsys, "run", "robustness", flag, "4", "--out", str(tmp_path))
    assert err.splitlines()[-1] == f"genlab: error: {line}"
    assert err.startswith("usage: genlab run robustness [-h]")  # the study's, not genlab's
    assert all(not row.startswith("genlab") for row in err.splitlines()[:-1])
    assert not tmp_path.joinpath("robustness").exists()


def walk(parser):
    """Every parser of the command line, sub-commands' too."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from walk(sub)


def test_no_parser_takes_abbreviations():
    assert all(p.allow_abbrev is False for p in walk(cli.build_parser()))


def test_sweep_misspelt_flag(capsys):
    err = usage_error(capsys, "sweep", "robustness", "--lanucher", "dask")
    assert err.splitlines()[-1] == (
        "genlab: error: --lanucher: no such flag of genlab sweep robustness (did you mean --launcher?)"
    )


def test_the_resolved_config_prints_grouped_one_setting_a_line(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "run", "robustness", *TINY, "--out", str(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert lines[18].startswith("epoch   1/1  train loss")  # printed before training
    assert lines[:18] == [
        "robustness config:",
        "  data        --dataset           synthetic",
        "              --data-dir          none",
        "              --train-subset      none",
        "  model       --model             conv4",
        "              --width             2",
        "              --kernel            3",
        "  training    --epochs            1",
        "              --batch-size        64",
        "              --optimizer         sgd",
        "              --lr                0.1",
        "              --momentum          0.0",
        "              --weight-decay      0.0",
        "              --seed              0",
        "  robustness  --augment           none",
        "              --invariance        none",
        "              --views             all",
        "  output      --keep-checkpoints  0",
    ]
    code, out, _ = run_cli(capsys, "run", "robustness", *TINY, "--quiet", "--out", str(tmp_path))
    assert out.splitlines() == [lines[-1]]  # --quiet: the path only


def test_config_lines_group_a_study_s_own_settings_under_it_within_80_columns():
    from genlab.studies import STUDIES, pruning

    cfg = pruning.Config(dataset="/a/very/long/path/" * 6)
    lines = cli.config_lines(STUDIES["pruning"], cfg)
    assert all(len(line) <= 80 for line in lines)
    groups = [line.split()[0] for line in lines[1:] if not line.startswith("   ")]
    assert groups == ["data", "model", "training", "random-labels", "pruning", "output"]
    assert "  random-labels  --label-noise        0.0" in lines
    assert "  pruning        --rounds             3" in lines


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"genlab {version('genlab')}\n"


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*args, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps the lines


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_study_help_lists_each_full_first_sentence(capsys, command):
    shown = _help(capsys, command)
    for sentence in (
        "Study 1 — flip robustness: does a CNN trained on upright images recognise them upside "
        "down?",
        "Study 2 — memorization of random labels (Zhang et al. 2017): does fitting the training "
        "set say anything about the test set?",
        "Linear mode connectivity (Frankle, Dziugaite, Roy & Carbin 2020): from which epoch on "
        "does the noise of SGD (the order of the data) no longer change which minimum a network "
        "ends in?",
        "Beyond the report: how many parameters does memorization need?",
    ):
        assert sentence in shown


def test_analyze_help_lists_each_full_first_sentence(capsys):
    shown = _help(capsys, "analyze")
    assert "similarity how alike are the representations of networks trained alike?" in shown
    assert "criticality which layers of a trained Conv-4 matter?" in shown


def test_no_help_shows_a_python_repr():
    import re

    helps = [p.format_help() for p in walk(cli.build_parser())]
    assert len(helps) > 20
    for text in helps:
        assert not re.search(r"\('|\['|\bNone\b|\bTrue\b|\bFalse\b", text), text


def test_export_help_lists_both_formats(capsys):
    shown = _help(capsys, "export")
    assert "csv " in shown and "tensorboard " in shown
    assert "--out FILE" in _help(capsys, "export", "csv")


def test_config_file_then_flags(tmp_path, capsys):
    settings = tmp_path / "settings.toml"
    settings.write_text(
        'dataset = "synthetic"\nwidth = 4\nepochs = 1\nlr = 1\nviews = ["identity", "vflip"]\n'
        'train_subset = "none"\n'
    )
    code, out, err = run_cli(
        capsys, "run", "robustness", "--config", str(settings), "--width", "2", "--device", "cpu",
        "--quiet", "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert code == 0, err
    record = json.loads((Path(out.split()[-1]) / CONFIG).read_text())
    config = record["config"]
    assert (config["width"], config["epochs"], config["lr"]) == (2, 1, 1.0)  # the flag wins
    assert config["views"] == ["identity", "vflip"] and config["train_subset"] is None
    # a run's whole config.json is a config file too: the same run, finished already
    code, again, _ = run_cli(
        capsys, "run", "robustness", "--config", str(Path(out.split()[-1]) / CONFIG),
        "--device", "cpu", "--quiet", "--out", str(tmp_path / "runs"),
    )  # fmt: skip
    assert code == 0 and again == out


def test_config_file_in_a_sweep_is_one_value(tmp_path, capsys):
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"dataset": "synthetic", "epochs": 1, "views": ["identity"]}))
    code, out, err = run_cli(
        capsys, "sweep", "robustness", "--config", str(settings), "--width", "2", "3",
        "--device", "cpu", "--quiet", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    members = json.loads((Path(out.split()[-1]) / "sweep.json").read_text())["members"]
    assert [(m["config"]["width"], m["config"]["views"]) for m in members] == [
        (2, ["identity"]),
        (3, ["identity"]),
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "a.toml",
            "widht = 4\n",
            "{f}: widht: no such setting of robustness (did you mean width?)",
        ),
        ("a.toml", 'width = "four"\n', '{f}: width = "four": not an integer'),
        ("a.toml", "views = 3\n", "{f}: views = 3: not a list of strings"),
        ("a.toml", "augment = true\n", "{f}: augment = true: not a string"),
        ("a.toml", "width = [\n", "{f}: not valid TOML ("),
        ("a.json", "[1, 2]", "{f}: not a table of settings (holds a list)"),
        ("a.json", '{"width": 4,}', "{f}: not valid JSON ("),
        (
            "a.json",
            '{"study": "linreg", "config": {}, "identity": {}}',
            "{f}: the config of a linreg run, not of robustness",
        ),
        ("a.json", '{"kernel": 4}', "{f}: --kernel 4: must be odd"),
        ("a.yaml", "width: 4", "--config {f}: not a .toml or .json file"),
        ("missing.toml", None, "--config {f}: no such file"),
    ],
)
def test_bad_config_files_give_one_line_naming_the_file(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    out = tmp_path / "runs"
    code, printed, err = run_cli(
        capsys, "run", "robustness", *TINY, "--config", str(path), "--out", str(out)
    )
    assert code == 1 and printed == ""
    assert err.count("\n") == 1
    assert err.startswith("genlab: error: " + message.format(f=path))
    assert not out.exists()


def test_a_flag_overrides_a_bad_file_value(tmp_path, capsys):
    path = tmp_path / "a.json"
    path.write_text('{"width": 0}')
    args = cli.build_parser().parse_args(
        ["run", "robustness", "--config", str(path), "--width", "3"]
    )
    from genlab.studies import STUDIES

    assert cli.resolve_config(STUDIES["robustness"], args).width == 3
