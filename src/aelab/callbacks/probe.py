"""Codes as features: after testing, linear-probe and k-NN accuracy of the frozen code at several label budgets,
beside PCA codes of the same size and raw pixels (the lesson's self-supervised motive for autoencoders).

Logged as `test/probe_{linear,knn}_{10,100,all}` and the same with `_baseline_pca` / `_baseline_pixels`, so every
run of a model with a code shows whether that code beats PCA as a feature. The training split is encoded as the
model sees a clean image (its posterior mean for VAEs): the clean images themselves, or, for a model whose input is
smaller than the image (super-resolution), their corruption from the "probe" stream. The validation split chooses
the logistic regression's L2; the test split scores. The maths is aelab.probe (torch only, on the model's device).

A run whose test is limited to a few batches (trainer=debug) probes a class-balanced subset of the same scale, so
smoke runs stay fast; every other run probes whole splits (MNIST: well under a minute on 2 CPU cores).
"""

from __future__ import annotations

import logging
import math

import torch

from aelab import probe
from aelab.callbacks.base import ModelCallback
from aelab.callbacks.images import evaluating
from aelab.errors import check
from aelab.types import PositiveInt

log = logging.getLogger("aelab")
ENCODE_CHUNK = 1000
SMOKE_IMAGES_PER_TEST_IMAGE = 4  # a limited test's probe: 4 train images per tested image, balanced by class


class EmbeddingProbe(ModelCallback):
    """budgets: labelled examples per class (null: all); k and metric: the k-NN classifier; baselines: any of
    "pca" (same code size, fitted on the training images) and "pixels"; seed: the budgets' balanced draws."""

    metrics = ("test/probe_linear_100", "test/probe_knn_100", "test/probe_linear_all")  # HPARAMS shows these

    def __init__(self, budgets: list[PositiveInt | None] = (10, 100, None), k: PositiveInt = 10,
                 metric: str = "cosine", baselines: list[str] = ("pca", "pixels"), seed: int = 0):
        check(metric in probe.METRICS, f"callbacks.probe.metric={metric!r} is not one of {list(probe.METRICS)}")
        unknown = [b for b in baselines if b not in ("pca", "pixels")]
        check(not unknown, f"callbacks.probe.baselines has {unknown}; allowed: ['pca', 'pixels']")
        self.budgets, self.k, self.metric = list(budgets), int(k), metric
        self.baselines, self.seed = list(baselines), int(seed)
        self._told: set[str] = set()

    def _skip(self, why: str) -> None:
        if why not in self._told:  # once per reason, not at every test
            self._told.add(why)
            log.info("EmbeddingProbe: %s; no test/probe_* metrics", why)

    def why_not(self, model) -> str | None:
        caps = model.capabilities
        if caps.embedding is None:
            return f"{type(model).__name__} has no code (capabilities.embedding is None); no test/probe_* metrics"
        if caps.conditional:
            return (f"{type(model).__name__} encodes with the label, which would leak into its code; no "
                    "test/probe_* metrics")
        return None

    def _splits(self, trainer) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        dm = trainer.datamodule
        limit = trainer.limit_test_batches
        if isinstance(limit, float) and limit == 1.0:
            return {split: dm.all_of(split) for split in ("train", "val", "test")}
        tested = int(limit if isinstance(limit, int) else math.ceil(limit * trainer.num_test_batches[0])) * dm.batch_size
        out = {split: dm.all_of(split, tested) for split in ("val", "test")}
        images, labels = dm.all_of("train")
        per_class = max(1, SMOKE_IMAGES_PER_TEST_IMAGE * tested // dm.spec.num_classes)
        keep = probe.balanced_subset(labels, per_class, self.seed)
        out["train"] = images[keep], labels[keep]
        return out

    @torch.no_grad()
    def _encode(self, module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model, codes = module.model, []
        same_size = tuple(model.input_shape) == tuple(images.shape[1:])
        for i in range(0, len(images), ENCODE_CHUNK):
            batch = module.corrupted_batch(images[i:i + ENCODE_CHUNK], labels[i:i + ENCODE_CHUNK], "probe")
            codes.append(model.embed(batch.target if same_size else batch.input).float())
        return torch.cat(codes)

    def on_test_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking or not self.applies(module.model):
            return
        spec = trainer.datamodule.spec if trainer.datamodule is not None else None
        if spec is None or spec.num_classes is None or spec.num_classes < 2:
            self._skip("the data has no class labels")
            return
        splits = self._splits(trainer)
        with evaluating(module):
            codes = {s: self._encode(module, *splits[s]) for s in splits}
        device = codes["train"].device
        labels = {s: splits[s][1].to(device) for s in splits}
        pixels = {s: (splits[s][0].to(device).flatten(1).float() / 255) for s in splits}

        def sets(x: dict[str, torch.Tensor]):
            return (x["train"], labels["train"], x["val"], labels["val"], x["test"], labels["test"])

        features = {"": sets(codes)}
        if "pca" in self.baselines:
            pca = probe.pca_features(pixels["train"], codes["train"].shape[1])
            features["pca"] = sets({s: pca(pixels[s]) for s in splits})
        if "pixels" in self.baselines:
            features["pixels"] = sets(pixels)
        scores = probe.probe_all(features, trainer.datamodule.spec.num_classes, tuple(self.budgets), self.k,
                                 self.metric, self.seed)
        for name, value in scores.items():
            module.log(f"test/{name}", value, on_step=False, on_epoch=True)
