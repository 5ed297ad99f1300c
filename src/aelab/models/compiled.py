"""`+model.compile=true|<mode>`: torch.compile of a model's submodules, in place."""

from __future__ import annotations

import torch

from aelab.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_mode(value) -> str | None:
    """model.compile: false (default), true (torch.compile's default mode) or one of torch.compile's modes
    ("reduce-overhead" replays each submodule's kernels as a CUDA graph; what it gains on the lesson's model:
    experiments/benchmarks/RESULTS-gpu.md)."""
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
