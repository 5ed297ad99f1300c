import math

from torch import nn

from aelab.errors import check
from aelab.models.base import Autoencoder
from aelab.models.layers import ConvDecoder, ConvEncoder
from aelab.types import PositiveInt


class ConvAutoencoder(Autoencoder):
    """Conv encoder (conv + pool per stage) and mirrored decoder (conv + upsample per stage).

    latent_dim=None keeps the spatial code (the lesson's 8x4x4 on MNIST); an integer adds a dense bottleneck of that
    size (latent_dim=2 gives the lesson's 2-d latent plotted by class).
    """

    def __init__(self, *args, channels: list[PositiveInt] = (16, 8, 8), latent_dim: PositiveInt | None = None,
                 batch_norm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        channels = list(channels)
        check(len(channels) >= 1 and all(c >= 1 for c in channels), f"model.channels must be positive, got {channels}")
        self.latent_dim = latent_dim
        conv = ConvEncoder(self.input_shape[0], channels, batch_norm)
        spatial = conv.out_shape(self.input_shape)
        decoder = ConvDecoder(spatial, channels[::-1], self.output_shape, batch_norm)
        if latent_dim is None:
            self.encoder, self.decoder = conv, decoder
        else:
            self.encoder = nn.Sequential(conv, nn.Flatten(), nn.Linear(math.prod(spatial), latent_dim))
            self.decoder = nn.Sequential(nn.Linear(latent_dim, math.prod(spatial)), nn.ReLU(),
                                         nn.Unflatten(1, spatial), decoder)
