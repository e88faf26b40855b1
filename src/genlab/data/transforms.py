"""Transforms of whole batches of images, each one tensor operation.

Images are (N, H, W, C) uint8 here (height is axis 1, width axis 2) and (N, C, H, W) float inside
a model (height 2, width 3): every view takes the two axes, so both layouts share one definition.

The eight views are the symmetries of the square (the dihedral group D4). Each is defined once,
in ``_VIEW_OPS``; everything else about the group -- how two views compose, which view undoes
another -- is *derived* from these operations by applying them to a probe grid of distinct
values (``compose``, ``inverse``), so the group table cannot drift from the code that moves
pixels. ``rot90`` is ``torch.rot90(x, 1, (h, w))``: it turns the first row into the first column
read bottom-up (a quarter turn counter-clockwise when row 0 is drawn at the top).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch

from genlab.errors import GenlabError


def vflip(images: torch.Tensor, height_dim: int = 1) -> torch.Tensor:
    """Upside down: row i becomes row H-1-i."""
    return images.flip(height_dim)


ViewOp = Callable[[torch.Tensor, int, int], torch.Tensor]

_VIEW_OPS: dict[str, ViewOp] = {
    "identity": lambda x, h, w: x,
    "vflip": lambda x, h, w: vflip(x, h),
    "hflip": lambda x, h, w: x.flip(w),
    "rot90": lambda x, h, w: x.rot90(1, (h, w)),
    "rot180": lambda x, h, w: x.rot90(2, (h, w)),
    "rot270": lambda x, h, w: x.rot90(3, (h, w)),
    "transpose": lambda x, h, w: x.transpose(h, w),
    "antitranspose": lambda x, h, w: x.rot90(2, (h, w)).transpose(h, w),  # the anti-diagonal
}
VIEWS = tuple(_VIEW_OPS)  # the names, in a fixed order: identity first
VFLIP_GROUP = ("identity", "vflip")
D4_GROUP = VIEWS


def view(name: str, x: torch.Tensor, dims: tuple[int, int] = (1, 2)) -> torch.Tensor:
    """The view ``name`` of ``x``; ``dims`` are its (height, width) axes: (1, 2) for (N, H, W, C)
    images, (-2, -1) for (N, C, H, W) features. Returns a view or a new tensor (never in place)."""
    try:
        op = _VIEW_OPS[name]
    except KeyError:
        raise GenlabError(
            f"--views {name!r}: no such view (valid: {', '.join(VIEWS)}, all)"
        ) from None
    return op(x, *dims)


def parse_views(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``all`` expands to every view, ``none`` alone to no view; unknown names are refused; order
    kept, duplicates dropped."""
    if tuple(names) == ("none",):
        return ()
    out: list[str] = []
    for name in names:
        for n in VIEWS if name == "all" else (name,):
            if n not in _VIEW_OPS:
                raise GenlabError(
                    f"--views {n!r}: no such view (valid: {', '.join(VIEWS)}, all, none)"
                )
            if n not in out:
                out.append(n)
    if not out:
        raise GenlabError("--views: name at least one view")
    return tuple(out)


@cache
def _probe_key(name: str) -> tuple[int, ...]:
    probe = torch.arange(16).view(4, 4)  # distinct values: a view is known by where they land
    return tuple(view(name, probe, (0, 1)).flatten().tolist())


@cache
def compose(a: str, b: str) -> str:
    """The view that equals ``a`` applied after ``b``: view(compose(a, b), x) == a(b(x))."""
    probe = torch.arange(16).view(4, 4)
    key = tuple(view(a, view(b, probe, (0, 1)), (0, 1)).flatten().tolist())
    return next(n for n in VIEWS if _probe_key(n) == key)


@cache
def inverse(a: str) -> str:
    """The view that undoes ``a``."""
    return next(n for n in VIEWS if compose(n, a) == "identity")


def check_group(elements: tuple[str, ...]) -> None:
    """Refuse a set of views that is not closed under composition (not a group)."""
    for a in elements:
        for b in elements:
            if compose(a, b) not in elements:
                raise GenlabError(f"views {elements}: not a group ({a} after {b} is outside)")


def double_with_vflip(
    images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The report's augmentation: every image plus its flipped copy (2N images)."""
    return torch.cat([images, vflip(images)]), torch.cat([labels, labels])


def random_vflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each (N, H, W, C) image with probability 1/2, drawn from ``generator``."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], vflip(images), images)
