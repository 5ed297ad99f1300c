"""The logger group (conf/logger/): TensorBoard (the default), CSV, MLflow, or several at once.

    aelab-train logger=csv                     # <run>/csv/metrics.csv, hparams.yaml (with `status:`)
    aelab-train logger=mlflow                  # a local MLflow file store, outputs/mlruns (pip install -e ".[mlflow]")
    aelab-train logger=[tensorboard,csv]       # both
    aelab-train logger=null                    # none

Each option nests its node under its own name, so a list merges into `cfg.logger = {tensorboard: ..., csv: ...}`.
Lightning's loggers do the writing; this module is the glue: every logger gets the run's flattened
hyperparameters (the HPARAMS view, aelab.hparams.describe), Lightning's metrics, and at the end the state
run_app records in status.json (MLflow: FINISHED / FAILED / KILLED; CSV: `status:` in hparams.yaml). TensorBoard's
HPARAMS session and CUSTOM SCALARS layout stay aelab.hparams's.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.errors import ConfigError

log = logging.getLogger("aelab")
OPTIONS = ("tensorboard", "csv", "mlflow")
MLFLOW_STATUS = {"running": "RUNNING", "succeeded": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_open: dict[str, list] = {}  # run directory -> the loggers its trainer got in this process


def logger_nodes(cfg: DictConfig) -> dict[str, DictConfig]:
    """{name: node} of the configured loggers; a node with its own `_target_` (one logger in the layout that
    predates the group) counts as one logger named `logger`."""
    node = cfg.get("logger")
    if not node:
        return {}
    if not OmegaConf.is_dict(node):
        raise ConfigError(f"logger={node!r} is not allowed: expected one of {', '.join(OPTIONS)}, a list of them "
                          "(logger=[tensorboard,csv]) or null")
    if "_target_" in node:
        return {"logger": node}
    nodes = {}
    for name, sub in node.items():
        if sub is None:  # logger.csv=null drops one logger of a list
            continue
        if not OmegaConf.is_dict(sub) or "_target_" not in sub:
            raise ConfigError(f"logger.{name}={OmegaConf.to_container(sub) if OmegaConf.is_config(sub) else sub!r} "
                              f"is not allowed: expected a logger node with a _target_, as conf/logger/ holds "
                              f"({', '.join(OPTIONS)})")
        nodes[str(name)] = sub
    return nodes


def kind(logger) -> str:
    """'tensorboard', 'csv', 'mlflow' or 'other', by Lightning's class."""
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger

    for cls, name in ((TensorBoardLogger, "tensorboard"), (CSVLogger, "csv"), (MLFlowLogger, "mlflow")):
        if isinstance(logger, cls):
            return name
    return "other"


def _check_mlflow(what: str, node: DictConfig) -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what}: MLflow is not installed; install the extra: pip install -e \".[mlflow]\" "
                          "(or pip install mlflow-skinny)") from None
    uri = str(node.get("tracking_uri") or "")
    if uri.startswith("file:") or (uri and "://" not in uri):
        # MLflow 3 keeps the local file store (no server, no database) behind this documented opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def build_loggers(cfg: DictConfig, run_dir: str | Path | None = None) -> list:
    """The configured Lightning loggers; with `run_dir`, remembered so run_app can record the run's end in them."""
    from aelab.build import make

    loggers = []
    for name, node in logger_nodes(cfg).items():
        what = "logger" if name == "logger" else f"logger.{name}"
        if "MLFlowLogger" in str(node.get("_target_")):
            _check_mlflow(what, node)
        loggers.append(make(node, what))
    if run_dir is not None:
        _open[str(Path(run_dir).resolve())] = loggers
    return loggers


def tensorboard_of(loggers) -> Any:
    return next((lg for lg in loggers if kind(lg) == "tensorboard"), None)


def start_run(trainer, cfg: DictConfig, hydra_cfg, model) -> None:
    """The run's hyperparameters in every logger: TensorBoard's HPARAMS session (aelab.hparams; a resumed run's
    was started by the run it continues), the flat params with `status: running` in the others (a resumed run is
    a new MLflow run, and rewrites CSV's hparams.yaml)."""
    if not trainer.loggers:
        return
    from aelab.hparams import describe, write_hparams

    tensorboard = tensorboard_of(trainer.loggers)
    if tensorboard is not None and not cfg.get("resume"):
        write_hparams(tensorboard.log_dir, cfg, hydra_cfg, model=model)
    others = [lg for lg in trainer.loggers if kind(lg) != "tensorboard"]
    if others:
        session = describe(cfg, hydra_cfg, model)
        for logger in others:
            _params(logger, session)


def _params(logger, session) -> None:
    if kind(logger) == "csv":
        logger.log_hyperparams({**session.params, "status": "running"})
    elif kind(logger) == "mlflow":
        logger.log_hyperparams(session.params)
        # the HPARAMS row's name (swept values and a hash), so MLflow's run list reads as TensorBoard's does
        logger.experiment.set_tag(logger.run_id, "mlflow.runName", session.name)
    else:
        logger.log_hyperparams(session.params)


def record_end(run_dir: str | Path, cfg: DictConfig, hydra_cfg, state: str) -> None:
    """Record the run's final state (status.json's) in its CSV and MLflow loggers. A run that failed before its
    trainer was built gets them here, with its hyperparameters, so its failure is on record there too."""
    loggers = _open.pop(str(Path(run_dir).resolve()), None)
    if loggers is None:
        if state != "failed" or cfg.get("resume") or not any(n != "tensorboard" for n in logger_nodes(cfg)):
            return
        from aelab.hparams import describe

        session = describe(cfg, hydra_cfg)
        nodes = {n: OmegaConf.to_container(c, resolve=True) for n, c in logger_nodes(cfg).items()
                 if "TensorBoard" not in str(c.get("_target_"))}
        loggers = build_loggers(OmegaConf.create({"logger": nodes}))
        for logger in loggers:
            _params(logger, session)
    for logger in loggers:
        if kind(logger) == "csv":
            logger.log_hyperparams({"status": state})
        elif kind(logger) == "mlflow":
            logger.experiment.set_terminated(logger.run_id, MLFLOW_STATUS.get(state, "FAILED"))


def image_loggers(trainer) -> list:
    """The run's loggers that take images: TensorBoard's writers and MLflow runs."""
    return [lg for lg in trainer.loggers if kind(lg) in ("tensorboard", "mlflow")]
