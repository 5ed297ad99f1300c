"""The console scripts end to end, as a user types them (a few subprocesses: imports cost seconds each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA_DIR

BIN = Path(sys.executable).parent


def cli(app: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AELAB_DATA_DIR": str(DATA_DIR), "AELAB_CACHE_DIR": str(tmp_path / "cache"),
           "AELAB_OUTPUT_DIR": str(tmp_path / "outputs")}
    return subprocess.run([str(BIN / app), *args], capture_output=True, text=True, env=env, timeout=300)


def test_train_then_eval_from_the_command_line(tmp_path):
    run = tmp_path / "run"
    done = cli("aelab-train", "trainer=debug", "corruption=downsample", f"hydra.run.dir={run}", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "status.json").read_text())["state"] == "succeeded"
    assert (run / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file()
    env = json.loads((run / "environment.json").read_text())
    assert env["packages"]["torch"] and env["packages"]["lightning"]
    ev = tmp_path / "eval"
    done = cli("aelab-eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "trainer=debug",
               f"hydra.run.dir={ev}", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "test/psnr" in json.loads((ev / "metrics.json").read_text())


@pytest.mark.parametrize("args,message", [
    (["corruption=gaussian_noise", "corruption.gaussian_noise.std=-1"],
     "aelab-train: error: corruption.gaussian_noise.std must be >= 0, got -1"),
    (["corruption=downsample", "corruption.downsample.factor=3"],
     "aelab-train: error: corruption.downsample.factor=3 does not divide the image size 28x28"),
    (["model=nope"], "Could not find 'model/nope'"),
], ids=["negative-noise", "factor-does-not-divide", "unknown-choice"])
def test_bad_input_is_one_clear_line_and_no_metrics(tmp_path, args, message):
    run = tmp_path / "run"
    done = cli("aelab-train", "trainer=debug", f"hydra.run.dir={run}", *args, tmp_path=tmp_path)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run / "metrics.json").exists()
    if (run / "status.json").exists():
        assert json.loads((run / "status.json").read_text())["state"] == "failed"


@pytest.mark.parametrize("override", ["model=vae_conv", "model.latent_dim=3"])
def test_eval_refuses_a_model_override_in_one_line(tmp_path, override):
    """aelab-eval's model is the checkpoint's: a model override gets one line saying so, not Hydra's
    "Could not override 'model'. No match in the defaults list"."""
    done = cli("aelab-eval", f"ckpt_path={tmp_path / 'best.ckpt'}", override, tmp_path=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"aelab-eval: error: {override}: the model comes from the checkpoint (ckpt_path); "
                                   "aelab-eval takes data=, corruption=, seed=, trainer= and callbacks=")
    assert not (tmp_path / "outputs").exists()
