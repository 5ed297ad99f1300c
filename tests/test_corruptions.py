import pytest
import torch
import torch.nn.functional as F

from aelab.corruptions import Compose, Downsample, GaussianNoise, Identity, Mask, SaltPepper, build
from aelab.errors import ConfigError


def batch(seed=0, shape=(4, 1, 28, 28)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_statistics_and_clip():
    x = torch.full((64, 1, 28, 28), 0.25)
    y = GaussianNoise(mean=0.0, std=0.1, clip=False)(x, gen())
    assert abs((y - x).mean().item()) < 0.01 and abs((y - x).std().item() - 0.1) < 0.01
    z = GaussianNoise(mean=0.5, std=0.5, clip=True)(x, gen())
    assert z.min() >= 0 and z.max() <= 1 and (z == 1).any()


def test_same_generator_seed_gives_same_noise_and_fresh_seed_differs():
    x = batch()
    noise = GaussianNoise()
    assert torch.equal(noise(x, gen(3)), noise(x, gen(3)))
    assert not torch.equal(noise(x, gen(3)), noise(x, gen(4)))


def test_salt_pepper_hits_the_requested_fraction():
    x = torch.full((32, 3, 28, 28), 0.5)
    y = SaltPepper(amount=0.2, salt_ratio=0.5)(x, gen())
    hit = (y != 0.5).all(1).float().mean().item()  # channels are hit together
    assert abs(hit - 0.2) < 0.02
    assert abs((y == 1).all(1).float().mean().item() - 0.1) < 0.02


def test_mask_blanks_patches():
    x = torch.ones(16, 1, 28, 28)
    y = Mask(fraction=0.5, patch_size=4)(x, gen())
    assert abs((y == 0).float().mean().item() - 0.5) < 0.06
    blocks = y[:, :, :28, :28].reshape(16, 1, 7, 4, 7, 4)
    assert torch.all(blocks.amax((3, 5)) == blocks.amin((3, 5)))  # whole 4x4 patches, never partial


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic"])
@pytest.mark.parametrize("factor", [2, 4])
def test_downsample_shapes_and_range(mode, factor):
    x = batch()
    y = Downsample(factor=factor, mode=mode)(x)
    assert y.shape == (4, 1, 28 // factor, 28 // factor)
    assert y.min() >= 0 and y.max() <= 1


def test_area_downsampling_is_average_pooling():
    x = batch()
    assert torch.allclose(Downsample(2, "area")(x), F.avg_pool2d(x, 2))


@pytest.mark.parametrize("make,message", [
    (lambda: GaussianNoise(std=-0.1), r"gaussian_noise.std must be >= 0, got -0.1"),
    (lambda: SaltPepper(amount=1.5), r"salt_pepper.amount must be in \[0, 1\], got 1.5"),
    (lambda: Mask(patch_size=0), r"mask.patch_size must be an integer >= 1, got 0"),
    (lambda: Downsample(factor=0), r"downsample.factor must be an integer >= 1, got 0"),
    (lambda: Downsample(mode="nearest"), r"mode='nearest' is not one of \['area', 'bilinear', 'bicubic'\]"),
])
def test_bad_parameters_are_named(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_build_from_config_mapping():
    assert isinstance(build({"none": Identity()}), Identity)
    noise = GaussianNoise()
    assert build({"gaussian_noise": noise}) is noise
    both = build({"gaussian_noise": noise, "downsample": Downsample(2)})
    assert isinstance(both, Compose) and both.output_shape((1, 28, 28)) == (1, 14, 14)
