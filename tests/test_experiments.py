"""Every experiment preset composes and trains a few real batches; experiments/run.py writes RESULTS.md and
RESULTS.json from the runs' metrics.json."""

import datetime as dt
import importlib
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
SR_NO_CODE = {"figures/noise_input"}  # sr_resnet has no code: no latent figures
DISENTANGLEMENT = {"figures/latent_traversal", "figures/factor_mutual_information"}
# preset -> (figure tags it must log, the baseline test/psnr_baseline must be)
EXPECTED = {
    "ae_conv_mnist": (BASE, "pca"),
    "ae_latent2_mnist": (BASE | {"figures/latent_grid"}, "pca"),
    "ae_latent32_mnist": (BASE, "pca"),
    "ae_latent128_mnist": (BASE, "pca"),
    "latent_noise": (BASE, "pca"),
    "denoise_mnist": (BASE, "identity"),
    "denoise_fashion": (BASE, "identity"),
    "superres_mnist": (SR_NO_CODE, "bicubic"),
    "superres_flowers": (SR_NO_CODE, "bicubic"),
    "superres_flowers_x4": (SR_NO_CODE, "bicubic"),
    "vae_dense_2d": (GEN | {"figures/latent_grid"}, "pca"),
    "vae_conv": (GEN, "pca"),
    "aae": (GEN, "pca"),
    "beta_vae": (GEN, "pca"),
    "cvae": (BASE | {"figures/prior_samples", "figures/class_samples"}, "pca"),
    "vae_binarized": (GEN, "pca"),
    "iwae_binarized": (GEN, "pca"),
    # the model families beside the lesson's (issue 25): prior samples where the model has a prior of its own
    "wae_mnist": (GEN, "pca"),
    "info_vae_mnist": (GEN, "pca"),
    "rae_mnist": (BASE, "pca"),
    "sparse_ae_mnist": (BASE, "pca"),
    "contractive_ae_mnist": (BASE, "pca"),
    "vamp_binarized": (GEN, "pca"),
    "hvae_binarized": (GEN, "pca"),
    "vamp_iwae_binarized_long": (GEN, "pca"),  # vamp_resnet on iwae_binarized's recipe
    # a VQ-VAE's code holds as many numbers as the image has pixels: a PCA of that size is the identity, no baseline
    "vqvae_mnist": (BASE, None),
    "vqvae_prior_mnist": (GEN, None),  # its first stage trains in the test first
    "mae_mnist": ({"figures/latent_scatter"}, "pca"),  # a code without a decoder of codes: the scatter only
    "mae_fashion": ({"figures/latent_scatter"}, "pca"),
    "mae_mnist_long": ({"figures/latent_scatter"}, "pca"),  # mae_mnist's recipe at three times the epochs
    "mae_fashion_long": ({"figures/latent_scatter"}, "pca"),
    # disentanglement on dSprites (issue 26): traversals and the factor x dimension heat map beside the VAE figures
    **{name: (GEN | DISENTANGLEMENT, "pca") for name in ("dsprites_beta_vae", "dsprites_beta4_vae",
                                                          "dsprites_beta_tcvae", "dsprites_factorvae",
                                                          "dsprites_dip_vae", "dsprites_capacity_vae")},
    # the lesson's own models, kept beside the reference ones (experiments/run.py shows each pair side by side)
    "superres_mnist_lesson": (SR, "bicubic"),
    "superres_flowers_lesson": (SR, "bicubic"),
    "superres_flowers_x4_lesson": (SR, "bicubic"),
    "vae_binarized_lesson": (GEN, "pca"),
}
FAST = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "callbacks.latent_scatter.n_images=256", "callbacks.latent_noise.std_images=64"]
# presets with the importance-sampled NLL score 16 test images here (as experiments/run.py --tiny cuts it down)
EXTRA = {name: ["callbacks.nll.max_images=16"] for name in PRESETS
         if "ImportanceSampledNLL" in (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()}
# dSprites presets render a subset of the factor grid: a small one here (shared through the session's cache)
EXTRA |= {name: ["data.size=2000", "data.test_size=500", "callbacks.factor_mutual_information.n_images=500"]
          for name in PRESETS if name.startswith("dsprites_")}


def load_runner():
    spec = importlib.util.spec_from_file_location("experiments_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


SECOND_STAGES = load_runner().SECOND_STAGES  # preset -> the preset whose checkpoint it starts from


def load_report():
    load_runner()  # puts the checkout on sys.path, as the script does
    return importlib.import_module("experiments.report")


def test_every_preset_is_known_to_the_runner_and_this_test():
    runner = load_runner()
    assert set(runner.PRESETS) == set(PRESETS) - runner.EXCLUDED  # read from conf/experiment: no list to edit
    assert set(PRESETS) == set(EXPECTED)


def test_presets_are_discovered_from_the_config_folder(tmp_path):
    runner = load_runner()
    for name in ("zeta", "ae_conv_mnist", "denoise_mnist_lesson", "scratch", "denoise_mnist"):
        (tmp_path / "experiment").mkdir(exist_ok=True)
        (tmp_path / "experiment" / f"{name}.yaml").write_text("# @package _global_\n")
    found = runner.discover_presets(tmp_path, excluded={"scratch"})
    assert found == ["ae_conv_mnist", "denoise_mnist", "denoise_mnist_lesson", "zeta"]  # ORDER first, then a-z
    assert [j.name for j in runner.train_jobs({"zeta"}, found)] == ["zeta"]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_with_debug_trainer(name, tmp_path):
    cfg = compose_cfg(["trainer=debug", f"experiment={name}"], output_dir=tmp_path)
    assert cfg.trainer.limit_train_batches == 5  # trainer=debug still applies
    assert cfg.trainer.max_epochs >= 1 and "baselines" in cfg.callbacks


# the lesson's flowers autoencoders take about a minute each on 2 cores (their codes of 64x64 RGB images feed the
# latent figures and the embedding probe): they train in the slow run; every other preset, the flowers reference
# ones included, trains in the default one
SLOW_PRESETS = {"superres_flowers_lesson", "superres_flowers_x4_lesson"}
# the dSprites presets (64x64 images; the metrics render and encode more images) train with their metrics and figures
# in the slow run; each of their models trains a few batches in tests/test_disentangle_models.py
# the VQ-VAE's second stage samples its PixelCNN position by position for every figure and sampler: slow run
SLOW_PRESETS |= {"vqvae_prior_mnist"}
# the default suite's budget: these families' objectives and estimators have their own tests (test_families.py,
# test_vqvae.py, test_disentangle_models.py); their presets train a few batches in the slow run
SLOW_PRESETS |= {"vqvae_mnist", "vamp_binarized", "dsprites_beta_tcvae"}
# the longer MAE recipes: under FAST they train what mae_mnist / mae_fashion train in the default run
SLOW_PRESETS |= {"mae_mnist_long", "mae_fashion_long"}
# the VampPrior on vae_resnet's nets: its terms and NLL have their own tests in test_families.py
SLOW_PRESETS |= {"vamp_iwae_binarized_long"}
SLOW_PRESETS |= {"dsprites_beta_vae", "dsprites_beta4_vae", "dsprites_factorvae", "dsprites_dip_vae",
                 "dsprites_capacity_vae"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_PRESETS else n
                                  for n in PRESETS])
def test_preset_trains_a_few_real_batches(name, run_train):
    extra = list(EXTRA.get(name, []))
    if name in SECOND_STAGES:  # trained from its first stage's checkpoint, as experiments/run.py chains them
        first = run_train([f"experiment={SECOND_STAGES[name]}", *FAST], name="first_stage")
        extra.append(f"model.first_stage={first / 'checkpoints' / 'best.ckpt'}")
    run = run_train([f"experiment={name}", *FAST, *extra])
    assert json.loads((run / "status.json").read_text())["state"] == "succeeded"
    metrics = json.loads((run / "metrics.json").read_text())
    assert math.isfinite(metrics["test/loss"]) and 0 < metrics["test/psnr"] < 60
    tags, main = EXPECTED[name]
    if main is None:
        assert not {"test/psnr_baseline", "test/psnr_baseline_pca", "val/psnr_baseline"} & metrics.keys()
    else:
        assert metrics["test/psnr_baseline"] == metrics[f"test/psnr_baseline_{main}"]
        assert metrics["val/psnr_baseline"] == metrics[f"val/psnr_baseline_{main}"]
    if main == "bicubic":  # super-resolution: bicubic beats pixel replication on real images
        assert metrics["test/psnr_baseline_bicubic"] > metrics["test/psnr_baseline_identity"]
    if "callbacks.nll.max_images=16" in EXTRA.get(name, []):
        assert metrics["test/nll"] > 0
    if name.startswith("dsprites_"):
        assert all(0 <= metrics[f"test/{k}"] <= 1 for k in ("mig", "dci_disentanglement", "sap", "factorvae_score"))
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert {t for t in acc.Tags()["images"] if t.startswith("figures/")} == tags


def test_runner_jobs_follow_their_preset_with_the_variant_overrides():
    runner = load_runner()
    jobs = runner.train_jobs(None)
    names = [j.name for j in jobs]
    assert names.index("superres_mnist_x4_area") == names.index("superres_mnist") + 1
    x4 = jobs[names.index("superres_mnist_x4_area")]
    assert x4.args == ["experiment=superres_mnist", "corruption.downsample.factor=4"]
    assert set(runner.SUPERRES.values()) <= set(names)  # every super-resolution table row has a job
    only = [j.name for j in runner.train_jobs({"superres_mnist"})]  # a preset brings its variants along
    assert only == ["superres_mnist", "superres_mnist_x4_area", "superres_mnist_x2_bilinear",
                    "superres_mnist_x4_bilinear"]


@pytest.mark.slow
def test_runner_tiny_writes_results_from_metrics_json(tmp_path):
    out, runs = tmp_path / "RESULTS.md", tmp_path / "runs"
    proc = subprocess.run([sys.executable, str(RUNNER), "--tiny", "--only", "ae_conv_mnist", "superres_flowers_x4",
                           "--out", str(out), "--runs-dir", str(runs)], capture_output=True, text=True, cwd=REPO_ROOT)
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
    data = json.loads(out.with_suffix(".json").read_text())
    assert set(data["presets"]) == {"ae_conv_mnist", "superres_flowers_x4"}
    assert data["commit"] == data["machine"]["git_commit"]
    record = data["presets"]["ae_conv_mnist"]
    assert record["metrics"] == metrics  # exactly the run's metrics.json
    assert record["baseline"] == {"name": "pca", "psnr": metrics["test/psnr_baseline_pca"]}
    assert record["epochs"] == 1 and record["wall_s"] > 0 and record["state"] == "succeeded"
    assert record["command"] == "aelab-train experiment=ae_conv_mnist trainer=debug trainer.max_epochs=1"
    # the flowers preset is also tested on both portraits folders, each cell read from that eval's metrics.json
    section = text.split("## Cross-domain", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| superres_flowers_x4 | "))
    for folder in ("portraits_photos", "portraits_faces"):
        run = runs / f"cross_superres_flowers_x4_on_{folder}"
        cross = json.loads((run / "metrics.json").read_text())
        model, bicubic = cross["test/psnr"], cross["test/psnr_baseline_bicubic"]
        assert f"{model:.2f} / {bicubic:.2f} ({model - bicubic:+.2f})" in row
        assert str(runs / "portraits" / folder) in (run / "config.yaml").read_text()


def test_runner_rejects_unknown_names(tmp_path):
    proc = subprocess.run([sys.executable, str(RUNNER), "--tiny", "--only", "nope", "--runs-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2 and "--only nope: unknown" in proc.stderr
    assert not list(Path(tmp_path).iterdir())  # nothing ran


class FakeJob:
    def __init__(self, name: str, metrics: dict, preset: str | None = None, state: str = "succeeded",
                 terms: tuple[str, ...] = ("recon_loss", "kl_loss")):
        self.name, self.preset, self.metrics, self.state = name, preset or name, metrics, state
        self.terms = list(terms)  # the test terms its model declares (terms.json)
        self.epochs, self.wall_s, self.error, self.data, self.commit = 3, 12.0, None, "mnist", "abc"
        self.machine = {"cpu": "CPU", "cores": 2}
        self.command = ["aelab-train", f"experiment={self.preset}", "hydra.run.dir=/tmp/x"]


SR_METRICS = {"test/loss": 0.1, "test/psnr": 24.0, "test/ssim": 0.7, "test/psnr_baseline": 22.5,
              "test/psnr_baseline_bicubic": 22.5, "test/psnr_baseline_identity": 20.0, "test/psnr_baseline_pca": 21.0,
              "test/psnr_baseline_mean": 11.0, "test/ssim_baseline": 0.6}
VAE_METRICS = {"test/loss": 101.0, "test/psnr": 15.0, "test/ssim": 0.7, "test/psnr_baseline": 13.9,
               "test/psnr_baseline_pca": 13.9, "test/psnr_baseline_mean": 10.8, "test/nll": 97.5, "test/kl_loss": 24.0}
MACHINE = {"platform": "Linux", "cpu": "CPU", "cores": 2, "memory": "", "gpu": "none", "torch_threads": 2,
           "python": "3.11", "packages": {"torch": "2.0"}, "git_commit": "abc"}


def render(jobs) -> str:
    return load_report().results_markdown(jobs, [], MACHINE, False, dt.datetime(2026, 1, 1), {}, ["mnist"])


@pytest.mark.parametrize("present, main", [({"identity", "bicubic", "pca", "mean"}, "bicubic"),
                                           ({"identity", "pca", "mean"}, "identity"), ({"pca", "mean"}, "pca")])
def test_report_main_baseline_follows_the_package_rule(present, main):
    metrics = {f"test/psnr_baseline_{n}": float(i) for i, n in enumerate(sorted(present))}
    assert load_report().main_baseline(metrics) == (main, metrics[f"test/psnr_baseline_{main}"])


def test_report_shows_lesson_models_beside_their_reference():
    jobs = [FakeJob("superres_flowers", SR_METRICS),
            FakeJob("superres_flowers_x4_area", {**SR_METRICS, "test/psnr": 21.0}, preset="superres_flowers"),
            FakeJob("vae_binarized", {**VAE_METRICS, "test/nll": 91.0, "test/psnr_baseline_pca": 15.5,
                                      "test/nll_stderr": 0.812, "test/nll_samples": 1000.0, "test/nll_images": 1000.0}),
            FakeJob("superres_flowers_lesson", {**SR_METRICS, "test/psnr": 20.5}),
            FakeJob("superres_flowers_x4_lesson", {**SR_METRICS, "test/psnr": 18.2}),
            FakeJob("vae_binarized_lesson", VAE_METRICS)]
    report = load_report()
    assert [(a.name, b.name) for a, b in report.lesson_pairs(jobs)] == [
        ("superres_flowers_lesson", "superres_flowers"), ("superres_flowers_x4_lesson", "superres_flowers_x4_area"),
        ("vae_binarized_lesson", "vae_binarized")]
    lines = render(jobs).splitlines()
    start = lines.index("## Lesson models vs reference models (test split)")
    group = [line for line in lines[start:] if line.startswith("|")][2:]  # after the header rows
    assert group[0].startswith("| **superres_flowers_lesson** vs **superres_flowers** | test PSNR (dB) | 20.50 | "
                               "24.00 | 22.50 (bicubic) |")
    assert group[1].startswith("|  | test SSIM | 0.700 | 0.700 | 0.600 |")
    assert any(row.startswith("| **superres_flowers_x4_lesson** vs **superres_flowers_x4_area** | test PSNR (dB) | "
                              "18.20 | 21.00 |") for row in group)
    nll = next(row for row in group if "test NLL" in row)
    assert "| 97.50 | 91.00 |" in nll and "Burda et al., 2015" in nll
    # PCA's size follows each model's code: both baselines are shown when they differ
    assert any("lesson: 13.90 (pca); reference: 15.50 (pca)" in row for row in group)
    likelihood = lines[lines.index("## Likelihood (binarized MNIST, test NLL in nats per image)"):]
    assert "Importance Weighted Autoencoders" in likelihood[2] and "86.76" in likelihood[2]
    assert "| vae_binarized_lesson | 97.50 | – | 101.00 | kl_loss 24.00 |" in likelihood  # the terms it declares
    assert any(row.startswith("| vae_binarized | 91.00 ± 0.81 | 1000, 1,000 images |") for row in likelihood)


def test_report_reads_the_family_targets_and_the_samplers_from_the_rows():
    fid = lambda **f: {f"test/fid_{k}": v for k, v in f.items()}
    jobs = [FakeJob("vae_conv", fid(prior=400.0, gaussian=300.0, gmm=200.0)),
            FakeJob("rae_mnist", fid(gaussian=220.0, gmm=70.0)),
            FakeJob("wae_mnist", fid(prior=500.0, gaussian=450.0, gmm=420.0)),  # its mixture misses vae_conv's prior
            FakeJob("vqvae_mnist", {"test/psnr": 31.5, "test/perplexity": 50.0}),
            FakeJob("hvae_binarized", {"test/nll": 84.0, "test/nll_stderr": 0.8, "test/nll_samples": 1000.0,
                                       "test/nll_images": 1000.0}),
            FakeJob("vamp_binarized", {"test/nll": 85.0}),
            FakeJob("mae_fashion", {"test/probe_linear_100": 0.85}),
            FakeJob("mae_mnist", {"test/probe_linear_100": 0.94}),
            FakeJob("mae_mnist_long", {"test/probe_linear_100": 0.95})]
    jobs[1].wall_s = 1000.0  # over the 15 minutes
    lines = render(jobs).splitlines()
    row = lambda what: next(line for line in lines if line.startswith(f"| {what}"))
    assert row("binarized MNIST NLL").endswith("| hvae_binarized | 84.00 ± 0.80 (K=1000, 1,000 test images) | "
                                               "≤ 82.9 | missed: +1.10 nats |")
    assert row("VQ-VAE test PSNR").endswith("| 31.50 | ≥ 30 | met |")
    assert row("VQ-VAE codebook perplexity").endswith("| 50.00 | ≥ 64 | missed: -14.00 |")
    assert row("masked AE linear probe, 100 labels per class (Fashion").endswith("| 85.00 | ≥ 84 | met |")
    # the best of a preset and its longer recipe is scored; both are named with what was tried
    assert row("masked AE linear probe, 100 labels per class (MNIST").endswith(
        "| mae_mnist_long | 95.00 | ≥ 96 | missed: -1.00 |")
    assert row("RAE mixture-sampler FID").endswith("| 70.0 | < vae_conv's prior samples (400.0) | met |")
    assert row("WAE-MMD mixture-sampler FID").endswith("| missed: +20.0 |")
    assert row("every family's preset").endswith("| missed: rae_mnist 16.7 min |")
    # each missed target names its presets and what their headers say was tried
    tried = [line for line in lines if line.startswith("- ") and " — `" in line]
    assert [line.split(" — ")[0] for line in tried] == [
        "- binarized MNIST NLL", "- VQ-VAE codebook perplexity (test)",
        "- masked AE linear probe, 100 labels per class (MNIST, %)", "- WAE-MMD mixture-sampler FID",
        "- the 15-minute budget"]
    assert tried[0].split(" — ")[1].startswith("`hvae_binarized`: ") and "`vamp_binarized`: " in tried[0]
    assert tried[2].split(" — ")[1].startswith("`mae_mnist_long`: ") and ". `mae_mnist`: " in tried[2]
    assert tried[4].split(" — ")[1].startswith("`rae_mnist`: ")
    reading = next(line for line in lines if line.startswith("- **mnist**"))
    assert "lower FID than the single Gaussian in 3 of 3 runs (median Gaussian / mixture ratio 1.50)" in reading
    assert "best mixture FID (70.0, rae_mnist) lies below the best prior samples of a model with one (400.0, " \
           "vae_conv); 1 of 1 such runs beat that prior" in reading
    assert "the mixture beats that prior in 2 of 2 runs" in reading


def test_tried_lines_come_from_the_preset_header_only(tmp_path):
    load_runner()  # puts the checkout on sys.path, as the script does
    targets = importlib.import_module("experiments.targets")
    (tmp_path / "a.yaml").write_text("# @package _global_\n# Recipe: x.\n# Tried: width 64\n# Tried: 30 epochs\n"
                                     "defaults: []\n# Tried: a comment below the header is no attempt\n")
    (tmp_path / "b.yaml").write_text("# nothing tried\nepochs: 1\n")
    assert targets.tried("a", tmp_path) == ["width 64", "30 epochs"]
    assert targets.tried("b", tmp_path) == [] and targets.tried("missing", tmp_path) == []
    assert targets.tried_section([("NLL", ["a", "b"])], tmp_path) == [
        "What was tried for each missed target (the `# Tried:` lines of the preset's header, "
        "`conf/experiment/<preset>.yaml`):", "",
        "- NLL — `a`: width 64; 30 epochs. `b`: its header records no attempt.", ""]
    assert targets.tried_section([], tmp_path) == []


def test_report_codes_as_features_table_from_probe_metrics():
    probes = {}
    for i, budget in enumerate(("10", "100", "all")):
        for kind, model in (("linear", 0.70 + 0.1 * i), ("knn", 0.60 + 0.1 * i)):
            key = f"test/probe_{kind}_{budget}"
            probes.update({key: model, f"{key}_baseline_pca": 0.65 + 0.1 * i, f"{key}_baseline_pixels": 0.5})
    fashion = FakeJob("ae_conv_fashion", {**VAE_METRICS, **probes, "test/probe_linear_10": 0.6}, "ae_conv_mnist")
    fashion.data = "fashion_mnist"
    text = render([FakeJob("ae_conv_mnist", {**VAE_METRICS, **probes}), FakeJob("vae_conv", VAE_METRICS), fashion])
    section = text.split("## Codes as features (test accuracy, %)")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0] == ("| run | data | linear 10 | linear 100 | linear all | k-NN 10 | k-NN 100 | k-NN all | "
                       "beats PCA |")
    assert rows[1] == ("| ae_conv_mnist | mnist | 70.0 (65.0) | 80.0 (75.0) | 90.0 (85.0) | 60.0 (65.0) | "
                       "70.0 (75.0) | 80.0 (85.0) | mixed (3 of 6) |")
    assert rows[2].startswith("| ae_conv_fashion | fashion_mnist | 60.0 (65.0) |")
    assert rows[2].endswith("| mixed (2 of 6) |")
    # raw pixels once per dataset; a run without probe metrics has no row
    assert rows[3:] == ["| *raw pixels* | mnist | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | – |",
                        "| *raw pixels* | fashion_mnist | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | 50.0 | – |"]
    report = load_report()
    assert report.probe_row(FakeJob("x", {**probes, **{k: 0.99 for k in probes if k.count("_") == 2}})).endswith(
        "| yes (6 of 6) |")
    no_pca = {k: v for k, v in probes.items() if not k.endswith("_pca")}  # callbacks.probe.baselines=[pixels]
    assert report.probe_row(FakeJob("x", no_pca)).endswith("| 80.0 (–) | – |")
    assert "## Codes as features" not in render([FakeJob("vae_conv", VAE_METRICS)])

def test_runner_merge_carries_every_other_row_over_exactly(tmp_path):
    """--merge rewrites the rows of the jobs it was asked for and keeps the others' records as they were."""
    report = load_report()
    old_jobs = [FakeJob("ae_conv_mnist", VAE_METRICS), FakeJob("denoise_mnist", SR_METRICS),
                FakeJob("ae_conv_fashion", VAE_METRICS, preset="ae_conv_mnist")]
    transfer = [FakeJob("transfer_mnist_on_mnist", SR_METRICS, preset="denoise_mnist")]
    old = report.results_json(old_jobs, transfer, {**MACHINE, "git_commit": "old"}, False, dt.datetime(2026, 1, 1))
    # an earlier merge carried denoise_mnist over from another machine; the file predates per-row machines
    old["carried_over"] = {"jobs": ["denoise_mnist"], "written": "2025", "commit": "older",
                           "machine": {**MACHINE, "cpu": "Other CPU"}}
    for section in ("presets", "variants", "transfer"):
        for record in old[section].values():
            del record["machine"]
    # its sample_quality.json as recorded: a carried row has no run directory to read it from again
    old["presets"]["denoise_mnist"]["sample_quality"] = {"feature_space": {"name": "mnist-classifier-full-0123"}}
    out = tmp_path / "RESULTS.md"
    out.with_suffix(".json").write_text(json.dumps(old))
    # --report-only: nothing trains; the rerun preset (and its variant) is read back from an empty runs folder
    code = load_runner().main(["--only", "ae_conv_mnist", "--merge", "--report-only", "--runs-dir",
                               str(tmp_path / "runs"), "--out", str(out)])
    assert code == 1  # the rerun jobs did not succeed
    new = json.loads(out.with_suffix(".json").read_text())
    here = {"cpu": new["machine"]["cpu"], "cores": new["machine"]["cores"]}
    assert new["presets"]["denoise_mnist"] == {**old["presets"]["denoise_mnist"],
                                               "machine": {"cpu": "Other CPU", "cores": 2}}
    assert new["transfer"]["transfer_mnist_on_mnist"] == {**old["transfer"]["transfer_mnist_on_mnist"],
                                                          "machine": {"cpu": "CPU", "cores": 2}}
    assert new["presets"]["ae_conv_mnist"]["machine"] == here  # read back here
    assert new["presets"]["ae_conv_mnist"]["state"] == "not run"
    assert new["variants"]["ae_conv_fashion"]["state"] == "not run"  # a preset's variants are rerun with it
    assert new["carried_over"]["jobs"] == ["denoise_mnist", "transfer_mnist_on_mnist"]
    assert new["carried_over"]["commit"] == "old" and new["carried_over"]["written"] == "2026-01-01T00:00:00"
    text = out.read_text()
    assert "carried over unchanged from the RESULTS.json written 2026-01-01T00:00:00 at old" in text
    assert "- run on another machine (Other CPU, 2 logical CPUs), so their wall times do not compare with this " \
           "machine's: denoise_mnist\n" in text
    assert text.index("| ae_conv_mnist |") < text.index("| denoise_mnist |")  # run.py's order, not merge order
    row = next(line for line in text.splitlines() if line.startswith("| denoise_mnist |"))
    assert "| 24.00 |" in row and "22.50 (bicubic) | 1.50 |" in row  # the carried metrics, rendered as before


def test_runner_rewrite_keeps_every_record_and_renders_it_again(tmp_path):
    """--rewrite runs nothing: every row's record comes back as it was, under this code's report."""
    report = load_report()
    jobs = [FakeJob("ae_conv_mnist", VAE_METRICS), FakeJob("denoise_mnist", SR_METRICS)]
    transfer = [FakeJob("transfer_mnist_on_mnist", SR_METRICS, preset="denoise_mnist")]
    old = report.results_json(jobs, transfer, {**MACHINE, "git_commit": "old"}, False, dt.datetime(2026, 1, 1))
    out = tmp_path / "RESULTS.md"
    out.with_suffix(".json").write_text(json.dumps(old))
    assert load_runner().main(["--rewrite", "--out", str(out)]) == 0
    new = json.loads(out.with_suffix(".json").read_text())
    for section in ("presets", "variants", "transfer"):
        assert new[section] == old[section]
    assert new["carried_over"]["jobs"] == ["ae_conv_mnist", "denoise_mnist", "transfer_mnist_on_mnist"]
    text = out.read_text()
    assert "- every row carried over unchanged from the RESULTS.json written 2026-01-01T00:00:00 at old, " \
           "rewritten by this commit's report code (`run.py --rewrite`)" in text
    assert "the other rows were run for this file" not in text
    assert not (tmp_path / "runs").exists()
    proc = subprocess.run([sys.executable, str(RUNNER), "--rewrite", "--only", "ae_conv_mnist"],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2 and "--rewrite runs nothing" in proc.stderr


@pytest.mark.parametrize("extra", [["--merge"], ["--merge", "--tiny", "--only", "ae_conv_mnist"]])
def test_runner_merge_needs_only_and_full_runs(extra, tmp_path):
    proc = subprocess.run([sys.executable, str(RUNNER), *extra, "--runs-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 2 and "--merge needs --only" in proc.stderr
