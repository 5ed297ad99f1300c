"""Image grids in TensorBoard (and MLflow, logger=mlflow): rows input | output | target for the same validation
images every epoch, labelled and enlarged to be readable at TensorBoard's default card size."""

from __future__ import annotations

from contextlib import contextmanager

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F


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


class ImageWriter:
    """One `add_image` for every logger of the run that takes images: TensorBoard's SummaryWriter, and MLflow, where
    each image is a logged image (key = the tag, at the step) beside the run's metrics. CSV takes none."""

    def __init__(self, loggers):
        self.loggers = loggers

    def add_image(self, tag: str, image, step: int, dataformats: str = "HWC") -> None:
        from aelab.loggers import kind

        for logger in self.loggers:
            if kind(logger) == "mlflow":
                array = np.asarray(image)
                if dataformats == "CHW":
                    array = array.transpose(1, 2, 0)
                logger.experiment.log_image(logger.run_id, array, key=tag, step=int(step))
            else:
                logger.experiment.add_image(tag, image, step, dataformats=dataformats)


def logged_writer(trainer: L.Trainer):
    """The writer for the run's image grids and figures (ImageWriter), or None when no logger takes images."""
    from aelab.loggers import image_loggers

    loggers = image_loggers(trainer)
    return ImageWriter(loggers) if loggers else None


DISPLAY_CELL = 112  # px: small images are enlarged (nearest, whole multiples) to about this size; 28 px -> 4x


def display_scale(shape: tuple[int, ...], cell: int = DISPLAY_CELL) -> int:
    """Whole-number enlargement that brings an image of `shape` (C, H, W) to about `cell` pixels."""
    return max(1, round(cell / max(shape[-2:])))


def labelled_grid(rows: list[torch.Tensor], labels: list[str], scale: int = 1, pad: int = 4) -> np.ndarray:
    """Rows of images ([n, C, H, W] each, same size, values in [0, 1]) as one RGB uint8 array [H, W, 3]: each image
    enlarged `scale` times (nearest: the pixels as they are), a white gap between images, each row's label on its
    left in a font about a quarter of the image height. TensorBoard fits an image card to its width, so the text
    scales with the images (about 11 px at the default card width for an 8-image MNIST grid)."""
    from PIL import Image, ImageDraw, ImageFont

    ncol = max(len(r) for r in rows)
    channels, h, w = rows[0].shape[1:]
    h, w = h * scale, w * scale
    font = ImageFont.load_default(size=max(14, h // 4))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((measure.textbbox((0, 0), t, font=font)[2] for t in labels), default=0) + 3 * pad
    canvas = Image.new("RGB", (label_w + ncol * (w + pad) + pad, len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (row, label) in enumerate(zip(rows, labels)):
        y = pad + i * (h + pad)
        draw.text((label_w - 2 * pad, y + h // 2), label, fill="black", font=font, anchor="rm")
        cells = F.interpolate(row.float().clamp(0, 1), scale_factor=scale, mode="nearest") if scale > 1 else row
        cells = (cells.expand(-1, 3, -1, -1) if channels == 1 else cells[:, :3]).mul(255).round().byte()
        for j, cell in enumerate(cells.permute(0, 2, 3, 1).cpu().numpy()):
            canvas.paste(Image.fromarray(cell), (label_w + pad + j * (w + pad), y))
    return np.asarray(canvas)


class ReconstructionGrid(L.Callback):
    """`{val,test}/reconstructions`: rows input | output | target of the same images every time, labelled, small
    images enlarged (MNIST 4x) so that they are readable at TensorBoard's default card size."""

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
        rows = [to_display(batch.input, shape), to_display(output, shape), to_display(clean, shape)]
        grid = labelled_grid(rows, ["input", "output", "target"], display_scale(shape))
        writer.add_image(f"{stage}/reconstructions", grid, trainer.global_step, dataformats="HWC")

    def on_validation_epoch_end(self, trainer, module):
        self._log(trainer, module, "val")

    def on_test_epoch_end(self, trainer, module):
        self._log(trainer, module, "test")
