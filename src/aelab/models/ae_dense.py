import math

from torch import nn

from aelab.models.base import Autoencoder
from aelab.models.layers import mlp
from aelab.types import PositiveInt


class DenseAutoencoder(Autoencoder):
    """Fully connected autoencoder: flatten -> hidden widths -> latent_dim -> reversed widths -> image."""

    def __init__(self, *args, hidden: list[PositiveInt] = (256,), latent_dim: PositiveInt = 32, **kwargs):
        super().__init__(*args, **kwargs)
        hidden = list(hidden)
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(nn.Flatten(), mlp([math.prod(self.input_shape), *hidden, latent_dim]))
        self.decoder = nn.Sequential(mlp([latent_dim, *hidden[::-1], math.prod(self.output_shape)]),
                                     nn.Unflatten(1, self.output_shape))
