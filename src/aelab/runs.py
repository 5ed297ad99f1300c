"""A run directory always says its state (status.json: running / succeeded / failed / interrupted, with the error),
records the resolved config, package versions and git commit, and gets metrics.json only on success (atomically).

`run_app` wraps the Hydra task functions: a bad input becomes one clear line on stderr and exit code 1; in a
multirun a failed job is recorded in its own directory and the sweep goes on; with sweep_resume=true a job that
already succeeded with the same config is skipped (aelab.sweep_resume). It also ends the run's TensorBoard HPARAMS
session and its other loggers' runs with the same state (aelab.hparams, aelab.loggers), so a sweep's table shows
which jobs failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from aelab.bench import check_run_mode
from aelab.config import REPO_ROOT
from aelab.errors import AelabError
from aelab.files import write_json_atomic  # noqa: F401  (scripts import it from here)
from aelab.sweep_resume import RUN, check_mode, outcome, skip

log = logging.getLogger("aelab")
PACKAGES = ("aelab", "torch", "torchvision", "lightning", "hydra-core", "omegaconf", "torchmetrics", "tensorboard")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def git_commit() -> str | None:
    """AELAB_GIT_COMMIT when set (a tree copied to another machine, with or without a stale .git), else the commit
    of the checkout aelab runs from; nothing for an installed copy (it is not in a repository of its own, and git
    would name whatever project a virtual environment happens to sit in)."""
    if os.environ.get("AELAB_GIT_COMMIT"):
        return os.environ["AELAB_GIT_COMMIT"]
    if REPO_ROOT is None or not (REPO_ROOT / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_model(),
            "cores": os.cpu_count(), "packages": versions, "git_commit": git_commit(), "argv": sys.argv}


def finite(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}


COST_FILE = "cost.json"


class RunCost:
    """`cost.json` beside metrics.json: what the run cost, kept apart from the metrics so that a seeded run repeats
    its metrics exactly: the model's parameters (all, and those the optimiser trains) and the seconds fit and test
    took. A resumed run adds its fit time to the interrupted attempt's as recorded (a SIGKILLed attempt records none)."""

    def __init__(self, run_dir: str | Path, model, resumed: bool = False):
        self.file = Path(run_dir) / COST_FILE
        earlier = (read_json(self.file) or {}) if resumed else {}
        params = list(model.parameters())
        self.record = {"parameters": sum(p.numel() for p in params),
                       "trained_parameters": sum(p.numel() for p in params if p.requires_grad),
                       "fit_seconds": float(earlier.get("fit_seconds") or 0.0)}
        write_json_atomic(self.file, self.record)

    @contextlib.contextmanager
    def timed(self, key: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.record[key] = self.record.get(key, 0.0) + time.monotonic() - start
            write_json_atomic(self.file, self.record)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    def status(self) -> dict | None:
        return read_json(self.status_file)

    def _set_status(self, state: str, **extra) -> None:
        current = self.status() or {}
        write_json_atomic(self.status_file, {**current, "state": state, "updated": time.time(), **extra})

    def start(self, cfg: DictConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics_file.unlink(missing_ok=True)  # a resumed or repeated run earns its metrics again
        OmegaConf.save(cfg, self.path / "config.yaml", resolve=True)
        write_json_atomic(self.path / "environment.json", environment())
        # a fresh record: a resumed run's status is this attempt's, not the interruption's error and traceback
        now = time.time()
        write_json_atomic(self.status_file, {"state": "running", "started": now, "updated": now, "pid": os.getpid(),
                                             "error": None})

    def succeed(self, metrics: dict) -> None:
        write_json_atomic(self.metrics_file, metrics)
        self._set_status("succeeded", error=None)

    def fail(self, error: BaseException) -> None:
        state = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        self._set_status(state, error=one_line(error), error_type=type(error).__name__,
                         traceback="".join(traceback.format_exception(error)))


def one_line(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted by {error.args[0] if error.args else 'SIGINT'}"
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, AelabError) else f"{type(error).__name__}: {text}"


def to_log_file(level: int, message: str, error: BaseException | None = None) -> None:
    """Record in the run's log file only: the console gets the one-line error, not a second copy."""
    record = log.makeRecord(log.name, level, __file__, 0, message, None,
                            None if error is None or isinstance(error, AelabError) else
                            (type(error), error, error.__traceback__))
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


class Signals:
    """SIGTERM behaves like Ctrl-C (Lightning then shuts down cleanly and our callback saves a checkpoint);
    remembers which signal arrived so the status says "interrupted" even though Lightning exits via SystemExit."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        self.received = signum
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def record_session_end(run: RunDir, cfg: DictConfig, hydra_cfg, app: str) -> None:
    """End the run's TensorBoard HPARAMS session, and its CSV / MLflow run, with the state status.json now holds
    (aelab-train runs only); a run that failed before training gets its session start here too, so a sweep's
    HPARAMS (and MLflow) list it as failed. Never hides the run's own outcome: a failure to write is only logged."""
    if app != "aelab-train":
        return
    state = (run.status() or {}).get("state", "failed")
    from aelab.hparams import end_session
    from aelab.loggers import record_end

    for record, where in ((end_session, "TensorBoard"), (record_end, "its CSV and MLflow loggers")):
        try:
            record(run.path, cfg, hydra_cfg, state)
        except Exception as error:  # noqa: BLE001
            to_log_file(logging.WARNING, f"{app}: could not record the run's end in {where}: {one_line(error)}",
                        error)


def run_app(task: Callable[[DictConfig, RunDir], Any], cfg: DictConfig, app: str,
            prepare: Callable[[DictConfig], DictConfig] | None = None) -> float | None:
    """Run `task` in the Hydra run directory with status bookkeeping; return cfg.optimized_metric for sweepers.

    `prepare` may replace the config before the run starts (resume reads the run's recorded one); what it refuses
    is reported without a word written to the run directory."""
    hydra_cfg = HydraConfig.get()
    run = RunDir(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        check_mode(cfg, multirun)
        check_run_mode(hydra_cfg.runtime.choices.get("benchmark"), multirun)
        cfg = prepare(cfg) if prepare is not None else cfg
        recorded = outcome(cfg, run.path) if multirun and cfg.get("sweep_resume") else RUN
    except AelabError as error:  # refused before the run starts: the directory (a run to resume) stays as it was
        print(f"{app}: error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(1) from None
    if recorded is not RUN:  # sweep_resume=true: succeeded before with this config; its directory stays as it is
        skip(run.path)
        return recorded
    with Signals() as signals:
        try:
            run.start(cfg)
            metrics = task(cfg, run).metrics
        except BaseException as error:  # noqa: BLE001 - every exit path must leave a truthful status
            if signals.received is not None or isinstance(error, KeyboardInterrupt):
                name = signal.Signals(signals.received or signal.SIGINT).name
                run.fail(KeyboardInterrupt(name))
                record_session_end(run, cfg, hydra_cfg, app)
                print(f"{app}: interrupted by {name}; status recorded in {run.status_file}, checkpoints kept "
                      f"(continue with resume={run.path})", file=sys.stderr)
                raise SystemExit(128 + (signals.received or signal.SIGINT)) from None
            run.fail(error)
            record_session_end(run, cfg, hydra_cfg, app)
            if isinstance(error, SystemExit):
                raise
            message = one_line(error)
            if not isinstance(error, AelabError):
                message += f" (traceback in {run.status_file})"
            to_log_file(logging.ERROR, f"{app}: {message}", error)
            if multirun and not cfg.get("fail_fast", False):
                return float("nan")  # recorded in status.json; the sweep goes on
            print(f"{app}: error: {message}", file=sys.stderr)
            raise SystemExit(1) from None
    run.succeed(metrics)
    record_session_end(run, cfg, hydra_cfg, app)
    value = metrics.get(cfg.get("optimized_metric"))
    return float(value) if value is not None else None
