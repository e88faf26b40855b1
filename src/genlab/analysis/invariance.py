"""Invariance inside a network: how much of each layer's representation survives a view.

For a view g and images x, per layer: the features f(x) against the features of the transformed
images moved back, g^-1 . f(g x) (equivariance: 1 means the layer commutes with g), and the
spatially pooled features (invariance: 1 means the pooled layer ignores g). For Conv-4 g acts on
pixels only; for the group models it also permutes the group axis, and their pooled features
average over the group as well. Two measures: the cosine similarity of each image's two feature
vectors, averaged over images, and linear CKA (Kornblith et al., "Similarity of Neural Network
Representations Revisited", 2019) between the two (N, D) feature matrices.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.analysis.measures import linear_cka
from genlab.data.transforms import inverse, view
from genlab.errors import GenlabError
from genlab.models.conv4 import Conv4
from genlab.models.equivariant import EquivariantConv4, GroupAverage, transform_features


def mean_cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    """Cosine similarity of each row of x with the same row of y, averaged over rows."""
    return float(
        nn.functional.cosine_similarity(x.flatten(1).double(), y.flatten(1).double()).mean()
    )


def block_features(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, features) after each block, then the logits. A ``GroupAverage`` is looked into:
    its inner model's layers are measured (the average acts only on the logits)."""
    inner = model.model if isinstance(model, GroupAverage) else model
    if isinstance(inner, EquivariantConv4):
        feats = inner.block_features(x)
    elif isinstance(inner, Conv4):
        feats, h = [], x
        for i, layer in enumerate(inner.features):
            if isinstance(layer, nn.Conv2d) and i > 0:  # a block ends where the next conv starts
                feats.append(h)
            h = layer(h)
        feats.append(h)
    else:
        raise TypeError(f"no layers to measure in {type(inner).__name__}")
    names = [f"block{i + 1}" for i in range(len(feats))]
    return [*zip(names, feats, strict=True), ("logits", model(x))]


def _move_back(name: str, f: torch.Tensor, group: tuple[str, ...] | None) -> torch.Tensor:
    g_inv = inverse(name)
    if f.ndim == 2:  # logits: nothing to move
        return f
    if f.ndim == 5:  # (N, C, G, H, W)
        return transform_features(g_inv, f, group)  # type: ignore[arg-type]
    return view(g_inv, f, (-2, -1))  # (N, C, H, W)


def _pool(f: torch.Tensor) -> torch.Tensor:
    return f if f.ndim == 2 else f.flatten(2).mean(2)  # (N, C): mean over pixels (and group)


@torch.no_grad()
def layer_invariance(
    model: nn.Module, x: torch.Tensor, name: str = "vflip", batch_size: int = 256
) -> list[dict[str, float | str]]:
    """Per layer, for (N, C, H, W) float inputs ``x`` in eval mode: equivariance and invariance
    cosine similarity and linear CKA between x and its view ``name``."""
    model.eval()
    inner = model.model if isinstance(model, GroupAverage) else model
    group = getattr(inner, "group", None)
    if group is not None and name not in group:  # its features carry no action of ``name``
        raise GenlabError(f"view {name!r} is not in the model's group ({', '.join(group)})")
    plain, moved = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        a = block_features(model, xb)
        b = block_features(model, view(name, xb, (-2, -1)).contiguous())
        plain.append([f for _, f in a])
        moved.append([_move_back(name, f, group) for _, f in b])
    rows = []
    for i, (layer, _) in enumerate(a):
        fa = torch.cat([p[i] for p in plain])
        fb = torch.cat([m[i] for m in moved])
        pa, pb = _pool(fa), _pool(fb)
        rows.append(
            {
                "layer": layer,
                "equivariance_cos": mean_cosine(fa, fb),
                "equivariance_cka": linear_cka(fa, fb),
                "invariance_cos": mean_cosine(pa, pb),
                "invariance_cka": linear_cka(pa, pb),
            }
        )
    return rows
