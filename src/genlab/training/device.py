"""Devices and threads."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from genlab.errors import GenlabError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GenlabError(f"--device {name}: CUDA is not available on this machine")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise GenlabError(f"--device {name!r}: not one of {', '.join(DEVICES)}")


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads do not help convolutions)."""
    allowed = (
        os.sched_getaffinity(0)
        if hasattr(os, "sched_getaffinity")
        else set(range(os.cpu_count() or 1))
    )
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return max(1, len(allowed))
    cores, cpu, phys = set(), None, "0"
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            cpu = int(value)
        elif key == "physical id":
            phys = value
        elif key == "core id" and cpu in allowed:
            cores.add((phys, value))
    return max(1, len(cores) or len(allowed))


def configure_threads(num_threads: int | None = None) -> int:
    """One torch thread per physical core, unless told otherwise; never oversubscribe."""
    text = os.environ.get("GENLAB_THREADS", "")
    if text and not (text.isdigit() and int(text) > 0):
        raise GenlabError(f"GENLAB_THREADS={text!r}: must be a positive integer")
    n = num_threads or (int(text) if text else 0) or physical_cores()
    torch.set_num_threads(n)
    return n
