"""Sweep plumbing: per-job CPU settings under parallel launchers, a Hydra callback that summarises a finished
multirun, and an Optuna sweeper that records failed trials instead of aborting the study and continues a study
kept in SQLite (the hparams_search presets keep it in <sweep dir>/optuna.db).

    aelab-train -m hydra/launcher=parallel model=ae_conv,vae_conv          # 2 jobs at a time on this machine
    aelab-train -m hparams_search=ae_conv_optuna                          # Optuna TPE, failed trials recorded
    aelab-train -m ... sweep_exit_nonzero=true                            # exit 1 at the end if any job failed
    aelab-train -m ... hydra.sweep.dir=DIR sweep_resume=true              # rerun only what did not succeed
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from aelab.adapters import job_error, optuna_sqlite_on_sqlalchemy2, optuna_sweeper_impl, wrapped_attribute

log = logging.getLogger("aelab")


# --- per-job settings -------------------------------------------------------------------------------------------
def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset / cgroup CPU pinning, unlike os.cpu_count()
    except AttributeError:
        return os.cpu_count() or 1


def _launcher() -> DictConfig | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().get("launcher")


def parallel_jobs(launcher: DictConfig | None) -> int:
    """How many jobs share this machine at once: joblib's n_jobs (-1 = one per core, -2 = all but one...)."""
    if launcher is None or "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs, cores = int(launcher.get("n_jobs") or 1), available_cores()
    if n_jobs < 0:
        n_jobs = max(1, cores + 1 + n_jobs)
    return max(1, n_jobs)


def job_threads(threads: int | None, launcher: DictConfig | None) -> int | None:
    """Torch threads for this job: `threads` when set, else the cores split between parallel jobs (None: leave
    torch's default, which is one thread per core - right for a job that has the machine to itself)."""
    if threads is not None:
        if int(threads) < 1:
            from aelab.errors import ConfigError
            raise ConfigError(f"threads={threads!r} must be an integer >= 1 or null (all cores, or cores // n_jobs "
                              "under hydra/launcher=parallel)")
        return int(threads)
    n = parallel_jobs(launcher)
    return max(1, available_cores() // n) if n > 1 else None


def gpu_share(launcher: DictConfig | None) -> float | None:
    """The fraction of one GPU's memory a job may take when parallel jobs share it (None: the job has it alone).
    Each job keeps its data on the device (data.on_device) and its own CUDA context, so n jobs get 1/n each, a
    little less to leave room for the contexts themselves."""
    n = parallel_jobs(launcher)
    return 0.95 / n if n > 1 else None


def configure_job(cfg: DictConfig) -> None:
    """Apply CPU and GPU settings at the start of a job (aelab-train calls this before building anything)."""
    import torch

    launcher = _launcher()
    share = gpu_share(launcher)
    if share is not None and torch.cuda.is_available():
        # one job's allocations can no longer starve the others: past its share it fails with an OOM of its own
        torch.cuda.set_per_process_memory_fraction(share)
        log.info("GPU memory: at most %.0f%% per job (%d parallel jobs)", 100 * share, parallel_jobs(launcher))
    threads = job_threads(cfg.get("threads"), launcher)
    if threads is not None:
        torch.set_num_threads(threads)
        log.info("torch threads: %d (%d parallel job(s) on %d cores)", threads, parallel_jobs(launcher),
                 available_cores())
    if parallel_jobs(launcher) > 1 and cfg.get("data") is not None and cfg.data.get("num_workers", 0) > 0:
        # DataLoader worker processes forked inside loky workers can hang the sweep: in-memory batches need none
        log.warning("data.num_workers=%s ignored under the joblib launcher: using 0", cfg.data.num_workers)
        with open_dict(cfg):
            cfg.data.num_workers = 0


# --- end of a multirun ------------------------------------------------------------------------------------------
class SweepReport(Callback):
    """After a multirun: one line per failed or unfinished job, a pointer to aelab-compare, and exit code 1 when
    `sweep_exit_nonzero=true` and any job did not succeed (the other jobs have all run by then)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from aelab.sweep_resume import check_sweep_dir

        check_sweep_dir(config)  # sweep_resume=true needs the sweep's own folder, before any job starts

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from aelab.compare import collect_jobs

        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = collect_jobs(sweep_dir)
        bad = [j for j in jobs if j.state != "succeeded"]
        log.info("sweep %s: %d of %d jobs succeeded; compare them with: aelab-compare %s",
                 sweep_dir, len(jobs) - len(bad), len(jobs), sweep_dir)
        for job in bad:
            log.error("job %s %s: %s", job.name, job.state, job.error or "no status.json")
        if bad and config.get("sweep_exit_nonzero", False):
            log.error("sweep_exit_nonzero=true and %d job(s) did not succeed: exiting with status 1", len(bad))
            raise SystemExit(1)


# --- Optuna -----------------------------------------------------------------------------------------------------
def _failure_tolerant(study):
    """Make `study.tell` record a non-finite or missing objective as a FAILED trial. Optuna refuses NaN as a
    value, and hydra-optuna-sweeper re-raises that refusal, which would end the whole study at the first
    diverged or broken job."""
    import optuna

    tell = study.tell

    def tolerant_tell(trial, values=None, state=optuna.trial.TrialState.COMPLETE):
        if state == optuna.trial.TrialState.COMPLETE:
            seq = values if isinstance(values, (list, tuple)) else [values]
            if any(v is None or not math.isfinite(float(v)) for v in seq):
                number = trial if isinstance(trial, int) else trial.number
                log.warning("optuna trial %s failed (objective %s): recorded as FAIL, the study goes on",
                            number, values)
                return tell(trial, state=optuna.trial.TrialState.FAIL)
        return tell(trial, values=values, state=state)

    study.tell = tolerant_tell
    return study


def _storage_ready(storage: Any) -> None:
    """An SQLite file's folder exists before Optuna opens it (the sweep directory is made only when the first
    trial launches), and RDB storages keep their schema stamp under SQLAlchemy 2 (aelab.adapters)."""
    if not storage or not isinstance(storage, str):
        return
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    optuna_sqlite_on_sqlalchemy2()


def _continued(study, impl):
    """A study that its storage already holds continues where it stopped: trials left RUNNING by a crash are
    recorded as FAIL (the study's user attribute `aelab_interrupted` lists them, and they do not count towards
    n_trials), the next trial takes the next number and the job directory of that number, and the sampler is
    seeded with its seed plus the trials on record, so the continuation is repeatable without proposing the
    first trials again."""
    import optuna
    from hydra.utils import instantiate

    trials = study.trials
    if not trials:
        return study
    interrupted = [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    for number in interrupted:
        log.warning("optuna trial %d was running when the sweep stopped: recorded as FAIL", number)
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    earlier = list(study.user_attrs.get("aelab_interrupted", []))
    study.set_user_attr("aelab_interrupted", earlier + interrupted)
    counted = len(trials) - len(earlier) - len(interrupted)
    impl.n_trials, impl.job_idx = max(0, impl.n_trials - counted), len(trials)
    sampler = OmegaConf.select(impl.config, "hydra.sweeper.sampler")
    if sampler is not None and sampler.get("seed") is not None and "Grid" not in str(sampler.get("_target_")):
        study.sampler = instantiate(sampler, seed=int(sampler.seed) + len(trials))
    log.info("optuna: study %s continues: %d trials on record (%d interrupted now), %d to go",
             study.study_name, len(trials), len(interrupted), impl.n_trials)
    return study


def _nan_for_failed(launch):
    """Jobs that raised, or returned no objective, come back as NaN (their status.json holds the error)."""
    from hydra.core.utils import JobStatus

    def wrapped(job_overrides, initial_job_idx):
        returns = launch(job_overrides, initial_job_idx)
        for ret in returns:
            if ret.status != JobStatus.COMPLETED:
                log.error("optuna job %s raised %r", ret.overrides, job_error(ret))
                ret.status, ret.return_value = JobStatus.COMPLETED, float("nan")
            elif ret.return_value is None:
                ret.return_value = float("nan")
        return returns

    return wrapped


try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as _OptunaSweeper
except ImportError:  # the plugin is optional for everything but hparams_search
    _OptunaSweeper = object  # type: ignore[assignment,misc]


class OptunaSweeper(_OptunaSweeper):  # type: ignore[misc,valid-type]
    """hydra-optuna-sweeper, except that a failed trial (NaN from aelab-train, an exception) is told to Optuna as
    FAIL and the study goes on, a study its storage holds continues where it stopped (_continued), and a study
    where no trial succeeded ends with an error line instead of a traceback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # importing optuna imports alembic, whose plugin registry logs dozens of INFO lines into the sweep log
        logging.getLogger("alembic").setLevel(logging.WARNING)
        super().__init__(*args, **kwargs)

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        impl = optuna_sweeper_impl(self)
        impl.launcher.launch = _nan_for_failed(impl.launcher.launch)
        _storage_ready(impl.storage)
        continued = lambda create: lambda *a, **k: _continued(_failure_tolerant(create(*a, **k)), impl)  # noqa: E731
        with wrapped_attribute(optuna, "create_study", continued):
            try:
                return impl.sweep(arguments)
            except ValueError as e:
                if "No trials are completed yet" not in str(e):
                    raise
                log.error("optuna: no trial succeeded, so there is no best trial (errors in each job's "
                          "status.json under %s)", impl.sweep_dir)
