"""Any folder of images. Sub-folders become class labels (sorted names); a flat folder is one class.

A seeded `test_fraction` of the files is the test split (a folder has no official one). Images are converted to
`channels` (1 = greyscale, 3 = RGB), resized (shorter side) and centre-cropped to `image_size`.
Set `in_memory: false` for folders too large for memory: images are then decoded per sample.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from aelab.data.base import ImageDataModule
from aelab.errors import DataError, check
from aelab.seeds import seeded_generator

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ImageFiles(Dataset):
    def __init__(self, files: list[Path], labels: list[int], mode: str, transform):
        self.files, self.labels, self.mode, self.transform = files, labels, mode, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert(self.mode)), self.labels[i]


class ImageFolderDataModule(ImageDataModule):
    name = "image_folder"

    def __init__(self, *args, image_size: int = 64, channels: int = 3, test_fraction: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        check(isinstance(image_size, int) and image_size >= 8, f"data.image_size must be an integer >= 8, got {image_size!r}")
        check(channels in (1, 3), f"data.channels must be 1 or 3, got {channels!r}")
        check(0 < test_fraction < 1, f"data.test_fraction must be in (0, 1), got {test_fraction!r}")
        self.image_size, self.channels, self.test_fraction = image_size, channels, test_fraction
        self.transform = v2.Compose([v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size),
                                     v2.PILToTensor()])
        self._files: dict[str, ImageFiles] | None = None

    def _scan(self) -> dict[str, ImageFiles]:
        if self._files is not None:
            return self._files
        if not self.data_dir.is_dir():
            raise DataError(f"image_folder: {self.data_dir} is not a folder; set data.data_dir=<folder of images>")
        files = sorted(p for p in self.data_dir.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not files:
            raise DataError(f"image_folder: no images ({', '.join(EXTENSIONS)}) under {self.data_dir}")
        unreadable = []
        for f in files:
            try:
                with Image.open(f) as img:
                    img.verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                unreadable.append(f"{f.relative_to(self.data_dir)} ({type(e).__name__})")
        if unreadable:
            shown = ", ".join(unreadable[:5]) + (f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else "")
            raise DataError(f"image_folder: {len(unreadable)} unreadable image(s) in {self.data_dir}: {shown}; "
                            "remove or replace them")
        classes = sorted({f.relative_to(self.data_dir).parts[0] for f in files if f.parent != self.data_dir})
        self.num_classes, self._classes = max(1, len(classes)), tuple(classes) or None
        labels = [classes.index(f.relative_to(self.data_dir).parts[0]) if f.parent != self.data_dir else 0
                  for f in files]
        perm = torch.randperm(len(files), generator=seeded_generator("cpu", self.seed, "test_split")).tolist()
        n_test = max(1, round(len(files) * self.test_fraction))
        mode = "L" if self.channels == 1 else "RGB"
        pick = lambda idx: ImageFiles([files[i] for i in sorted(idx)], [labels[i] for i in sorted(idx)], mode,
                                      self.transform)
        self._files = {"test": pick(perm[:n_test]), "train": pick(perm[n_test:])}
        return self._files

    def expected_shape(self):
        return (self.channels, self.image_size, self.image_size)

    def class_names(self) -> tuple[str, ...] | None:
        """The class sub-folders' names (None for a flat folder: one unnamed class)."""
        self._scan()
        return self._classes

    def samples(self, split: str) -> Dataset:
        return self._scan()[split]

    def cache_key(self) -> str:
        files = self._scan()
        stamp = sum(f.stat().st_size + int(f.stat().st_mtime) for s in files.values() for f in s.files)
        return f"{self.data_dir.resolve()}|{stamp}|{self.image_size}|{self.channels}|{self.test_fraction}|{self.seed}"
