"""What a researcher reads in TensorBoard: HPARAMS through TensorBoard's own server and data API, epoch-level
training scalars, the per-pixel measures every model shares, readable images under distinct tags."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensorboard.plugins.hparams import api_pb2, metadata

from aelab.callbacks.images import display_scale, labelled_grid
from aelab.module import metrics_stride, pixel_errors
from conftest import read_events, run_app_inprocess

BIN = Path(sys.executable).parent
QUICK = ["callbacks=none", "test=false"]  # no figures, grids or checkpoints: training logs only
LRS = {"0.001": "STATUS_SUCCESS", "0.003": "STATUS_SUCCESS", "-1": "STATUS_FAILURE"}  # aelab refuses lr=-1
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def scalars(events, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def hparams_content(run: Path) -> dict:
    content = read_events(run).PluginTagToContent("hparams")
    return {
        "experiment": metadata.parse_experiment_plugin_data(content["_hparams_/experiment"]),
        "start": metadata.parse_session_start_info_plugin_data(content["_hparams_/session_start_info"]),
        "end": metadata.parse_session_end_info_plugin_data(content["_hparams_/session_end_info"]),
    }


# --- HPARAMS through TensorBoard's own server --------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, route: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{route}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get(port: int, route: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=30) as response:
        return json.loads(response.read())


def session_groups(port: int) -> dict:
    return post(port, "/data/plugin/hparams/session_groups",
                {"experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": [], "startIndex": 0,
                 "sliceSize": 100})


@pytest.fixture
def tensorboard_server():
    """start(logdir) -> port of TensorBoard's own server on 127.0.0.1, stopped after the test."""
    procs = []

    def start(logdir: Path) -> int:
        port = free_port()
        proc = subprocess.Popen([str(BIN / "tensorboard"), "--logdir", str(logdir), "--host", "127.0.0.1",
                                 "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"tensorboard exited: {proc.stderr.read()[-2000:]}"
            try:
                get(port, "/data/plugins_listing")
                return port
            except OSError:
                assert time.time() < deadline, "tensorboard did not answer within 120 s"
                time.sleep(0.5)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_sweep_in_hparams_swept_keys_first_named_runs_true_status(tmp_path, tensorboard_server):
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [str(BIN / "aelab-train"), "-m", "trainer=debug", "model=ae_conv,vae_conv", "optimizer.lr=1e-3,3e-3,-1",
         "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
         "callbacks=none", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=1800, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if (p / "status.json").is_file())
    assert len(jobs) == 6
    # every job writes the same experiment summary: TensorBoard takes the column list from any one of them
    experiments = {hparams_content(job)["experiment"].SerializeToString(deterministic=True) for job in jobs}
    assert len(experiments) == 1

    port = tensorboard_server(sweep)
    deadline = time.time() + 120
    while True:  # the server loads the event files in the background
        groups = session_groups(port)
        if groups.get("totalSize") == 6 and all(g["sessions"][0].get("status") for g in groups["sessionGroups"]):
            break
        assert time.time() < deadline, f"TensorBoard did not list the 6 jobs within 120 s: {groups}"
        time.sleep(1)
    experiment = post(port, "/data/plugin/hparams/experiment", {"experimentName": ""})

    names = [h["name"] for h in experiment["hparamInfos"]]
    assert names[:2] == ["model", "optimizer.lr"]  # the swept keys first: the five ticked columns include them
    assert [h.get("differs", False) for h in experiment["hparamInfos"]][:3] == [True, True, False]
    assert {"data", "corruption", "data.batch_size", "seed"} <= set(names)
    lr_info = experiment["hparamInfos"][1]
    assert lr_info["type"] == "DATA_TYPE_FLOAT64" and sorted(lr_info["domainDiscrete"]) == [-1, 0.001, 0.003]
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics[0] == "val/loss" and {"test/loss", "test/bce", "test/psnr", "test/ssim", "test/kl_loss"} <= set(
        metrics)
    assert "epoch" not in metrics and not any(m.endswith("_step") for m in metrics)

    expected = {f"model={m},optimizer.lr={lr}": status for m in ("ae_conv", "vae_conv") for lr, status in LRS.items()}
    seen = {}
    for group in groups["sessionGroups"]:
        label = group["name"].rsplit(" (", 1)[0]  # "model=vae_conv,optimizer.lr=0.003 (<hash of all values>)"
        (session,) = group["sessions"]
        seen[label] = session["status"]
        hp = group["hparams"]
        assert hp["model"] == label.split(",")[0].split("=")[1] and hp["optimizer.lr"] == float(label.split("=")[-1])
        assert hp["model.batch_norm"] is (hp["model"] == "ae_conv")  # booleans as booleans, not 1.0000
        assert hp["data.batch_size"] == 128
        values = {m["name"]["tag"]: m["value"] for m in group.get("metricValues", [])}
        if session["status"] == "STATUS_SUCCESS":
            assert {"val/loss", "test/loss", "test/bce", "test/psnr"} <= values.keys()
            assert ("test/kl_loss" in values) == (hp["model"] == "vae_conv")
    assert seen == expected

    layout = get(port, "/data/plugin/custom_scalars/layout")
    charts = [c["title"] for cat in layout["category"] for c in cat["chart"]]
    assert any(c.startswith("loss") for c in charts) and any(c.startswith("bce per pixel") for c in charts)


def test_job_failing_before_training_is_listed_failed_with_its_values(tmp_path):
    run = tmp_path / "bad"
    with pytest.raises(SystemExit):
        run_app_inprocess(["trainer=debug", "data.batch_size=0"], run)
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    content = hparams_content(run)
    assert content["end"].status == api_pb2.STATUS_FAILURE
    hp = content["start"].hparams
    assert hp["data.batch_size"].number_value == 0 and hp["model"].string_value == "ae_conv"
    assert content["start"].group_name.startswith("trainer=debug,data.batch_size=0 (")


def test_successful_run_ends_its_session_after_training(run_train):
    run = run_train(["model=vae_dense", "model.beta=2.0", *QUICK])
    content = hparams_content(run)
    assert content["end"].status == api_pb2.STATUS_SUCCESS
    assert content["end"].end_time_secs >= content["start"].start_time_secs
    hp = content["start"].hparams
    assert hp["model.beta"].number_value == 2.0 and hp["corruption"].string_value == "none"
    assert "model.beta" in [h.name for h in content["experiment"].hparam_infos if h.differs]  # an override of this run


def test_interrupted_run_is_left_open_until_resumed(tmp_path, monkeypatch):
    """TensorBoard 2.21 has no "aborted" status and keeps the first end a run writes: an interrupted run writes no
    end ("Unknown", as a killed run), so the run that resumes it records how it ended."""
    import signal

    from omegaconf import open_dict

    from aelab.module import AutoencoderModule
    from aelab.runs import run_app
    from aelab.train import resume_config, train
    from conftest import compose_cfg

    step = AutoencoderModule.training_step

    def interrupted(self, raw, batch_idx):
        if self.current_epoch == 1 and batch_idx == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` would: run_app turns it into a clean stop
        return step(self, raw, batch_idx)

    monkeypatch.setattr(AutoencoderModule, "training_step", interrupted)
    run = tmp_path / "stopped"
    no_figures = ["callbacks.latent_scatter=null", "callbacks.latent_noise=null", "callbacks.baselines=null"]
    with pytest.raises(SystemExit):
        run_app_inprocess(["trainer=debug", "trainer.max_epochs=2", "test=false", *no_figures], run)
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    content = read_events(run).PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in content and "_hparams_/session_end_info" not in content

    monkeypatch.setattr(AutoencoderModule, "training_step", step)
    cfg = compose_cfg([f"resume={run}"], output_dir=run)  # as `aelab-train resume=DIR` runs it
    with open_dict(cfg):
        del cfg["hydra"]
    run_app(train, cfg, "aelab-train", prepare=resume_config)
    assert json.loads((run / "status.json").read_text())["state"] == "succeeded"
    assert hparams_content(run)["end"].status == api_pb2.STATUS_SUCCESS


# --- training scalars ---------------------------------------------------------------------------------------------
def test_five_batch_run_has_epoch_means_whatever_log_every_n_steps(run_train):
    run = run_train(["model=vae_dense", "trainer.log_every_n_steps=50", "trainer.max_epochs=2", *QUICK])
    events = read_events(run)
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/recon_loss", "train/kl_loss"} <= tags
    assert not any(t.endswith("_step") for t in tags)  # Lightning wrote no step: 10 steps, every 50th
    train, val = scalars(events, "train/loss"), scalars(events, "val/loss")
    assert len(train) == 2 and [s for s, _ in train] == [s for s, _ in val]  # one point per epoch, beside val/loss


def test_epoch_mean_is_the_mean_of_every_step(run_train):
    run = run_train(["trainer.log_every_n_steps=1", "trainer.max_epochs=2", *QUICK])  # 5 batches of 128
    events = read_events(run)
    steps = scalars(events, "train/loss_step")
    assert [s for s, _ in steps] == list(range(10))
    for epoch, (step, mean) in enumerate(scalars(events, "train/loss")):
        per_step = [v for s, v in steps if 5 * epoch <= s < 5 * (epoch + 1)]
        assert step == 5 * epoch + 4 and mean == pytest.approx(np.mean(per_step), rel=1e-5)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train/loss"] == pytest.approx(scalars(events, "train/loss")[-1][1], rel=1e-6)


def test_training_image_metrics_are_sampled_across_the_epoch(run_train, monkeypatch):
    from aelab.module import AutoencoderModule

    assert metrics_stride(20, 50) == 6 and metrics_stride(422, 50) == 50 and metrics_stride(3, 50) == 1
    sampled = []
    original = AutoencoderModule._log_image_metrics

    def spy(self, stage, terms, batch, n):
        if stage == "train":
            sampled.append(self.global_step)
        return original(self, stage, terms, batch, n)

    monkeypatch.setattr(AutoencoderModule, "_log_image_metrics", spy)
    run = run_train(["trainer.limit_train_batches=12", "train_metrics_every=50", *QUICK])
    assert sampled == [3, 7, 11]  # 3 per epoch, after updates, never batch 0 alone
    assert {"train/psnr", "train/ssim", "train/bce", "train/mse"} <= set(read_events(run).Tags()["scalars"])


# --- measures shared by every model ------------------------------------------------------------------------------
def test_pixel_errors_are_bce_and_mse_per_pixel():
    gen = torch.Generator().manual_seed(0)
    output, target = torch.rand(4, 1, 8, 8, generator=gen), torch.rand(4, 1, 8, 8, generator=gen)
    errors = pixel_errors(output, target)
    assert errors["bce"] == pytest.approx(F.binary_cross_entropy(output, target).item(), rel=1e-6)
    assert errors["mse"] == pytest.approx(F.mse_loss(output, target).item(), rel=1e-6)
    saturated = pixel_errors(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]))["bce"]
    assert saturated.item() == pytest.approx(100.0)  # finite, as torch clamps it


@pytest.mark.parametrize("model", ["ae_conv", "vae_conv"])
def test_every_model_logs_bce_and_mse_per_pixel(run_train, model):
    run = run_train([f"model={model}", "callbacks=none"])
    events = read_events(run)
    tags = set(events.Tags()["scalars"])
    assert {f"{stage}/{m}" for stage in ("train", "val", "test") for m in ("bce", "mse")} <= tags
    val_bce, val_mse = scalars(events, "val/bce")[-1][1], scalars(events, "val/mse")[-1][1]
    assert 0 < val_mse < 1 and val_bce > 0
    if model == "ae_conv":  # its own loss is the mean BCE per pixel: the same number
        assert val_bce == pytest.approx(scalars(events, "val/recon_loss")[-1][1], rel=1e-3)
    else:  # its loss is per image (nats), hundreds of times the per-pixel BCE
        assert scalars(events, "val/recon_loss")[-1][1] > 100 * val_bce


# --- images --------------------------------------------------------------------------------------------------------
def test_labelled_grid_enlarges_small_images_and_labels_rows():
    rows = [torch.zeros(8, 1, 28, 28), torch.ones(8, 1, 28, 28), torch.full((8, 1, 28, 28), 0.5)]
    assert display_scale((1, 28, 28)) == 4 and display_scale((3, 64, 64)) == 2 and display_scale((3, 256, 256)) == 1
    grid = labelled_grid(rows, ["input", "output", "target"], display_scale((1, 28, 28)))
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    assert grid.shape[0] >= 3 * 112 and grid.shape[1] >= 8 * 112
    label_area = grid[:, : grid.shape[1] - 8 * 116]
    assert (label_area < 128).any()  # the row labels are drawn left of the images


def test_reconstruction_grids_and_test_figures_have_their_own_tags(run_train):
    run = run_train(["model=vae_dense"])
    events = read_events(run)
    images = set(events.Tags()["images"])
    for stage in ("val", "test"):
        image = events.Images(f"{stage}/reconstructions")[-1]
        assert image.width >= 8 * 112 and image.height >= 3 * 112  # MNIST enlarged 4x, labels beside
    figure_tags = {t for t in images if t.startswith("figures/")}
    assert figure_tags and {f"test/{t}" for t in figure_tags} <= images
    for tag in figure_tags:  # one render at the validation end, one at the test end: neither replaces the other
        assert len(events.Images(tag)) == 1 and len(events.Images(f"test/{tag}")) == 1
