import torch.nn.functional as F

from aelab.corruptions.base import Corruption, Shape
from aelab.errors import ConfigError, check

MODES = ("area", "bilinear", "bicubic")


class Downsample(Corruption):
    """Shrink by an integer `factor`: the model then learns super-resolution (e.g. 14 -> 28 with factor 2).

    area = average pooling; bilinear/bicubic are antialiased (as PIL does) and clamped to [0, 1].
    """

    def __init__(self, factor: int = 2, mode: str = "area"):
        check(isinstance(factor, int) and factor >= 1, f"corruption.downsample.factor must be an integer >= 1, got {factor!r}")
        check(mode in MODES, f"corruption.downsample.mode={mode!r} is not one of {list(MODES)}")
        self.factor, self.mode = factor, mode

    def output_shape(self, shape: Shape) -> Shape:
        c, h, w = shape
        if h % self.factor or w % self.factor:
            raise ConfigError(f"corruption.downsample.factor={self.factor} does not divide the image size {h}x{w}; "
                              f"use a factor that divides both")
        return c, h // self.factor, w // self.factor

    def __call__(self, x, generator=None):
        if self.factor == 1:
            return x
        self.output_shape(tuple(x.shape[1:]))
        if self.mode == "area":
            return F.avg_pool2d(x, self.factor)
        size = (x.shape[-2] // self.factor, x.shape[-1] // self.factor)
        return F.interpolate(x, size=size, mode=self.mode, align_corners=False, antialias=True).clamp(0, 1)
