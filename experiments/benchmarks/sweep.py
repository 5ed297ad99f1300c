"""Row e: a 4-job grid through `aelab-train -m` (fresh processes, whole sweeps on the wall clock): Hydra's basic
(sequential) launcher vs the parallel launcher with 2 jobs."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from aelab.runs import read_json
from experiments.benchmarks.harness import Report, Sizes, rate


def bench_sweep(report: Report, sizes: Sizes, work: Path) -> None:
    print("e: sweep throughput (4-job grid)", flush=True)
    from aelab.config import CONFIG_DIR

    grid = ["optimizer.lr=1e-3,2e-3", "corruption=none,gaussian_noise"]
    common = [*grid, "trainer.max_epochs=1", f"++trainer.limit_train_batches={sizes.sweep_batches}",
              "++trainer.limit_val_batches=2", "test=false", "trainer.enable_progress_bar=false",
              "trainer.enable_model_summary=false", "+callbacks.throughput._target_=aelab.callbacks.Throughput",
              "+callbacks.throughput.out=${paths.output_dir}/throughput.json",
              f"+callbacks.throughput.warmup_batches={sizes.warmup}"]
    if sizes.tiny:
        common.append("threads=1")  # tiny checks the code path; keep the shared machine usable
    if (CONFIG_DIR / "hydra" / "launcher" / "parallel.yaml").exists():
        parallel, launcher_name = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"], "hydra/launcher=parallel"
    else:
        parallel, launcher_name = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "hydra/launcher=joblib"
    results = {}
    for name, launcher in (("sequential", []), ("joblib", parallel)):
        sweep_dir = work / f"sweep-{name}"
        cmd = [sys.executable, "-m", "aelab.train", "-m", *common, *launcher, f"hydra.sweep.dir={sweep_dir}"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "AELAB_OUTPUT_DIR": str(work / "outputs")})
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"sweep ({name}) failed:\n{proc.stderr[-3000:]}")
        statuses = [read_json(p) or {} for p in sorted(sweep_dir.glob("*/status.json"))]
        meters = [read_json(p) for p in sorted(sweep_dir.glob("*/throughput.json"))]
        rates = [m["images_per_s"] for m in meters if m]
        if [s.get("state") for s in statuses].count("succeeded") != 4:
            errors = [f"{s.get('state')}: {s.get('error')}" for s in statuses]
            raise RuntimeError(f"sweep ({name}): expected 4 succeeded jobs, got {errors}")
        results[name] = {"wall_s": wall, "job_images_per_s": rates}
    report.raw["sweep"] = {**results, "grid": grid, "launcher": launcher_name}
    seq, par = results["sequential"]["wall_s"], results["joblib"]["wall_s"]
    per_job = {k: statistics.median(v["job_images_per_s"]) if v["job_images_per_s"] else float("nan")
               for k, v in results.items()}
    report.add("e", "sweep: 4-job grid, wall time of `aelab-train -m` (process start included)",
               f"{launcher_name} n_jobs=2: {par:.1f} s", f"sequential (basic launcher): {seq:.1f} s",
               f"{seq / par:.2f}x", f"grid {' '.join(grid)}, {sizes.sweep_batches} batches/job; training "
               f"throughput per job: sequential {rate(per_job['sequential'])}, parallel {rate(per_job['joblib'])}")
