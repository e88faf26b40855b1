"""K independent Conv-4 models computed as one: every layer is a grouped layer (groups=K).

Member k owns channels [k*c, (k+1)*c) of every layer: its convolutions see only its own input
channels (groups=K), BatchNorm and max-pooling are per channel already, and the classifier is a
grouped 1x1 convolution. No weight is shared, so K members trained together with one optimizer
whose update is elementwise (SGD, Adam) follow exactly the paths they would follow alone, up to
the summation order inside the grouped kernels. One pass over K small models fills the cores
far better than K passes over one: at width 4 a single model is too small to keep 2 cores busy.
"""

from __future__ import annotations

import torch
from torch import nn

from genlab.models.batchnorm import BatchNorm2d
from genlab.models.conv4 import Conv4


class GroupedConv4(nn.Module):
    def __init__(self, members: list[Conv4]):
        super().__init__()
        first = members[0]
        if any((m.width, m.kernel) != (first.width, first.kernel) for m in members):
            raise ValueError("members of a group must share width and kernel")
        self.k = k = len(members)
        self.num_classes = first.classifier.out_features
        like = {"dtype": first.classifier.weight.dtype, "device": first.classifier.weight.device}
        layers: list[nn.Module] = []
        for parts in zip(*(m.features for m in members), strict=True):
            layer = parts[0]
            if isinstance(layer, nn.Conv2d):
                grouped = nn.Conv2d(
                    layer.in_channels * k,
                    layer.out_channels * k,
                    layer.kernel_size,
                    padding=layer.padding,
                    groups=k,
                    bias=True,
                    **like,
                )
                with torch.no_grad():
                    grouped.weight.copy_(torch.cat([p.weight for p in parts]))
                    grouped.bias.copy_(torch.cat([p.bias for p in parts]))
                layers.append(grouped)
            elif isinstance(layer, nn.BatchNorm2d):
                norm = BatchNorm2d(  # genlab's: a chunk of 2 width-4 members has 8 channels
                    layer.num_features * k, eps=layer.eps, momentum=layer.momentum, **like
                )
                with torch.no_grad():
                    for name in ("weight", "bias", "running_mean", "running_var"):
                        getattr(norm, name).copy_(torch.cat([getattr(p, name) for p in parts]))
                    norm.num_batches_tracked.copy_(layer.num_batches_tracked)
                layers.append(norm)
            else:
                layers.append(layer)
        self.features = nn.Sequential(*layers)
        lin = [m.classifier for m in members]
        self.classifier = nn.Conv2d(
            lin[0].in_features * k, self.num_classes * k, 1, groups=k, **like
        )
        with torch.no_grad():
            self.classifier.weight.copy_(torch.cat([m.weight for m in lin])[:, :, None, None])
            self.classifier.bias.copy_(torch.cat([m.bias for m in lin]))
        self.width, self.kernel = first.width, first.kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, K*C, H, W), member k's images in channels [k*C, (k+1)*C); returns (B, K, classes)."""
        out = self.classifier(self.features(x))  # (B, K*classes, 1, 1)
        return out.view(len(x), self.k, self.num_classes)

    def member_view(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (a parameter or buffer named ``name``, or optimizer state shaped like one)
        viewed as (K, ...), so ``[k]`` is member k's part in its grouped layout."""
        if name.endswith("num_batches_tracked") or tensor.ndim == 0:
            return tensor.expand(self.k)
        return tensor.view(self.k, -1, *tensor.shape[1:])

    def member_state(self, index: int) -> dict[str, torch.Tensor]:
        """Member ``index``'s weights and buffers as a plain Conv4 state dict."""
        plain = {}
        for name, tensor in self.state_dict().items():
            part = self.member_view(name, tensor)[index].detach().clone()
            plain[name] = part.flatten(1) if name == "classifier.weight" else part
        return plain
