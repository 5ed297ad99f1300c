"""Short real trainings on MNIST for every model family; what they log is read back from the event files."""

import json
from types import SimpleNamespace

import pytest
import torch
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import FAST, compose_cfg, read_events

COMMON = ["train/loss", "train/recon_loss", "train/psnr", "train/ssim", "val/loss", "val/recon_loss", "val/psnr",
          "val/ssim", "test/loss", "test/recon_loss", "test/psnr", "test/ssim"]
KL = ["train/kl_loss", "val/kl_loss", "test/kl_loss"]


@pytest.mark.parametrize("overrides,vae", [
    (["model=ae_dense"], False),
    (["model=ae_conv"], False),
    (["model=vae_dense"], True),
    (["model=vae_conv"], True),
    (["model=ae_conv", "corruption=downsample"], False),
    (["model=vae_conv", "corruption=[gaussian_noise,downsample]", "corruption.downsample.factor=4"], True),
], ids=["ae_dense", "ae_conv", "vae_dense", "vae_conv", "superres_x2", "vae_noise_x4"])
def test_model_family_trains_and_logs_every_tag(run_train, overrides, vae):
    run = run_train(overrides)
    events = read_events(run)
    scalars = set(events.Tags()["scalars"])
    expected = COMMON + (KL if vae else [])
    assert set(expected) <= scalars, sorted(set(expected) - scalars)
    if not vae:
        assert not any(t.endswith("kl_loss") for t in scalars)
    assert "val/reconstructions" in events.Tags()["images"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(t for t in expected if t.startswith("test/")) <= metrics.keys()
    assert 0 < metrics["test/psnr"] < 60 and -1 <= metrics["test/ssim"] <= 1


def test_hparams_row_names_choices_and_metrics(run_train):
    run = run_train(["model=vae_dense", "model.beta=2.0", "corruption=gaussian_noise"])
    events = read_events(run)
    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = {k: v for k, v in session.hparams.items()}
    assert hp["model"].string_value == "vae_dense" and hp["model.beta"].number_value == 2.0
    assert hp["corruption"].string_value == "gaussian_noise"
    # an experiment summary (the column list) with this run's overrides first and the metrics declared
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {h.name for h in experiment.hparam_infos if h.differs} == {"trainer", "model", "model.beta", "corruption"}
    assert "val/loss" in [m.name.tag for m in experiment.metric_infos]
    assert {"test/loss", "test/psnr", "val/loss"} <= set(events.Tags()["scalars"])


SMALL_VAE = ["model=vae_dense", "model.hidden=[64]", "corruption=gaussian_noise"]  # sampling noise + corruption


def test_eval_reproduces_the_test_metrics_of_training(run_train):
    run = run_train(SMALL_VAE, name="train")
    trained = json.loads((run / "metrics.json").read_text())
    ckpt = run / "checkpoints" / "best.ckpt"
    out = run_train([f"ckpt_path={ckpt}"], name="eval", config_name="eval")
    evaluated = json.loads((out / "metrics.json").read_text())
    for key in ("test/loss", "test/psnr", "test/ssim", "test/kl_loss"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-6, abs=1e-6), key


def test_channels_last_holds_weights_and_batches_in_nhwc_and_eval_keeps_it(run_train, tmp_path):
    """channels_last=true: the conv weights and every batch are NHWC, the checkpoint says so, and aelab-eval
    evaluates in the same layout and reproduces training's test metrics exactly."""
    from omegaconf import open_dict

    from aelab.build import build_parts
    from aelab.evaluate import evaluate
    from aelab.module import AutoencoderModule

    cfg = compose_cfg(["trainer=debug"])
    parts = build_parts(cfg)
    module = AutoencoderModule(parts.model, parts.corruption, channels_last=True)
    convs = [m.weight for m in module.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    batch = module.make_batch((images, torch.zeros(4, dtype=torch.long)), "val")
    assert batch.target.is_contiguous(memory_format=torch.channels_last)

    run = run_train(["channels_last=true"], name="train")
    trained = json.loads((run / "metrics.json").read_text())
    ckpt = run / "checkpoints" / "best.ckpt"
    assert torch.load(ckpt, weights_only=False)["aelab"]["channels_last"] is True
    (tmp_path / "eval").mkdir()
    cfg = compose_cfg([f"ckpt_path={ckpt}", *FAST], config_name="eval", output_dir=tmp_path / "eval")
    with open_dict(cfg):
        del cfg["hydra"]
    result = evaluate(cfg, SimpleNamespace(path=tmp_path / "eval"))
    assert result.module.channels_last
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in result.module.model.modules() if isinstance(m, torch.nn.Conv2d))
    for key in ("test/loss", "test/psnr", "test/ssim"):
        assert result.metrics[key] == trained[key], key


def test_eval_on_other_data_than_training(run_train):
    run = run_train(["corruption=gaussian_noise"], name="train")
    own = json.loads((run / "metrics.json").read_text())
    out = run_train([f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "data=fashion_mnist"], name="eval",
                    config_name="eval")
    other = json.loads((out / "metrics.json").read_text())
    assert other["test/loss"] != pytest.approx(own["test/loss"])
    assert "data" in (out / "config.yaml").read_text() and "FashionMNIST" in (out / "config.yaml").read_text()


def test_seeded_run_is_repeatable(run_train):
    a = json.loads((run_train(SMALL_VAE, name="a") / "metrics.json").read_text())
    b = json.loads((run_train(SMALL_VAE, name="b") / "metrics.json").read_text())
    assert a == b and len(a) > 10
