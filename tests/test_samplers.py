"""Ex-post samplers, the feature-network errors and the SampleQuality callback in a short run."""

import json

import pytest
import torch

from aelab.errors import ConfigError
from aelab.samplers import GaussianSampler, MixtureSampler, make_samplers


def test_gaussian_sampler_recovers_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[2.0, 0.8], [0.8, 1.0]])
    codes = torch.randn(20000, 2, generator=g) @ torch.linalg.cholesky(cov).T + torch.tensor([1.0, -3.0])
    z = GaussianSampler().fit(codes).sample(20000, torch.Generator().manual_seed(1))
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -3.0]), atol=0.05)
    assert torch.allclose(torch.cov(z.T), cov, atol=0.08)


def test_mixture_sampler_finds_separated_modes_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-10.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    codes = centres.repeat_interleave(1000, 0) + 0.5 * torch.randn(3000, 2, generator=g)
    sampler = MixtureSampler(components=3, seed=0).fit(codes)
    z = sampler.sample(3000, torch.Generator().manual_seed(2))
    nearest = torch.cdist(z, centres).argmin(1)
    assert torch.bincount(nearest, minlength=3).min() > 800  # every mode drawn about a third of the time
    assert torch.cdist(z, centres).min(1).values.max() < 4  # nothing between the modes
    assert torch.equal(z, sampler.sample(3000, torch.Generator().manual_seed(2)))


def test_mixture_sampler_draws_a_large_code_without_a_covariance_per_sample():
    """A VQ-VAE's flat code map has 1568 numbers: gathering each sample's Cholesky factor would take
    4000 x 1568^2 doubles (79 GB); drawn per component, each component's samples have its mean and scale."""
    d = 1568
    sampler = MixtureSampler(components=2)
    sampler.weights = torch.tensor([0.5, 0.5], dtype=torch.float64)
    sampler.means = torch.stack([torch.full((d,), -5.0), torch.full((d,), 5.0)]).double()
    sampler.chols = torch.stack([torch.eye(d), 2 * torch.eye(d)]).double()
    sampler.device, sampler.dtype = torch.device("cpu"), torch.float32
    z = sampler.sample(4000, torch.Generator().manual_seed(0))
    assert z.shape == (4000, d) and z.dtype == torch.float32
    low = z.mean(1) < 0  # the two modes lie 10 apart in every coordinate; each sample is near one
    assert 1800 < int(low.sum()) < 2200
    assert z[low].mean().item() == pytest.approx(-5.0, abs=0.01) and z[low].std().item() == pytest.approx(1, abs=0.01)
    assert z[~low].mean().item() == pytest.approx(5.0, abs=0.02) and z[~low].std().item() == pytest.approx(2, abs=0.01)


def test_samplers_follow_the_model_capabilities():
    from aelab.models.ae_conv import ConvAutoencoder
    from aelab.models.vae_conv import ConvVAE

    ae, vae = ConvAutoencoder((1, 28, 28), (1, 28, 28), 10), ConvVAE((1, 28, 28), (1, 28, 28), 10)
    assert list(make_samplers(["prior", "gaussian", "gmm"], ae)) == ["gaussian", "gmm"]
    assert list(make_samplers(["prior", "gaussian", "gmm"], vae)) == ["prior", "gaussian", "gmm"]
    with pytest.raises(ConfigError, match=r"samplers has \['flow'\]; allowed: \['prior', 'gaussian', 'gmm'\]"):
        make_samplers(["flow"], vae)


def test_inception_features_without_the_weights_file_is_one_clear_line(tmp_path):
    from aelab.callbacks import SampleQuality

    with pytest.raises(ConfigError) as e:
        SampleQuality(features="inception", inception_weights=str(tmp_path / "missing.pth"))
    assert "inception_weights=" in str(e.value) and "missing.pth" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("model", ["vae_conv", "ae_conv"])
def test_a_short_run_logs_sample_quality_for_every_sampler(run_train, model):
    # ae_conv's samplers are fitted under a fit_cost so small that it sets their count: 2 x components codes
    capped = ["callbacks.sample_quality.fit_cost=1"] if model == "ae_conv" else []
    run = run_train([f"model={model}", *capped], name=model)
    metrics = json.loads((run / "metrics.json").read_text())
    sets = ["prior", "gaussian", "gmm", "recon", "floor"] if model == "vae_conv" else ["gaussian", "gmm", "recon",
                                                                                        "floor"]
    for s in sets:
        for m in ("fid", "kid", "precision", "recall", "density", "coverage"):
            assert f"test/{m}_{s}" in metrics, (m, s)
    assert ("test/fid_prior" in metrics) == (model == "vae_conv")
    record = json.loads((run / "sample_quality.json").read_text())
    assert record["feature_space"]["test_accuracy"] == pytest.approx(metrics["test/feature_accuracy"])
    assert record["feature_space"]["recipe"]["max_images"] == 2000  # a limited test measures in the smoke space
    assert record["fit_images"] == (20 if model == "ae_conv" else record["images_per_set"] * 2)
    # one batch of an untrained-ish model: its samples are far from the floor, the floor's precision is high
    assert metrics["test/fid_floor"] < metrics["test/fid_recon"] and metrics["test/precision_floor"] > 0.8


def test_results_report_has_a_sample_quality_table_read_from_the_run(tmp_path):
    import datetime as dt

    from test_experiments import MACHINE, FakeJob, load_report

    report = load_report()
    metrics = {"test/loss": 1.0, "test/psnr": 20.0, "test/fid_floor": 1.25, "test/fid_recon": 7.5,
               "test/precision_recon": 0.9, "test/recall_recon": 0.8, "test/fid_gmm": 12.0,
               "test/precision_gmm": 0.7, "test/recall_gmm": 0.6, "test/feature_accuracy": 0.991}
    job = FakeJob("vae_conv", metrics)
    job.run_dir = tmp_path
    (tmp_path / "sample_quality.json").write_text(json.dumps({"feature_space": {"name": "mnist-classifier-x"}}))
    text = report.results_markdown([job], [], MACHINE, False, dt.datetime(2026, 1, 1), {}, ["mnist"])
    row = next(line for line in text.splitlines() if line.startswith("| vae_conv | mnist | mnist-classifier"))
    assert row == ("| vae_conv | mnist | mnist-classifier-x (99.1) | 1.25 | 7.50 (90.0 / 80.0) | – | – | – | "
                   "12.00 (70.0 / 60.0) |")
    assert report.job_record(job)["sample_quality"]["feature_space"]["name"] == "mnist-classifier-x"
