"""The logger group: logger=csv, logger=mlflow and lists of loggers get the run's hyperparameters, its metrics and
its final status, read back with the libraries' own readers (csv / Lightning's YAML reader, MlflowClient)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from lightning.pytorch.core.saving import load_hparams_from_yaml
from omegaconf import OmegaConf

from aelab.errors import ConfigError
from aelab.loggers import build_loggers, logger_nodes, record_end
from conftest import compose_cfg, read_events

QUICK = ["callbacks=none", "test=false"]
GRID = ["+callbacks.grid._target_=aelab.callbacks.images.ReconstructionGrid"]


def test_logger_group_composes_one_several_or_none(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from aelab.build import build_trainer
    from aelab.hparams import tensorboard_dir

    both = compose_cfg(["logger=[tensorboard,csv]", "trainer=debug"], output_dir=tmp_path)
    assert sorted(both.logger) == ["csv", "tensorboard"]
    trainer = build_trainer(both)
    assert [type(lg) for lg in trainer.loggers] == [TensorBoardLogger, CSVLogger]
    assert tensorboard_dir(both, tmp_path) == tmp_path / "tensorboard"  # found among the list
    assert tensorboard_dir(compose_cfg(["logger=csv"], output_dir=tmp_path), tmp_path) is None
    for off in ("logger=none", "~logger"):
        assert build_trainer(compose_cfg([off, "trainer=debug"], output_dir=tmp_path)).loggers == [], off


def test_logger_null_is_one_line_naming_logger_none():
    from aelab.cli import user_error

    error = ValueError("Config group override must be a string or a list. Got NoneType")  # Hydra's, for logger=null
    assert user_error(error, ["trainer=debug", "logger=null"], "train") == (
        "logger=null: a config group takes an option, not null; to use none, write logger=none or ~logger")


def test_a_bad_logger_node_is_one_line():
    with pytest.raises(ConfigError, match=r"^logger\.csv=3 is not allowed: expected a logger node with a _target_"):
        logger_nodes(compose_cfg(["logger=csv", "logger.csv=3"]))
    with pytest.raises(ConfigError, match=r"^logger='csv' is not allowed: expected one of tensorboard, csv, mlflow"):
        logger_nodes(OmegaConf.create({"logger": "csv"}))


def test_csv_run_records_params_metrics_and_status(run_train):
    run = run_train(["logger=csv", *QUICK, "optimizer.lr=0.002"])
    hparams = load_hparams_from_yaml(str(run / "csv" / "hparams.yaml"))
    assert hparams["status"] == "succeeded" and hparams["model"] == "ae_conv"
    assert hparams["optimizer.lr"] == 0.002 and hparams["model.batch_norm"] is True and hparams["code_size"] > 0
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert val and val[-1] == pytest.approx(json.loads((run / "metrics.json").read_text())["val/loss"])
    assert not (run / "tensorboard").exists()  # csv alone: no TensorBoard folder

    with pytest.raises(SystemExit):  # lr=-1 is refused before training: the CSV record still says so
        run_train(["logger=csv", *QUICK, "optimizer.lr=-1"], name="refused")
    refused = load_hparams_from_yaml(str(run.parent / "refused" / "csv" / "hparams.yaml"))
    assert refused["status"] == "failed" and refused["optimizer.lr"] == -1


def mlflow_runs(store: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"file:{store}")
    experiment = client.get_experiment_by_name("aelab")
    return client, client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_mlflow_run_records_params_metrics_images_and_status(run_train, tmp_path):
    pytest.importorskip("mlflow")
    run = run_train(["logger=[tensorboard,mlflow]", *QUICK, *GRID])
    client, runs = mlflow_runs(tmp_path / "outputs" / "mlruns")
    assert len(runs) == 1
    got = runs[0]
    assert got.info.status == "FINISHED" and got.data.tags["aelab.run_dir"] == str(run)
    assert got.data.params["model"] == "ae_conv" and got.data.params["optimizer.lr"] == "0.001"
    assert got.data.metrics["val/loss"] == pytest.approx(json.loads((run / "metrics.json").read_text())["val/loss"])
    images = [a.path for a in client.list_artifacts(got.info.run_id, "images")]
    assert any(p.startswith("images/val~reconstructions") and p.endswith(".png") for p in images), images
    assert "val/reconstructions" in read_events(run).Tags()["images"]  # TensorBoard still gets them
    assert "_hparams_/session_start_info" in read_events(run).PluginTagToContent("hparams")  # and its HPARAMS

    with pytest.raises(SystemExit):
        run_train(["logger=mlflow", *QUICK, "optimizer.lr=-1"], name="refused")
    _, runs = mlflow_runs(tmp_path / "outputs" / "mlruns")
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED"]
    assert runs[1].data.params["optimizer.lr"] == "-1"


def test_an_interrupted_run_is_killed_in_mlflow(tmp_path):
    pytest.importorskip("mlflow")
    cfg = compose_cfg(["logger=mlflow"], output_dir=tmp_path / "run")
    (logger,) = build_loggers(cfg, tmp_path / "run")
    logger.log_metrics({"val/loss": 0.5}, step=0)
    record_end(tmp_path / "run", cfg, None, "interrupted")
    _, runs = mlflow_runs(tmp_path / "outputs" / "mlruns")
    assert [r.info.status for r in runs] == ["KILLED"]


def test_mlflow_missing_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow then raises ImportError
    with pytest.raises(ConfigError, match=r'^logger\.mlflow: MLflow is not installed; install the extra: pip install '
                                          r'-e "\.\[mlflow\]"'):
        build_loggers(compose_cfg(["logger=mlflow"], output_dir=tmp_path))
