"""How good are the samples? After testing, every model's outputs are scored against the test split in the feature
space of a domain classifier (aelab.features) with FID, KID, precision / recall and density / coverage
(aelab.sample_quality), on `n_images` images per set (MNIST: 10,000, the whole test split; a smaller count is a seeded
draw of the test split, never its first images):

    <sampler>  images decoded from each sampler the model supports (aelab.samplers): "prior" (capabilities.prior),
               "gaussian" and "gmm" fitted on the codes of the training images (models that decode flat codes)
    recon      the model's outputs for the test images (corrupted as it sees them)
    floor      as many held-out real images (the training split): the score of a perfect generator at this count
    baseline   corrupted tasks only: the corrupted input itself, or its bicubic upsampling for super-resolution

Logged as `test/<metric>_<set>` with `test/feature_accuracy` (the feature network's test accuracy); the feature
space's name, key and recipe go to `sample_quality.json` in the run directory with every number. A grid of each
sampler's images goes to TensorBoard as `test/figures/samples_<sampler>`.

A run whose test is limited to a few batches (trainer=debug) scores as many images as it tested, fits the samplers
on 2 training images per tested image (at most 20 EM steps), draws 10 KID subsets and, with features=auto, measures in the smoke
feature network (2,000 training images, 2 epochs), so smoke runs stay fast.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Literal

import torch

from aelab import baselines, sample_quality as sq
from aelab.callbacks.base import ModelCallback
from aelab.callbacks.figures import grid_figure, render
from aelab.callbacks.images import evaluating, logged_writer
from aelab.errors import check
from aelab.features import _binarize, feature_space, inception_space, is_binary
from aelab.files import write_atomic
from aelab.samplers import NAMES as SAMPLERS, make_samplers
from aelab.seeds import seeded_generator
from aelab.types import PositiveInt

log = logging.getLogger("aelab")
CHUNK = 500
SMOKE_FIT_PER_IMAGE = 2
SMOKE_GMM_ITERATIONS = 20
SMOKE_KID_SUBSETS = 10


class SampleQuality(ModelCallback):
    """n_images: images per scored set (capped by the test split); samplers: any of prior, gaussian, gmm;
    components: the mixture's k; nearest_k: the k of precision / recall / density / coverage; kid_subsets,
    kid_subset_size: KID's draws; features: domain (the dataset's classifier, full recipe), smoke, auto (smoke when
    the test is limited, else domain) or inception (inception_weights: a local torchvision state-dict file);
    fit_images: training codes the samplers are fitted on (null: all), further capped so that codes x dims^2 <=
    fit_cost (a full-covariance fit costs about that per EM step and component: 1e10 keeps every training code of a
    code up to 430 dims, and about 4,000 of a VQ-VAE's 1568-d maps, whose EM over all 54,000 left an earlier
    vqvae_mnist run's test phase unfinished);
    grid_images: images per TensorBoard grid;
    output_dir: where sample_quality.json goes (null: none); seed: every draw of the callback."""

    metrics = tuple(f"test/{m}_{s}" for s in ("prior", "gaussian", "gmm", "recon")
                    for m in ("fid", "kid", "precision", "recall")) + ("test/fid_floor", "test/fid_baseline",
                                                                       "test/feature_accuracy")

    def __init__(self, n_images: PositiveInt = 10000, samplers: list[str] = SAMPLERS, components: PositiveInt = 10,
                 nearest_k: PositiveInt = 5, kid_subsets: PositiveInt = 100, kid_subset_size: PositiveInt = 1000,
                 features: Literal["auto", "domain", "smoke", "inception"] = "auto",
                 inception_weights: str | None = None, fit_images: PositiveInt | None = None,
                 fit_cost: PositiveInt = 10_000_000_000, grid_images: PositiveInt = 64, output_dir: str | None = None,
                 seed: int = 0):
        unknown = [s for s in samplers if s not in SAMPLERS]
        check(not unknown, f"callbacks.sample_quality.samplers has {unknown}; allowed: {list(SAMPLERS)}")
        check(features in ("auto", "domain", "smoke", "inception"),
              f"callbacks.sample_quality.features={features!r}; allowed: auto, domain, smoke, inception")
        if features == "inception":
            inception_space(inception_weights)  # a missing weights file stops the run before training
        self.n_images, self.samplers, self.components = int(n_images), list(samplers), int(components)
        self.k, self.kid_subsets, self.kid_subset_size = int(nearest_k), int(kid_subsets), int(kid_subset_size)
        self.features, self.inception_weights, self.fit_images = features, inception_weights, fit_images
        self.fit_cost = int(fit_cost)
        self.grid_images, self.output_dir, self.seed = int(grid_images), output_dir, int(seed)
        self._spaces: dict[tuple, object] = {}

    def _tested(self, trainer) -> int | None:
        """Images the test saw when it is limited to some batches, else None."""
        limit = trainer.limit_test_batches
        if isinstance(limit, float) and limit == 1.0:
            return None
        batches = limit if isinstance(limit, int) else math.ceil(limit * trainer.num_test_batches[0])
        return int(batches) * trainer.datamodule.batch_size

    def _space(self, dm, smoke: bool, device):
        key = (dm.name, id(dm), smoke, self.features)
        if key not in self._spaces:
            if self.features == "inception":
                self._spaces[key] = inception_space(self.inception_weights, device)
            else:
                self._spaces[key] = feature_space(dm, smoke=smoke, device=device)
        return self._spaces[key]

    @torch.no_grad()
    def _outputs(self, module, images, labels):
        """(reconstructions, corrupted inputs) of uint8 test images, in chunks."""
        recon, inputs = [], []
        for i in range(0, len(images), CHUNK):
            batch = module.corrupted_batch(images[i:i + CHUNK], labels[i:i + CHUNK], "sample_quality")
            recon.append(module.model.reconstruct(batch).float())
            inputs.append(batch.input.float())
        return torch.cat(recon), torch.cat(inputs)

    @torch.no_grad()
    def _codes(self, module, images, labels) -> torch.Tensor:
        codes = []
        for i in range(0, len(images), CHUNK):
            batch = module.corrupted_batch(images[i:i + CHUNK], labels[i:i + CHUNK], "sample_quality/fit")
            codes.append(module.model.embed(batch.input, batch.label).float())
        return torch.cat(codes)

    def on_test_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking or trainer.datamodule is None or not self.applies(module.model):
            return
        dm, model, device = trainer.datamodule, module.model, module.device
        spec = dm.spec
        if self.features != "inception" and (spec.num_classes is None or spec.num_classes < 2):
            if not getattr(self, "_told_labels", False):
                self._told_labels = True
                log.info("SampleQuality: the data has no class labels for a feature network; no test/fid_* metrics")
            return
        start = time.perf_counter()
        tested = self._tested(trainer)
        smoke = self.features == "smoke" or (self.features == "auto" and tested is not None)
        space = self._space(dm, smoke, device)
        n = min(self.n_images, tested or self.n_images, dm.split_size("test"))
        test_images, test_labels = dm.drawn("test", n, self.seed, "sample_quality", "reference")
        reference = "test split" if n == dm.split_size("test") else f"a seeded draw of {n} test images"
        train_images, train_labels = dm.all_of("train")
        draw = torch.randperm(len(train_images), generator=seeded_generator("cpu", self.seed, "sample_quality"))
        binarize = is_binary(test_images) and not is_binary(train_images)

        def like_test(images: torch.Tensor, stream: str) -> torch.Tensor:
            return _binarize(images, seeded_generator("cpu", self.seed, stream)) if binarize else images

        sets: dict[str, torch.Tensor] = {"floor": like_test(train_images[draw[:n]], "floor")}
        grids: dict[str, torch.Tensor] = {}
        with evaluating(module):
            recon, inputs = self._outputs(module, test_images, test_labels)
            sets["recon"] = recon
            target_shape = tuple(recon.shape[1:])
            if tuple(inputs.shape[1:]) != target_shape:
                sets["baseline"] = baselines.bicubic(inputs, target_shape[1:]).clamp(0, 1)
            elif not torch.equal(inputs.cpu(), test_images.float() / 255):
                sets["baseline"] = inputs
            fit_n = self.fit_images if tested is None else SMOKE_FIT_PER_IMAGE * tested
            if model.capabilities.embedding is not None:
                by_cost = max(2 * self.components, self.fit_cost // model.capabilities.embedding.size ** 2)
                fit_n = by_cost if fit_n is None else min(fit_n, by_cost)
            fit = draw[:fit_n]
            labels = train_labels[draw[-n:]].to(device)  # classes as often as in training, for conditional models
            samplers = make_samplers(self.samplers, model, self.components, self.seed, labels,
                                     max_iter=100 if tested is None else SMOKE_GMM_ITERATIONS)
            if any(name != "prior" for name in samplers):
                codes = self._codes(module, like_test(train_images[fit], "fit").to(device),
                                    train_labels[fit].to(device))
            for name, sampler in samplers.items():
                if name != "prior":
                    sampler.fit(codes)
                z = sampler.sample(n, seeded_generator("cpu", self.seed, "sample_quality", name)).to(device)
                sets[name] = torch.cat([model.generate(z[i:i + CHUNK], labels[i:i + CHUNK]).float()
                                        for i in range(0, n, CHUNK)])
                grids[name] = sets[name][:self.grid_images]
        kid_subsets = self.kid_subsets if tested is None else min(self.kid_subsets, SMOKE_KID_SUBSETS)
        real = space(test_images)
        radii = sq.knn_radii(real, self.k)
        results = {}
        for name, images in sets.items():
            results[name] = sq.score(real, space(images), self.k, kid_subsets, self.kid_subset_size, self.seed,
                                     radii)
            for metric in sq.METRICS:
                module.log(f"test/{metric}_{name}", results[name][metric], on_step=False, on_epoch=True)
        if space.accuracy is not None:
            module.log("test/feature_accuracy", space.accuracy, on_step=False, on_epoch=True)
        self._grids(trainer, grids)
        seconds = time.perf_counter() - start
        self._record({"feature_space": space.info, "images_per_set": n, "reference": reference,
                      "fit_images": len(fit) if samplers and any(s != "prior" for s in samplers) else 0,
                      "nearest_k": self.k, "kid_subsets": kid_subsets,
                      "kid_subset_size": min(self.kid_subset_size, n), "prior": model.capabilities.prior,
                      "sets": results, "seconds": round(seconds, 1)})
        log.info("SampleQuality: %d sets of %d images scored in %s in %.1f s", len(sets), n, space.name, seconds)

    def _grids(self, trainer, grids: dict[str, torch.Tensor]) -> None:
        writer = logged_writer(trainer)
        if writer is None or not trainer.is_global_zero:
            return
        for name, images in grids.items():
            ncol = max(1, int(len(images) ** 0.5))
            rows = [r for r in images.cpu().split(ncol) if len(r) == ncol] or [images.cpu()]
            fig = grid_figure(rows, [""] * len(rows), f"samples of the {name} sampler", tuple(images.shape[1:]))
            writer.add_image(f"test/figures/samples_{name}", render(fig), trainer.global_step, dataformats="HWC")

    def _record(self, record: dict) -> None:
        if not self.output_dir:
            return
        path = Path(self.output_dir) / "sample_quality.json"
        write_atomic(path, lambda f: f.write(json.dumps(record, indent=2).encode()))
