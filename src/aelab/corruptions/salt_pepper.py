import torch

from aelab.corruptions.base import Corruption
from aelab.errors import check


class SaltPepper(Corruption):
    """Set a fraction `amount` of pixels to 1 (salt) or 0 (pepper); `salt_ratio` of them are salt."""

    def __init__(self, amount: float = 0.1, salt_ratio: float = 0.5):
        check(0 <= amount <= 1, f"corruption.salt_pepper.amount must be in [0, 1], got {amount!r}")
        check(0 <= salt_ratio <= 1, f"corruption.salt_pepper.salt_ratio must be in [0, 1], got {salt_ratio!r}")
        self.amount, self.salt_ratio = float(amount), float(salt_ratio)

    def __call__(self, x, generator=None):
        b, _, h, w = x.shape  # the same pixels across channels: a dead pixel, not a coloured speck
        u = torch.rand((b, 1, h, w), generator=generator, device=x.device, dtype=x.dtype)
        hit = u < self.amount
        salt = u < self.amount * self.salt_ratio
        return torch.where(hit, salt.to(x.dtype), x)
