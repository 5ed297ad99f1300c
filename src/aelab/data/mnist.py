"""MNIST and Fashion-MNIST, read straight from the original IDX files (`.gz` or extracted).

`data_dir` may be read-only and hold only the `.gz` files (torchvision's `<data_dir>/<Name>/raw/` layout): the files
are decompressed in memory, never written anywhere. Each `.gz` is checked against the md5 torchvision publishes.
When no file is there, torchvision downloads them into `data_dir` as usual.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import torch
import torchvision

from aelab.data.base import ImageDataModule, Split, md5
from aelab.errors import DataError

_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> torch.Tensor:
    """Parse an IDX file of unsigned bytes (the MNIST format) into a uint8 tensor; damaged files raise DataError."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot be read as {'gzip' if path.suffix == '.gz' else 'IDX'} ({e}); "
                        "delete it and let torchvision download it again, or copy an intact one") from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"{path}: not an IDX file of unsigned bytes; replace it with the original file")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(torch.tensor(dims).prod())
    if len(data) != expected:
        raise DataError(f"{path}: holds {len(data)} bytes, its header promises {expected} (truncated or altered); "
                        "replace it with the original file")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=header).reshape(dims)


class MNISTDataModule(ImageDataModule):
    name = "mnist"
    num_classes = 10
    torchvision_class = torchvision.datasets.MNIST  # folder name, published md5s and the download code

    def _raw_dir(self) -> Path:
        return self.data_dir / self.torchvision_class.__name__ / "raw"

    def _find(self, stem: str) -> Path:
        """The `.gz` (md5-checked) or the extracted file; downloads through torchvision if neither is there."""
        raw = self._raw_dir()
        published = dict(self.torchvision_class.resources)
        gz, plain = raw / f"{stem}.gz", raw / stem
        if not gz.exists() and not plain.exists():
            self._download()
        if gz.exists():
            if (got := md5(gz)) != published[gz.name]:
                raise DataError(f"{gz}: md5 {got} differs from torchvision's {published[gz.name]} (truncated or "
                                "altered); delete it and download again, or copy an intact one")
            return gz
        if plain.exists():
            return plain
        raise DataError(f"{self.name}: {gz} is missing; point data.data_dir (or AELAB_DATA_DIR) at a folder holding "
                        f"{self.torchvision_class.__name__}/raw/*.gz")

    def _download(self) -> None:
        if not self.download:
            raise DataError(self._missing_message("download is off (data.download=false)"))
        try:
            for train in (True, False):
                self.torchvision_class(str(self.data_dir), train=train, download=True)
        except Exception as e:  # no network, read-only data_dir, ...
            reason = (str(e).splitlines()[0] if str(e) else type(e).__name__).rstrip(":. ")
            raise DataError(self._missing_message(f"the download failed ({reason}; no network?)")) from None

    def _missing_message(self, why: str) -> str:
        return (f"{self.name}: no data in {self._raw_dir()} and {why}. Put the original IDX files "
                f"(train-images-idx3-ubyte.gz, ...) in <dir>/{self.torchvision_class.__name__}/raw/ and set "
                f"AELAB_DATA_DIR=<dir> or data.data_dir=<dir>")

    def expected_shape(self):
        return (1, 28, 28)

    def class_names(self) -> tuple[str, ...]:
        return tuple(self.torchvision_class.classes)

    def load(self, split: str) -> Split:
        prefix = _PREFIX[split]
        images = read_idx(self._find(f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(self._find(f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{self.name} {split}: images {tuple(images.shape)} do not match labels "
                            f"{tuple(labels.shape)}; replace the files in {self._raw_dir()}")
        return Split(images.unsqueeze(1).contiguous(), labels.long())


class FashionMNISTDataModule(MNISTDataModule):
    name = "fashion_mnist"
    torchvision_class = torchvision.datasets.FashionMNIST
