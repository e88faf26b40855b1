"""The HTML report on tiny real runs of every study: numbers and figures appear, each column at
its one precision (exact strings), JSON rounded for reading, links relative to the report, the
summary line and figures across runs of a study's reporting module (patched onto the real
module) and a failing one shown as a problem; broken runs are shown as broken, text from run
folders is escaped; sweep folders built by hand with known numbers: one aggregated row per entry
with mean ± half-width of the 95% interval, band figures whose edges are the Student-t interval;
the reporting modules' import structure; and (marked ``browser``) the page in headless Chromium:
every image loads, no console errors, a run named ``<script>`` stays text, and the demo's report
at 1280 px has no horizontal overflow, its full-page screenshot kept."""

from __future__ import annotations

import ast
import base64
import html
import json
import math
import os
import re
import select
import shutil
import struct
import subprocess
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape
from scipy import stats

import genlab
from genlab import cli, reporting
from genlab.aggregate import aggregate, write_aggregate
from genlab.fileio import write_json
from genlab.reporting import plotting
from genlab.reporting import random_labels as rl_reporting
from genlab.reporting import robustness as rob_reporting
from genlab.reporting.html import build_report, fmt, fmt_interval, number_format, pretty
from genlab.runs import (
    AGGREGATE,
    CONFIG,
    DATASET,
    FIGURES,
    METRICS,
    SUMMARY,
    SWEEP,
    find_runs,
    is_sweep,
)
from genlab.studies import STUDIES

TINY = {
    "robustness": {"dataset": "synthetic", "width": 2, "epochs": 1},
    "linreg": {"n": 20, "p": 40, "n_test": 50, "epochs": 5, "sweep_p": True, "sweep_points": 4,
               "sweep_seeds": 2},
    "random-labels": {"dataset": "synthetic", "width": 2, "epochs": 1, "label_noise": 1.0},
}  # fmt: skip
EVIL = "<script>window.pwned=1</script>"
EVIL_FOLDER = '<img src=x onerror="window.pwned=1">'
REPORTING = Path(reporting.__file__).parent


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished tiny run per study (about 10 s in all, mostly drawing figures)."""
    out = tmp_path_factory.mktemp("runs")
    return {
        study: genlab.run(study, out=out, quiet=True, device="cpu", threads=1, **overrides)
        for study, overrides in TINY.items()
    }


def copy_run(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def img_count(page: str) -> int:
    return page.count('<img src="data:image/png;base64,')


def test_every_study_shows_its_numbers_and_figures(tiny_runs, tmp_path):
    report = build_report([tiny_runs[s].parent for s in tiny_runs], tmp_path / "report")
    page = report.read_text()
    figures = [f for run in tiny_runs.values() for f in (run / FIGURES).glob("*.png")]
    assert img_count(page) == len(figures) >= 3 * len(tiny_runs) - 2
    for study, run in tiny_runs.items():
        assert f'id="study-{study}"' in page
        assert str(run) in page  # where its files are
        summary = json.loads((run / SUMMARY).read_text())
        config = json.loads((run / CONFIG).read_text())["config"]
        assert str(escape(pretty(config))) in page
        keys = {
            "robustness": [("final_acc", "test_vflip"), ("params",)],
            "linreg": [("test_mse_min_norm",), ("sgd_final_dist_to_min_norm",)],
            "random-labels": [("final_train_fitted_acc",), ("fraction_changed",)],
        }[study]
        for path in keys:
            value = summary
            for key in path:
                value = value[key]
            assert f"<td>{fmt(value, '.'.join(path))}</td>" in page, (study, value)
        assert reporting.reporting_module(study).TITLE in page
    assert f"{len(tiny_runs)} finished, 0 unfinished, 0 broken." in " ".join(page.split())


def hrefs(page: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]*)"', page)]


def test_links_to_folders_are_relative_to_the_report_so_it_can_move(tiny_runs, tmp_path):
    runs = tmp_path / "a" / "runs"
    for study, run in tiny_runs.items():
        copy_run(run, runs / study / run.name)
    make_sweep_folder(runs)
    report = build_report([runs], tmp_path / "a" / "report", draw_missing=False)
    assert "file:" not in report.read_text()
    shutil.move(tmp_path / "a", tmp_path / "b")  # moved, as a mailed folder would be
    report = tmp_path / "b" / "report" / "index.html"
    links = [h for h in hrefs(report.read_text()) if not h.startswith(("#", "data:"))]
    assert len(links) == len(tiny_runs) + 1 + 4  # the runs, the sweep and its 4 members
    for link in links:
        assert link.startswith("../runs/") and link.endswith("/"), link
        target = (report.parent / urllib.parse.unquote(link)).resolve()
        assert (target / CONFIG).exists() or (target / SWEEP).exists(), link


def overlay(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """A real small figure across the runs: what a module's ``compare`` writes."""
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(range(len(run_dirs)), [0.5] * len(run_dirs), "o-")
    return [plotting.save(fig, Path(out_dir) / "robustness_overlay.png")]


def test_a_studys_finding_opens_the_report_and_its_compare_figures_its_section(
    tiny_runs, tmp_path, monkeypatch
):
    runs = tmp_path / "runs"
    for name in ("first", "second"):
        copy_run(tiny_runs["robustness"], runs / name)
    (copy_run(tiny_runs["robustness"], runs / "killed") / SUMMARY).unlink()
    asked: dict[str, list[Path]] = {}

    def finding(run_dirs: list[Path]) -> str:
        asked["finding"] = sorted(run_dirs)
        return f"flipped test accuracy 0.52 against 0.99 upright over {len(run_dirs)} runs"

    def compare(run_dirs: list[Path], out_dir: Path) -> list[Path]:
        asked["compare"] = sorted(run_dirs)
        return overlay(run_dirs, out_dir)

    monkeypatch.setattr(rob_reporting, "finding", finding, raising=False)
    monkeypatch.setattr(rob_reporting, "compare", compare, raising=False)
    out = tmp_path / "report"
    page = build_report([runs], out, log=lambda _msg: None).read_text()

    finished = [(runs / n).resolve() for n in ("first", "second")]
    assert asked == {"finding": finished, "compare": finished}  # finished runs only
    summary = page.split('<nav id="summary">')[1].split("</nav>")[0]
    sentence = "flipped test accuracy 0.52 against 0.99 upright over 2 runs"
    assert '<a href="#study-robustness">' in summary and sentence in summary
    figure = out / FIGURES / "robustness_overlay.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = page.split('<section id="study-robustness">')[1].split("</section>")[0]
    data = base64.b64encode(figure.read_bytes()).decode("ascii")
    embedded = section.index(f'<img src="data:image/png;base64,{data}"')
    assert embedded < section.index("<table>")  # near the top, above the runs' table
    assert 'alt="robustness_overlay.png (robustness, across runs)"' in section


def test_a_failing_finding_or_compare_is_a_problem_line_not_a_failed_report(
    tiny_runs, tmp_path, monkeypatch
):
    copy_run(tiny_runs["robustness"], tmp_path / "runs" / "r")

    def finding(run_dirs: list[Path]) -> str:
        raise KeyError("final_acc")

    def compare(run_dirs: list[Path], out_dir: Path) -> list[Path]:
        overlay(run_dirs, out_dir)
        raise RuntimeError("cannot overlay one run\nsecond line")

    monkeypatch.setattr(rob_reporting, "finding", finding, raising=False)
    monkeypatch.setattr(rob_reporting, "compare", compare, raising=False)
    messages: list[str] = []
    page = build_report([tmp_path / "runs"], tmp_path / "out", log=messages.append).read_text()
    failed = [
        "genlab.reporting.robustness.finding failed (KeyError: &#39;final_acc&#39;)",
        "genlab.reporting.robustness.compare failed (RuntimeError: cannot overlay one run)",
    ]
    summary = page.split('<nav id="summary">')[1].split("</nav>")[0]
    section = page.split('<section id="study-robustness">')[1].split("</section>")[0]
    for problem in failed:
        assert f'<span class="problems">{problem}</span>' in summary
        assert f'<p class="problems">{problem}</p>' in section
    assert "second line" not in page and img_count(section) == img_count(page)  # none across
    assert len(messages) == 2 and all(m.startswith("robustness: genlab.") for m in messages)


def test_a_module_without_finding_or_compare_still_has_its_summary_line(
    tiny_runs, tmp_path, monkeypatch
):
    copy_run(tiny_runs["robustness"], tmp_path / "runs" / "r")
    monkeypatch.delattr(rob_reporting, "finding", raising=False)
    monkeypatch.delattr(rob_reporting, "compare", raising=False)
    page = build_report([tmp_path / "runs"], tmp_path / "out").read_text()
    summary = page.split('<nav id="summary">')[1].split("</nav>")[0]
    assert '<a href="#study-robustness">' in summary and "(1 run)" in summary
    assert not (tmp_path / "out" / FIGURES).exists() or not any(
        (tmp_path / "out" / FIGURES).iterdir()
    )


def test_broken_unfinished_and_missing_runs_are_shown_not_fatal(tiny_runs, tmp_path, capsys):
    good = tiny_runs["robustness"]
    folder = tmp_path / "runs"
    copy_run(good, folder / "finished")
    (copy_run(good, folder / "unfinished") / SUMMARY).unlink()
    (copy_run(good, folder / "half-written") / SUMMARY).write_text('{"final_acc": {"te')
    (copy_run(good, folder / "bad-config") / CONFIG).write_text("{not json")
    metrics = copy_run(good, folder / "killed") / METRICS
    (metrics.parent / SUMMARY).unlink()
    metrics.write_text(metrics.read_text() + '{"epoch": 2, "train_lo')  # a line cut by a kill
    messages: list[str] = []
    report = build_report([folder, tmp_path / "no-such-run"], tmp_path / "out", log=messages.append)
    page = report.read_text()
    states = dict(re.findall(r'<h3>(.*?) <span class="state state-(\w+)">', page))
    assert states == {
        "finished": "finished",
        "unfinished": "unfinished",
        "half-written": "broken",
        "bad-config": "broken",
        "killed": "unfinished",
        "no-such-run": "missing",
    }
    assert "summary.json: not valid JSON" in page and "config.json: not valid JSON" in page
    assert "unfinished or killed (1 of 1 epochs recorded; files last written 20" in page
    text = " ".join(page.split())
    assert "6 run folders: 1 finished, 2 unfinished, 2 broken, 1 missing." in text
    assert len(messages) == 5 and all(": " in m for m in messages)
    # figures a run already has are shown whatever its state, unless its config is unreadable
    assert img_count(page) == 4 * len(list((good / FIGURES).glob("*.png")))


def test_text_from_run_folders_is_escaped(tiny_runs, tmp_path):
    run = copy_run(tiny_runs["robustness"], tmp_path / "runs" / EVIL_FOLDER)
    record = json.loads((run / CONFIG).read_text())
    record["config"]["dataset"] = EVIL
    write_json(run / CONFIG, record)
    page = build_report([tmp_path / "runs"], tmp_path / "out").read_text()
    assert "<script" not in page and "onerror=" not in page.replace("onerror=&#34;", "")
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&#34;window.pwned=1&#34;&gt;" in page


def test_report_never_trains_but_draws_missing_figures(tiny_runs, tmp_path):
    run = copy_run(tiny_runs["robustness"], tmp_path / "runs" / "r")
    shutil.rmtree(run / FIGURES)
    before = {p: p.read_bytes() for p in run.iterdir() if p.is_file()}
    page = build_report([run], tmp_path / "out").read_text()
    assert {p: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert img_count(page) == len(list((run / FIGURES).glob("*.png"))) >= 3
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["index.html"]  # no temp files left


def test_cli_report(tiny_runs, tmp_path, capsys):
    out = tmp_path / "site"
    code = cli.main(["report", str(tiny_runs["linreg"]), "--out", str(out)])
    assert code == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'index.html'}"
    assert cli.main(["report", str(tmp_path / "empty"), "--out", str(out)]) == 1
    assert "no run folders found" in capsys.readouterr().err


def test_demo_ends_with_a_report_of_all_three_studies(tmp_path, monkeypatch, capsys):
    """The three studies of the report; the memorization map (minutes) is not part of the demo."""
    from genlab import demo
    from genlab.training.runtime import Runtime

    for name, study in (("ROBUSTNESS", "robustness"), ("LINREG", "linreg")):
        monkeypatch.setattr(demo, f"DEMO_{name}", TINY[study])
    monkeypatch.setattr(demo, "DEMO_RANDOM_LABELS", {**TINY["random-labels"], "epochs": 1})
    small = {"dataset": "synthetic", "width": 2, "epochs": 2}
    monkeypatch.setattr(demo, "DEMO_CONNECTIVITY", {**small, "spawn_epochs": (0, 1), "points": 3})
    monkeypatch.setattr(demo, "DEMO_PRUNING", {**small, "rounds": 1})
    rt = Runtime.resolve(device="cpu", threads=1, quiet=True)
    paths = demo.demo(tmp_path, rt)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"report (open in a browser): {tmp_path / 'report' / 'index.html'}"
    page = (tmp_path / "report" / "index.html").read_text()
    assert {p.parent.name for p in paths} == {
        "robustness",
        "random-labels",
        "linreg",
        "analysis",
        "connectivity",
        "pruning",
    }
    assert set(re.findall(r'id="study-([\w-]+)"', page)) == {
        "robustness",
        "random-labels",
        "linreg",
        "connectivity",
        "pruning",
    }
    # 2 flip-study runs, linreg, the random-labels sweep's 2 x 2, connectivity, pruning
    runs = find_runs(paths)
    assert len(runs) == 9
    assert f"{len(runs)} finished, 0 unfinished, 0 broken." in " ".join(page.split())
    for analysis in paths[-4:-2]:  # the similarity and criticality of the random-labels sweep
        assert analysis.name in page


# -- sweep folders, built by hand with known numbers -------------------------------------------
CLASSES = ["up", "down"]
# width -> seed -> per epoch (test_acc, test_vflip_acc); a member may stop early
CURVES = {
    4: {0: [(0.5, 0.2), (0.6, 0.25), (0.70, 0.30)],
        1: [(0.4, 0.1), (0.7, 0.35), (0.74, 0.40)],
        2: [(0.6, 0.3), (0.65, 0.3)]},  # stopped after 2 epochs: the band at 3 has n = 2
    8: {0: [(0.5, 0.4), (0.8123, 0.45)]},  # one seed: a mean line, no band
}  # fmt: skip
FINAL = {  # (width, seed) -> final (test, flipped test), as in summary.json
    (4, 0): (0.70, 0.30),
    (4, 1): (0.74, 0.40),
    (4, 2): (0.78, 0.50),
    (8, 0): (0.8123, 0.45),
}


def robustness_member(folder: Path, width: int, seed: int) -> tuple[dict, dict]:
    """A finished robustness run folder with the numbers above; returns (identity, summary)."""
    identity = {"dataset": "digits", "model": "conv4", "width": width, "epochs": 3, "seed": seed}
    write_json(folder / CONFIG, {"study": "robustness", "config": identity, "identity": identity})
    write_json(folder / DATASET, {"name": "digits", "classes": CLASSES, "num_train": 100})
    records = [
        {"epoch": e + 1, "train_acc": test, "test_acc": test, "test_vflip_acc": flip,
         "test_per_class_acc": [test, test], "test_vflip_per_class_acc": [flip, flip],
         "seconds": 0.5}
        for e, (test, flip) in enumerate(CURVES[width][seed])
    ]  # fmt: skip
    (folder / METRICS).write_text("".join(json.dumps(r) + "\n" for r in records))
    test, flip = FINAL[(width, seed)]
    summary = {
        "params": 1000 * width,
        "final_acc": {"test": test, "test_vflip": flip},
        "best_acc": {"test": test, "test_vflip": flip},
        "flip_gap": test - flip,
        "per_class_acc": {
            "test": dict.fromkeys(CLASSES, test),
            "test_vflip": {"up": flip, "down": 0.1},
        },
        "epochs": len(records),
        "seconds": 1.0,
    }
    write_json(folder / SUMMARY, summary)
    return identity, summary


def make_sweep_folder(root: Path, name: str | None = None) -> Path:
    """runs/robustness/sweep-test/ with sweep.json, the members of FINAL and aggregate.json."""
    sweep = root / "robustness" / "sweep-test"
    members, pairs = [], []
    for i, (width, seed) in enumerate(FINAL):
        run_id = f"digits-conv4-w{width}-e3-s{seed}-0000000{i}"
        identity, summary = robustness_member(sweep / run_id, width, seed)
        members.append({"index": i, "run_id": run_id, "config": identity})
        pairs.append((identity, summary))
    record = {"study": "robustness", "name": name, "swept": ["width", "seed"], "members": members}
    write_json(sweep / SWEEP, record)
    write_aggregate(aggregate(pairs), sweep)
    return sweep


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% Student-t interval, computed here from scratch."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_a_sweep_is_one_table_of_aggregated_rows(tmp_path):
    sweep = make_sweep_folder(tmp_path)
    page = build_report([tmp_path], tmp_path / "out", draw_missing=False).read_text()
    section = page.split('class="sweep"')[1].split("</article>")[0]
    body = section.split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    assert len(rows) == len(json.loads((sweep / AGGREGATE).read_text())["entries"]) == 2
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r, re.S) for r in rows]
    header = re.findall(r"<th[^>]*>(.*?)</th>", section.split("<tbody>")[0])
    col = {h: i for i, h in enumerate(header)}
    assert header[:3] == ["width", "n", "seeds"]  # the swept setting; the seed is aggregated
    w4, w8 = cells
    assert (w4[col["width"]], w4[col["n"]], w4[col["seeds"]]) == ("4", "3", "0, 1, 2")
    # mean ± half-width of the 95% t-interval, from the entries' numbers, by hand:
    # test [0.70, 0.74, 0.78]: mean 0.74, sd 0.04, t(0.975, 2) = 4.3027 -> 0.0994
    # flipped [0.3, 0.4, 0.5]: mean 0.4, sd 0.1 -> 0.2484
    mean, low, high = t_interval([0.70, 0.74, 0.78])
    assert abs((high - low) / 2 - 4.302653 * 0.04 / math.sqrt(3)) < 1e-6
    assert w4[col["test acc"]] == "0.740 ± 0.099"
    assert w4[col["flipped test acc"]] == "0.400 ± 0.248"  # an accuracy: 3 decimals
    assert w4[col["params"]] == "4,000"  # the same for every seed: no ± 0
    assert (w8[col["width"]], w8[col["n"]]) == ("8", "1")
    assert w8[col["test acc"]] == "0.812"  # n = 1: the mean, no interval
    assert "± " not in " ".join(w8)
    # the members: listed under the sweep, still in the run table, marked with their sweep
    for run_id in (m["run_id"] for m in json.loads((sweep / SWEEP).read_text())["members"]):
        assert f">{run_id}</a>" in section
    run_table = page.split("<h3>Runs</h3>")[1].split("</table>")[0]
    assert run_table.count(">sweep-test</a>") == 4
    assert "4 run folders: 4 finished, 0 unfinished, 0 broken. 1 sweep folder." in " ".join(
        page.split()
    )


def test_a_sweep_without_aggregate_is_shown_with_its_state(tmp_path):
    sweep = make_sweep_folder(tmp_path)
    (sweep / AGGREGATE).unlink()
    shutil.rmtree(next(sweep.glob("*-s2-*")))  # one member not started
    messages: list[str] = []
    page = build_report([sweep], tmp_path / "out", log=messages.append, draw_missing=False)
    page = page.read_text()
    assert "no aggregate.json: members unfinished (3 of 4 finished)" in page
    assert "[not started]" in page and any("sweep" in m for m in messages)


def test_fmt_interval():
    assert fmt_interval(0.74, [0.64, 0.84]) == "0.74 ± 0.10"  # a real: the half-width's digits
    assert fmt_interval(0.5, None) == "0.500"
    assert fmt_interval(25418.0, [25418.0, 25418.0]) == "25,418"
    assert fmt_interval(0.4216, [0.4216 - 1.7e-16, 0.4216 + 1.7e-16]) == "0.422"  # rounding
    assert fmt_interval(1918.4, [1906.1, 1930.7]) == "1,918 ± 12"
    assert fmt_interval(2.5e-7, [1e-7, 4e-7]) == "2.50e-07 ± 1.5e-07"
    # accuracies and seconds: the column's precision for the mean and the half-width alike
    assert fmt_interval(0.74, [0.64, 0.84], "final_acc.test") == "0.740 ± 0.100"
    assert fmt_interval(0.948, [0.7891, 1.1069], "final_acc.test") == "0.948 ± 0.159"
    assert fmt_interval(1.0, [1.0, 1.0], "final_train_fitted_acc") == "1.000"
    assert fmt_interval(0.0, None, "fraction_changed") == "0.000"
    assert fmt_interval(1.36, [1.2, 1.52], "seconds") == "1.4 ± 0.2"
    assert fmt_interval(15.0, [15.0, 15.0], "epochs") == "15"


def test_each_column_has_one_precision():
    accuracy = number_format("final_acc.test")  # acc, gap, fraction, barrier: 3 decimals
    assert [accuracy(v) for v in (0.9756, 1.0, 0.0, 1)] == ["0.976", "1.000", "0.000", "1.000"]
    assert fmt(-0.006667, "flip_gap") == "-0.007"
    assert fmt(0.6401, "smallest_fitting.lottery.remaining_fraction") == "0.640"
    assert fmt(0.00812, "barrier_first.test") == "0.008"
    assert fmt(0.9567, "dense.test_acc") == "0.957"
    assert fmt(17.19, "seconds") == "17.2" and fmt(3, "seconds") == "3.0"
    assert fmt(1234.56, "fit_s") == "1,234.6"
    assert fmt(99210, "params") == "99,210" and fmt(6, "epochs") == "6"
    assert fmt(None, "final_acc.test") == "—" and fmt(None, "params") == "—"
    assert fmt(12, "time_to_fit") == "12"  # an epoch, not seconds
    # other reals: one number of decimals per column, from its smallest nonzero value
    mse = number_format("test_mse_min_norm", [2.6481, 2.5, 9.4051])
    assert [mse(v) for v in (2.6481, 2.5, 9.4051, 0.0, 3)] == [
        "2.65",
        "2.50",
        "9.41",
        "0.00",
        "3.00",
    ]
    assert fmt(25418.0, "params") == "25,418"  # a whole number: a count
    spread = number_format("test_mse", [0.01234, 17.19])
    assert [spread(v) for v in (0.01234, 17.19)] == ["0.0123", "17.1900"]
    tiny = number_format("sgd_final_train_mse", [2.7e-13, 1.0])
    assert [tiny(v) for v in (2.7e-13, 1.0)] == ["2.70e-13", "1.00e+00"]
    assert fmt(0.014, "ks_marchenko_pastur") == "0.0140" and fmt(127.1, "x.per_label") == "127"
    assert fmt(97.5, "final_acc.test") == "97.5"  # not in [-1, 1]: not a fraction, a real
    assert fmt(float("nan"), "final_acc.test") == "nan"
    # a setting (no key): as typed, so 0.0 sits beside 1.0 and 0.005 stays 0.005
    assert [fmt(v) for v in (0.0, 1.0, 0.005, 1e-05, 64, True)] == [
        "0.0",
        "1.0",
        "0.005",
        "1e-05",
        "64",
        "yes",
    ]


def test_json_is_shown_rounded_and_indented():
    shown = pretty({"b": [0.123456789, 2], "a": {"loss": 1.23456e-7, "n": 123456789}})
    assert shown == (
        '{\n  "a": {\n    "loss": 1.235e-07,\n    "n": 123456789\n  },\n'
        '  "b": [\n    0.1235,\n    2\n  ]\n}'
    )


def test_plot_sweep_draws_bands_whose_edges_are_the_t_interval(tmp_path):
    sweep = make_sweep_folder(tmp_path)
    groups = plotting.group_runs(reporting.sweep_members(sweep))
    assert [(g.settings, g.n) for g in groups] == [({"width": 4}, 3), ({"width": 8}, 1)]
    fig = rob_reporting.accuracy_figure(groups)
    ax_test = fig.axes[0]
    (band,) = ax_test.collections  # width 8 has one seed: a line and no band
    vertices = band.get_paths()[0].vertices
    for epoch, values in ((2, [0.6, 0.7, 0.65]), (3, [0.70, 0.74])):  # seed 2 stopped at 2
        _, low, high = t_interval(values)
        at = vertices[np.isclose(vertices[:, 0], epoch)][:, 1]
        assert np.allclose([at.min(), at.max()], [low, high])
    line4, line8 = ax_test.lines
    assert np.allclose(line4.get_ydata(), [0.5, (0.6 + 0.7 + 0.65) / 3, 0.72])
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == ["width=4 (n = 3)", "width=8 (n = 1, no interval)"]
    plotting.pyplot().close(fig)

    files = reporting.plot_sweep(sweep)
    assert {f.name for f in files} == {
        "sweep_accuracy.png",
        "sweep_per_class.png",
        "sweep_compare.png",
    }
    assert all(f.parent == sweep / FIGURES and f.stat().st_size > 10_000 for f in files)
    page = build_report([sweep], tmp_path / "out", draw_missing=False).read_text()
    section = page.split('class="sweep"')[1].split("</article>")[0]
    assert img_count(section) == 3


def test_compare_sweep_adds_the_side_by_side_figures(tmp_path):
    sweep = make_sweep_folder(tmp_path, name="compare")
    names = {f.name for f in reporting.plot_sweep(sweep)}
    assert {"compare_accuracy.png", "comparison.json", "sweep_accuracy.png"} <= names


def test_band_stats_by_epoch_and_n_equal_one():
    runs = [[{"epoch": 1, "v": 1.0}, {"epoch": 2, "v": 3.0}], [{"epoch": 1, "v": 2.0}]]
    x, rows = plotting.by_epoch(runs, lambda r: r["v"])
    assert x == [1, 2] and rows == [[1.0, 3.0], [2.0, None]]
    band = plotting.band_stats(x, rows)
    _, low, high = t_interval([1.0, 2.0])
    assert band.n.tolist() == [2, 1] and band.mean.tolist() == [1.5, 3.0]
    assert np.allclose([band.low[0], band.high[0]], [low, high])
    assert np.isnan(band.low[1]) and np.isnan(band.high[1])  # one member there: no interval


def random_labels_member(folder: Path, p: float, seed: int, noisy: int, clean: int) -> dict:
    identity = {"dataset": "digits", "width": 4, "optimizer": "adam", "lr": 0.001,
                "label_noise": p, "seed": seed}  # fmt: skip
    write_json(
        folder / CONFIG, {"study": "random-labels", "config": identity, "identity": identity}
    )
    write_json(folder / DATASET, {"name": "digits", "num_train": noisy + clean,
                                  "num_noisy": noisy, "num_clean": clean})  # fmt: skip
    records = [
        {"epoch": e, "train_noisy_acc": 0.1 * e + 0.01 * seed, "train_clean_acc": 0.2 * e,
         "train_true_acc": 0.15 * e, "test_acc": 0.1 + 0.01 * seed, "train_acc": 0.2,
         "train_loss": 2.0 / e, "test_loss": 2.0}
        for e in (1, 2, 3)
    ]  # fmt: skip
    (folder / METRICS).write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"params": 500, "time_to_fit": None if p else 3, "epochs": 3, "fit_threshold": 1.0}
    write_json(folder / SUMMARY, summary)
    return identity


def test_random_labels_sweep_pools_fitted_accuracy_per_p(tmp_path):
    sweep = tmp_path / "random-labels" / "sweep-rl"
    members = []
    for i, (p, seed) in enumerate([(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1)]):
        noisy = int(90 * p)
        run_id = f"m{i}"
        members.append({"index": i, "run_id": run_id,
                        "config": random_labels_member(sweep / run_id, p, seed, noisy, 90 - noisy + 10)})  # fmt: skip
    write_json(sweep / SWEEP, {"study": "random-labels", "name": "report",
                               "swept": ["label_noise", "seed"], "members": members})  # fmt: skip
    groups = plotting.group_runs(reporting.sweep_members(sweep))
    fig = rl_reporting.curves_figure(groups, "width=4")
    ax_p1 = fig.axes[1]
    assert ax_p1.get_title() == "label noise p = 1.0"
    fitted = ax_p1.lines[0]  # noisy 90, clean 10: (90 (0.1 e + 0.01 s) + 10 (0.2 e)) / 100
    expected = [np.mean([(90 * (0.1 * e + 0.01 * s) + 10 * 0.2 * e) / 100 for s in (0, 1)])
                for e in (1, 2, 3)]  # fmt: skip
    assert np.allclose(fitted.get_ydata(), expected)
    assert np.allclose(fig.axes[0].lines[0].get_ydata(), [0.2, 0.4, 0.6])  # p = 0: clean only
    plotting.pyplot().close(fig)
    names = {f.name for f in reporting.plot_sweep(sweep)}
    assert names == {"sweep_curves.png", "curves_w4_adam_lr0.001.png", "time_to_fit.png"}


# -- the modules' structure ----------------------------------------------------------------------
PER_STUDY = {study.reporting for study in STUDIES.values()}


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def source(module: str) -> Path:
    return REPORTING / f"{module.rsplit('.', 1)[1]}.py"


def test_plotting_imports_no_per_study_module():
    assert not imported_modules(REPORTING / "plotting.py") & PER_STUDY


def test_no_per_study_module_imports_another():
    for module in PER_STUDY:
        assert not imported_modules(source(module)) & (PER_STUDY - {module}), module


def test_every_study_has_one_reporting_module_with_the_same_names():
    assert {f"genlab.reporting.{p.stem}" for p in REPORTING.glob("*.py")} >= PER_STUDY
    for name in STUDIES:
        module = reporting.reporting_module(name)
        assert isinstance(module.TITLE, str) and module.TITLE
        assert all(isinstance(h, str) and isinstance(k, str) for h, k in module.KEY_NUMBERS)
        assert callable(module.plot_run) and callable(module.plot_sweep)


def test_no_study_names_outside_the_per_study_modules():
    names = set(STUDIES)
    for path in (REPORTING / "__init__.py", REPORTING / "html.py", REPORTING / "plotting.py"):
        strings = {
            n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
        }
        assert not strings & names, path


def test_a_linreg_run_folder_with_its_own_sweep_json_is_not_a_sweep(tiny_runs, tmp_path):
    run = copy_run(tiny_runs["linreg"], tmp_path / "linreg" / "old")
    write_json(run / SWEEP, {"gamma": [0.5]})  # what linreg wrote before double_descent.json
    assert not is_sweep(run)
    page = build_report([tmp_path], tmp_path / "out", draw_missing=False).read_text()
    assert 'class="sweep"' not in page


# -- headless Chromium -------------------------------------------------------------------------
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# Injected into a copy of the page, after its CSP (which it extends by this script's nonce only):
# records errors, CSP violations and console.error calls, then on load writes what it saw into
# the DOM, which --dump-dom prints.
PROBE = """<script nonce="genlab-probe">(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push("error: " + (e.message || (e.target && e.target.outerHTML.slice(0, 80))));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push("rejection: " + e.reason); });
  document.addEventListener("securitypolicyviolation", function (e) {
    errors.push("csp: " + e.violatedDirective + " " + e.blockedURI);
  });
  var consoleError = console.error;
  console.error = function () {
    errors.push("console: " + Array.prototype.join.call(arguments, " "));
    consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var images = Array.prototype.map.call(document.images, function (img) {
      return {alt: img.alt, complete: img.complete, width: img.naturalWidth};
    });
    var out = document.createElement("pre");
    out.id = "genlab-probe";
    out.textContent = JSON.stringify({images: images, errors: errors, pwned: !!window.pwned,
      scripts: document.scripts.length, handlers: document.querySelectorAll("[onerror]").length});
    document.body.appendChild(out);
  });
})();</script>"""


def find_chromium() -> str | None:
    if os.environ.get("GENLAB_CHROMIUM"):
        return os.environ["GENLAB_CHROMIUM"]
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    # the timeout only ends a hung browser: the test waits for chromium to exit, however long
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)


def need_chromium() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("GENLAB_REQUIRE_BROWSER"):  # set by .ci/run: CI must not skip this
            pytest.fail("GENLAB_REQUIRE_BROWSER is set but no chromium binary was found")
        pytest.skip("no chromium (apt-get install chromium-headless-shell)")
    return binary


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    JSON messages ending in NUL, commands on fd 3, replies and events on fd 4), so no websocket
    library is needed. ``Runtime.evaluate`` runs outside the page's CSP, which forbids the page
    any script of its own. Every read waits for chromium's next message; its timeout only ends a
    hung browser."""

    WAIT_S = 600

    def __init__(self, binary: str, profile: Path):
        profile.mkdir(parents=True, exist_ok=True)
        commands, self._commands = os.pipe()
        self._replies, replies = os.pipe()
        command = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        self.process = subprocess.Popen(  # bash puts the pipes on the fds chromium reads
            ["bash", "-c", f'exec "$@" 3<&{commands} 4>&{replies}', "chromium", *command,
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(commands, replies), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(commands)
        os.close(replies)
        self._buffer = b""
        self._id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._replies], [], [], self.WAIT_S)[0]:
                raise AssertionError("chromium sent nothing (hung)")
            chunk = os.read(self._replies, 1 << 20)
            assert chunk, "chromium closed its pipe (crashed)"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, **params: object) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str) -> dict:
        found = [e for e in self.events if e.get("method") == event]
        while not found:
            message = self._read()
            self.events.append(message)
            found = [message] if message.get("method") == event else []
        return found[0]

    def open(self, url: str, width: int) -> None:
        """A tab of ``width`` CSS px (at one device pixel each) showing ``url``, loaded."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=900,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
        self.send("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> object:
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in reply, reply
        return reply["result"]["value"]

    def errors(self) -> list[str]:
        """What the page logged as an error: exceptions, console.error, CSP violations, failed
        loads (the Log domain)."""
        found = []
        for e in self.events:
            params = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"].get("text")))
            elif e.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
                found.append(" ".join(str(a.get("value")) for a in params["args"]))
            elif e.get("method") == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def screenshot(self) -> bytes:
        """The whole page, not only the window (``captureBeyondViewport``)."""
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(data["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        finally:
            os.close(self._commands)
            try:
                self.process.wait(timeout=self.WAIT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            os.close(self._replies)


PAGE_CHECK = """JSON.stringify({
  images: Array.from(document.images, i => ({alt: i.alt, complete: i.complete,
                                              width: i.naturalWidth})),
  scrollWidth: document.documentElement.scrollWidth,
  scrollHeight: document.documentElement.scrollHeight,
  scripts: document.scripts.length,
  overflowing: Array.from(document.querySelectorAll("body *"))
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
    .slice(0, 5).map(e => e.tagName + " " + (e.textContent || "").slice(0, 60)),
  scrolled: Array.from(document.querySelectorAll(".scroll"))
    .filter(e => e.scrollWidth > e.clientWidth)
    .map(e => e.scrollWidth + " px: " + (e.textContent || "").trim().slice(0, 60)),
})"""


@pytest.mark.browser
def test_the_demo_report_in_headless_chromium_at_1280_px(request, tmp_path):
    """The demo's runs, sweeps and analyses as one report, opened at 1280 px: every image
    decodes, nothing is logged as an error, nothing sticks out to the right (a wide table
    scrolls inside its box), and the full-page screenshot is kept (GENLAB_SCREENSHOT_DIR)."""
    binary = need_chromium()
    _, paths = request.getfixturevalue("demo_out")  # after the skip: the demo takes minutes
    report = build_report(paths, tmp_path / "report", log=lambda _msg: None)
    page = report.read_text()
    assert '<nav id="summary">' in page
    browser = DevTools(binary, tmp_path / "profile")
    try:
        browser.open(report.as_uri(), width=1280)
        seen = json.loads(str(browser.evaluate(PAGE_CHECK)))
        shot = browser.screenshot()
        errors = browser.errors()
    finally:
        browser.close()
    (tmp_path / "report.png").write_bytes(shot)
    if os.environ.get("GENLAB_SCREENSHOT_DIR"):
        kept = Path(os.environ["GENLAB_SCREENSHOT_DIR"])
        kept.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "report.png", kept / "demo_report_1280.png")

    assert errors == []
    assert len(seen["images"]) == img_count(page) > 10
    assert all(i["complete"] and i["width"] > 0 for i in seen["images"]), seen["images"]
    assert seen["scripts"] == 0
    assert seen["scrollWidth"] <= 1280 and seen["overflowing"] == [], seen["overflowing"]
    assert seen["scrolled"] == []  # every table of the demo fits: none cut at its right edge
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", shot[16:24])
    assert width == 1280 and height >= seen["scrollHeight"] - 1 > 900  # the whole page


@pytest.mark.browser
def test_report_in_headless_chromium(tiny_runs, tmp_path):
    binary = need_chromium()
    folder = tmp_path / "runs"
    for study, run in tiny_runs.items():
        copy_run(run, folder / study)
    evil = copy_run(tiny_runs["robustness"], folder / EVIL_FOLDER)
    record = json.loads((evil / CONFIG).read_text())
    record["config"]["dataset"] = EVIL
    write_json(evil / CONFIG, record)
    (copy_run(tiny_runs["robustness"], folder / "half-written") / SUMMARY).write_text("{")
    make_sweep_folder(folder)  # its figures and its members' are drawn by the report
    report = build_report([folder], tmp_path / "report", log=lambda _msg: None)
    page = report.read_text()

    csp = "default-src 'none';"
    assert page.count(csp) == 1
    probe_page = page.replace(csp, f"{csp} script-src 'nonce-genlab-probe';")
    head_end = probe_page.index(">", probe_page.index('http-equiv="Content-Security-Policy"')) + 1
    probe_page = probe_page[:head_end] + PROBE + probe_page[head_end:]
    probe = report.with_name("probe.html")
    probe.write_text(probe_page)

    dom = chromium(
        binary, tmp_path / "profile1", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()
    ).stdout
    found = re.search(r'<pre id="genlab-probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["errors"] == []
    assert len(seen["images"]) == img_count(page) >= 3 * len(tiny_runs)
    assert all(img["complete"] and img["width"] > 0 for img in seen["images"]), seen["images"]
    assert not seen["pwned"] and seen["scripts"] == 1 and seen["handlers"] == 0
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in dom
    assert 'class="state state-broken"' in dom

    shot = tmp_path / "report.png"
    chromium(
        binary,
        tmp_path / "profile2",
        "--window-size=1280,2000",
        f"--screenshot={shot}",
        report.as_uri(),
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
