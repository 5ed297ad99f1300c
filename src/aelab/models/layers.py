"""Building blocks whose shapes follow the data: conv stacks that accept any input size and produce any output size,
and the residual stacks the ResNet models share.

ResNetEncoder: 3x3 stem conv at the input size, then per stage `blocks` residual blocks and a strided 3x3 conv down
(28 -> 14 -> 7, 64 -> 32 -> 16 -> 8: ceil, as 'same' padding gives) between stages.
ResNetDecoder: residual blocks at the start size, then nearest upsampling + 3x3 conv per stage to the sizes
`upsample_sizes` lists (so the output is exactly the target size, also when the input is smaller), and a last 3x3
conv to the output logits.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from aelab.errors import check

Norm = Literal["batch", "none"]


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


class NearestUpsample(nn.Module):
    """nn.Upsample(size=size, mode="nearest") with the same outputs, bit for bit. Without gradients on the CPU
    (evaluation, the importance-sampled NLL that decodes a thousand samples per image, sampling), a whole-factor nearest
    upsampling is a broadcast and a reshape, which runs several times faster than torch's kernel. With gradients it
    is torch's kernel: a copy of its backward in Python made training steps slower (experiments/benchmarks/commits.py
    98d0171 1d1017c). Other devices, memory formats and fractional factors also go to F.interpolate."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(int(v) for v in size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), (oh, ow) = x.shape[-2:], self.size
        if (not (torch.is_grad_enabled() and x.requires_grad) and x.device.type == "cpu" and x.dim() == 4
                and x.is_contiguous() and oh % h == 0 and ow % w == 0):
            n, c = x.shape[:2]
            return x[:, :, :, None, :, None].expand(n, c, h, oh // h, w, ow // w).reshape(n, c, oh, ow)
        return nn.functional.interpolate(x, size=self.size, mode="nearest")

    def extra_repr(self) -> str:
        return f"size={self.size}"


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
            layers += [nn.ReLU(), NearestUpsample(size)]
            c = width
        layers.append(nn.Conv2d(c, out_shape[0], 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _norm(kind: str, width: int) -> nn.Module:
    return nn.BatchNorm2d(width) if kind == "batch" else nn.Identity()


class ResBlock(nn.Module):
    """Pre-activation residual block x + conv(act(norm(conv(act(norm(x)))))) at constant width. The last conv starts
    at zero, so every block starts as the identity (deep stacks train at high learning rates from the first step)."""

    def __init__(self, width: int, norm: str = "none", res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(_norm(norm, width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                                  _norm(norm, width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


def check_stages(channels, blocks) -> tuple[list[int], list[int]]:
    """(channels, blocks) as lists of one entry per stage, finest first."""
    channels, blocks = list(channels), list(blocks)
    check(len(channels) >= 1 and all(isinstance(c, int) and c >= 1 for c in channels),
          f"model.channels must be a non-empty list of integers >= 1, got {channels}")
    check(len(blocks) == len(channels) and all(isinstance(b, int) and b >= 0 for b in blocks),
          f"model.blocks must list one integer >= 0 per stage of model.channels={channels}, got {blocks}")
    return channels, blocks


class ResNetEncoder(nn.Module):
    """Stem conv, then blocks[i] residual blocks at stage i with a stride-2 conv between stages; ends with norm+ReLU
    (the feature map a linear head reads)."""

    def __init__(self, in_channels: int, channels: list[int], blocks: list[int], norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        for i, width in enumerate(channels):
            layers += [ResBlock(width, norm) for _ in range(blocks[i])]
            if i + 1 < len(channels):
                layers += [_norm(norm, width), nn.ReLU(), nn.Conv2d(width, channels[i + 1], 3, stride=2, padding=1)]
        layers += [_norm(norm, channels[-1]), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        was = self.training
        self.eval()
        with torch.no_grad():
            shape = tuple(self(torch.zeros(1, *in_shape)).shape[1:])
        self.train(was)
        return shape


class ResNetDecoder(nn.Module):
    """From a feature map `in_shape` to logits at `out_shape`: residual blocks at the start size, then per upsampling
    stage nearest upsampling to the next size of `upsample_sizes`, a 3x3 conv to the stage's width and residual
    blocks; norm + ReLU + 3x3 conv to the output channels at the end. `channels` lists the widths from the coarsest
    stage to the finest (the encoder's, reversed), `blocks` the residual blocks of each; extra stages (a smaller
    input than output) repeat the last entry."""

    def __init__(self, in_shape: tuple[int, int, int], channels: list[int], blocks: list[int],
                 out_shape: tuple[int, int, int], norm: str = "batch"):
        super().__init__()
        c, h, w = in_shape
        hs, ws = upsample_sizes(h, out_shape[1]), upsample_sizes(w, out_shape[2])
        if hs == [h] and h == out_shape[1]:
            hs = []
        if ws == [w] and w == out_shape[2]:
            ws = []
        stages = max(len(hs), len(ws))
        hs = [h] * (stages - len(hs)) + hs if hs else [h] * stages
        ws = [w] * (stages - len(ws)) + ws if ws else [w] * stages
        widths = (list(channels[1:]) + [channels[-1]] * stages)[:stages]
        stage_blocks = (list(blocks[1:]) + [blocks[-1]] * stages)[:stages]
        layers: list[nn.Module] = []
        if c != channels[0]:
            layers.append(nn.Conv2d(c, channels[0], 3, padding=1))
            c = channels[0]
        layers += [ResBlock(c, norm) for _ in range(blocks[0])]
        for width, n, size in zip(widths, stage_blocks, zip(hs, ws)):
            layers += [_norm(norm, c), nn.ReLU(), NearestUpsample(size),
                       nn.Conv2d(c, width, 3, padding=1)]
            layers += [ResBlock(width, norm) for _ in range(n)]
            c = width
        layers += [_norm(norm, c), nn.ReLU(), nn.Conv2d(c, out_shape[0], 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def conv_coder(input_shape: tuple[int, int, int], output_shape: tuple[int, int, int], channels: list[int],
               hidden: int, code_out: int, code_in: int, batch_norm: bool = False) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) of the lesson's conv VAE shape: conv stages, a dense layer of `hidden`, `code_out` numbers
    (2 x latent for a Gaussian code); and back from `code_in` numbers through the mirrored stages to logits at
    `output_shape`."""
    conv = ConvEncoder(input_shape[0], channels, batch_norm)
    spatial = conv.out_shape(input_shape)
    encoder = nn.Sequential(conv, nn.Flatten(), nn.Linear(math.prod(spatial), hidden), nn.ReLU(),
                            nn.Linear(hidden, code_out))
    decoder = nn.Sequential(nn.Linear(code_in, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(spatial)), nn.ReLU(),
                            nn.Unflatten(1, spatial), ConvDecoder(spatial, channels[::-1], output_shape, batch_norm))
    return encoder, decoder
