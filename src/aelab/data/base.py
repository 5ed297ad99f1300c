"""Shared datamodule: official train/test splits, a seeded validation split, batches of uint8 images.

Small datasets (MNIST, Fashion-MNIST, the flowers copy) live in memory as one uint8 tensor per split and batches are
built by indexing it: no per-sample PIL/ToTensor work. On a GPU the splits are copied to the device once
(`on_device`), so a batch is one index_select there and nothing crosses the bus per step. `in_memory=false` keeps
torchvision's per-sample path for image folders too large for memory. All paths draw batches from the same seeded
sampler, so they yield identical batches. Pixels stay uint8 until they reach the model's device, where `to_float`
scales them to [0, 1].
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from aelab.errors import DataError, check
from aelab.files import write_atomic
from aelab.seeds import seeded_generator
from aelab.types import Fraction, NonNegativeInt, PositiveInt


@dataclass(frozen=True)
class DataSpec:
    """What the rest of a run needs to know about the data before any model is built: the clean images' shape
    (C, H, W), the number of classes (None: unlabelled) and their names. Models, corruptions and callbacks take
    their shapes and class counts from it."""

    shape: tuple[int, int, int]
    num_classes: int | None
    class_names: tuple[str, ...] | None = None


def pack_bits(images: torch.Tensor) -> torch.Tensor:
    """Binary uint8 images [N, C, H, W] (0 or 255) -> their bits, eight pixels a byte, first pixel in the highest
    bit: uint8 [N, ceil(C*H*W / 8)]."""
    return torch.from_numpy(np.packbits(images.reshape(len(images), -1).numpy() > 0, axis=1))


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """pack_bits undone, on the device `packed` is on: uint8 [N, *shape], 0 or 255."""
    bits = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    flat = (packed.unsqueeze(-1) >> bits).bitwise_and_(1).reshape(len(packed), -1)[:, :math.prod(shape)]
    return flat.reshape(len(packed), *shape).mul_(255)


@dataclass
class Split:
    """One split held in memory: images uint8 [N, C, H, W], labels int64 [N], and for data with ground-truth factors
    of variation (dSprites) their indices int64 [N, K], which follow the images through every subset and copy.

    Binary images can be held bit-packed (pack_bits: `images` is [N, bytes] and `packed_shape` their (C, H, W)),
    eight times smaller; `decoded` gives them back as images, and loaders decode each batch where it is drawn."""

    images: torch.Tensor
    labels: torch.Tensor
    factors: torch.Tensor | None = None
    packed_shape: tuple[int, int, int] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def decoded(self, images: torch.Tensor | None = None) -> torch.Tensor:
        """These images (default: all of the split's), as uint8 [N, C, H, W]."""
        images = self.images if images is None else images
        return images if self.packed_shape is None else unpack_bits(images, self.packed_shape)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return self.packed_shape or tuple(self.images.shape[1:])

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], self.labels[index],
                     self.factors[index] if self.factors is not None else None, self.packed_shape)

    def to(self, device: torch.device) -> "Split":
        return Split(self.images.to(device), self.labels.to(device),
                     self.factors.to(device) if self.factors is not None else None, self.packed_shape)

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.labels.nbytes + (self.factors.nbytes if self.factors is not None else 0)


class SplitSamples(Dataset):
    """Per-sample view of an in-memory split (the map-style Dataset that torchvision pipelines expect): (image,
    label), and the image's factors for data with factors."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple:
        image = self.split.decoded(self.split.images[i:i + 1])[0]
        if self.split.factors is not None:
            return image, int(self.split.labels[i]), self.split.factors[i]
        return image, int(self.split.labels[i])


class IndexedBatches(Dataset):
    """Whole batches by indexing: the sampler yields index tensors (on the split's device), this returns
    (images, labels), or (images, labels, factors) for data with factors. index_select copies whole rows: ~15x
    faster than fancy indexing for a batch of MNIST."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: torch.Tensor | list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(index, device=self.split.images.device)
        batch = (self.split.decoded(self.split.images.index_select(0, index)), self.split.labels.index_select(0, index))
        if self.split.factors is not None:
            return (*batch, self.split.factors.index_select(0, index))
        return batch


class SampleBatches(Dataset):
    """Whole batches from a per-sample Dataset (in_memory=false): read each index of the list, then collate, as a
    DataLoader with a batch_sampler would. Passing the sampler as `sampler` instead matters: Lightning calls
    `set_epoch` on `dataloader.sampler`, never on a batch_sampler, so the epoch order would otherwise never change."""

    def __init__(self, samples: Dataset):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: torch.Tensor | list[int]):
        return default_collate([self.samples[i] for i in torch.as_tensor(index).tolist()])


class EpochBatchSampler(torch.utils.data.Sampler):
    """Yields index batches (int64 tensors); the order depends only on (seed, epoch), so a resumed run replays the
    same epoch. With `device`, the epoch's order is drawn on the CPU as always, then copied there in one transfer.

    With several processes (DDP) each rank takes every world_size-th batch of the same permutation.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, device: torch.device | str | None = None):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.device = torch.device(device) if device is not None else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at every epoch start
        self.epoch = epoch

    def _batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=seeded_generator("cpu", self.seed, "order", self.epoch))
        else:
            order = torch.arange(self.n)
        if self.device is not None:
            order = order.to(self.device)
        batches = list(order.split(self.batch_size))
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        usable = len(batches) - len(batches) % self.world_size if self.world_size > 1 and self.shuffle else len(batches)
        return batches[self.rank:usable:self.world_size]

    def __iter__(self):
        # a generator: the order is drawn at the first next(), not when the iterator is made; on resume Lightning
        # makes the iterator before it calls set_epoch, and an eager order would replay epoch 0's batches
        yield from self._batches()

    def __len__(self) -> int:  # arithmetic: drawing (and copying) an epoch's order just to count it would be waste
        full, rest = divmod(self.n, self.batch_size)
        count = full + (1 if rest and not self.drop_last else 0)
        usable = count - count % self.world_size if self.world_size > 1 and self.shuffle else count
        return len(range(self.rank, usable, self.world_size))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1] (done on the model's device, after the cheap uint8 transfer)."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_torch_save(obj, path: Path) -> None:
    """torch.save through aelab.files.write_atomic: readers never see a half-written cache file, and two
    processes filling the same cache at once each rename a complete file."""
    write_atomic(path, lambda f: torch.save(obj, f))


class ImageDataModule(L.LightningDataModule):
    """Base for every dataset. Subclasses implement `samples(split)` for the official "train" and "test" splits
    (a Dataset of (uint8 CHW tensor, label)) or override `load(split)` when the files already hold tensors."""

    name = "images"
    num_classes: int | None = None
    # Ground-truth factors of variation (dSprites): their names and number of values; data that has them also
    # gives factors(split, limit) [N, K] aligned with all_of(split) and render(factors) -> uint8 images
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()

    def __init__(self, data_dir: str | Path, batch_size: PositiveInt = 128, num_workers: NonNegativeInt = 0,
                 val_fraction: Fraction = 0.1,
                 seed: int = 0, in_memory: bool = True, cache_dir: str | None = None, download: bool = True,
                 pin_memory: bool | None = None, drop_last: bool = False, on_device: bool | str = "auto"):
        super().__init__()
        check(isinstance(batch_size, int) and batch_size >= 1, f"data.batch_size must be an integer >= 1, got {batch_size!r}")
        check(isinstance(num_workers, int) and num_workers >= 0, f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        check(0 < val_fraction < 1, f"data.val_fraction must be in (0, 1), got {val_fraction!r}")
        check(on_device in (True, False, "auto"), f"data.on_device must be auto, true or false, got {on_device!r}")
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.num_workers, self.val_fraction = batch_size, num_workers, val_fraction
        self.seed, self.in_memory, self.download, self.drop_last = seed, in_memory, download, drop_last
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.on_device = on_device
        self.splits: dict[str, Split] = {}
        self.device_splits: dict[str, Split] = {}  # copies of `splits` on the accelerator (on_device)
        self.sample_sets: dict[str, Dataset] = {}
        self._spec: DataSpec | None = None

    # --- what subclasses provide -------------------------------------------------------------------------------
    def samples(self, split: str) -> Dataset:
        """Per-sample Dataset of the official split ("train" or "test") yielding (uint8 [C, H, W], int label)."""
        return SplitSamples(self.load(split))

    def load(self, split: str) -> Split:
        """The official split in memory. Default: decode `samples(split)` once, cached under cache_dir."""
        cache = self._cache_path(split)
        if cache is not None and cache.exists():
            try:
                images, labels = torch.load(cache, weights_only=True)
                return Split(images, labels)
            except Exception:  # a damaged cache file is rebuilt, never trusted
                cache.unlink(missing_ok=True)
        data = self.samples(split)
        images, labels = [], []
        for i in range(len(data)):
            image, label = data[i]
            images.append(image)
            labels.append(label)
        loaded = Split(torch.stack(images), torch.as_tensor(labels, dtype=torch.long))
        if cache is not None:
            atomic_torch_save((loaded.images, loaded.labels), cache)
        return loaded

    def class_names(self) -> tuple[str, ...] | None:
        """Names of the classes, in label order (None: unknown or unlabelled)."""
        return None

    def cache_key(self) -> str | None:
        """A string that changes whenever the decoded tensors would (source files, image size...); None: no cache."""
        return None

    # --- shared machinery --------------------------------------------------------------------------------------
    def _cache_path(self, split: str) -> Path | None:
        key = self.cache_key()
        if self.cache_dir is None or key is None:
            return None
        digest = hashlib.sha1(f"{key}|{split}".encode()).hexdigest()[:16]
        return self.cache_dir / f"{self.name}-{split}-{digest}.pt"

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return  # idempotent: train.py sets up early to read shapes, Lightning calls setup again
        if self.in_memory:
            train, test = self.load("train"), self.load("test")
            train_idx, val_idx = self._val_split(len(train))
            self.splits = {"train": train.subset(train_idx), "val": train.subset(val_idx), "test": test}
        else:
            train, test = self.samples("train"), self.samples("test")
            train_idx, val_idx = self._val_split(len(train))
            self.sample_sets = {"train": torch.utils.data.Subset(train, train_idx.tolist()),
                                "val": torch.utils.data.Subset(train, val_idx.tolist()), "test": test}
            first = test[0][0]
            self.splits = {k: Split(first[None].new_empty((0, *first.shape)), torch.empty(0, dtype=torch.long))
                           for k in ("train", "val", "test")}  # shape carrier only
        expected, got = self.expected_shape(), self.image_shape
        if expected is not None and tuple(expected) != tuple(got):
            raise DataError(f"{self.name}: images have shape {got}, expected {expected}; check the data files")
        n_train = self.split_size("train")
        if n_train < self.batch_size:
            raise DataError(f"{self.name}: the training split has {n_train} images, fewer than one batch "
                            f"(data.batch_size={self.batch_size}); lower data.batch_size or add images")

    def _val_split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_val = max(1, round(n * self.val_fraction))
        perm = torch.randperm(n, generator=seeded_generator("cpu", self.seed, "val_split"))
        return perm[n_val:].sort().values, perm[:n_val].sort().values

    def split_size(self, split: str) -> int:
        return len(self.sample_sets[split]) if self.sample_sets else len(self.splits[split])

    def expected_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) the dataset delivers, known from the config alone (None: only known after reading)."""
        return None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the clean images: models derive their shapes from it."""
        if not self.splits and (shape := self.expected_shape()) is not None:
            return shape
        if not self.splits:
            self.setup()
        return self.splits["test"].shape if not self.sample_sets else \
            tuple(self.sample_sets["test"][0][0].shape)

    @property
    def spec(self) -> DataSpec:
        """Shape and classes, computed once: from the config where the dataset knows them (MNIST, flowers, a
        folder's file listing), else from the data this module reads anyway (nothing is decoded twice)."""
        if self._spec is None:
            names = self.class_names()
            shape = tuple(int(s) for s in self.image_shape)
            self._spec = DataSpec(shape, len(names) if names else self.num_classes, names)
        return self._spec

    def batch_device(self) -> torch.device | None:
        """The accelerator the in-memory splits are kept on, or None (batches are built on the CPU and Lightning
        copies each one over). on_device=auto: on a CUDA device when all splits take under a quarter of its free
        memory (MNIST: 55 MB); true: on any accelerator; false: never."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or self.sample_sets or not self.splits or self.on_device is False:
            return None
        device = trainer.strategy.root_device
        if device.type == "cpu":
            return None  # the splits are already there
        if self.on_device == "auto":
            if device.type != "cuda":
                return None
            need = sum(s.nbytes for s in self.splits.values())
            if need > self.device_budget(device):
                return None
        return device

    @staticmethod
    def device_budget(device: torch.device) -> int:
        """Bytes of the GPU the splits may take (on_device=auto): a quarter of what this job may use, i.e. of the
        free memory, or of its share when parallel sweep jobs share the GPU (aelab.sweep.gpu_share)."""
        free, total = torch.cuda.mem_get_info(device)
        try:
            fraction = torch.cuda.get_per_process_memory_fraction(device)
        except (AttributeError, RuntimeError):  # an older torch, or no CUDA context to ask
            fraction = 1.0
        return int(min(free, fraction * total)) // 4

    def dataloader(self, split: str, device: torch.device | None = None) -> DataLoader:
        """Batches of one split ("train" shuffled, "val"/"test" in order); with `device`, the split is copied there
        once and batches are built there (no workers, no pinning: nothing crosses the bus per batch)."""
        resident = self.resident(split, device)
        sampler = self.sampler(split, EpochBatchSampler, device=device if resident is not None else None)
        if resident is not None:
            return DataLoader(IndexedBatches(resident), sampler=sampler, batch_size=None)
        batches = SampleBatches(self.sample_sets[split]) if self.sample_sets else IndexedBatches(self.splits[split])
        return DataLoader(batches, sampler=sampler, batch_size=None, **self.loader_options())

    def resident(self, split: str, device: torch.device | None) -> Split | None:
        """The in-memory split copied to `device` once (kept for later epochs), or None (no device, or per-sample
        data)."""
        if device is None or self.sample_sets:
            return None
        resident = self.device_splits.get(split)
        if resident is None or resident.images.device != device:
            resident = self.device_splits[split] = self.splits[split].to(device)
        return resident

    def sampler(self, split: str, kind: type[EpochBatchSampler] = EpochBatchSampler,
                device: torch.device | None = None) -> EpochBatchSampler:
        """The split's seeded batch sampler ("train" shuffled, with drop_last if set), sharded by the DDP rank."""
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        shuffle = split == "train"
        return kind(self.split_size(split), self.batch_size, shuffle, self.seed, drop_last=self.drop_last and shuffle,
                    rank=rank, world_size=world, device=device)

    def loader_options(self) -> dict:
        """DataLoader settings for batches built on the CPU (workers, pinned memory for the copy)."""
        return dict(num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", self.batch_device())

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("val", self.batch_device())

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test", self.batch_device())

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def fixed_batch(self, split: str = "val", n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n images of a split (for image grids and figures: the same images every epoch)."""
        if self.sample_sets:
            items = [self.sample_sets[split][i] for i in range(min(n, self.split_size(split)))]
            return torch.stack([item[0] for item in items]), torch.as_tensor([item[1] for item in items])
        s = self.splits[split]
        return s.decoded(s.images[:n]), s.labels[:n]

    def all_of(self, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to `limit` images and labels of a split, in order (latent scatter plots, baselines)."""
        n = self.split_size(split) if limit is None else min(limit, self.split_size(split))
        return self.fixed_batch(split, n)

    def drawn(self, split: str, limit: int | None, *stream) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to `limit` images and labels of a split as a sample of it: all of them in order, or a seeded draw of
        `limit` (the stream names it) where the split is larger. Never its first images: a split's order can follow
        its sources (MNIST's test split holds two writer populations one after the other)."""
        images, labels = self.all_of(split)
        if limit is None or limit >= len(images):
            return images, labels
        pick = torch.randperm(len(images), generator=seeded_generator("cpu", *stream))[:limit]
        return images[pick], labels[pick]
