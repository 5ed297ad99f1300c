"""`resume=DIR` writes only inside DIR, wherever DIR now lives; the command line may change only what cannot alter
the epochs already trained (applied and logged), anything else is refused naming each key; status.json then
describes only the resumed attempt. One short run is trained per module and copied for each test."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from aelab.resume import rebased
from aelab.runs import run_app
from aelab.train import resume_config, train
from conftest import DATA_DIR, FAST, compose_cfg, run_app_inprocess

BIN = Path(sys.executable).parent
QUICK = [*FAST, "callbacks.latent_scatter=null", "callbacks.latent_noise=null", "callbacks.probe=null",
         "callbacks.baselines=null", "callbacks.reconstruction_grid=null", "trainer.limit_train_batches=3"]


def tree(path: Path) -> dict[str, str]:
    """Every file and folder under `path`, with each file's SHA-256: equal trees are byte-for-byte equal."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir) -> Path:
    """One finished one-epoch run (checkpoints, TensorBoard events, config.yaml with its absolute paths)."""
    root = tmp_path_factory.mktemp("resume")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AELAB_DATA_DIR", str(DATA_DIR))
        mp.setenv("AELAB_CACHE_DIR", str(cache_dir))
        mp.setenv("AELAB_OUTPUT_DIR", str(root / "outputs"))
        run_app_inprocess(QUICK, root / "original")
    return root / "original"


def resume(run_dir: Path, *overrides: str, output_dir: Path | None = None):
    """`aelab-train resume=DIR OVERRIDES...` in this process (Hydra puts the run in DIR, as conf/hydra says)."""
    cfg = compose_cfg([*QUICK, f"resume={run_dir}", *overrides], output_dir=output_dir or run_dir)
    with open_dict(cfg):
        del cfg["hydra"]
    return run_app(train, cfg, "aelab-train", prepare=resume_config)


def test_a_resumed_copy_writes_only_into_itself_and_leaves_the_original_unchanged(trained, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    before, copied = tree(trained), tree(copy)
    # the interruption's record, as run_app leaves it when a run is stopped
    status = json.loads((copy / "status.json").read_text())
    (copy / "status.json").write_text(json.dumps({**status, "state": "interrupted", "error": "interrupted by SIGTERM",
                                                  "error_type": "KeyboardInterrupt", "traceback": "Traceback ..."}))
    with caplog.at_level(logging.INFO, logger="aelab"):
        resume(copy, "trainer.max_epochs=2")

    assert tree(trained) == before  # byte for byte: no new checkpoint, event file or record in the original
    after = tree(copy)
    assert after["checkpoints/last.ckpt"] != copied["checkpoints/last.ckpt"]  # the copy trained its second epoch
    assert len([k for k in after if k.startswith("tensorboard/events")]) > len(
        [k for k in copied if k.startswith("tensorboard/events")])
    ckpt = torch.load(copy / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["epoch"] == 1
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert state["dirpath"] == str(copy / "checkpoints") and state["best_model_path"].startswith(str(copy))
    assert str(trained) not in (copy / "config.yaml").read_text()
    recorded = OmegaConf.load(copy / "config.yaml")
    assert recorded.trainer.max_epochs == 2 and recorded.logger.tensorboard.save_dir == str(copy)
    assert f"resume={copy}: applying trainer.max_epochs=2 (recorded 1)" in caplog.messages
    # status.json describes the resumed attempt only: no error type or traceback of the interruption
    assert set(json.loads((copy / "status.json").read_text())) == {"state", "started", "updated", "pid", "error"}
    assert json.loads((copy / "status.json").read_text())["state"] == "succeeded"
    assert json.loads((copy / "metrics.json").read_text())["test/loss"] > 0


def test_a_moved_run_resumes_where_it_now_is(trained, tmp_path):
    old, new = tmp_path / "old", tmp_path / "moved" / "here"
    shutil.copytree(trained, old)
    resume(old)  # old's config.yaml and checkpoints now record old's own paths
    new.parent.mkdir()
    os.rename(old, new)
    resume(new, "trainer.max_epochs=2")
    assert not old.exists()  # nothing recreated where the run used to be
    ckpt = torch.load(new / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["epoch"] == 1 and str(old) not in json.dumps(ckpt["callbacks"], default=str)
    assert json.loads((new / "status.json").read_text())["state"] == "succeeded"


def test_overrides_that_would_change_the_trained_epochs_are_refused_naming_each_key(trained, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    before = tree(copy)
    with pytest.raises(SystemExit) as info:
        resume(copy, "model.latent_dim=64", "data.batch_size=32", "trainer.max_epochs=3")
    assert info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"aelab-train: error: resume={copy}: data.batch_size (recorded 128, requested 32), model.latent_dim (recorded "
        "null, requested 64) cannot change on resume; a resumed run may change only epochs, trainer.max_epochs,")
    assert tree(copy) == before  # a refused resume leaves the run as it was (status.json included)


def test_a_group_override_is_compared_with_what_the_run_recorded(trained, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    with pytest.raises(SystemExit):
        resume(copy, "optimizer=rmsprop")  # ae_conv's default optimizer is adam
    err = capsys.readouterr().err.strip()
    assert "optimizer._target_ (recorded 'torch.optim.Adam', requested 'torch.optim.RMSprop')" in err
    resume(copy, "optimizer=adam", "model=ae_conv", "test=false")  # the recorded choices, and a resumable key
    assert "test/loss" not in json.loads((copy / "metrics.json").read_text())


def test_resume_into_another_directory_is_refused(trained, tmp_path, capsys):
    with pytest.raises(SystemExit):
        resume(trained, output_dir=tmp_path / "elsewhere")  # as `resume=DIR hydra.run.dir=ELSEWHERE` would
    assert (f"resume={trained}: a resumed run continues in its own directory, but this one would write to "
            f"{tmp_path / 'elsewhere'}; drop hydra.run.dir=") in capsys.readouterr().err


def test_rebased_repoints_only_whole_path_components():
    moves = {"/runs/a": "/new/b", "/data": "/mnt/data"}
    cfg = {"out": "/runs/a", "ckpt": "/runs/a/checkpoints/last.ckpt", "other": "/runs/ab/x", "n": 3,
           "list": ["/data/MNIST", "/database"], "best_k": {"/runs/a/checkpoints/best.ckpt": 0.5}}
    assert rebased(cfg, moves) == {"out": "/new/b", "ckpt": "/new/b/checkpoints/last.ckpt", "other": "/runs/ab/x",
                                   "n": 3, "list": ["/mnt/data/MNIST", "/database"],
                                   "best_k": {"/new/b/checkpoints/best.ckpt": 0.5}}


def test_a_refused_resume_from_the_command_line_keeps_the_runs_own_hydra_record(trained, tmp_path):
    """Through the real CLI: Hydra writes DIR/.hydra before aelab runs; on resume it keeps the run's own record."""
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / ".hydra").mkdir()
    (copy / ".hydra" / "overrides.yaml").write_text("- trainer=debug\n")
    (copy / "train.log").write_text("the run's log\n")  # the CLI writes one; Hydra appends to it
    before = tree(copy)
    env = {**os.environ, "AELAB_DATA_DIR": str(DATA_DIR), "AELAB_OUTPUT_DIR": str(tmp_path / "outputs")}
    done = subprocess.run([str(BIN / "aelab-train"), f"resume={copy}", "model.latent_dim=64"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"aelab-train: error: resume={copy}: model.latent_dim (recorded null, requested 64) "
                                   "cannot change on resume; a resumed run may change only epochs, trainer.max_epochs, "
                                   "trainer.max_steps, trainer.max_time, test, trainer.enable_progress_bar, "
                                   "trainer.enable_model_summary, trainer.log_every_n_steps, threads, data.num_workers, "
                                   "data.pin_memory, fail_fast, sweep_exit_nonzero, data.data_dir, data.cache_dir, "
                                   "paths.data_dir, paths.cache_dir, paths.log_dir, paths.root_dir; start a new run to "
                                   "change the others")
    assert tree(copy) == before
