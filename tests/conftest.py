"""Tiny seeded fixtures. Every test gets its own cache folder, so nothing reads ~/.cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    cache = tmp_path_factory.mktemp("genlab-cache")
    monkeypatch.setenv("GENLAB_CACHE", str(cache))
    return cache


@pytest.fixture(autouse=True)
def _threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests compare runs; one thread keeps them cheap on a shared CPU. A command resolves its
    threads from GENLAB_THREADS (``--threads`` overrides it), so every test starts at one."""
    monkeypatch.setenv("GENLAB_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """``genlab demo`` as shipped, run once per session (about 2 minutes on one thread): its
    folder and the run, sweep and analysis folders it made (its report is ``OUT/report``). Tests
    that use it read it only: copy what they change."""
    from genlab.demo import demo
    from genlab.training.runtime import Runtime

    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:  # the function-scoped fixtures above come later
        patch.setenv("GENLAB_CACHE", str(tmp_path_factory.mktemp("demo-cache")))
        patch.setenv("GENLAB_THREADS", "1")
        rt = Runtime.resolve(device="cpu", threads=1, quiet=True)
        return out, demo(out, rt)
