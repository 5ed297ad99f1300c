"""β-TCVAE, DIP-VAE, the capacity-annealed β-VAE and FactorVAE: each objective against its definition on tensors with
a known answer. Their dSprites presets train a few real batches (with the metrics and figures) in
tests/test_experiments.py."""

from __future__ import annotations

import math

import pytest
import torch

from aelab.errors import ConfigError
from aelab.models import Batch
from aelab.models.disentangle import BetaTCVAE, CapacityBetaVAE, DIPVAE
from aelab.models.factorvae import FactorVAE, permute_dims
from aelab.models.latent import log_normal

SHAPE = (1, 16, 16)
SMALL = dict(latent_dim=3, channels=[4, 8], hidden=16)


def batch(n: int = 6) -> Batch:
    x = (torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    return Batch(x, x, torch.zeros(n, dtype=torch.long))


def fixed_posterior(model, mean: torch.Tensor, log_var: torch.Tensor) -> None:
    model.posterior = lambda x, labels=None: (mean, log_var)


def test_beta_tcvae_parts_add_up_to_the_one_sample_kl():
    """mi + tc + dim_kl telescopes to E[log q(z|x) - log p(z)] whatever the minibatch estimates of log q(z)."""
    model = BetaTCVAE(SHAPE, SHAPE, alpha=1.0, beta=1.0, gamma=1.0, dataset_size=1000, **SMALL)
    mean, log_var = torch.randn(6, 3), torch.randn(6, 3) * 0.3
    fixed_posterior(model, mean, log_var)
    torch.manual_seed(1)
    t = model.loss(batch())
    torch.manual_seed(1)
    z = mean + torch.exp(0.5 * log_var) * torch.randn(6, 3)  # the same draw
    one_sample_kl = (log_normal(z, mean, log_var) - log_normal(z)).mean()
    parts = t.terms["mi"] + t.terms["tc"] + t.terms["dim_kl"]
    assert float(parts) == pytest.approx(float(one_sample_kl), abs=1e-4)
    assert float(t.loss - t.terms["recon_loss"]) == pytest.approx(float(parts), abs=1e-4)
    weighted = BetaTCVAE(SHAPE, SHAPE, alpha=0.0, beta=5.0, gamma=0.0, **SMALL)
    fixed_posterior(weighted, mean, log_var)
    t = weighted.loss(batch())
    assert float(t.loss - t.terms["recon_loss"]) == pytest.approx(5 * float(t.terms["tc"]), rel=1e-5)
    with pytest.raises(ConfigError, match="kl_warmup_steps"):
        BetaTCVAE(SHAPE, SHAPE, kl_warmup_steps=10, **SMALL)


def test_dip_penalty_is_zero_for_an_identity_covariance_and_follows_its_formula():
    model = DIPVAE(SHAPE, SHAPE, kind="i", lambda_od=2.0, lambda_d=3.0, **SMALL)
    mean = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0],
                         [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]) * math.sqrt(2.5)  # covariance I (unbiased, 5 dof)
    fixed_posterior(model, mean, torch.zeros(6, 3))
    assert float(model.loss(batch()).terms["dip"]) == pytest.approx(0.0, abs=1e-5)
    skewed = mean.clone()
    skewed[:, 1] += skewed[:, 0]  # cov: [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    fixed_posterior(model, skewed, torch.zeros(6, 3))
    assert float(model.loss(batch()).terms["dip"]) == pytest.approx(2.0 * 2 * 1 + 3.0 * 1, rel=1e-4)
    two = DIPVAE(SHAPE, SHAPE, kind="ii", lambda_od=2.0, lambda_d=3.0, **SMALL)
    fixed_posterior(two, mean, torch.zeros(6, 3))  # + the mean posterior variance (1) on the diagonal
    assert float(two.loss(batch()).terms["dip"]) == pytest.approx(3.0 * 3 * 1.0, rel=1e-4)


def test_capacity_grows_linearly_and_the_loss_pulls_the_kl_to_it():
    model = CapacityBetaVAE(SHAPE, SHAPE, capacity_gamma=10.0, capacity_max=20.0, capacity_steps=100, **SMALL)
    assert [model.capacity(s) for s in (0, 50, 100, 1000)] == [0.0, 10.0, 20.0, 20.0]
    t = model.loss(batch(), step=50)
    assert float(t.terms["capacity"]) == 10.0
    assert float(t.loss) == pytest.approx(float(t.terms["recon_loss"] + 10 * (t.terms["kl_loss"] - 10).abs()),
                                          rel=1e-5)
    assert model.capabilities.not_capturable
    with pytest.raises(ConfigError, match="capacity"):
        CapacityBetaVAE(SHAPE, SHAPE, beta=4.0, **SMALL)


def test_factorvae_shuffles_each_dimension_and_keeps_two_parameter_groups():
    z = torch.arange(24.0).view(8, 3)
    torch.manual_seed(0)
    shuffled = permute_dims(z)
    for d in range(3):
        assert sorted(shuffled[:, d].tolist()) == z[:, d].tolist()  # each column keeps its values
    assert not torch.equal(shuffled, z)
    model = FactorVAE(SHAPE, SHAPE, **SMALL)
    model_params, disc = model.parameter_groups()
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(model_params) | ids(disc) == ids(model.parameters()) and not ids(model_params) & ids(disc)
    d_loss, d_terms = model.discriminator_terms(batch())
    assert d_loss.requires_grad and 0 <= float(d_terms["d_acc"]) <= 1
    t = model.train().loss(batch())
    assert float(t.loss) == pytest.approx(float(t.terms["recon_loss"] + t.terms["kl_loss"]
                                                 + model.tc_gamma * t.terms["tc"]), rel=1e-5)
    assert set(model.eval().loss(batch()).terms) == {"recon_loss", "kl_loss", "tc", "d_loss", "d_acc"}


@pytest.mark.parametrize("model", ["dsprites_vae", "beta_tcvae", "factorvae", "dip_vae", "capacity_vae"])
def test_each_model_trains_a_few_batches_on_dsprites(model, run_train):
    """Through the module and its training-step contract (FactorVAE: two optimizers); the full presets, metrics and
    figures included, run in tests/test_experiments.py."""
    import json

    run = run_train([f"model={model}", "data=dsprites", "data.size=600", "data.test_size=128", "data.batch_size=32",
                     "callbacks=none", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
                     "trainer.limit_test_batches=1"])
    metrics = json.loads((run / "metrics.json").read_text())
    declared = {"dsprites_vae": ["kl_loss"], "beta_tcvae": ["mi", "tc", "dim_kl"], "factorvae": ["tc", "d_acc"],
                "dip_vae": ["dip"], "capacity_vae": ["capacity"]}[model]
    assert all(f"test/{t}" in metrics and f"train/{t}" in metrics for t in declared), sorted(metrics)
