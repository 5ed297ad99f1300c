"""Every data x corruption x model combination composes from the real configs and builds with the data's shape."""

import itertools

import pytest
import torch
from hydra.utils import instantiate

from aelab.build import build_corruption
from aelab.config import CONFIG_DIR
from aelab.errors import ConfigError
from aelab.models import Batch
from conftest import compose_cfg


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


# shapes as each dataset delivers them (flowers and folders at the default image_size 64)
SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "binarized_mnist": (1, 28, 28),
          "flowers": (3, 64, 64), "image_folder": (3, 64, 64), "dsprites": (1, 64, 64)}
# model=vqvae_prior builds from a trained first stage (tests/test_vqvae.py builds it so)
MODELS = [m for m in options("model") if m != "vqvae_prior"]
# every model under every corruption on MNIST; every dataset under every corruption with the lesson's two models;
# every model on the datasets of other shapes (64x64 RGB, 64x64 grey), uncorrupted
COMBOS = sorted(set(itertools.product(["mnist"], options("corruption"), MODELS))
                | set(itertools.product(options("data"), options("corruption"), ["ae_conv", "vae_conv"]))
                | set(itertools.product(["flowers", "dsprites"], ["none"], MODELS)))


def test_groups_hold_what_the_readme_promises():
    assert {"mnist", "fashion_mnist", "flowers", "image_folder"} <= set(options("data"))
    assert {"none", "gaussian_noise", "salt_pepper", "mask", "downsample"} <= set(options("corruption"))
    assert {"ae_dense", "ae_conv", "vae_dense", "vae_conv"} <= set(options("model"))


REFUSED = {("mae", "downsample"): "use a corruption that keeps the image size"}


@pytest.mark.parametrize("data,corruption,model", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_combination_composes_and_builds(data, corruption, model, tmp_path):
    overrides = [f"data={data}", f"corruption={corruption}", f"model={model}"]
    if data == "image_folder":
        overrides.append(f"data.data_dir={tmp_path}")  # mandatory value (???) in the config
    cfg = compose_cfg(overrides, output_dir=tmp_path)
    assert cfg.data._target_.startswith("aelab.data.")
    corrupt = build_corruption(cfg.corruption)
    clean = SHAPES[data]
    in_shape = corrupt.output_shape(clean)
    if (model, corruption) in REFUSED:  # combinations a model cannot mean: one clear line, not a crash
        with pytest.raises(ConfigError, match=REFUSED[model, corruption]):
            from aelab.build import make
            make(cfg.model, "model", input_shape=in_shape, output_shape=clean, num_classes=10)
        return
    net = instantiate(cfg.model, input_shape=in_shape, output_shape=clean, num_classes=10)
    x = corrupt(torch.rand(2, *clean), torch.Generator().manual_seed(0))
    assert tuple(x.shape[1:]) == in_shape
    # reconstruct reads the labels too (conditional models need them)
    assert net.reconstruct(Batch(x, x, torch.tensor([0, 1]))).shape == (2, *clean)
    opt = instantiate(cfg.optimizer)(params=net.parameters())
    assert isinstance(opt, torch.optim.Optimizer)


def test_downsample_factor_must_divide_image_size(tmp_path):
    cfg = compose_cfg(["corruption=downsample", "corruption.downsample.factor=3"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"factor=3 does not divide the image size 28x28"):
        build_corruption(cfg.corruption).output_shape((1, 28, 28))


def test_corruptions_compose_in_order(tmp_path):
    cfg = compose_cfg(["corruption=[gaussian_noise,downsample]"], output_dir=tmp_path)
    corrupt = build_corruption(cfg.corruption)
    assert [type(c).__name__ for c in corrupt.corruptions] == ["GaussianNoise", "Downsample"]
    assert corrupt.output_shape((1, 28, 28)) == (1, 14, 14)
