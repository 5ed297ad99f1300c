"""aelab-train: compose data x corruption x model (conf/train.yaml), fit, test, and write metrics.json.

    aelab-train model=vae_conv corruption=gaussian_noise trainer.max_epochs=5
    aelab-train -m model=ae_conv,vae_conv corruption=none,downsample
    aelab-train resume=outputs/runs/<date>/<time>   # continue a killed run in its own directory
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from aelab.cli import entry
from aelab.config import CONFIG_PATH, log_through_hydra

if TYPE_CHECKING:  # the heavy imports wait until a run starts, so --help and config errors stay fast
    from aelab.build import RunResult


def resume_config(cfg: DictConfig) -> DictConfig:
    """`resume=DIR`: DIR's recorded config, re-pointed to where DIR is now (aelab.resume)."""
    from aelab.resume import resume_config as recorded

    return recorded(cfg)


def train(cfg: DictConfig, run) -> RunResult:
    """Fit (and test) the run `cfg` describes in the run directory `run`; returns what it built and measured."""
    import lightning as L
    from hydra.core.hydra_config import HydraConfig

    from aelab.build import (RunResult, build_callbacks, build_parts, build_trainer, check_no_nan, checkpoint_info,
                             collect_metrics)
    from aelab.callbacks.guards import FiniteLoss, SaveOnInterrupt
    from aelab.capture import capture_mode
    from aelab.checkpoints import check_compatible, load_checkpoint
    from aelab.loggers import start_run
    from aelab.module import AutoencoderModule
    from aelab.optim import build_optimisation
    from aelab.runs import RunCost
    from aelab.sweep import configure_job
    from aelab.terms import write_terms

    capture = capture_mode(cfg.get("capture_step", False))  # a bad value is refused before the data loads
    configure_job(cfg)  # torch threads (split between parallel sweep jobs), no DataLoader workers under joblib
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    parts = build_parts(cfg)
    module = AutoencoderModule(parts.model, parts.corruption, optimisation=build_optimisation(cfg), seed=cfg.seed,
                               train_metrics_every=cfg.train_metrics_every,
                               capture_step=capture,
                               channels_last=cfg.get("channels_last", False),
                               run_info=checkpoint_info(cfg, parts))
    if cfg.get("ckpt_path"):  # refuse another model's checkpoint before Lightning fails deep inside
        check_compatible(load_checkpoint(cfg.ckpt_path), cfg.ckpt_path, module.run_info["model"],
                         parts.model.input_shape, parts.model.output_shape)
    guards = [FiniteLoss(), SaveOnInterrupt(run.path / "checkpoints")]
    if cfg.get("resume"):
        from aelab.resume import RebaseCheckpointPaths

        guards.append(RebaseCheckpointPaths())  # a copied or moved run's checkpoint names its old folder
    trainer = build_trainer(cfg, build_callbacks(cfg.get("callbacks"), parts.model) + guards, run_dir=run.path)
    # hyperparameters in every logger (TensorBoard: the HPARAMS session); run_app records the end with its status
    start_run(trainer, cfg, HydraConfig.get(), parts.model)
    write_terms(run.path, parts.model)  # what aelab-compare and the results report read the model's terms from

    cost = RunCost(run.path, parts.model, resumed=bool(cfg.get("resume")))
    with cost.timed("fit_seconds"):
        trainer.fit(module, datamodule=parts.datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = collect_metrics(trainer)
    check_no_nan(metrics)
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        with cost.timed("test_seconds"):
            trainer.test(module, datamodule=parts.datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(collect_metrics(trainer, prefixes=("test/",)))
    return RunResult(metrics, parts, module, trainer)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def app(cfg: DictConfig) -> float | None:
    from aelab.perf import tune_malloc
    from aelab.runs import run_app

    log_through_hydra()  # each Lightning message once, on the console and in train.log
    tune_malloc()  # glibc malloc settings that speed up training (AELAB_NO_MALLOC_TUNING=1 opts out)
    return run_app(train, cfg, "aelab-train", prepare=resume_config if cfg.get("resume") else None)


@entry("aelab-train", config_name="train")
def main() -> None:
    """aelab-train: Hydra's own errors (an unknown key, an unreadable override...) end in one line, as ours do."""
    app()


if __name__ == "__main__":
    main()
