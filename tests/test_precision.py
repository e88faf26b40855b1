"""The arithmetic is part of what a run folder holds: a run trained in fp32 is not reported
"finished already" (or resumed) by a bf16 command, nor the other way round; the folder name
does not say which (README, "How a run computes"), so the check is on opening."""

from __future__ import annotations

import json

import pytest

import genlab
from genlab import cli
from genlab.errors import GenlabError
from genlab.runs import CONFIG, ENV, SUMMARY

TINY = {"dataset": "synthetic", "width": 2, "epochs": 1}


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def fp32_run(tmp_path):
    run = genlab.run("robustness", out=tmp_path, quiet=True, device="cpu", precision="fp32", **TINY)
    assert json.loads((run / CONFIG).read_text())["precision"] == "fp32"
    return run


def test_a_bf16_command_does_not_take_an_fp32_run_as_its_own(tmp_path, fp32_run):
    before = _files(fp32_run)
    with pytest.raises(GenlabError) as e:
        genlab.run("robustness", out=tmp_path, quiet=True, device="cpu", precision="bf16", **TINY)
    assert str(e.value) == (
        f"{fp32_run}: trained with --precision fp32, and this command computes in bf16; "
        "give --precision fp32 to finish or reuse it, another --out to train it in bf16, "
        "or --force to replace it"
    )
    assert _files(fp32_run) == before  # nothing touched
    # the same precision finds it finished, and auto on a CPU is fp32
    again = genlab.run("robustness", out=tmp_path, quiet=True, device="cpu", **TINY)
    assert again == fp32_run and _files(fp32_run) == before


def test_the_cli_refuses_in_one_line_and_force_replaces(tmp_path, fp32_run, capsys):
    flags = ["run", "robustness", "--dataset", "synthetic", "--width", "2", "--epochs", "1"]
    flags += ["--out", str(tmp_path), "--device", "cpu", "--quiet"]
    assert cli.main([*flags, "--precision", "bf16"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"genlab: error: {fp32_run}: trained with")
    assert cli.main([*flags, "--precision", "bf16", "--force"]) == 0
    record = json.loads((fp32_run / CONFIG).read_text())
    assert record["precision"] == "bf16" and (fp32_run / SUMMARY).exists()


def test_a_run_made_before_the_record_is_checked_by_its_env_json(tmp_path, fp32_run):
    record = json.loads((fp32_run / CONFIG).read_text())
    del record["precision"]  # as genlab wrote config.json before it recorded the arithmetic
    (fp32_run / CONFIG).write_text(json.dumps(record))
    assert json.loads((fp32_run / ENV).read_text())["precision"] == "fp32"
    with pytest.raises(GenlabError, match="trained with --precision fp32"):
        genlab.run("robustness", out=tmp_path, quiet=True, device="cpu", precision="bf16", **TINY)


def test_the_cli_refuses_before_it_prints_the_config(tmp_path, fp32_run, capsys):
    flags = ["run", "robustness", "--dataset", "synthetic", "--width", "2", "--epochs", "1"]
    assert cli.main([*flags, "--out", str(tmp_path), "--device", "cpu", "--precision", "bf16"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"genlab: error: {fp32_run}: trained with")


def test_a_rerun_in_another_arithmetic_alone_asks_for_another_out(tmp_path, fp32_run, capsys):
    before = _files(fp32_run)
    for extra in ([], ["--force"], ["--continue"]):
        assert cli.main(["rerun", str(fp32_run), "--precision", "bf16", *extra]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err == (
            f"genlab: error: {fp32_run}: was trained with --precision fp32, and a rerun in bf16 "
            "would be named as it is; give --out for the bf16 run\n"
        )
        assert _files(fp32_run) == before  # RUN itself is never changed, --force or not
    other = tmp_path / "bf16"
    assert cli.main(["rerun", str(fp32_run), "--precision", "bf16", "--out", str(other)]) == 0
    new = next(other.rglob(CONFIG)).parent
    assert json.loads((new / CONFIG).read_text())["precision"] == "bf16"
    assert new.name == fp32_run.name and _files(fp32_run) == before
