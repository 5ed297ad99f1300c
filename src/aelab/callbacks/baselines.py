"""Baselines scored beside the model on the very batches it is validated and tested on (see aelab.baselines).

Logs `{stage}/psnr_baseline_{identity,bicubic,pca,mean}` for val and test, plus `{stage}/psnr_baseline` for the
one the model must beat: bicubic for super-resolution, identity for other corruptions, PCA for plain autoencoders
(there the input already is the target). SSIM costs as much as a small model's forward pass on 64x64 RGB, so by
default only the main baseline gets `{stage}/ssim_baseline` (ssim=all adds `ssim_baseline_{name}` for each).
"""

from __future__ import annotations

import lightning as L
import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from aelab import baselines
from aelab.corruptions import Identity
from aelab.data import to_float
from aelab.errors import check

SSIM_CHOICES = ("main", "all", "none")


class Baselines(L.Callback):
    """`fit_images` clean training images (capped so that images x pixels <= `fit_values`) fit the PCA; the mean
    image uses the whole training split. Both are fitted once per datamodule, on the first evaluated batch.
    ssim: "main" (the main baseline only), "all" or "none"."""

    def __init__(self, names: list[str] = baselines.NAMES, fit_images: int = 5000, fit_values: int = 12_500_000,
                 ssim: str = "main"):
        names = list(names)
        unknown = [n for n in names if n not in baselines.NAMES]
        check(not unknown, f"callbacks.baselines.names has {unknown}; allowed: {list(baselines.NAMES)}")
        check(ssim in SSIM_CHOICES, f"callbacks.baselines.ssim={ssim!r} is not one of {list(SSIM_CHOICES)}")
        check(fit_images >= 2, f"callbacks.baselines.fit_images must be >= 2, got {fit_images!r}")
        self.names, self.fit_images, self.fit_values, self.ssim = names, int(fit_images), int(fit_values), ssim
        self._fitted_for: int | None = None
        self.pca: baselines.PCA | None = None
        self.mean: torch.Tensor | None = None

    # --- fitting -------------------------------------------------------------------------------------------------
    def _fit(self, trainer: L.Trainer, module) -> None:
        dm = trainer.datamodule
        if dm is None or self._fitted_for == id(dm):
            return
        self._fitted_for = id(dm)
        self.pca = self.mean = None
        shape = dm.image_shape
        pixels = shape[0] * shape[1] * shape[2]
        # PCA with the model's code size: a linear autoencoder with the same bottleneck (none without a code, and
        # none for a code with at least as many numbers as the image has pixels, as a VQ-VAE's map can: that PCA
        # is the identity, a perfect, meaningless score)
        embedding = module.model.capabilities.embedding
        if "pca" in self.names and embedding is not None and embedding.size < pixels:
            k = embedding.size
            n = min(self.fit_images, max(k + 1, self.fit_values // pixels), dm.split_size("train"))
            images, _ = dm.all_of("train", n)
            self.pca = baselines.fit_pca(to_float(images), k).to(module.device)
        if "mean" in self.names:
            images, _ = dm.all_of("train")
            self.mean = baselines.mean_image(images).to(module.device)

    # --- scoring -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, trainer: L.Trainer, module, outputs, stage: str) -> None:
        if trainer.sanity_checking or not isinstance(outputs, dict) or "batch" not in outputs:
            return
        self._fit(trainer, module)
        batch = outputs["batch"]
        target = batch.target
        outs = baselines.reconstructions(batch.input.float(), tuple(target.shape[1:]), self.pca, self.mean)
        outs = {k: v for k, v in outs.items() if k in self.names}
        super_resolution = tuple(batch.input.shape[-2:]) != tuple(target.shape[-2:])
        corrupted = not isinstance(module.corruption, Identity)
        if not corrupted:
            outs.pop("identity", None)  # the input is the target: a perfect, meaningless score
        n = len(target)
        main = baselines.relevant(outs, super_resolution, corrupted)
        log = dict(on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        for name, pred in outs.items():
            value = baselines.psnr(pred, target).mean()
            module.log(f"{stage}/psnr_baseline_{name}", value, **log)
            if name == main:
                module.log(f"{stage}/psnr_baseline", value, **log)
            if self.ssim == "all" or (self.ssim == "main" and name == main):
                value = structural_similarity_index_measure(pred.float(), target, data_range=1.0)
                module.log(f"{stage}/ssim_baseline" + ("" if name == main else f"_{name}"), value, **log)
                if self.ssim == "all" and name == main:
                    module.log(f"{stage}/ssim_baseline_{name}", value, **log)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self._score(trainer, module, outputs, "val")

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        self._score(trainer, module, outputs, "test")
