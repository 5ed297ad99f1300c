"""Guards every training run has (added by aelab-train, not optional config): stop on a non-finite loss, and keep
a checkpoint when interrupted."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch

from aelab.errors import AelabError


class TrainingDiverged(AelabError, FloatingPointError):
    """The loss became NaN or infinite."""


class FiniteLoss(L.Callback):
    """Stop at the first non-finite training loss. The checkpoints on disk predate it, so the last good one is
    kept; run_app marks the run failed with this message.

    Reading a loss makes the CPU wait for the GPU to finish the step instead of queueing the next one, so on an
    accelerator the losses are kept as they are and read together every `check_every` steps (default: every step
    on the CPU, where reading costs nothing, 50 elsewhere), at each epoch end and before any checkpoint is written;
    the error names the first bad step. (What a per-step read costs: experiments/benchmarks/RESULTS-gpu.md, row
    "loss read every step".)
    """

    def __init__(self, check_every: int | None = None):
        self.check_every = check_every
        self._pending: list[tuple[int, torch.Tensor]] = []  # (global step, loss) not read yet

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self._pending.append((trainer.global_step, loss.detach()))
        every = self.check_every or (1 if loss.device.type == "cpu" else 50)
        if len(self._pending) >= every:
            self.check(trainer)

    def check(self, trainer) -> None:
        """Read the pending losses (one transfer) and stop the run at the first non-finite one."""
        if not self._pending:
            return
        steps, losses = zip(*self._pending)
        self._pending = []
        values = torch.stack(losses).float().tolist()  # training losses are scalars: one kernel, one copy
        bad = next(((s, v) for s, v in zip(steps, values) if not math.isfinite(v)), None)
        if bad is not None:
            ckpt = trainer.checkpoint_callback
            last = getattr(ckpt, "last_model_path", "") or "none yet"
            raise TrainingDiverged(
                f"training diverged: train/loss is {bad[1]} at epoch {trainer.current_epoch}, step {bad[0]}; "
                f"last good checkpoint: {last}; lower optimizer.lr or check the data")

    def on_train_epoch_end(self, trainer, module):
        self.check(trainer)

    def on_save_checkpoint(self, trainer, module, checkpoint):  # never a checkpoint of diverged weights
        self.check(trainer)


class SaveOnInterrupt(L.Callback):
    """On Ctrl-C / SIGTERM, save `checkpoints/interrupted.ckpt` (mid-epoch state, for inspection). Resuming uses
    `last.ckpt`, written at epoch ends, so a resumed run replays exactly what an uninterrupted one does."""

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer, module, exception):
        if isinstance(exception, KeyboardInterrupt) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.dirpath / "interrupted.ckpt")
