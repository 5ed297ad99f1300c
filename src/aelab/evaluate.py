"""aelab-eval: test a checkpoint, on its own data and corruption or on others, and write metrics.json.

    aelab-eval ckpt_path=outputs/runs/.../checkpoints/best.ckpt
    aelab-eval ckpt_path=... data=fashion_mnist corruption=gaussian_noise
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from aelab.cli import entry
from aelab.config import CONFIG_PATH, log_through_hydra
from aelab.errors import ConfigError

if TYPE_CHECKING:  # the heavy imports wait until a run starts, so --help and config errors stay fast
    from aelab.build import RunResult


def eval_config(cfg: DictConfig, info: dict) -> DictConfig:
    """The checkpoint's data/corruption/seed unless this command line chose others; paths are this machine's."""
    seed = cfg.seed if cfg.get("seed") is not None else info.get("seed", 0)
    if cfg.get("data") is not None:
        data = OmegaConf.to_container(cfg.data, resolve=False)
    else:
        data = dict(info["data"], data_dir="${paths.data_dir}", cache_dir="${paths.cache_dir}")
    data["seed"] = seed
    corruption = cfg.corruption if "corruption" in cfg else info.get("corruption")
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)  # the checkpoint adds keys eval.yaml does not have
    merged = OmegaConf.merge(cfg, {"seed": seed, "data": data, "corruption": corruption, "model": info["model"]})
    OmegaConf.set_struct(merged, True)
    return merged


def evaluate(cfg: DictConfig, run) -> RunResult:
    from aelab.build import RunResult, build_callbacks, build_parts, build_trainer, collect_metrics
    from aelab.checkpoints import check_compatible, load_checkpoint
    from aelab.errors import CheckpointError
    from aelab.module import AutoencoderModule

    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path is required: aelab-eval ckpt_path=RUN/checkpoints/best.ckpt (a file that "
                          "aelab-train wrote)")
    ckpt = load_checkpoint(cfg.ckpt_path)
    cfg = eval_config(cfg, ckpt["aelab"])
    parts = build_parts(cfg)
    check_compatible(ckpt, cfg.ckpt_path, ckpt["aelab"]["model"], parts.model.input_shape, parts.model.output_shape)
    module = AutoencoderModule(parts.model, parts.corruption, seed=cfg.seed, run_info=ckpt["aelab"],
                               channels_last=ckpt["aelab"].get("channels_last", False))  # training's layout, its numbers
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path}: weights do not fit the model ({str(e).splitlines()[0]})") from None
    trainer = build_trainer(cfg, build_callbacks(cfg.get("callbacks"), parts.model))
    trainer.test(module, datamodule=parts.datamodule)
    OmegaConf.save(cfg, run.path / "config.yaml", resolve=True)  # with the checkpoint's choices filled in
    metrics = {**collect_metrics(trainer, prefixes=("test/",)), "ckpt_path": str(cfg.ckpt_path)}
    return RunResult(metrics, parts, module, trainer)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def app(cfg: DictConfig) -> float | None:
    from aelab.perf import tune_malloc
    from aelab.runs import run_app

    log_through_hydra()  # each Lightning message once, on the console and in eval.log
    tune_malloc()  # glibc malloc settings that speed up training (AELAB_NO_MALLOC_TUNING=1 opts out)
    return run_app(evaluate, cfg, "aelab-eval")


# model=..., +model=..., model.latent_dim=..., ~model: any override of the model group or its keys
MODEL_OVERRIDE = re.compile(r"^(~|\+\+|\+)?model([.@=]|$)")


@entry("aelab-eval", config_name="eval")
def main() -> None:
    """aelab-eval; a model override is refused before Hydra composes eval.yaml, which has no model group and would
    answer "Could not override 'model'. No match in the defaults list"."""
    for arg in sys.argv[1:]:
        if MODEL_OVERRIDE.match(arg):
            raise ConfigError(f"{arg}: the model comes from the checkpoint (ckpt_path); aelab-eval takes data=, "
                              "corruption=, seed=, trainer= and callbacks=")
    app()


if __name__ == "__main__":
    main()
