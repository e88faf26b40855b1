"""The HTML report on tiny real runs of every study: numbers and figures appear, broken runs are
shown as broken, text from run folders is escaped; and (marked ``browser``) the page in headless
Chromium: every image loads, no console errors, a run named ``<script>`` stays text."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from markupsafe import escape

from genlab import cli
from genlab.config import with_overrides
from genlab.fileio import write_json
from genlab.launch import run_study
from genlab.reporting.html import build_report, fmt
from genlab.runs import CONFIG, FIGURES, METRICS, SUMMARY
from genlab.studies import STUDIES

TINY = {
    "robustness": {"dataset": "synthetic", "width": 2, "epochs": 1, "device": "cpu"},
    "linreg": {"n": 20, "p": 40, "n_test": 50, "epochs": 5, "sweep_p": True, "sweep_points": 4,
               "sweep_seeds": 2},
    "random-labels": {"dataset": "synthetic", "width": 2, "epochs": 1, "label_noise": 1.0,
                      "device": "cpu"},
}  # fmt: skip
EVIL = "<script>window.pwned=1</script>"
EVIL_FOLDER = '<img src=x onerror="window.pwned=1">'


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished tiny run per study (about 10 s in all, mostly drawing figures)."""
    out = tmp_path_factory.mktemp("runs")
    runs = {}
    for study, overrides in TINY.items():
        if study in STUDIES:  # random-labels lands separately
            cfg = with_overrides(STUDIES[study].Config(), overrides)
            runs[study] = run_study(study, cfg, out=out, log=lambda _msg: None)
    return runs


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
        assert str(escape(json.dumps(config, indent=2, sort_keys=True))) in page
        keys = {
            "robustness": [("final_acc", "test_vflip"), ("params",)],
            "linreg": [("test_mse_min_norm",), ("sgd_final_dist_to_min_norm",)],
            "random-labels": [("final_train_fitted_acc",), ("fraction_changed",)],
        }[study]
        for path in keys:
            value = summary
            for key in path:
                value = value[key]
            assert f"<td>{fmt(value)}</td>" in page, (study, value)
    assert f"{len(tiny_runs)} finished, 0 unfinished, 0 broken." in " ".join(page.split())


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


def test_grid_figures_outside_run_folders_join_their_study(tiny_runs, tmp_path):
    grid = tmp_path / "random-labels" / "grid-1234"
    run = copy_run(tiny_runs["robustness"], grid / "one")
    shutil.copytree(run / FIGURES, grid / FIGURES)  # stands in for plot_grid's figures
    page = build_report([tmp_path], tmp_path / "out").read_text()
    section = page.split('id="study-robustness"')[1]
    assert "Figures across runs" in section and f"<code>{grid / FIGURES}</code>" in section
    assert img_count(section) == 2 * len(list((run / FIGURES).glob("*.png")))


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

    for name, study in (("ROBUSTNESS", "robustness"), ("LINREG", "linreg")):
        monkeypatch.setattr(demo, f"DEMO_{name}", TINY[study])
    monkeypatch.setattr(demo, "DEMO_RANDOM_LABELS", {**TINY["random-labels"], "epochs": 1})
    paths = demo.demo(tmp_path, quiet=True, log=lambda _msg: None)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"report (open in a browser): {tmp_path / 'report' / 'index.html'}"
    page = (tmp_path / "report" / "index.html").read_text()
    assert {p.parent.name for p in paths} == {"robustness", "random-labels", "linreg"}
    assert set(re.findall(r'id="study-([\w-]+)"', page)) == {
        "robustness",
        "random-labels",
        "linreg",
    }
    assert f"{len(paths)} finished, 0 unfinished, 0 broken." in " ".join(page.split())


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
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


@pytest.mark.browser
def test_report_in_headless_chromium(tiny_runs, tmp_path):
    binary = find_chromium()
    if binary is None:
        if os.environ.get("GENLAB_REQUIRE_BROWSER"):  # set by .ci/run: CI must not skip this
            pytest.fail("GENLAB_REQUIRE_BROWSER is set but no chromium binary was found")
        pytest.skip("no chromium (apt-get install chromium-headless-shell)")
    folder = tmp_path / "runs"
    for study, run in tiny_runs.items():
        copy_run(run, folder / study)
    evil = copy_run(tiny_runs["robustness"], folder / EVIL_FOLDER)
    record = json.loads((evil / CONFIG).read_text())
    record["config"]["dataset"] = EVIL
    write_json(evil / CONFIG, record)
    (copy_run(tiny_runs["robustness"], folder / "half-written") / SUMMARY).write_text("{")
    report = build_report([folder], tmp_path / "report", log=lambda _msg: None)
    page = report.read_text()

    csp = "default-src 'none';"
    assert page.count(csp) == 1
    probe_page = page.replace(csp, f"{csp} script-src 'nonce-genlab-probe';")
    head_end = probe_page.index(">", probe_page.index('http-equiv="Content-Security-Policy"')) + 1
    probe_page = probe_page[:head_end] + PROBE + probe_page[head_end:]
    probe = report.with_name("probe.html")
    probe.write_text(probe_page)

    start = time.perf_counter()
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
    assert time.perf_counter() - start < 60
