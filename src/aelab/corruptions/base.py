"""Corruptions map a clean batch (float [B, C, H, W] in [0, 1]) to the model's input; the target stays clean.

They run on whole batches on the model's device. Randomness comes from an explicit `generator` so training draws
fresh noise every batch while validation/test reuse a fixed stream (comparable across epochs and runs).
"""

from __future__ import annotations

import torch

Shape = tuple[int, int, int]


class Corruption:
    """Base class. Subclasses validate their parameters in __init__ and may change the image shape."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def output_shape(self, shape: Shape) -> Shape:
        """Shape of the corrupted image for a clean image of `shape`; raises ConfigError if it cannot apply."""
        return shape

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Identity(Corruption):
    """corruption=none: the plain autoencoder learns clean -> clean."""

    def __call__(self, x, generator=None):
        return x


class Compose(Corruption):
    """Apply several corruptions in order, e.g. noise then downsampling."""

    def __init__(self, corruptions: list[Corruption]):
        self.corruptions = list(corruptions)

    def __call__(self, x, generator=None):
        for c in self.corruptions:
            x = c(x, generator)
        return x

    def output_shape(self, shape):
        for c in self.corruptions:
            shape = c.output_shape(shape)
        return shape


def build(corruptions: list[Corruption] | dict | None) -> Corruption:
    """One Corruption from what Hydra instantiated for the `corruption` group (a name -> object mapping)."""
    if isinstance(corruptions, Corruption):
        return corruptions
    items = list((corruptions or {}).values()) if isinstance(corruptions, dict) or hasattr(corruptions, "values") \
        else list(corruptions or [])
    items = [c for c in items if not isinstance(c, Identity)]
    if not items:
        return Identity()
    return items[0] if len(items) == 1 else Compose(items)
