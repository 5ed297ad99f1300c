"""Binarized MNIST: each pixel drawn from Bernoulli(p = pixel / 255), the usual set-up for likelihood comparisons.

Training images are binarized afresh for every batch ("dynamic binarization"); the draw is seeded by
(data.seed, epoch, the batch's first image index), so it does not depend on workers or devices and a resumed run
replays the same images. Validation and test hold one binarization made once with `eval_seed` (independent of the
run's seed: every run is scored on the same test images). Batches stay uint8 in {0, 255}, so the rest of the
pipeline (to_float, corruptions, metrics) is unchanged.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from aelab.data.base import EpochBatchSampler, IndexedBatches, Split
from aelab.data.mnist import MNISTDataModule
from aelab.errors import check
from aelab.seeds import derive_seed, seeded_generator


def binarize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 grey levels -> uint8 {0, 255}: white with probability pixel / 255."""
    white = torch.rand(images.shape, generator=generator) * 255 < images.float()
    return white.to(torch.uint8).mul_(255)


def batch_seed(seed: int, epoch: int, first_index: int) -> int:
    return derive_seed(seed, "binarize", epoch, first_index)


class SeededBatchSampler(EpochBatchSampler):
    """EpochBatchSampler whose items also carry the seed of the batch's binarization (computed in the main process,
    so worker processes need no knowledge of the epoch)."""

    def __iter__(self):
        return ((batch_seed(self.seed, self.epoch, int(b[0])), b.tolist()) for b in self._batches())


class BinarizedBatches(IndexedBatches):
    def __getitem__(self, item: tuple[int, list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        seed, index = item
        images, labels = super().__getitem__(index)
        return binarize(images, torch.Generator().manual_seed(seed)), labels


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

    def train_dataloader(self) -> DataLoader:  # binarized on the CPU (its seeded draws): on_device serves val/test
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = SeededBatchSampler(self.split_size("train"), self.batch_size, True, self.seed,
                                     drop_last=self.drop_last, rank=rank, world_size=world)
        return DataLoader(BinarizedBatches(self.splits["train"]), sampler=sampler, batch_size=None,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def fixed_batch(self, split: str = "val", n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = super().fixed_batch(split, n)
        if split == "train":  # figures of training images: one fixed binarization, like val and test
            images = binarize(images, seeded_generator("cpu", self.eval_seed, "binarize", "train"))
        return images, labels
