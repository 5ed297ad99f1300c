"""Loading checkpoints safely (weights_only=True) and refusing ones that do not fit the requested run."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from aelab.errors import CheckpointError

# Keys that left the model's config: how often a scheduler steps is the scheduler's (scheduler.interval, aelab.optim).
# A checkpoint that still records them evaluates without them; training them again takes the new key.
RETIRED_MODEL_KEYS = ("scheduler_interval",)


def load_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint written by aelab-train; anything else is refused with a one-line reason."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"ckpt_path={path}: no such file")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file, truncated, or pickles arbitrary objects
        why = ("it holds objects that weights_only=True refuses to unpickle" if zipfile.is_zipfile(p)
               else "not a PyTorch checkpoint file (or a truncated one)")
        raise CheckpointError(f"ckpt_path={path}: cannot be loaded safely: {why}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "aelab" not in ckpt:
        raise CheckpointError(f"ckpt_path={path}: not an aelab checkpoint (it has no 'aelab' record); "
                              "use a checkpoints/*.ckpt file written by aelab-train")
    model = ckpt["aelab"].get("model")
    if isinstance(model, dict):
        ckpt["aelab"]["model"] = {k: v for k, v in model.items() if k not in RETIRED_MODEL_KEYS}
    return ckpt


def model_name(model_cfg: dict) -> str:
    return str(model_cfg.get("_target_", "?")).rsplit(".", 1)[-1]


def check_compatible(ckpt: dict, path: str | Path, model_cfg: dict, input_shape, output_shape) -> None:
    """Refuse a checkpoint whose model or data shapes differ from what this run builds, naming both."""
    info = ckpt["aelab"]
    theirs, ours = dict(info["model"]), dict(model_cfg)
    if theirs != ours:
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise CheckpointError(
            f"ckpt_path={path} holds {model_name(theirs)} "
            f"({', '.join(f'{k}={theirs.get(k)!r}' for k in diff)}) but this run configures {model_name(ours)} "
            f"({', '.join(f'{k}={ours.get(k)!r}' for k in diff)})")
    for what, want, got in (("input", info["input_shape"], input_shape), ("output", info["output_shape"], output_shape)):
        if list(want) != list(got):
            raise CheckpointError(f"ckpt_path={path} was trained on {what} images of shape {tuple(want)}, "
                                  f"this data/corruption gives {tuple(got)}")
