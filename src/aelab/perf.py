"""Process-level performance settings applied at the start of aelab-train / aelab-eval.

glibc's malloc returns freed memory to the kernel eagerly: blocks above the mmap threshold are mmap'd and munmap'd
on every allocation, and the top of the heap is trimmed as soon as it exceeds the trim threshold. A training step
allocates and frees the same activation buffers thousands of times, so each step pays page faults and zeroing of
fresh pages. Keeping those pages in the process (the effect of MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in
the environment) removes that cost; see experiments/benchmarks/RESULTS.md for the measured effect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import platform
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from aelab.errors import ConfigError, check

OPT_OUT_ENV = "AELAB_NO_MALLOC_TUNING"

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# The documented maximum (mallopt(3): 4*1024*1024*sizeof(long) = 32 MiB on 64-bit; glibc ignores larger
# MALLOC_MMAP_THRESHOLD_ values): buffers up to 32 MiB come from the heap and are reused.
MMAP_THRESHOLD = 32 * 1024 * 1024
# Keep up to 1 GiB of freed memory at the top of the heap instead of trimming it back to the kernel after each step.
TRIM_THRESHOLD = 1024 * 1024 * 1024

_applied: dict[str, int] | None = None


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> dict[str, int]:
    """Raise glibc's mmap and trim thresholds in this process (fixed values also switch off glibc's dynamic
    threshold). Returns the settings that took effect: empty on other C libraries, when AELAB_NO_MALLOC_TUNING=1,
    or when the user already set MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ (their choice wins)."""
    global _applied
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() in ("1", "true", "yes"):
        return {}
    if _applied is not None:
        return dict(_applied)
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        _applied = {}
        return {}
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = {}
    for env, param, value in (("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, mmap_threshold),
                              ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, trim_threshold)):
        if env in os.environ:
            continue
        if libc.mallopt(param, int(value)) == 1:  # 1 = accepted, 0 = out of range (nothing changed)
            applied[env.lower().strip("_")] = int(value)
    _applied = applied
    return dict(applied)


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
            self._n += len(batch[-1])  # raw batches are (images, labels)
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


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(value) -> str | None:
    """model.compile: false (default), true (torch.compile's default mode) or one of torch.compile's modes
    ("reduce-overhead" replays each submodule's kernels as a CUDA graph; on the lesson's small model it gained
    nothing on an H100: experiments/benchmarks/RESULTS-gpu.md)."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if value not in COMPILE_MODES:
        raise ConfigError(f"model.compile must be true, false or one of {', '.join(COMPILE_MODES)}, got {value!r}")
    return value


def compile_model(model: torch.nn.Module, mode: str = "default") -> torch.nn.Module:
    """torch.compile every direct submodule (encoder, decoder, ...) in place. Training calls `model.loss`, not
    `forward`, so compiling the model's forward alone would change nothing; in-place compilation keeps the
    state_dict keys, so checkpoints load into uncompiled models."""
    for child in model.children():
        child.compile(mode=mode)
    return model


def skip_nan_fill() -> None:
    """trainer.deterministic also makes torch fill every new tensor with NaN (to expose reads of uninitialised
    memory). Correct code never reads it, torch's documentation suggests turning the fill off for speed, and
    results stay bit-for-bit deterministic; the fill cost ~4% of a small conv model's CPU step."""
    torch.utils.deterministic.fill_uninitialized_memory = False


PROGRESS_BAR_REFRESH_RATE = 10  # batches between redraws: still several a second


class LossProgressBar(TQDMProgressBar):
    """Shows train/loss, read only when the bar redraws. Lightning turns every prog_bar value into a Python number
    after every batch, which on a GPU makes the CPU wait for each step to finish instead of queueing the next (a
    sync per step), so the module logs train/loss without prog_bar and the bar reads it here, every redraw."""

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            metrics["train/loss"] = loss.item()
        return metrics

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """One redraw per update: Lightning's bar redraws for the new count and again for the new metrics (every
        line twice in a log that captures stdout); here the metrics are set without a redraw and the count draws both."""
        bar, n = self.train_progress_bar, batch_idx + 1
        if not self.is_enabled or not (n % self.refresh_rate == 0 or n == bar.total):
            return
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.n = n
        bar.refresh()


def with_progress_bar(callbacks: list, enabled: bool) -> list:
    """Lightning's default TQDM bar recomputes its metrics and redraws after every batch, ~2.5% of a small model's
    CPU step; a bar that refreshes every 10th batch looks the same. A progress bar the caller passed is kept."""
    callbacks = list(callbacks)
    if enabled and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(LossProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_RATE))
    return callbacks
