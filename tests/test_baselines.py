"""Baselines: pure functions on tiny hand-checkable tensors, then the callback's numbers recomputed from real data."""

import json
import math

import pytest
import torch
from hydra.utils import instantiate

from aelab import baselines
from aelab.callbacks import Baselines
from aelab.data import to_float
from aelab.errors import ConfigError
from conftest import compose_cfg


def test_psnr_of_a_known_mse_per_image():
    target = torch.full((2, 1, 4, 4), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # mse 0.01 -> 20 dB
    pred[1] += math.sqrt(0.001)  # mse 0.001 -> 30 dB
    assert torch.allclose(baselines.psnr(pred, target), torch.tensor([20.0, 30.0]), atol=1e-4)


def test_psnr_clamps_to_the_data_range_and_caps_perfect_images():
    target = torch.zeros(1, 1, 2, 2)
    assert baselines.psnr(torch.full_like(target, 3.0), target).item() == pytest.approx(0.0)  # clamped to 1: mse 1
    assert baselines.psnr(target, target).item() == pytest.approx(baselines.PSNR_CAP_DB)


def test_identity_upsamples_by_pixel_replication():
    x = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]])
    up = baselines.identity(x, (4, 4))
    assert torch.equal(up[0, 0], torch.tensor([[0.0, 0.0, 0.25, 0.25], [0.0, 0.0, 0.25, 0.25],
                                               [0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]]))
    assert baselines.identity(x, (2, 2)) is x  # already the target size: untouched


def test_bicubic_keeps_constant_images_and_stays_in_range():
    assert torch.allclose(baselines.bicubic(torch.full((1, 3, 5, 5), 0.3), (10, 10)), torch.full((1, 3, 10, 10), 0.3))
    checker = (torch.arange(16).view(4, 4) % 2).float()[None, None]  # overshoots without the clamp
    up = baselines.bicubic(checker, (8, 8))
    assert up.shape == (1, 1, 8, 8) and up.min() >= 0 and up.max() <= 1


def test_mean_image_of_uint8_and_float_stacks():
    images = torch.tensor([0, 255, 255, 0], dtype=torch.uint8).view(2, 1, 1, 2)
    assert torch.allclose(baselines.mean_image(images, chunk=1), torch.tensor([[[0.5, 0.5]]]))
    floats = torch.tensor([[[[0.2]]], [[[0.4]]], [[[0.9]]]])
    assert baselines.mean_image(floats, chunk=2).item() == pytest.approx(0.5)


def test_pca_with_full_rank_reconstructs_anything_exactly():
    gen = torch.Generator().manual_seed(0)
    train = torch.rand(50, 1, 2, 3, generator=gen)  # N >= D: covariance path
    pca = baselines.fit_pca(train, k=6)
    assert pca.k == 6
    assert torch.allclose(pca.components @ pca.components.T, torch.eye(6), atol=1e-5)
    x = torch.rand(7, 1, 2, 3, generator=gen)
    assert torch.allclose(pca.reconstruct(x), x, atol=1e-5)


def test_pca_with_fewer_images_than_pixels_spans_its_training_images():
    train = torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(1))  # N < D: Gram path, rank N - 1
    pca = baselines.fit_pca(train, k=100)
    assert pca.k == 3  # capped at the rank
    assert torch.allclose(pca.components @ pca.components.T, torch.eye(3), atol=1e-5)
    assert torch.allclose(pca.reconstruct(train), train, atol=1e-5)


def test_pca_k1_finds_the_line_the_data_lies_on():
    direction = torch.tensor([3.0, 4.0]) / 5
    t = torch.linspace(-0.2, 0.2, 9)[:, None]
    train = (0.5 + t * direction).view(9, 1, 1, 2)
    pca = baselines.fit_pca(train, k=1)
    assert torch.allclose(pca.components[0].abs(), direction, atol=1e-5)
    off_line = torch.tensor([0.5 + 0.1 * 0.6 - 0.05 * 0.8, 0.5 + 0.1 * 0.8 + 0.05 * 0.6]).view(1, 1, 1, 2)
    on_line = torch.tensor([0.5 + 0.1 * 0.6, 0.5 + 0.1 * 0.8]).view(1, 1, 1, 2)
    assert torch.allclose(pca.reconstruct(off_line), on_line, atol=1e-5)  # the orthogonal part is dropped


def test_reconstructions_and_the_main_baseline():
    small = torch.rand(2, 1, 2, 2)
    pca = baselines.fit_pca(torch.rand(30, 1, 4, 4), k=16)
    mean = torch.full((1, 4, 4), 0.25)
    out = baselines.reconstructions(small, (1, 4, 4), pca, mean)
    assert set(out) == {"identity", "bicubic", "pca", "mean"}
    assert torch.allclose(out["pca"], out["bicubic"], atol=1e-5)  # full-rank PCA of the bicubic input
    assert torch.equal(out["mean"], mean.expand(2, 1, 4, 4))
    same = baselines.reconstructions(torch.rand(2, 1, 4, 4), (1, 4, 4))
    assert set(same) == {"identity"}  # no bicubic without a size change, no pca/mean without a fit
    assert baselines.relevant(out, super_resolution=True, corrupted=True) == "bicubic"
    assert baselines.relevant(out, super_resolution=False, corrupted=True) == "identity"
    assert baselines.relevant(out, super_resolution=False, corrupted=False) == "pca"


def test_bad_callback_settings_name_the_key():
    with pytest.raises(ConfigError, match="callbacks.baselines.names"):
        Baselines(names=["identity", "jpeg"])
    with pytest.raises(ConfigError, match="callbacks.baselines.ssim"):
        Baselines(ssim="some")


def test_logged_baselines_match_a_recomputation_on_the_same_test_images(run_train, tmp_path):
    """Plain AE (no corruption) on MNIST: 2 test batches of 128 -> the first 256 test images. The PCA (k = the
    8x4x4 code = 128, first 5000 training images) and mean-image scores are recomputed here from the data."""
    run = run_train(["trainer.limit_val_batches=1"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert "test/psnr_baseline_identity" not in metrics  # the input is the target: not a baseline
    assert "test/psnr_baseline_bicubic" not in metrics
    assert metrics["test/psnr_baseline"] == metrics["test/psnr_baseline_pca"]
    assert "test/ssim_baseline" in metrics and "val/psnr_baseline" in metrics

    dm = instantiate(compose_cfg(["trainer=debug"], output_dir=tmp_path / "x").data)
    dm.setup()
    test = to_float(dm.all_of("test", 256)[0])
    train_images = dm.all_of("train")[0]
    mean = baselines.mean_image(train_images)
    expected_mean = baselines.psnr(mean.expand_as(test), test).mean().item()
    pca = baselines.fit_pca(to_float(train_images[:5000]), 128)
    expected_pca = baselines.psnr(pca.reconstruct(test), test).mean().item()
    assert metrics["test/psnr_baseline_mean"] == pytest.approx(expected_mean, abs=1e-3)
    assert metrics["test/psnr_baseline_pca"] == pytest.approx(expected_pca, abs=1e-2)
    assert expected_pca > expected_mean + 5  # 128 components explain MNIST far better than one mean image


@pytest.mark.parametrize("code, fitted", [(100, True), (784, False), (1568, False)])
def test_no_pca_baseline_for_a_code_as_large_as_the_image(data_dir, code, fitted):
    from types import SimpleNamespace as NS

    from aelab.callbacks.baselines import Baselines
    from aelab.data import MNISTDataModule

    dm = MNISTDataModule(str(data_dir))
    dm.setup()
    module = NS(device="cpu", model=NS(capabilities=NS(embedding=NS(size=code))))
    callback = Baselines(fit_images=200)
    callback._fit(NS(datamodule=dm), module)
    assert (callback.pca is not None) == fitted and callback.mean is not None
    if fitted:
        assert callback.pca.k == code
