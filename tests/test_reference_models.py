"""The residual reference models (sr_resnet, ae_resnet, vae_resnet): shapes from the data, declared capabilities,
the IWAE bound, and a few real batches of their presets. The slow test checks that sr_resnet beats bicubic."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from aelab.build import build_callbacks
from aelab.errors import ConfigError
from aelab.models.ae_resnet import ResNetAutoencoder
from aelab.models.base import Batch
from aelab.models.sr_resnet import SRResNet, prime_factors
from aelab.models.vae_resnet import ResNetVAE
from aelab.optim import Optimisation
from conftest import compose_cfg

GREY, RGB = (1, 28, 28), (3, 64, 64)


def small(shape, factor):
    c, h, w = shape
    return c, h // factor, w // factor


# --- sr_resnet ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [GREY, RGB], ids=["grey28", "rgb64"])
@pytest.mark.parametrize("factor", [1, 2, 4])
@pytest.mark.parametrize("upsample", ["stepwise", "once", "subpixel"])
def test_sr_resnet_shapes_and_start_at_the_interpolation(shape, factor, upsample):
    torch.manual_seed(0)
    model = SRResNet(small(shape, factor), shape, width=8, blocks=2, upsample=upsample, recon_loss="l1").eval()
    x = torch.rand(3, *small(shape, factor))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, *shape)
    # the tail starts at zero: an untrained net returns the interpolation it corrects (up to the logit clamp)
    base = x if factor == 1 else F.interpolate(x, size=shape[1:], mode="bicubic", align_corners=False).clamp(0, 1)
    assert torch.allclose(out, base, atol=2e-4)
    shuffles = [m.upscale_factor for m in [*model.upsampler, *model.tail] if isinstance(m, torch.nn.PixelShuffle)]
    expected = ([factor] if upsample == "subpixel" else [] if factor == 1
                else prime_factors(factor) if upsample == "stepwise" else [factor])
    assert shuffles == expected


def test_sr_resnet_has_no_code():
    model = SRResNet(small(GREY, 2), GREY)
    caps = model.capabilities
    assert caps.embedding is None and caps.prior is None and not caps.likelihood
    with pytest.raises(ConfigError, match="embedding"):
        model.embed(torch.rand(2, *small(GREY, 2)))
    with pytest.raises(ConfigError, match="upsampling factor"):
        SRResNet((1, 10, 10), GREY)  # 28 / 10 is no integer factor


@pytest.mark.parametrize("residual,loss", [("pixel", "l1"), ("pixel", "mse"), ("logit", "mse"), ("logit", "bce")])
def test_sr_resnet_learns_on_a_batch(residual, loss):
    """A few Adam steps on one batch lower the loss, whichever residual form and loss (the pixel form once diverged
    under a straight-through clamp: pixels with target 0 were pushed ever further below 0)."""
    torch.manual_seed(0)
    target = torch.rand(8, *GREY).square()
    target[:, :, :6] = 0  # exact black like MNIST's background
    batch = Batch(F.avg_pool2d(target, 2), target)
    model = SRResNet(small(GREY, 2), GREY, width=8, blocks=1, residual=residual, recon_loss=loss)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    first = model.loss(batch).loss.item()
    for _ in range(20):
        terms = model.loss(batch)
        opt.zero_grad()
        terms.loss.backward()
        opt.step()
    assert math.isfinite(terms.loss.item()) and terms.loss.item() < first
    assert terms.output.min() >= 0 and terms.output.max() <= 1


@pytest.mark.parametrize("shape", [GREY, (3, 32, 48)], ids=["square", "wide"])
def test_sr_resnet_self_ensemble_is_equivariant_at_evaluation_only(shape):
    """With self_ensemble the evaluated net commutes with flips of its input (the mean over the flips and turns makes
    it so; a trained net alone does not), and training sees the plain net."""
    torch.manual_seed(0)
    plain = SRResNet(small(shape, 2), shape, width=8, blocks=1, consistency="area")
    for p in plain.parameters():  # a net whose tail is not zero, so it is not just the (equivariant) interpolation
        torch.nn.init.normal_(p, std=0.3)
    ensemble = SRResNet(small(shape, 2), shape, width=8, blocks=1, consistency="area", self_ensemble=True)
    ensemble.load_state_dict(plain.state_dict())
    x = torch.rand(2, *small(shape, 2))
    target = torch.rand(2, *shape)
    with torch.no_grad():
        plain.eval(), ensemble.eval()
        flipped = ensemble(x.flip(-2)).flip(-2)
        assert torch.allclose(flipped, ensemble(x), atol=1e-5)
        assert not torch.allclose(plain(x.flip(-2)).flip(-2), plain(x), atol=1e-3)
        evaluated = ensemble.loss(Batch(x, target)).output
        assert torch.allclose(evaluated, ensemble(x).clamp(0, 1), atol=1e-4)
        # each member is area-consistent, so their mean is too
        assert torch.allclose(F.avg_pool2d(ensemble.predict(x), 2), x, atol=1e-5)
        ensemble.train(), plain.train()
        assert torch.equal(ensemble.loss(Batch(x, target)).loss, plain.loss(Batch(x, target)).loss)


# --- ae_resnet ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [GREY, RGB], ids=["grey28", "rgb64"])
def test_ae_resnet_shapes_and_dense_code(shape):
    model = ResNetAutoencoder(shape, shape, channels=[8, 16, 16], blocks=[1, 1, 1], latent_dim=24).eval()
    x = torch.rand(2, *shape)
    assert model.capabilities.embedding.size == 24 and model.capabilities.prior is None
    assert model.embed(x).shape == (2, 24)
    assert model(x).shape == (2, *shape)
    assert model.generate(torch.randn(5, 24)).shape == (5, *shape)


def test_ae_resnet_decodes_to_a_larger_output():
    model = ResNetAutoencoder(small(GREY, 2), GREY, channels=[8, 16], blocks=[0, 1], latent_dim=8)
    assert model(torch.rand(2, *small(GREY, 2))).shape == (2, *GREY)
    with pytest.raises(ConfigError, match="blocks"):
        ResNetAutoencoder(GREY, GREY, channels=[8, 16], blocks=[1])


# --- vae_resnet -----------------------------------------------------------------------------------------------------
def test_vae_resnet_capabilities():
    vae = ResNetVAE(GREY, GREY, latent_dim=8)
    caps = vae.capabilities
    assert caps.likelihood and caps.prior == "standard_normal" and caps.embedding.size == 8
    assert not ResNetVAE(GREY, GREY, latent_dim=8, recon_loss="mse").capabilities.likelihood
    assert vae.sample(3).shape == (3, *GREY)
    with pytest.raises(ConfigError, match="bce"):
        ResNetVAE(GREY, GREY, objective="iwae", recon_loss="mse")
    with pytest.raises(ConfigError, match="beta"):
        ResNetVAE(GREY, GREY, objective="iwae", beta=4.0)


def test_iwae_loss_is_below_the_elbo_loss_on_the_same_batch():
    """-IWAE_K <= -ELBO in expectation (K > 1), by a margin once the decoder reads z (a few ELBO steps first: an
    untrained decoder ignores z, its importance weights are all alike and the two bounds coincide); K=1 is the
    ELBO. Averaged over draws; a bound computed as a mean of log weights instead of a log-mean-exp fails here."""
    torch.manual_seed(0)
    x = (torch.rand(16, *GREY) < 0.3).float()
    x[:8, :, :14] = 0  # two kinds of image: something for z to encode
    batch = Batch(x, x)
    vae = ResNetVAE(GREY, GREY, channels=[8, 16], blocks=[0, 1], latent_dim=4, objective="elbo", iwae_samples=8)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    for _ in range(30):
        loss = vae.loss(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    vae.eval()
    with torch.no_grad():
        elbo = torch.stack([vae.loss(batch).loss for _ in range(10)]).mean()
        vae.objective = "iwae"
        iwae = torch.stack([vae.loss(batch).loss for _ in range(10)]).mean()
        vae.iwae_samples = 1
        iwae1 = torch.stack([vae.loss(batch).loss for _ in range(10)]).mean()
    assert iwae < elbo - 1.0  # nats per image (about 5 here)
    assert abs(iwae1 - elbo) < 0.01 * elbo
    terms = ResNetVAE(GREY, GREY, channels=[8, 16], blocks=[0, 1], latent_dim=4, objective="iwae").loss(batch)
    assert set(terms.logged()) == {"loss", "recon_loss", "kl_loss"} and terms.loss.requires_grad


def test_iwae_elbo_warmup_epochs_train_on_the_elbo_then_on_the_iwae_bound():
    """objective=iwae with elbo_warmup_epochs=1: epoch 0's training steps are the ELBO (same draws, same value as
    the ELBO model's loss), epoch 1's the IWAE bound; evaluation always scores the IWAE bound, and the switch keeps
    the model out of graph capture."""
    torch.manual_seed(0)
    x = (torch.rand(8, *GREY) < 0.3).float()
    batch = Batch(x, x)
    kw = dict(channels=[8, 16], blocks=[0, 1], latent_dim=4, iwae_samples=4)
    torch.manual_seed(1)
    vae = ResNetVAE(GREY, GREY, objective="iwae", elbo_warmup_epochs=1, **kw)
    torch.manual_seed(1)
    elbo_vae = ResNetVAE(GREY, GREY, objective="elbo", **kw)

    def seeded(fn, *args):
        torch.manual_seed(7)
        return fn(*args).loss

    for epoch, reference in ((0, lambda: seeded(elbo_vae.loss, batch)), (1, lambda: seeded(vae.loss, batch))):
        got = seeded(vae.training_loss, batch, 0, epoch)
        assert torch.equal(got, reference()), epoch
    assert not torch.equal(seeded(vae.loss, batch), seeded(elbo_vae.loss, batch))  # eval: the IWAE bound
    assert "elbo_warmup_epochs" in vae.capabilities.not_capturable
    assert ResNetVAE(GREY, GREY, objective="iwae", **kw).capabilities.capturable
    with pytest.raises(ConfigError, match="elbo_warmup_epochs=2 needs model.objective=iwae"):
        ResNetVAE(GREY, GREY, objective="elbo", elbo_warmup_epochs=2)


# --- presets: a few real batches ------------------------------------------------------------------------------------
FAST = ["trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.limit_train_batches=3",
        "callbacks.latent_scatter.n_images=256", "callbacks.latent_noise.std_images=64"]


def metrics_of(run):
    assert json.loads((run / "status.json").read_text())["state"] == "succeeded"
    return json.loads((run / "metrics.json").read_text())


def test_superres_mnist_trains_and_draws_no_latent_figures(run_train, tmp_path):
    m = metrics_of(run_train(["experiment=superres_mnist", *FAST]))
    assert 0 < m["test/psnr"] < 60 and m["test/psnr_baseline"] == m["test/psnr_baseline_bicubic"]
    assert "test/psnr_baseline_pca" not in m  # no code: no PCA of its size
    cfg = compose_cfg(["trainer=debug", "experiment=superres_mnist"], output_dir=tmp_path)
    from aelab.build import build_parts

    names = {type(c).__name__ for c in build_callbacks(cfg.callbacks, build_parts(cfg).model)}
    assert "NoiseInput" in names and not names & {"LatentScatter", "LatentNoise", "LatentGrid"}


def test_ae_latent32_mnist_trains_against_pca32(run_train):
    m = metrics_of(run_train(["experiment=ae_latent32_mnist", *FAST]))
    assert m["test/psnr_baseline"] == m["test/psnr_baseline_pca"] and math.isfinite(m["test/loss"])


def test_iwae_binarized_trains_and_scores_the_nll(run_train):
    # no ELBO warm-up: these few batches train on the IWAE bound itself (test_experiments runs the preset as it is)
    m = metrics_of(run_train(["experiment=iwae_binarized", *FAST, "model.elbo_warmup_epochs=0",
                              "callbacks.nll.max_images=4", "callbacks.nll.samples=50", "~callbacks.latent_scatter",
                              "~callbacks.latent_noise"]))
    assert 0 < m["test/nll"] and m["test/kl_loss"] > 0 and m["test/recon_loss"] > 0


@pytest.mark.slow
def test_sr_resnet_beats_bicubic_on_flowers(run_train):
    """Trained briefly on a flowers subset, sr_resnet x2 scores above bicubic on test images (a real comparison:
    its tail starts at zero, i.e. at the bicubic output, and the area projection is off, so the gain is learned)."""
    m = metrics_of(run_train(["experiment=superres_flowers", "data.batch_size=32", "trainer.max_epochs=1",
                              "trainer.limit_train_batches=40", "trainer.limit_val_batches=2",
                              "trainer.limit_test_batches=8", "model.width=16", "model.blocks=2",
                              "model.consistency=none"]))
    assert m["test/psnr"] > m["test/psnr_baseline_bicubic"] + 0.1, m


def test_a_null_total_steps_is_filled_with_the_run_length():
    """The reference presets write OneCycleLR's total_steps as null: the module fills in Lightning's estimate of the
    run's optimizer steps, leaves an explicit count alone, and refuses a run of unknown length in one line."""
    one_cycle = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=None)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with_run_length = lambda factory, steps: Optimisation(scheduler=factory).with_run_length(steps)  # noqa: E731
    assert with_run_length(one_cycle, lambda: 12.0)(optimizer=opt).total_steps == 12
    explicit = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=40)
    assert with_run_length(explicit, lambda: 12.0) is explicit
    assert with_run_length(None, lambda: 12.0) is None
    with pytest.raises(ConfigError, match="total_steps=null needs a run of known length"):
        with_run_length(one_cycle, lambda: float("inf"))


def test_a_run_too_short_for_one_cycle_phases_is_refused_in_one_line():
    """torch's OneCycleLR divides by its warm-up's length, zero steps when pct_start x total_steps is 1 (10 steps at
    the presets' pct_start 0.1): aelab says so instead of a ZeroDivisionError; 11 steps work."""
    opt = lambda: [[torch.nn.Parameter(torch.zeros(1))]]  # noqa: E731
    sgd = functools.partial(torch.optim.SGD, lr=0.1)
    plan = Optimisation(sgd, functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1, total_steps=None,
                                               pct_start=0.1), interval="step")
    with pytest.raises(ConfigError, match=r"OneCycleLR cannot be laid over this run's 10 optimizer steps with "
                                          r"pct_start=0.1: .* change scheduler.pct_start"):
        plan.configure(opt(), lambda: 10.0)
    assert plan.configure(opt(), lambda: 11.0)["lr_scheduler"]["scheduler"].total_steps == 11


def test_a_checkpoint_recording_the_retired_scheduler_interval_still_loads(tmp_path):
    """model.scheduler_interval became scheduler.interval: a checkpoint written before records it in its model
    config, and aelab-eval would refuse it as an unknown key; loading drops it."""
    from aelab.checkpoints import load_checkpoint

    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {}, "aelab": {"model": {"_target_": "aelab.models.ae_resnet.ResNetAutoencoder",
                                                      "latent_dim": 8, "scheduler_interval": "step"}}}, path)
    assert load_checkpoint(path)["aelab"]["model"] == {"_target_": "aelab.models.ae_resnet.ResNetAutoencoder",
                                                       "latent_dim": 8}
