"""dSprites (Matthey et al., 2017): 64x64 binary images of one sprite, with five ground-truth factors of variation.

    shape        3  square, ellipse, heart
    scale        6  linspace(0.5, 1, 6)
    orientation  40 linspace(0, 2 pi, 40) (the first and last coincide, as in the original)
    position x   32 linspace(0, 1, 32)
    position y   32 linspace(0, 1, 32)

The full grid has 3 x 6 x 40 x 32 x 32 = 737,280 images, indexed in the original's order (np.ravel_multi_index over
the sizes above). A run uses a seeded subset of `size` grid points (test_size of them form the test split, the rest
train and val), so the images of a subset are the same wherever it is built:

- with the original `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz` in `data_dir` (or `data_dir/dsprites/`), the
  subset's images are read from it (the archive is streamed once; only the subset is kept);
- without it, they are rendered here from their factors, deterministically. What may differ from the original: the
  rasterisation (a pixel is on when its centre lies inside the shape), the base size of the sprites, the heart's
  outline and where a position of 0 or 1 places the sprite (0.2 to 0.8 of the image). The factor grid is the same.

Splits are held bit-packed (eight pixels a byte: the whole grid takes 377 MB instead of 3 GB) and decoded a batch
at a time where the batch is drawn, on the GPU too. The label of an image is its shape (3 classes, so the probes and class-coloured figures apply); `factors(split)`
gives every image's five factor indices [N, 5], aligned with the split's images, and `render(factors)` draws images
for any factor values (the FactorVAE score fixes one factor and varies the others).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from aelab.data.base import ImageDataModule, Split, md5, pack_bits
from aelab.errors import DataError, check
from aelab.types import PositiveInt

FACTOR_NAMES = ("shape", "scale", "orientation", "position_x", "position_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
ORIGINAL = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
SIZE = 64
BASE_HALF_WIDTH = 0.18  # a sprite's half-width at scale 1, as a fraction of the image
RENDER_CHUNK = 2048
PACKED_SHAPE = (1, SIZE, SIZE)  # held bit-packed: a binary image is 512 bytes
PACK_CHUNK = 65536  # images rendered before each packing (65536 x 4096 bytes = 256 MB at most)


def factor_values(factors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(shape index, scale, orientation in radians, x, y in [0, 1]) of integer factor indices [N, 5]."""
    f = factors.long()
    scale = 0.5 + 0.5 * f[:, 1].double() / (FACTOR_SIZES[1] - 1)  # float64 here: the grid values exactly
    angle = 2 * math.pi * f[:, 2].double() / (FACTOR_SIZES[2] - 1)
    x = f[:, 3].double() / (FACTOR_SIZES[3] - 1)
    y = f[:, 4].double() / (FACTOR_SIZES[4] - 1)
    return f[:, 0], scale, angle, x, y


def inside(shape: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether each point (u, v) of the sprite's own frame (unit half-width) lies inside the shape."""
    if shape == 0:  # square
        return (u.abs() <= 1) & (v.abs() <= 1)
    if shape == 1:  # ellipse, twice as wide as high
        return u.square() + (v / 0.5).square() <= 1
    hx, hy = 1.15 * u, -1.15 * v + 0.25  # heart: (x^2 + y^2 - 1)^3 <= x^2 y^3, point down, centred
    return (hx.square() + hy.square() - 1) ** 3 <= hx.square() * hy ** 3


def render(factors: torch.Tensor) -> torch.Tensor:
    """uint8 images [N, 1, 64, 64] (0 or 255) of the given factor indices [N, 5], drawn in chunks."""
    out = []
    grid = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    for chunk in factors.split(RENDER_CHUNK):
        shape, scale, angle, x, y = (t.float() for t in factor_values(chunk))
        cx, cy = 0.2 + 0.6 * x, 0.2 + 0.6 * y
        dx, dy = gx[None] - cx[:, None, None], gy[None] - cy[:, None, None]
        cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
        half = (BASE_HALF_WIDTH * scale)[:, None, None]
        u, v = (cos * dx + sin * dy) / half, (-sin * dx + cos * dy) / half  # the sprite's own frame, unit size
        images = torch.zeros(len(chunk), 1, SIZE, SIZE, dtype=torch.uint8)
        for s in range(len(SHAPES)):
            which = (shape == s).nonzero().flatten()
            if len(which):
                images[which, 0] = inside(s, u[which], v[which]).to(torch.uint8) * 255
        out.append(images)
    return torch.cat(out) if out else torch.empty((0, 1, SIZE, SIZE), dtype=torch.uint8)


def flat_to_factors(index: np.ndarray) -> np.ndarray:
    return np.stack(np.unravel_index(index, FACTOR_SIZES), axis=1).astype(np.int64)


def read_original(path: Path, index: np.ndarray, grid: int = math.prod(FACTOR_SIZES)) -> torch.Tensor:
    """uint8 images [len(index), 1, 64, 64] (0 or 255) of the original archive at the flat grid `index`, streamed
    from its `imgs` member (3 GB as bytes once decompressed: only the requested rows are kept). `grid`: the rows the
    archive must hold."""
    order = np.argsort(index)
    wanted = index[order]
    rows = np.empty((len(index), SIZE, SIZE), dtype=np.uint8)
    try:
        with zipfile.ZipFile(path) as archive, archive.open("imgs.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
            if tuple(shape) != (grid, SIZE, SIZE):
                raise DataError(f"{path}: imgs has shape {shape}, expected ({grid}, 64, 64); use the original file")
            row_bytes, position, k = SIZE * SIZE * np.dtype(dtype).itemsize, 0, 0
            while k < len(wanted):
                skip = int(wanted[k]) - position
                while skip > 0:
                    step = member.read(min(skip, 4096) * row_bytes)
                    skip -= len(step) // row_bytes
                    position += len(step) // row_bytes
                row = member.read(row_bytes)
                if len(row) < row_bytes:
                    raise DataError(f"{path}: imgs ends early (truncated archive); use the original file")
                rows[k] = np.frombuffer(row, dtype=dtype).reshape(SIZE, SIZE)
                position += 1
                k += 1
                while k < len(wanted) and wanted[k] == wanted[k - 1]:
                    rows[k] = rows[k - 1]
                    k += 1
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot be read as the dSprites archive ({e}); use the original file") from None
    images = np.empty_like(rows)
    images[order] = rows
    return torch.from_numpy(images)[:, None] * 255


class DSpritesDataModule(ImageDataModule):
    """size: grid points used (train + val + test), test_size: of them for the test split; seed chooses them."""

    name = "dsprites"
    num_classes = 3

    def __init__(self, *args, size: PositiveInt = 60000, test_size: PositiveInt = 10000, **kwargs):
        super().__init__(*args, **kwargs)
        check(test_size < size <= math.prod(FACTOR_SIZES),
              f"data.size={size} and data.test_size={test_size} need test_size < size <= {math.prod(FACTOR_SIZES)}")
        self.size, self.test_size = int(size), int(test_size)

    def original(self) -> Path | None:
        for candidate in (self.data_dir / ORIGINAL, self.data_dir / "dsprites" / ORIGINAL):
            if candidate.is_file():
                return candidate
        return None

    def grid_index(self, split: str) -> np.ndarray:
        """The flat grid indices of the official split ("train" holds val too), from one seeded permutation."""
        chosen = np.random.default_rng(self.seed).choice(math.prod(FACTOR_SIZES), self.size, replace=False)
        return chosen[:self.test_size] if split == "test" else chosen[self.test_size:]

    def load(self, split: str) -> Split:
        """The split's images bit-packed (the whole grid as bytes is 3 GB, packed 377 MB), with their factors."""
        index = self.grid_index(split)
        factors = torch.from_numpy(flat_to_factors(index))
        cache = self._cache_path(split)
        if cache is not None and cache.exists():
            try:
                return Split(torch.load(cache, weights_only=True), factors[:, 0].clone(), factors, PACKED_SHAPE)
            except Exception:  # a damaged cache file is rebuilt, never trusted
                cache.unlink(missing_ok=True)
        path = self.original()
        if path is not None:
            packed = pack_bits(read_original(path, index))
        else:  # rendered and packed a chunk at a time: the unpacked grid is never held whole
            packed = torch.cat([pack_bits(render(chunk)) for chunk in factors.split(PACK_CHUNK)]) if len(factors) \
                else torch.empty((0, math.prod(PACKED_SHAPE) // 8), dtype=torch.uint8)
        if cache is not None:
            from aelab.data.base import atomic_torch_save

            atomic_torch_save(packed, cache)
        return Split(packed, factors[:, 0].clone(), factors, PACKED_SHAPE)

    def cache_key(self) -> str | None:
        path = self.original()
        source = f"original:{md5(path)}" if path is not None else "rendered:v1"
        return f"{source}|packed|{self.size}|{self.test_size}|{self.seed}"

    def expected_shape(self) -> tuple[int, int, int]:
        return (1, SIZE, SIZE)

    def class_names(self) -> tuple[str, ...]:
        return SHAPES

    def factors(self, split: str, limit: int | None = None) -> torch.Tensor:
        """Factor indices [N, 5] of the split's images, in the order `all_of(split)` gives them (each batch carries
        its own rows: Batch.factors)."""
        if not self.splits:
            self.setup()
        if self.sample_sets:  # data.in_memory=false: each sample carries its factors
            n = self.split_size(split) if limit is None else min(limit, self.split_size(split))
            return torch.stack([self.sample_sets[split][i][2] for i in range(n)])
        f = self.splits[split].factors.cpu()
        return f if limit is None else f[:limit]

    factor_names, factor_sizes = FACTOR_NAMES, FACTOR_SIZES
    render = staticmethod(render)
