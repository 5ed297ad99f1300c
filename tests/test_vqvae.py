"""VQ-VAE (first stage) and its PixelCNN prior (second stage): known answers for the EMA codebook, dead-code restarts,
straight-through gradients, perplexity, the prior's NLL and its causality, and one short real run of each preset."""

from __future__ import annotations

import json
import math

import pytest
import torch

from aelab.errors import CheckpointError, ConfigError
from aelab.models import Batch
from aelab.models.vqvae import VQVAE, code_statistics, ema_update
from aelab.models.vqvae_prior import MaskedConv2d, PixelCNN, VQVAEPrior, sample_raster

SHAPES = [(1, 28, 28), (3, 64, 64)]
SMALL = dict(channels=[8], res_blocks=1, code_dim=4, codebook_size=16)


def batch_of(shape, n=4, seed=0):
    x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))
    return Batch(input=x, target=x, label=torch.arange(n) % 10)


def tiny_codebook(model: VQVAE, book: list[list[float]]) -> None:
    model.codebook.data = torch.tensor(book)
    model.counts.data = torch.ones(len(book))
    model.last_used.data = torch.zeros(len(book), dtype=torch.long)


# --- first stage: shapes and contract ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=["mnist", "rgb64"])
def test_vqvae_shapes_terms_and_capabilities(shape):
    model = VQVAE(shape, shape, channels=[8, 16], res_blocks=1, code_dim=4, codebook_size=32)
    batch = batch_of(shape)
    terms = model.loss(batch)
    assert terms.output.shape == (4, *shape)
    assert set(terms.terms) == {"recon_loss", "commitment", "perplexity", "usage"} == {t.name for t in model.terms}
    assert torch.isclose(terms.loss, terms.terms["recon_loss"] + 0.25 * terms.terms["commitment"])
    h, w = -(-shape[1] // 4), -(-shape[2] // 4)  # two stride-2 stages
    assert model.code_shape == (4, h, w) and terms.state["indices"].shape == (4 * h * w,)
    caps = model.capabilities
    assert caps.embedding.size == 4 * h * w and caps.decodes_codes and caps.prior is None and caps.capturable
    codes = model.embed(batch.input)
    # the code is the quantised map: every position holds a codebook vector
    rows = codes.view(4, 4, h * w).permute(0, 2, 1).reshape(-1, 4)
    assert torch.equal(rows, model.codebook[model.indices(batch.input).flatten()])
    assert model.generate(codes).shape == (4, *shape)
    with pytest.raises(ConfigError, match="capabilities.prior"):
        model.sample(2)


def test_codebook_loss_variant_trains_the_codebook_by_gradient():
    model = VQVAE((1, 28, 28), (1, 28, 28), codebook_update="loss", **SMALL)
    terms = model.loss(batch_of((1, 28, 28)))
    assert "codebook_loss" in terms.terms and {t.name for t in model.terms} == set(terms.terms)
    terms.loss.backward()
    assert isinstance(model.codebook, torch.nn.Parameter) and model.codebook.grad.abs().sum() > 0


# --- the EMA codebook and dead-code restarts -----------------------------------------------------------------------
def test_ema_update_follows_the_decay_formula_on_a_tiny_codebook():
    model = VQVAE((1, 8, 8), (1, 8, 8), channels=[4], res_blocks=0, code_dim=2, codebook_size=3, decay=0.9,
                  restart_after=0)
    tiny_codebook(model, [[0.0, 0.0], [5.0, 5.0], [-1.0, 2.0]])
    encoded = torch.tensor([[1.0, 1.0], [3.0, 3.0], [0.0, 10.0]])
    state = {"encoded": encoded, "indices": torch.tensor([0, 0, 2])}
    model.after_step(type("T", (), {"state": state})(), step=7)
    # code 0: two outputs summing to (4, 4): (0.9 * 1 * (0, 0) + 0.1 * (4, 4)) / (0.9 + 0.1 * 2)
    # code 2: one output, count 1: the plain moving average 0.9 * e + 0.1 * z; code 1: unused, unchanged
    expected = torch.tensor([[0.4 / 1.1, 0.4 / 1.1], [5.0, 5.0], [0.9 * -1 + 0.1 * 0, 0.9 * 2 + 0.1 * 10]])
    assert torch.allclose(model.codebook, expected, atol=1e-6)
    assert torch.allclose(model.counts, torch.tensor([1.1, 0.9, 1.0]))
    assert model.last_used.tolist() == [7, 0, 7]
    # a second step composes: the stored counts weigh the past
    book, counts = ema_update(model.codebook, model.counts, torch.tensor([1.0, 0, 0]),
                              torch.tensor([[2.0, 0], [0, 0], [0, 0]]), 0.9)
    assert torch.allclose(book[0], (0.9 * 1.1 * expected[0] + 0.1 * torch.tensor([2.0, 0])) / (0.9 * 1.1 + 0.1))


def test_a_code_unused_for_restart_after_steps_restarts_at_an_encoder_output():
    model = VQVAE((1, 8, 8), (1, 8, 8), channels=[4], res_blocks=0, code_dim=2, codebook_size=3, restart_after=5)
    tiny_codebook(model, [[0.0, 0.0], [50.0, 50.0], [-50.0, 50.0]])
    encoded = torch.tensor([[0.1, 0.2], [0.3, -0.1], [-0.2, 0.0], [0.05, 0.05]])
    state = {"encoded": encoded, "indices": torch.zeros(4, dtype=torch.long)}  # only code 0 is ever used
    step = type("T", (), {"state": state})()
    model.after_step(step, step=4)
    assert model.codebook[1:].abs().max() == 50  # 4 steps unused: not yet dead
    torch.manual_seed(0)
    model.after_step(step, step=5)
    restarted = model.codebook[1:]
    assert all(any(torch.equal(r, e) for e in encoded) for r in restarted)  # each took an encoder output
    assert not torch.equal(restarted[0], restarted[1])  # distinct outputs while there are enough
    assert model.last_used.tolist() == [5, 5, 5] and model.counts[1:].tolist() == [1.0, 1.0]
    again = VQVAE((1, 8, 8), (1, 8, 8), channels=[4], res_blocks=0, code_dim=2, codebook_size=3, restart_after=5)
    tiny_codebook(again, [[0.0, 0.0], [50.0, 50.0], [-50.0, 50.0]])
    torch.manual_seed(0)
    again.after_step(step, step=5)
    assert torch.equal(again.codebook[1:], restarted)  # seeded: the same outputs


def test_the_first_step_places_the_unused_codes_on_encoder_outputs():
    model = VQVAE((1, 8, 8), (1, 8, 8), channels=[4], res_blocks=0, code_dim=2, codebook_size=4, restart_after=100)
    # early encoder outputs: alike, all nearest to one placeholder code
    encoded = model.codebook[0] + 0.01 * torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    idx = model.nearest(encoded)
    model.after_step(type("T", (), {"state": {"encoded": encoded, "indices": idx}})(), step=0)
    unused = sorted(set(range(4)) - set(idx.tolist()))
    assert unused and all(any(torch.equal(model.codebook[k], e) for e in encoded) for k in unused)
    assert (model.last_used == 0).all()


def test_straight_through_gradient_reaches_the_encoder():
    model = VQVAE((1, 28, 28), (1, 28, 28), commitment_weight=0.0, **SMALL)
    terms = model.loss(batch_of((1, 28, 28)))
    terms.loss.backward()  # the reconstruction only: its one way to the encoder is the straight-through copy
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_perplexity_of_a_uniform_assignment_is_the_codebook_size():
    counts, perplexity, usage = code_statistics(torch.arange(16).repeat(3), 16)
    assert counts.tolist() == [3.0] * 16 and math.isclose(float(perplexity), 16, rel_tol=1e-5) and usage == 1
    _, perplexity, usage = code_statistics(torch.full((10,), 3), 16)  # one code: perplexity 1
    assert math.isclose(float(perplexity), 1, rel_tol=1e-6) and math.isclose(float(usage), 1 / 16)
    _, perplexity, _ = code_statistics(torch.tensor([0, 0, 0, 1]), 4)  # p = (3/4, 1/4): exp(H)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert math.isclose(float(perplexity), math.exp(entropy), rel_tol=1e-5)


# --- second stage ----------------------------------------------------------------------------------------------------
def fake_first_stage(tmp_path, target="aelab.models.vqvae.VQVAE", shape=(1, 28, 28)):
    """A checkpoint file as aelab-train writes it (state_dict under `model.`, the recorded config under `aelab`)."""
    kwargs = dict(SMALL, channels=[8, 16])
    model = VQVAE(shape, shape, **kwargs)
    path = tmp_path / "first.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "aelab": {"model": {"_target_": target, **kwargs}, "input_shape": list(shape),
                          "output_shape": list(shape)}}, path)
    return path, model


def test_prior_of_a_uniform_net_costs_log_k_per_index(tmp_path):
    path, first = fake_first_stage(tmp_path)
    prior = VQVAEPrior((1, 28, 28), (1, 28, 28), first_stage=str(path), width=8, layers=2)
    assert torch.equal(prior.first.codebook, first.codebook)  # the checkpoint's weights
    last = prior.net.head[-1]
    torch.nn.init.zeros_(last.weight), torch.nn.init.zeros_(last.bias)  # equal logits everywhere
    terms = prior.loss(batch_of((1, 28, 28)))
    assert math.isclose(float(terms.terms["nll_per_index"]), math.log(16), rel_tol=1e-6)
    assert math.isclose(float(terms.loss.detach()), prior.uniform_nll(), rel_tol=1e-6)
    assert prior.uniform_nll() == 49 * math.log(16)
    caps = prior.capabilities
    assert caps.prior == "learned" and caps.decodes_codes and caps.embedding == first.capabilities.embedding


def test_prior_trains_only_its_net_and_samples_deterministically(tmp_path):
    path, _ = fake_first_stage(tmp_path)
    prior = VQVAEPrior((1, 28, 28), (1, 28, 28), first_stage=str(path), width=8, layers=2).train()
    assert not prior.first.training
    ids = {id(p) for p in prior.parameter_groups()[0]}
    assert ids == {id(p) for p in prior.net.parameters()} and not ids & {id(p) for p in prior.first.parameters()}
    before = {k: v.clone() for k, v in prior.first.state_dict().items()}
    opt = torch.optim.Adam(prior.parameter_groups()[0], 1e-2)
    prior.loss(batch_of((1, 28, 28))).loss.backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in prior.first.state_dict().items())
    codes = prior.prior_codes(3, torch.Generator().manual_seed(1))
    assert torch.equal(codes, prior.prior_codes(3, torch.Generator().manual_seed(1)))
    assert codes.shape == (3, prior.capabilities.embedding.size)
    assert prior.sample(3, torch.Generator().manual_seed(1)).shape == (3, 1, 28, 28)


def test_masked_convolution_sees_only_earlier_positions():
    torch.manual_seed(0)
    for mask in ("A", "B"):
        conv = MaskedConv2d(1, 1, 5, mask)
        x = torch.zeros(1, 1, 6, 6)
        x[0, 0, 3, 2] = 1.0  # a change at (3, 2) ...
        out = conv(x) - conv(torch.zeros_like(x))
        changed = {(i, j) for i, j in (out[0, 0].abs() > 0).nonzero().tolist()}
        assert all((i, j) > (3, 2) or (mask == "B" and (i, j) == (3, 2)) for i, j in changed)  # ... only later ones
        assert (mask == "B") == ((3, 2) in changed)


def test_second_stage_refuses_a_missing_or_foreign_first_stage_in_one_line(tmp_path):
    with pytest.raises(CheckpointError) as e:
        VQVAEPrior((1, 28, 28), (1, 28, 28), first_stage=str(tmp_path / "nope.ckpt"))
    assert f"model.first_stage={tmp_path / 'nope.ckpt'}: no such file" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="model.first_stage is not set"):
        VQVAEPrior((1, 28, 28), (1, 28, 28))
    path, _ = fake_first_stage(tmp_path, target="aelab.models.ConvAutoencoder")
    with pytest.raises(CheckpointError, match="holds a ConvAutoencoder, not a VQVAE first stage"):
        VQVAEPrior((1, 28, 28), (1, 28, 28), first_stage=str(path))
    path, _ = fake_first_stage(tmp_path)
    with pytest.raises(CheckpointError, match=r"input images of shape \(1, 28, 28\), this data/corruption gives"):
        VQVAEPrior((3, 64, 64), (3, 64, 64), first_stage=str(path))


# --- the presets, a few real batches ------------------------------------------------------------------------------
FAST = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "callbacks.latent_scatter.n_images=256", "callbacks.latent_noise.std_images=64", "data.batch_size=64",
        "++callbacks.sample_quality=null"]  # the sample scores have their own tests; here they would only add time


def metrics_of(run):
    assert json.loads((run / "status.json").read_text())["state"] == "succeeded"
    return json.loads((run / "metrics.json").read_text())


def test_vqvae_presets_train_in_order_on_real_mnist(run_train):
    # a 7x7 index map: the prior's samples take 49 passes of its net instead of 196
    first = run_train(["experiment=vqvae_mnist", "model.channels=[16,16]", *FAST], name="stage1")
    m = metrics_of(first)
    for stage in ("train", "val", "test"):
        assert {f"{stage}/{t}" for t in ("recon_loss", "commitment", "perplexity", "usage")} <= set(m)
    assert 1 <= m["test/perplexity"] <= 256 and 0 < m["test/usage"] <= 1
    prior = run_train(["experiment=vqvae_prior_mnist", f"model.first_stage={first}/checkpoints/best.ckpt", *FAST,
                       "callbacks.prior_samples.n_images=4", "callbacks.prior_samples.every_n_epochs=0"],
                      name="stage2")
    m = metrics_of(prior)
    from conftest import read_events

    assert "test/figures/prior_samples" in read_events(prior).Tags()["images"]  # it samples
    assert {"train/nll_per_index", "val/nll_per_index", "test/nll_per_index"} <= set(m)
    assert 0 < m["test/nll_per_index"] < 1.5 * math.log(256)  # a few batches: about the uniform prior's log K


def test_prior_samples_in_chunks_one_pass_per_position_and_chunk(monkeypatch):
    net = PixelCNN(16, 8, 1)
    passes = []
    forward = net.forward
    monkeypatch.setattr(net, "forward", lambda x: (passes.append(tuple(x.shape)), forward(x))[1])
    maps = sample_raster(net, 5, (2, 3), torch.Generator().manual_seed(0), chunk=2)
    # chunks of 2, 2 and 1 maps; each position's pass covers the rows up to its own
    assert passes == [(b, r, 3) for b in (2, 2, 1) for r in (1, 1, 1, 2, 2, 2)]
    assert maps.shape == (5, 2, 3) and int(maps.max()) < 16
    assert torch.equal(maps, sample_raster(net, 5, (2, 3), torch.Generator().manual_seed(0), chunk=2))
