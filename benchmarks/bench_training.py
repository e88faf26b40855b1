"""Training and evaluation throughput: genlab's engine against a naive homework-style loop.

Same process, same data, engines alternating window by window (this machine is noisy: medians
and the spread over windows are what to quote). The naive loop is what a typical course
assignment writes: a torch Dataset returning one decoded, per-image normalized float tensor, a
DataLoader with batch 64 and shuffle, and a per-batch transfer to the device.

    python benchmarks/bench_training.py                       # widths 4 and 64, CPU
    python benchmarks/bench_training.py --widths 4 16 --windows 5 --out runs/bench/training.json

Data: ../shared/data/cifar10-jpeg when present, else random images of CIFAR-10's shape.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from genlab.data import channel_stats, load_dataset
from genlab.models import Conv4
from genlab.models.grouped import GroupedConv4
from genlab.training import (
    Normalizer,
    configure_threads,
    epoch_generator,
    evaluate,
    resolve_device,
    train_epoch,
)
from genlab.training.grouped import train_epoch_grouped

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


def load_images(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if SHARED.is_dir():
        train = load_dataset("cifar10", SHARED, quiet=True).train
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


def conv_peak(device, windows: int) -> dict:
    """GFLOP/s of a large 3x3 convolution, forward + backward (3x the forward FLOPs), channels_last."""
    x = (
        torch.randn(64, 128, 32, 32, device=device)
        .to(memory_format=torch.channels_last)
        .requires_grad_()
    )
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(device, memory_format=torch.channels_last)
    flops = 3 * 2 * 64 * 32 * 32 * 128 * 128 * 9
    rates = []
    for w in range(windows + 1):
        t = time.perf_counter()
        for _ in range(3):
            conv(x).sum().backward()
        _sync(device)
        if w:
            rates.append(3 * flops / (time.perf_counter() - t) / 1e9)
    return _stats(rates)


def load_seconds(windows: int) -> dict | None:
    """Seconds to load CIFAR-10 (the image folder) from genlab's cache, after a first load."""
    if not SHARED.is_dir():
        return None
    load_dataset("cifar10", SHARED, quiet=True)
    times = []
    for _ in range(windows):
        t = time.perf_counter()
        load_dataset("cifar10", SHARED, quiet=True)
        times.append(time.perf_counter() - t)
    return _stats(times)


def bench_width(width: int, images, labels, windows: int, device) -> dict:
    n = len(images)
    mean, std = channel_stats(images)
    engines = {}
    for name in ("genlab", "genlab_nchw", "naive"):
        torch.manual_seed(0)
        model = Conv4(width).to(device)
        if name == "genlab":
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        engines[name] = (model, opt)
    norm_cl = Normalizer.from_stats(mean, std, device, channels_last=True)
    norm_nchw = Normalizer.from_stats(mean, std, device, channels_last=False)
    x_dev, y_dev = images.to(device), labels.to(device)
    loader = torch.utils.data.DataLoader(
        NaiveDataset(images, labels, mean, std), batch_size=64, shuffle=True
    )
    eval_loader = torch.utils.data.DataLoader(
        NaiveDataset(images, labels, mean, std), batch_size=1024
    )
    train_ips = {k: [] for k in engines}
    eval_ips = {k: [] for k in engines}
    for w in range(windows + 1):  # window 0 warms up and is discarded
        for name, (model, opt) in engines.items():
            t = time.perf_counter()
            if name == "naive":
                naive_train(model, opt, loader, device)
            else:
                norm = norm_cl if name == "genlab" else norm_nchw
                train_epoch(
                    model, opt, x_dev, y_dev, norm, batch_size=64, generator=epoch_generator(0, w)
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
            t = time.perf_counter()
            if name == "naive":
                naive_eval(model, eval_loader, device)
            else:
                evaluate(model, x_dev, y_dev, norm_cl if name == "genlab" else norm_nchw, 10)
            de = time.perf_counter() - t
            if w:
                train_ips[name].append(n / dt)
                eval_ips[name].append(n / de)

    def stats(values):
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    out = {
        name: {"train_img_per_s": stats(train_ips[name]), "eval_img_per_s": stats(eval_ips[name])}
        for name in engines
    }
    base = out["naive"]["train_img_per_s"]["median"]
    for name in engines:
        out[name]["train_speedup_vs_naive"] = out[name]["train_img_per_s"]["median"] / base
    return out


def bench_group(width: int, k: int, images, labels, windows: int, device) -> dict:
    """K models trained one after another vs the same K in one grouped pass (aggregate img/s)."""
    n = len(images)
    mean, std = channel_stats(images)
    norm = Normalizer.from_stats(mean, std, device)
    wide = Normalizer(norm.scale.repeat(1, k, 1, 1), norm.shift.repeat(1, k, 1, 1))
    x, y = images.to(device), torch.stack([labels.roll(i) for i in range(k)]).to(device)
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        models.append(Conv4(width).to(device, memory_format=torch.channels_last))
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in models]
    grouped = GroupedConv4(models).to(device, memory_format=torch.channels_last)
    gopt = torch.optim.SGD(grouped.parameters(), lr=0.01)
    seq, grp = [], []
    for w in range(windows + 1):
        t = time.perf_counter()
        for i in range(k):
            train_epoch(
                models[i], opts[i], x, y[i], norm, batch_size=64, generator=epoch_generator(i, w)
            )
        _sync(device)
        dt_seq = time.perf_counter() - t
        t = time.perf_counter()
        gens = [epoch_generator(i, w) for i in range(k)]
        train_epoch_grouped(grouped, gopt, x, y, wide, batch_size=64, generators=gens)
        _sync(device)
        dt_grp = time.perf_counter() - t
        if w:
            seq.append(k * n / dt_seq)
            grp.append(k * n / dt_grp)
    return {
        "k": k,
        "sequential_img_per_s": _stats(seq),
        "grouped_img_per_s": _stats(grp),
        "speedup": statistics.median(grp) / statistics.median(seq),
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
    parser.add_argument("--group", type=int, default=8, help="K width-4 models at once (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/training.json"))
    args = parser.parse_args()
    threads = configure_threads()
    device = resolve_device(args.device)
    sizes = args.images or [4096 if w <= 8 else 512 for w in args.widths]
    images, labels, source = load_images(max(sizes))
    results = {
        "device": str(device),
        "threads": threads,
        "data": source,
        "torch": torch.__version__,
        "widths": {},
    }
    print(
        f"device {device}, {threads} threads, data {source}, {args.windows} windows (medians, [min, max])"
    )
    print(f"{'width':>5} {'engine':<12} {'train img/s':>24} {'x naive':>8} {'eval img/s':>24}")
    for width, n in zip(args.widths, sizes, strict=True):
        r = bench_width(width, images[:n], labels[:n], args.windows, device)
        results["widths"][str(width)] = {"images_per_window": n, **r}
        for name, v in r.items():
            t, e = v["train_img_per_s"], v["eval_img_per_s"]
            print(
                f"{width:>5} {name:<12} {t['median']:>9.0f} [{t['min']:>5.0f}, {t['max']:>5.0f}] "
                f"{v['train_speedup_vs_naive']:>7.2f}x {e['median']:>9.0f} [{e['min']:>5.0f}, {e['max']:>5.0f}]"
            )
    peak = conv_peak(device, args.windows)
    results["conv_peak_gflops"] = peak
    print(
        f"3x3 conv peak (fwd+bwd, 64x128x32x32): {peak['median']:.0f} GFLOP/s [{peak['min']:.0f}, {peak['max']:.0f}]"
    )
    for width, r in results["widths"].items():
        flops = 3 * conv4_flops(int(width))  # forward + backward per training image
        for v in r.values():
            if isinstance(v, dict) and "train_img_per_s" in v:
                v["train_gflops"] = flops * v["train_img_per_s"]["median"] / 1e9
                v["share_of_conv_peak"] = v["train_gflops"] / peak["median"]
        shares = ", ".join(
            f"{n} {v['train_gflops']:.0f} GFLOP/s ({v['share_of_conv_peak']:.0%})"
            for n, v in r.items()
            if isinstance(v, dict) and "train_gflops" in v
        )
        print(f"width {width} ({conv4_flops(int(width)) / 1e6:.1f} MFLOP/image forward): {shares}")
    load = load_seconds(args.windows)
    if load is not None:
        results["cifar10_cache_load_seconds"] = load
        print(
            f"CIFAR-10 (image folder) from cache: {load['median']:.3f} s [{load['min']:.3f}, {load['max']:.3f}]"
        )
    if args.group:
        g = bench_group(
            4, args.group, images[: sizes[0] // 2], labels[: sizes[0] // 2], args.windows, device
        )
        results["group"] = g
        print(
            f"K={g['k']} width-4 models: sequential {g['sequential_img_per_s']['median']:.0f} img/s, "
            f"grouped {g['grouped_img_per_s']['median']:.0f} img/s (aggregate): {g['speedup']:.2f}x"
        )
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"peak RSS {results['peak_rss_mib']:.0f} MiB; written {args.out}")


if __name__ == "__main__":
    main()
