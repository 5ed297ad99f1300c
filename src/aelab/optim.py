"""Optimisation as the run's config describes it (`optimizer`, `scheduler`), built once for every model.

    optimizer: {_target_: torch.optim.Adam, _partial_: true, lr: 1e-3}
    scheduler: {_target_: torch.optim.lr_scheduler.OneCycleLR, _partial_: true, max_lr: 3e-3, total_steps: null,
                interval: step}

A model only says which parameters each optimizer gets (`parameter_groups`: one group, or one per optimizer for a
model that owns its training step). Two keys of the scheduler node are aelab's, not the scheduler's:

    interval  "epoch" (default) or "step": how often the scheduler steps (OneCycleLR / cosine over the run: step)
    monitor   the metric ReduceLROnPlateau reads (default val/loss); it always steps once per epoch

`total_steps: null` is filled with the run's optimizer steps as Lightning estimates them, so a schedule follows any
`epochs=` or `data.batch_size=` override.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from omegaconf import DictConfig, OmegaConf

from aelab.errors import ConfigError, check

INTERVALS = ("step", "epoch")
OWN_KEYS = ("interval", "monitor")


@dataclass
class Optimisation:
    """Factories for the run's optimizer(s) and scheduler(s), and when the schedulers step."""

    optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam
    scheduler: Callable[..., Any] | None = None
    interval: Literal["step", "epoch"] = "epoch"
    monitor: str = "val/loss"

    def with_run_length(self, steps: Callable[[], float]) -> Callable[..., Any] | None:
        """The scheduler factory, with `total_steps: null` replaced by the run's optimizer steps."""
        factory = self.scheduler
        if isinstance(factory, functools.partial) and "total_steps" in factory.keywords \
                and factory.keywords["total_steps"] is None:
            total = steps()
            check(math.isfinite(total), "scheduler.total_steps=null needs a run of known length: set epochs or "
                                        "trainer.max_steps")
            return functools.partial(factory, total_steps=int(total))
        return factory

    def configure(self, groups: list[list[torch.nn.Parameter]], steps: Callable[[], float]):
        """What LightningModule.configure_optimizers returns: one optimizer per parameter group, each with its
        scheduler stepped every `interval` (ReduceLROnPlateau: every epoch, on `monitor`)."""
        optimizers = [self.optimizer(params=group) for group in groups]
        factory = self.with_run_length(steps)
        if factory is None:
            return optimizers[0] if len(optimizers) == 1 else optimizers
        configs = []
        for opt in optimizers:
            try:
                sched = factory(optimizer=opt)
            except ZeroDivisionError:  # OneCycleLR: pct_start x total_steps == 1 leaves a warm-up of zero steps
                name, keys = partial_parts(factory)
                raise ConfigError(
                    f"scheduler {name} cannot be laid over this run's {keys.get('total_steps', '?')} optimizer steps"
                    + (f" with pct_start={keys['pct_start']}" if "pct_start" in keys else "") + ": one of its "
                    "phases would be zero steps long; train for more steps (epochs, trainer.limit_train_batches) or "
                    "change scheduler.pct_start") from None
            plateau = isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
            when = {"interval": "epoch", "monitor": self.monitor} if plateau else {"interval": self.interval}
            configs.append({"optimizer": opt, "lr_scheduler": {"scheduler": sched, **when}})
        return configs[0] if len(configs) == 1 else configs


def partial_parts(factory) -> tuple[str, dict]:
    """The class name and the merged keywords of a (nested) functools.partial: with_run_length wraps Hydra's."""
    keywords: dict = {}
    while isinstance(factory, functools.partial):
        keywords = {**factory.keywords, **keywords}
        factory = factory.func
    return getattr(factory, "__name__", type(factory).__name__), keywords


def build_optimisation(cfg: DictConfig) -> Optimisation:
    """The run's Optimisation from `cfg.optimizer` and `cfg.scheduler` (aelab's own keys taken out first)."""
    from hydra.utils import instantiate

    optimizer = instantiate(cfg.optimizer) if cfg.get("optimizer") else torch.optim.Adam
    node = cfg.get("scheduler")
    if not node:
        return Optimisation(optimizer)
    container = OmegaConf.to_container(node, resolve=True)
    interval = container.pop("interval", "epoch")
    monitor = container.pop("monitor", "val/loss")
    check(interval in INTERVALS, f"scheduler.interval={interval!r} is not one of {list(INTERVALS)}")
    check(isinstance(monitor, str) and bool(monitor), f"scheduler.monitor={monitor!r} must name a metric, e.g. val/loss")
    return Optimisation(optimizer, instantiate(container), interval, monitor)


def step_schedulers(module, interval: str) -> None:
    """Manual optimisation (a model that owns its training step): Lightning leaves the schedulers to the module,
    which steps those of `interval` here: after each batch ("step") or after validation ran ("epoch",
    ReduceLROnPlateau on its monitored metric)."""
    configs = module.trainer.lr_scheduler_configs if module._trainer is not None else []
    for config in configs:
        if config.interval != interval:
            continue
        if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if (value := module.trainer.callback_metrics.get(config.monitor)) is not None:
                config.scheduler.step(value)
        else:
            config.scheduler.step()
