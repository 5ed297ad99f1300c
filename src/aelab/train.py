"""aelab-train: compose data x corruption x model (conf/train.yaml), fit, test, and write metrics.json.

    aelab-train model=vae_conv corruption=gaussian_noise trainer.max_epochs=5
    aelab-train -m model=ae_conv,vae_conv corruption=none,downsample
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from aelab.config import CONFIG_DIR


def train(cfg: DictConfig, run) -> dict[str, float]:
    import lightning as L
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from aelab.build import build_callbacks, build_parts, build_trainer, check_no_nan, checkpoint_info, collect_metrics
    from aelab.hparams import hparam_dict, write_hparams
    from aelab.module import AutoencoderModule

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    parts = build_parts(cfg)
    module = AutoencoderModule(parts.model, parts.corruption, optimizer=instantiate(cfg.optimizer),
                               scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
                               seed=cfg.seed, train_metrics_every=cfg.train_metrics_every,
                               run_info=checkpoint_info(cfg, parts))
    trainer = build_trainer(cfg, build_callbacks(cfg.get("callbacks")))
    if trainer.logger is not None:
        write_hparams(trainer.logger.experiment, hparam_dict(cfg, HydraConfig.get().runtime.choices))

    trainer.fit(module, datamodule=parts.datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = collect_metrics(trainer)
    check_no_nan(metrics)
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(module, datamodule=parts.datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(collect_metrics(trainer, prefixes=("test/",)))
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from aelab.runs import run_app

    return run_app(train, cfg, "aelab-train")


if __name__ == "__main__":
    main()
