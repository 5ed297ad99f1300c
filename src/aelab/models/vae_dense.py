import math

from torch import nn

from aelab.models.base import VariationalAutoencoder
from aelab.models.layers import mlp


class DenseVAE(VariationalAutoencoder):
    """The lesson's VAE: 784 -> 512 -> (z_mean, z_log_var) of latent_dim, decoder latent_dim -> 512 -> 784."""

    def __init__(self, *args, hidden: list[int] = (512,), **kwargs):
        super().__init__(*args, **kwargs)
        hidden = list(hidden)
        self.encoder = nn.Sequential(nn.Flatten(), mlp([math.prod(self.input_shape), *hidden, 2 * self.latent_dim]))
        self.decoder = nn.Sequential(mlp([self.latent_dim, *hidden[::-1], math.prod(self.output_shape)]),
                                     nn.Unflatten(1, self.output_shape))
