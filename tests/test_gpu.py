"""The CUDA path: splits kept on the device, batches and corruption built there, a real run on the GPU.
Skipped where CUDA is absent (CI); run on a GPU machine with `pytest tests/test_gpu.py`."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch

from aelab.corruptions import GaussianNoise
from aelab.data import MNISTDataModule
from aelab.models import ConvAutoencoder
from aelab.module import AutoencoderModule

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def first_batches(loader, epoch: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    _set_sampler_epoch(loader, epoch)
    return [b for _, b in zip(range(n), loader)]


def test_device_resident_batches_match_the_cpu_path(data_dir):
    dm = MNISTDataModule(str(data_dir), batch_size=64, seed=3)
    dm.setup("fit")
    cuda = torch.device("cuda", torch.cuda.current_device())
    for split, epoch in (("train", 0), ("train", 1), ("val", 0), ("test", 0)):
        resident = first_batches(dm.dataloader(split, device=cuda), epoch, 3)
        host = first_batches(dm.dataloader(split), epoch, 3)
        for (xg, yg), (xc, yc) in zip(resident, host, strict=True):
            assert xg.device == yg.device == cuda and xg.dtype == torch.uint8
            assert torch.equal(xg.cpu(), xc) and torch.equal(yg.cpu(), yc)
    assert all(s.images.device == cuda for s in dm.device_splits.values())


class WhereBatchesAre(L.Callback):
    def __init__(self):
        self.raw, self.inputs = set(), set()

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.raw.add(batch[0].device.type)
        self.inputs.add(module.make_batch(batch, "train").input.device.type)


def test_training_on_cuda_keeps_data_and_corruption_on_the_device(data_dir):
    dm = MNISTDataModule(str(data_dir), batch_size=32, seed=0)  # on_device=auto
    dm.setup("fit")
    module = AutoencoderModule(ConvAutoencoder((1, 28, 28), (1, 28, 28)), GaussianNoise(0.5, 0.5), seed=0)
    probe = WhereBatchesAre()
    trainer = L.Trainer(accelerator="gpu", devices=1, max_epochs=1, limit_train_batches=4, limit_val_batches=2,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[probe])
    trainer.fit(module, datamodule=dm)
    assert probe.raw == probe.inputs == {"cuda"}
    assert set(dm.device_splits) >= {"train", "val"}  # auto chose the GPU: MNIST fits easily
    assert math.isfinite(trainer.callback_metrics["val/loss"].item())


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_aelab_train_runs_on_the_gpu(run_train, precision):
    out = run_train(["experiment=denoise_mnist", "trainer.accelerator=gpu", f"trainer.precision={precision}"],
                    name=f"gpu-{precision}")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics and all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))
    assert any(k.startswith("test/") for k in metrics)


def test_binarized_training_batches_are_drawn_on_the_device(data_dir):
    from aelab.data import BinarizedMNISTDataModule

    dm = BinarizedMNISTDataModule(str(data_dir), batch_size=64, seed=1)  # on_device=auto
    dm.setup("fit")
    cuda = torch.device("cuda", torch.cuda.current_device())
    module = AutoencoderModule(ConvAutoencoder((1, 28, 28), (1, 28, 28)), seed=0)
    probe = WhereBatchesAre()
    trainer = L.Trainer(accelerator="gpu", devices=1, max_epochs=1, limit_train_batches=3, limit_val_batches=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[probe])
    trainer.fit(module, datamodule=dm)
    assert probe.raw == {"cuda"} and dm.device_splits["train"].images.device == cuda
    images, _ = dm.on_after_batch_transfer(next(iter(dm.dataloader("train", cuda))), 0)
    assert images.device == cuda and set(images.unique().tolist()) <= {0, 255}
