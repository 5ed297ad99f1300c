"""Building blocks whose shapes follow the data: conv stacks that accept any input size and produce any output size."""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(sizes: list[int], final_activation: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ConvEncoder(nn.Sequential):
    """Per stage: 3x3 conv (same padding) + ReLU + 2x2 max-pool ('same' pooling: 7 -> 4), as in the lesson."""

    def __init__(self, in_channels: int, channels: list[int], batch_norm: bool = False):
        layers: list[nn.Module] = []
        for c in channels:
            layers += [nn.Conv2d(in_channels, c, 3, padding=1)]
            layers += [nn.BatchNorm2d(c)] if batch_norm else []
            layers += [nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            in_channels = c
        super().__init__(*layers)

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        with torch.no_grad():
            return tuple(self(torch.zeros(1, *in_shape)).shape[1:])


def upsample_sizes(start: int, target: int) -> list[int]:
    """Sizes from `start` up to `target`, roughly doubling: 4 -> [7, 14, 28]; 2 -> [4, 7, 14, 28]."""
    sizes = [target]
    while math.ceil(sizes[-1] / 2) > start:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes[::-1]


class ConvDecoder(nn.Module):
    """Per stage: 3x3 conv + ReLU + upsampling to the next size, so the output is exactly the target size
    whatever the latent size (super-resolution adds stages). A final 3x3 conv gives the output logits."""

    def __init__(self, in_shape: tuple[int, int, int], channels: list[int], out_shape: tuple[int, int, int],
                 batch_norm: bool = False):
        super().__init__()
        c, h, w = in_shape
        hs, ws = upsample_sizes(h, out_shape[1]), upsample_sizes(w, out_shape[2])
        stages = max(len(hs), len(ws))
        hs, ws = [hs[0]] * (stages - len(hs)) + hs, [ws[0]] * (stages - len(ws)) + ws
        chans = (list(channels) + [channels[-1]] * stages)[:stages]
        layers: list[nn.Module] = []
        for width, size in zip(chans, zip(hs, ws)):
            layers += [nn.Conv2d(c, width, 3, padding=1)]
            layers += [nn.BatchNorm2d(width)] if batch_norm else []
            layers += [nn.ReLU(), nn.Upsample(size=size, mode="nearest")]
            c = width
        layers.append(nn.Conv2d(c, out_shape[0], 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
