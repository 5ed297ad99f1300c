"""A super-resolution net without a bottleneck (EDSR-like): features at the INPUT resolution, learned pixel-shuffle
upsampling, and a global residual on top of a fixed bicubic (or bilinear) interpolation of the input.

    x [C, h, w] -> head conv -> `blocks` residual blocks -> conv (+ the head's features) -> pixel shuffle up to
    [H, W] -> tail conv -> residual r [C, H, W];   image = interp(x) + r

The upsampling factor comes from the shapes (H / h, the same for W): 1 (no upsampling: a residual restoration net),
2, 4 (two x2 shuffles with `upsample: stepwise`, one x4 shuffle with `upsample: once`), 3... `upsample: subpixel`
(ESPCN) skips the full-resolution stage: the tail conv predicts the f x f sub-pixels of each output channel at the
input resolution and one shuffle arranges them (the cheapest: every conv runs at the input size). The tail conv
starts at zero, so an untrained net outputs exactly the interpolation: training starts from the baseline it must
beat.

`consistency: area` knows the degradation: area downsampling averages f x f blocks, so the clean image is one of
the images whose block means are the input. Projecting the output onto that set (adding the nearest-upsampled
difference between the input and the output's block means) is an orthogonal projection onto a set holding the
target, so it can only reduce the error. Use it only with
corruption.downsample.mode=area.

`self_ensemble: true` is EDSR+'s geometric self-ensemble: at evaluation (never in training) the output is the mean of
the net's outputs for the 8 flips and quarter turns of the input, each turned back (4 for non-square inputs: no
quarter turns). It costs 8x the evaluation and trains nothing; experiments/README shows what it adds.

`encode` returns the feature map with the input appended as its last C channels (the global residual needs it),
`decode` splits them again: `decode(encode(x))` is the full prediction, as the contract has it. The feature map is
no code (`has_code = False`): no embed / generate, no latent figures, no PCA baseline.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import ConfigError, check
from aelab.models.base import Autoencoder, Batch, LossTerms, reconstruction_loss
from aelab.models.layers import ResBlock
from aelab.types import NonNegativeInt, PositiveFloat, PositiveInt

EPS = 1e-4  # images are kept in [EPS, 1 - EPS] before the logit, so logits stay finite (|logit| <= 9.2)


def prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


class SRResNet(Autoencoder):
    """width: feature channels; blocks: residual blocks at the input resolution; res_scale: each block's residual
    weight (EDSR uses 0.1 for wide nets); upsample: stepwise (one shuffle of the features per prime factor: x4 = two
    x2, then a tail conv at the output size) | once (one x-factor shuffle, then the tail) | subpixel (the tail
    predicts sub-pixels at the input size); consistency: none | area (the output's f x f block means are set to the
    input's pixels: the exact constraint of area downsampling, corruption.downsample.mode=area); interpolation:
    bicubic | bilinear (the global residual's base); residual: where the net's output is added (see `decode`);
    self_ensemble: evaluate as the mean over flips and turns of the input (see the module docstring)."""

    has_code = False
    likelihood = False

    def __init__(self, *args, width: PositiveInt = 32, blocks: NonNegativeInt = 4, res_scale: PositiveFloat = 1.0,
                 upsample: Literal["stepwise", "once", "subpixel"] = "stepwise",
                 interpolation: Literal["bicubic", "bilinear"] = "bicubic",
                 residual: Literal["pixel", "logit"] = "pixel", consistency: Literal["none", "area"] = "none",
                 self_ensemble: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        (c_in, h, w), (c_out, hh, ww) = self.input_shape, self.output_shape
        check(c_in == c_out, f"sr_resnet maps C channels to C channels; got input {self.input_shape}, "
                             f"output {self.output_shape}")
        if hh % h or ww % w or hh // h != ww // w:
            raise ConfigError(f"sr_resnet needs one integer upsampling factor for height and width; got input "
                              f"{h}x{w}, output {hh}x{ww}")
        self.factor = hh // h
        self.interpolation, self.residual, self.consistency = interpolation, residual, consistency
        self.self_ensemble = bool(self_ensemble)
        self.head = nn.Conv2d(c_in, width, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(width, "none", res_scale) for _ in range(blocks)],
                                  nn.Conv2d(width, width, 3, padding=1))
        steps = prime_factors(self.factor) if upsample == "stepwise" else ([self.factor] if self.factor > 1 else [])
        up: list[nn.Module] = []
        for f in steps if upsample != "subpixel" else []:
            up += [nn.Conv2d(width, width * f * f, 3, padding=1), nn.PixelShuffle(f), nn.ReLU()]
        self.upsampler = nn.Sequential(*up)
        if upsample == "subpixel":
            self.tail = nn.Sequential(nn.Conv2d(width, c_out * self.factor ** 2, 3, padding=1),
                                      nn.PixelShuffle(self.factor))
        else:
            self.tail = nn.Sequential(nn.Conv2d(width, c_out, 3, padding=1))
        nn.init.zeros_(self.tail[0].weight)
        nn.init.zeros_(self.tail[0].bias)

    def interpolate_input(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed upsampling the net corrects: bicubic (or bilinear) to the output size, in [0, 1]."""
        if self.factor == 1:
            return x
        return F.interpolate(x, size=self.output_shape[1:], mode=self.interpolation, align_corners=False).clamp(0, 1)

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Features at the input resolution, with the input itself as the last C channels (for `decode`)."""
        feats = self.head(x)
        return torch.cat([feats + self.body(feats), x], dim=1)

    def image(self, z: torch.Tensor) -> torch.Tensor:
        """The output image in pixel space, unclamped, from `encode`'s output (see `decode`)."""
        c = self.output_shape[0]
        feats, x = z[:, :-c], z[:, -c:]
        r, base = self.tail(self.upsampler(feats)), self.interpolate_input(x)
        img = base + r if self.residual == "pixel" else torch.sigmoid(torch.logit(base.clamp(EPS, 1 - EPS)) + r)
        if self.consistency == "area" and self.factor > 1:
            # orthogonal projection onto the images whose f x f block means are the input: the clean target is
            # one of them, so the projection can only bring the prediction closer to it
            f = self.factor
            img = img + F.interpolate(x - F.avg_pool2d(img, f), scale_factor=f, mode="nearest")
        return img

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The output image in pixel space, unclamped: `image(encode(x))`, or with self_ensemble at evaluation the
        mean of that over the flips and turns of x, each turned back."""
        if not self.self_ensemble or self.training:
            return self.image(self.encode(x))
        turns = (0, 1, 2, 3) if x.shape[-1] == x.shape[-2] else (0, 2)
        outs = []
        for flip in (False, True):
            for k in turns:
                y = self.image(self.encode(torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))))
                y = torch.rot90(y, -k, (-2, -1))
                outs.append(y.flip(-1) if flip else y)
        return torch.stack(outs).mean(0)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [eps, 1 - eps] (sigmoid of `decode`'s logits, and the self-ensemble where it is on)."""
        return self.predict(x).clamp(EPS, 1 - EPS)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the output image = logit(clamp(image, eps, 1 - eps)), where

        residual="pixel" (default): image = interp + r;
        residual="logit": image = sigmoid(logit(clamp(interp, eps, 1 - eps)) + r);
        consistency="area" then projects the image onto those whose f x f block means equal the input.
        Why pixel is the default: PSNR is a pixel-space error, and what SR adds to an interpolation of a natural
        image (edges, texture) is a small, roughly linear correction in pixel space; in logit space the same
        correction is scaled by 1 / (p (1 - p)), and sigmoid flattens the l1 / mse gradient near black and white.
        On MNIST, though, most pixels are exactly 0 or 1 and the logit form gets there by saturating, so the MNIST
        preset uses it. With recon_loss=bce use residual=logit.
        """
        return torch.logit(self.image(z).clamp(EPS, 1 - EPS))

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        """l1 / mse: the loss of the unclamped image, the same as the configured loss wherever the image lies in
        [0, 1]. Outside it, it also sees the overshoot: a clamped loss gives such a pixel no gradient, and a
        straight-through clamp pushes a pixel whose target is 0 or 1 ever further out (its clamped value eps never
        reaches the target), which made training diverge. bce: the loss on `decode`'s logits."""
        img = self.predict(batch.input)
        if self.recon_kind == "bce":
            logits = torch.logit(img.clamp(EPS, 1 - EPS))
            recon = reconstruction_loss(logits, batch.target, "bce", self.reduction)
            return LossTerms(loss=recon, output=torch.sigmoid(logits), terms={"recon_loss": recon})
        err = img - batch.target
        per_pixel = err.square() if self.recon_kind == "mse" else err.abs()
        recon = per_pixel.mean() if self.reduction == "mean" else per_pixel.flatten(1).sum(1).mean()
        return LossTerms(loss=recon, output=img.clamp(0, 1), terms={"recon_loss": recon})

