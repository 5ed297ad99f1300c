"""Where the configs live, the OmegaConf resolvers they use, and how Lightning's messages reach Hydra's logging."""

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import aelab.conf

# The configs ship inside the package as aelab.conf (the checkout's conf/, mapped in pyproject.toml): Hydra reads
# them through CONFIG_PATH; CONFIG_DIR is the same folder on disk (the checkout's conf/ in an editable install).
CONFIG_PATH = "pkg://aelab.conf"
CONFIG_DIR = Path(aelab.conf.__file__).resolve().parent


def _checkout() -> Path | None:
    """The checkout this package runs from (src/aelab beside pyproject.toml), or None for an installed copy."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "src" / "aelab").is_dir() else None


REPO_ROOT = _checkout()


def register_resolvers() -> None:
    """`${aelab_cwd:}` is the directory the command runs in: outputs/, data/ and .cache/ default to it, wherever
    aelab is installed."""
    if not OmegaConf.has_resolver("aelab_cwd"):
        OmegaConf.register_new_resolver("aelab_cwd", os.getcwd)
    if not OmegaConf.has_resolver("aelab_first"):  # the first non-null argument (resume=DIR or a new run dir)
        OmegaConf.register_new_resolver("aelab_first", lambda *args: next((a for a in args if a is not None), None))
    if not OmegaConf.has_resolver("aelab_unless"):  # the second argument unless the first is set (resume=DIR)
        OmegaConf.register_new_resolver("aelab_unless", lambda given, value: value if given is None else None)
    if not OmegaConf.has_resolver("aelab_record_subdir"):  # sweep_resume=true: no .hydra/ rewrite of a skipped job
        OmegaConf.register_new_resolver("aelab_record_subdir", _record_subdir)


def _record_subdir(*args):
    from aelab.sweep_resume import record_subdir  # the sweep machinery loads only when a config asks

    return record_subdir(*args)


register_resolvers()


def compose(overrides: Sequence[str] = (), config_name: str = "train", output_dir: str | Path | None = None,
            keep_hydra: bool = False) -> DictConfig:
    """The config `aelab-<config_name>` would run with these overrides, for scripts, notebooks and tests that call
    aelab.train.train / aelab.evaluate.evaluate themselves: Hydra's compose API on the packaged configs. With
    `output_dir`, the Hydra state those functions read (${hydra:runtime.output_dir}, the config choices that HPARAMS
    records) is set as the CLI sets it. The `hydra` node is dropped, as the apps' tasks receive the config, unless
    `keep_hydra`."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.hydra.job.num, cfg.hydra.job.id = 0, "compose"
        HydraConfig.instance().set_config(cfg)
    if not keep_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def log_through_hydra() -> None:
    """Lightning's `lightning` logger prints to stderr with its own handler and also passes each message to the root
    logger, where Hydra's console (stdout) and file (<run>/train.log) handlers are, so a log capturing both streams
    would hold each message twice. Once Hydra has configured logging, Lightning's console handlers go and Hydra's
    print each message once; where the root logger has no handlers, Lightning's stay."""
    import lightning  # noqa: F401  (importing it adds its handler)

    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
