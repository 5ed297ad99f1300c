"""Image grids in TensorBoard: rows input | output | target for the same validation images every epoch."""

from __future__ import annotations

from contextlib import contextmanager

import lightning as L
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid


def to_display(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resize (nearest: show the pixels as they are) and match channels so different-size images share a grid."""
    x = x.detach().float().clamp(0, 1)
    if x.shape[-2:] != tuple(shape[-2:]):
        x = F.interpolate(x, size=tuple(shape[-2:]), mode="nearest")
    if x.shape[1] != shape[0]:
        x = x.expand(-1, shape[0], -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
    return x.cpu()


@contextmanager
def evaluating(module):
    """Eval mode, no gradients, and the global RNG left exactly as found (training must not notice a figure)."""
    was_training = module.training
    rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state() if module.device.type == "cuda" else None
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng)


def logged_writer(trainer: L.Trainer):
    """The TensorBoard SummaryWriter of the run, or None when logging is off."""
    for logger in trainer.loggers:
        writer = getattr(logger, "experiment", None)
        if hasattr(writer, "add_image"):
            return writer
    return None


class ReconstructionGrid(L.Callback):
    def __init__(self, n_images: int = 8):
        self.n_images = n_images

    @torch.no_grad()
    def _log(self, trainer: L.Trainer, module, stage: str) -> None:
        writer = logged_writer(trainer)
        if writer is None or trainer.sanity_checking or trainer.datamodule is None:
            return
        images, labels = trainer.datamodule.fixed_batch(stage, self.n_images)
        with evaluating(module):  # the same corruption of the same images every epoch
            batch = module.corrupted_batch(images, labels, f"grid/{stage}")
            output = module.model.reconstruct(batch)
        clean = batch.target
        shape = tuple(clean.shape[1:])
        rows = torch.cat([to_display(batch.input, shape), to_display(output, shape), to_display(clean, shape)])
        writer.add_image(f"{stage}/reconstructions", make_grid(rows, nrow=len(clean), pad_value=1.0),
                         trainer.global_step)

    def on_validation_epoch_end(self, trainer, module):
        self._log(trainer, module, "val")

    def on_test_epoch_end(self, trainer, module):
        self._log(trainer, module, "test")
