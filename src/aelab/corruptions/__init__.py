"""Corruptions: one file per kind, all sharing `Corruption` (batch in, batch out, explicit generator)."""

from aelab.corruptions.base import Compose, Corruption, Identity, build
from aelab.corruptions.downsample import Downsample
from aelab.corruptions.gaussian_noise import GaussianNoise
from aelab.corruptions.mask import Mask
from aelab.corruptions.salt_pepper import SaltPepper

__all__ = ["Compose", "Corruption", "Downsample", "GaussianNoise", "Identity", "Mask", "SaltPepper", "build"]
