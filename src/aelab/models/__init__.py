"""Models: one file per model, all keeping the written contract of `aelab.models.contract` (terms, capabilities)
through the base classes of `aelab.models.base`."""

from aelab.models.aae import AdversarialAutoencoder
from aelab.models.ae_conv import ConvAutoencoder
from aelab.models.ae_dense import DenseAutoencoder
from aelab.models.base import Autoencoder, TwoOptimizerTraining, VariationalAutoencoder, reconstruction_loss
from aelab.models.contract import Batch, Capabilities, Embedding, LossTerms, Term
from aelab.models.cvae import ConditionalVAE
from aelab.models.latent import KLRegulariser, gaussian_kl, reparameterize, standard_normal
from aelab.models.mae import MaskedAutoencoder
from aelab.models.vae_conv import ConvVAE
from aelab.models.vae_dense import DenseVAE
from aelab.models.vqvae import VQVAE
from aelab.models.vqvae_prior import VQVAEPrior

__all__ = ["AdversarialAutoencoder", "Autoencoder", "Batch", "Capabilities", "ConditionalVAE", "ConvAutoencoder",
           "ConvVAE", "DenseAutoencoder", "DenseVAE", "Embedding", "KLRegulariser", "LossTerms", "MaskedAutoencoder",
           "Term", "TwoOptimizerTraining", "VQVAE", "VQVAEPrior", "VariationalAutoencoder", "gaussian_kl",
           "reconstruction_loss", "reparameterize", "standard_normal"]
