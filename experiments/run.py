"""Run the experiment presets through the real CLI and write experiments/RESULTS.md and RESULTS.json.

    python experiments/run.py                       # every preset, full data and epochs (about 2 h 15 min on 2 cores)
    python experiments/run.py --only denoise_mnist denoise_fashion
    python experiments/run.py --tiny --out /tmp/RESULTS.md   # trainer=debug, 1 epoch, runs in a temp dir
    python experiments/run.py --runs-dir outputs/experiments/<time>   # continue an interrupted run.py: jobs that
                                                    # succeeded there are read back, the others run
    python experiments/run.py --runs-dir outputs/experiments/<time> --report-only   # RESULTS from what finished
    python experiments/run.py --only superres_mnist --merge   # rerun one preset (and its variants); every other
                                                    # row is carried over from the RESULTS.json being rewritten
    python experiments/run.py --rewrite             # run nothing: RESULTS.md and .json rewritten from RESULTS.json
                                                    # by this checkout's report code, every row as recorded

The presets are every conf/experiment/*.yaml (less EXCLUDED): a new preset is run and reported without editing this
file; a preset named <name>_lesson is shown beside its reference <name>. Each job is one `aelab-train
experiment=NAME` (or `aelab-eval` for the transfer matrix) in its own run directory; the numbers are read back from
each run's metrics.json, status.json and config.yaml (experiments/report.py). RESULTS.json beside RESULTS.md holds
each run's metrics.json whole. A failed job is reported and the others go on; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: the report and machine helpers are modules of experiments/
    sys.path.insert(0, str(REPO))

from aelab.config import CONFIG_DIR  # noqa: E402  (after the sys.path line, as the imports below)
from aelab.runs import read_json, write_json_atomic  # noqa: E402
from aelab.terms import metric_names, read_terms, recorded_terms  # noqa: E402
from experiments.common import machine_info  # noqa: E402
from experiments.portraits import FOLDERS as PORTRAITS  # noqa: E402
from experiments.report import results_json, results_markdown  # noqa: E402

# Run order of the presets known when this was written (cheap, lesson-order ones first); any other preset follows,
# alphabetically.
ORDER = ["ae_conv_mnist", "ae_latent2_mnist", "latent_noise", "denoise_mnist", "denoise_fashion", "superres_mnist",
         "superres_flowers", "vae_dense_2d", "vae_conv", "aae", "beta_vae", "cvae", "vae_binarized"]
EXCLUDED: frozenset[str] = frozenset()  # presets in conf/experiment that RESULTS.md does not record (none now)


def discover_presets(config_dir: Path = CONFIG_DIR, excluded=EXCLUDED) -> list[str]:
    """Every preset in `config_dir`/experiment, less `excluded`: those of ORDER first, in that order."""
    names = sorted(p.stem for p in (Path(config_dir) / "experiment").glob("*.yaml") if p.stem not in excluded)
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


PRESETS = discover_presets()
# The super-resolution table: (data, factor, downsampling) -> job name (a preset, or a variant of one: VARIANTS run
# right after their preset).
SUPERRES = {("mnist", "x2", "area"): "superres_mnist",
            ("mnist", "x4", "area"): "superres_mnist_x4_area",
            ("mnist", "x2", "bilinear"): "superres_mnist_x2_bilinear",
            ("mnist", "x4", "bilinear"): "superres_mnist_x4_bilinear",
            ("flowers", "x2", "area"): "superres_flowers",
            ("flowers", "x4", "area"): "superres_flowers_x4"}  # a preset of its own
# The bilinear variants switch off sr_resnet's area-consistency projection, which assumes area downsampling.
VARIANTS = {"superres_mnist_x4_area": ("superres_mnist", ["corruption.downsample.factor=4"]),
            "superres_mnist_x2_bilinear": ("superres_mnist", ["corruption.downsample.mode=bilinear",
                                                              "model.consistency=none"]),
            "superres_mnist_x4_bilinear": ("superres_mnist", ["corruption.downsample.factor=4",
                                                              "corruption.downsample.mode=bilinear",
                                                              "model.consistency=none"]),
            # Codes as features on a second dataset: the lesson's conv AE, the reference AE and the conv VAE on
            # Fashion-MNIST (same size, same batches per epoch, so the presets' schedules hold).
            "ae_conv_fashion": ("ae_conv_mnist", ["data=fashion_mnist"]),
            "ae_latent32_fashion": ("ae_latent32_mnist", ["data=fashion_mnist"]),
            "vae_conv_fashion": ("vae_conv", ["data=fashion_mnist"])}
# Transfer matrix: denoisers trained on one dataset, each evaluated on both.
TRANSFER = {"mnist": "denoise_mnist", "fashion_mnist": "denoise_fashion"}
# Cross-domain: the flowers super-resolution presets, each also tested on real portraits (experiments/portraits.py,
# scikit-image's photographs) against bicubic upsampling, for the lesson's "data-specific" claim
CROSS_DOMAIN = ("superres_flowers", "superres_flowers_x4", "superres_flowers_lesson", "superres_flowers_x4_lesson")
PORTRAIT_EVAL = ["data=image_folder", "data.test_fraction=0.5", "data.batch_size=16"]  # half of each folder, seeded
# Second stages: preset -> the preset whose best checkpoint it trains from (model.first_stage); the first stage runs
# earlier in the same --runs-dir (alphabetical order puts it first; with --only, name both or keep the runs dir)
SECOND_STAGES = {"vqvae_prior_mnist": "vqvae_mnist"}
TINY = ["trainer=debug", "trainer.max_epochs=1"]


def tiny_extra(preset: str | None) -> list[str]:
    """--tiny: a preset with the importance-sampled NLL scores 256 test images (not all 10,000)."""
    path = CONFIG_DIR / "experiment" / f"{preset}.yaml"
    nll = preset is not None and path.is_file() and "ImportanceSampledNLL" in path.read_text()
    return ["callbacks.nll.max_images=256"] if nll else []


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
    data: str | None = None  # the data config the run composed (data=...)
    commit: str | None = None  # the git commit the run ran at (its environment.json)
    machine: dict | None = None  # {"cpu", "cores"} of the machine it ran on (carried-over rows keep theirs)
    terms: list[str] = field(default_factory=list)  # the test terms its model declares (terms.json)
    sample_quality: dict | None = None  # a carried-over row's sample_quality.json, as RESULTS.json recorded it


def cli(app: str) -> str:
    """The entry point installed beside this Python (the venv's), else the one on PATH."""
    local = Path(sys.executable).parent / app
    found = str(local) if local.exists() else shutil.which(app)
    if not found:
        sys.exit(f"run.py: error: {app} not found beside {sys.executable} or on PATH; pip install -e . first")
    return found


def train_jobs(only: set[str] | None, presets: list[str] = PRESETS) -> list[Job]:
    jobs = []
    for preset in presets:
        variants = [(preset, [])] + [(v, overrides) for v, (base, overrides) in VARIANTS.items() if base == preset]
        for name, overrides in variants:
            if only is None or name in only or preset in only:
                jobs.append(Job(name, "aelab-train", [f"experiment={preset}", *overrides], preset=preset))
    return jobs


def transfer_name(train_data: str, test_data: str) -> str:
    return f"transfer_{train_data}_on_{test_data}"


def transfer_jobs(trained: dict[str, Job]) -> list[Job]:
    jobs = []
    for train_data, preset in TRANSFER.items():
        job = trained.get(preset)
        if job is None or job.state != "succeeded":
            continue
        ckpt = job.run_dir / "checkpoints" / "best.ckpt"
        for test_data in TRANSFER:
            jobs.append(Job(transfer_name(train_data, test_data), "aelab-eval",
                            [f"ckpt_path={ckpt}", f"data={test_data}"], preset=preset))
    return jobs


def cross_domain_name(preset: str, folder: str) -> str:
    return f"cross_{preset}_on_{folder}"


def cross_domain_jobs(trained: dict[str, Job], runs_dir: Path) -> list[Job]:
    """aelab-eval of each succeeded flowers super-resolution preset on each portraits folder (written into the runs
    directory first); none, with a line that says why, without scikit-image."""
    ready = [trained[p] for p in CROSS_DOMAIN if p in trained and trained[p].state == "succeeded"]
    if not ready:
        return []
    from experiments.portraits import write_portraits

    try:
        folders = write_portraits(runs_dir / "portraits")
    except ImportError:
        print("[run.py] cross-domain rows not run: scikit-image is not installed (pip install -e \".[portraits]\")")
        return []
    return [Job(cross_domain_name(job.name, name), "aelab-eval",
                [f"ckpt_path={job.run_dir / 'checkpoints' / 'best.ckpt'}", *PORTRAIT_EVAL, f"data.data_dir={folder}"],
                preset=job.name) for job in ready for name, folder in folders.items()]


def epochs_of(config: Path) -> int | None:
    try:
        from omegaconf import OmegaConf

        return OmegaConf.load(config).trainer.get("max_epochs")
    except Exception:  # no config written (the job failed early)
        return None


def data_of(hydra_yaml: Path) -> str | None:
    """The data config group the run chose (Hydra records its choices in .hydra/hydra.yaml)."""
    try:
        from omegaconf import OmegaConf

        return OmegaConf.load(hydra_yaml).hydra.runtime.choices.get("data")
    except Exception:  # no Hydra record (the job failed before Hydra wrote it)
        return None


def read_back(job: Job, status: dict) -> None:
    """The job's state, error, metrics (exactly its metrics.json), epochs, data and wall time from its run
    directory."""
    job.state = status.get("state") or "not run"
    job.error = status.get("error")
    job.metrics = (read_json(job.run_dir / "metrics.json") or {}) if job.state == "succeeded" else {}
    job.epochs = epochs_of(job.run_dir / "config.yaml")
    job.data = data_of(job.run_dir / ".hydra" / "hydra.yaml")
    job.commit = (read_json(job.run_dir / "environment.json") or {}).get("git_commit")
    job.terms = [name.split("/", 1)[1] for name in metric_names(read_terms(job.run_dir), "test")]


def reuse(job: Job, report_only: bool) -> bool:
    """A job whose run directory already succeeded (an earlier, interrupted run.py with the same --runs-dir) is
    read back, not run again; with --report-only nothing runs and unfinished jobs are reported as they stand."""
    status = read_json(job.run_dir / "status.json") or {}
    if status.get("state") != "succeeded" and not report_only:
        return False
    read_back(job, status)
    if job.state == "succeeded":
        job.wall_s = status["updated"] - status["started"] if "started" in status else None
    print(f"[run.py]   {job.name}: {job.state} (read back from {job.run_dir})", flush=True)
    return True


def run_job(job: Job, runs_dir: Path, tiny: bool, report_only: bool = False) -> None:
    job.run_dir = runs_dir / job.name
    extra = (TINY + tiny_extra(job.preset)) if tiny else []
    if job.app == "aelab-eval" and tiny:
        extra = ["trainer=debug"]
    if job.preset in SECOND_STAGES and job.app == "aelab-train":
        extra = [*extra, f"model.first_stage={runs_dir / SECOND_STAGES[job.preset] / 'checkpoints' / 'best.ckpt'}"]
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
    if rc != 0 and status.get("state") in ("succeeded", "running"):  # killed before it could record the failure
        status["state"] = "failed"
    read_back(job, {"state": "failed", **status})
    job.error = job.error or (None if rc == 0 else f"exit code {rc}; see {log}")
    print(f"[run.py]   {job.state} in {job.wall_s:.0f} s"
          + (f", test/psnr {job.metrics['test/psnr']:.2f}" if "test/psnr" in job.metrics else "")
          + (f": {job.error}" if job.error and job.state != "succeeded" else ""), flush=True)


def carried_jobs(results: Path, fresh: set[str]) -> tuple[list[Job], list[Job], dict]:
    """--merge: the train and transfer jobs of `results` (an earlier RESULTS.json) not in `fresh`, as Jobs rebuilt
    from their records (metrics, epochs, wall time, command, data, commit and state exactly as recorded), and what
    the file says of itself (written, commit, machine)."""
    old = read_json(results)
    if old is None:
        sys.exit(f"run.py: error: --merge: {results} is missing or not JSON; run without --merge first")
    if old.get("tiny"):
        sys.exit(f"run.py: error: --merge: {results} holds --tiny runs; only full runs are carried over")

    earlier = old.get("carried_over") or {}

    def job(name: str, record: dict, app: str) -> Job:
        # records written before jobs kept their machine: the one of the file they were run for
        source = earlier["machine"] if name in earlier.get("jobs", ()) else old["machine"]
        ran_on = record.get("machine") or where(source)
        return Job(name, app, [], preset=record.get("preset", name), command=shlex.split(record["command"]),
                   wall_s=record["wall_s"], state=record["state"], error=record.get("error"),
                   metrics=record["metrics"] or {}, epochs=record["epochs"], data=record["data"],
                   commit=record["commit"], machine=ran_on,
                   terms=record.get("terms") or recorded_terms(record["metrics"] or {}),
                   sample_quality=record.get("sample_quality"))

    trained = [job(n, r, "aelab-train") for section in ("presets", "variants")
               for n, r in old[section].items() if n not in fresh]
    transfer = [job(n, r, "aelab-eval") for n, r in old["transfer"].items() if r["preset"] not in fresh]
    return trained, transfer, {k: old.get(k) for k in ("written", "commit", "machine")}


def where(machine: dict) -> dict:
    """What a row keeps of the machine it ran on: enough to tell whether wall times compare."""
    return {"cpu": machine.get("cpu"), "cores": machine.get("cores")}


def merged(fresh: list[Job], carried: list[Job], order: list[str]) -> list[Job]:
    """The fresh jobs and the carried ones in `order` (run.py's job order); a job of neither goes last."""
    by_name = {j.name: j for j in carried} | {j.name: j for j in fresh}
    rank = {name: i for i, name in enumerate(order)}
    return sorted(by_name.values(), key=lambda j: rank.get(j.name, len(order)))


def job_order() -> list[str]:
    """Every row's name in run.py's job order: the presets and variants, the transfer matrix, the cross-domain rows."""
    return [j.name for j in train_jobs(None)] + [transfer_name(a, b) for a in TRANSFER for b in TRANSFER] + [
        cross_domain_name(p, f) for p in CROSS_DOMAIN for f in PORTRAITS]


def rewrite(out: Path, started: dt.datetime) -> int:
    """--rewrite: `out` and its JSON written again from that JSON's records by this checkout's report code."""
    carried_train, carried_transfer, source = carried_jobs(out.with_suffix(".json"), set())
    order = job_order()
    jobs, transfer = merged([], carried_train, order), merged([], carried_transfer, order)
    source["jobs"] = sorted(j.name for j in jobs + transfer)
    code = write_results(out, jobs, transfer, machine_info(), False, started, source)
    print(f"[run.py] rewrote {out} and {out.with_suffix('.json').name} from its records ({len(source['jobs'])} rows)")
    return code


def write_results(out: Path, jobs: list, transfer: list, machine: dict, tiny: bool, started: dt.datetime,
                  source: dict | None) -> int:
    """RESULTS.md and its JSON from these jobs; the exit code: 1 if any did not succeed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(results_markdown(jobs, transfer, machine, tiny, started, SUPERRES, list(TRANSFER), source,
                                    cross_domain=(CROSS_DOMAIN, PORTRAITS)))
    write_json_atomic(out.with_suffix(".json"), results_json(jobs, transfer, machine, tiny, started, source))
    return 1 if any(j.state != "succeeded" for j in jobs + transfer) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = PRESETS + list(VARIANTS)
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these ({', '.join(names)})")
    parser.add_argument("--tiny", action="store_true", help="trainer=debug, 1 epoch, into a temp dir")
    parser.add_argument("--out", type=Path, help="RESULTS file (default: experiments/RESULTS.md; --tiny: in the "
                                                 "runs directory, never the real one); RESULTS.json goes beside it")
    parser.add_argument("--runs-dir", type=Path, help="where the run directories go (default: "
                                                      "$AELAB_OUTPUT_DIR or outputs/, under experiments/<time>; "
                                                      "--tiny: a new temp dir)")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: write RESULTS from the succeeded runs already in --runs-dir")
    parser.add_argument("--merge", action="store_true",
                        help="with --only: keep every other job's row from the RESULTS.json being rewritten "
                             "(each keeps its own commit and wall time; RESULTS.md lists what was carried over)")
    parser.add_argument("--rewrite", action="store_true",
                        help="run and read no runs: rewrite RESULTS.md and .json from the RESULTS.json beside --out "
                             "with this checkout's report code, every row carried over as recorded")
    args = parser.parse_args(argv)
    if args.rewrite and (args.only or args.tiny or args.report_only or args.merge or args.runs_dir):
        parser.error("--rewrite runs nothing: it takes only --out (no --only, --tiny, --report-only, --merge or "
                     "--runs-dir)")
    if args.merge and (args.tiny or not args.only):
        parser.error("--merge needs --only (the jobs to rerun) and full runs (not --tiny)")
    if args.report_only and not args.runs_dir:
        parser.error("--report-only needs --runs-dir (the folder of an earlier run.py)")
    if args.only and (unknown := sorted(set(args.only) - set(names))):
        parser.error(f"--only {' '.join(unknown)}: unknown; choose from {', '.join(names)}")

    started = dt.datetime.now()
    if args.rewrite:
        return rewrite(args.out or REPO / "experiments" / "RESULTS.md", started)
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
    transfer = transfer_jobs({j.name: j for j in jobs}) + cross_domain_jobs({j.name: j for j in jobs}, runs_dir)
    for job in transfer:
        run_job(job, runs_dir, args.tiny, args.report_only)

    machine = machine_info()
    for job in jobs + transfer:  # run (or read back from --runs-dir) here
        job.machine = where(machine)
    carried, source = [], None
    if args.merge:
        fresh = {j.name for j in jobs}
        carried_train, carried_transfer, source = carried_jobs(out.with_suffix(".json"), fresh)
        carried = carried_train + carried_transfer
        order = job_order()
        jobs, transfer = merged(jobs, carried_train, order), merged(transfer, carried_transfer, order)
        source["jobs"] = sorted(j.name for j in carried)

    code = write_results(out, jobs, transfer, machine, args.tiny, started, source)
    print(f"[run.py] wrote {out} and {out.with_suffix('.json').name} (runs in {runs_dir})")
    return code


if __name__ == "__main__":
    sys.exit(main())
