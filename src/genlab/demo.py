"""``genlab demo``: every study, small, on the embedded digits; prints a table and the paths, and
ends by building the HTML report of its runs (``OUT/report/index.html``, ``genlab report``).

Flip robustness: Conv-4 width 16 on the 1,347 digit training images, baseline and ``double``
augmentation. Digits make the flip's effect easy to read: 0, 1 and 8 look alike upside down,
6 and 9 swap, and the rest become strangers.

Over-parametrized linear regression: a Gaussian design with n = 200, p = 400, 300 epochs of
per-sample SGD from zero, and a small p sweep (16 values x 3 seeds); about 3 s.

Random labels: a sweep of Conv-4 width 8 on 200 digit training images with true labels (p = 0)
and with every label redrawn at random (p = 1), two seeds each, 15 epochs of Adam: the fitted
train accuracy climbs at both, the test accuracy only at p = 0; about 15 s. Then both analyses
of that sweep (``genlab analyze``): the similarity of the two seeds' representations, layer by
layer, at p = 0 and p = 1, and the criticality of each layer (re-initialized to its initial
weights, or re-randomized); seconds.

The report's other open questions, tiny (Conv-4 width 4, 300 digit training images, 6 epochs):
linear mode connectivity (two children spawned at epochs 0 and 2, the error barrier between
them) and iterative magnitude pruning (2 rounds of 20%, lottery against random); seconds each.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from genlab import sweeps
from genlab.analysis import analyze, criticality, similarity
from genlab.config import with_overrides
from genlab.fileio import read_json
from genlab.launch import run_dir_for, run_members
from genlab.reporting.html import build_report
from genlab.runs import CRITICALITY, FIGURES, SIMILARITY
from genlab.studies import STUDIES, connectivity, linreg, pruning, random_labels, robustness
from genlab.training.runtime import Runtime

DEMO_ROBUSTNESS = {"dataset": "digits", "width": 16, "epochs": 12, "lr": 0.05, "seed": 0}
DEMO_RANDOM_LABELS = {
    "dataset": "digits",
    "train_subset": 200,
    "test_subset": 200,
    "width": 8,
    "optimizer": "adam",
    "lr": 0.005,
    "epochs": 15,
}
DEMO_SEEDS = 2
DEMO_SMALL = {
    "dataset": "digits",
    "train_subset": 300,
    "test_subset": 200,
    "width": 4,
    "epochs": 6,
    "batch_size": 32,  # 9 steps an epoch: enough for the running BatchNorm statistics to settle
    "optimizer": "adam",
    "lr": 0.005,
}
DEMO_CONNECTIVITY = {**DEMO_SMALL, "spawn_epochs": (0, 2), "children": 2, "points": 5}
DEMO_PRUNING = {**DEMO_SMALL, "rounds": 2}
DEMO_LINREG = {
    "n": 200,
    "p": 400,
    "n_test": 2000,
    "epochs": 300,
    "sweep_p": True,
    "sweep_points": 16,
    "sweep_seeds": 3,
    "seed": 0,
}


def _run(name: str, cfg: Any, out: Path, rt: Runtime, force: bool) -> Path:
    path = run_dir_for(STUDIES[name], cfg, out)
    run_members(STUDIES[name], [(cfg, path)], rt, force=force)
    return path


def demo(out: Path, rt: Runtime, *, force: bool = False) -> list[Path]:
    log = rt.log
    base = with_overrides(robustness.Config(), DEMO_ROBUSTNESS)
    paths = []
    for augment in ("none", "double"):
        cfg = with_overrides(base, {"augment": augment})
        log(f"\n== flip robustness, augment={augment} ==")
        paths.append(_run("robustness", cfg, out, rt, force))
    rows = []
    for path in paths:
        cfg, summary = read_json(path / "config.json")["config"], read_json(path / "summary.json")
        acc = summary["final_acc"]
        rows.append(
            (cfg["augment"], summary["params"], acc["test"], acc["test_vflip"], summary["seconds"])
        )
    print("\nFlip robustness on digits (Conv-4 width 16, 12 epochs):")
    print(f"{'augment':<8} {'params':>8} {'test acc':>9} {'flipped acc':>12} {'seconds':>8}")
    for augment, n, test, flipped, seconds in rows:
        print(f"{augment:<8} {n:>8,} {test:>9.3f} {flipped:>12.3f} {seconds:>8.1f}")
    paths.append(_demo_linreg(out, rt, force))
    folder = _demo_random_labels(out, rt, force)
    paths += [folder, *_demo_analyses(folder, out, rt, force)]
    paths += _demo_open_questions(out, rt, force)
    print("\nruns, sweeps, analyses and their figures:")
    for path in paths:
        print(f"  {path}  (figures in {path / FIGURES})")
    print(f"\nreport (open in a browser): {build_report(paths, Path(out) / 'report', log=log)}")
    return paths


def _demo_linreg(out: Path, rt: Runtime, force: bool) -> Path:
    cfg = with_overrides(linreg.Config(), DEMO_LINREG)
    rt.log(f"\n== over-parametrized linear regression, n={cfg.n}, p={cfg.p} ==")
    path = _run("linreg", cfg, out, rt, force)
    s = read_json(path / "summary.json")
    print(
        f"\nOver-parametrized linear regression (Gaussian design, n={s['n']}, p={s['p']}, "
        f"{cfg.epochs} epochs of per-sample SGD from zero):"
    )
    print(
        f"{'rank':>5} {'test MSE':>9} {'theory':>7} {'SGD train MSE':>14} {'|b_SGD - b_mn|':>15} "
        f"{'KS to MP':>9} {'seconds':>8}"
    )
    print(
        f"{s['rank']:>5} {s['test_mse_min_norm']:>9.3f} {s['test_mse_theory']:>7.3f} "
        f"{s['sgd_final_train_mse']:>14.1e} {s['sgd_final_dist_to_min_norm']:>15.1e} "
        f"{s['ks_marchenko_pastur']:>9.3f} {s['seconds']:>8.1f}"
    )
    return path


def _demo_random_labels(out: Path, rt: Runtime, force: bool) -> Path:
    base = with_overrides(random_labels.Config(), DEMO_RANDOM_LABELS)
    values = {k: [v] for k, v in DEMO_RANDOM_LABELS.items()}
    sweep = sweeps.build(
        STUDIES["random-labels"], {**values, "label_noise": [0.0, 1.0]}, out, seeds=DEMO_SEEDS
    )
    rt.log(f"\n== random labels, p in (0, 1) x {DEMO_SEEDS} seeds ==")
    folder = sweeps.run_sweep(sweep, rt, force=force)
    print(
        f"\nRandom labels on digits (Conv-4 width 8, {base.train_subset} train images, {base.epochs} epochs "
        "of Adam; test labels clean):"
    )
    print(
        f"{'p':>4} {'seed':>4} {'changed':>8} {'params':>7} {'train acc (fitted)':>19} "
        f"{'train acc (true)':>17} {'test acc':>9} {'seconds':>8}"
    )
    for _, cfg, path in sweep.members():
        s = read_json(path / "summary.json")
        print(
            f"{s['label_noise']:>4} {cfg.seed:>4} {s['fraction_changed']:>8.3f} {s['params']:>7,} "
            f"{s['final_train_fitted_acc']:>19.3f} {s['final_acc']['train_true']:>17.3f} "
            f"{s['final_acc']['test']:>9.3f} {s['seconds']:>8.1f}"
        )
    return folder


def _demo_open_questions(out: Path, rt: Runtime, force: bool) -> list[Path]:
    """Linear mode connectivity and pruning, tiny."""
    rt.log("\n== linear mode connectivity ==")
    conn = _run(
        "connectivity", with_overrides(connectivity.Config(), DEMO_CONNECTIVITY), out, rt, force
    )
    rt.log("\n== iterative magnitude pruning ==")
    prune = _run("pruning", with_overrides(pruning.Config(), DEMO_PRUNING), out, rt, force)
    c, p = read_json(conn / "summary.json"), read_json(prune / "summary.json")
    print("\nLinear mode connectivity (error barrier between two children, by spawn epoch):")
    print(f"{'spawn epoch':>12} {'test':>7} {'flipped':>8}")
    for k in c["spawn_epochs"]:
        cell = {v: c["barrier"][v][f"k{k}"]["mean"] for v in ("test", "test_vflip")}
        print(f"{k:>12} {cell['test']:>7.3f} {cell['test_vflip']:>8.3f}")
    dense, last = p["dense"], p["last_round"]
    print(
        f"\nPruning ({DEMO_PRUNING['rounds']} rounds of 20%): fitted-label train accuracy "
        f"{dense['train_fitted_acc']:.3f} with all {p['prunable_weights']:,} prunable weights, "
        f"{last['lottery']['train_fitted_acc']:.3f} (lottery) and "
        f"{last['random']['train_fitted_acc']:.3f} (random) with {last['lottery']['remaining']:,}"
    )
    return [conn, prune]


def _demo_analyses(sweep: Path, out: Path, rt: Runtime, force: bool) -> list[Path]:
    """Both analyses of the random-labels sweep, and their key numbers."""
    exact = replace(rt, precision="fp32")  # as genlab analyze computes
    rt.log("\n== analyses of the random-labels sweep ==")
    found = analyze("similarity", [sweep], similarity.Config(), exact, out, force=force)
    critical = analyze("criticality", [sweep], criticality.Config(), exact, out, force=force)
    sim, crit = read_json(found / SIMILARITY), read_json(critical / CRITICALITY)
    print(
        f"\nSimilarity of the {DEMO_SEEDS} seeds' representations (linear CKA, unbiased, "
        f"{sim['probe']['num_images']} test images):"
    )
    print(f"{'':<22}" + "".join(f"{layer:>9}" for layer in sim["layers"]))
    for g, group in enumerate(sim["groups"]):
        rows = {
            r["layer"]: r["mean"]
            for r in sim["within"]
            if r["group"] == g and r["measure"] == "cka"
        }
        print(f"{group['label']:<22}" + "".join(f"{rows[layer]:>9.3f}" for layer in sim["layers"]))
    print(
        "\nCriticality: test accuracy after re-initializing one layer to epoch 0 (mean over seeds):"
    )
    print(f"{'':<22}{'trained':>9}" + "".join(f"{layer:>9}" for layer in crit["layers"]))
    for g, group in enumerate(crit["groups"]):
        rows = {
            (r["layer"], r["source"]): r["mean"]
            for r in crit["by_group"]
            if r["group"] == g and r["view"] == "test"
        }
        cells = "".join(f"{rows[(layer, 'epoch 0')]:>9.3f}" for layer in crit["layers"])
        print(f"{group['label']:<22}{rows[(None, None)]:>9.3f}{cells}")
    return [found, critical]
