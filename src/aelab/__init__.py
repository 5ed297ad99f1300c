"""aelab: configuration-driven autoencoder experiments (Hydra + Lightning)."""

__version__ = "0.1.0"
