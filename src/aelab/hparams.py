"""One HPARAMS row per run in TensorBoard: the run's chosen options and settings, and the metric tags to show."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from aelab.adapters import tensorboard_file_writer

METRICS = ("test/loss", "test/recon_loss", "test/kl_loss", "test/psnr", "test/ssim", "val/loss", "val/psnr")
SECTIONS = ("data", "corruption", "model", "optimizer")
SKIP = ("_target_", "_partial_", "data_dir", "cache_dir", "num_workers", "pin_memory", "on_device", "download")


def flatten(cfg, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        if key in SKIP:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = str(list(value))
        elif value is None:
            out[name] = "null"
        else:
            out[name] = value
    return out


def hparam_dict(cfg: DictConfig, choices: dict | None = None) -> dict:
    """Flattened, primitive-only view of what distinguishes runs (config-group choices first)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    params: dict = {}
    for group, choice in (choices or {}).items():
        if group in ("data", "corruption", "model", "optimizer", "experiment", "trainer") and choice is not None:
            params[group] = str(choice)
    for section in SECTIONS:
        if isinstance(container.get(section), dict):
            params.update(flatten(container[section], f"{section}."))
    params["seed"] = container.get("seed")
    params["trainer.max_epochs"] = container.get("trainer", {}).get("max_epochs")
    return {k: v for k, v in params.items() if isinstance(v, (bool, int, float, str))}


def write_hparams(writer, params: dict, metrics=METRICS) -> None:
    """Register the run in the HPARAMS tab. Metric values are read from the run's own scalar tags, so nothing is
    logged twice. No per-run column list ("experiment") is written: TensorBoard would take the first run's list for
    the whole sweep and hide keys only other models have; without it, columns come from all runs."""
    _, session_start, session_end = hparams(params, {m: 0.0 for m in metrics})
    file_writer = tensorboard_file_writer(writer)
    for summary in (session_start, session_end):
        file_writer.add_summary(summary)
    writer.flush()
