"""A model of your own: subclass aelab.models.Autoencoder, build `encoder` and `decoder`, and aelab trains it.

The base class keeps the contract (aelab.models.base): it takes the shapes from the data, and gives the loss,
reconstructions, the flat code (embed / generate / interpolate, so the latent figures and baselines apply) and the
optimizer. The decoder returns logits at `output_shape`.
"""

import math

from torch import nn

from aelab.models import Autoencoder


class TinyAutoencoder(Autoencoder):
    """Flatten -> latent_dim -> image: one hidden layer each way."""

    def __init__(self, *args, latent_dim: int = 16, hidden: int = 128, **kwargs):
        super().__init__(*args, **kwargs)  # input_shape, output_shape, num_classes, recon_loss, reduction
        n_in, n_out = math.prod(self.input_shape), math.prod(self.output_shape)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_out),
                                     nn.Unflatten(1, self.output_shape))
