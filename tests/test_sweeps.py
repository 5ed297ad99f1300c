"""Sweeps: grids, parallel and submitit launchers, Optuna, DDP, the experiment smoke sweep, and surviving failures.

Multiruns go through the real CLI (`aelab-train -m`) in a subprocess, as a researcher runs them; they are marked
slow. The unit tests below them check the pieces (thread split, failure bookkeeping, presets) in milliseconds.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from aelab.compare import collect_jobs, compare
from aelab.config import CONFIG_DIR
from aelab.sweep import (SweepReport, _failure_tolerant, _nan_for_failed, available_cores, configure_job,
                         gpu_share, job_threads, parallel_jobs)
from conftest import compose_cfg, run_app_inprocess

BIN = Path(sys.executable).parent
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def aelab(tool: str, *args: str) -> subprocess.CompletedProcess:
    """Run a console script of this venv; the environment (data, cache, output dirs) comes from conftest."""
    exe = BIN / tool if (BIN / tool).exists() else shutil.which(tool)
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=1800)  # a hang, not a timing


def multirun(sweep_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return aelab("aelab-train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}")


def states(sweep_dir: Path) -> dict[str, str]:
    return {job.name: job.state for job in collect_jobs(sweep_dir)}


def hparams_of(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    start = metadata.parse_session_start_info_plugin_data(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    return {k: v.string_value or v.number_value for k, v in start.hparams.items()}


# --- unit tests ---------------------------------------------------------------------------------------------------
def joblib_launcher(n_jobs: int):
    return OmegaConf.create({"_target_": JOBLIB, "n_jobs": n_jobs})


def test_parallel_jobs_split_one_gpu_memory_between_them():
    assert gpu_share(None) is None and gpu_share(joblib_launcher(1)) is None  # a job alone has the whole GPU
    assert gpu_share(joblib_launcher(4)) == pytest.approx(0.95 / 4)
    assert gpu_share(joblib_launcher(8)) * 8 < 1  # room left for the CUDA contexts


def test_cores_are_split_between_parallel_jobs():
    cores = available_cores()
    assert parallel_jobs(None) == 1 and parallel_jobs(OmegaConf.create({"_target_": "basic"})) == 1
    assert parallel_jobs(joblib_launcher(3)) == 3 and parallel_jobs(joblib_launcher(-1)) == cores
    assert job_threads(None, None) is None  # a job alone keeps torch's default
    assert job_threads(None, joblib_launcher(2)) == max(1, cores // 2)
    assert job_threads(None, joblib_launcher(-1)) == 1
    assert job_threads(3, joblib_launcher(2)) == 3  # an explicit threads= wins
    from aelab.errors import ConfigError
    with pytest.raises(ConfigError, match="threads=0"):
        job_threads(0, None)


def test_configure_job_sets_threads_and_drops_dataloader_workers_under_joblib(monkeypatch):
    monkeypatch.setattr("aelab.sweep._launcher", lambda: joblib_launcher(2))
    cfg = OmegaConf.create({"threads": 1, "data": {"num_workers": 4}})
    OmegaConf.set_struct(cfg, True)
    before = torch.get_num_threads()
    try:
        configure_job(cfg)
        assert torch.get_num_threads() == 1 and cfg.data.num_workers == 0
    finally:
        torch.set_num_threads(before)


def fake_job(root: Path, name: str, state: str, error: str | None = None) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "status.json").write_text(json.dumps({"state": state, "error": error}))
    if state == "succeeded":
        (root / name / "metrics.json").write_text(json.dumps({"val/loss": 1.0}))


def test_sweep_report_exits_nonzero_only_when_asked(tmp_path):
    fake_job(tmp_path, "0", "succeeded")
    fake_job(tmp_path, "1", "failed", "ConfigError: bad")
    config = lambda flag: OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}},  # noqa: E731
                                            "sweep_exit_nonzero": flag})
    SweepReport().on_multirun_end(config=config(False))  # default: the sweep's exit status stays 0
    with pytest.raises(SystemExit) as e:
        SweepReport().on_multirun_end(config=config(True))
    assert e.value.code == 1
    shutil.rmtree(tmp_path / "1")
    SweepReport().on_multirun_end(config=config(True))  # all succeeded: no exit


def test_failed_optuna_trials_are_recorded_and_the_study_goes_on():
    import optuna
    from hydra.core.utils import JobReturn, JobStatus

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _failure_tolerant(optuna.create_study(direction="minimize"))
    values = [float("nan"), None, 2.0, float("inf"), 1.0]
    for v in values:
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, None if v is None else [v])
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL", "COMPLETE", "FAIL", "COMPLETE"]
    assert study.best_value == 1.0

    raised, completed, empty = JobReturn(), JobReturn(), JobReturn()
    raised.status, raised.return_value = JobStatus.FAILED, RuntimeError("boom")
    completed.status, completed.return_value = JobStatus.COMPLETED, 0.5
    empty.status, empty.return_value = JobStatus.COMPLETED, None  # optimized_metric missing from metrics
    returns = _nan_for_failed(lambda overrides, idx: [raised, completed, empty])([], 0)
    got = [r.return_value for r in returns]
    assert got[1] == 0.5 and all(v != v for v in (got[0], got[2]))  # NaN


def test_launcher_and_search_presets_compose():
    parallel = compose_cfg(["hydra/launcher=parallel"]).hydra.launcher
    assert parallel._target_ == JOBLIB and parallel.n_jobs == 2 and parallel.backend == "loky"
    slurm = compose_cfg(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"]).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and slurm.partition == "gpu" and slurm.timeout_min == 240
    local = compose_cfg(["hydra/launcher=local"]).hydra.launcher
    assert local._target_.endswith("LocalLauncher")
    for search, model in (("ae_conv_optuna", "ae_conv"), ("vae_optuna", "vae_conv")):
        cfg = compose_cfg([f"hparams_search={search}"])
        sweeper = cfg.hydra.sweeper
        assert sweeper._target_ == "hydra_plugins.aelab_sweeper.FailureTolerantOptunaSweeper"
        assert sweeper.direction == "minimize" and sweeper.sampler.seed == 42
        assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
        assert cfg.optimized_metric == "val/loss" and cfg.hydra.runtime.choices.model == model
        assert "optimizer.lr" in sweeper.params


def test_ddp_preset_builds_a_two_process_cpu_trainer():
    from lightning.pytorch.strategies import DDPStrategy

    from aelab.build import build_trainer

    cfg = compose_cfg(["trainer=ddp", "~logger"], output_dir=Path("/nonexistent"))
    trainer = build_trainer(cfg)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy._start_method == "spawn"
    assert trainer.num_devices == 2 and trainer.world_size == 2 and trainer.strategy.root_device.type == "cpu"


# --- real sweeps (CLI) ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_grid_sweep_2x2_then_compare(tmp_path):
    sweep = tmp_path / "grid"
    done = multirun(sweep, "model=ae_conv,vae_conv", "data.batch_size=32,64", "trainer=debug")
    assert done.returncode == 0, done.stderr[-3000:]
    assert states(sweep) == {str(i): "succeeded" for i in range(4)}
    for job in collect_jobs(sweep):
        assert list((job.path / "tensorboard").glob("events.out.tfevents.*")), job.name  # one logdir: the sweep
        hp = hparams_of(job.path)
        assert hp["model"] == job.overrides["model"]  # HPARAMS rows carry the swept values
        assert hp["data.batch_size"] == float(job.overrides["data.batch_size"])

    out = tmp_path / "report"
    shown = aelab("aelab-compare", str(sweep), "--out", str(out))
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout.split("\n\n")[0].splitlines()[3:]  # title, header, rule, then one row per job
    assert len(table) == 4 and all(" succeeded " in row for row in table)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4 and {(r["model"], r["data.batch_size"]) for r in rows} == {
        ("ae_conv", "32"), ("ae_conv", "64"), ("vae_conv", "32"), ("vae_conv", "64")}
    losses = [float(r["test/loss"]) for r in rows]
    assert losses == sorted(losses)
    for png in ("metric_vs_model.png", "metric_vs_data.batch_size.png", "val_loss_curves.png"):
        assert (out / png).stat().st_size > 5_000, png


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    sweep = tmp_path / "failing"
    # lr=-1 is refused when job 1 builds its optimizer: one failing job in the middle of the sweep
    done = multirun(sweep, "optimizer.lr=0.001,-1.0,0.002,0.0005", "trainer=debug", "callbacks=none", "test=false",
                    "sweep_exit_nonzero=true")
    assert done.returncode == 1, done.stderr[-3000:]  # asked for: non-zero at the end...
    assert states(sweep) == {"0": "succeeded", "1": "failed", "2": "succeeded", "3": "succeeded"}  # ...after all ran
    status = json.loads((sweep / "1" / "status.json").read_text())
    assert "optimizer.lr=-1.0 is not allowed" in status["error"]
    assert not (sweep / "1" / "metrics.json").exists()
    report = compare(sweep, out=tmp_path / "report", plots=False)
    assert report["metric"] == "val/loss"  # test=false: the validation loss ranks the jobs
    ranked = [j for j in report["jobs"] if j.value("val/loss") is not None]
    assert len(ranked) == 3 and report["jobs"][-1].name == "1"
    assert report["problems"] == ["1: failed: optimizer.lr=-1.0 is not allowed: expected a finite number > 0"]


@pytest.mark.slow
def test_joblib_runs_two_jobs_in_parallel_with_split_threads(tmp_path):
    sweep = tmp_path / "parallel"
    done = multirun(sweep, "hydra/launcher=parallel", "model=ae_conv,ae_dense", "trainer=debug", "test=false",
                    "data.num_workers=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert states(sweep) == {"0": "succeeded", "1": "succeeded"}
    expected = max(1, available_cores() // 2)
    for job in ("0", "1"):
        log = (sweep / job / "train.log").read_text()
        assert f"torch threads: {expected} (2 parallel job(s)" in log
        assert "data.num_workers=2 ignored under the joblib launcher" in log


@pytest.mark.slow
def test_optuna_search_with_a_failed_trial(tmp_path):
    sweep = tmp_path / "optuna"
    # lr=-1 fails; with the sampler seeded at 1 the first three trials propose 0.001, -1.0, 0.001
    done = multirun(sweep, "hparams_search=ae_conv_optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=1",
                    "optimizer.lr=choice(-1.0,0.001)", "trainer=debug", "callbacks=none")
    assert done.returncode == 0, done.stderr[-3000:]  # the failed trial did not end the study
    assert states(sweep) == {"0": "succeeded", "1": "failed", "2": "succeeded"}
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"]["optimizer.lr"] == 0.001
    values = {j.name: j.metrics["val/loss"] for j in collect_jobs(sweep) if j.state == "succeeded"}
    assert best["best_value"] == pytest.approx(min(values.values()))
    sampled = [yaml.safe_load((sweep / j / ".hydra" / "overrides.yaml").read_text()) for j in ("0", "1", "2")]
    assert all(any(o.startswith("data.batch_size=") for o in s) for s in sampled)  # TPE proposed every parameter


@pytest.mark.slow
def test_submitit_local_runs_one_job(tmp_path):
    sweep = tmp_path / "submitit"
    done = multirun(sweep, "hydra/launcher=local", "trainer=debug", "test=false")
    assert done.returncode == 0, done.stderr[-3000:]
    assert states(sweep) == {"0": "succeeded"}
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # ran as a submitit job, with its logs


@pytest.mark.slow
def test_every_experiment_preset_runs_once(tmp_path):
    files = sorted((CONFIG_DIR / "experiment").glob("*.yaml"))
    presets = [p.stem for p in files]
    # a second stage (model.first_stage: null in its preset) cannot run without its first stage's checkpoint: in a
    # glob sweep it fails as its own job, with the one line that says what to pass, and the sweep goes on
    second = {p.stem for p in files if "first_stage" in (yaml.safe_load(p.read_text()).get("model") or {})}
    assert second == {"vqvae_prior_mnist"}
    sweep = tmp_path / "experiments"
    done = multirun(sweep, "experiment=glob(*)", "trainer=debug", "test=false")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = collect_jobs(sweep)
    assert sorted(j.overrides["experiment"] for j in jobs) == presets
    assert {j.overrides["experiment"]: j.state for j in jobs} == {
        p: "failed" if p in second else "succeeded" for p in presets}
    for job in (j for j in jobs if j.overrides["experiment"] in second):
        status = json.loads((job.path / "status.json").read_text())
        assert status["error"].startswith("model.first_stage is not set"), status["error"]


class BatchProbe(L.Callback):
    """Records which images each DDP rank trained on (spawned ranks import this module through sys.path)."""

    def __init__(self, out_dir: str):
        self.out_dir, self.seen = out_dir, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        images, labels = batch
        # a fingerprint per image: the sum of its pixels and its label
        self.seen += [[int(x.sum()), int(y)] for x, y in zip(images, labels)]

    def on_train_end(self, trainer, module):
        path = Path(self.out_dir) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"world_size": trainer.world_size, "seen": self.seen}))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_shards_batches(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    run = tmp_path / "ddp"
    run_app_inprocess(["trainer=ddp", "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2",
                       "+trainer.limit_test_batches=2", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                       "data.batch_size=32", "+callbacks.batch_probe._target_=test_sweeps.BatchProbe",
                       f"+callbacks.batch_probe.out_dir={probe}"], run)
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and len(r["seen"]) == 4 * 32 for r in ranks)
    seen0, seen1 = ({tuple(x) for x in r["seen"]} for r in ranks)
    assert len(seen0 & seen1) <= 2  # different batches (a couple of MNIST digits may share a fingerprint)
    assert json.loads((run / "status.json").read_text())["state"] == "succeeded"
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/loss", "test/loss"} <= metrics.keys()
    assert len(list(run.glob("metrics*.json"))) == 1
