"""Figures: helpers on small tensors, then real short runs whose TensorBoard event files must hold the right tags."""

from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from aelab.callbacks import figures
from aelab.errors import ConfigError

ALL_TAGS = {"figures/latent_scatter", "figures/latent_noise", "figures/latent_grid", "figures/prior_samples",
            "figures/interpolation", "figures/class_samples", "figures/noise_input"}


def image_tags(run: Path) -> dict[str, list]:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


def decoded(event) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def test_pca_2d_keeps_all_variance_of_planar_codes():
    gen = torch.Generator().manual_seed(0)
    plane = torch.randn(200, 2, generator=gen) @ torch.randn(2, 6, generator=gen)  # 6-d codes on a 2-d plane
    xy, kept = figures.pca_2d(plane)
    assert xy.shape == (200, 2) and kept == pytest.approx(1.0, abs=1e-6)
    dist = lambda p: torch.cdist(p.double(), p.double(), compute_mode="donot_use_mm_for_euclid_dist")  # noqa: E731
    assert torch.allclose(dist(xy), dist(plane), atol=1e-4)  # a rotation of the plane: distances kept


def test_grid_figure_renders_rgb_with_one_row_per_tensor():
    rows = [torch.zeros(5, 1, 7, 7), torch.ones(5, 1, 14, 14)]  # different sizes: shown at the target size
    image = figures.render(figures.grid_figure(rows, ["a", "b"], "title", (1, 14, 14)))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.min() == 0 and image.max() == 255  # black and white cells both drawn


def test_evaluating_restores_rng_and_training_mode():
    module = torch.nn.Linear(2, 2)
    module.device = torch.device("cpu")
    module.train()
    state = torch.get_rng_state()
    with figures.evaluating(module):
        assert not module.training and not torch.is_grad_enabled()
        torch.randn(100)
    assert module.training and torch.equal(torch.get_rng_state(), state)


def test_bad_settings_name_the_key():
    with pytest.raises(ConfigError, match="every_n_epochs"):
        figures.LatentScatter(every_n_epochs=-1)
    with pytest.raises(ConfigError, match="latent_noise.scales"):
        figures.LatentNoise(scales=[-1.0])
    with pytest.raises(ConfigError, match="latent_grid.quantiles"):
        figures.LatentGrid(quantiles=[0.9, 0.1])


def test_vae_with_2d_latent_gets_latent_and_generative_figures(run_train):
    run = run_train(["model=vae_dense", "model.latent_dim=2"])
    tags = image_tags(run)
    expected = {"figures/latent_scatter", "figures/latent_noise", "figures/latent_grid", "figures/prior_samples",
                "figures/interpolation"}
    assert expected <= tags.keys()
    assert not (ALL_TAGS - expected) & tags.keys()  # not conditional, not super-resolution
    for tag in expected:
        assert len(tags[tag]) == 1 and len(tags[f"test/{tag}"]) == 1  # validation epoch end; testing end: own tag
        image = decoded(tags[tag][-1])
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 10  # a drawn figure, not a blank
    grid = decoded(tags["figures/latent_grid"][-1])
    assert grid.shape[1] > 15 * 28  # 15 decoded digits per row


def test_super_resolution_gets_the_noise_input_figure_and_no_generative_ones(run_train):
    run = run_train(["corruption=downsample", "corruption.downsample.factor=4",
                     "callbacks.latent_scatter.n_images=300"])
    tags = image_tags(run).keys()
    assert {"figures/noise_input", "figures/latent_scatter", "figures/latent_noise"} <= tags
    # ae_conv keeps a spatial code here: no 2-d latent, no prior
    assert not {"figures/latent_grid", "figures/prior_samples", "figures/interpolation", "figures/class_samples"} & tags


def test_conditional_vae_gets_one_row_per_class(run_train):
    run = run_train(["model=cvae", "callbacks.latent_scatter.every_n_epochs=0"])
    tags = image_tags(run)
    assert {"figures/class_samples", "figures/prior_samples", "test/figures/latent_scatter"} <= tags.keys()
    assert "figures/latent_scatter" not in tags  # every_n_epochs=0: only at the end of testing
    assert len(tags["test/figures/latent_scatter"]) == 1
    assert "figures/interpolation" not in tags and "figures/latent_grid" not in tags
    assert decoded(tags["figures/class_samples"][-1]).shape[0] > 10 * 28  # ten rows of 28-px digits


def test_figures_that_cannot_apply_are_not_handed_to_the_trainer(tmp_path):
    """Lightning calls every callback at every training step's hooks: figures that would skip themselves for the
    whole run are left out when the callbacks are built."""
    from aelab.build import build_callbacks
    from aelab.models import ConvAutoencoder, DenseVAE
    from conftest import compose_cfg

    callbacks = compose_cfg(output_dir=tmp_path).callbacks

    def figure_names(model) -> set[str]:
        return {type(c).__name__ for c in build_callbacks(callbacks, model) if isinstance(c, figures.FigureCallback)}

    everything = figure_names(None)
    assert len(everything) == 7
    assert figure_names(ConvAutoencoder((1, 28, 28), (1, 28, 28))) == {"LatentScatter", "LatentNoise"}
    assert figure_names(ConvAutoencoder((1, 14, 14), (1, 28, 28))) == {"LatentScatter", "LatentNoise", "NoiseInput"}
    assert figure_names(DenseVAE((1, 28, 28), (1, 28, 28), latent_dim=2)) == \
        {"LatentScatter", "LatentNoise", "LatentGrid", "PriorSamples", "LatentInterpolation"}
    assert all(type(c).__name__ in ("ReconstructionGrid", "Baselines", "ModelCheckpoint", "EmbeddingProbe",
                                    "SampleQuality") or
               isinstance(c, figures.FigureCallback) for c in build_callbacks(callbacks, None))
