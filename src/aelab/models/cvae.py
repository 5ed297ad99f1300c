"""Conditional VAE (Sohn et al., 2015): q(z | x, y) and p(x | z, y) with the class y given as a one-hot vector.

The one-hot label is concatenated to the encoder's image features and to z before decoding, so a class can be
chosen at sampling time. KL, beta, warm-up and free bits come from `VariationalAutoencoder.elbo_terms`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import check
from aelab.models.base import VariationalAutoencoder
from aelab.models.layers import ConvDecoder, ConvEncoder, mlp
from aelab.types import PositiveInt


class ConditionalVAE(VariationalAutoencoder):
    """arch=dense: flattened pixels + one-hot -> `hidden` -> (z_mean, z_log_var); [z, one-hot] -> reversed `hidden`
    -> image. arch=conv: conv stages (`channels`) give the image features; the decoder ends in the mirrored conv
    stages. Every method that encodes or decodes takes the labels (int64 [B])."""

    conditional = True
    likelihood = True  # the VAE's estimator with each image's own label: -log p(x | y)

    def __init__(self, *args, arch: Literal["dense", "conv"] = "dense", hidden: list[PositiveInt] = (512,),
                 channels: list[PositiveInt] = (32, 64),
                 batch_norm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        # an image_folder without class subfolders reports a single class: nothing to condition on
        check(self.num_classes is not None and int(self.num_classes) >= 2,
              f"model=cvae needs class labels (num_classes >= 2), but the data has num_classes={self.num_classes!r}; "
              "use a labelled dataset (mnist, fashion_mnist, flowers, an image_folder with class subfolders)")
        hidden, channels = list(hidden), list(channels)
        self.num_classes, self.arch = int(self.num_classes), arch
        k, d = self.num_classes, self.latent_dim
        if arch == "dense":
            self.features = nn.Flatten()
            self.encoder = mlp([math.prod(self.input_shape) + k, *hidden, 2 * d])
            self.decoder = nn.Sequential(mlp([d + k, *hidden[::-1], math.prod(self.output_shape)]),
                                         nn.Unflatten(1, self.output_shape))
        else:
            check(len(channels) >= 1, f"model.channels must list at least one stage, got {channels}")
            conv = ConvEncoder(self.input_shape[0], channels, batch_norm)
            spatial = conv.out_shape(self.input_shape)
            self.features = nn.Sequential(conv, nn.Flatten())
            self.encoder = mlp([math.prod(spatial) + k, *hidden, 2 * d])
            self.decoder = nn.Sequential(mlp([d + k, *hidden[::-1], math.prod(spatial)], final_activation=True),
                                         nn.Unflatten(1, spatial),
                                         ConvDecoder(spatial, channels[::-1], self.output_shape, batch_norm))

    def one_hot(self, labels: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if labels is None:
            raise ValueError("ConditionalVAE needs the class labels (int64 [B]) to encode or decode")
        return F.one_hot(labels.to(like.device).long(), self.num_classes).to(like.dtype)

    def posterior(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        mean, log_var = self.encoder(torch.cat([h, self.one_hot(labels, h)], 1)).chunk(2, dim=1)
        return mean, log_var

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(torch.cat([z, self.one_hot(labels, z)], 1))

    def sample(self, n: int, generator: torch.Generator | None = None, labels=None) -> torch.Tensor:
        """Images decoded from z ~ N(0, I) for the given classes; labels=None cycles 0, 1, ..., num_classes-1."""
        labels = torch.arange(n) % self.num_classes if labels is None else torch.as_tensor(labels).long()
        check(labels.shape == (n,), f"sample: labels must have shape ({n},), got {tuple(labels.shape)}")
        check(bool(((labels >= 0) & (labels < self.num_classes)).all()),
              f"sample: labels must lie in [0, {self.num_classes}), got {labels.tolist()}")
        return super().sample(n, generator, labels.to(next(self.parameters()).device))
