"""Build the pieces of a run from a composed config; shared by aelab-train and aelab-eval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import aelab
from aelab.corruptions import Corruption, build as build_corruption_list
from aelab.data import ImageDataModule
from aelab.errors import ConfigError
from aelab.models import Autoencoder


@dataclass
class Parts:
    datamodule: ImageDataModule
    corruption: Corruption
    model: Autoencoder


def build_corruption(cfg: DictConfig | None) -> Corruption:
    return build_corruption_list(instantiate(cfg) if cfg else None)


def build_parts(cfg: DictConfig, model_cfg: DictConfig | None = None) -> Parts:
    """Corruption and model are validated against the data's shape before any training starts."""
    corruption = build_corruption(cfg.get("corruption"))
    datamodule: ImageDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    clean = datamodule.image_shape
    model = instantiate(model_cfg if model_cfg is not None else cfg.model, input_shape=corruption.output_shape(clean),
                        output_shape=clean, num_classes=datamodule.num_classes)
    return Parts(datamodule, corruption, model)


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback] | None = None) -> L.Trainer:
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    return instantiate(cfg.trainer, logger=logger, callbacks=callbacks or [])


def build_callbacks(cfg: DictConfig | None) -> list[L.Callback]:
    return [instantiate(c) for c in (cfg or {}).values() if c is not None and "_target_" in c]


def checkpoint_info(cfg: DictConfig, parts: Parts) -> dict:
    """What a checkpoint carries so aelab-eval can rebuild its model and refuse incompatible data."""
    container = OmegaConf.to_container(cfg, resolve=True)
    return {"aelab_version": aelab.__version__,
            "model": container["model"], "data": container["data"], "corruption": container.get("corruption"),
            "seed": container.get("seed"),
            "input_shape": list(parts.model.input_shape), "output_shape": list(parts.model.output_shape)}


def collect_metrics(trainer: L.Trainer, prefixes=("train/", "val/", "test/")) -> dict[str, float]:
    out = {}
    for key, value in trainer.callback_metrics.items():
        if key.startswith(prefixes):
            v = float(value.item() if isinstance(value, torch.Tensor) else value)
            out[key] = v
    return dict(sorted(out.items()))


def check_no_nan(metrics: dict[str, float]) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v) and k.endswith("loss")}
    if bad:
        raise ConfigError(f"training diverged: non-finite {bad}; lower optimizer.lr or check the data")
