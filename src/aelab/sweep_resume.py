"""`sweep_resume=true`: rerun a multirun's own command and only the jobs that did not succeed run again.

    aelab-train -m model=ae_conv,vae_conv seed=1,2 hydra.sweep.dir=outputs/multirun/grid              # killed
    aelab-train -m model=ae_conv,vae_conv seed=1,2 hydra.sweep.dir=outputs/multirun/grid sweep_resume=true

Hydra writes job i of a sweep into `<hydra.sweep.dir>/<i>` and numbers jobs in the order of the command's sweep,
so the same command with the same sweep directory maps every job to the directory it had. A job whose directory
says `succeeded` (status.json and metrics.json) with the same resolved config is skipped: it returns its recorded
`optimized_metric` to the sweeper and nothing is written into its directory (no .hydra/ record, no log line). A
failed, interrupted, still-`running` (killed) or never-started job runs again in place. A succeeded job whose
recorded config differs from what the command now gives it is refused, naming the keys, and the sweep stops:
the command is not the sweep's own, and its results are not overwritten.

`resume=DIR` is the other switch: it continues one run from its last checkpoint, and is refused with -m.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aelab.errors import ConfigError

log = logging.getLogger("aelab")

# Keys that do not change a job's result: how the sweep is driven, where the data lives, how fast it loads
NOT_COMPARED = ("sweep_resume", "fail_fast", "sweep_exit_nonzero", "threads", "data.num_workers", "data.pin_memory",
                "trainer.enable_progress_bar", "paths.root_dir", "paths.log_dir", "paths.data_dir",
                "paths.cache_dir", "data.data_dir", "data.cache_dir")
RUN = object()  # outcome(): the job runs


def record_subdir(sweep_resume: Any, job_dir: str, subdir: str) -> str | None:
    """hydra.output_subdir for a job: None (Hydra then writes no .hydra/ record) for a job sweep_resume skips."""
    return None if sweep_resume is True and succeeded(Path(job_dir)) else subdir


def succeeded(job_dir: Path) -> bool:
    from aelab.runs import RunDir, read_json

    run = RunDir(job_dir)
    return (run.status() or {}).get("state") == "succeeded" and read_json(run.metrics_file) is not None


def check_mode(cfg: DictConfig, multirun: bool) -> None:
    if not cfg.get("sweep_resume"):
        return
    if cfg.get("sweep_resume") is not True:
        raise ConfigError(f"sweep_resume={cfg.sweep_resume!r} is not allowed: expected true or false")
    if not multirun:
        raise ConfigError("sweep_resume=true continues a multirun: add -m and the sweep's hydra.sweep.dir; "
                          "to continue one run use resume=DIR")
    if cfg.get("resume"):
        raise ConfigError(f"sweep_resume=true and resume={cfg.resume}: choose one (resume=DIR continues one run, "
                          "without -m)")


def holds_jobs(folder: Path) -> bool:
    """Whether a sweep folder holds an earlier job (a job folder with its status.json)."""
    return folder.is_dir() and any((p / "status.json").is_file() for p in folder.iterdir() if p.is_dir())


def check_sweep_dir(config: DictConfig) -> None:
    """At the start of a multirun with sweep_resume=true: the sweep directory must hold the earlier jobs (its
    default name is the time the command starts, a new folder every time)."""
    if config.get("sweep_resume") is not True:
        return
    sweep_dir = Path(str(config.hydra.sweep.dir))
    if not holds_jobs(sweep_dir):
        raise ConfigError(f"sweep_resume=true: hydra.sweep.dir={sweep_dir} holds no earlier job; name the sweep's "
                          "folder: hydra.sweep.dir=outputs/multirun/<date>/<time>")


def outcome(cfg: DictConfig, job_dir: Path) -> Any:
    """What a job that sweep_resume skips returns (its recorded objective, or None), or RUN for a job that runs;
    refuses a succeeded job that the command now gives another config."""
    from aelab.resume import differences, rebased, select, show, shortened
    from aelab.runs import read_json

    if not succeeded(job_dir):
        return RUN
    try:
        recorded = OmegaConf.to_container(OmegaConf.load(job_dir / "config.yaml"), resolve=True)
    except Exception:  # noqa: BLE001 - an unreadable record: the job runs again
        return RUN
    now = OmegaConf.to_container(cfg, resolve=True)
    old_dir = (recorded.get("paths") or {}).get("output_dir")
    if old_dir and old_dir != str(job_dir):
        recorded = rebased(recorded, {old_dir: str((now.get("paths") or {}).get("output_dir", job_dir))})
    ignored = lambda key: any(key == k or key.startswith(k + ".") for k in NOT_COMPARED)  # noqa: E731
    changed = {k: select(now, k) for k in differences(recorded, now) if not ignored(k)}
    if changed:
        shown, more = shortened(changed)
        listed = ", ".join(f"{k} (recorded {show(select(recorded, k))}, now {show(v)})" for k, v in shown.items())
        listed += "".join(f" and {n} more under {node}" for node, n in more.items())
        raise ConfigError(f"sweep_resume=true: job {job_dir.name} succeeded with another config: {listed}; rerun "
                          "the sweep's own command, or start a new sweep (another hydra.sweep.dir)")
    metrics = read_json(job_dir / "metrics.json") or {}
    value = metrics.get(cfg.get("optimized_metric"))
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def skip(job_dir: Path) -> None:
    """Say so on the console only, and let go of the job's log file, which Hydra opened (the next job's launch
    line would otherwise land in it)."""
    record = log.makeRecord(log.name, logging.INFO, __file__, 0,
                            f"sweep_resume=true: job {job_dir.name} succeeded with this config: skipped", None, None)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            if Path(handler.baseFilename).resolve().is_relative_to(job_dir.resolve()):
                root.removeHandler(handler)
                handler.close()
        else:
            handler.handle(record)

