"""A residual convolutional autoencoder with a dense code: the residual stacks of aelab.models.layers (ResNetEncoder,
ResNetDecoder) around a linear layer that gives the code and one that maps it back to the last stage's feature map.
"""

from __future__ import annotations

import math

from torch import nn

from aelab.models.base import Autoencoder
from aelab.models.layers import Norm, ResNetDecoder, ResNetEncoder, check_stages
from aelab.types import NonNegativeInt, PositiveInt


class ResNetAutoencoder(Autoencoder):
    """Residual conv encoder -> dense code of `latent_dim` numbers -> residual conv decoder (see the module
    docstring). `channels` are the stages' widths, finest first (one stride-2 step between consecutive stages),
    `blocks` the residual blocks of each stage (the decoder mirrors both), `norm` batch | none."""

    has_code = True
    likelihood = False

    def __init__(self, *args, channels: list[PositiveInt] = (32, 64, 128), blocks: list[NonNegativeInt] = (1, 1, 1),
                 latent_dim: PositiveInt = 32, norm: Norm = "batch", **kwargs):
        super().__init__(*args, **kwargs)
        channels, blocks = check_stages(channels, blocks)
        self.latent_dim = latent_dim
        conv = ResNetEncoder(self.input_shape[0], channels, blocks, norm)
        spatial = conv.out_shape(self.input_shape)
        self.encoder = nn.Sequential(conv, nn.Flatten(), nn.Linear(math.prod(spatial), latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, math.prod(spatial)), nn.Unflatten(1, spatial),
                                     ResNetDecoder(spatial, channels[::-1], blocks[::-1], self.output_shape, norm))
