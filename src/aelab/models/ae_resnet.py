"""A residual convolutional autoencoder with a dense code, and the pieces the other residual models share
(`ResBlock`, `ResNetEncoder`, `ResNetDecoder`, `configure_with_interval`).

Encoder: 3x3 stem conv at the input size, then per stage `blocks` residual blocks and a strided 3x3 conv down
(28 -> 14 -> 7, 64 -> 32 -> 16 -> 8: ceil, as 'same' padding gives) between stages; a linear layer gives the code.
Decoder: linear -> the last stage's feature map, residual blocks, then nearest upsampling + 3x3 conv per stage to
the sizes `layers.upsample_sizes` lists (so the output is exactly the target size, also when the input is smaller),
and a last 3x3 conv to the output logits.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from aelab.errors import check
from aelab.models.base import Autoencoder
from aelab.models.layers import upsample_sizes
from aelab.types import NonNegativeInt, PositiveInt

Norm = Literal["batch", "none"]
Interval = Literal["step", "epoch"]


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
            layers += [_norm(norm, c), nn.ReLU(), nn.Upsample(size=size, mode="nearest"),
                       nn.Conv2d(c, width, 3, padding=1)]
            layers += [ResBlock(width, norm) for _ in range(n)]
            c = width
        layers += [_norm(norm, c), nn.ReLU(), nn.Conv2d(c, out_shape[0], 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def configure_with_interval(model: nn.Module, optimizer, scheduler, interval: str):
    """Lightning's optimizer config with the scheduler stepped every `interval` ("step" for OneCycleLR / cosine over
    the run's total steps; "epoch" for per-epoch schedules). ReduceLROnPlateau always steps per epoch on val/loss."""
    opt = optimizer(params=model.parameters())
    if scheduler is None:
        return opt
    sched = scheduler(optimizer=opt)
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss"}}
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}


class ResNetAutoencoder(Autoencoder):
    """Residual conv encoder -> dense code of `latent_dim` numbers -> residual conv decoder (see the module
    docstring). `channels` are the stages' widths, finest first (one stride-2 step between consecutive stages),
    `blocks` the residual blocks of each stage (the decoder mirrors both), `norm` batch | none;
    `scheduler_interval`: how often a configured scheduler steps."""

    has_code = True
    likelihood = False

    def __init__(self, *args, channels: list[PositiveInt] = (32, 64, 128), blocks: list[NonNegativeInt] = (1, 1, 1),
                 latent_dim: PositiveInt = 32, norm: Norm = "batch", scheduler_interval: Interval = "step",
                 **kwargs):
        super().__init__(*args, **kwargs)
        channels, blocks = check_stages(channels, blocks)
        check(isinstance(latent_dim, int) and latent_dim >= 1,
              f"model.latent_dim must be an integer >= 1, got {latent_dim!r}")
        self.latent_dim, self.scheduler_interval = latent_dim, scheduler_interval
        conv = ResNetEncoder(self.input_shape[0], channels, blocks, norm)
        spatial = conv.out_shape(self.input_shape)
        self.encoder = nn.Sequential(conv, nn.Flatten(), nn.Linear(math.prod(spatial), latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, math.prod(spatial)), nn.Unflatten(1, spatial),
                                     ResNetDecoder(spatial, channels[::-1], blocks[::-1], self.output_shape, norm))

    def configure_optimizers(self, optimizer, scheduler=None):
        return configure_with_interval(self, optimizer, scheduler, self.scheduler_interval)
