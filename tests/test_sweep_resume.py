"""Sweeps that survive a crash: a multirun killed midway and rerun with sweep_resume=true runs each job once; an
Optuna study killed after some trials continues from its SQLite file with the same trial numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from aelab.compare import collect_jobs, compare
from aelab.errors import ConfigError
from aelab.sweep import _continued
from aelab.sweep_resume import check_sweep_dir
from conftest import run_app_inprocess, snapshot

BIN = Path(sys.executable).parent
GRID = ["seed=1,2,3", "trainer=debug", "callbacks=none", "test=false", "logger=none"]


def aelab_train(*args: str, wait: bool = True):
    command = [str(BIN / "aelab-train"), "-m", *args]
    if wait:
        return subprocess.run(command, capture_output=True, text=True, timeout=1800)  # a hang, not a timing
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def states(sweep: Path) -> dict[str, str]:
    return {job.name: job.state for job in collect_jobs(sweep)}


def kill_after(process, sweep: Path, succeeded: int, limit_s: float = 900) -> None:
    """SIGKILL the sweep (its whole process group) once `succeeded` job directories say so."""
    deadline = time.monotonic() + limit_s
    while sum(s == "succeeded" for s in states(sweep).values()) < succeeded:
        assert process.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline, f"no {succeeded} succeeded jobs in {limit_s} s"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)



@pytest.mark.slow
def test_a_sweep_killed_midway_reruns_only_what_did_not_succeed(tmp_path):
    sweep = tmp_path / "grid"
    kill_after(aelab_train(*GRID, f"hydra.sweep.dir={sweep}", wait=False), sweep, succeeded=1)
    before = states(sweep)
    done_before = sorted(name for name, state in before.items() if state == "succeeded")
    assert 1 <= len(done_before) < 3, before
    kept = {name: snapshot(sweep / name) for name in done_before}

    rerun = aelab_train(*GRID, f"hydra.sweep.dir={sweep}", "sweep_resume=true")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert states(sweep) == {str(i): "succeeded" for i in range(3)}
    for name in done_before:  # skipped: not a byte, not a timestamp changed
        assert snapshot(sweep / name) == kept[name], name
        assert f"job {name} succeeded with this config: skipped" in rerun.stderr + rerun.stdout
    for name in sorted(set(map(str, range(3))) - set(done_before)):  # ran in the rerun, once
        assert f"job {name} succeeded with this config: skipped" not in rerun.stderr + rerun.stdout
        assert (sweep / name / ".hydra" / "overrides.yaml").is_file()
    report = compare(sweep, out=tmp_path / "report", plots=False)
    assert sorted(j.name for j in report["jobs"]) == ["0", "1", "2"] and not report["problems"]

    everything = snapshot(sweep)
    changed = aelab_train(*GRID, "optimizer.lr=0.002", f"hydra.sweep.dir={sweep}", "sweep_resume=true")
    assert changed.returncode == 1
    assert changed.stderr.strip().splitlines()[-1] == (
        "aelab-train: error: sweep_resume=true: job 0 succeeded with another config: optimizer.lr (recorded 0.001, "
        "now 0.002); rerun the sweep's own command, or start a new sweep (another hydra.sweep.dir)")
    assert {k: v for k, v in snapshot(sweep).items() if k != "multirun.yaml"} == {
        k: v for k, v in everything.items() if k != "multirun.yaml"}


def test_sweep_resume_outside_a_multirun_or_without_the_sweep_dir_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_app_inprocess(["trainer=debug", "sweep_resume=true"], tmp_path / "run")
    assert capsys.readouterr().err.strip() == (
        "aelab-train: error: sweep_resume=true continues a multirun: add -m and the sweep's hydra.sweep.dir; to "
        "continue one run use resume=DIR")
    assert not (tmp_path / "run").exists()
    config = lambda d: OmegaConf.create({"sweep_resume": True, "hydra": {"sweep": {"dir": str(d)}}})  # noqa: E731
    with pytest.raises(ConfigError, match=r"^sweep_resume=true: hydra\.sweep\.dir=.*new holds no earlier job; name"):
        check_sweep_dir(config(tmp_path / "new"))
    (tmp_path / "old" / "0").mkdir(parents=True)
    (tmp_path / "old" / "0" / "status.json").write_text(json.dumps({"state": "failed"}))
    check_sweep_dir(config(tmp_path / "old"))


class Impl:
    """The parts of hydra-optuna-sweeper's implementation object that _continued sets and reads."""

    def __init__(self, n_trials: int):
        self.n_trials, self.job_idx = n_trials, 0
        self.config = OmegaConf.create({"hydra": {"sweeper": {"sampler": {
            "_target_": "optuna.samplers.RandomSampler", "seed": 42}}}})


def test_a_stored_study_continues_with_its_numbers_failed_trials_and_a_seeded_sampler(tmp_path):
    import optuna

    from aelab.adapters import optuna_sqlite_on_sqlalchemy2

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna_sqlite_on_sqlalchemy2()
    storage = f"sqlite:///{tmp_path}/optuna.db"
    first = optuna.create_study(storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=42))
    for value in (1.0, None, "running"):  # one complete, one failed, one left running by a crash
        trial = first.ask()
        trial.suggest_float("x", 0, 1)
        if value == 1.0:
            first.tell(trial, value)
        elif value is None:
            first.tell(trial, state=optuna.trial.TrialState.FAIL)
    impl = Impl(n_trials=5)
    study = _continued(optuna.load_study(study_name="s", storage=storage), impl)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "FAIL"]  # the crashed one: FAIL
    assert impl.n_trials == 3 and impl.job_idx == 3  # 2 of 5 done; the next trial is number 3, in job dir 3
    assert study.user_attrs["aelab_interrupted"] == [2]
    trial = study.ask()
    assert trial.number == 3
    expected = optuna.samplers.RandomSampler(seed=45)  # the seed plus the trials on record
    assert trial.suggest_float("x", 0, 1) == pytest.approx(
        expected.sample_independent(study, trial, "x", optuna.distributions.UniformDistribution(0, 1)))
    again = _continued(optuna.load_study(study_name="s", storage=storage), Impl(n_trials=5))
    assert again.user_attrs["aelab_interrupted"] == [2, 3]  # trial 3 was running too: not counted either


@pytest.mark.slow
def test_an_optuna_study_killed_after_some_trials_continues_from_its_sqlite_file(tmp_path):
    import optuna

    from aelab.adapters import optuna_sqlite_on_sqlalchemy2

    optuna_sqlite_on_sqlalchemy2()
    sweep = tmp_path / "optuna"
    command = ["hparams_search=ae_conv_optuna", "hydra.sweeper.n_trials=4", "trainer=debug", "callbacks=none",
               "logger=none", f"hydra.sweep.dir={sweep}"]
    kill_after(aelab_train(*command, wait=False), sweep, succeeded=2)
    storage = f"sqlite:///{sweep}/optuna.db"
    before = optuna.load_study(study_name="ae_conv_optuna", storage=storage).trials
    finished = [t for t in before if t.state.name == "COMPLETE"]
    assert len(finished) >= 2

    rerun = aelab_train(*command)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = optuna.load_study(study_name="ae_conv_optuna", storage=storage).trials
    assert [t.number for t in after] == list(range(len(after)))
    for old in finished:  # the history is the one on record, under the same numbers
        assert after[old.number].params == old.params and after[old.number].value == old.value
    interrupted = [t.number for t in before if t.state.name == "RUNNING"]
    assert all(after[n].state.name == "FAIL" for n in interrupted)
    assert sum(t.number not in interrupted for t in after) == 4  # n_trials counts what was not interrupted
    for trial in after[len(before):]:  # each new trial ran in the job directory of its number
        overrides = yaml.safe_load((sweep / str(trial.number) / ".hydra" / "overrides.yaml").read_text())
        assert f"model.latent_dim={trial.params['model.latent_dim']}" in overrides
        assert trial.state.name == "COMPLETE"
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(t.value for t in after if t.value is not None))
