"""Models: one file per model, all keeping the contract of `aelab.models.base` (capabilities, public methods)."""

from aelab.models.aae import AdversarialAutoencoder
from aelab.models.ae_conv import ConvAutoencoder
from aelab.models.ae_dense import DenseAutoencoder
from aelab.models.base import (Autoencoder, Batch, Capabilities, LossTerms, TwoOptimizerTraining,
                               VariationalAutoencoder, reconstruction_loss)
from aelab.models.cvae import ConditionalVAE
from aelab.models.vae_conv import ConvVAE
from aelab.models.vae_dense import DenseVAE

__all__ = ["AdversarialAutoencoder", "Autoencoder", "Batch", "Capabilities", "ConditionalVAE", "ConvAutoencoder", "ConvVAE",
           "DenseAutoencoder", "DenseVAE", "LossTerms", "TwoOptimizerTraining", "VariationalAutoencoder", "reconstruction_loss"]
