import math

from torch import nn

from aelab.models.base import VariationalAutoencoder
from aelab.models.layers import mlp
from aelab.types import PositiveInt


class DenseVAE(VariationalAutoencoder):
    """The lesson's VAE: 784 -> 512 -> (z_mean, z_log_var) of latent_dim, decoder latent_dim -> 512 -> 784."""

    likelihood = True  # one Gaussian latent layer, N(0, I) prior: the VAE's estimator holds

    def __init__(self, *args, hidden: list[PositiveInt] = (512,), **kwargs):
        super().__init__(*args, **kwargs)
        hidden = list(hidden)
        self.encoder = nn.Sequential(nn.Flatten(), mlp([math.prod(self.input_shape), *hidden, 2 * self.latent_dim]))
        self.decoder = nn.Sequential(mlp([self.latent_dim, *hidden[::-1], math.prod(self.output_shape)]),
                                     nn.Unflatten(1, self.output_shape))
