"""Every experiment preset composes and trains a few real batches; experiments/run.py writes RESULTS.md from the
runs' metrics.json."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from aelab.config import CONFIG_DIR, REPO_ROOT
from conftest import compose_cfg

RUNNER = REPO_ROOT / "experiments" / "run.py"
PRESETS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))

BASE = {"figures/latent_scatter", "figures/latent_noise"}
GEN = BASE | {"figures/prior_samples", "figures/interpolation"}
SR = BASE | {"figures/noise_input"}
# preset -> (figure tags it must log, the baseline test/psnr_baseline must be)
EXPECTED = {
    "ae_conv_mnist": (BASE, "pca"),
    "ae_latent2_mnist": (BASE | {"figures/latent_grid"}, "pca"),
    "latent_noise": (BASE, "pca"),
    "denoise_mnist": (BASE, "identity"),
    "denoise_fashion": (BASE, "identity"),
    "superres_mnist": (SR, "bicubic"),
    "superres_flowers": (SR, "bicubic"),
    "vae_dense_2d": (GEN | {"figures/latent_grid"}, "pca"),
    "vae_conv": (GEN, "pca"),
    "aae": (GEN, "pca"),
    "beta_vae": (GEN, "pca"),
    "cvae": (BASE | {"figures/prior_samples", "figures/class_samples"}, "pca"),
    "vae_binarized": (GEN, "pca"),
}
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "callbacks.latent_scatter.n_images=256", "callbacks.latent_noise.std_images=64"]
EXTRA = {"vae_binarized": ["callbacks.nll.max_images=16"]}


def load_runner():
    spec = importlib.util.spec_from_file_location("experiments_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_preset_is_known_to_the_runner_and_this_test():
    assert set(PRESETS) == set(load_runner().PRESETS) == set(EXPECTED)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_with_debug_trainer(name, tmp_path):
    cfg = compose_cfg(["trainer=debug", f"experiment={name}"], output_dir=tmp_path)
    assert cfg.trainer.limit_train_batches == 5  # trainer=debug still applies
    assert cfg.trainer.max_epochs >= 1 and "baselines" in cfg.callbacks


@pytest.mark.parametrize("name", PRESETS)
def test_preset_trains_a_few_real_batches(name, run_train):
    run = run_train([f"experiment={name}", *FAST, *EXTRA.get(name, [])])
    assert json.loads((run / "status.json").read_text())["state"] == "succeeded"
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["test/loss"]) and 0 < metrics["test/psnr"] < 60
    tags, main = EXPECTED[name]
    assert metrics["test/psnr_baseline"] == metrics[f"test/psnr_baseline_{main}"]
    assert metrics["val/psnr_baseline"] == metrics[f"val/psnr_baseline_{main}"]
    if main == "bicubic":  # super-resolution: bicubic beats pixel replication on real images
        assert metrics["test/psnr_baseline_bicubic"] > metrics["test/psnr_baseline_identity"]
    if name == "vae_binarized":
        assert metrics["test/nll"] > 0
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert {t for t in acc.Tags()["images"] if t.startswith("figures/")} == tags


def test_runner_jobs_follow_their_preset_with_the_variant_overrides():
    runner = load_runner()
    jobs = runner.train_jobs(None)
    names = [j.name for j in jobs]
    assert names.index("superres_flowers_x4_area") == names.index("superres_flowers") + 1
    x4 = jobs[names.index("superres_flowers_x4_area")]
    assert x4.args == ["experiment=superres_flowers", "corruption.downsample.factor=4"]
    assert set(runner.SUPERRES.values()) <= set(names)  # every super-resolution table row has a job
    only = [j.name for j in runner.train_jobs({"superres_mnist"})]  # a preset brings its variants along
    assert only == ["superres_mnist", "superres_mnist_x4_area", "superres_mnist_x2_bilinear",
                    "superres_mnist_x4_bilinear"]


def test_runner_tiny_writes_results_from_metrics_json(tmp_path):
    out, runs = tmp_path / "RESULTS.md", tmp_path / "runs"
    proc = subprocess.run([sys.executable, str(RUNNER), "--tiny", "--only", "ae_conv_mnist", "--out", str(out),
                           "--runs-dir", str(runs)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    metrics = json.loads((runs / "ae_conv_mnist" / "metrics.json").read_text())
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| ae_conv_mnist |"))
    for key in ("test/psnr", "test/psnr_baseline_pca", "test/psnr_baseline_mean"):
        assert f"{metrics[key]:.2f}" in row
    assert f"{metrics['test/loss']:.4f}" in row and "(pca)" in row
    assert "`aelab-train experiment=ae_conv_mnist trainer=debug trainer.max_epochs=1`" in text
    assert "Tiny mode" in text and "torch 2." in text
    assert "## Transfer matrix" in text and "Not run" in text  # no denoiser in this selection


def test_runner_rejects_unknown_names(tmp_path):
    proc = subprocess.run([sys.executable, str(RUNNER), "--tiny", "--only", "nope", "--runs-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2 and "--only nope: unknown" in proc.stderr
    assert not list(Path(tmp_path).iterdir())  # nothing ran
