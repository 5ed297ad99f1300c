"""Models: one file per model, all sharing `Autoencoder` (encode / decode / forward / loss -> LossTerms)."""

from aelab.models.aae import AdversarialAutoencoder
from aelab.models.ae_conv import ConvAutoencoder
from aelab.models.ae_dense import DenseAutoencoder
from aelab.models.base import Autoencoder, Batch, LossTerms, VariationalAutoencoder, reconstruction_loss
from aelab.models.cvae import ConditionalVAE
from aelab.models.vae_conv import ConvVAE
from aelab.models.vae_dense import DenseVAE

__all__ = ["AdversarialAutoencoder", "Autoencoder", "Batch", "ConditionalVAE", "ConvAutoencoder", "ConvVAE",
           "DenseAutoencoder", "DenseVAE", "LossTerms", "VariationalAutoencoder", "reconstruction_loss"]
