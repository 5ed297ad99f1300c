import torch

from aelab.corruptions.base import Corruption
from aelab.errors import check


class GaussianNoise(Corruption):
    """x + N(mean, std^2), optionally clipped to [0, 1]. The lesson used mean 0.5, std 0.3-0.5, clipped."""

    def __init__(self, mean: float = 0.5, std: float = 0.5, clip: bool = True):
        check(isinstance(std, (int, float)) and std >= 0, f"corruption.gaussian_noise.std must be >= 0, got {std!r}")
        check(isinstance(mean, (int, float)), f"corruption.gaussian_noise.mean must be a number, got {mean!r}")
        self.mean, self.std, self.clip = float(mean), float(std), bool(clip)

    def __call__(self, x, generator=None):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        y = x + self.mean + self.std * noise
        return y.clamp(0, 1) if self.clip else y
