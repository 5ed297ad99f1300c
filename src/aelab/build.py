"""Build the pieces of a run from a composed config; shared by aelab-train and aelab-eval."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

import aelab
from aelab.corruptions import Corruption, build as build_corruption_list
from aelab.data import DataSpec, ImageDataModule
from aelab.errors import AelabError, ConfigError
from aelab.models import Autoencoder
from aelab.validation import check_optimization, check_values


@dataclass
class Parts:
    """What a config builds before training: the data (and its spec), the corruption and the model."""

    datamodule: ImageDataModule
    corruption: Corruption
    model: Autoencoder

    @property
    def spec(self) -> DataSpec:
        return self.datamodule.spec


@dataclass
class RunResult:
    """What aelab-train / aelab-eval built and measured: scripts and tests read metrics and objects from it
    instead of reaching into a run directory or a registry."""

    metrics: dict[str, float]
    parts: Parts
    module: L.LightningModule
    trainer: L.Trainer


HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def accepted_keys(target) -> set[str] | None:
    """Keyword arguments a class (following **kwargs up its bases) or function accepts; None: anything."""
    chain = [k.__init__ for k in target.__mro__ if "__init__" in vars(k)] if inspect.isclass(target) else [target]
    keys: set[str] = set()
    for fn in chain:
        if fn is object.__init__:
            break
        params = inspect.signature(fn).parameters.values()
        keys |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return keys
    return None


def make(cfg, what: str, **kwargs):
    """hydra.utils.instantiate, with unknown keys and values of the wrong type refused up front (naming the allowed
    ones: the target's annotations are the schema) and our own one-line errors passed through instead of Hydra's
    wrapper around them."""
    target = get_object(cfg["_target_"])
    allowed = accepted_keys(target)
    unknown = sorted(set(cfg.keys()) - HYDRA_KEYS - allowed) if allowed is not None else []
    if unknown:
        shown = ", ".join(sorted(allowed - set(kwargs) - {"self", "args", "kwargs"}))
        raise ConfigError(f"{what}: unknown key(s) {unknown} for {target.__name__}; allowed: {shown}")
    check_values(target, {k: v for k, v in cfg.items() if k not in HYDRA_KEYS}, what)  # declared types, up front
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, AelabError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise ConfigError(f"{what}: {' '.join(str(e).split())}") from None


def build_corruption(cfg: DictConfig | None) -> Corruption:
    return build_corruption_list({name: make(c, f"corruption.{name}") for name, c in (cfg or {}).items()})


def build_parts(cfg: DictConfig, model_cfg: DictConfig | None = None) -> Parts:
    """Everything is validated (keys, values, shapes) before any data is read; then the data is set up."""
    check_optimization(cfg.get("optimizer"), cfg.get("scheduler"))
    corruption = build_corruption(cfg.get("corruption"))
    datamodule: ImageDataModule = make(cfg.data, "data")
    spec = datamodule.spec
    model_cfg = model_cfg if model_cfg is not None else cfg.model
    from aelab.models import compiled

    mode = compiled.compile_mode(model_cfg.get("compile"))  # +model.compile=true|<mode>: torch.compile
    if "compile" in model_cfg:
        model_cfg = {k: v for k, v in model_cfg.items() if k != "compile"}
    model = make(model_cfg, "model", input_shape=corruption.output_shape(spec.shape), output_shape=spec.shape,
                 num_classes=spec.num_classes)
    if mode:
        compiled.compile_model(model, mode)
    datamodule.setup("fit")
    return Parts(datamodule, corruption, model)


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback] | None = None, run_dir=None) -> L.Trainer:
    """The configured Trainer with its loggers (aelab.loggers: any of the logger group; `run_dir` lets run_app
    record the run's end in them)."""
    from aelab.callbacks.progress import with_progress_bar
    from aelab.loggers import build_loggers
    from aelab.perf import skip_nan_fill

    logger = build_loggers(cfg, run_dir) or False
    callbacks = with_progress_bar(callbacks or [], cfg.trainer.get("enable_progress_bar", True))
    trainer = make(cfg.trainer, "trainer", logger=logger, callbacks=callbacks)
    skip_nan_fill()  # deterministic=warn/true stays deterministic, without a NaN fill of every new tensor
    return trainer


def build_callbacks(cfg: DictConfig | None, model=None) -> list[L.Callback]:
    """The configured callbacks; with `model`, those that say they cannot apply to it (a latent grid of a 64-d
    code, prior samples of a plain autoencoder, the NLL of a model without a likelihood: ModelCallback.why_not)
    are left out, each reason logged once: Lightning calls every callback at every step's hooks."""
    from aelab.callbacks.base import ModelCallback

    callbacks = [make(c, f"callbacks.{name}") for name, c in (cfg or {}).items() if c is not None and "_target_" in c]
    return [c for c in callbacks if model is None or not isinstance(c, ModelCallback) or c.applies(model)]


def checkpoint_info(cfg: DictConfig, parts: Parts) -> dict:
    """What a checkpoint carries so aelab-eval can rebuild its model and refuse incompatible data."""
    container = OmegaConf.to_container(cfg, resolve=True)
    return {"aelab_version": aelab.__version__,
            "model": container["model"], "data": container["data"], "corruption": container.get("corruption"),
            "seed": container.get("seed"), "channels_last": bool(container.get("channels_last", False)),
            "input_shape": list(parts.model.input_shape), "output_shape": list(parts.model.output_shape)}


def collect_metrics(trainer: L.Trainer, prefixes=("train/", "val/", "test/")) -> dict[str, float]:
    out = {}
    for key, value in trainer.callback_metrics.items():
        if key.startswith(prefixes) and not key.endswith("_step"):  # a run's numbers, not its last logged batch
            v = float(value.item() if isinstance(value, torch.Tensor) else value)
            out[key] = v
    return dict(sorted(out.items()))


def check_no_nan(metrics: dict[str, float]) -> None:
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v) and k.endswith("loss")}
    if bad:
        raise ConfigError(f"training diverged: non-finite {bad}; lower optimizer.lr or check the data")
