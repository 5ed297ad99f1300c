"""dSprites: the rendered factor grid has the sizes and symmetries its factors promise, the datamodule's factors stay
aligned with its images through the seeded splits, and the original archive is read row for row."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aelab.data.dsprites import (BASE_HALF_WIDTH, FACTOR_SIZES, SIZE, DSpritesDataModule, flat_to_factors,
                                 read_original, render)
from aelab.errors import ConfigError, DataError


def area(factors) -> list[int]:
    return (render(torch.tensor(factors)) > 0).flatten(1).sum(1).tolist()


def test_rendered_sprites_have_the_areas_their_shape_and_scale_give():
    side = 2 * BASE_HALF_WIDTH * SIZE  # pixels across a square at scale 1
    square, ellipse, small = area([[0, 5, 0, 16, 16], [1, 5, 0, 16, 16], [0, 0, 0, 16, 16]])
    assert square == pytest.approx(side ** 2, rel=0.05)
    assert ellipse == pytest.approx(math.pi * (side / 2) * (side / 4), rel=0.08)
    assert small == pytest.approx(square / 4, rel=0.1)  # scale 0.5: half the width, a quarter of the area
    heart = area([[2, 5, 0, 16, 16]])[0]
    assert square > heart > ellipse  # three distinct shapes


def test_orientation_and_position_move_the_sprite_as_their_factors_say():
    images = render(torch.tensor([[0, 5, 0, 10, 12], [0, 5, 39, 10, 12], [0, 5, 0, 11, 12], [0, 5, 10, 10, 12]]))
    assert torch.equal(images[0], images[1])  # 0 and 2 pi coincide, as in the original
    cols = lambda im: (im[0] > 0).any(0).nonzero().flatten()  # noqa: E731
    assert int(cols(images[2])[0]) > int(cols(images[0])[0])  # x + 1 moves it right
    assert not torch.equal(images[0], images[3])  # a quarter turn of a square by 10 of 39 steps is visible
    assert set(images.unique().tolist()) <= {0, 255}


def test_splits_keep_their_factors_aligned_and_are_seeded(tmp_path):
    dm = DSpritesDataModule(data_dir=tmp_path, cache_dir=tmp_path / "cache", size=1000, test_size=200, seed=3,
                            batch_size=32)
    dm.setup()
    assert [dm.split_size(s) for s in ("train", "val", "test")] == [720, 80, 200]
    for split in ("train", "val", "test"):
        images, labels = dm.all_of(split)
        factors = dm.factors(split)
        assert torch.equal(render(factors), images) and torch.equal(labels, factors[:, 0])
    again = DSpritesDataModule(data_dir=tmp_path, cache_dir=tmp_path / "cache", size=1000, test_size=200, seed=3)
    again.setup()  # from the cache this time
    assert torch.equal(again.all_of("test")[0], dm.all_of("test")[0])
    other = DSpritesDataModule(data_dir=tmp_path, size=1000, test_size=200, seed=4)
    assert not np.array_equal(other.grid_index("test"), dm.grid_index("test"))
    assert dm.spec.num_classes == 3 and dm.spec.class_names == ("square", "ellipse", "heart")
    with pytest.raises(ConfigError, match="test_size < size"):
        DSpritesDataModule(data_dir=tmp_path, size=100, test_size=100)


def test_bit_packing_round_trips_and_holds_a_split_in_an_eighth_of_the_bytes(tmp_path):
    from aelab.data.base import pack_bits, unpack_bits

    odd = (torch.rand(5, 1, 3, 7, generator=torch.Generator().manual_seed(0)) > 0.5).to(torch.uint8) * 255
    packed = pack_bits(odd)  # 21 pixels: 3 bytes, the last one padded
    assert packed.shape == (5, 3) and torch.equal(unpack_bits(packed, (1, 3, 7)), odd)
    dm = DSpritesDataModule(data_dir=tmp_path, size=300, test_size=100, seed=0)
    dm.setup()
    test = dm.splits["test"]
    assert test.images.shape == (100, 512) and dm.image_shape == (1, 64, 64)
    assert torch.equal(test.decoded(), render(dm.factors("test")))


@pytest.mark.parametrize("in_memory", [True, False])
def test_every_batch_carries_its_images_factors_into_the_models_batch(tmp_path, in_memory):
    """Shuffled training batches, in memory and per sample: each image is the rendering of the factors beside it,
    and the module's Batch carries them on (its label is the shape factor)."""
    from aelab.models import ConvAutoencoder
    from aelab.module import AutoencoderModule

    dm = DSpritesDataModule(data_dir=tmp_path, cache_dir=tmp_path / "cache", size=600, test_size=100, seed=1,
                            batch_size=50, in_memory=in_memory)
    dm.setup()
    module = AutoencoderModule(ConvAutoencoder((1, 64, 64), (1, 64, 64)), seed=0)
    seen = 0
    for raw in dm.train_dataloader():
        images, labels, factors = raw
        assert factors.shape == (len(images), 5) and torch.equal(render(factors), images)
        batch = module.make_batch(raw, "train")
        assert torch.equal(batch.factors, factors) and torch.equal(batch.label, factors[:, 0])
        seen += len(images)
    assert seen == dm.split_size("train")
    assert torch.equal(dm.factors("test", 7), dm.factors("test")[:7])


def test_the_original_archive_is_read_row_for_row(tmp_path):
    rng = np.random.default_rng(0)
    imgs = (rng.random((50, SIZE, SIZE)) < 0.1).astype(np.uint8)
    path = tmp_path / "archive.npz"
    np.savez_compressed(path, imgs=imgs, latents_classes=np.zeros((50, 6), dtype=np.int64))
    index = np.array([7, 3, 49, 3, 0])
    got = read_original(path, index, grid=50)
    assert torch.equal(got, torch.from_numpy(imgs[index])[:, None] * 255)
    with pytest.raises(DataError, match="expected \\(737280, 64, 64\\)"):
        read_original(path, index)  # the real grid size: this small archive is refused by name


def test_flat_indices_follow_the_original_order():
    assert flat_to_factors(np.array([0, 1, 32, math.prod(FACTOR_SIZES) - 1])).tolist() == [
        [0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [2, 5, 39, 31, 31]]
