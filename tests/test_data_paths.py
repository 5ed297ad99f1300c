"""The in-memory batch path and the per-sample path (data.in_memory=false) must feed the model exactly the same
images, labels and corrupted inputs for the same seed: switching paths for speed must not change a result."""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from aelab.corruptions import GaussianNoise, Mask
from aelab.data import FlowersDataModule, MNISTDataModule
from aelab.errors import ConfigError
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


def test_device_resident_path_yields_identical_batches(mnist_paths):
    """on_device: splits copied to the device once, index batches drawn there. On the CPU the copy is the same
    memory, but the path (device sampler, index_select, no workers, no pinning) is the one a GPU run takes."""
    fast, _ = mnist_paths
    cpu = torch.device("cpu")
    for split, epochs in (("train", (0, 1)), ("val", (0,)), ("test", (0,))):
        loader = fast.dataloader(split, device=cpu)
        assert loader.num_workers == 0 and not loader.pin_memory and loader.sampler.device == cpu
        assert len(loader) == len(fast.dataloader(split))
        for epoch in epochs:
            _set_sampler_epoch(loader, epoch)
            resident = [b for _, b in zip(range(4), loader)]
            assert_same_batches(resident, batches(fast, split, epoch, limit=4))
    assert set(fast.device_splits) == {"train", "val", "test"}


class FakeTrainer:
    global_rank, world_size = 0, 1

    def __init__(self, device: str):
        self.strategy = type("Strategy", (), {"root_device": torch.device(device)})()


@pytest.mark.parametrize("on_device, device, free, expected", [
    ("auto", "cpu", None, None),                   # CPU training: the splits are already there
    ("auto", "cuda:0", 10 * 2**30, "cuda:0"),      # MNIST's 55 MB fits a GPU with free memory
    ("auto", "cuda:0", 100 * 2**20, None),         # ... but not in a quarter of 100 MB
    (True, "cuda:0", None, "cuda:0"),              # forced: memory is not checked
    (False, "cuda:0", 10 * 2**30, None),           # never
], ids=["cpu", "auto-fits", "auto-too-big", "true", "false"])
def test_on_device_choice(mnist_paths, monkeypatch, on_device, device, free, expected):
    fast, slow = mnist_paths
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (free, 80 * 2**30))
    monkeypatch.setattr(fast, "on_device", on_device)
    monkeypatch.setattr(fast, "trainer", FakeTrainer(device), raising=False)
    assert fast.batch_device() == (torch.device(expected) if expected else None)
    monkeypatch.setattr(slow, "trainer", FakeTrainer(device), raising=False)
    assert slow.batch_device() is None  # per-sample path (in_memory=false): nothing to copy


def test_on_device_rejects_other_values(data_dir):
    with pytest.raises(ConfigError, match=r"data.on_device must be auto, true or false, got 'gpu'"):
        MNISTDataModule(str(data_dir), on_device="gpu")
