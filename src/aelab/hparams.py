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
TensorBoard's own protos: no private API, no torch import on the error path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Metric columns, in this order (the first five are shown): the optimised metric, then the measures every model
# has; bce/mse per pixel compare model families whose own `loss` is in other units (per pixel vs per image).
METRICS = ("val/loss", "test/loss", "test/bce", "test/psnr", "test/ssim", "test/psnr_baseline", "test/mse",
           "test/recon_loss")
KL_METRICS = ("test/kl_loss",)
NLL_METRICS = ("test/nll",)
PROBE_METRICS = ("test/probe_linear_100", "test/probe_knn_100", "test/probe_linear_all")
# Columns every run declares after the swept keys (TensorBoard orders each tier by name), with their types
CURATED = {"experiment": str, "model": str, "data": str, "corruption": str, "optimizer": str, "optimizer.lr": float,
           "data.batch_size": int, "model.latent_dim": int, "seed": int, "trainer.max_epochs": int}
SECTIONS = ("data", "corruption", "model", "optimizer")
GROUPS = ("data", "corruption", "model", "optimizer", "experiment", "trainer")
SKIP = ("_target_", "_partial_", "data_dir", "cache_dir", "num_workers", "pin_memory", "on_device", "download",
        "in_memory")
# Overrides that are not hyperparameters: where things go, how a sweep or a run is driven, what is logged
NOT_HPARAMS = ("hydra", "paths", "logger", "callbacks", "hparams_search", "task_name", "test", "resume", "ckpt_path",
               "fail_fast", "sweep_exit_nonzero", "threads", "optimized_metric", "train_metrics_every",
               "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
               "trainer.default_root_dir")
# How a run ended -> TensorBoard's status. TensorBoard 2.21 has no "aborted": an interrupted run (Ctrl-C, SIGTERM)
# writes no end, so it shows "Unknown" like a killed one until `resume=` finishes it (TensorBoard keeps the first end
# a run writes: an end written now would hide the resumed run's)
STATUS = {"succeeded": "STATUS_SUCCESS", "failed": "STATUS_FAILURE"}


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


def _parse(lines) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for line in lines or []:
        try:
            out.extend(parser.parse_overrides([str(line)]))
        except Exception:  # noqa: BLE001 - a line Hydra itself accepted, in a form this parser refuses: skip it
            continue
    return out


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
    for override in _parse(lines):
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


def describe(cfg: DictConfig, hydra_cfg=None) -> Session:
    """The run's session: its name, hyperparameters, swept keys and declared metrics. Works on a config that
    failed to build (values that cannot be resolved are left out)."""
    choices = dict(hydra_cfg.runtime.choices) if hydra_cfg is not None else {}
    task = OmegaConf.select(hydra_cfg, "overrides.task", default=None) if hydra_cfg is not None else None
    overrides = [o for o in _parse(task) if is_hparam(o.key_or_group) and not o.is_delete()]
    try:
        params = hparam_dict(cfg, choices)
    except Exception:  # noqa: BLE001 - an unresolvable config: keep what can be read
        params = {g: _choice(choices, g) for g in GROUPS if g in choices}
    own: dict[str, str] = {}  # key -> the override as typed for this run
    for o in overrides:
        key = o.key_or_group
        own[key] = str(o.input_line).lstrip("+").split("=", 1)[-1] if o.input_line else str(o.value())
        if key in choices:
            params[key] = _choice(choices, key)
        else:
            try:
                params[key] = primitive(OmegaConf.select(cfg, key, throw_on_resolution_failure=True))
            except Exception:  # noqa: BLE001
                params[key] = primitive(o.value())
    keys, domains = swept(hydra_cfg, list(own))
    shown = keys or list(own)
    label = ",".join(f"{k}={own[k]}" for k in shown) or "defaults"
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:6]
    params = {k: v for k, v in params.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
    return Session(name=f"{label} ({digest})", params=params, swept=keys, domains=domains,
                   metrics=metric_tags(cfg, keys))


def metric_tags(cfg: DictConfig, swept_keys=()) -> list[str]:
    """The metric columns: the optimised metric first; kl_loss for models that have one (or sweeps over models);
    the NLL and the probes where their callbacks are configured."""
    tags = [str(cfg.get("optimized_metric") or "val/loss"), *METRICS]
    model = cfg.get("model") if isinstance(cfg.get("model"), DictConfig) else {}
    if "beta" in (model or {}) or {"model", "experiment"} & set(swept_keys):
        tags += KL_METRICS
    callbacks = cfg.get("callbacks") or {}
    targets = {f"{name} {OmegaConf.select(c, '_target_', default='') if OmegaConf.is_config(c) else ''}".lower()
               for name, c in callbacks.items()} if OmegaConf.is_config(callbacks) else set()
    if any("nll" in t for t in targets):
        tags += NLL_METRICS
    if any("probe" in t for t in targets):
        tags += PROBE_METRICS
    return list(dict.fromkeys(tags))


# --- protos -------------------------------------------------------------------------------------------------------
def _type(values: list):
    from tensorboard.plugins.hparams import api_pb2

    kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str for v in values}
    if kinds == {bool}:
        return api_pb2.DATA_TYPE_BOOL
    if kinds == {float}:
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def experiment_pb(session: Session):
    """The column list: swept keys (differs=True: TensorBoard sorts and ticks them first), then the curated keys,
    and the declared metrics. Built only from what all jobs of a sweep share, so every job writes the same one."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    infos = []
    for key in session.swept:
        values = session.domains.get(key)
        own = session.params.get(key)
        if values is not None and own is not None and not any(_same(own, v) for v in values):
            values = None  # the sweep's list does not hold this run's value as typed: no filter that would hide it
        info = api_pb2.HParamInfo(name=key, differs=True,
                                  type=_type(values if values else [own] if own is not None else [""]))
        if values:
            info.domain_discrete.CopyFrom(struct_pb2.ListValue(values=[_value(v) for v in dict.fromkeys(values)]))
        infos.append(info)
    for key, kind in CURATED.items():
        if key not in session.swept:
            infos.append(api_pb2.HParamInfo(name=key, type=_type([True] if kind is bool else [0.0] if kind in
                                                                 (int, float) else [""])))
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(group="", tag=tag)) for tag in session.metrics]
    data = plugin_data_pb2.HParamsPluginData(experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics))
    return _summary(metadata.EXPERIMENT_TAG, metadata.create_summary_metadata(data), metadata.NULL_TENSOR)


def _value(v):
    from google.protobuf import struct_pb2

    if isinstance(v, bool):
        return struct_pb2.Value(bool_value=v)
    if isinstance(v, (int, float)):
        return struct_pb2.Value(number_value=float(v))
    return struct_pb2.Value(string_value=str(v))


def session_start_pb(session: Session, start_time: float | None = None):
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(group_name=session.name, start_time_secs=start_time or time.time())
    for key, value in session.params.items():
        info.hparams[key].CopyFrom(_value(value))
    data = plugin_data_pb2.HParamsPluginData(session_start_info=info)
    return _summary(metadata.SESSION_START_INFO_TAG, metadata.create_summary_metadata(data), metadata.NULL_TENSOR)


def session_end_pb(state: str, end_time: float | None = None):
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    status = api_pb2.Status.Value(STATUS[state])
    data = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=end_time or time.time()))
    return _summary(metadata.SESSION_END_INFO_TAG, metadata.create_summary_metadata(data), metadata.NULL_TENSOR)


# CUSTOM SCALARS: train and val of each measure in one chart (TIME SERIES shows one tag per card)
LAYOUT = {
    "learning curves (epoch means: train vs val)": [
        ("loss: each model's own objective (units differ between model families)", r"^(train|val)/loss$"),
        ("bce per pixel: the same measure for every model", r"^(train|val)/bce$"),
        ("mse per pixel: the same measure for every model", r"^(train|val)/mse$"),
        ("psnr (dB) against the main baseline", r"^(train|val)/psnr$|^val/psnr_baseline$"),
        ("ssim", r"^(train|val)/ssim$"),
        ("recon_loss and kl_loss (VAEs)", r"^(train|val)/(recon_loss|kl_loss)$"),
    ],
    "training steps (every trainer.log_every_n_steps)": [
        ("loss per step", r"^train/loss_step$"),
        ("terms per step", r"^train/.*_step$"),
    ],
}


def layout_pb():
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    categories = [layout_pb2.Category(title=title, closed=i > 0, chart=[
        layout_pb2.Chart(title=chart, multiline=layout_pb2.MultilineChartContent(tag=[regex]))
        for chart, regex in charts]) for i, (title, charts) in enumerate(LAYOUT.items())]
    layout = layout_pb2.Layout(category=categories)
    tensor = tensor_pb2.TensorProto(dtype="DT_STRING", string_val=[layout.SerializeToString()],
                                    tensor_shape=tensor_shape_pb2.TensorShapeProto())
    return _summary(metadata.CONFIG_SUMMARY_TAG, metadata.create_summary_metadata(), tensor)


def _summary(tag: str, summary_metadata, tensor):
    from tensorboard.compat.proto import summary_pb2

    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=summary_metadata, tensor=tensor)
    return summary


# --- writing -----------------------------------------------------------------------------------------------------
_open: dict[str, tuple[Path, Session]] = {}  # run directory -> (TensorBoard dir, session) started in this process


def _rank_zero() -> bool:
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def write_summaries(log_dir: str | Path, summaries) -> None:
    """One small event file in `log_dir` (the run TensorBoard reads), holding `summaries` at step 0."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    Path(log_dir).mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(log_dir), filename_suffix=".aelab")
    try:
        for summary in summaries:
            writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    finally:
        writer.close()


def write_hparams(log_dir: str | Path, cfg: DictConfig, hydra_cfg=None) -> Session | None:
    """Start the run's HPARAMS session (with the experiment summary and the CUSTOM SCALARS layout) in the logger's
    directory; run_app ends it with the run's status."""
    if not _rank_zero():
        return None
    session = describe(cfg, hydra_cfg)
    write_summaries(log_dir, [experiment_pb(session), session_start_pb(session), layout_pb()])
    run_dir = Path(str(hydra_cfg.runtime.output_dir)) if hydra_cfg is not None else Path(log_dir)
    _open[str(run_dir.resolve())] = (Path(log_dir), session)
    return session


def tensorboard_dir(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Where the configured TensorBoardLogger writes (save_dir/name/version), or None without one."""
    logger = cfg.get("logger")
    if not logger or "TensorBoard" not in str(logger.get("_target_", "")):
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
            summaries = [experiment_pb(session), session_start_pb(session), *summaries]
    if summaries:
        write_summaries(log_dir, summaries)
