"""Oxford 102 Flowers through torchvision's `Flowers102` (reads the folder as it is; needs scipy).

Images are resized (shorter side) and centre-cropped to `image_size`; decoded tensors are cached under `cache_dir`
because decoding ~8,000 JPEGs costs seconds on every run.
"""

from __future__ import annotations

import torch
import torchvision
from torch.utils.data import ConcatDataset, Dataset
from torchvision.transforms import v2

from aelab.data.base import ImageDataModule, Split, md5
from aelab.errors import DataError, check


class FlowersDataModule(ImageDataModule):
    name = "flowers"
    num_classes = 102

    def __init__(self, *args, image_size: int = 64, train_splits: tuple[str, ...] = ("train", "val"), **kwargs):
        super().__init__(*args, **kwargs)
        check(isinstance(image_size, int) and image_size >= 8, f"data.image_size must be an integer >= 8, got {image_size!r}")
        bad = [s for s in train_splits if s not in ("train", "val", "test")]
        check(not bad, f"data.train_splits: {bad} not in allowed ['train', 'val', 'test']")
        self.image_size, self.train_splits = image_size, list(train_splits)
        self.transform = v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size),
                                     v2.PILToTensor()])

    def _official(self, split: str) -> Dataset:
        try:
            return torchvision.datasets.Flowers102(str(self.data_dir), split=split, transform=self.transform,
                                                   download=self.download)
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(f"flowers: no intact Oxford 102 Flowers in {self.data_dir / 'flowers-102'} ({reason}). "
                            "Put jpg/, imagelabels.mat and setid.mat there and set AELAB_DATA_DIR=<dir> or "
                            "data.data_dir=<dir>") from None

    def samples(self, split: str) -> Dataset:
        parts = self.train_splits if split == "train" else ["test"]
        return ConcatDataset([self._official(p) for p in parts])

    def cache_key(self) -> str:
        root = self.data_dir / "flowers-102"
        mats = ",".join(md5(root / f) for f in ("imagelabels.mat", "setid.mat") if (root / f).exists())
        jpgs = sorted((root / "jpg").glob("*.jpg")) if (root / "jpg").exists() else []
        stamp = sum(p.stat().st_size for p in jpgs)  # cheap change detector for the images
        return f"{mats}|{len(jpgs)}|{stamp}|{self.image_size}|{self.train_splits}"

    def expected_shape(self):
        return (3, self.image_size, self.image_size)

    def class_names(self) -> tuple[str, ...]:
        return tuple(torchvision.datasets.Flowers102.classes)

    def load(self, split: str) -> Split:
        try:
            return super().load(split)
        except DataError:
            raise
        except Exception as e:  # PIL names the file it could not decode
            raise DataError(f"flowers: an image could not be decoded: {e}") from None
