"""Datamodules on the real files in ../shared/data (copied to tmp only where a test damages them)."""

import gzip
import os
import shutil

import pytest
import torch
from PIL import Image

from aelab.data import (EpochBatchSampler, FashionMNISTDataModule, FlowersDataModule, ImageFolderDataModule,
                        MNISTDataModule)
from aelab.errors import DataError


def test_mnist_splits_from_read_only_gz_files(data_dir, tmp_path):
    before = sorted(os.listdir(data_dir / "MNIST" / "raw"))
    dm = MNISTDataModule(str(data_dir), seed=0, cache_dir=str(tmp_path))
    dm.setup()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 54000, "val": 6000, "test": 10000}
    assert dm.image_shape == (1, 28, 28) and dm.splits["train"].images.dtype == torch.uint8
    assert set(dm.splits["test"].labels.tolist()) == set(range(10))
    # the first official test digit is a 7 (a well-known fact about MNIST's t10k file)
    assert dm.splits["test"].labels[0].item() == 7
    assert sorted(os.listdir(data_dir / "MNIST" / "raw")) == before  # nothing written next to the data


def test_validation_split_is_seeded_and_disjoint(data_dir):
    a, b, c = (MNISTDataModule(str(data_dir), seed=s) for s in (1, 1, 2))
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.splits["val"].images, b.splits["val"].images)
    assert not torch.equal(a.splits["val"].images, c.splits["val"].images)
    train_idx, val_idx = a._val_split(60000)
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0 and len(train_idx) + len(val_idx) == 60000


def test_fashion_mnist_differs_from_mnist(data_dir):
    f = FashionMNISTDataModule(str(data_dir))
    f.setup()
    assert f.image_shape == (1, 28, 28) and len(f.splits["test"]) == 10000
    m = MNISTDataModule(str(data_dir))
    m.setup()
    assert not torch.equal(f.splits["test"].images[:10], m.splits["test"].images[:10])


def test_a_drawn_subset_samples_the_whole_split_and_is_seeded(data_dir):
    dm = MNISTDataModule(str(data_dir))
    dm.setup()
    images, labels = dm.all_of("test")
    a, la = dm.drawn("test", 2000, 0, "x")
    assert torch.equal(a, dm.drawn("test", 2000, 0, "x")[0]) and not torch.equal(a, dm.drawn("test", 2000, 1, "x")[0])
    assert not torch.equal(a, images[:2000]) and len(a) == 2000
    # MNIST's test split: its first half and its second are two writer populations; a draw spans both, its head not
    rows = {bytes(x.numpy()): i for i, x in enumerate(images)}
    index = torch.tensor([rows[bytes(x.numpy())] for x in a])
    assert torch.equal(labels[index], la) and 0.4 < float((index >= 5000).float().mean()) < 0.6
    assert torch.equal(dm.drawn("test", None, 0)[0], images) and torch.equal(dm.drawn("test", 10 ** 6, 0)[0], images)


def test_batches_are_uint8_and_epoch_order_is_seeded(data_dir):
    dm = MNISTDataModule(str(data_dir), batch_size=32, seed=3)
    dm.setup()
    loader = dm.train_dataloader()
    first = next(iter(loader))
    assert first[0].shape == (32, 1, 28, 28) and first[0].dtype == torch.uint8 and first[1].shape == (32,)
    loader.sampler.set_epoch(1)
    other_epoch = next(iter(loader))[1]
    loader.sampler.set_epoch(0)
    assert torch.equal(next(iter(loader))[1], first[1]) and not torch.equal(other_epoch, first[1])


def copy_mnist(data_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_dir / "MNIST", root / "MNIST")
    return root


def test_truncated_gz_is_named_with_the_fix(data_dir, tmp_path):
    root = copy_mnist(data_dir, tmp_path)
    target = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: md5 \w+ differs from torchvision's"):
        MNISTDataModule(str(root)).setup()


def test_extracted_but_damaged_idx_file_is_detected(data_dir, tmp_path):
    root = copy_mnist(data_dir, tmp_path)
    raw = root / "MNIST" / "raw"
    data = gzip.decompress((raw / "t10k-images-idx3-ubyte.gz").read_bytes())
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    (raw / "t10k-images-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: holds \d+ bytes, its header promises \d+"):
        MNISTDataModule(str(root)).setup()


def test_missing_files_without_download_say_how_to_point_at_data(tmp_path):
    with pytest.raises(DataError, match=r"no data in .*MNIST/raw and download is off .*AELAB_DATA_DIR=<dir>"):
        MNISTDataModule(str(tmp_path), download=False).setup()


def test_flowers_native_and_resized(data_dir, cache_dir):
    dm = FlowersDataModule(str(data_dir), cache_dir=str(cache_dir), batch_size=16)
    dm.setup()
    assert dm.image_shape == (3, 64, 64)
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 1836, "val": 204, "test": 6149}
    small = FlowersDataModule(str(data_dir), cache_dir=str(cache_dir), image_size=32, train_splits=["train"])
    small.setup()
    assert small.image_shape == (3, 32, 32) and len(small.splits["train"]) + len(small.splits["val"]) == 1020


def make_folder(data_dir, root, n_per_class=20):
    """A folder of real MNIST digits as PNGs, one sub-folder per class."""
    dm = MNISTDataModule(str(data_dir))
    split = dm.load("test")
    for label in (3, 8):
        (root / f"digit{label}").mkdir(parents=True)
        picks = (split.labels == label).nonzero().flatten()[:n_per_class]
        for i, idx in enumerate(picks.tolist()):
            Image.fromarray(split.images[idx, 0].numpy()).save(root / f"digit{label}" / f"{i}.png")
    return split


@pytest.mark.parametrize("in_memory", [True, False])
def test_image_folder_classes_and_shapes(data_dir, tmp_path, in_memory):
    make_folder(data_dir, tmp_path / "imgs")
    dm = ImageFolderDataModule(str(tmp_path / "imgs"), image_size=16, channels=1, batch_size=8, in_memory=in_memory,
                               cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert dm.num_classes == 2 and dm.image_shape == (1, 16, 16)
    assert dm.split_size("train") + dm.split_size("val") + dm.split_size("test") == 40
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 16, 16) and images.dtype == torch.uint8 and set(labels.tolist()) <= {0, 1}


def test_image_folder_names_unreadable_files(data_dir, tmp_path):
    make_folder(data_dir, tmp_path / "imgs", n_per_class=5)
    (tmp_path / "imgs" / "digit3" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"1 unreadable image\(s\) .*digit3/broken.png"):
        ImageFolderDataModule(str(tmp_path / "imgs"), batch_size=2).setup()


def test_dataset_smaller_than_one_batch_says_so(data_dir, tmp_path):
    make_folder(data_dir, tmp_path / "imgs", n_per_class=5)
    with pytest.raises(DataError, match=r"training split has \d+ images, fewer than one batch \(data.batch_size=64\)"):
        ImageFolderDataModule(str(tmp_path / "imgs"), batch_size=64).setup()


@pytest.mark.parametrize("n, batch_size", [(10, 3), (64, 64), (65, 64), (1000, 7), (5, 8)])
@pytest.mark.parametrize("shuffle, drop_last", [(True, False), (True, True), (False, False)])
def test_sampler_length_matches_its_batches_on_every_rank(n, batch_size, shuffle, drop_last):
    """__len__ is arithmetic (drawing an epoch's order just to count it would be waste): it must agree with what
    iteration yields, for every rank, and the ranks together cover each index at most once."""
    for world in (1, 2, 3):
        seen = []
        for rank in range(world):
            sampler = EpochBatchSampler(n, batch_size, shuffle, seed=1, drop_last=drop_last, rank=rank,
                                        world_size=world)
            sampler.set_epoch(2)
            batches = list(sampler)
            assert len(sampler) == len(batches), (world, rank)
            assert all(b.dtype == torch.int64 for b in batches)
            seen += [i for b in batches for i in b.tolist()]
        assert len(seen) == len(set(seen)) and set(seen) <= set(range(n))
        if world == 1 and not drop_last:
            assert sorted(seen) == list(range(n))
