"""Where the configs live, the OmegaConf resolvers they use, and how Lightning's messages reach Hydra's logging."""

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

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


register_resolvers()


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
