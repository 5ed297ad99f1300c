"""Guards every training run has (added by aelab-train, not optional config): stop on a non-finite loss, and keep
a checkpoint when interrupted."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from aelab.errors import AelabError


class TrainingDiverged(AelabError, FloatingPointError):
    """The loss became NaN or infinite."""


class FiniteLoss(L.Callback):
    """Stop at the first non-finite training loss. The checkpoints on disk predate it, so the last good one is
    kept; run_app marks the run failed with this message."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            ckpt = trainer.checkpoint_callback
            last = getattr(ckpt, "last_model_path", "") or "none yet"
            raise TrainingDiverged(
                f"training diverged: train/loss is {loss.item()} at epoch {trainer.current_epoch}, "
                f"step {trainer.global_step}; last good checkpoint: {last}; lower optimizer.lr or check the data")


class SaveOnInterrupt(L.Callback):
    """On Ctrl-C / SIGTERM, save `checkpoints/interrupted.ckpt` (mid-epoch state, for inspection). Resuming uses
    `last.ckpt`, written at epoch ends, so a resumed run replays exactly what an uninterrupted one does."""

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer, module, exception):
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.dirpath / "interrupted.ckpt")
