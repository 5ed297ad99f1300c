import torch
import torch.nn.functional as F

from aelab.corruptions.base import Corruption
from aelab.errors import check


class Mask(Corruption):
    """Zero out square patches of side `patch_size`, each with probability `fraction` (1 = single pixels)."""

    def __init__(self, fraction: float = 0.25, patch_size: int = 4, fill: float = 0.0):
        check(0 <= fraction <= 1, f"corruption.mask.fraction must be in [0, 1], got {fraction!r}")
        check(isinstance(patch_size, int) and patch_size >= 1, f"corruption.mask.patch_size must be an integer >= 1, got {patch_size!r}")
        check(0 <= fill <= 1, f"corruption.mask.fill must be in [0, 1], got {fill!r}")
        self.fraction, self.patch_size, self.fill = float(fraction), patch_size, float(fill)

    def __call__(self, x, generator=None):
        b, _, h, w = x.shape
        p = self.patch_size
        grid = (b, 1, -(-h // p), -(-w // p))
        keep = torch.rand(grid, generator=generator, device=x.device) >= self.fraction
        keep = F.interpolate(keep.to(x.dtype), scale_factor=p, mode="nearest")[..., :h, :w]
        return x * keep + self.fill * (1 - keep)
