"""Faults and bad input: each one gets a clear message and a truthful run directory."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aelab.checkpoints import load_checkpoint
from aelab.data import FlowersDataModule
from aelab.errors import CheckpointError, ConfigError
from conftest import DATA_DIR, compose_cfg, run_app_inprocess

BIN = Path(sys.executable).parent
# A small VAE: resuming must also replay its sampling noise, not only the batch order and the corruption.
SMALL = ["model=vae_dense", "model.hidden=[64]", "corruption=gaussian_noise", "trainer.enable_progress_bar=false",
         "+trainer.limit_val_batches=3", "+trainer.limit_test_batches=3"]


class Custom:
    """An arbitrary pickled object: weights_only=True must refuse it."""


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def env(tmp_path: Path) -> dict:
    return {**os.environ, "AELAB_DATA_DIR": str(DATA_DIR), "AELAB_CACHE_DIR": str(tmp_path / "cache"),
            "AELAB_OUTPUT_DIR": str(tmp_path / "outputs")}


def start(tmp_path, *args) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "aelab-train"), *args], env=env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path.name} appeared: {proc.stderr.read()[-2000:]}"
        assert time.time() < end, f"{path} did not appear within {timeout} s"
        time.sleep(0.1)


def killed_and_resumed(tmp_path, args: list[str], pause: float = 0.5) -> tuple[dict, dict]:
    """(metrics of an uninterrupted in-process run, metrics of the same run killed `pause` s after its first epoch's
    checkpoint and resumed with `aelab-train resume=`)."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    run_app_inprocess(args, full)

    proc = start(tmp_path, *args, f"hydra.run.dir={killed}")
    wait_for(killed / "checkpoints" / "last.ckpt", proc)  # epoch 0 done: now kill it in the middle of epoch 1
    time.sleep(pause)
    proc.kill()
    proc.wait()
    assert status(killed)["state"] == "running" and not (killed / "metrics.json").exists()

    done = subprocess.run([str(BIN / "aelab-train"), f"resume={killed}"], env=env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert status(killed)["state"] == "succeeded"
    return json.loads((full / "metrics.json").read_text()), json.loads((killed / "metrics.json").read_text())


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_metrics_as_an_uninterrupted_one(tmp_path):
    uninterrupted, resumed = killed_and_resumed(tmp_path, [*SMALL, "trainer.max_epochs=3",
                                                           "+trainer.limit_train_batches=120"])
    assert resumed == uninterrupted


@pytest.mark.slow
def test_sigterm_ends_cleanly_with_checkpoint_and_status(tmp_path):
    run = tmp_path / "run"
    proc = start(tmp_path, *SMALL, "trainer.max_epochs=50", f"hydra.run.dir={run}")
    wait_for(run / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted by SIGTERM" in err and f"resume={run}" in err
    assert status(run)["state"] == "interrupted" and status(run)["error"] == "interrupted by SIGTERM"
    assert (run / "checkpoints" / "interrupted.ckpt").is_file() and not (run / "metrics.json").exists()


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(run_train, tmp_path):
    # an absurd learning rate makes the dense AE's weights overflow within a few steps
    with pytest.raises(SystemExit):
        run_train(["model=ae_dense", "model.recon_loss=mse", "optimizer=rmsprop", "optimizer.lr=1e30",
                   "trainer.max_epochs=3", "trainer.limit_train_batches=30"], name="nan")
    run = tmp_path / "nan"
    state = status(run)
    assert state["state"] == "failed" and state["error"].startswith("training diverged: train/loss is nan")
    assert not (run / "metrics.json").exists()


def test_deferred_nan_check_names_the_first_bad_step_and_blocks_checkpoints():
    # the GPU mode of FiniteLoss (losses read every check_every steps), driven on the CPU with a stand-in trainer
    from types import SimpleNamespace

    from aelab.callbacks.guards import FiniteLoss, TrainingDiverged

    def feed(guard, losses):
        for step, loss in enumerate(losses, start=1):
            trainer.global_step = step
            guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, step - 1)

    trainer = SimpleNamespace(global_step=0, current_epoch=2, checkpoint_callback=None)
    guard = FiniteLoss(check_every=4)
    feed(guard, [1.0, float("nan"), 2.0])  # bad at step 2, not read yet: nothing raised
    with pytest.raises(TrainingDiverged, match=r"train/loss is nan at epoch 2, step 2;"):
        guard.on_save_checkpoint(trainer, None, {})  # no checkpoint of diverged weights
    with pytest.raises(TrainingDiverged, match=r"train/loss is nan at epoch 2, step 2;"):
        feed(FiniteLoss(check_every=4), [1.0, float("nan"), 2.0, float("inf")])  # the 4th step reads; first wins
    healthy = FiniteLoss(check_every=4)
    feed(healthy, [0.5] * 9)
    healthy.on_train_epoch_end(trainer, None)  # nothing raised


def test_resume_of_a_directory_without_checkpoint_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    done = subprocess.run([str(BIN / "aelab-train"), f"resume={tmp_path / 'empty'}"], env=env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"aelab-train: error: resume={tmp_path / 'empty'}: not a run directory (no config.yaml)" in done.stderr


def test_checkpoint_of_another_model_is_refused_naming_both(run_train, tmp_path):
    run = run_train(["model=ae_conv"], name="ae")
    with pytest.raises(SystemExit):
        run_train(["model=vae_conv", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], name="vae")
    error = status(tmp_path / "vae")["error"]
    assert "holds ConvAutoencoder" in error and "this run configures ConvVAE" in error


def test_foreign_and_non_checkpoint_files_are_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(CheckpointError, match="not an aelab checkpoint"):
        load_checkpoint(tmp_path / "plain.ckpt")
    (tmp_path / "notes.ckpt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint file"):
        load_checkpoint(tmp_path / "notes.ckpt")
    torch.save({"state_dict": {}, "aelab": Custom()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="weights_only=True refuses"):
        load_checkpoint(tmp_path / "evil.ckpt")


@pytest.mark.parametrize("overrides,message", [
    (["data.batch_size=0"], "data.batch_size=0 is not allowed: expected an integer >= 1"),
    (["data.batch_size=abc"], "data.batch_size='abc' is not allowed: expected an integer >= 1"),
    (["data.batch_size=[64]"], "data.batch_size=[64] is not allowed: expected an integer >= 1"),
    (["model.latent_dim=0"], "model.latent_dim=0 is not allowed: expected null or an integer >= 1"),
    (["model=vae_dense", "model.beta=-1"], "model.beta=-1 is not allowed: expected a number >= 0"),
    (["model=vae_dense", "model.beta=high"], "model.beta='high' is not allowed: expected a number >= 0"),
    (["experiment=vae_binarized_lesson", "model=vae_conv"], "model.hidden=[512] is not allowed: expected an integer >= 1"),
    (["+model.beta=1"], "model: unknown key(s) ['beta'] for ConvAutoencoder; allowed:"),
    (["+data.colour=1"], "data: unknown key(s) ['colour'] for MNISTDataModule; allowed:"),
    (["data=flowers", "corruption=downsample", "corruption.downsample.factor=3"],
     "corruption.downsample.factor=3 does not divide the image size 64x64"),
    # the optimizer and scheduler: torch would refuse them only once training starts (lr=abc: a TypeError inside)
    (["optimizer.lr=abc"], "optimizer.lr='abc' is not allowed: expected a finite number > 0"),
    (["optimizer.lr=nan"], "optimizer.lr=nan is not allowed: expected a finite number > 0"),
    (["optimizer.lr=-1"], "optimizer.lr=-1 is not allowed: expected a finite number > 0"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1 is not allowed: expected a finite number >= 0"),
    (["+optimizer.betas=[0.9,1.5]"], "optimizer.betas[1]=1.5 is not allowed: expected a finite number in [0, 1)"),
    (["optimizer=rmsprop", "+optimizer.momentum=1"], "optimizer.momentum=1 is not allowed: expected a finite number in [0, 1)"),
    (["optimizer=rmsprop", "+optimizer.amsgrad=true"], "optimizer: unknown key(s) ['amsgrad'] for RMSprop; allowed: lr, alpha"),
    (["optimizer._target_=torch.optim.Adamw"], "optimizer._target_='torch.optim.Adamw' is not allowed: expected an "
                                               "importable class, e.g. torch.optim.Adam; did you mean torch.optim.AdamW?"),
    (["+scheduler._target_=torch.optim.lr_scheduler.StepLR", "+scheduler._partial_=true"],
     "scheduler: StepLR needs step_size; add +scheduler.step_size=..."),
    (["+scheduler._target_=torch.optim.lr_scheduler.StepLR", "+scheduler._partial_=true", "+scheduler.step_size=0.5"],
     "scheduler.step_size=0.5 is not allowed: expected an integer >= 1"),
    (["+scheduler._target_=torch.optim.lr_scheduler.ReduceLROnPlateau", "+scheduler._partial_=true",
      "+scheduler.factor=2"], "scheduler.factor=2 is not allowed: expected a finite number in (0, 1)"),
    (["experiment=superres_mnist", "scheduler.max_lr=inf"], "scheduler.max_lr=inf is not allowed: expected a finite number > 0"),
], ids=["batch-0", "batch-type", "batch-list", "latent-0", "beta-negative", "beta-string", "hidden-list", "kl-of-non-vae",
        "unknown-data-key", "factor-flowers", "lr-string", "lr-nan", "lr-negative", "weight-decay", "betas", "momentum",
        "optimizer-key", "optimizer-target", "scheduler-required", "scheduler-count", "scheduler-range", "max-lr-inf"])
def test_bad_values_are_reported_before_any_data_is_read(tmp_path, overrides, message, monkeypatch):
    from aelab.build import build_parts

    monkeypatch.setenv("AELAB_DATA_DIR", str(tmp_path / "no-data-here"))  # reading data would fail differently
    cfg = compose_cfg(overrides, output_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        build_parts(cfg)
    assert message in str(info.value)


CONCURRENT = """
import sys, torch
from aelab.data import FlowersDataModule
dm = FlowersDataModule(sys.argv[1], cache_dir=sys.argv[2], image_size=32, train_splits=["train"])
dm.setup()
print(int(dm.splits["train"].images.sum()), int(dm.splits["test"].images.sum()))
"""


def test_two_processes_filling_the_same_cache_do_not_corrupt_it(tmp_path):
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(DATA_DIR), str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1000:] for _, err in outputs]
    assert outputs[0][0] == outputs[1][0]
    assert not list(cache.glob("*.tmp"))  # no half-written leftovers
    dm = FlowersDataModule(str(DATA_DIR), cache_dir=str(cache), image_size=32, train_splits=["train"])
    dm.setup()  # a third reader loads the cached tensors
    assert outputs[0][0].split() == [str(int(dm.splits["train"].images.sum())), str(int(dm.splits["test"].images.sum()))]


def test_git_commit_can_be_named_for_a_copied_tree(monkeypatch, tmp_path):
    """A tree copied to another machine (a cluster, a GPU box) may carry no .git or a stale one:
    AELAB_GIT_COMMIT names its commit; otherwise git answers, and outside a repository nothing is recorded."""
    from aelab import runs

    monkeypatch.delenv("AELAB_GIT_COMMIT", raising=False)
    own = runs.git_commit()
    assert own and len(own.removesuffix("-dirty")) == 40  # this checkout
    monkeypatch.setenv("AELAB_GIT_COMMIT", "0123abc")
    assert runs.git_commit() == "0123abc"
    monkeypatch.setattr(runs, "REPO_ROOT", tmp_path)  # no repository here
    assert runs.git_commit() == "0123abc"
    monkeypatch.delenv("AELAB_GIT_COMMIT")
    assert runs.git_commit() is None
