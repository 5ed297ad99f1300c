"""The in-memory batch path and the per-sample path (data.in_memory=false) must feed the model exactly the same
images, labels and corrupted inputs for the same seed: switching paths for speed must not change a result."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from aelab.corruptions import GaussianNoise, Mask
from aelab.data import FlowersDataModule, MNISTDataModule
from aelab.models import ConvAutoencoder
from aelab.module import AutoencoderModule


def both_paths(cls, **kwargs):
    fast, slow = cls(in_memory=True, **kwargs), cls(in_memory=False, **kwargs)
    fast.setup("fit")
    slow.setup("fit")
    assert fast.splits["train"].images.numel() > 0 and not fast.sample_sets  # really the in-memory path
    assert slow.sample_sets  # really the per-sample path
    return fast, slow


def batches(dm, split: str, epoch: int, limit: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = getattr(dm, f"{split}_dataloader")()
    _set_sampler_epoch(loader, epoch)  # exactly what Lightning's fit loop does at every epoch start
    out = []
    for i, batch in enumerate(loader):
        if limit is not None and i >= limit:
            break
        out.append(batch)
    return out


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.dtype == xb.dtype == torch.uint8 and ya.dtype == yb.dtype == torch.int64
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.fixture(scope="module")
def mnist_paths(data_dir):
    return both_paths(MNISTDataModule, data_dir=str(data_dir), batch_size=64, seed=3)


def test_mnist_both_paths_yield_identical_batches_every_epoch(mnist_paths):
    fast, slow = mnist_paths
    assert fast.image_shape == slow.image_shape == (1, 28, 28)
    for split in ("train", "val", "test"):
        assert fast.split_size(split) == slow.split_size(split)
    for epoch in (0, 1, 2):
        assert_same_batches(batches(fast, "train", epoch, limit=4), batches(slow, "train", epoch, limit=4))
    # the shuffled order really changes with the epoch (otherwise equality above would prove little)
    e0, e1 = batches(fast, "train", 0, limit=1)[0][1], batches(fast, "train", 1, limit=1)[0][1]
    assert not torch.equal(e0, e1)
    assert_same_batches(batches(fast, "val", 0), batches(slow, "val", 0))  # the whole validation split
    assert_same_batches(batches(fast, "test", 0, limit=3), batches(slow, "test", 0, limit=3))
    for a, b in zip(fast.fixed_batch("val", 8), slow.fixed_batch("val", 8)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("corruption", [GaussianNoise(0.5, 0.5), Mask()], ids=["gaussian_noise", "mask"])
def test_mnist_both_paths_give_identical_corrupted_inputs(mnist_paths, corruption):
    fast, slow = mnist_paths

    def inputs(dm):
        torch.manual_seed(0)
        model = ConvAutoencoder((1, 28, 28), (1, 28, 28))
        module = AutoencoderModule(model, corruption, seed=11)
        out = {}
        for stage, split in (("train", "train"), ("val", "val")):
            out[stage] = [module.make_batch(raw, stage) for raw in batches(dm, split, 0, limit=3)]
        return out

    a, b = inputs(fast), inputs(slow)
    for stage in a:
        for ba, bb in zip(a[stage], b[stage]):
            assert not torch.equal(ba.input, ba.target)  # the corruption did something
            assert torch.equal(ba.input, bb.input) and torch.equal(ba.target, bb.target)
            assert torch.equal(ba.label, bb.label)


def test_flowers_both_paths_yield_identical_batches(data_dir, cache_dir):
    fast, slow = both_paths(FlowersDataModule, data_dir=str(data_dir), cache_dir=str(cache_dir), image_size=32,
                            batch_size=16, seed=5)
    assert fast.image_shape == slow.image_shape == (3, 32, 32)
    for epoch in (0, 1):
        assert_same_batches(batches(fast, "train", epoch, limit=2), batches(slow, "train", epoch, limit=2))
    assert_same_batches(batches(fast, "test", 0, limit=2), batches(slow, "test", 0, limit=2))
