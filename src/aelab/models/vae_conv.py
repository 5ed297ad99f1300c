from aelab.models.base import VariationalAutoencoder
from aelab.models.layers import conv_coder
from aelab.types import PositiveInt


class ConvVAE(VariationalAutoencoder):
    """The lesson's assignment: the conv autoencoder turned into a VAE (dense heads for z_mean / z_log_var)."""

    likelihood = True  # one Gaussian latent layer, N(0, I) prior: the VAE's estimator holds

    def __init__(self, *args, channels: list[PositiveInt] = (32, 64), hidden: PositiveInt = 128,
                 batch_norm: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder, self.decoder = conv_coder(self.input_shape, self.output_shape, list(channels), hidden,
                                                2 * self.latent_dim, self.latent_dim, batch_norm)
