"""Run the experiment presets through the real CLI and write experiments/RESULTS.md.

    python experiments/run.py                       # every preset, full data and epochs (about 35 min on 2 cores)
    python experiments/run.py --only denoise_mnist denoise_fashion
    python experiments/run.py --tiny --out /tmp/RESULTS.md   # trainer=debug, 1 epoch, runs in a temp dir
    python experiments/run.py --runs-dir outputs/experiments/<time>   # continue an interrupted run.py: jobs that
                                                    # succeeded there are read back, the others run
    python experiments/run.py --runs-dir outputs/experiments/<time> --report-only   # RESULTS from what finished

Each job is one `aelab-train experiment=NAME` (or `aelab-eval` for the transfer matrix) in its own run directory;
the numbers in RESULTS.md are read back from each run's metrics.json, status.json and config.yaml. A failed job is
reported and the others go on; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# In this order: cheap, lesson-order presets first.
PRESETS = ["ae_conv_mnist", "ae_latent2_mnist", "latent_noise", "denoise_mnist", "denoise_fashion", "superres_mnist",
           "superres_flowers", "vae_dense_2d", "vae_conv", "aae", "beta_vae", "cvae", "vae_binarized"]
# Super-resolution variants, run right after their preset: (data, factor, downsampling) -> job name.
SUPERRES = {("mnist", "x2", "area"): "superres_mnist",
            ("mnist", "x4", "area"): "superres_mnist_x4_area",
            ("mnist", "x2", "bilinear"): "superres_mnist_x2_bilinear",
            ("mnist", "x4", "bilinear"): "superres_mnist_x4_bilinear",
            ("flowers", "x2", "area"): "superres_flowers",
            ("flowers", "x4", "area"): "superres_flowers_x4_area"}
VARIANTS = {"superres_mnist_x4_area": ("superres_mnist", ["corruption.downsample.factor=4"]),
            "superres_mnist_x2_bilinear": ("superres_mnist", ["corruption.downsample.mode=bilinear"]),
            "superres_mnist_x4_bilinear": ("superres_mnist", ["corruption.downsample.factor=4",
                                                              "corruption.downsample.mode=bilinear"]),
            "superres_flowers_x4_area": ("superres_flowers", ["corruption.downsample.factor=4"])}
# Transfer matrix: denoisers trained on one dataset, each evaluated on both.
TRANSFER = {"mnist": "denoise_mnist", "fashion_mnist": "denoise_fashion"}
TINY = ["trainer=debug", "trainer.max_epochs=1"]
TINY_EXTRA = {"vae_binarized": ["callbacks.nll.max_images=256"]}  # the NLL otherwise covers all 10,000 test images
EXTRA_METRICS = ("test/kl_loss", "test/nll", "test/d_acc")
VERSIONS = ("aelab", "torch", "torchvision", "lightning", "hydra-core", "torchmetrics", "tensorboard")


@dataclass
class Job:
    name: str
    app: str  # aelab-train | aelab-eval
    args: list[str]
    preset: str | None = None
    run_dir: Path | None = None
    command: list[str] = field(default_factory=list)
    wall_s: float | None = None
    state: str = "not run"
    error: str | None = None
    metrics: dict = field(default_factory=dict)
    epochs: int | None = None


def cli(app: str) -> str:
    """The entry point installed beside this Python (the venv's), else the one on PATH."""
    local = Path(sys.executable).parent / app
    found = str(local) if local.exists() else shutil.which(app)
    if not found:
        sys.exit(f"run.py: error: {app} not found beside {sys.executable} or on PATH; pip install -e . first")
    return found


def train_jobs(only: set[str] | None) -> list[Job]:
    jobs = []
    for preset in PRESETS:
        variants = [(preset, [])] + [(v, overrides) for v, (base, overrides) in VARIANTS.items() if base == preset]
        for name, overrides in variants:
            if only is None or name in only or preset in only:
                jobs.append(Job(name, "aelab-train", [f"experiment={preset}", *overrides], preset=preset))
    return jobs


def transfer_jobs(trained: dict[str, Job]) -> list[Job]:
    jobs = []
    for train_data, preset in TRANSFER.items():
        job = trained.get(preset)
        if job is None or job.state != "succeeded":
            continue
        ckpt = job.run_dir / "checkpoints" / "best.ckpt"
        for test_data in TRANSFER:
            jobs.append(Job(f"transfer_{train_data}_on_{test_data}", "aelab-eval",
                            [f"ckpt_path={ckpt}", f"data={test_data}"], preset=preset))
    return jobs


def reuse(job: Job, report_only: bool) -> bool:
    """A job whose run directory already succeeded (an earlier, interrupted run.py with the same --runs-dir) is
    read back, not run again; with --report-only nothing runs and unfinished jobs are reported as they stand."""
    status = read_json(job.run_dir / "status.json") or {}
    if status.get("state") != "succeeded" and not report_only:
        return False
    job.state = status.get("state") or "not run"
    job.error = status.get("error")
    if job.state == "succeeded":
        job.metrics = read_json(job.run_dir / "metrics.json") or {}
        job.wall_s = status["updated"] - status["started"] if "started" in status else None
        job.epochs = epochs_of(job.run_dir / "config.yaml")
    print(f"[run.py]   {job.name}: {job.state} (read back from {job.run_dir})", flush=True)
    return True


def run_job(job: Job, runs_dir: Path, tiny: bool, report_only: bool = False) -> None:
    job.run_dir = runs_dir / job.name
    extra = (TINY + TINY_EXTRA.get(job.preset or "", [])) if tiny else []
    if job.app == "aelab-eval" and tiny:
        extra = ["trainer=debug"]
    args = [*job.args, *extra, f"hydra.run.dir={job.run_dir}"]
    job.command = [job.app, *args]
    if reuse(job, report_only):
        return
    if job.run_dir.exists():  # an unfinished earlier attempt: start clean, never mix two runs' events
        shutil.rmtree(job.run_dir)
    print(f"[run.py] {shlex.join(job.command)}", flush=True)
    log = runs_dir / f"{job.name}.out"
    start = time.monotonic()
    with open(log, "w") as out:
        rc = subprocess.run([cli(job.app), *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    job.wall_s = time.monotonic() - start
    status = read_json(job.run_dir / "status.json") or {}
    job.state = status.get("state") or "failed"
    if rc != 0 and job.state in ("succeeded", "running"):  # killed before it could record the failure
        job.state = "failed"
    job.metrics = (read_json(job.run_dir / "metrics.json") or {}) if job.state == "succeeded" else {}
    job.error = status.get("error") or (None if rc == 0 else f"exit code {rc}; see {log}")
    job.epochs = epochs_of(job.run_dir / "config.yaml")
    print(f"[run.py]   {job.state} in {job.wall_s:.0f} s"
          + (f", test/psnr {job.metrics['test/psnr']:.2f}" if "test/psnr" in job.metrics else "")
          + (f": {job.error}" if job.error and job.state != "succeeded" else ""), flush=True)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def epochs_of(config: Path) -> int | None:
    try:
        from omegaconf import OmegaConf

        return OmegaConf.load(config).trainer.get("max_epochs")
    except Exception:  # no config written (the job failed early)
        return None


# --- RESULTS.md ----------------------------------------------------------------------------------------------------
def fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def short_command(job: Job) -> str:
    """The command without its run directory, paths inside the checkout relative to it (as a reader would type)."""
    args = [a.replace(f"{REPO}/", "") for a in job.command if not a.startswith("hydra.run.dir=")]
    return shlex.join(args)


def machine() -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [f"- machine: {platform.platform()}, {cpu}, {os.cpu_count()} logical CPUs"]
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU runs)"
        lines.append(f"- GPU: {gpu}; torch threads: {torch.get_num_threads()}")
    except Exception:
        pass
    versions = []
    for name in VERSIONS:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    lines.append(f"- Python {platform.python_version()}; " + ", ".join(versions))
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        lines.append(f"- git: {commit or 'unknown'}")
    except (OSError, subprocess.SubprocessError):
        pass
    return lines


def main_baseline(metrics: dict) -> tuple[str | None, float | None]:
    """Which baseline `test/psnr_baseline` is, by the callback's rule (aelab.baselines.relevant): bicubic where it
    was scored (super-resolution), else identity (other corruptions), else PCA (plain autoencoders)."""
    value = metrics.get("test/psnr_baseline")
    for name in ("bicubic", "identity", "pca"):
        if f"test/psnr_baseline_{name}" in metrics:
            return name, value
    return None, value


def results_markdown(jobs: list[Job], transfer: list[Job], tiny: bool, started: dt.datetime) -> str:
    out = ["# Experiment results", "",
           f"Written by `python experiments/run.py{' --tiny' if tiny else ''}` on "
           f"{started:%Y-%m-%d %H:%M} (local time); every number is read from the run's `metrics.json`.", ""]
    if tiny:
        out += ["**Tiny mode** (`trainer=debug trainer.max_epochs=1`: a few batches): the numbers only show that the "
                "runner works, not how good the models are.", ""]
    out += machine() + [""]
    out += ["## Presets (test split)", "",
            "PSNR in dB, per image, averaged over the test images; baselines are scored on the very same corrupted "
            "test batches. *main* is the baseline the model must beat (bicubic for super-resolution, the corrupted "
            "input for denoising, PCA with the model's latent size for plain autoencoders).", "",
            "| preset | epochs | wall | test loss | PSNR | SSIM | main baseline PSNR | model − main | identity | "
            "bicubic | PCA | mean | other |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    not_beating = []
    for job in jobs:
        m = job.metrics
        if job.state != "succeeded":
            out.append(f"| {job.name} | {job.epochs or '–'} | {fmt(job.wall_s, 0)} s | **{job.state}** | "
                       + " | ".join(["–"] * 9) + " |")
            continue
        name, base = main_baseline(m)
        psnr = m.get("test/psnr")
        gain = psnr - base if psnr is not None and base is not None else None
        other = ", ".join(f"{k.split('/')[1]} {fmt(m[k])}" for k in EXTRA_METRICS if k in m) or ""
        out.append(f"| {job.name} | {job.epochs} | {fmt(job.wall_s, 0)} s | {fmt(m.get('test/loss'), 4)} | "
                   f"{fmt(psnr)} | {fmt(m.get('test/ssim'), 3)} | {fmt(base)} ({name}) | {fmt(gain)} | "
                   f"{fmt(m.get('test/psnr_baseline_identity'))} | {fmt(m.get('test/psnr_baseline_bicubic'))} | "
                   f"{fmt(m.get('test/psnr_baseline_pca'))} | {fmt(m.get('test/psnr_baseline_mean'))} | {other} |")
        pca = m.get("test/psnr_baseline_pca")
        if psnr is not None and pca is not None and psnr <= pca:
            not_beating.append(f"- **{job.name}**: model {psnr:.2f} dB ≤ PCA {pca:.2f} dB")
    out += ["", "### Where the model does not beat PCA (same latent size, fitted on clean training images)", ""]
    out += not_beating or ["- none: every model that ran beats its PCA baseline."]
    out += ["", "### Commands", "", "Each job ran as below, plus `hydra.run.dir=<its run directory>`:", ""]
    out += [f"- {job.name}: `{short_command(job)}`" for job in jobs + transfer if job.command]

    out += ["", "## Transfer matrix (denoising, test PSNR in dB)", "",
            "Rows: the dataset the denoiser was trained on; columns: the dataset it is tested on (`aelab-eval "
            "ckpt_path=… data=…`, same Gaussian noise). In brackets: the noisy input's PSNR.", ""]
    cells = {tuple(j.name.removeprefix("transfer_").split("_on_")): j for j in transfer}
    if cells:
        out += ["| trained on \\ tested on | " + " | ".join(TRANSFER) + " |", "|---" * (len(TRANSFER) + 1) + "|"]
        for train_data in TRANSFER:
            row = []
            for test_data in TRANSFER:
                j = cells.get((train_data, test_data))
                if j is None:
                    row.append("not run")
                elif j.state != "succeeded":
                    row.append(f"**{j.state}**")
                else:
                    row.append(f"{fmt(j.metrics.get('test/psnr'))} "
                               f"({fmt(j.metrics.get('test/psnr_baseline_identity'))})")
            out.append(f"| {train_data} | " + " | ".join(row) + " |")
    else:
        out.append("Not run (needs denoise_mnist and/or denoise_fashion).")

    out += ["", "## Super-resolution variants (test PSNR in dB)", ""]
    by_name = {j.name: j for j in jobs}
    rows = [(key, by_name[name]) for key, name in SUPERRES.items() if name in by_name]
    if rows:
        out += ["| data | factor | downsampling | model | bicubic | nearest (identity) | model − bicubic | run |",
                "|---|---|---|---|---|---|---|---|"]
        for (data, factor, mode), j in rows:
            m = j.metrics
            psnr, bic = m.get("test/psnr"), m.get("test/psnr_baseline_bicubic")
            gain = psnr - bic if psnr is not None and bic is not None else None
            out.append(f"| {data} | {factor} | {mode} | {fmt(psnr)} | {fmt(bic)} | "
                       f"{fmt(m.get('test/psnr_baseline_identity'))} | {fmt(gain)} | {j.name} ({j.state}) |")
    else:
        out.append("Not run (needs superres_mnist).")

    failed = [j for j in jobs + transfer if j.state != "succeeded"]
    if failed:
        out += ["", "## Failures", ""] + [f"- {j.name}: {j.state}: {j.error}" for j in failed]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = PRESETS + list(VARIANTS)
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these ({', '.join(names)})")
    parser.add_argument("--tiny", action="store_true", help="trainer=debug, 1 epoch, into a temp dir")
    parser.add_argument("--out", type=Path, help="RESULTS file (default: experiments/RESULTS.md; --tiny: in the "
                                                 "runs directory, never the real one)")
    parser.add_argument("--runs-dir", type=Path, help="where the run directories go (default: "
                                                      "$AELAB_OUTPUT_DIR or outputs/, under experiments/<time>; "
                                                      "--tiny: a new temp dir)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write RESULTS from the succeeded runs already in --runs-dir")
    args = parser.parse_args(argv)
    if args.report_only and not args.runs_dir:
        parser.error("--report-only needs --runs-dir (the folder of an earlier run.py)")
    if args.only and (unknown := sorted(set(args.only) - set(names))):
        parser.error(f"--only {' '.join(unknown)}: unknown; choose from {', '.join(names)}")

    started = dt.datetime.now()
    if args.runs_dir:
        runs_dir = args.runs_dir
    elif args.tiny:
        runs_dir = Path(tempfile.mkdtemp(prefix="aelab-experiments-"))
    else:
        root = Path(os.environ.get("AELAB_OUTPUT_DIR", REPO / "outputs"))
        runs_dir = root / "experiments" / f"{started:%Y-%m-%d_%H-%M-%S}"
    runs_dir = runs_dir.resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    out = args.out or (runs_dir / "RESULTS.md" if args.tiny else REPO / "experiments" / "RESULTS.md")

    jobs = train_jobs(set(args.only) if args.only else None)
    for job in jobs:
        run_job(job, runs_dir, args.tiny, args.report_only)
    transfer = transfer_jobs({j.name: j for j in jobs})
    for job in transfer:
        run_job(job, runs_dir, args.tiny, args.report_only)

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(results_markdown(jobs, transfer, args.tiny, started))
    print(f"[run.py] wrote {out} (runs in {runs_dir})")
    return 1 if any(j.state != "succeeded" for j in jobs + transfer) else 0


if __name__ == "__main__":
    sys.exit(main())
