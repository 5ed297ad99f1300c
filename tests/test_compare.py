"""aelab-compare on a hand-made sweep directory: finished, failed, running and unstarted jobs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from aelab.compare import compare, is_sweep, main, parse_overrides, read_curve, swept_keys, collect_jobs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_job(root: Path, name: str, overrides: list[str], state: str | None, metrics: dict | None = None,
             error: str | None = None, curve: list[float] | None = None) -> Path:
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if state is not None:
        (job / "status.json").write_text(json.dumps({"state": state, "error": error}))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if curve:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(job / "tensorboard"))
        for epoch, value in enumerate(curve):
            step = 10 * (epoch + 1)  # Lightning logs epoch-level values at the global step, with an `epoch` scalar
            writer.add_scalar("val/loss", value, step)
            writer.add_scalar("epoch", epoch, step)
        writer.close()
    return job


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    common = ["trainer=debug"]
    make_job(root, "0", ["model=ae_conv", "data.batch_size=64", *common], "succeeded",
             {"test/loss": 0.30, "val/loss": 0.31, "test/psnr": 14.0}, curve=[0.5, 0.4, 0.31])
    make_job(root, "1", ["model=vae_conv", "data.batch_size=64", *common], "succeeded",
             {"test/loss": 0.20, "val/loss": 0.22, "test/psnr": 16.0}, curve=[0.45, 0.22])
    make_job(root, "2", ["model=ae_conv", "data.batch_size=128", *common], "failed",
             error="ValueError: Invalid learning rate: -1.0")
    make_job(root, "3", ["model=vae_conv", "data.batch_size=128", *common], "running", curve=[0.7])
    make_job(root, "10", ["model=ae_dense", "data.batch_size=128", *common], None)  # launched, no status yet
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": [
        "model=ae_conv,vae_conv,ae_dense", "data.batch_size=64,128", "trainer=debug"]}}}))
    return root


def test_table_is_sorted_by_the_metric_and_lists_failed_and_unfinished_jobs(sweep, tmp_path):
    report = compare(sweep, out=tmp_path / "report")
    assert report["metric"] == "test/loss" and report["mode"] == "min"
    assert report["params"] == ["model", "data.batch_size"]  # trainer=debug is the same everywhere
    assert [j.name for j in report["jobs"]][:2] == ["1", "0"]
    assert {j.name: j.state for j in report["jobs"][2:]} == {"3": "running", "10": "unknown", "2": "failed"}
    assert report["jobs"][-1].name == "2"  # failed last
    assert "2: failed: ValueError: Invalid learning rate: -1.0" in report["problems"]
    lines = report["table"].splitlines()
    assert lines[0].split()[:6] == ["#", "job", "state", "model", "data.batch_size", "test/loss"]
    assert lines[2].split()[:6] == ["1", "1", "succeeded", "vae_conv", "64", "0.2"]
    assert len(lines) == 2 + 5


def test_report_files_csv_markdown_and_plots(sweep, tmp_path):
    out = tmp_path / "report"
    report = compare(sweep, out=out)
    names = {f.name for f in report["files"]}
    assert names == {"results.csv", "results.md", "metric_vs_model.png", "metric_vs_data.batch_size.png",
                     "val_loss_curves.png"}
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["job"] for r in rows] == ["1", "0", "3", "10", "2"]
    assert float(rows[0]["test/loss"]) == 0.2 and rows[0]["model"] == "vae_conv"
    assert rows[-1]["error"] == "ValueError: Invalid learning rate: -1.0" and rows[-1]["test/loss"] == ""
    md = (out / "results.md").read_text()
    assert "| 1 | 1 | succeeded | vae_conv | 64 | 0.2 |" in md and "2: failed: ValueError" in md
    for name in names - {"results.csv", "results.md"}:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, name


def test_validation_curves_are_read_per_epoch_from_event_files(sweep):
    assert read_curve(sweep / "0") == [(0, pytest.approx(0.5)), (1, pytest.approx(0.4)), (2, pytest.approx(0.31))]
    assert read_curve(sweep / "3") == [(0, pytest.approx(0.7))]  # a running job's partial curve
    assert read_curve(sweep / "2") == []


def test_mode_max_and_other_metric(sweep, tmp_path):
    report = compare(sweep, metric="test/psnr", out=tmp_path / "r", plots=False)
    assert report["mode"] == "max" and [j.name for j in report["jobs"]][:2] == ["1", "0"]
    report = compare(sweep, metric="val/loss", mode="max", out=tmp_path / "r", plots=False)
    assert [j.name for j in report["jobs"]][:2] == ["0", "1"]
    assert {f.name for f in report["files"]} == {"results.csv", "results.md"}


def test_partial_sweep_with_one_finished_job_still_shows_swept_params(sweep, tmp_path):
    import shutil

    for name in ("1", "2", "3", "10"):
        shutil.rmtree(sweep / name)
    report = compare(sweep, out=tmp_path / "r", plots=False)
    assert report["params"] == ["model", "data.batch_size"]  # from multirun.yaml's sweep syntax
    assert len(report["jobs"]) == 1


def test_cli_prints_the_table_and_rejects_bad_directories(sweep, tmp_path, capsys):
    assert main([str(sweep), "--out", str(tmp_path / "cli"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "sorted by test/loss (min)" in out and "not succeeded:" in out and "Invalid learning rate" in out
    assert (tmp_path / "cli" / "results.md").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 1
    assert "no job directories" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "missing")])
    assert e.value.code == 2


def test_single_run_directory_is_a_one_job_report(sweep, tmp_path):
    jobs = collect_jobs(sweep / "0")
    assert [j.name for j in jobs] == ["0"] and jobs[0].metrics["test/loss"] == 0.30


def test_override_parsing_and_sweep_syntax():
    assert parse_overrides(["model=vae_conv", "+trainer.limit_train_batches=5", "~callbacks.x", "a.b=[1,2]"]) == {
        "model": "vae_conv", "trainer.limit_train_batches": "5", "callbacks.x": "<deleted>", "a.b": "[1,2]"}
    assert is_sweep("1,2") and is_sweep("range(1,4)") and is_sweep("glob(*)") and is_sweep("[1,2],[3,4]")
    assert not is_sweep("[16,8,8]") and not is_sweep("'a,b'") and not is_sweep("0.001")


def test_swept_keys_without_multirun_yaml(tmp_path):
    make_job(tmp_path, "a", ["seed=1", "model=ae_conv"], "succeeded", {"test/loss": 1.0})
    make_job(tmp_path, "b", ["seed=2", "model=ae_conv"], "succeeded", {"test/loss": 2.0})
    assert swept_keys(collect_jobs(tmp_path), tmp_path) == ["seed"]
