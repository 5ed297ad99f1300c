"""capture_step (aelab.capture): where a graph cannot be used the run trains eagerly, says why once (true) or quietly
(auto), and gives the eager run's numbers; on CUDA the captured step trains like the eager one and a killed captured
run resumes to the uninterrupted run's numbers (both skipped without a GPU)."""

from __future__ import annotations

import json
import logging

import lightning as L
import pytest
import torch

from aelab.capture import CapturedLoss
from aelab.models import AdversarialAutoencoder, ConvAutoencoder, DenseVAE

SHAPE = (1, 28, 28)


def test_capabilities_say_which_models_a_graph_can_hold():
    assert ConvAutoencoder(SHAPE, SHAPE).capabilities.capturable
    assert DenseVAE(SHAPE, SHAPE).capabilities.capturable
    assert not DenseVAE(SHAPE, SHAPE, kl_warmup_steps=100).capabilities.capturable  # the step number is in the loss
    assert not AdversarialAutoencoder(SHAPE, SHAPE).capabilities.capturable  # owns a two-optimizer step


def test_without_cuda_capture_falls_back_to_the_eager_step_with_one_warning(run_train, caplog):
    eager = json.loads((run_train(["capture_step=false"], name="eager") / "metrics.json").read_text())
    with caplog.at_level(logging.WARNING, logger="aelab"):
        captured = json.loads((run_train(["capture_step=true"], name="captured") / "metrics.json").read_text())
    warnings = [r.getMessage() for r in caplog.records if "capture_step" in r.getMessage()]
    assert warnings == ["capture_step=true: training eagerly, because it needs CUDA and the run is on cpu"]
    assert captured == eager


def test_auto_trains_eagerly_without_a_warning_where_no_graph_can_be_used(run_train, caplog):
    eager = json.loads((run_train(["capture_step=false"], name="eager") / "metrics.json").read_text())
    with caplog.at_level(logging.INFO, logger="aelab"):
        auto = json.loads((run_train(["capture_step=auto"], name="auto") / "metrics.json").read_text())
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "capture_step" in r.getMessage()]
    assert said == [(logging.INFO, "capture_step=auto: training eagerly, because it needs CUDA and the run is on cpu")]
    assert auto == eager


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("experiment", ["ae_conv_mnist", "denoise_mnist"])
def test_a_captured_step_trains_like_the_eager_one(data_dir, experiment):
    from conftest import compose_cfg

    from aelab.build import build_parts
    from aelab.module import AutoencoderModule

    def fit(capture: bool):
        cfg = compose_cfg([f"experiment={experiment}", "data.batch_size=64"])
        L.seed_everything(0)
        parts = build_parts(cfg)
        module = AutoencoderModule(parts.model, parts.corruption, seed=0, capture_step=capture)
        trainer = L.Trainer(accelerator="gpu", devices=1, max_epochs=1, limit_train_batches=30, limit_val_batches=4,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, deterministic=False)
        trainer.fit(module, datamodule=parts.datamodule)
        return module, float(trainer.callback_metrics["val/loss"])

    captured, captured_loss = fit(True)
    _, eager_loss = fit(False)
    assert isinstance(captured._captured, CapturedLoss) and captured._captured.graphed is not None
    assert captured_loss == pytest.approx(eager_loss, rel=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_killed_captured_run_resumes_to_the_uninterrupted_runs_metrics(tmp_path):
    """test_reliability's kill-and-resume check with the step captured on the GPU: the graph is recorded again after
    the resume, and the numbers are those of the run that was never stopped."""
    from test_reliability import SMALL, killed_and_resumed

    # on a GPU an epoch of 422 batches takes about a second: kill soon after the first, with epochs left to run
    args = [*SMALL, "trainer.accelerator=gpu", "capture_step=true", "trainer.max_epochs=4"]
    uninterrupted, resumed = killed_and_resumed(tmp_path, args, pause=0.3)
    differ = {k: (v, resumed.get(k)) for k, v in uninterrupted.items() if resumed.get(k) != v}
    assert not differ, f"resumed != uninterrupted: {differ}"
