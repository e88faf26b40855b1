"""Training and evaluation throughput: genlab's engine against a naive homework-style loop.

Same process, same data, engines alternating window by window (this machine is noisy: medians
and the spread over windows are what to quote). The naive loop is what a typical course
assignment writes: the network in the report's block order (conv -> BN -> ReLU -> MaxPool, NCHW;
``report_layout``, the same weights as genlab's Conv-4), a torch Dataset returning one decoded,
per-image normalized float tensor, a DataLoader with batch 64 and shuffle, and a per-batch
transfer to the device. ``naive_conv4`` is that loop with genlab's model, to separate what the
model's layout buys from what the engine buys.

    python benchmarks/bench_training.py                       # widths 4 and 64, CPU
    python benchmarks/bench_training.py --widths 4 16 --windows 5 --out runs/bench/training.json
    python benchmarks/bench_training.py --device cuda --images 50000 50000 --compile
    python benchmarks/bench_training.py --engines genlab --group 3 8 16 --group-width 8

Data: ../shared/data/cifar10-jpeg (or --data) when present, else random images of CIFAR-10's
shape. Besides the table it prints CIFAR-10 epoch seconds (50,000 training images plus the
20,000 the flip study evaluates) and, from them, the wall time of the report's full study set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from genlab import seeding
from genlab.data import channel_stats, load_dataset
from genlab.models import Conv4
from genlab.models.conv4 import report_layout
from genlab.models.grouped import GroupedConv4
from genlab.training import (
    FitSpec,
    Member,
    Normalizer,
    Runtime,
    View,
    configure_threads,
    epoch_generator,
    evaluate,
    fit,
    resolve_device,
    train_epoch,
)
from genlab.training.engine import resolve_precision
from genlab.training.grouped import plan, train_epoch_grouped

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"
CIFAR10_TRAIN, FLIP_EVAL = 50_000, 20_000  # images per epoch: trained; evaluated (test + flipped)
# The report's full study set: (width, runs as training images per epoch, epochs, images each
# epoch evaluates). Flip: none, random (50,000) and double (100,000) for 80 epochs, evaluated on
# test and flipped test. Random labels: p = 0, 0.5, 1 at widths 4 and 64, evaluated on test
# and on the training set (one pass serves its true labels and its noisy and clean parts).
# A run trains (images per epoch, whether CUDA graphs apply): random flips are drawn on the
# host, so that run trains eagerly.
STUDY_SET = {
    "flip robustness": [(64, ((50_000, True), (50_000, False), (100_000, True)), 80, FLIP_EVAL)],
    "random labels": [
        (4, ((50_000, True),) * 3, 800, 60_000),
        (64, ((50_000, True),) * 3, 1000, 60_000),
    ],
}


def load_images(n: int, data: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    if data.is_dir():
        train = load_dataset("cifar10", data, quiet=True).train
        return train.images[:n], train.labels[:n], "cifar10-jpeg"
    g = torch.Generator().manual_seed(0)
    return (
        torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (n,), generator=g),
        "synthetic",
    )


class NaiveDataset(torch.utils.data.Dataset):
    """One image at a time: decode to float, normalize per image, CHW."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, mean: list[float], std: list[float]
    ):
        self.images, self.labels = images.numpy(), labels.numpy()
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float() / 255.0
        return (x - self.mean) / self.std, int(self.labels[i])


def naive_train(model, opt, loader, device) -> None:
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def naive_eval(model, loader, device) -> None:
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            model(x.to(device)).argmax(1).eq(y.to(device)).sum().item()


def conv4_flops(width: int, kernel: int = 3, size: int = 32, num_classes: int = 10) -> float:
    """Forward FLOPs of Conv-4 on one image (2 per multiply-add; convs and the classifier)."""
    widths, sides = (3, width, 2 * width, 4 * width, 8 * width), (size, size, size // 2, size // 4)
    convs = sum(
        2 * s * s * c_in * c_out * kernel**2
        for s, c_in, c_out in zip(sides, widths[:-1], widths[1:], strict=True)
    )
    return float(convs + 2 * 8 * width * num_classes)


PEAK_SHAPE = {"cpu": (64, 128, 3), "cuda": (256, 256, 20)}  # batch, channels, reps per window


def conv_peak(device, windows: int, precision: str) -> dict:
    """GFLOP/s of a large 3x3 convolution, forward + backward (3x the forward FLOPs), channels_last,
    in ``precision`` ("fp32", or "bf16" autocast as the engine runs it)."""
    bf16 = precision == "bf16"
    batch, channels, reps = PEAK_SHAPE[device.type]
    x = (
        torch.randn(batch, channels, 32, 32, device=device)
        .to(memory_format=torch.channels_last)
        .requires_grad_()
    )
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
    conv = conv.to(device, memory_format=torch.channels_last)
    flops = 3 * 2 * batch * 32 * 32 * channels * channels * 9
    rates = []
    for w in range(windows + 1):
        _sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                y = conv(x)
            y.float().sum().backward()
        _sync(device)
        if w:
            rates.append(reps * flops / (time.perf_counter() - t) / 1e9)
    return _stats(rates)


def load_seconds(windows: int, data: Path) -> dict[str, dict]:
    """Seconds to load CIFAR-10 from genlab's cache, after a first load: as the official batches
    (the downloaded format; here the same images written as the six pickles in a temporary
    folder) and, when present, as the image folder."""
    if data.is_dir():
        splits = load_dataset("cifar10", data, quiet=True)
        train, test = splits.train, splits.test
    else:
        g = torch.Generator().manual_seed(0)
        train = test = None
        shapes = {"train": 50_000, "test": 10_000}
    sources = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cifar-10-batches-py"
        folder.mkdir()
        for split, names in (
            ("train", [f"data_batch_{i}" for i in range(1, 6)]),
            ("test", ["test_batch"]),
        ):
            if train is not None:
                part = train if split == "train" else test
                images, labels = part.images.numpy(), part.labels.numpy()
            else:
                n = shapes[split]
                images = torch.randint(
                    0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g
                ).numpy()
                labels = torch.randint(0, 10, (n,), generator=g).numpy()
            flat = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # the format's layout
            for i, name in enumerate(names):
                rows = slice(i * len(flat) // len(names), (i + 1) * len(flat) // len(names))
                batch = {b"data": flat[rows], b"labels": [int(v) for v in labels[rows]]}
                (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
        sources["official batches"] = folder
        if data.is_dir():
            sources["image folder"] = data
        out = {}
        for name, source in sources.items():
            # the temporary batches are cached in a temporary cache, gone with them
            cache = str(Path(tmp) / "cache") if source == folder else None
            with _environ("GENLAB_CACHE", cache):
                load_dataset("cifar10", source, quiet=True)  # the first load fills the cache
                times = []
                for _ in range(windows):
                    t = time.perf_counter()
                    load_dataset("cifar10", source, quiet=True)
                    times.append(time.perf_counter() - t)
            out[name] = _stats(times)
    return out


@contextlib.contextmanager
def _environ(name: str, value: str | None):
    """Set (None: leave alone) an environment variable for a block."""
    old = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                del os.environ[name]
            else:
                os.environ[name] = old


def engine_specs(device, compiled: bool) -> dict[str, dict]:
    """name -> how it runs. genlab runs its default precision (fp32 on CPU, bf16 on CUDA); the
    engine in the other precision is the one ``--precision`` selects."""
    default = resolve_precision("auto", device)
    other = "fp32" if default == "bf16" else "bf16"
    specs = {
        "genlab": {"layout": "channels_last", "precision": default},
        f"genlab_{other}": {"layout": "channels_last", "precision": other},
        "genlab_nchw": {"layout": "nchw", "precision": default},
        **(
            {"genlab_eager": {"layout": "channels_last", "precision": default, "graphs": False}}
            if device.type == "cuda"
            else {}
        ),
        "naive": {"layout": "report", "precision": "fp32"},
        "naive_conv4": {"layout": "nchw", "precision": "fp32"},
    }
    if compiled:
        specs["genlab_compiled"] = {**specs["genlab"], "compile": True}
    return specs


def bench_width(
    width: int, images, labels, windows: int, device, compiled: bool, only: list[str] | None
) -> dict:
    n = len(images)
    mean, std = channel_stats(images)
    specs = engine_specs(device, compiled)
    specs = {k: v for k, v in specs.items() if not only or k in only or k == "naive"}
    engines, norms = {}, {}
    for name, spec in specs.items():
        with seeding.init(0):  # every engine starts from the same weights
            conv4 = Conv4(width).to(device)
        model = report_layout(conv4) if spec["layout"] == "report" else conv4
        if spec["layout"] == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        if spec.get("compile"):
            model.compile()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        engines[name] = (model, opt)
        norms[name] = Normalizer.from_stats(
            mean, std, device, channels_last=spec["layout"] == "channels_last"
        )
    x_dev, y_dev = images.to(device), labels.to(device)
    loader = torch.utils.data.DataLoader(
        NaiveDataset(images, labels, mean, std), batch_size=64, shuffle=True
    )
    eval_loader = torch.utils.data.DataLoader(
        NaiveDataset(images, labels, mean, std), batch_size=1024
    )
    train_ips = {k: [] for k in engines}
    eval_ips = {k: [] for k in engines}
    peak_mib = {}
    for w in range(windows + 1):  # window 0 warms up (and compiles) and is discarded
        for name, (model, opt) in engines.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            t = time.perf_counter()
            if name.startswith("naive"):
                naive_train(model, opt, loader, device)
            else:
                eager = "0" if specs[name].get("graphs") is False else None  # genlab_eager
                with _environ("GENLAB_CUDA_GRAPHS", eager):
                    train_epoch(
                        model,
                        opt,
                        x_dev,
                        y_dev,
                        norms[name],
                        batch_size=64,
                        generator=epoch_generator(0, w),
                        precision=specs[name]["precision"],
                    )
            _sync(device)
            dt = time.perf_counter() - t
            t = time.perf_counter()
            if name.startswith("naive"):
                naive_eval(model, eval_loader, device)
            else:
                evaluate(model, x_dev, y_dev, norms[name], 10, precision=specs[name]["precision"])
            _sync(device)
            de = time.perf_counter() - t
            if w:
                train_ips[name].append(n / dt)
                eval_ips[name].append(n / de)
            if device.type == "cuda":
                peak_mib[name] = torch.cuda.max_memory_allocated(device) / 2**20

    out = {}
    for name in engines:
        train, evaluation = _stats(train_ips[name]), _stats(eval_ips[name])
        out[name] = {
            **specs[name],
            "train_img_per_s": train,
            "eval_img_per_s": evaluation,
            # one CIFAR-10 epoch of the flip study: train 50,000, evaluate test + flipped test
            "cifar10_epoch_seconds": CIFAR10_TRAIN / train["median"]
            + FLIP_EVAL / evaluation["median"],
            "train_speedup_vs_naive": train["median"] / statistics.median(train_ips["naive"]),
        }
        if name in peak_mib:
            out[name]["cuda_peak_mib"] = peak_mib[name]
    return out


def project_study_set(widths: dict) -> dict | None:
    """Wall time of the report's full study set from genlab's measured rates, run after run
    (the eager engine's rate for a run that cannot use CUDA graphs, where it was measured)."""
    needed = [str(w) for runs in STUDY_SET.values() for w, *_ in runs]
    if not all(w in widths and "genlab" in widths[w] for w in needed):
        return None
    hours = {}
    for study, runs in STUDY_SET.items():
        seconds = 0.0
        for width, trained, epochs, evaluated in runs:
            for n, graphs in trained:
                rate = widths[str(width)].get("genlab" if graphs else "genlab_eager")
                rate = rate or widths[str(width)]["genlab"]
                train = rate["train_img_per_s"]["median"]
                evaluation = rate["eval_img_per_s"]["median"]
                seconds += epochs * (n / train + evaluated / evaluation)
        hours[study] = seconds / 3600
    hours["total"] = sum(hours.values())
    return hours


def bench_group(width: int, k: int, images, labels, windows: int, device) -> dict:
    """K models of one width (aggregate img/s over the same epochs, alternating): one after
    another on all threads; as one grouped model; and as genlab trains them (``fit`` following
    ``plan``, e.g. lanes on the CPU; each call rebuilds its grouped chunks, a cost a study pays
    once per run: slightly against genlab). All in the device's default precision."""
    n = len(images)
    mean, std = channel_stats(images)
    precision = resolve_precision("auto", device)
    rt = Runtime(device, precision, threads=torch.get_num_threads(), log=lambda _: None)
    norm = Normalizer.from_stats(mean, std, device)
    wide = Normalizer(norm.scale.repeat(1, k, 1, 1), norm.shift.repeat(1, k, 1, 1))
    x, y = images.to(device), torch.stack([labels.roll(i) for i in range(k)]).to(device)

    def members() -> list[Member]:
        out = []
        for seed in range(k):
            with seeding.init(seed):
                model = Conv4(width).to(device, memory_format=torch.channels_last)
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            spec = FitSpec(0, 64, seed)  # epochs: raised window by window
            out.append(Member(None, model, opt, View(x, y[seed]), {}, norm, 10, spec))
        return out

    alone, planned = members(), members()
    grouped = GroupedConv4([m.model for m in members()]).to(
        device, memory_format=torch.channels_last
    )
    gopt = torch.optim.SGD(grouped.parameters(), lr=0.01)
    how = plan(planned[0].model, device, k)
    ips = {"sequential": [], "grouped": [], "genlab": []}
    for w in range(windows + 1):  # window 0 warms up and is discarded
        for name in ips:
            t = time.perf_counter()
            if name == "sequential":
                for m in alone:
                    gen = epoch_generator(m.spec.seed, w + 1)
                    train_epoch(
                        m.model,
                        m.optimizer,
                        x,
                        m.train.labels,
                        norm,
                        batch_size=64,
                        generator=gen,
                        precision=precision,
                    )
            elif name == "grouped":
                gens = [epoch_generator(i, w + 1) for i in range(k)]
                train_epoch_grouped(
                    grouped,
                    gopt,
                    x,
                    y,
                    wide,
                    batch_size=64,
                    generators=gens,
                    precision=precision,
                )
            else:  # one more epoch for every member, exactly as the studies train them
                for m in planned:
                    m.spec = replace(m.spec, epochs=w + 1)
                fit(planned, rt)
            _sync(device)
            if w:
                ips[name].append(k * n / (time.perf_counter() - t))
    base = statistics.median(ips["sequential"])
    return {
        "width": width,
        "k": k,
        "plan": {"chunk": how.chunk, "lanes": how.lanes},
        **{f"{name}_img_per_s": _stats(v) for name, v in ips.items()},
        **{
            f"{name}_speedup": statistics.median(ips[name]) / base for name in ("grouped", "genlab")
        },
    }


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _stats(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--widths", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument(
        "--images", type=int, nargs="+", default=None, help="images per window, per width"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--group", type=int, nargs="*", default=[8], help="K models at once, per K (none: skip)"
    )
    parser.add_argument("--group-width", type=int, default=4, help="the width of those models")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd genlab")
    parser.add_argument("--data", type=Path, default=SHARED, help="CIFAR-10 as an image folder")
    parser.add_argument("--engines", nargs="+", help="only these engines (naive always runs)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/training.json"))
    args = parser.parse_args()
    threads = configure_threads()
    device = resolve_device(args.device)
    if any(k < 2 for k in args.group):
        parser.error(f"--group {' '.join(map(str, args.group))}: K must be >= 2 (no K: skip)")
    sizes = args.images or [4096 if w <= 8 else 512 for w in args.widths]
    if len(sizes) != len(args.widths):
        parser.error(f"--images: {len(sizes)} sizes for {len(args.widths)} widths")
    images, labels, source = load_images(max(sizes), args.data)
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "threads": threads,
        "data": source,
        "torch": torch.__version__,
        "widths": {},
    }
    print(
        f"device {results['device']}, {threads} threads, data {source}, torch {torch.__version__}, "
        f"{args.windows} windows (medians, [min, max])"
    )
    print(
        f"{'width':>5} {'engine':<16} {'train img/s':>24} {'x naive':>8} {'eval img/s':>24} "
        f"{'epoch s':>8}"
    )
    for width, n in zip(args.widths, sizes, strict=True):
        r = bench_width(
            width, images[:n], labels[:n], args.windows, device, args.compile, args.engines
        )
        results["widths"][str(width)] = {"images_per_window": n, **r}
        for name, v in r.items():
            t, e = v["train_img_per_s"], v["eval_img_per_s"]
            print(
                f"{width:>5} {name:<16} {t['median']:>9.0f} [{t['min']:>5.0f}, {t['max']:>5.0f}] "
                f"{v['train_speedup_vs_naive']:>7.2f}x {e['median']:>9.0f} [{e['min']:>5.0f}, "
                f"{e['max']:>5.0f}] {v['cifar10_epoch_seconds']:>8.2f}"
            )
    peaks = {p: conv_peak(device, args.windows, p) for p in ("fp32", "bf16")}
    results["conv_peak_gflops"] = peaks
    batch, channels, _ = PEAK_SHAPE[device.type]
    for precision, peak in peaks.items():
        print(
            f"3x3 conv peak, {precision} (fwd+bwd, {batch}x{channels}x32x32): "
            f"{peak['median']:.0f} GFLOP/s [{peak['min']:.0f}, {peak['max']:.0f}]"
        )
    for width, r in results["widths"].items():
        flops = 3 * conv4_flops(int(width))  # forward + backward per training image
        for v in r.values():
            if isinstance(v, dict) and "train_img_per_s" in v:
                v["train_gflops"] = flops * v["train_img_per_s"]["median"] / 1e9
                peak = peaks[v["precision"]]["median"]  # against the peak of its own arithmetic
                v["share_of_conv_peak"] = v["train_gflops"] / peak
        shares = ", ".join(
            f"{n} {v['train_gflops']:.0f} GFLOP/s ({v['share_of_conv_peak']:.0%})"
            for n, v in r.items()
            if isinstance(v, dict) and "train_gflops" in v
        )
        print(f"width {width} ({conv4_flops(int(width)) / 1e6:.1f} MFLOP/image forward): {shares}")
    load = load_seconds(args.windows, args.data)
    results["cifar10_cache_load_seconds"] = load
    for name, v in load.items():
        print(f"CIFAR-10 from cache ({name}): {v['median']:.3f} s [{v['min']:.3f}, {v['max']:.3f}]")
    results["groups"] = []
    for k in args.group:
        half = sizes[0] // 2
        g = bench_group(args.group_width, k, images[:half], labels[:half], args.windows, device)
        results["groups"].append(g)
        print(
            f"K={k} width-{g['width']} models (aggregate img/s): one after another "
            f"{g['sequential_img_per_s']['median']:.0f}, one grouped model "
            f"{g['grouped_img_per_s']['median']:.0f} ({g['grouped_speedup']:.2f}x), genlab "
            f"(chunks of {g['plan']['chunk']} in {g['plan']['lanes']} lanes) "
            f"{g['genlab_img_per_s']['median']:.0f} ({g['genlab_speedup']:.2f}x)"
        )
    study_set = project_study_set(results["widths"])
    if study_set is not None:
        results["study_set_hours"] = study_set
        print(
            "the report's full study set, run after run at these rates: "
            + ", ".join(f"{k} {v:.2f} h" for k, v in study_set.items())
        )
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"peak RSS {results['peak_rss_mib']:.0f} MiB; written {args.out}")


if __name__ == "__main__":
    main()
