"""One sweep through each launcher, side by side: trained here (``--launcher local``), on a local
Dask cluster of 2 single-threaded workers, and as a Slurm job array on the one-node cluster
(``bash .ci/slurm.sh start``; skipped when no Slurm answers).

    .venv/bin/python benchmarks/bench_launchers.py                 # 8 digits members of ~10 s
    .venv/bin/python benchmarks/bench_launchers.py --epochs 2 --members 4 --windows 1   # smoke

The members are width-8 Conv-4s on the embedded digits that differ only in their seed; at width 8
each is a task of its own (``genlab.launchers.tasks``) and the local sweep trains them in two
lanes of one thread each (``plan``), so all three use the 2 cores the same way: two members at a
time, one thread each. Each window runs every launcher once into a fresh folder, in an order
that rotates every window. Printed per launcher: the median wall time of the sweep (command
start to aggregate written) and its ratio to local; and per task, from the times each task
reports (``run_task``: entered, returned) and the times this process saw them:
- *start*: from the moment the task could start (its submission, or a slot freed by an
  earlier task: 2 slots) to ``run_task`` entered on the node (queueing, process start, imports);
- *return*: from ``run_task`` returned to the submitting process seeing the task ended (Slurm:
  bounded by the poll interval, ``--poll``, 1 s here against ``genlab sweep``'s 5 s; Dask is
  told at once);
both as medians over tasks and windows, against the goal of < 1 s per task and < 10% of a
10-s member. Also whether every member's final accuracy equals the local sweep's.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from genlab import launchers, sweeps
from genlab.fileio import read_json
from genlab.launchers.slurm import slurm_up
from genlab.studies import study
from genlab.training import Runtime

SLOTS = 2  # members running at once in every launcher here


class Watched:
    """An engine that notes when each task was first seen ended (not live)."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.submitted, self.seen = engine, 0.0, {}

    def submit(self, ranges: list[range], runtime: launchers.TaskRuntime) -> tuple[str, dict]:
        self.submitted = time.time()
        return self.engine.submit(ranges, runtime)

    def poll(self, tasks: list[dict]) -> dict[str, launchers.Outcome]:
        outcomes = self.engine.poll(tasks)
        now = time.time()
        for tid, outcome in outcomes.items():
            if outcome.status != "live":
                self.seen.setdefault(tid, now)
        return outcomes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def one(launcher: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    entry = study("robustness")
    values = {"dataset": ["digits"], "width": [8], "epochs": [args.epochs], "views": [("none",)]}
    sweep = sweeps.build(entry, values, out, seeds=args.members)
    rt = Runtime.resolve(threads=2, quiet=True)
    t0 = time.perf_counter()
    if launcher == "local":
        sweeps.run_sweep(sweep, rt)
        return {"wall": time.perf_counter() - t0, "tasks": [], "acc": accuracies(sweep)}
    options = {"slurm": None}
    if launcher == "slurm":
        from genlab.launchers.slurm import SlurmOptions

        options["slurm"] = SlurmOptions(cpus_per_task=1, mem_gb=2, time_min=30)
    engine, runtime = launchers.open_engine(sweep, launcher, cores=SLOTS, threads=1, **options)
    ready = time.perf_counter() - t0  # a local Dask cluster started, or nothing (Slurm)
    engine.poll_s = args.poll
    watched = Watched(engine)
    try:
        launchers.launch(sweep, watched, runtime, rt)  # type: ignore[arg-type]
        wall = time.perf_counter() - t0
        recorded = [t for job in launchers.read_jobs(sweep.folder) for t in job["tasks"]]
        outcomes = engine.poll(recorded)
        results = [(t["id"], outcomes[t["id"]].result) for t in recorded]
    finally:
        engine.close()
    return {
        "wall": wall,
        "ready": ready,
        "tasks": overheads(results, watched.submitted, watched.seen),
        "acc": accuracies(sweep),
    }


def overheads(results: list[tuple], submitted: float, seen: dict[str, float]) -> list[dict]:
    """Per task: start (from when it could start to run_task entered) and return (from
    run_task returned to seen ended), taking tasks in the order they started on SLOTS slots."""
    by_start = sorted(((tid, r) for tid, r in results if r), key=lambda p: p[1]["started"])
    finishes = sorted(r["finished"] for _, r in by_start)
    out = []
    for k, (tid, r) in enumerate(by_start):
        free = submitted if k < SLOTS else max(submitted, finishes[k - SLOTS])
        out.append({"start": r["started"] - free, "return": seen[tid] - r["finished"]})
    return out


def accuracies(sweep: sweeps.Sweep) -> dict[str, Any]:
    return {p.name: read_json(p / "summary.json")["final_acc"] for _, _, p in sweep.members()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12, help="12: about 10 s a member")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument(
        "--poll", type=float, default=1.0, help="seconds between looks at the scheduler"
    )
    parser.add_argument("--launchers", nargs="+", default=["local", "dask", "slurm"])
    parser.add_argument(
        "--dir", type=Path, help="where the sweeps go: a path every node sees (default: /tmp)"
    )
    args = parser.parse_args()
    names = [n for n in args.launchers if n != "slurm" or slurm_up()]
    if len(names) < len(args.launchers):
        print("slurm: no cluster answers (bash .ci/slurm.sh start): left out")
    print(
        f"{args.members} digits members, width 8, {args.epochs} epochs, {SLOTS} at a time, "
        f"one thread each; {args.windows} windows; launchers: {', '.join(names)}"
    )
    runs: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for w in range(args.windows):
            order = names[w % len(names) :] + names[: w % len(names)]
            for name in order:
                result = one(name, args, Path(tmp) / f"{name}-{w}")
                runs[name].append(result)
                print(f"window {w + 1}: {name} {result['wall']:.1f} s", flush=True)
    local = statistics.median(r["wall"] for r in runs["local"]) if "local" in runs else None
    member = None
    print(
        "\n| launcher | wall (median) | vs local | engine ready | start / task | return / task | same acc |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, results in runs.items():
        wall = statistics.median(r["wall"] for r in results)
        tasks = [t for r in results for t in r["tasks"]]
        start = f"{statistics.median(t['start'] for t in tasks):.3f} s" if tasks else "-"
        back = f"{statistics.median(t['return'] for t in tasks):.3f} s" if tasks else "-"
        ready = statistics.median(r.get("ready", 0.0) for r in results)
        ratio = f"{wall / local:.2f}x" if local else "-"
        same = all(r["acc"] == runs["local"][0]["acc"] for r in results) if local else "-"
        print(f"| {name} | {wall:.1f} s | {ratio} | {ready:.1f} s | {start} | {back} | {same} |")
        if name == "local":
            member = wall * SLOTS / args.members
    if member:
        print(f"\na member takes about {member:.1f} s here (local wall x {SLOTS} / members)")
    imports = [import_seconds() for _ in range(3)]
    print(
        f"a fresh python importing torch and genlab's launchers (what each Slurm task does "
        f"before run_task): median {statistics.median(imports):.2f} s of 3"
    )


def import_seconds() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, genlab.launchers"], check=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
