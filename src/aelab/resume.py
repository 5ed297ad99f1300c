"""`resume=DIR`: continue the run in DIR from its last epoch checkpoint, writing only inside DIR.

A run's recorded config (DIR/config.yaml) holds resolved absolute paths: its output, checkpoint and TensorBoard
folders, its data and cache folders. A directory that was copied or moved would keep writing to where it was, so
on resume they are re-derived: the recorded run directory becomes DIR, the recorded data and cache folders become
this machine's (`paths.data_dir`, `paths.cache_dir`), and the checkpoint's own record of its folder (Lightning's
ModelCheckpoint state: best and last paths) follows the same way.

The command line may change only what cannot alter the epochs already trained (RESUMABLE: run longer, test or
not, where the same data lives, how fast it loads); such a change is applied and logged. Any other difference
from the recorded config is refused, naming each key with its recorded and requested value.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from aelab.errors import ConfigError

log = logging.getLogger("aelab")

# Keys a resumed run may take from the command line: none of them changes the epochs already trained
RESUMABLE = ("epochs", "trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "test",
             "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
             "threads", "data.num_workers", "data.pin_memory", "fail_fast", "sweep_exit_nonzero",
             "data.data_dir", "data.cache_dir", "paths.data_dir", "paths.cache_dir", "paths.log_dir",
             "paths.root_dir")
ABSENT = object()


def rebased(value: Any, moves: dict[str, str]) -> Any:
    """`value` (a container of a resolved config or a checkpoint) with every string that is a moved folder, or a
    path inside one, re-pointed to where the folder is now; the longest matching folder wins."""
    if isinstance(value, dict):
        return {rebased(k, moves): rebased(v, moves) for k, v in value.items()}
    if isinstance(value, list):
        return [rebased(v, moves) for v in value]
    if isinstance(value, str):
        for old in sorted(moves, key=len, reverse=True):
            if value == old or value.startswith(old.rstrip("/") + "/"):
                return moves[old] + value[len(old):]
    return value


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Dotted keys where two config containers differ (a whole node where one side is not a mapping)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            yield from differences(a.get(key, ABSENT), b.get(key, ABSENT), f"{path}.{key}" if path else key)
    elif a != b or isinstance(a, bool) != isinstance(b, bool):  # true is not 1
        yield path


def select(container: dict, key: str) -> Any:
    node: Any = container
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


def show(value: Any) -> str:
    if value is ABSENT:
        return "absent"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value) if isinstance(value, str) else str(value)


SHOWN_PER_NODE = 3  # a group override (model=vae_conv) differs in every key of its node: the first few tell


def shortened(changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """The first few changes of each top-level node, and how many more each node has."""
    shown: dict[str, Any] = {}
    more: dict[str, int] = {}
    for key, value in changes.items():
        node = key.split(".")[0]
        if sum(k.split(".")[0] == node for k in shown) < SHOWN_PER_NODE:
            shown[key] = value
        else:
            more[node] = more.get(node, 0) + 1
    return shown, more


def override_keys(overrides: list[str]) -> list[str]:
    """The config node each command-line override addresses (`model.latent_dim=8`, `+a.b=1`, `~a`, `model=x`,
    `group@node=x`); group options of another package (`experiment=...`: the whole config) address no one node."""
    keys = []
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("~+")
        if "@" in key:
            key = key.split("@", 1)[1]
        if key and key != "_global_" and not key.startswith("_global_."):
            keys.append(key.removeprefix("_global_."))
    return keys


def compose_without(config_name: str) -> dict:
    """The config this app composes without the command line's overrides, resolved: what the command line changed
    is what differs from it. Inside the app Hydra is initialised (with any --config-dir); scripts and
    tests that called aelab.config.compose are not."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from aelab.config import CONFIG_DIR

    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name=config_name)
    else:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name)
    return OmegaConf.to_container(cfg, resolve=True)


def requested_changes(cfg: DictConfig, recorded: dict, overrides: list[str], config_name: str) -> dict[str, Any]:
    """{key: requested value} for each key the command line set to something else than the recorded config."""
    own = [o for o in overrides if not o.lstrip("~+").startswith(("resume=", "hydra.", "hydra/", "hydra@"))]
    if not own:
        return {}
    try:
        now = OmegaConf.to_container(cfg, resolve=True)
        base = compose_without(config_name)
    except OmegaConfBaseException as e:
        raise ConfigError(f"resume: the command line's config does not resolve: {' '.join(str(e).split())}") from None
    touched = set(differences(base, now)) | set(override_keys(own))
    touched.discard("resume")
    related = lambda key: any(key == t or key.startswith(t + ".") or t.startswith(key + ".") for t in touched)
    return {key: select(now, key) for key in differences(recorded, now) if key != "resume" and related(key)}


def resume_config(cfg: DictConfig) -> DictConfig:
    """The recorded config of the run in `cfg.resume`, its paths re-derived from where the run directory is now,
    the command line's resumable changes applied; continued from DIR/checkpoints/last.ckpt (an epoch end, so the
    resumed run replays what an uninterrupted one does). Hydra already put this run in DIR (conf/hydra)."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(str(cfg.resume))
    recorded_file, last = run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    if not recorded_file.is_file():
        raise ConfigError(f"resume={cfg.resume}: not a run directory (no config.yaml)")
    if not last.is_file():
        raise ConfigError(f"resume={cfg.resume}: no checkpoints/last.ckpt yet (killed before the first epoch ended); "
                          "start it again instead")
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir).absolute()
    if output_dir.resolve() != run_dir.resolve():
        raise ConfigError(f"resume={cfg.resume}: a resumed run continues in its own directory, but this one would "
                          f"write to {output_dir}; drop hydra.run.dir= (and -m: resume one run at a time)")
    try:
        recorded = OmegaConf.to_container(OmegaConf.load(recorded_file), resolve=True)
    except (OmegaConfBaseException, ValueError) as e:
        raise ConfigError(f"resume={cfg.resume}: config.yaml cannot be read ({' '.join(str(e).split())})") from None
    paths = recorded.get("paths") or {}
    moves = {paths[k]: str(v) for k, v in (("output_dir", output_dir), ("data_dir", cfg.paths.data_dir),
                                           ("cache_dir", cfg.paths.cache_dir)) if paths.get(k) and paths[k] != str(v)}
    recorded = rebased(recorded, moves)

    changes = requested_changes(cfg, recorded, list(hydra_cfg.overrides.task), hydra_cfg.job.config_name or "train")
    refused = {k: v for k, v in changes.items() if k not in RESUMABLE}
    if refused:
        shown, more = shortened(refused)
        listed = ", ".join(f"{k} (recorded {show(select(recorded, k))}, requested {show(v)})" for k, v in shown.items())
        listed += "".join(f" and {n} more under {node}" for node, n in more.items())
        raise ConfigError(f"resume={cfg.resume}: {listed} cannot change on resume; a resumed run may change only "
                          f"{', '.join(RESUMABLE)}; start a new run to change the others")
    resumed = OmegaConf.create(recorded)
    with open_dict(resumed):
        for key, value in changes.items():
            log.info(f"resume={cfg.resume}: applying {key}={show(value)} (recorded {show(select(recorded, key))})")
            if value is ABSENT:
                parent, _, leaf = key.rpartition(".")
                (OmegaConf.select(resumed, parent) if parent else resumed).pop(leaf, None)
            else:
                OmegaConf.update(resumed, key, value, merge=False, force_add=True)
        resumed.resume, resumed.ckpt_path = str(cfg.resume), str(last)
    OmegaConf.set_struct(resumed, True)
    return resumed


class RebaseCheckpointPaths(Callback):
    """A checkpoint records its ModelCheckpoint folder and best/last paths; from a run directory that was copied or
    moved they name the old place, and Lightning would then forget the best score (the folder changed) and keep
    the old best path (test reads it). Re-pointed to this run's folder, the state loads as if nothing moved."""

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = checkpoint.get("callbacks") or {}
        for callback in trainer.checkpoint_callbacks:
            state = states.get(callback.state_key)
            old = state.get("dirpath") if isinstance(state, dict) else None
            if old and callback.dirpath and old != callback.dirpath:
                states[callback.state_key] = rebased(state, {old: callback.dirpath})
