"""Image grids in TensorBoard: rows input | output | target for the same validation images every epoch."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from aelab.data import to_float
from aelab.models import Batch


def to_display(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resize (nearest: show the pixels as they are) and match channels so different-size images share a grid."""
    x = x.detach().float().clamp(0, 1)
    if x.shape[-2:] != tuple(shape[-2:]):
        x = F.interpolate(x, size=tuple(shape[-2:]), mode="nearest")
    if x.shape[1] != shape[0]:
        x = x.expand(-1, shape[0], -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
    return x.cpu()


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
        gen_state = torch.get_rng_state()
        torch.manual_seed(module.seed)  # the same corruption of the same images every epoch
        generator = torch.Generator(device=module.device).manual_seed(module.seed)
        clean = to_float(images.to(module.device))
        batch = Batch(input=module.corruption(clean, generator), target=clean, label=labels.to(module.device))
        was_training = module.training
        module.eval()
        output = module.model.reconstruct(batch)
        module.train(was_training)
        torch.set_rng_state(gen_state)
        shape = tuple(clean.shape[1:])
        rows = torch.cat([to_display(batch.input, shape), to_display(output, shape), to_display(clean, shape)])
        writer.add_image(f"{stage}/reconstructions", make_grid(rows, nrow=len(clean), pad_value=1.0),
                         trainer.global_step)

    def on_validation_epoch_end(self, trainer, module):
        self._log(trainer, module, "val")

    def on_test_epoch_end(self, trainer, module):
        self._log(trainer, module, "test")
