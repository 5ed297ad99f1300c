"""Rows e and f: grids through `aelab-train -m` (fresh processes, whole sweeps on the wall clock), Hydra's basic
(sequential) launcher against the parallel launcher. e: a 4-job grid on the CPU, 2 jobs at a time; f: an 8-job grid
on one GPU, all 8 at once (each job capped at its share of the GPU's memory, aelab.sweep.configure_job)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from aelab.runs import read_json
from experiments.benchmarks.harness import Report, Sizes, rate

THROUGHPUT = ["+callbacks.throughput._target_=aelab.callbacks.Throughput",
              "+callbacks.throughput.out=${paths.output_dir}/throughput.json"]


def run_sweep(work: Path, name: str, args: list[str], jobs: int) -> dict:
    """One `aelab-train -m` in a fresh process: its wall seconds and each job's training throughput; raises unless
    all `jobs` jobs succeeded."""
    sweep_dir = work / f"sweep-{name}"
    cmd = [sys.executable, "-m", "aelab.train", "-m", *args, f"hydra.sweep.dir={sweep_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "AELAB_OUTPUT_DIR": str(work / "outputs")})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"sweep ({name}) failed:\n{proc.stderr[-3000:]}")
    statuses = [read_json(p) or {} for p in sorted(sweep_dir.glob("*/status.json"))]
    if [s.get("state") for s in statuses].count("succeeded") != jobs:
        errors = [f"{s.get('state')}: {s.get('error')}" for s in statuses]
        raise RuntimeError(f"sweep ({name}): expected {jobs} succeeded jobs, got {errors}")
    meters = [read_json(p) for p in sorted(sweep_dir.glob("*/throughput.json"))]
    return {"wall_s": wall, "job_images_per_s": [m["images_per_s"] for m in meters if m]}


def per_job(result: dict) -> str:
    rates = result["job_images_per_s"]
    return rate(statistics.median(rates)) if rates else "n/a"


def bench_sweep(report: Report, sizes: Sizes, work: Path) -> None:
    print("e: sweep throughput (4-job grid)", flush=True)
    grid = ["optimizer.lr=1e-3,2e-3", "corruption=none,gaussian_noise"]
    common = [*grid, "trainer.max_epochs=1", f"++trainer.limit_train_batches={sizes.sweep_batches}",
              "++trainer.limit_val_batches=2", "test=false", "trainer.enable_progress_bar=false",
              "trainer.enable_model_summary=false", *THROUGHPUT, f"+callbacks.throughput.warmup_batches={sizes.warmup}"]
    if sizes.tiny:
        common.append("threads=1")  # tiny checks the code path; keep the shared machine usable
    launcher_name = "hydra/launcher=parallel"
    results = {"sequential": run_sweep(work, "sequential", common, 4),
               "joblib": run_sweep(work, "joblib", [*common, launcher_name, "hydra.launcher.n_jobs=2"], 4)}
    report.raw["sweep"] = {**results, "grid": grid, "launcher": launcher_name}
    seq, par = results["sequential"]["wall_s"], results["joblib"]["wall_s"]
    report.add("e", "sweep: 4-job grid, wall time of `aelab-train -m` (process start included)",
               f"{launcher_name} n_jobs=2: {par:.1f} s", f"sequential (basic launcher): {seq:.1f} s",
               f"{seq / par:.2f}x", f"grid {' '.join(grid)}, {sizes.sweep_batches} batches/job; training "
               f"throughput per job: sequential {per_job(results['sequential'])}, parallel {per_job(results['joblib'])}")


def bench_gpu_sweep(report: Report, sizes: Sizes, work: Path, device: str | None = None) -> None:
    """Row f: jobs per minute of an 8-job grid (one MNIST epoch of ae_conv_mnist each) on one GPU, all at once
    against one after another; target >= 4x. `device="cpu"` runs the code path on the CPU (tiny: 2 jobs)."""
    print("f: sweep on one GPU", flush=True)
    if device is None and not torch.cuda.is_available():
        report.add("f", "GPU sweep: 8-job grid on one GPU, parallel against sequential", "no GPU on this machine",
                   detail="on a CUDA machine: python experiments/benchmarks/run.py --only gpu_sweep")
        return
    accelerator = "gpu" if (device or "cuda").startswith("cuda") else device
    name = torch.cuda.get_device_name() if accelerator == "gpu" else f"{accelerator} (test of the code path)"
    grid = ["optimizer.lr=1e-3,2e-3", "corruption=none,gaussian_noise", "seed=0,1"]
    if sizes.tiny:
        grid = grid[:1]  # 2 jobs: the code path, not the scaling
    jobs = 2 ** len(grid)
    common = [*grid, "experiment=ae_conv_mnist", "trainer.max_epochs=1", f"trainer.accelerator={accelerator}",
              "++trainer.limit_val_batches=2", "test=false", "trainer.enable_progress_bar=false",
              "trainer.enable_model_summary=false", *THROUGHPUT, f"+callbacks.throughput.warmup_batches={sizes.warmup}"]
    if sizes.tiny:
        common += [f"++trainer.limit_train_batches={sizes.sweep_batches}", "threads=1"]
    parallel = ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={jobs}"]
    results = {"sequential": run_sweep(work, "gpu-sequential", common, jobs),
               "parallel": run_sweep(work, "gpu-parallel", [*common, *parallel], jobs)}
    seq, par = results["sequential"]["wall_s"], results["parallel"]["wall_s"]
    report.raw["gpu_sweep"] = {**results, "grid": grid, "jobs": jobs, "gpu": name,
                               "jobs_per_minute": {"sequential": 60 * jobs / seq, "parallel": 60 * jobs / par}}
    report.add("f", f"GPU sweep on {name}: {jobs}-job grid, {' '.join(parallel)}",
               f"{60 * jobs / par:.1f} jobs/min ({par:.1f} s)", f"sequential: {60 * jobs / seq:.1f} jobs/min "
               f"({seq:.1f} s)", f"{seq / par:.2f}x", f"grid {' '.join(grid)}, one MNIST epoch per job"
               f"{' (tiny: ' + str(sizes.sweep_batches) + ' batches)' if sizes.tiny else ''}, process start "
               f"included; training throughput per job: sequential {per_job(results['sequential'])}, parallel "
               f"{per_job(results['parallel'])}; target >= 4x")
