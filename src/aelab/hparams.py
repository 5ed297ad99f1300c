"""What a run tells TensorBoard beyond its scalars and images: its HPARAMS session and the CUSTOM SCALARS layout.

HPARAMS (TensorBoard's hparams plugin) shows one row per run ("session"):

- the row is named by the run's overrides: the keys its sweep varies (`model=vae_conv,optimizer.lr=0.003`), or a
  single run's own overrides (`experiment=vae_conv`), plus a short hash of every hyperparameter, so that two runs
  share a row only when all their hyperparameters are equal (the plugin groups sessions by this name);
- its values keep their types (booleans true/false, numbers, strings); a key without a value (`model.latent_dim:
  null`) is left empty;
- every run writes the same experiment summary (the column list, which TensorBoard takes from any one run): the
  swept keys marked as differing, which TensorBoard sorts first and ticks (it ticks the first five), then a short
  curated list; the metrics are declared explicitly, the optimised one first;
- the session starts when training starts (aelab-train) and ends with the run's true status (success, failure)
  when run_app sees how it ended; an interrupted run is left without an end ("Unknown", as a killed one) until a
  `resume=` run ends it; a job that fails before training is still listed, as failed, with its hyperparameters
  (run_app writes its start and end).

Everything is written as raw event files next to the Lightning logger's (the same TensorBoard run), with
TensorBoard's own protos (aelab.tb_summaries).

The metric and CUSTOM SCALARS entries of a model's loss terms come from the model's declaration
(aelab.models.contract.Term): this module names no term.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.overrides import parse as parse_overrides, typed
from aelab.tb_summaries import STATUS, experiment_pb, layout_pb, session_end_pb, session_start_pb, write_summaries

# Metric columns, in this order (the first five are shown): the optimised metric, then the measures every model
# has (bce/mse per pixel compare model families whose own `loss` is in other units), then the model's own terms.
METRICS = ("val/loss", "test/loss", "test/bce", "test/psnr", "test/ssim", "test/psnr_baseline", "test/mse")
# Columns every run declares after the swept keys (TensorBoard orders each tier by name), with their types
CURATED = {"experiment": str, "model": str, "data": str, "corruption": str, "optimizer": str, "optimizer.lr": float,
           "data.batch_size": int, "code_size": int, "seed": int, "trainer.max_epochs": int}
SECTIONS = ("data", "corruption", "model", "optimizer")
GROUPS = ("data", "corruption", "model", "optimizer", "experiment", "trainer")
SKIP = ("_target_", "_partial_", "data_dir", "cache_dir", "num_workers", "pin_memory", "on_device", "download",
        "in_memory")
# Overrides that are not hyperparameters: where things go, how a sweep or a run is driven, what is logged
NOT_HPARAMS = ("hydra", "paths", "logger", "callbacks", "hparams_search", "task_name", "test", "resume", "ckpt_path",
               "fail_fast", "sweep_exit_nonzero", "sweep_resume", "threads", "optimized_metric", "train_metrics_every",
               "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
               "trainer.default_root_dir")


# --- what the run is ------------------------------------------------------------------------------------------
@dataclass
class Session:
    """One run as HPARAMS shows it."""

    name: str                                   # the row's name (the session group)
    params: dict[str, Any]                      # name -> bool | int | float | str (keys without a value left out)
    swept: list[str]                            # keys the sweep varies (or a single run's own overrides)
    domains: dict[str, list] = field(default_factory=dict)  # every value a swept key takes, where the sweep says
    metrics: list[str] = field(default_factory=list)


def is_hparam(key: str) -> bool:
    key = key.lstrip("+~").split("@", 1)[0]
    if any(key == k or key.startswith(f"{k}.") or key.startswith(f"{k}/") for k in NOT_HPARAMS):
        return False
    return key.rsplit(".", 1)[-1] not in SKIP


def primitive(value: Any) -> Any:
    """A value as HPARAMS can hold it: bool, int, float or str; lists and dicts as text; None stays None."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return str(list(value)) if isinstance(value, (list, tuple)) else str(value)


def flatten(cfg, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        if key in SKIP:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = primitive(value)
    return out


def hparam_dict(cfg: DictConfig, choices: dict | None = None) -> dict:
    """Flattened, primitive-only view of what distinguishes runs (config-group choices first); None for keys
    set to null."""
    params: dict = {}
    for group, choice in (choices or {}).items():
        if group in GROUPS and choice is not None:
            params[group] = primitive(choice)
    container = OmegaConf.to_container(cfg, resolve=True)
    for section in SECTIONS:
        if isinstance(container.get(section), dict):
            params.update(flatten(container[section], f"{section}."))
    params["seed"] = container.get("seed")
    params["trainer.max_epochs"] = (container.get("trainer") or {}).get("max_epochs")
    return params


def _read_multirun(hydra_cfg) -> DictConfig | None:
    try:
        return OmegaConf.load(Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml")
    except Exception:  # noqa: BLE001 - no multirun.yaml (another sweeper), or unreadable: fall back
        return None


def _sweep_values(override) -> list | None:
    """Every value of a choice or range sweep (None for intervals, globs...)."""
    try:
        values = [primitive(v) for v in override.sweep_iterator()]
    except Exception:  # noqa: BLE001
        return None
    return values if all(isinstance(v, (bool, int, float, str)) for v in values) else None


def swept(hydra_cfg, own_keys: list[str]) -> tuple[list[str], dict[str, list]]:
    """The keys this run's sweep varies, in the order of the run's own overrides, and the values each takes where
    the sweep lists them. A multirun reads its sweep's multirun.yaml (written before any job starts) and the
    sweeper's `params` (Optuna); a single run counts all its own overrides."""
    multirun = hydra_cfg is not None and str(hydra_cfg.get("mode", "")).endswith("MULTIRUN")
    if not multirun:
        return list(own_keys), {}
    keys, domains = set(), {}
    recorded = _read_multirun(hydra_cfg)
    lines = OmegaConf.select(recorded, "hydra.overrides.task", default=None) if recorded is not None else None
    for override in parse_overrides(lines):
        if override.is_sweep_override():
            keys.add(override.key_or_group)
            values = _sweep_values(override)
            if values is not None:
                domains[override.key_or_group] = values
    params = OmegaConf.select(hydra_cfg, "sweeper.params", default=None) or {}
    keys |= set(params)
    if recorded is None and not params:
        return list(own_keys), {}
    return [k for k in own_keys if k in keys], domains


def _choice(choices: dict, key: str):
    value = choices.get(key)
    return None if value is None else primitive(value)


def describe(cfg: DictConfig, hydra_cfg=None, model=None) -> Session:
    """The run's session: its name, hyperparameters, swept keys and declared metrics. Works on a config that
    failed to build (values that cannot be resolved are left out) and without the model (a job that failed before
    building it: no code size, the terms its class declares)."""
    choices = dict(hydra_cfg.runtime.choices) if hydra_cfg is not None else {}
    task = OmegaConf.select(hydra_cfg, "overrides.task", default=None) if hydra_cfg is not None else None
    overrides = [o for o in parse_overrides(task) if is_hparam(o.key_or_group) and not o.is_delete()]
    try:
        params = hparam_dict(cfg, choices)
    except Exception:  # noqa: BLE001 - an unresolvable config: keep what can be read
        params = {g: _choice(choices, g) for g in GROUPS if g in choices}
    own: dict[str, str] = {}  # key -> the override as typed for this run
    for o in overrides:
        key = o.key_or_group
        own[key] = typed(o)
        if key in choices:
            params[key] = _choice(choices, key)
        else:
            try:
                params[key] = primitive(OmegaConf.select(cfg, key, throw_on_resolution_failure=True))
            except Exception:  # noqa: BLE001
                params[key] = primitive(o.value())
    keys, domains = swept(hydra_cfg, list(own))
    embedding = model.capabilities.embedding if model is not None else None
    if embedding is not None:
        params["code_size"] = embedding.size  # the flat code's size, whatever the model calls its setting
    shown = keys or list(own)
    label = ",".join(f"{k}={own[k]}" for k in shown) or "defaults"
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:6]
    params = {k: v for k, v in params.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
    terms = sweep_terms(cfg, hydra_cfg, domains, model)
    return Session(name=f"{label} ({digest})", params=params, swept=keys, domains=domains,
                   metrics=metric_tags(cfg, terms))


def model_terms(model_cfg) -> tuple:
    """The terms a model config's class declares (its `terms` at default settings), without building it."""
    from hydra.utils import get_object

    try:
        return tuple(getattr(get_object(str(model_cfg["_target_"])), "terms", ()))
    except Exception:  # noqa: BLE001 - an unknown or broken target: its job reports that itself
        return ()


def sweep_terms(cfg: DictConfig, hydra_cfg, domains: dict, model=None) -> tuple:
    """The terms whose columns this run declares: its model's; in a sweep over models or presets, those of every
    model the sweep lists (each job writes the same columns, and TensorBoard takes them from one job)."""
    own = tuple(model.terms) if model is not None else model_terms(cfg.get("model") or {})
    found = {t.name: t for t in own}
    for group in ("model", "experiment"):
        for choice in domains.get(group, []):
            for term in _composed_terms(hydra_cfg, group, str(choice)):
                found.setdefault(term.name, term)
    return tuple(found.values())


def _composed_terms(hydra_cfg, group: str, choice: str) -> tuple:
    """The declared terms of the model that `group=choice` composes (with the job's own config search path)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return ()  # composed in-process without Hydra's app state (tests, notebooks): this run's terms only
    try:
        name = str(OmegaConf.select(hydra_cfg, "job.config_name", default="train") or "train")
        composed = compose(config_name=name, overrides=[f"{group}={choice}"])
    except Exception:  # noqa: BLE001 - a choice this job cannot compose: its own job reports it
        return ()
    return model_terms(composed.get("model") or {})


def callback_metrics(callbacks) -> list[str]:
    """What the configured callbacks log, as each callback class declares it (ModelCallback.metrics)."""
    from hydra.utils import get_object

    out: list[str] = []
    for node in (callbacks.values() if OmegaConf.is_config(callbacks) else []):
        target = OmegaConf.select(node, "_target_", default=None) if OmegaConf.is_config(node) else None
        try:
            out += list(getattr(get_object(str(target)), "metrics", ())) if target else []
        except Exception:  # noqa: BLE001 - an unknown target: building the callbacks reports it
            continue
    return out


def metric_tags(cfg: DictConfig, terms=()) -> list[str]:
    """The metric columns: the optimised metric first, the shared measures, the test value of each declared term,
    then what the configured callbacks declare they log (the NLL, the probes)."""
    tags = [str(cfg.get("optimized_metric") or "val/loss"), *METRICS]
    tags += [f"test/{t.name}" for t in terms if "test" in t.stages]
    tags += callback_metrics(cfg.get("callbacks"))
    return list(dict.fromkeys(tags))


# --- writing -----------------------------------------------------------------------------------------------------
_open: dict[str, tuple[Path, Session]] = {}  # run directory -> (TensorBoard dir, session) started in this process


def _rank_zero() -> bool:
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def write_hparams(log_dir: str | Path, cfg: DictConfig, hydra_cfg=None, model=None) -> Session | None:
    """Start the run's HPARAMS session (with the experiment summary and the CUSTOM SCALARS layout of the model's
    terms) in the logger's directory; run_app ends it with the run's status."""
    if not _rank_zero():
        return None
    session = describe(cfg, hydra_cfg, model)
    terms = tuple(model.terms) if model is not None else ()
    write_summaries(log_dir, [experiment_pb(session, CURATED), session_start_pb(session), layout_pb(terms)])
    run_dir = Path(str(hydra_cfg.runtime.output_dir)) if hydra_cfg is not None else Path(log_dir)
    _open[str(run_dir.resolve())] = (Path(log_dir), session)
    return session


def tensorboard_dir(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Where the configured TensorBoardLogger writes (save_dir/name/version), or None without one."""
    from aelab.loggers import logger_nodes

    logger = next((n for n in logger_nodes(cfg).values() if "TensorBoard" in str(n.get("_target_", ""))), None)
    if logger is None:
        return None
    try:
        save_dir = Path(str(logger.get("save_dir") or run_dir))
        name, version = logger.get("name") or "", logger.get("version")
    except Exception:  # noqa: BLE001 - unresolvable: the conf/logger/tensorboard.yaml default
        return Path(run_dir) / "tensorboard"
    if version is None:
        return None  # Lightning picks the next version_N: not known here
    version = version if isinstance(version, str) else f"version_{version}"
    return save_dir / str(name) / version if version else save_dir / str(name)


def end_session(run_dir: str | Path, cfg: DictConfig, hydra_cfg, state: str) -> None:
    """End the run's session with its status (succeeded / failed; interrupted: no end, see STATUS). A run whose
    session never started (it failed before training) gets its start here too, so HPARAMS lists it, failed, with
    its hyperparameters; a resumed run's session was started by the run it continues."""
    if not _rank_zero():
        return
    opened = _open.pop(str(Path(run_dir).resolve()), None)
    summaries = [session_end_pb(state)] if state in STATUS else []
    if opened is not None:
        log_dir = opened[0]
    else:
        log_dir = tensorboard_dir(cfg, Path(run_dir))
        if log_dir is None:
            return
        if not cfg.get("resume"):
            session = describe(cfg, hydra_cfg)
            summaries = [experiment_pb(session, CURATED), session_start_pb(session), *summaries]
    if summaries:
        write_summaries(log_dir, summaries)
