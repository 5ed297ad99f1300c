"""The model families beside the lesson's (WAE-MMD, InfoVAE, RAE, sparse and contractive AEs, VampPrior VAE,
hierarchical VAE): each objective against its definition, the MMD and the Jacobian estimate on cases with a known
answer, and the likelihood estimators against exact values. Their presets train a few real batches in
tests/test_experiments.py."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from aelab.errors import ConfigError
from aelab.models import Batch, gaussian_kl, standard_normal
from aelab.models.hvae import HierarchicalVAE
from aelab.models.latent import log_normal, mmd
from aelab.models.regularised import ContractiveAutoencoder, RegularizedAutoencoder, SparseAutoencoder
from aelab.models.vae_resnet import ResNetVAE
from aelab.models.vamp import VampPriorVAE, VampResNetVAE
from aelab.models.wae import InfoVAE, WassersteinAutoencoder

MNIST = (1, 28, 28)


def batch(n: int = 8, shape=MNIST, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, *shape, generator=g) < 0.3).float()
    return Batch(x, x, torch.arange(n) % 10)


# --- the MMD ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_is_unbiased_for_equal_distributions_and_grows_with_a_shift(kernel):
    g = torch.Generator().manual_seed(0)
    same = torch.stack([mmd(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g), kernel)
                        for _ in range(20)])
    assert abs(float(same.mean())) < 3 * float(same.std()) / math.sqrt(20)  # zero in expectation, either sign
    x = torch.randn(400, 4, generator=g)
    shifted = [float(mmd(x, torch.randn(400, 4, generator=g) + s, kernel)) for s in (0.5, 1.0, 2.0)]
    assert 0 < shifted[0] < shifted[1] < shifted[2]


def test_wae_loss_is_reconstruction_plus_weighted_mmd():
    model = WassersteinAutoencoder(MNIST, MNIST, latent_dim=4, mmd_weight=7.0)
    b = batch()
    torch.manual_seed(3)
    terms = model.loss(b)
    assert torch.allclose(terms.loss, terms.terms["recon_loss"] + 7.0 * terms.terms["mmd"])
    assert model.capabilities.prior == "standard_normal" and model.capabilities.embedding.size == 4


def test_info_vae_at_alpha_0_lambda_1_is_the_vae_elbo_and_at_alpha_1_drops_the_kl():
    b = batch()
    elbo_like = InfoVAE(MNIST, MNIST, latent_dim=4, alpha=0.0, mmd_lambda=1.0)
    torch.manual_seed(1)
    t = elbo_like.loss(b)
    assert torch.allclose(t.loss, t.terms["recon_loss"] + t.terms["kl_loss"])  # MMD weight alpha + lambda - 1 = 0
    mmd_vae = InfoVAE(MNIST, MNIST, latent_dim=4, alpha=1.0, mmd_lambda=50.0)
    torch.manual_seed(1)
    t = mmd_vae.loss(b)
    assert torch.allclose(t.loss, t.terms["recon_loss"] + 50.0 * t.terms["mmd"])
    assert mmd_vae.capabilities.likelihood  # the VAE's generative model: its estimator holds


# --- deterministic regularised autoencoders -------------------------------------------------------------------------
def test_rae_terms_follow_their_definitions():
    b = batch()
    model = RegularizedAutoencoder(MNIST, MNIST, latent_dim=4, code_weight=2.0, decoder="l2", decoder_weight=0.5)
    t = model.train().loss(b)
    z = model.encode(b.input)
    squared = sum(float(p.square().sum()) for p in model.decoder.parameters())
    assert float(t.terms["code_norm"]) == pytest.approx(float(0.5 * z.square().sum(1).mean()), rel=1e-5)
    assert float(t.terms["decoder_reg"]) == pytest.approx(squared, rel=1e-5)
    assert float(t.loss) == pytest.approx(float(t.terms["recon_loss"] + 2 * t.terms["code_norm"]) + 0.5 * squared,
                                          rel=1e-5)
    assert set(model.eval().loss(b).terms) == {"recon_loss", "code_norm"}  # the decoder penalty: training only
    gp = RegularizedAutoencoder(MNIST, MNIST, latent_dim=4, decoder="gp").train()
    t = gp.loss(b)
    t.loss.backward()  # the gradient penalty differentiates through a gradient
    assert float(t.terms["decoder_reg"]) > 0 and gp.capabilities.not_capturable
    assert model.capabilities.prior is None  # sampled ex post


def test_sparse_penalties():
    b = batch()
    l1 = SparseAutoencoder(MNIST, MNIST, latent_dim=8, sparsity="l1")
    t = l1.loss(b)
    assert float(t.terms["sparsity"]) == pytest.approx(float(l1.encode(b.input).abs().mean()), rel=1e-5)
    kl = SparseAutoencoder(MNIST, MNIST, latent_dim=8, sparsity="kl", target=0.5)
    nn.init.zeros_(kl.encoder[-1].weight)
    nn.init.zeros_(kl.encoder[-1].bias)  # every unit at sigmoid(0) = 0.5, the target: no penalty
    assert float(kl.loss(b).terms["sparsity"]) == pytest.approx(0.0, abs=1e-6)


def test_contractive_estimate_is_the_jacobian_norm_of_a_linear_encoder():
    """For z = W x the Jacobian is W, so the penalty's expectation is |W|_F^2; with many projections the estimate
    lands on it."""
    model = ContractiveAutoencoder((1, 4, 4), (1, 4, 4), latent_dim=3, projections=4000).train()
    torch.manual_seed(0)
    linear = nn.Linear(16, 3)
    model.encoder = nn.Sequential(nn.Flatten(), linear)
    model.decoder = nn.Sequential(nn.Linear(3, 16), nn.Unflatten(1, (1, 4, 4)))
    x = torch.rand(2, 1, 4, 4)
    t = model.loss(Batch(x, x))
    assert float(t.terms["contraction"]) == pytest.approx(float(linear.weight.square().sum()), rel=0.05)
    assert "contraction" not in model.eval().loss(Batch(x, x)).terms


# --- likelihood models -----------------------------------------------------------------------------------------------
def test_vamp_prior_with_one_pseudo_input_is_that_input_s_posterior():
    model = VampPriorVAE(MNIST, MNIST, latent_dim=3, pseudo_inputs=1)
    mean, log_var = model.pseudo_posteriors()
    z = torch.randn(5, 3)
    assert torch.allclose(model.log_prior(z), log_normal(z, mean, log_var), atol=1e-5)
    assert model.prior_codes(4, torch.Generator().manual_seed(0)).shape == (4, 3)
    with pytest.raises(ConfigError, match="free_bits must be 0"):
        VampPriorVAE(MNIST, MNIST, free_bits=0.5)


def test_vamp_nll_sits_below_the_negative_elbo():
    torch.manual_seed(0)
    model = VampPriorVAE(MNIST, MNIST, latent_dim=3, pseudo_inputs=4, hidden=16, channels=[4, 8]).eval()
    b = batch(4)
    with torch.no_grad():
        neg_elbo = torch.stack([model.loss(b).loss for _ in range(100)]).mean()
        nll = model.nll(b.input, b.target, samples=100, generator=torch.Generator().manual_seed(1)).mean()
    assert float(nll) < float(neg_elbo)


def test_vamp_resnet_weighs_its_elbo_and_iwae_bound_with_the_vamp_prior():
    """An encoder that ignores its input makes every posterior the one pseudo-input's (q(z|x) = p(z)), and a decoder
    that ignores its code puts logit 0 on every pixel (log p(x|z) = -784 log 2): so the KL estimate is 0 at every
    draw and every bound is exactly 784 log 2 nats. vae_resnet's N(0, I) prior, in the same setup, is not."""
    def constant(model):
        head = nn.Linear(784, 6)
        out = nn.Linear(3, 784)
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([1.0, 1.0, 1.0, -2.0, -2.0, -2.0]))
            out.weight.zero_()
            out.bias.zero_()
        model.encoder = nn.Sequential(nn.Flatten(), head)
        model.decoder = nn.Sequential(out, nn.Unflatten(1, MNIST))
        return model

    exact = 784 * math.log(2)
    b = batch(4)
    nets = dict(latent_dim=3, channels=[4, 8], blocks=[0, 0])
    for objective in ("elbo", "iwae"):
        model = constant(VampResNetVAE(MNIST, MNIST, pseudo_inputs=1, objective=objective, **nets))
        out = model.loss(b)
        assert out.loss.item() == pytest.approx(exact, rel=1e-6) and out.terms["kl_loss"].item() == pytest.approx(0)
        plain = constant(ResNetVAE(MNIST, MNIST, objective=objective, **nets)).loss(b)
        assert plain.loss.item() > exact + 1.0  # the KL to N(0, I) of N(1, e^-2)
    warm = constant(VampResNetVAE(MNIST, MNIST, pseudo_inputs=1, objective="iwae", elbo_warmup_epochs=1, **nets))
    assert warm.training_loss(b, 0, epoch=0).loss.item() == pytest.approx(exact, rel=1e-6)
    assert float(warm.nll(b.input, b.target, samples=8).mean()) == pytest.approx(exact, rel=1e-6)
    with pytest.raises(ConfigError, match="free_bits must be 0 with a VampPrior"):
        VampResNetVAE(MNIST, MNIST, free_bits=0.5)


def test_hierarchical_nll_matches_the_exact_likelihood_by_quadrature():
    """Two 1-d layers over 3 binary pixels: p(x) = integral of p(x | z1) p(z1 | z2) N(z2) on a grid, against the
    estimator with many samples (an estimator using the one-layer weights would miss it)."""
    torch.manual_seed(0)
    model = HierarchicalVAE((1, 1, 3), (1, 1, 3), latent_dims=[1, 1], hidden=[4, 4]).double().eval()
    with torch.no_grad():  # wide bottom-up estimates: q covers the posterior, so the importance weights stay bounded
        for head in model.up_heads:
            head.weight.zero_()
            head.bias.copy_(torch.tensor([0.0, 2.0]))
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64).view(8, 1, 1, 3)
    grid = torch.linspace(-8, 8, 801, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    with torch.no_grad():
        z1, z2 = torch.meshgrid(grid, grid, indexing="ij")
        z1, z2 = z1.reshape(-1, 1), z2.reshape(-1, 1)
        p_mean, p_log_var = model.down[0](z2).chunk(2, dim=1)
        log_prior = log_normal(z2) + log_normal(z1, p_mean, p_log_var)  # [G]
        logits = model.decode(z1).view(-1, 3)
        exact = []
        for x in xs.view(8, 3):
            log_px_z = -nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits),
                                                                       reduction="none").sum(1)
            exact.append(-(torch.logsumexp(log_px_z + log_prior, 0) + 2 * math.log(step)))
        estimate = model.nll(xs, xs, samples=20000, batch_size=40000,
                             generator=torch.Generator().manual_seed(2))
    assert torch.allclose(estimate, torch.stack(exact), atol=0.05), (estimate, exact)


def test_hierarchical_vae_declares_a_kl_per_layer_and_applies_each_regulariser():
    model = HierarchicalVAE(MNIST, MNIST, latent_dims=[6, 4, 2], hidden=[32, 16, 8], free_bits=1.0)
    assert [t.name for t in model.terms] == ["recon_loss", "kl_loss", "kl_1", "kl_2", "kl_3"]
    assert model.capabilities.latent_layers == 3 and model.capabilities.likelihood
    torch.manual_seed(0)
    t = model.loss(batch())
    assert torch.allclose(t.terms["kl_loss"], t.terms["kl_1"] + t.terms["kl_2"] + t.terms["kl_3"])
    # free bits: an untrained layer's KL sits near 0, so each layer adds at least its floor (1 nat x its dims)
    assert float(t.loss - t.terms["recon_loss"]) >= 6 + 4 + 2 - 1e-4
    assert model.prior_codes(5).shape == (5, 6) and model.sample(5).shape == (5, *MNIST)
    with pytest.raises(ConfigError, match="at least two layers"):
        HierarchicalVAE(MNIST, MNIST, latent_dims=[4], hidden=[8])


def test_hierarchical_iwae_objective_is_tighter_than_its_elbo():
    torch.manual_seed(0)
    b = batch(16)
    elbo = HierarchicalVAE(MNIST, MNIST, latent_dims=[4, 2], hidden=[32, 16], objective="elbo").eval()
    iwae = HierarchicalVAE(MNIST, MNIST, latent_dims=[4, 2], hidden=[32, 16], objective="iwae", iwae_samples=50)
    iwae.load_state_dict(elbo.state_dict())
    iwae.eval()
    with torch.no_grad():
        e = torch.stack([elbo.loss(b).loss for _ in range(20)]).mean()
        w = torch.stack([iwae.loss(b).loss for _ in range(5)]).mean()
    assert float(w) < float(e)


def test_gaussian_kl_against_a_prior_matches_the_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    mean, log_var = torch.tensor([[0.3, -1.0]]), torch.tensor([[-0.5, 0.2]])
    p_mean, p_log_var = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.4, -0.3]])
    z = mean + torch.exp(0.5 * log_var) * standard_normal((200000, 2), mean, g)
    mc = (log_normal(z, mean, log_var) - log_normal(z, p_mean, p_log_var)).mean()
    assert float(gaussian_kl(mean, log_var, p_mean, p_log_var).sum()) == pytest.approx(float(mc), abs=0.01)
