"""The probe callback on a real run: every probe tag, for the code and both baselines, with values in [0, 1]."""

from __future__ import annotations

import json

PROBES = {f"test/probe_{kind}_{budget}{suffix}" for kind in ("linear", "knn") for budget in ("10", "100", "all")
          for suffix in ("", "_baseline_pca", "_baseline_pixels")}


def test_a_short_run_logs_every_probe_for_code_pca_and_pixels(run_train):
    metrics = json.loads((run_train(["model=ae_dense", "model.latent_dim=16"]) / "metrics.json").read_text())
    assert PROBES <= metrics.keys()
    assert all(0 <= metrics[k] <= 1 for k in PROBES)
    assert metrics["test/probe_knn_all_baseline_pixels"] > 0.5  # pixels of a few hundred MNIST digits: far above 0.1


def test_models_without_a_code_and_conditional_models_are_not_probed(run_train):
    no_code = json.loads((run_train(["experiment=superres_mnist"], name="sr") / "metrics.json").read_text())
    conditional = json.loads((run_train(["model=cvae"], name="cvae") / "metrics.json").read_text())
    assert not [k for k in {**no_code, **conditional} if "probe" in k]


def test_the_probe_can_be_switched_off(run_train):
    metrics = json.loads((run_train(["callbacks.probe=null"]) / "metrics.json").read_text())
    assert not [k for k in metrics if "probe" in k]
