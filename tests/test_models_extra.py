"""Adversarial autoencoder, conditional VAE, binarized MNIST and the importance-sampled NLL."""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from conftest import compose_cfg
from hydra.utils import instantiate

from aelab.build import build_parts
from aelab.callbacks import ImportanceSampledNLL
from aelab.data import BinarizedMNISTDataModule, to_float
from aelab.errors import ConfigError
from aelab.models import (AdversarialAutoencoder, Batch, ConditionalVAE, DenseAutoencoder, DenseVAE, gaussian_kl,
                          reparameterize)
from aelab.module import AutoencoderModule
from aelab.optim import Optimisation
from aelab.seeds import seeded_generator

SHAPES = [(1, 28, 28), (3, 64, 64)]


def synthetic_batch(shape, n=4, num_classes=10):
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, *shape), generator=g)
    return Batch(input=x, target=x, label=torch.arange(n) % num_classes)


def scalar_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"])


# --- shapes on synthetic tensors --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=["mnist", "rgb64"])
@pytest.mark.parametrize("arch", ["conv", "dense"])
def test_aae_shapes_and_terms(shape, arch):
    model = AdversarialAutoencoder(shape, shape, arch=arch, latent_dim=5)
    batch = synthetic_batch(shape)
    terms = model.train().loss(batch)
    assert terms.output.shape == (4, *shape) and model.encode(batch.input).shape == (4, 5)
    assert set(terms.logged()) == {"loss", "recon_loss", "g_loss"}
    assert torch.isclose(terms.loss, terms.terms["recon_loss"] + model.adv_weight * terms.terms["g_loss"])
    d_loss, d_acc = model.discriminator_loss(batch)
    assert 0 <= float(d_acc) <= 1 and d_loss.requires_grad
    assert set(model.eval().loss(batch).logged()) == {"loss", "recon_loss", "g_loss", "d_loss", "d_acc"}
    samples = model.sample(3, torch.Generator().manual_seed(1))
    assert samples.shape == (3, *shape) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    caps = model.capabilities
    assert caps.prior == "standard_normal" and caps.own_training_step and caps.embedding.size == 5
    assert not caps.likelihood and not caps.capturable
    # the two optimizers' groups partition the parameters
    ids = lambda ps: {id(p) for p in ps}
    autoencoder, discriminator = model.parameter_groups()
    assert ids(autoencoder) | ids(discriminator) == ids(model.parameters())
    assert not ids(autoencoder) & ids(discriminator)


@pytest.mark.parametrize("shape", SHAPES, ids=["mnist", "rgb64"])
@pytest.mark.parametrize("arch", ["dense", "conv"])
def test_cvae_shapes_and_terms(shape, arch):
    model = ConditionalVAE(shape, shape, num_classes=10, arch=arch, latent_dim=3)
    batch = synthetic_batch(shape)
    terms = model.loss(batch)
    assert terms.output.shape == (4, *shape) and model.reconstruct(batch).shape == (4, *shape)
    assert set(terms.logged()) == {"loss", "recon_loss", "kl_loss"}
    assert torch.isclose(terms.loss, terms.terms["recon_loss"] + terms.terms["kl_loss"])  # beta=1, no warm-up: the negative ELBO
    assert model.encode(batch.input, batch.label).shape == (4, 3) and model.capabilities.embedding.size == 3
    assert model.sample(5).shape == (5, *shape)


def test_cvae_reuses_the_vae_kl_machinery():
    batch = synthetic_batch((1, 28, 28))
    model = ConditionalVAE((1, 28, 28), (1, 28, 28), num_classes=10, latent_dim=3, beta=2.0, kl_warmup_steps=10)
    torch.manual_seed(0)
    terms = model.loss(batch, step=5)  # warm-up halfway: weight beta * 0.5 = 1
    assert torch.isclose(terms.loss, terms.terms["recon_loss"] + 1.0 * terms.terms["kl_loss"])
    free = ConditionalVAE((1, 28, 28), (1, 28, 28), num_classes=10, latent_dim=3, free_bits=50.0)
    torch.manual_seed(0)
    floored = free.loss(batch)
    assert torch.isclose(floored.loss, floored.terms["recon_loss"] + torch.tensor(150.0))  # 3 dims x 50 nats floor


def test_cvae_samples_depend_on_labels():
    model = ConditionalVAE((1, 28, 28), (1, 28, 28), num_classes=10, latent_dim=2)
    draw = lambda labels: model.sample(6, torch.Generator().manual_seed(3), labels=labels)
    zeros, ones = draw([0] * 6), draw([1] * 6)
    assert torch.equal(zeros, draw([0] * 6))  # same z, same label: same image
    assert (zeros - ones).abs().mean() > 1e-3  # same z, other label: other image
    assert torch.equal(draw(None), draw(torch.arange(6)))  # labels=None cycles through the classes
    with pytest.raises(ConfigError, match="labels"):
        model.sample(2, labels=[0, 10])
    with pytest.raises(ValueError, match="labels"):
        model.encode(torch.rand(2, 1, 28, 28))


def test_cvae_needs_classes():
    with pytest.raises(ConfigError, match="num_classes=None"):
        ConditionalVAE((1, 28, 28), (1, 28, 28), num_classes=None)
    with pytest.raises(ConfigError, match="num_classes=1"):
        ConditionalVAE((1, 28, 28), (1, 28, 28), num_classes=1)
    from aelab.build import make

    with pytest.raises(ConfigError, match="model.arch='transformer' is not allowed"):  # the annotation is the schema
        make({"_target_": "aelab.models.ConditionalVAE", "arch": "transformer"}, "model", input_shape=(1, 28, 28),
             output_shape=(1, 28, 28), num_classes=10)


# --- the adversarial training path ------------------------------------------------------------------------------
def fit(overrides, scheduler=None, **trainer_kwargs):
    """A bare Lightning fit (no logger, checkpoints or figure callbacks) of the composed data x model."""
    cfg = compose_cfg(overrides)
    L.seed_everything(0, verbose=False)
    parts = build_parts(cfg)
    module = AutoencoderModule(parts.model, parts.corruption,
                               optimisation=Optimisation(instantiate(cfg.optimizer), scheduler), seed=0)
    module.initial_state = {k: v.clone() for k, v in parts.model.state_dict().items()}
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, **trainer_kwargs)
    trainer.fit(module, datamodule=parts.datamodule)
    return parts, module, trainer


def fit_aae(overrides, scheduler=None, **trainer_kwargs):
    small = ["model=aae", "model.arch=dense", "model.hidden=[64]", "model.disc_hidden=[32]", "data.batch_size=32"]
    parts, module, trainer = fit([*small, *overrides], scheduler, **trainer_kwargs)
    return parts.model, module.initial_state, trainer


def test_aae_discriminator_really_trains_and_steps_count_batches():
    model, before, trainer = fit_aae([], max_steps=3, limit_train_batches=5)
    after = model.state_dict()
    changed = lambda prefix: [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]
    assert changed("discriminator.") and changed("encoder.") and changed("decoder.")
    # two optimizers step per batch, yet global_step (and so max_steps) counts batches
    assert trainer.global_step == 3
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 3
    metrics = trainer.callback_metrics
    assert {"train/d_acc", "train/d_loss", "train/g_loss", "train/loss", "train/recon_loss"} <= metrics.keys()
    assert 0 <= float(metrics["train/d_acc"]) <= 1


def test_aae_limit_train_batches_and_schedulers():
    scheduler = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    _, _, trainer = fit_aae([], scheduler=scheduler, max_epochs=2, limit_train_batches=2)
    assert trainer.global_step == 4
    # manual optimisation: the module steps both schedulers once per epoch
    assert [pytest.approx(o.param_groups[0]["lr"]) for o in trainer.optimizers] == [0.25e-3, 0.25e-3]


# --- binarized MNIST --------------------------------------------------------------------------------------------
def binarized(data_dir, seed=0, **kw) -> BinarizedMNISTDataModule:
    dm = BinarizedMNISTDataModule(data_dir=str(data_dir), batch_size=64, seed=seed, download=False, **kw)
    dm.setup()
    return dm


def delivered(dm, raw):
    """A training batch as the model receives it: binarized after the transfer to its device."""
    return dm.on_after_batch_transfer(raw, 0)


def train_image(dm, epoch: int, index: int) -> torch.Tensor:
    """Training image `index` as the model receives it in `epoch`."""
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    for item in loader.sampler:
        if index in item[1]:
            return delivered(dm, loader.dataset[item])[0][item[1].tolist().index(index)]
    raise AssertionError(f"image {index} not in epoch {epoch}")


def test_binarized_mnist_training_draws(data_dir):
    dm = binarized(data_dir, seed=1)
    grey_batch = next(iter(dm.train_dataloader()))
    assert len(grey_batch) == 3 and set(grey_batch[0].unique().tolist()) != {0, 255}  # binarized after transfer
    images, labels = delivered(dm, grey_batch)
    assert images.dtype == torch.uint8 and images.shape == (64, 1, 28, 28) and labels.dtype == torch.long
    assert set(images.unique().tolist()) == {0, 255}
    grey = dm.splits["train"].images[:1]
    assert ((grey > 0) & (grey < 255)).sum() > 20  # the image below has grey pixels to draw from
    e0, e1 = train_image(dm, 0, 0), train_image(dm, 1, 0)
    assert set(e0.unique().tolist()) <= {0, 255} and not torch.equal(e0, e1)  # fresh draw every epoch
    assert ((e0 == 255) <= (grey[0] > 0)).all() and ((e0 == 0) <= (grey[0] < 255)).all()  # 0 stays 0, 255 stays 255
    again = binarized(data_dir, seed=1)
    assert torch.equal(train_image(again, 0, 0), e0) and torch.equal(train_image(again, 1, 0), e1)
    assert not torch.equal(train_image(binarized(data_dir, seed=2), 0, 0), e0)
    # Bernoulli(p = pixel / 255): over a batch the white fraction matches the mean grey level
    first = delivered(dm, next(iter(dm.train_dataloader())))[0]
    loader = dm.train_dataloader()
    idx = next(iter(loader.sampler))[1]
    p = dm.splits["train"].images[idx].float().mean() / 255
    assert abs(float(first.float().mean() / 255) - float(p)) < 0.01


def test_binarized_mnist_eval_splits_are_fixed(data_dir):
    a, b = binarized(data_dir, seed=1), binarized(data_dir, seed=2)
    assert set(a.splits["test"].images.unique().tolist()) == {0, 255}
    assert torch.equal(a.splits["test"].images, b.splits["test"].images)  # the run seed does not change the test
    assert not torch.equal(a.splits["test"].images, binarized(data_dir, eval_seed=1).splits["test"].images)
    first = lambda loader: next(iter(loader))[0]
    assert torch.equal(first(a.val_dataloader()), first(a.val_dataloader()))
    assert set(a.fixed_batch("train", 8)[0].unique().tolist()) == {0, 255}
    with pytest.raises(ConfigError, match="in_memory"):
        BinarizedMNISTDataModule(data_dir=str(data_dir), in_memory=False)


# --- real few-batch runs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["aae", "cvae"])
def test_model_trains_and_writes_tags(run_train, model):
    run = run_train([f"model={model}"], name=model)
    assert json.loads((run / "status.json").read_text())["state"] == "succeeded"
    metrics = json.loads((run / "metrics.json").read_text())
    expected = {"aae": {"train/d_acc", "train/d_loss", "train/g_loss", "val/d_acc", "test/g_loss"},
                "cvae": {"train/kl_loss", "val/kl_loss", "test/kl_loss"}}[model]
    assert expected | {"train/loss", "train/recon_loss", "val/loss", "test/loss"} <= metrics.keys()
    assert all(math.isfinite(v) for v in metrics.values())
    assert expected <= scalar_tags(run)


# --- importance-sampled NLL -------------------------------------------------------------------------------------
def test_nll_matches_exact_likelihood_of_a_tiny_vae():
    """3 binary pixels and a 1-d latent: p(x) by quadrature over z, against the estimator with many samples."""
    torch.manual_seed(0)
    model = DenseVAE((1, 1, 3), (1, 1, 3), latent_dim=1, hidden=[16]).eval()
    xs = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.float).view(8, 1, 1, 3)
    z = torch.linspace(-10, 10, 20001).view(-1, 1)
    with torch.no_grad():
        logits = model.decode(z).view(-1, 1, 3)  # [Z, 1, 3]
    log_px_z = -torch.nn.functional.binary_cross_entropy_with_logits(
        logits.expand(-1, 8, -1), xs.view(1, 8, 3).expand(len(z), -1, -1), reduction="none").sum(-1)  # [Z, 8]
    log_pz = -0.5 * (z.square() + math.log(2 * math.pi))
    exact = -(torch.logsumexp(log_px_z + log_pz, 0) + math.log(20 / 20000))
    assert abs(float(torch.exp(-exact).sum()) - 1) < 1e-4  # the quadrature itself is right
    estimate = model.nll(xs, xs, samples=20000, batch_size=4096,
                         generator=torch.Generator().manual_seed(0))
    assert torch.allclose(estimate, exact, atol=0.02), (estimate, exact)


def test_nll_of_a_conditional_vae_uses_the_labels():
    torch.manual_seed(0)
    model = ConditionalVAE((1, 28, 28), (1, 28, 28), num_classes=10, latent_dim=2, hidden=[32]).eval()
    x = (torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    nll = lambda labels: model.nll(x, x, labels, samples=20,
                                   generator=torch.Generator().manual_seed(0))
    own, other = nll(torch.tensor([0, 1, 2])), nll(torch.tensor([5, 5, 5]))
    assert own.shape == (3,) and torch.isfinite(own).all() and not torch.allclose(own, other)
    assert torch.equal(own, nll(torch.tensor([0, 1, 2])))  # seeded


def test_nll_callback_skips_non_vae_models_and_says_so_once(caplog):
    logged = []
    module = SimpleNamespace(model=DenseAutoencoder((1, 28, 28), (1, 28, 28)), log=lambda *a, **k: logged.append(a))
    callback = ImportanceSampledNLL(samples=5)
    with caplog.at_level(logging.INFO, logger="aelab"):
        for _ in range(2):
            callback.on_test_epoch_end(SimpleNamespace(datamodule=None), module)
    assert not logged
    assert [r.getMessage() for r in caplog.records].count(
        "ImportanceSampledNLL: DenseAutoencoder declares no importance-sampling likelihood (capabilities.likelihood; a "
        "VAE needs recon_loss=bce, a Bernoulli decoder); test/nll is not computed") == 1
    with pytest.raises(ConfigError, match="samples"):
        ImportanceSampledNLL(samples=0)


def test_binarized_vae_run_writes_test_nll(run_train):
    run = run_train(["data=binarized_mnist", "model=vae_dense",
                     "+callbacks.nll._target_=aelab.callbacks.ImportanceSampledNLL", "+callbacks.nll.samples=10",
                     "+callbacks.nll.max_images=64"], name="binarized")
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"train/loss", "train/kl_loss", "val/loss", "test/loss", "test/nll"} <= metrics.keys()
    assert {"train/loss", "train/kl_loss", "val/loss", "test/nll"} <= scalar_tags(run)
    assert 50 < metrics["test/nll"] < 800  # nats per binarized MNIST image, a barely trained model
    assert 0 < metrics["test/nll_stderr"] < 0.2 * metrics["test/nll"]
    assert metrics["test/nll_images"] == 64 and metrics["test/nll_samples"] == 10


@pytest.mark.slow  # trains a VAE for 100 batches (~1 min on 2 cores)
def test_nll_is_below_the_negative_elbo_of_a_trained_vae():
    parts, module, trainer = fit(["data=binarized_mnist", "model=vae_dense", "model.latent_dim=8", "model.hidden=[256]",
                                  "data.batch_size=64"], max_steps=100)
    callback = ImportanceSampledNLL(samples=50, max_images=256)
    tester = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                       limit_test_batches=4, callbacks=[callback])
    tester.test(module, datamodule=parts.datamodule, verbose=False)
    logged = {k: float(v) for k, v in tester.callback_metrics.items()}
    model = module.model.eval()
    # the callback's images: a seeded draw of the test split (its own stream), not the first 256
    pick = torch.randperm(parts.datamodule.split_size("test"), generator=seeded_generator("cpu", "nll", 0, "images"))
    x = to_float(parts.datamodule.all_of("test")[0][pick[:256]])
    nll = lambda k, inputs, generator: model.nll(inputs, inputs, samples=k, generator=generator)
    per_image = nll(50, x, seeded_generator("cpu", "nll", 0))  # the callback's sampling stream
    nll50 = per_image.mean()
    assert float(nll50) == pytest.approx(logged["test/nll"], abs=1e-3)  # the callback computed exactly this
    assert float(per_image.std() / 16) == pytest.approx(logged["test/nll_stderr"], rel=1e-4)  # std / sqrt(256)
    assert logged["test/nll_images"] == 256 and logged["test/nll_samples"] == 50
    # negative ELBO with the exact KL and the reconstruction averaged over 32 draws per image
    with torch.no_grad():
        mean, log_var = model.posterior(x)
        kl = gaussian_kl(mean, log_var).sum(1)
        g = torch.Generator().manual_seed(1)
        recon = torch.stack([torch.nn.functional.binary_cross_entropy_with_logits(
            model.decode(reparameterize(mean, log_var, g)), x, reduction="none").flatten(1).sum(1)
            for _ in range(32)]).mean(0)
    neg_elbo = (recon + kl).mean()
    assert 60 < float(nll50) < float(neg_elbo) < 300  # ELBO <= log p(x): the estimate sits below -ELBO
    # K=1 is the negative ELBO in expectation (32 independent draws per image)
    nll1 = nll(1, x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(2)).mean()
    assert float(nll1) == pytest.approx(float(neg_elbo), rel=0.01)
    assert float(nll1) - float(nll50) > 0.5  # more samples, a tighter bound
