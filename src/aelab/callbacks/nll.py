"""Importance-sampled negative log-likelihood of a VAE on the test split (Burda et al., 2015), logged as `test/nll`.

    -log p(x) ~= -(logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K),   z_k ~ q(z|x)

in nats per image, averaged over the test images, with its standard error over them (`test/nll_stderr`: the spread
between images and the estimator's own noise; `test/nll_images` and `test/nll_samples` say how many images and K).
`max_images` scores a seeded draw of the test split, never its first images: MNIST's test split holds two writer
populations one after the other, so its first 1,000 images are not a sample of all 10,000. For any K it is a stochastic upper bound of the true NLL that
tightens as K grows (K=1 is the negative ELBO in expectation), so it is <= the negative ELBO, never above it.
p(x|z) is the decoder's Bernoulli likelihood: a proper probability for binary images (data=binarized_mnist, the
standard for comparisons with the literature); on grey-level images the number is only a relative score.
The proposal q(z|x) reads the model's input, i.e. the corrupted image when a corruption is configured (still a valid
estimate of log p(clean)); the likelihood is always that of the clean image. Conditional models (cvae) give
-log p(x | y) with each image's own label.

The `callbacks` group takes one choice, so add this callback beside it, from the command line
    aelab-train data=binarized_mnist model=vae_dense +callbacks.nll._target_=aelab.callbacks.ImportanceSampledNLL \
        +callbacks.nll.samples=1000
or in an experiment preset (conf/experiment/*.yaml, `# @package _global_`):
    callbacks:
      nll:
        _target_: aelab.callbacks.ImportanceSampledNLL
        samples: 1000
        max_images: null
It runs at the end of every test (aelab-train's final test, aelab-eval), so it lands in metrics.json.
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from aelab.callbacks.base import ModelCallback
from aelab.errors import check
from aelab.seeds import seeded_generator

log = logging.getLogger("aelab")


class ImportanceSampledNLL(ModelCallback):
    """samples: K importance samples per image; batch_size: decoder evaluations per forward pass (memory);
    max_images: a seeded draw of n test images (None: all); seed: the sampling streams (the same for every run)."""

    metrics = ("test/nll", "test/nll_stderr")

    def __init__(self, samples: int = 1000, batch_size: int = 1024, max_images: int | None = None, seed: int = 0):
        check(isinstance(samples, int) and samples >= 1,
              f"callbacks.nll.samples must be an integer >= 1, got {samples!r}")
        check(isinstance(batch_size, int) and batch_size >= 1,
              f"callbacks.nll.batch_size must be an integer >= 1, got {batch_size!r}")
        check(max_images is None or (isinstance(max_images, int) and max_images >= 1),
              f"callbacks.nll.max_images must be null or an integer >= 1, got {max_images!r}")
        self.samples, self.batch_size, self.max_images, self.seed = samples, batch_size, max_images, seed
        self._told: set[str] = set()

    def why_not(self, model) -> str | None:
        """Only a model that declares a correct importance-sampling estimator for itself (capabilities.likelihood)
        gets a test/nll."""
        if not model.capabilities.likelihood:
            return (f"{type(model).__name__} declares no importance-sampling likelihood (capabilities.likelihood; a "
                    "VAE needs recon_loss=bce, a Bernoulli decoder); test/nll is not computed")
        return None

    def _tell(self, message: str) -> None:
        if message not in self._told:  # once per reason, not at every test
            self._told.add(message)
            log.info("ImportanceSampledNLL: %s", message)

    def on_test_epoch_end(self, trainer: L.Trainer, module) -> None:
        model = module.model
        if not self.applies(model):
            return
        if trainer.datamodule is None:
            self._tell("no datamodule to read the test split from; test/nll is not computed")
            return
        images, labels = trainer.datamodule.drawn("test", self.max_images, "nll", self.seed, "images")
        generator = seeded_generator(module.device, "nll", self.seed)  # the same draws for every run
        was_training = model.training
        model.eval()
        per_image, binary = [], True
        for i in range(0, len(images), 1024):  # uint8 to the device in slices
            batch = module.corrupted_batch(images[i:i + 1024], labels[i:i + 1024], "nll")
            binary = binary and bool(((batch.target == 0) | (batch.target == 1)).all())
            nll = model.nll(batch.input, batch.target, batch.label, self.samples, self.batch_size, generator)
            per_image.append(nll.double())
        model.train(was_training)
        if not binary:
            self._tell("the test images are not binary, so the Bernoulli NLL is a relative score only "
                       "(data=binarized_mnist gives the standard number)")
        nll = torch.cat(per_image)
        stderr = nll.std() / len(nll) ** 0.5 if len(nll) > 1 else torch.zeros((), dtype=nll.dtype)
        for key, value in (("nll", nll.mean()), ("nll_stderr", stderr), ("nll_images", len(nll)),
                           ("nll_samples", self.samples)):
            module.log(f"test/{key}", torch.as_tensor(value, dtype=torch.float32, device=module.device),
                       on_step=False, on_epoch=True)
