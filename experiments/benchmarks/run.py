#!/usr/bin/env python
"""aelab benchmarks: what the framework costs, how fast its data path is, how quickly the lesson's
model reaches the lesson's quality, and how sweeps scale.

    python experiments/benchmarks/run.py            # full run (minutes), writes experiments/benchmarks/RESULTS.md
    python experiments/benchmarks/run.py --tiny     # a few batches per row: checks that every row still runs
    python experiments/benchmarks/run.py --only overhead,data --out /tmp/bench.md

Rows (ids as in RESULTS.md):
  a  framework overhead  aelab training (real configs composed with Hydra, default logging and callbacks) vs a plain
                         PyTorch loop with the same model, data tensors, batch size and optimizer, alternated in
                         this process; images/s over the same window of training batches.
  m  malloc tuning       aelab training in fresh subprocesses: glibc defaults vs aelab.perf.tune_malloc (what
                         aelab-train does) vs the equivalent MALLOC_* environment variables.
  b  data path           in-memory uint8 batches (aelab) vs torchvision's MNIST + ToTensor per-sample DataLoader,
                         data only and end to end (plain training step), clean and with the lesson's Gaussian noise.
  c  quality per time    experiment=ae_conv_mnist until the test BCE reaches the lesson's 0.0953 (lesson: 25 epochs).
  d  GPU                 seconds per MNIST training epoch of ae_conv_mnist with the data kept on the device
                         (data.on_device), per option: fp32 / batches copied from pinned memory / a per-step loss
                         read / deterministic off / bf16-mixed / torch.compile / channels_last / batch 512 / CUDA
                         graphs (model.compile=reduce-overhead), against the plain loop with its data on the device
                         too; target <= 1 s. When CUDA is present:
                         python experiments/benchmarks/run.py --only gpu --out experiments/benchmarks/RESULTS-gpu.md
  e  sweep throughput    a 4-job grid through aelab-train -m: Hydra's basic (sequential) launcher vs joblib, 2 jobs.
  f  GPU sweep           an 8-job grid on one GPU (one MNIST epoch each): all 8 at once (hydra/launcher=parallel)
                         against one after another, in jobs per minute; target >= 4x.
  g  captured step       seconds per epoch of the eager step against capture_step=true (CUDA graphs, fused Adam)
                         for ae_conv_mnist at batch 128 and 512 and vae_binarized, with the validation loss each
                         reached. Rows d, f and g on a GPU in one go (what a session lent a GPU runs):
                         bash experiments/benchmarks/gpu_session.sh
  p  prior sampling      the VQ-VAE prior's PixelCNN sampling MNIST index maps on the CPU, per maps in one pass, on
                         every torch thread vs one, and a large draw in chunks (aelab.models.vqvae_prior.SAMPLE_CHUNK)
                         vs one pass:
                         python experiments/benchmarks/run.py --only sampling --out experiments/benchmarks/RESULTS-sampling.md

Code: harness.py (clock, sizes, report, composed configs, aelab and plain training), cpu.py (rows a, m, b, c), gpu.py
(row d), sweep.py (rows e, f), gpu_capture.py (row g), sampling.py (row p); this file is the command line and the report.

Every number is the median of repeats; each row reports its spread. Timings on a shared machine are noisy: the load
average at start and end is recorded with the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script: the rows are modules of the experiments.benchmarks package
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402  (after the sys.path line, as the imports below)

from experiments.benchmarks.cpu import (bench_data, bench_malloc, bench_overhead, bench_quality,  # noqa: E402
                                        child_malloc)
from experiments.benchmarks.gpu import bench_gpu  # noqa: E402
from experiments.benchmarks.gpu_capture import bench_capture  # noqa: E402
from experiments.benchmarks.harness import CLOCK, FULL, TINY, Report, find_data_dir  # noqa: E402
from experiments.benchmarks.sampling import bench_sampling  # noqa: E402
from experiments.benchmarks.sweep import bench_gpu_sweep, bench_sweep  # noqa: E402
from experiments.common import machine_info, package_versions  # noqa: E402

DEFAULT_OUT = REPO / "experiments" / "benchmarks" / "RESULTS.md"
SECTIONS = ("overhead", "malloc", "data", "quality", "gpu", "sweep", "gpu_sweep", "capture", "sampling")


def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds all processes have used since boot, CPU seconds of this process and its waited-for children).
    Their difference over the run is what other processes took: unlike the load average, which lags by minutes and
    counts our own threads, it says whether anything else competed for the cores."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system + own.children_user + own.children_system


def machine() -> dict:
    """The shared machine record (experiments.common), plus the load at the start of the run."""
    return {**machine_info(), "load_average_start": list(os.getloadavg()), "cpu_start": cpu_seconds()}


def render(report: Report, info: dict, args, wall: float) -> str:
    cols = ("id", "benchmark", "result", "compared with", "ratio", "detail")
    flags = "".join(f" {flag}" for flag, on in (("--tiny", args.tiny), ("--cpu-time", args.cpu_time)) if on)
    clock = ("CPU seconds of the benchmarking process with one torch thread (--cpu-time)" if args.cpu_time
             else "wall-clock seconds")
    others = info.get("other_processes_cores")
    busy = others is not None and others > 0.1 * info["usable_cores"]  # a tenth of the cores: 0.2 of 2
    lines = ["# aelab benchmarks", "",
             f"`python experiments/benchmarks/run.py{flags}{' --only ' + args.only if args.only else ''}` on "
             f"{info['date']}, {wall / 60:.1f} min in all"
             + (" (**tiny mode: a few batches per row, the numbers mean nothing**)" if args.tiny else "") + ".",
             f"Rows a, m, b and c time {clock}; rows e and f time whole sweeps and row p sampling calls on the wall "
             "clock.", ""]
    if busy and not args.cpu_time:
        lines += [f"**The machine was busy**: other processes used {others:.2f} of its {info['usable_cores']} cores "
                  "on average during this run. With several processes sharing the cores, torch's threads wait for "
                  "each other and wall-clock throughput collapses; rerun on an idle machine or with --cpu-time.", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in report.rows:
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in
                                       (r.id, r.benchmark, r.result, r.baseline, r.ratio, r.detail)) + " |")
    lines += ["", "## Machine", "",
              f"- CPU: {info['cpu']}, {info['cores']} logical cores ({info['usable_cores']} usable), "
              f"{info['memory']} memory; torch threads: {info['torch_threads']}; GPU: {info['gpu']}",
              f"- {info['platform']}, {info['libc']}, Python {info['python']}",
              "- " + package_versions(info),
              f"- git: {info['git_commit']}",
              f"- load average (1/5/15 min) at start {fmt_load(info['load_average_start'])}, "
              f"at end {fmt_load(info['load_average_end'])}; other processes used "
              + ("an unknown share of the CPU" if others is None else f"{others:.2f} cores on average") +
              " during the run"]
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in report.notes]]
    lines += ["", "Raw numbers: the JSON file beside this one.", ""]
    return "\n".join(lines)


def fmt_load(values) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a few batches per row (checks the script, not speed)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"markdown report (default: {DEFAULT_OUT.relative_to(REPO)}; with --tiny a temp file)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time CPU seconds of this process with one torch thread (rows a, m, b, c) instead of wall "
                             "seconds: for a machine that other processes share")
    parser.add_argument("--repeats", type=int, default=None, help="override the number of repeats per row")
    parser.add_argument("--train-batches", type=int, default=None,
                        help="override the training batches per throughput measurement (rows a, m, d)")
    parser.add_argument("--child-malloc", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gpu-device", default=None, help=argparse.SUPPRESS)  # tests: rows d, f, g's code on the cpu
    parser.add_argument("--batches", type=int, default=FULL.batches, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=FULL.warmup, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu_time:
        CLOCK.use_cpu_time()
    if args.tiny:
        torch.set_num_threads(1)  # tiny checks the code paths only; one thread wastes less of a shared machine

    data_dir = find_data_dir()
    os.environ.setdefault("AELAB_DATA_DIR", str(data_dir))
    if args.child_malloc:
        os.environ["AELAB_OUTPUT_DIR"] = os.environ["AELAB_CACHE_DIR"] = str(args.child_malloc)
        child_malloc(args.child_malloc, args.batches, args.warmup)
        return 0

    from aelab.perf import tune_malloc

    applied = tune_malloc()  # the in-process rows run as aelab-train would (row m measures the difference)
    sections = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: {unknown} not in {list(SECTIONS)}")
    sizes = TINY if args.tiny else FULL
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats, malloc_repeats=args.repeats)
    if args.train_batches:
        sizes = dataclasses.replace(sizes, batches=args.train_batches)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # banners and tips would break up the table

    report, start = Report(), time.perf_counter()
    info = machine()
    report.notes.append(f"malloc tuning in this process: {applied or 'not applied'}")
    with tempfile.TemporaryDirectory(prefix="aelab-bench-") as tmp:
        work = Path(tmp)
        os.environ["AELAB_OUTPUT_DIR"] = str(work / "outputs")
        os.environ["AELAB_CACHE_DIR"] = str(work / "cache")
        steps = {"overhead": lambda: bench_overhead(report, sizes, work),
                 "malloc": lambda: bench_malloc(report, sizes, work),
                 "data": lambda: bench_data(report, sizes, work, data_dir),
                 "quality": lambda: bench_quality(report, sizes, work),
                 "gpu": lambda: bench_gpu(report, sizes, work, args.gpu_device),
                 "sweep": lambda: bench_sweep(report, sizes, work),
                 "gpu_sweep": lambda: bench_gpu_sweep(report, sizes, work, args.gpu_device),
                 "capture": lambda: bench_capture(report, sizes, work, args.gpu_device),
                 "sampling": lambda: bench_sampling(report, sizes, work)}
        for name in SECTIONS:
            if name in sections:
                t = time.perf_counter()
                steps[name]()
                report.notes.append(f"{name}: {time.perf_counter() - t:.0f} s")
    wall = time.perf_counter() - start
    info["load_average_end"] = list(os.getloadavg())
    if info["cpu_start"] and (end := cpu_seconds()):
        others = (end[0] - info["cpu_start"][0]) - (end[1] - info["cpu_start"][1])
        info["other_processes_cores"] = max(0.0, others) / wall

    out = args.out or (Path(tempfile.gettempdir()) / "aelab-bench-tiny.md" if args.tiny else DEFAULT_OUT)
    text = render(report, info, args, wall)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": [vars(r) for r in report.rows],
                                                    "raw": report.raw, "tiny": args.tiny, "wall_s": wall},
                                                   indent=2, default=str) + "\n")
    print()
    print(text)
    print(f"written: {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
