import math

from torch import nn

from aelab.models.base import VariationalAutoencoder
from aelab.models.layers import ConvDecoder, ConvEncoder
from aelab.types import PositiveInt


class ConvVAE(VariationalAutoencoder):
    """The lesson's assignment: the conv autoencoder turned into a VAE (dense heads for z_mean / z_log_var)."""

    likelihood = True  # one Gaussian latent layer, N(0, I) prior: the VAE's estimator holds

    def __init__(self, *args, channels: list[PositiveInt] = (32, 64), hidden: PositiveInt = 128,
                 batch_norm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        channels = list(channels)
        conv = ConvEncoder(self.input_shape[0], channels, batch_norm)
        spatial = conv.out_shape(self.input_shape)
        self.encoder = nn.Sequential(conv, nn.Flatten(), nn.Linear(math.prod(spatial), hidden), nn.ReLU(),
                                     nn.Linear(hidden, 2 * self.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(self.latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, math.prod(spatial)), nn.ReLU(), nn.Unflatten(1, spatial),
                                     ConvDecoder(spatial, channels[::-1], self.output_shape, batch_norm))
