"""Binarized MNIST: each pixel drawn from Bernoulli(p = pixel / 255), the usual set-up for likelihood comparisons.

Training images are binarized afresh for every batch ("dynamic binarization") where the batch already is: on the
GPU when the splits live there (data.on_device), after the transfer otherwise, so no per-batch work waits on the
CPU. The draw is seeded by (data.seed, epoch, the batch's position in the epoch), so it does not depend on workers
and a resumed run replays the same images. Validation and test hold one binarization made once with `eval_seed`
(independent of the run's seed: every run is scored on the same test images). Batches stay uint8 in {0, 255}, so
the rest of the pipeline (to_float, corruptions, metrics) is unchanged.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from aelab.data.base import EpochBatchSampler, IndexedBatches, Split
from aelab.data.mnist import MNISTDataModule
from aelab.errors import check
from aelab.seeds import derive_seed, seeded_generator


def binarize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 grey levels -> uint8 {0, 255}: white with probability pixel / 255 (drawn on the images' device)."""
    white = torch.rand(images.shape, generator=generator, device=images.device) * 255 < images.float()
    return white.to(torch.uint8).mul_(255)


class SeededBatchSampler(EpochBatchSampler):
    """EpochBatchSampler whose items also carry the seed of the batch's binarization, from the batch's position in
    the whole epoch (not this rank's share), computed without reading the indices (they may live on the GPU)."""

    def __iter__(self):
        for i, index in enumerate(self._batches()):
            yield derive_seed(self.seed, "binarize", self.epoch, self.rank + i * self.world_size), index


class GreyBatches(IndexedBatches):
    """(grey images, labels, seed): the binarization itself waits until the batch is on the model's device."""

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        seed, index = item
        return (*super().__getitem__(index), seed)


class BinarizedMNISTDataModule(MNISTDataModule):
    name = "binarized_mnist"

    def __init__(self, *args, eval_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        check(self.in_memory, "data.in_memory=false is not supported by binarized_mnist (MNIST fits in memory); "
                              "set data.in_memory=true")
        self.eval_seed = int(eval_seed)

    def setup(self, stage: str | None = None) -> None:
        fresh = not self.splits
        super().setup(stage)
        if fresh:  # one fixed binarization of val and test; train keeps its grey levels for the dynamic draws
            for split in ("val", "test"):
                s = self.splits[split]
                gen = seeded_generator("cpu", self.eval_seed, "binarize", split)
                self.splits[split] = Split(binarize(s.images, gen), s.labels)

    def train_dataloader(self) -> DataLoader:
        device = self.batch_device()
        resident = self.resident("train", device)
        sampler = self.sampler("train", SeededBatchSampler, device=device if resident is not None else None)
        if resident is not None:
            return DataLoader(GreyBatches(resident), sampler=sampler, batch_size=None)
        return DataLoader(GreyBatches(self.splits["train"]), sampler=sampler, batch_size=None, **self.loader_options())

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches arrive grey with their seed: binarize them here, on the device they are on."""
        if len(batch) == 3:
            images, labels, seed = batch
            return binarize(images, seeded_generator(images.device, seed)), labels
        return batch

    def fixed_batch(self, split: str = "val", n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = super().fixed_batch(split, n)
        if split == "train":  # figures of training images: one fixed binarization, like val and test
            images = binarize(images, seeded_generator("cpu", self.eval_seed, "binarize", "train"))
        return images, labels
