"""Models declare their loss terms and aelab's shared code reads that declaration everywhere: a model defined outside
src/ (examples/own_model's two-layer LadderVAE, trained from the user's --config-dir, and a model in this file) gets
each term logged under train/, val/ and test/, reduced as declared, in HPARAMS, CUSTOM SCALARS, metrics.json and
aelab-compare, trains eagerly and with capture_step (its CPU fallback) to the same numbers, and has its per-step
state updated after every optimizer step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR, FAST, compose_cfg, read_events
from omegaconf import OmegaConf, open_dict
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import metadata
from torch import nn

from aelab.compare import compare
from aelab.config import REPO_ROOT
from aelab.errors import ConfigError
from aelab.models import Autoencoder, Batch, LossTerms, Term
from aelab.models.contract import check_terms
from aelab.runs import RunDir
from aelab.terms import read_terms
from aelab.train import train

BIN = Path(sys.executable).parent
EXAMPLE = REPO_ROOT / "examples" / "own_model"
LADDER_TERMS = ("recon_loss", "kl_1", "kl_2", "z2_drift")
TRAIN_BATCHES = 5  # trainer=debug


def hparams_metrics(run: Path) -> list[str]:
    content = read_events(run).PluginTagToContent("hparams")
    experiment = metadata.parse_experiment_plugin_data(content["_hparams_/experiment"])
    return [m.name.tag for m in experiment.metric_infos]


def layout_regexes(run: Path) -> list[str]:
    events = read_events(run)
    (tag,) = [t for t in events.Tags()["tensors"] if t.startswith("custom_scalars")]
    layout = layout_pb2.Layout.FromString(events.Tensors(tag)[0].tensor_proto.string_val[0])
    return [r for cat in layout.category for chart in cat.chart for r in chart.multiline.tag]


# --- examples/own_model's LadderVAE, from the user's --config-dir, eager and captured -----------------------------
@pytest.fixture(scope="module")
def ladder_sweep(tmp_path_factory) -> Path:
    """`aelab-train -m --config-dir examples/own_model/conf model=ladder capture_step=false,true` (a few batches):
    the CLI a user runs, with mypkg importable through PYTHONPATH."""
    work = tmp_path_factory.mktemp("ladder")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(EXAMPLE), PYTHONDONTWRITEBYTECODE="1", AELAB_DATA_DIR=str(DATA_DIR),
               AELAB_CACHE_DIR=str(work / "cache"), AELAB_OUTPUT_DIR=str(work / "outputs"))
    done = subprocess.run([str(BIN / "aelab-train"), "-m", "--config-dir", str(EXAMPLE / "conf"), "model=ladder",
                           "trainer=debug", "capture_step=false,true", "callbacks.probe=null",
                           f"hydra.sweep.dir={work / 'sweep'}"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "capture_step=true: training eagerly, because it needs CUDA" in done.stdout + done.stderr
    for job in ("0", "1"):
        status = json.loads((work / "sweep" / job / "status.json").read_text())
        assert status["state"] == "succeeded", status
    return work / "sweep"


def test_ladder_terms_reach_metrics_tensorboard_hparams_and_custom_scalars(ladder_sweep):
    for job in (ladder_sweep / "0", ladder_sweep / "1"):
        metrics = json.loads((job / "metrics.json").read_text())
        expected = {f"{stage}/{name}" for stage in ("train", "val", "test") for name in LADDER_TERMS}
        assert expected <= metrics.keys()
        assert expected <= set(read_events(job).Tags()["scalars"])
        assert {f"test/{name}" for name in LADDER_TERMS} <= set(hparams_metrics(job))
        regexes = layout_regexes(job)
        for name in LADDER_TERMS:
            assert rf"^(train|val)/{name}$" in regexes, regexes
        assert [t.name for t in read_terms(job)] == list(LADDER_TERMS)


def test_ladder_trains_the_same_eagerly_and_through_the_capture_fallback(ladder_sweep):
    """capture_step=true on a CPU falls back to the eager step (one warning): the same numbers to the last bit."""
    eager, captured = (json.loads((ladder_sweep / j / "metrics.json").read_text()) for j in ("0", "1"))
    assert eager == captured


def test_ladder_state_is_updated_after_every_optimizer_step(ladder_sweep):
    """after_step ran once per training batch (the buffer counting its calls is in the checkpoint) and moved the
    running average of the top code away from its zero start."""
    for job in ("0", "1"):
        state = torch.load(ladder_sweep / job / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        assert int(state["model.updates"]) == TRAIN_BATCHES
        assert float(state["model.z2_average"].abs().sum()) > 0


def test_aelab_compare_shows_the_declared_terms(ladder_sweep):
    report = compare(ladder_sweep, plots=False)
    header = report["table"].splitlines()[0].split()
    assert {f"test/{name}" for name in LADDER_TERMS} <= set(header)
    assert "capture_step" in header  # the swept key


# --- a model in this file: reduce and stages as declared ------------------------------------------------------------
class CountingAutoencoder(Autoencoder):
    """A dense autoencoder whose terms have answers known in advance: `step` (the optimizer step, epoch value its
    max), `batches` (1 per training batch, summed; training only) and `code_norm` (a mean)."""

    terms = (Term("recon_loss", "reconstruction loss"),
             Term("step", "the step number", reduce="max", better=None),
             Term("batches", "one per training batch", reduce="sum", better=None, stages=("train",)),
             Term("code_norm", "mean L2 norm of the code", better=None))

    def __init__(self, *args, latent_dim: int = 4, **kwargs):
        super().__init__(*args, **kwargs)
        pixels = self.input_shape[0] * self.input_shape[1] * self.input_shape[2]
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, pixels), nn.Unflatten(1, self.output_shape))
        self.register_buffer("after_steps", torch.zeros((), dtype=torch.long))

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        base = super().loss(batch, step)
        code = self.encode(batch.input)
        terms = {**base.terms, "step": torch.tensor(float(step)), "code_norm": code.norm(dim=1).mean().detach()}
        if self.training:
            terms["batches"] = torch.tensor(1.0)
        return LossTerms(loss=base.loss, output=base.output, terms=terms)

    def after_step(self, terms: LossTerms, step: int) -> None:
        self.after_steps.add_(1)


def test_terms_are_reduced_over_the_epoch_as_declared(tmp_path):
    cfg = compose_cfg([*FAST, "callbacks=none"], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.model = OmegaConf.create({"_target_": f"{__name__}.CountingAutoencoder", "latent_dim": 4})
        del cfg["hydra"]
    result = train(cfg, RunDir(tmp_path))
    m = result.metrics
    assert m["train/step"] == TRAIN_BATCHES - 1  # the max over steps 0..4, not their mean
    assert m["train/batches"] == TRAIN_BATCHES  # the sum
    assert "val/batches" not in m and "test/batches" not in m  # declared for training only
    assert m["val/step"] == m["test/step"] == TRAIN_BATCHES  # evaluated after the 5 steps
    assert {"train/code_norm", "val/code_norm", "test/code_norm"} <= m.keys()
    assert "test/batches" not in hparams_metrics(tmp_path) and "test/code_norm" in hparams_metrics(tmp_path)
    assert int(result.module.model.after_steps) == TRAIN_BATCHES


def test_a_step_whose_terms_differ_from_the_declaration_is_refused_naming_both():
    model = CountingAutoencoder((1, 4, 4), (1, 4, 4)).eval()
    x = torch.rand(2, 1, 4, 4)
    check_terms("CountingAutoencoder", model.terms, model.loss(Batch(x, x)), "val")  # as declared: passes
    stray = LossTerms(loss=torch.zeros(()), output=x, terms={"recon_loss": torch.zeros(()), "extra": torch.ones(())})
    with pytest.raises(ConfigError, match=r"missing: \['code_norm', 'step'\], undeclared: \['extra'\]"):
        check_terms("CountingAutoencoder", model.terms, stray, "val")


def test_term_declarations_refuse_reserved_names_and_unknown_reductions():
    with pytest.raises(ConfigError, match="reserved"):
        Term("loss", "the objective")
    with pytest.raises(ConfigError, match="reduce='median'"):
        Term("x", "x", reduce="median")
    with pytest.raises(ConfigError, match="stages"):
        Term("x", "x", stages=("predict",))
