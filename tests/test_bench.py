"""aelab-bench: named benchmarks run as one resumable multirun and report mean +- std over seeds.

The report is checked on run directories whose numbers are known (written here), the runner on real runs: a grid
killed midway and rerun finishes with no job run twice, and a failed job is listed while the others are reported.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from aelab.bench import benchmarks, main as bench_main
from aelab.bench_report import write_report
from aelab.compare import collect_jobs
from aelab.config import CONFIG_DIR
from aelab.sweep_resume import NOT_COMPARED
from conftest import compose_cfg, snapshot

BIN = Path(sys.executable).parent


def fake_job(root: Path, overrides: list[str], metrics: dict, state: str = "succeeded", **cost) -> Path:
    """A run directory as aelab-train leaves it, with known numbers."""
    job = root / ",".join(overrides)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "status.json").write_text(json.dumps({"state": state, "error": "boom" if state == "failed" else None}))
    if state == "succeeded":
        (job / "metrics.json").write_text(json.dumps(metrics))
    (job / "cost.json").write_text(json.dumps(cost))
    return job


def test_report_rows_are_mean_and_sample_std_over_seeds_with_the_best_marked(tmp_path):
    root = tmp_path / "bench"
    psnr = {"ae": [20.0, 21.0, 23.0], "vae": [18.0, 19.0]}
    for model, values in psnr.items():
        for seed, value in enumerate(values):
            fake_job(root, [f"model={model}", f"seed={seed}", "benchmark=b"],
                     {"test/psnr": value, "test/fid_gmm": 10.0 + seed if model == "vae" else 30.0,
                      "test/fid_prior": 5.0 if model == "vae" else float("nan")},
                     parameters=100 if model == "ae" else 200, fit_seconds=10.0 * (seed + 1))
    fake_job(root, ["model=vae", "seed=2", "benchmark=b"], {}, state="failed")
    report = write_report(root)
    rows = {r["setting"]["model"]: r for r in report["rows"]}
    assert set(rows) == {"ae", "vae"}  # the seed and the benchmark's name are not settings
    ae, vae = rows["ae"], rows["vae"]
    assert (ae["succeeded"], ae["jobs"], vae["succeeded"], vae["jobs"]) == (3, 3, 2, 3)
    assert ae["metrics"]["test/psnr"]["mean"] == pytest.approx(64 / 3)
    assert ae["metrics"]["test/psnr"]["std"] == pytest.approx(statistics.stdev([20.0, 21.0, 23.0]))
    assert vae["metrics"]["test/psnr"] == pytest.approx({"mean": 18.5, "std": 0.7071067811865476, "n": 2})
    assert ae["cost"]["fit_seconds"]["mean"] == pytest.approx(20.0)
    # the best sampler's FID per job: min(fid_gmm, fid_prior) = 5 for the VAE; the AE has only its GMM
    assert vae["best_fid"]["mean"] == 5.0 and ae["best_fid"]["mean"] == 30.0
    assert report["best"]["test/psnr"] == ae["name"]  # higher is better
    assert report["best"]["test/fid_gmm"] == vae["name"]  # lower is better
    assert "test/psnr_baseline" not in report["best"]  # the task's baseline is a scale, not a contestant
    md = (root / "benchmark" / "BENCHMARK.md").read_text()
    assert "| ae | 3 | 100 | 20 ± 10 | **21.33 ± 1.53** |" in md
    assert "| vae | 2 of 3 | 200 | 15 ± 7 | 18.50 ± 0.71 |" in md
    assert "- model=vae,seed=2,benchmark=b: failed: boom" in md
    written = json.loads((root / "benchmark" / "BENCHMARK.json").read_text())
    assert written["succeeded"] == 5 and written["jobs"] == 6
    assert {p.name for p in report["files"]} >= {"quality_vs_time.png", "samples_vs_reconstruction.png",
                                                  "tensorboard"}
    assert list((root / "benchmark" / "tensorboard").rglob("events.out.tfevents.*"))  # the HPARAMS sessions
    assert "- command: `(no multirun.yaml: the command is not recorded)`" in md
    again = write_report(root)  # rebuilt from the same folders: the same rows, its own output not read as jobs
    assert again["rows"] == report["rows"]


def test_a_tie_marks_no_best_and_one_seed_has_no_spread(tmp_path):
    root = tmp_path / "bench"
    fake_job(root, ["model=a", "seed=0"], {"test/precision_gmm": 0.0, "test/psnr": 10.0, "test/recall_gmm": 0.2})
    fake_job(root, ["model=b", "seed=0"], {"test/precision_gmm": 0.0, "test/psnr": 11.0, "test/recall_gmm": 0.1})
    report = write_report(root)
    assert "test/precision_gmm" not in report["best"] and report["best"]["test/psnr"] == "model=b"
    assert report["best"]["test/recall_gmm"] == "model=a"  # precision and recall: higher is better
    assert all(r["metrics"]["test/psnr"]["std"] is None for r in report["rows"])
    assert "| a | 1 | – | – | 10.00 |" in (root / "benchmark" / "BENCHMARK.md").read_text()


def test_provenance_names_the_command_commit_machine_and_time(tmp_path):
    root = tmp_path / "bench"
    for seed, (start, end) in enumerate([(1000.0, 1600.0), (1700.0, 2900.0)]):
        job = fake_job(root, ["model=a", f"seed={seed}"], {"test/psnr": 1.0})
        (job / "status.json").write_text(json.dumps({"state": "succeeded", "started": start, "updated": end}))
        (job / "environment.json").write_text(json.dumps({"git_commit": "abc123", "cpu": "Some CPU", "cores": 2}))
    (root / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": ["benchmark=b", "model=a", "seed=0,1", "sweep_resume=true"]},
                   "sweeper": {"params": {"model": "a,b,c", "seed": "0,1,2"}}}}))
    md = write_report(root)["markdown"]
    assert "2 of 2 jobs succeeded, in 1 settings; each cell" in md  # the grid (model=a x seed=0,1) is complete
    assert "- command: `aelab-bench benchmark=b model=a seed=0,1`" in md  # the resume switch is aelab-bench's own
    (root / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": ["benchmark=b"]}, "sweeper": {"params": {"model": "a,b", "seed": "0,1"}}}}))
    assert "2 of 2 jobs succeeded, in 1 settings (2 more of the grid's 4 not started yet: the same command runs " \
           "them)" in write_report(root)["markdown"]
    assert "- commit: abc123" in md and "- machine: Some CPU, 2 logical CPUs" in md
    assert "- time: 30 min of job wall time in all (fit, test and the test-time metrics), 30 min while its jobs " \
           "ran" in md  # the 100 s between the jobs is no job's time
    # two narrower commands into the same folder: each job names the run it started in, not the last command
    from aelab.bench_report import log_command

    log_command(root, "aelab-bench benchmark=b model=a seed=0", 900.0)
    log_command(root, "aelab-bench benchmark=b model=a seed=1", 1650.0)
    with open(root / "bench_commands.jsonl", "a") as f:
        f.write('{"command": "cut by a ki')  # a kill mid-line is passed over
    md = write_report(root)["markdown"]
    runs = json.loads((root / "benchmark" / "BENCHMARK.json").read_text())["provenance"]["runs"]
    assert [(r["command"], r["jobs"], r["span_seconds"]) for r in runs] == [
        ("aelab-bench benchmark=b model=a seed=0", 1, 600.0), ("aelab-bench benchmark=b model=a seed=1", 1, 1200.0)]
    assert "- commands (2 runs): `aelab-bench benchmark=b model=a seed=0` (1 jobs, 10 min); " \
           "`aelab-bench benchmark=b model=a seed=1` (1 jobs, 20 min)" in md


def test_a_benchmark_run_in_parts_accumulates_in_one_report_with_merge(tmp_path, capsys):
    """Part one's folder is gone by part two (a session's /tmp): --merge keeps its jobs from the report, part two's
    own jobs replace theirs (a failed seed rerun), and the rows are over every seed, as if one folder held all."""
    import shutil

    def part(root: Path, jobs: list, command: list[str], start: float, scored: bool = True) -> None:
        for i, (experiment, seed, psnr, state) in enumerate(jobs):
            job = fake_job(root, [f"experiment={experiment}", f"seed={seed}"], {"test/psnr": psnr}, state=state,
                           fit_seconds=60.0)
            (job / "status.json").write_text(json.dumps({"state": state, "error": None, "started": start + 100 * i,
                                                         "updated": start + 100 * i + 60}))
            (job / "environment.json").write_text(json.dumps({"git_commit": f"c{int(start)}", "cpu": "CPU",
                                                              "cores": 2}))
            if scored:
                (job / "sample_quality.json").write_text(json.dumps({"feature_space": {
                    "name": "mnist-classifier", "kind": "domain classifier", "dataset": "mnist",
                    "test_accuracy": 0.99}}))
        (root / "multirun.yaml").write_text(yaml.safe_dump(
            {"hydra": {"overrides": {"task": ["benchmark=lesson", *command]}, "sweeper": {"params": {}}}}))

    out = tmp_path / "experiments" / "lesson"
    first = tmp_path / "a" / "lesson"
    part(first, [("sr", 0, 30.0, "succeeded"), ("sr", 1, 31.0, "succeeded"), ("ae", 0, 0.0, "failed")],
         ["experiment=sr,ae", "seed=0,1"], 0.0)
    write_report(first, out)
    kept = json.loads((out / "BENCHMARK.json").read_text())
    assert kept["spaces"] == {"mnist-classifier": {"name": "mnist-classifier", "kind": "domain classifier",
                                                   "dataset": "mnist", "test_accuracy": 0.99}}
    assert {r["feature_space"] for r in kept["records"]} == {"mnist-classifier"}  # described once, named per job
    shutil.rmtree(first)
    second = tmp_path / "b" / "lesson"
    part(second, [("sr", 2, 32.0, "succeeded"), ("ae", 0, 20.0, "succeeded")], ["experiment=sr,ae", "seed=2"],
         10_000.0, scored=False)  # the feature space's description comes from the carried records only
    assert bench_main(["--report", str(second), "--out", str(out), "--merge"]) == 0
    assert "(2 carried over from" in capsys.readouterr().out
    written = json.loads((out / "BENCHMARK.json").read_text())
    rows = {r["setting"]["experiment"]: r for r in written["rows"]}
    assert rows["sr"]["metrics"]["test/psnr"] == {"mean": 31.0, "std": 1.0, "n": 3}
    assert rows["sr"]["seeds"] == ["0", "1", "2"]
    assert (rows["ae"]["succeeded"], rows["ae"]["jobs"]) == (1, 1) and written["problems"] == []  # rerun replaced
    assert (written["jobs"], written["succeeded"], written["carried"]) == (4, 4, 2)
    origin = written["provenance"]
    assert origin["commands"] == ["aelab-bench benchmark=lesson experiment=sr,ae seed=0,1",
                                  "aelab-bench benchmark=lesson experiment=sr,ae seed=2"]
    assert origin["commits"] == ["c0", "c10000"] and origin["span_seconds"] == 4 * 60.0  # not the gaps
    md = (out / "BENCHMARK.md").read_text()
    assert "4 of 4 jobs succeeded, in 2 settings (2 of them carried over from the earlier report here" in md
    assert "feature space of `mnist-classifier` (domain classifier of mnist, test accuracy 0.9900)" in md
    assert written["spaces"] == kept["spaces"]
    assert "- commands (2 runs): `aelab-bench benchmark=lesson experiment=sr,ae seed=0,1` (2 jobs, 2 min); " \
           "`aelab-bench benchmark=lesson experiment=sr,ae seed=2` (2 jobs, 2 min)" in md
    again = write_report(second, out, merge=True)  # merging the same part twice changes nothing
    assert again["rows"] == written["rows"]
    assert [r["setting"]["experiment"] for r in write_report(second, out)["rows"]] == ["ae", "sr"]
    assert write_report(second, out)["rows"][1]["seeds"] == ["2"]  # without --merge: the folder's jobs only


def test_a_feature_space_is_described_once_and_read_back_from_either_layout():
    from aelab.bench_report import packed, unpacked

    scored = {"name": "j1", "feature_space": {"name": "s", "test_accuracy": 0.9}}
    unscored = {"name": "j2", "feature_space": None}
    kept, table = packed([scored, unscored])
    assert kept == [{"name": "j1", "feature_space": "s"}, unscored] and table == {"s": scored["feature_space"]}
    assert unpacked(kept, table) == [scored, unscored]
    assert unpacked([scored, unscored], {}) == [scored, unscored]  # a report written before the table


def test_a_feature_space_line_gives_the_fid_floor_over_the_jobs_scored_in_it():
    from aelab.bench_report import feature_spaces, packed

    space = {"name": "s", "kind": "domain classifier", "dataset": "mnist", "test_accuracy": 0.9}
    jobs = [{"feature_space": space, "metrics": {"test/fid_floor": floor}} for floor in (1.0, 3.0)]
    jobs.append({"feature_space": None, "metrics": {"test/fid_floor": 100.0}})  # not scored in s: not counted
    assert feature_spaces(*packed(jobs)) == ["`s` (domain classifier of mnist, test accuracy 0.9000), where held-out "
                                             "real images score FID 2.00 ± 1.41 against the test split"]


@pytest.mark.parametrize("old, message", [
    ({"benchmark": "mnist_families", "records": []}, "is the report of benchmark folder 'mnist_families', not "
                                                     "'lesson'; merge carries over jobs of the same benchmark only"),
    ({"folder": "/tmp/x/lesson", "rows": []}, "holds no job records (written before reports kept them), so its rows "
                                              "cannot be merged; rebuild it from its run directories without --merge"),
])
def test_merge_refuses_a_report_it_cannot_carry_over_in_one_line(tmp_path, capsys, monkeypatch, old, message):
    root = tmp_path / "lesson"
    fake_job(root, ["experiment=sr", "seed=0"], {"test/psnr": 1.0})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "BENCHMARK.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit):
        bench_main(["--report", str(root), "--out", str(tmp_path / "out"), "--merge"])
    assert capsys.readouterr().err.strip() == f"aelab-bench: error: --merge: {tmp_path / 'out' / 'BENCHMARK.json'} " \
                                              + message
    import aelab.bench

    def never(command, *args, **kwargs):
        raise AssertionError(f"the benchmark ran: {command}")

    monkeypatch.setattr(aelab.bench.subprocess, "run", never)  # with a run, refused before the run starts
    monkeypatch.setenv("AELAB_OUTPUT_DIR", str(tmp_path / "runs"))  # nor is its command logged there
    with pytest.raises(SystemExit):
        bench_main(["benchmark=lesson", "--out", str(tmp_path / "out"), "--merge"])
    assert capsys.readouterr().err.strip() == f"aelab-bench: error: --merge: {tmp_path / 'out' / 'BENCHMARK.json'} " \
                                              + message
    assert not (tmp_path / "runs").exists()


def test_results_shows_the_disentanglement_sweep_as_mean_and_std_per_preset(tmp_path):
    from experiments.seed_sweeps import disentanglement_section

    root = tmp_path / "bench"
    for seed, mig in enumerate([0.1, 0.3]):
        fake_job(root, ["epochs=1", "experiment=dsprites_beta_tcvae", f"seed={seed}"], {"test/mig": mig})
        fake_job(root, ["epochs=1", "experiment=dsprites_beta_vae", f"seed={seed}"], {"test/mig": 0.05,
                                                                                     "test/sap": 0.2})
    fake_job(root, ["epochs=1", "experiment=dsprites_factorvae", "seed=0"], {}, state="failed")
    (root / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": ["benchmark=disentanglement", "epochs=1"]}, "sweeper": {"params": {}}}}))
    write_report(root, tmp_path / "out")
    lines = disentanglement_section(tmp_path / "out" / "BENCHMARK.json")
    text = "\n".join(lines)
    assert "4 of 5 jobs succeeded" in text and "`aelab-bench benchmark=disentanglement epochs=1`" in text
    assert "with epochs=1 for every preset" in text and "Locatello et al." in text
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| dsprites_")}
    assert set(rows) == {"dsprites_beta_tcvae", "dsprites_beta_vae", "dsprites_factorvae"}
    assert f"| 2 | {0.2:.3f} ± {statistics.stdev([0.1, 0.3]):.3f} |" in rows["dsprites_beta_tcvae"]
    assert "| 2 | 0.050 ± 0.000 |" in rows["dsprites_beta_vae"] and "| 0 | – |" in rows["dsprites_factorvae"]
    # MIG means 0.2 and 0.05: the range straddles the published 0.1-0.4; the gap 0.15 exceeds the mean seed std
    spread = (statistics.stdev([0.1, 0.3]) + 0.0) / 2
    assert (f"Here the presets' mean MIG spans 0.050–0.200 (overlapping 0.1–0.4); the gap between the best and the "
            f"worst preset's mean MIG (0.150) is larger than a seed's typical standard deviation ({spread:.3f}).") in text
    assert disentanglement_section(tmp_path / "absent.json")[2].startswith("Not recorded yet")


def test_results_gives_each_headline_preset_over_seeds_beside_its_single_seed_row(tmp_path):
    from types import SimpleNamespace

    from experiments.seed_sweeps import headline_section

    root = tmp_path / "bench"
    for seed, psnr in enumerate([30.0, 30.4, 29.8]):  # bicubic does not depend on the seed
        fake_job(root, ["experiment=superres_mnist", f"seed={seed}"],
                 {"test/psnr": psnr, "test/psnr_baseline_bicubic": 20.5, "test/psnr_baseline_pca": 18.0,
                  "test/psnr_baseline_identity": 15.0})
        fake_job(root, ["experiment=vae_binarized", f"seed={seed}"], {"test/nll": 87.0 + seed, "test/psnr": 12.0})
    (root / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": ["benchmark=lesson"]}, "sweeper": {"params": {}}}}))
    write_report(root, tmp_path / "out")
    jobs = [SimpleNamespace(name="superres_mnist", state="succeeded", metrics={"test/psnr": 30.6}),
            SimpleNamespace(name="vae_binarized", state="failed", metrics={"test/nll": 1.0})]
    lines = headline_section(jobs, tmp_path / "out" / "BENCHMARK.json")
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ") and "---" not in line}
    sd = statistics.stdev([30.0, 30.4, 29.8])
    assert rows["superres_mnist"] == (f"| superres_mnist | 3 | PSNR (dB) | 30.07 ± {sd:.2f} | 20.50 (bicubic) | "
                                      f"+9.57 | 30.60 (+0.53) |")
    # the likelihood preset reads its NLL, with no baseline; a failed single-seed row is not shown
    assert rows["vae_binarized"] == "| vae_binarized | 3 | NLL (nats) | 88.00 ± 1.00 | – | – | – |"
    assert "6 of 6 jobs succeeded" in "\n".join(lines)
    assert headline_section(jobs, tmp_path / "absent.json")[2].startswith("Not recorded yet")


def test_a_short_budget_for_the_disentanglement_sweep_is_given_on_the_command_line():
    from aelab.bench import sweep_dir

    overrides = ["benchmark=disentanglement", "epochs=1", "data.size=20000", "data.test_size=5000"]
    assert sweep_dir(overrides).parts[-2:] == ("bench", "disentanglement")  # the data keys are the presets' own
    cfg = compose_cfg([*overrides, "experiment=dsprites_factorvae"])
    assert (cfg.data.size, cfg.data.test_size, cfg.trainer.max_epochs) == (20000, 5000, 1)


def test_every_benchmark_composes_and_names_real_models_and_data():
    assert {"mnist_families", "disentanglement", "lesson"} <= set(benchmarks())
    for name in benchmarks():
        cfg = compose_cfg([f"benchmark={name}"])
        params = dict(cfg.hydra.sweeper.params)
        assert "seed" in params and {"model", "experiment"} & set(params), name
        for group in ("model", "data", "experiment"):
            for option in str(params.get(group, "")).split(","):
                if option:
                    assert (CONFIG_DIR / group / f"{option}.yaml").is_file(), f"{name}: {group}={option}"
        assert str(cfg.hydra.sweep.dir).endswith(f"bench/{name}")
        assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "${hydra.job.override_dirname}"
        # what a job's folder name leaves out is exactly what sweep_resume does not compare (and the name)
        excluded = set(cfg.hydra.job.config.override_dirname.exclude_keys)
        assert excluded - {"benchmark"} <= set(NOT_COMPARED)


@pytest.mark.parametrize("argv, message", [
    ([], "aelab-bench: error: no benchmark=NAME given; the benchmarks are ['disentanglement', 'lesson', 'mnist_families']"),
    (["benchmark=nope"], "aelab-bench: error: benchmark=nope is not a benchmark; expected one of ['disentanglement', 'lesson', 'mnist_families']"),
])
def test_a_missing_or_unknown_benchmark_is_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench_main(argv)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err


def test_report_of_a_folder_without_jobs_is_one_line(tmp_path, capsys):
    assert bench_main(["--report", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"aelab-bench: error: no job directories (with status.json) under " \
                                              f"{tmp_path}"


def test_aelab_train_refuses_a_benchmark_without_multirun(tmp_path):
    done = subprocess.run([str(BIN / "aelab-train"), "benchmark=mnist_families", f"hydra.run.dir={tmp_path / 'r'}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "aelab-train: error: benchmark=mnist_families is a multirun: aelab-bench benchmark=mnist_families (or "
        "aelab-train -m benchmark=mnist_families, which writes no report)")
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_a_run_records_its_cost_apart_from_its_metrics(run_train):
    run = run_train(["model=ae_dense", "callbacks=none", "logger=none"])
    cost = json.loads((run / "cost.json").read_text())
    from aelab.build import build_parts
    from aelab.config import compose

    model = build_parts(compose(["model=ae_dense"])).model
    assert cost["parameters"] == cost["trained_parameters"] == sum(p.numel() for p in model.parameters())
    assert cost["fit_seconds"] > 0 and cost["test_seconds"] > 0
    assert not {"parameters", "fit_seconds"} & set(json.loads((run / "metrics.json").read_text()))


GRID = ["benchmark=mnist_families", "model=ae_dense,vae_dense", "seed=0,1", "trainer=debug", "callbacks=none",
        "logger=none"]


def bench(*args: str, wait: bool = True):
    command = [str(BIN / "aelab-bench"), *args]
    if wait:
        return subprocess.run(command, capture_output=True, text=True, timeout=1800)  # a hang, not a timing
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)



@pytest.mark.slow
def test_a_benchmark_killed_midway_resumes_with_no_job_run_twice_and_reports_a_failed_one(tmp_path):
    sweep = tmp_path / "bench"
    process = bench(*GRID, f"hydra.sweep.dir={sweep}", wait=False)
    deadline = time.monotonic() + 900
    while sum(j.state == "succeeded" for j in collect_jobs(sweep)) < 1:
        assert process.poll() is None, "the benchmark ended before it could be killed"
        assert time.monotonic() < deadline, "no succeeded job in 900 s"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    done_before = sorted(j.name for j in collect_jobs(sweep) if j.state == "succeeded")
    assert 1 <= len(done_before) < 4, done_before
    kept = {name: snapshot(sweep / name) for name in done_before}

    rerun = bench(*GRID, f"hydra.sweep.dir={sweep}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"aelab-bench: resuming {sweep}" in rerun.stdout
    for name in done_before:  # skipped: not a byte, not a timestamp changed
        assert snapshot(sweep / name) == kept[name], name
    jobs = collect_jobs(sweep)
    assert sorted(j.name for j in jobs if j.state == "succeeded") == [
        f"callbacks=none,data=mnist,logger=none,model={m},seed={s},trainer=debug"
        for m in ("ae_dense", "vae_dense") for s in (0, 1)]  # a job's folder is its setting
    md = (sweep / "benchmark" / "BENCHMARK.md").read_text()
    assert "4 of 4 jobs succeeded, in 2 settings" in md
    assert md.count("| debug | 2 |") == 2  # two seeds in each row

    # a wider grid into the same folder: the four are skipped, the VQ prior fails (no first stage), and the
    # report still holds the others
    wider = bench(*[o if not o.startswith("model=") else "model=ae_dense,vae_dense,vqvae_prior" for o in GRID],
                  f"hydra.sweep.dir={sweep}")
    assert wider.returncode == 0, wider.stderr[-3000:]
    assert wider.stdout.count("succeeded with this config: skipped") + wider.stderr.count(
        "succeeded with this config: skipped") == 4
    md = (sweep / "benchmark" / "BENCHMARK.md").read_text()
    assert "4 of 6 jobs succeeded, in 3 settings" in md
    assert "failed: model.first_stage is not set" in md
    assert "| none | mnist | none | vqvae_prior | debug | 0 of 2 |" in md
    commands = json.loads((sweep / "benchmark" / "BENCHMARK.json").read_text())["provenance"]["commands"]
    assert commands == [" ".join(["aelab-bench", *GRID, f"hydra.sweep.dir={sweep}"]),  # killed, then resumed
                        " ".join(["aelab-bench", *[o if not o.startswith("model=") else
                                                   "model=ae_dense,vae_dense,vqvae_prior" for o in GRID],
                                                 f"hydra.sweep.dir={sweep}"])]
