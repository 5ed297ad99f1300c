"""Any folder of images. Sub-folders become class labels (sorted names); a flat folder is one class.

A seeded `test_fraction` of the files is the test split (a folder has no official one). Images are converted to
`channels` (1 = greyscale, 3 = RGB), resized (shorter side) and centre-cropped to `image_size`.
Set `in_memory: false` for folders too large for memory: images are then decoded per sample.

Every image mode Pillow reads becomes 8-bit with its own range (`to_mode`): 16-bit greyscale (I;16*) and 32-bit
integers holding 16-bit samples (I) scale [0, 65535] to [0, 255]; float images (F) scale [0, 1]; transparency (LA,
PA, RGBA, a palette's or a colour's tRNS) is composited over black; CMYK, YCbCr and HSV become RGB by Pillow's
formulas. LAB (it needs a colour profile), I beyond 16 bits and F beyond [0, 1] are refused, naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from aelab.data.base import ImageDataModule
from aelab.errors import DataError, check
from aelab.seeds import seeded_generator

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
ALPHA = ("LA", "PA", "RGBA")
EIGHT_BIT = ("1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV", "La", "RGBa", *ALPHA)  # Pillow converts these
MODES = (*EIGHT_BIT, *SIXTEEN_BIT, "I", "F")
REFUSED = {"LAB": "LAB needs a colour profile to become RGB; convert it with a colour-managed tool"}


def refused_mode(mode: str) -> str | None:
    """Why aelab does not read an image of this Pillow mode, or None when it does."""
    if mode in MODES:
        return None
    return REFUSED.get(mode, f"mode {mode} is not one aelab converts ({', '.join(MODES)})")


def to_mode(img: Image.Image, mode: str, name: str | Path = "") -> Image.Image:
    """`img` as 8-bit `mode` ("L" or "RGB") with its samples' real range (see the module's docstring); Pillow's own
    convert clips 16-bit, 32-bit and float samples as if they were 8-bit ones."""
    source = img.mode
    if (why := refused_mode(source)) is not None:
        raise DataError(f"image_folder: {name}: {why}")
    if source in SIXTEEN_BIT or source == "I":
        samples = np.asarray(img).astype(np.int64)
        if source == "I" and samples.size and (samples.min() < 0 or samples.max() > 65535):
            raise DataError(f"image_folder: {name}: mode I (32-bit integer) values span [{samples.min()}, "
                            f"{samples.max()}]; aelab reads them as 16-bit samples in [0, 65535]: save the image "
                            "with 8 or 16 bits")
        img = Image.fromarray(((samples * 255 + 32767) // 65535).astype(np.uint8))  # round(v / 257)
    elif source == "F":
        samples = np.asarray(img).astype(np.float64)
        if samples.size and not (np.isfinite(samples).all() and samples.min() >= 0 and samples.max() <= 1):
            raise DataError(f"image_folder: {name}: mode F (float) values span [{np.nanmin(samples):g}, "
                            f"{np.nanmax(samples):g}]; aelab reads float images as [0, 1]: rescale or save with "
                            "8 or 16 bits")
        img = Image.fromarray(np.rint(samples * 255).astype(np.uint8))
    elif source == "La":  # premultiplied: the grey band is already composited over black
        img = img.getchannel(0)
    elif source == "RGBa":
        img = Image.merge("RGB", img.split()[:3])
    elif source in ALPHA or "transparency" in img.info:
        grey = source in ("1", "L", "LA")
        bands = np.asarray(img.convert("LA" if grey else "RGBA")).astype(np.int64)
        colour, alpha = bands[..., :-1], bands[..., -1:]
        composited = ((colour * alpha + 127) // 255).astype(np.uint8)  # over black, rounded
        img = Image.fromarray(composited[..., 0] if grey else composited)
    return img if img.mode == mode else img.convert(mode)


class ImageFiles(Dataset):
    def __init__(self, files: list[Path], labels: list[int], mode: str, transform):
        self.files, self.labels, self.mode, self.transform = files, labels, mode, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as img:
            return self.transform(to_mode(img, self.mode, self.files[i])), self.labels[i]


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
                    why = refused_mode(img.mode)
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                unreadable.append(f"{f.relative_to(self.data_dir)} ({type(e).__name__})")
                continue
            if why is not None:
                unreadable.append(f"{f.relative_to(self.data_dir)} ({why})")
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
