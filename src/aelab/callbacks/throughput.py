"""Training throughput (images per second) as a Lightning callback: what the benchmarks and sweep measurements read."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch

from aelab.errors import check


def _sync(device) -> None:
    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)  # GPU work is asynchronous: wait for it before reading the clock


class Throughput(L.Callback):
    """Lightning callback measuring training images/s: from the end of batch `warmup_batches - 1` to the end of the
    epoch's last training batch (data loading, step, logging and metrics included; validation excluded), summed over
    epochs. `result()` gives {"images", "seconds", "images_per_s"}; with `out`, it is also written there as JSON
    (for runs in another process: sweeps, benchmarks). clock="process" counts this process's CPU seconds instead of
    wall seconds: with one torch thread, that stays meaningful on a machine other processes share."""

    def __init__(self, warmup_batches: int = 5, out: str | None = None, clock: str = "wall"):
        check(clock in ("wall", "process"), f"Throughput clock={clock!r} is not one of ['wall', 'process']")
        self.warmup_batches, self.out = max(1, int(warmup_batches)), out
        self._clock = time.perf_counter if clock == "wall" else time.process_time
        self.images, self.seconds = 0, 0.0
        self._start: float | None = None

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.warmup_batches - 1:
            _sync(module.device)
            self._start, self._n = self._clock(), 0
        elif self._start is not None:
            self._n += len(batch[0])  # raw batches are (images, labels[, factors])
            if batch_idx == trainer.num_training_batches - 1:
                _sync(module.device)
                self.images += self._n
                self.seconds += self._clock() - self._start
                self._start = None

    def result(self) -> dict:
        rate = self.images / self.seconds if self.seconds > 0 else float("nan")
        return {"images": self.images, "seconds": self.seconds, "images_per_s": rate}

    def on_fit_end(self, trainer, module) -> None:
        if self.out:
            Path(self.out).parent.mkdir(parents=True, exist_ok=True)
            Path(self.out).write_text(json.dumps(self.result()))
