"""Masked autoencoder: patch-size refusal, the loss on hidden patches only, the encoder seeing only the visible share,
seeded masking, the unmasked deterministic code, and one short real run of each preset."""

from __future__ import annotations

import json

import pytest
import torch

from aelab.errors import ConfigError
from aelab.models import Batch
from aelab.models.mae import MaskedAutoencoder, patchify, unpatchify

SMALL = dict(dim=32, depth=2, heads=4, decoder_dim=16, decoder_depth=1, decoder_heads=2, mlp_ratio=2)


def batch_of(shape, n=4, seed=0):
    x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))
    return Batch(input=x, target=x, label=torch.arange(n) % 10)


@pytest.mark.parametrize("shape, patch", [((1, 28, 28), 4), ((3, 64, 64), 8)], ids=["mnist", "rgb64"])
def test_mae_shapes_terms_and_capabilities(shape, patch):
    model = MaskedAutoencoder(shape, shape, patch_size=patch, **SMALL)
    terms = model.loss(batch_of(shape))
    assert terms.output.shape == (4, *shape) and set(terms.terms) == {t.name for t in model.terms}
    assert torch.equal(terms.loss, terms.terms["recon_loss"])
    caps = model.capabilities
    assert caps.embedding.size == 32 and caps.embedding.pooling.startswith("mean over patch tokens")
    assert not caps.decodes_codes and caps.prior is None and caps.capturable
    assert model.embed(batch_of(shape).input).shape == (4, 32)
    with pytest.raises(ConfigError, match="capabilities.decodes_codes"):
        model.generate(torch.zeros(1, 32))
    x = batch_of(shape).input
    assert torch.equal(unpatchify(patchify(x, patch), shape, patch), x)


def test_a_patch_size_that_does_not_divide_the_image_is_refused_in_one_line():
    with pytest.raises(ConfigError) as e:
        MaskedAutoencoder((1, 28, 28), (1, 28, 28), patch_size=5, **SMALL)
    assert str(e.value) == ("model.patch_size=5 does not divide the image size 28x28; use one of "
                            "[1, 2, 4, 7, 14, 28]")
    with pytest.raises(ConfigError, match="model.mask_ratio=0.99 leaves 0 of the 49 patches"):
        MaskedAutoencoder((1, 28, 28), (1, 28, 28), patch_size=4, mask_ratio=0.99, **SMALL)


def test_the_loss_ignores_the_visible_patches():
    """Pushing the prediction on the visible patches far off leaves the loss as it was (the same seeded mask);
    the diagnostic recon_visible sees the change, so the push did reach the output."""
    model = MaskedAutoencoder((1, 28, 28), (1, 28, 28), patch_size=4, **SMALL)
    batch = batch_of((1, 28, 28))
    torch.manual_seed(3)
    plain = model.loss(batch)
    torch.manual_seed(3)
    _, hidden = model.draw_mask(4, "cpu")  # the mask the next loss draws from the same seed
    hook = model.head.register_forward_hook(lambda m, i, out: out + 7.0 * (1 - hidden)[..., None])
    torch.manual_seed(3)
    pushed = model.loss(batch)
    hook.remove()
    assert torch.equal(pushed.terms["recon_loss"], plain.terms["recon_loss"])
    assert pushed.terms["recon_visible"] > plain.terms["recon_visible"] + 0.1


def test_the_encoder_sees_only_the_visible_share_and_embed_sees_every_patch():
    model = MaskedAutoencoder((1, 28, 28), (1, 28, 28), patch_size=4, mask_ratio=0.75, **SMALL)
    model.code_shape  # measured once on blank images: not part of what is counted
    seen = []
    model.encoder_blocks.register_forward_hook(lambda m, i, out: seen.append(i[0].shape[1]))
    model.loss(batch_of((1, 28, 28)))
    model.embed(batch_of((1, 28, 28)).input)
    assert seen == [int(49 * 0.25), 49]  # 12 of 49 patches while training, all of them for the code


def test_masking_is_seeded_and_the_visible_patches_come_from_the_input():
    model = MaskedAutoencoder((1, 28, 28), (1, 28, 28), patch_size=4, **SMALL)
    batch = batch_of((1, 28, 28))
    torch.manual_seed(0)
    a = model.loss(batch)
    torch.manual_seed(0)
    _, hidden = model.draw_mask(4, "cpu")
    torch.manual_seed(0)
    b = model.loss(batch)
    torch.manual_seed(1)
    c = model.loss(batch)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.output, b.output) and not torch.equal(a.output, c.output)
    assert (hidden.sum(1) == 37).all()  # each image hides the same number of patches
    out, x = patchify(a.output, 4), patchify(batch.input, 4)
    visible = hidden == 0
    assert torch.equal(out[visible], x[visible]) and not torch.equal(out[~visible], x[~visible])


def test_embed_is_deterministic_whatever_the_rng():
    model = MaskedAutoencoder((1, 28, 28), (1, 28, 28), patch_size=4, **SMALL).train()
    x = batch_of((1, 28, 28)).input
    torch.manual_seed(0)
    first = model.embed(x)
    torch.manual_seed(123)
    assert torch.equal(first, model.embed(x))
    tokens = model.encode_tokens(x)  # every patch, in order: the code is their mean
    assert torch.allclose(first, tokens.mean(1))


# --- the presets, a few real batches ------------------------------------------------------------------------------
FAST = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
        "data.batch_size=32", "model.dim=32", "model.depth=1", "model.decoder_dim=16", "model.decoder_depth=1",
        "++callbacks.sample_quality=null"]  # the sample scores have their own tests; here they would only add time


@pytest.mark.parametrize("preset", ["mae_mnist", "mae_fashion"])
def test_mae_presets_train_a_few_real_batches(preset, run_train):
    run = run_train([f"experiment={preset}", *FAST])
    assert json.loads((run / "status.json").read_text())["state"] == "succeeded"
    m = json.loads((run / "metrics.json").read_text())
    for stage in ("train", "val", "test"):
        assert {f"{stage}/recon_loss", f"{stage}/recon_visible"} <= set(m)
    assert 0 < m["test/recon_loss"] < 1 and 0 < m["test/psnr"] < 60
    assert 0 <= m["test/probe_linear_100"] <= 1  # the code reached the probes
