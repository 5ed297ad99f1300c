"""The model contract (aelab.models.base): a model defined outside src/ trains through aelab's builders from its
`_target_`, and figures, baselines and the NLL apply to it by what it declares, never by what it happens to have."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, compose_cfg, read_events
from omegaconf import OmegaConf, open_dict
from torch import nn

from aelab.errors import ConfigError
from aelab.models import Autoencoder, Batch, VariationalAutoencoder
from aelab.runs import RunDir, run_app
from aelab.train import train

LIMITS: list[str] = []  # trainer=debug already runs a few batches


class TinyVAE(VariationalAutoencoder):
    """A user's VAE: 2-d Gaussian code, Bernoulli decoder; it states its estimator holds."""

    likelihood = True

    def __init__(self, *args, hidden: int = 32, **kwargs):
        super().__init__(*args, **kwargs)
        pixels = self.input_shape[0] * self.input_shape[1] * self.input_shape[2]
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, 2 * self.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(self.latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, pixels), nn.Unflatten(1, self.output_shape))


class HierarchicalVAE(TinyVAE):
    """Changes the generative model and does not restate `likelihood`: the one-layer estimator must not apply."""


class NoCode(Autoencoder):
    """Maps the image to itself through full-resolution feature maps: no bottleneck, so no code."""

    has_code = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoder = nn.Conv2d(self.input_shape[0], 4, 3, padding=1)
        self.decoder = nn.Conv2d(4, self.output_shape[0], 3, padding=1)


def train_user_model(tmp_path, model: dict, overrides=(), nll: bool = True):
    cfg = compose_cfg([*FAST, *LIMITS, *overrides], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.model = OmegaConf.create(model)
        if nll:
            cfg.callbacks.nll = {"_target_": "aelab.callbacks.ImportanceSampledNLL", "samples": 4, "max_images": 16}
        del cfg["hydra"]
    run_app(train, cfg, "aelab-train")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    events = read_events(tmp_path)
    return metrics, set(events.Tags()["images"])


def test_a_user_vae_gets_every_figure_baseline_and_the_nll_it_declares(tmp_path):
    metrics, images = train_user_model(tmp_path, {"_target_": f"{__name__}.TinyVAE", "latent_dim": 2, "hidden": 16})
    assert {"figures/latent_scatter", "figures/latent_grid", "figures/prior_samples", "figures/interpolation"} <= images
    assert "figures/noise_input" not in images  # no super-resolution
    assert {"test/psnr_baseline_pca", "test/nll", "test/kl_loss"} <= metrics.keys()


def test_a_model_without_a_code_gets_no_latent_figure_no_pca_and_no_nll(tmp_path):
    metrics, images = train_user_model(tmp_path, {"_target_": f"{__name__}.NoCode", "recon_loss": "mse"},
                                       ["corruption=gaussian_noise"])
    assert not {i for i in images if i.startswith("figures/")}
    assert "test/psnr_baseline" in metrics and "test/psnr_baseline_pca" not in metrics and "test/nll" not in metrics


def test_likelihood_is_declared_per_class_never_inherited():
    shape = (1, 28, 28)
    assert TinyVAE(shape, shape).capabilities.likelihood
    child = HierarchicalVAE(shape, shape)
    assert not child.capabilities.likelihood
    with pytest.raises(ConfigError, match=r"HierarchicalVAE.nll\(\) is not available.*capabilities.likelihood"):
        child.nll(torch.zeros(1, *shape), torch.zeros(1, *shape))
    assert not TinyVAE(shape, shape, recon_loss="mse").capabilities.likelihood  # no Bernoulli decoder


def test_embed_generate_and_interpolate_round_trip_through_the_code_shape():
    from aelab.models import ConvAutoencoder

    model = ConvAutoencoder((1, 28, 28), (1, 28, 28)).eval()  # the lesson's spatial 8x4x4 code
    x = torch.rand(3, 1, 28, 28)
    assert model.capabilities.embedding.size == 128 and model.code_shape == (8, 4, 4)
    codes = model.embed(x)
    assert codes.shape == (3, 128)
    assert torch.allclose(model.generate(codes), model.reconstruct(Batch(x, x)))
    line = model.interpolate(x[:2], x[1:], steps=5)
    assert line.shape == (2, 5, 1, 28, 28)
    assert torch.allclose(line[:, 0], model.generate(codes[:2]), atol=1e-6)
    assert torch.allclose(line[:, -1], model.generate(codes[1:]), atol=1e-6)
    with pytest.raises(ConfigError, match="capabilities.prior"):
        model.sample(2)


def test_cvae_trains_on_an_image_folder_with_class_subfolders(data_dir, tmp_path):
    from test_data import make_folder

    make_folder(data_dir, tmp_path / "imgs", n_per_class=40)
    cfg = compose_cfg([*FAST, *LIMITS, "model=cvae", "data=image_folder", f"data.data_dir={tmp_path / 'imgs'}",
                       "data.image_size=28", "data.channels=1", "data.batch_size=16"], output_dir=tmp_path / "run")
    with open_dict(cfg):
        del cfg["hydra"]
    result = train(cfg, RunDir(tmp_path / "run"))
    assert result.parts.spec.class_names == ("digit3", "digit8") and result.parts.spec.num_classes == 2
    assert result.module.model.num_classes == 2 and "test/loss" in result.metrics


def test_cvae_on_a_flat_folder_says_why(data_dir, tmp_path):
    from aelab.build import build_parts
    from test_data import make_folder

    make_folder(data_dir, tmp_path / "imgs", n_per_class=10)
    for f in (tmp_path / "imgs").rglob("*.png"):  # flatten: no class sub-folders
        f.rename(tmp_path / "imgs" / f"{f.parent.name}-{f.name}")
    cfg = compose_cfg(["model=cvae", "data=image_folder", f"data.data_dir={tmp_path / 'imgs'}", "data.image_size=28",
                       "data.channels=1"], output_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="model=cvae needs class labels.*num_classes=1.*class subfolders"):
        build_parts(cfg)
