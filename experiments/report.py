"""RESULTS.md and RESULTS.json from the jobs experiments/run.py ran (or read back): every number comes from a run's
metrics.json, status.json and config.yaml. A job here is anything with the attributes of run.py's Job."""

from __future__ import annotations

import shlex
from pathlib import Path

from aelab.baselines import NAMES as BASELINES, relevant

REPO = Path(__file__).resolve().parents[1]
EXTRA_METRICS = ("test/nll",)  # shown after the model's own test terms (those equal to test/loss are not repeated)
LESSON_SUFFIX = "_lesson"
# Published test NLL on dynamically binarized MNIST, for scale only (other architectures, hundreds of epochs,
# 5000 importance samples): the two ends of Burda et al. (2015), "Importance Weighted Autoencoders", Table 1.
PUBLISHED_NLL = ("published (Burda et al., 2015, \"Importance Weighted Autoencoders\", Table 1, dynamically binarized "
                 "MNIST): plain VAE (one stochastic layer, trained on the ELBO, k=1) 86.76 nats; best IWAE (two "
                 "stochastic layers, k=50) 82.90 nats")
PUBLISHED_NLL_SHORT = "published VAE 86.76, IWAE 82.90 (Burda et al., 2015)"
PROBE_BUDGETS = ("10", "100", "all")
PROBE_KINDS = (("linear", "linear"), ("knn", "k-NN"))
PROBES = tuple((kind, label, budget) for kind, label in PROBE_KINDS for budget in PROBE_BUDGETS)
SAMPLERS = ("prior", "gaussian", "gmm")  # aelab.samplers.NAMES, in the order of the sample-quality table


def fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def main_baseline(metrics: dict) -> tuple[str | None, float | None]:
    """The baseline the model must beat and its test PSNR, by the package's rule (aelab.baselines.relevant) applied
    to the baselines the run scored: bicubic is only scored for super-resolution, identity only when corrupted."""
    names = [n for n in BASELINES if f"test/psnr_baseline_{n}" in metrics]
    name = relevant(names, super_resolution="bicubic" in names, corrupted="identity" in names)
    if name is None:
        return None, metrics.get("test/psnr_baseline")
    return name, metrics[f"test/psnr_baseline_{name}"]


def short_command(job) -> str:
    """The command without its run directory, paths inside the checkout relative to it (as a reader would type)."""
    return shlex.join(a.replace(f"{REPO}/", "") for a in job.command if not a.startswith("hydra.run.dir="))


def lesson_pairs(jobs: list) -> list[tuple[object, object | None]]:
    """(lesson job, reference job) for every job named <name>_lesson: the reference is the job named <name>, else
    the one job whose name extends it (superres_flowers_x4_lesson -> superres_flowers_x4_area)."""
    by_name = {j.name: j for j in jobs}
    pairs = []
    for job in jobs:
        if not job.name.endswith(LESSON_SUFFIX):
            continue
        base = job.name.removesuffix(LESSON_SUFFIX)
        candidates = [j for n, j in by_name.items() if n.startswith(base + "_") and not n.endswith(LESSON_SUFFIX)]
        pairs.append((job, by_name.get(base) or (candidates[0] if len(candidates) == 1 else None)))
    return pairs


# --- RESULTS.json --------------------------------------------------------------------------------------------------
def job_record(job) -> dict:
    name, psnr = main_baseline(job.metrics)
    record = {"metrics": job.metrics if job.state == "succeeded" else None, "epochs": job.epochs,
              "wall_s": job.wall_s, "command": short_command(job), "baseline": {"name": name, "psnr": psnr},
              "state": job.state, "data": job.data, "commit": job.commit, "machine": job.machine, "terms": job.terms}
    if job.error and job.state != "succeeded":
        record["error"] = job.error
    quality = sample_quality_record(job)
    if quality is not None:
        record["sample_quality"] = quality
    return record


def sample_quality_record(job) -> dict | None:
    """The run's sample_quality.json (feature space, counts, every set's scores), or None; a row carried over by
    --merge has no run directory here and keeps the record RESULTS.json holds of it."""
    import json

    if getattr(job, "sample_quality", None) is not None:
        return job.sample_quality
    run_dir = getattr(job, "run_dir", None)
    path = Path(run_dir) / "sample_quality.json" if run_dir else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def results_json(jobs: list, transfer: list, machine: dict, tiny: bool, started, carried: dict | None = None) -> dict:
    """{"machine", "commit", "presets": {preset: {"metrics": its metrics.json, "epochs", "wall_s", "command", "data",
    "commit" and "machine" ({"cpu", "cores"}) of the run, "baseline": {"name", "psnr"}, "state"}}, "variants": {the
    same, plus "preset"}, "transfer": {the same}}; with `carried` (run.py --merge: {"jobs", "written", "commit",
    "machine"} of the file the carried-over jobs come from) also "carried_over": that."""
    presets = {j.name: job_record(j) for j in jobs if j.name == j.preset}
    variants = {j.name: {**job_record(j), "preset": j.preset} for j in jobs if j.name != j.preset}
    return {"machine": machine, "commit": machine.get("git_commit"), "written": started.isoformat(timespec="seconds"),
            "tiny": tiny, "presets": presets, "variants": variants,
            "transfer": {j.name: {**job_record(j), "preset": j.preset} for j in transfer},
            **({"carried_over": carried} if carried else {})}


# --- RESULTS.md ----------------------------------------------------------------------------------------------------
def machine_lines(info: dict) -> list[str]:
    from experiments.common import package_versions

    gpu = info["gpu"] if info["gpu"] != "none" else "none (CPU runs)"
    return [f"- machine: {info['platform']}, {info['cpu']}, {info['cores']} logical CPUs"
            + (f", {info['memory']} memory" if info.get("memory") else ""),
            f"- GPU: {gpu}; torch threads: {info['torch_threads']}",
            f"- Python {info['python']}; {package_versions(info)}",
            f"- git: {info.get('git_commit') or 'unknown'}"]


def other_metrics(job) -> list[str]:
    """The row's last column: the test value of each term the job's model declares (but a term that is the loss
    itself, as an autoencoder's reconstruction term is), then the NLL where it was measured."""
    m = job.metrics
    terms = [f"test/{t}" for t in job.terms if f"test/{t}" in m and m[f"test/{t}"] != m.get("test/loss")]
    return [*terms, *(k for k in EXTRA_METRICS if k in m)]


def preset_rows(jobs: list) -> tuple[list[str], list[str]]:
    """The presets table's rows, and the runs whose model does not beat PCA."""
    rows, not_beating = [], []
    for job in jobs:
        m = job.metrics
        if job.state != "succeeded":
            rows.append(f"| {job.name} | {job.epochs or '–'} | {fmt(job.wall_s, 0)} s | **{job.state}** | "
                        + " | ".join(["–"] * 9) + " |")
            continue
        name, base = main_baseline(m)
        psnr = m.get("test/psnr")
        gain = psnr - base if psnr is not None and base is not None else None
        other = ", ".join(f"{k.split('/')[1]} {fmt(m[k])}" for k in other_metrics(job))
        rows.append(f"| {job.name} | {job.epochs} | {fmt(job.wall_s, 0)} s | {fmt(m.get('test/loss'), 4)} | "
                    f"{fmt(psnr)} | {fmt(m.get('test/ssim'), 3)} | {fmt(base)}{f' ({name})' if name else ''} | {fmt(gain)} | "
                    f"{fmt(m.get('test/psnr_baseline_identity'))} | {fmt(m.get('test/psnr_baseline_bicubic'))} | "
                    f"{fmt(m.get('test/psnr_baseline_pca'))} | {fmt(m.get('test/psnr_baseline_mean'))} | {other} |")
        pca = m.get("test/psnr_baseline_pca")
        if psnr is not None and pca is not None and psnr <= pca:
            not_beating.append(f"- **{job.name}**: model {psnr:.2f} dB ≤ PCA {pca:.2f} dB")
    return rows, not_beating


def _baseline_cell(lesson: dict, reference: dict, key: str, digits: int, label: bool) -> str:
    """The baseline beside a lesson/reference pair; both when they differ (PCA's size follows each model's code)."""
    def one(m: dict) -> str:
        name, psnr = main_baseline(m)
        value = psnr if key == "test/psnr" else m.get("test/ssim_baseline")
        return fmt(value, digits) + (f" ({name})" if label and name and value is not None else "")

    a, b = one(lesson), one(reference) if reference else "–"
    return a if not reference or a == b else f"lesson: {a}; reference: {b}"


def lesson_section(jobs: list) -> list[str]:
    pairs = lesson_pairs(jobs)
    if not pairs:
        return []
    out = ["## Lesson models vs reference models (test split)", "",
           "Each group: the lesson's model (preset `<name>_lesson`), aelab's reference model for the same task "
           "(preset `<name>`) and the main baseline, scored on the same test batches as each model.", "",
           "| group | metric | lesson model | reference model | main baseline |", "|---|---|---|---|---|"]
    for lesson, ref in pairs:
        group = f"**{lesson.name}** vs " + (f"**{ref.name}**" if ref else "its reference (not run)")
        lm, rm = lesson.metrics, ref.metrics if ref else {}
        if lesson.state != "succeeded" or (ref and ref.state != "succeeded"):
            out.append(f"| {group} | state | {lesson.state} | {ref.state if ref else '–'} | – |")
            continue
        rows = [("test PSNR (dB)", "test/psnr", 2, _baseline_cell(lm, rm, "test/psnr", 2, True)),
                ("test SSIM", "test/ssim", 3, _baseline_cell(lm, rm, "test/ssim", 3, False))]
        if "test/nll" in lm or "test/nll" in rm:
            rows.append(("test NLL (nats)", "test/nll", 2, PUBLISHED_NLL_SHORT))
        for i, (label, key, digits, base) in enumerate(rows):
            out.append(f"| {group if i == 0 else ''} | {label} | {fmt(lm.get(key), digits)} | "
                       f"{fmt(rm.get(key), digits)} | {base} |")
        out.append(f"|  | epochs, wall | {lesson.epochs}, {fmt(lesson.wall_s, 0)} s | "
                   + (f"{ref.epochs}, {fmt(ref.wall_s, 0)} s" if ref else "–") + " | – |")
    return out + [""]


def nll_cell(metrics: dict) -> str:
    """'83.12 ± 0.81' (with its standard error where the run logged one)."""
    stderr = metrics.get("test/nll_stderr")
    return fmt(metrics["test/nll"]) + (f" ± {fmt(stderr)}" if stderr is not None else "")


def estimator_cell(metrics: dict) -> str:
    """'1000, 1,000 images' for runs that logged their estimator, else '–'."""
    if "test/nll_samples" not in metrics:
        return "–"
    return f"{int(metrics['test/nll_samples'])}, {int(metrics['test/nll_images']):,} images"


def likelihood_section(jobs: list) -> list[str]:
    rows = [j for j in jobs if j.state == "succeeded" and "test/nll" in j.metrics]
    if not rows:
        return []
    out = ["## Likelihood (binarized MNIST, test NLL in nats per image)", "",
           "`test/nll`: importance-sampled estimate (`callbacks.nll.samples` per image, set by each preset); it is ≤ "
           "the training bound the test loss reports (negative ELBO, or negative IWAE bound for IWAE objectives). "
           "± its standard error over the scored images, then K (samples per image) and the images: the whole test "
           "split or a seeded draw of it (a row without them scored the split's first images, which are not a "
           "sample of it). "
           f"For scale, {PUBLISHED_NLL}.", "",
           "| run | test NLL | K, images | test loss (negative bound) | the model's terms (test) |",
           "|---|---|---|---|---|"]
    out += [f"| {j.name} | {nll_cell(j.metrics)} | {estimator_cell(j.metrics)} | {fmt(j.metrics.get('test/loss'))} | "
            + ", ".join(f"{t} {fmt(j.metrics[f'test/{t}'])}" for t in j.terms if f"test/{t}" in j.metrics) + " |"
            for j in rows]
    return out + [""]


def probe_cells(metrics: dict, suffix: str = "") -> list[float | None]:
    """The run's six probe accuracies (linear then k-NN; 10, 100, all labels per class) for `suffix` ("" for the
    model's code, "_baseline_pca", "_baseline_pixels")."""
    return [metrics.get(f"test/probe_{kind}_{budget}{suffix}") for kind, _, budget in PROBES]


def probe_row(job) -> str:
    """One run: each probe as 'model (PCA)', then in how many probes the code beats PCA of its size."""
    model, pca = probe_cells(job.metrics), probe_cells(job.metrics, "_baseline_pca")
    cells = [f"{pct(m)} ({pct(p)})" for m, p in zip(model, pca)]
    compared = [(m, p) for m, p in zip(model, pca) if m is not None and p is not None]
    wins = sum(m > p for m, p in compared)
    verdict = "–" if not compared else "yes" if wins == len(compared) else "no" if wins == 0 else "mixed"
    count = f" ({wins} of {len(compared)})" if compared else ""
    return f"| {job.name} | {job.data or '–'} | " + " | ".join(cells) + f" | {verdict}{count} |"


def probe_section(jobs: list) -> list[str]:
    """'Codes as features': one row per run with probe metrics, then raw pixels once per dataset (the labelled
    draws are seeded, so every run on a dataset probes its pixels with the same examples)."""
    runs = [j for j in jobs if j.state == "succeeded" and any(k.startswith("test/probe_") for k in j.metrics)]
    if not runs:
        return []
    out = ["## Codes as features (test accuracy, %)", "",
           "Does the code beat PCA as a feature? Classifiers on each run's frozen codes of clean images (posterior "
           "mean for VAEs), trained with 10 or 100 labelled training images per class or all labels and scored on "
           "the test split: a linear probe (logistic regression on centred codes with one scale per code, L2 chosen "
           "on the validation split) and k-NN (`callbacks.probe.k` neighbours, `callbacks.probe.metric`, cosine by "
           "default). In brackets: the same probe on PCA codes of the same size, fitted on the training images, with "
           "the same labelled images. *beats PCA*: in how many of the six probes the code scores higher.", "",
           "| run | data | " + " | ".join(f"{label} {budget}" for _, label, budget in PROBES) + " | beats PCA |",
           "|---|---|" + "---|" * len(PROBES) + "---|"]
    out += [probe_row(j) for j in runs]
    pixels = {}
    for j in runs:
        if j.data not in pixels and any(v is not None for v in probe_cells(j.metrics, "_baseline_pixels")):
            pixels[j.data] = probe_cells(j.metrics, "_baseline_pixels")
    out += [f"| *raw pixels* | {data or '–'} | " + " | ".join(pct(v) for v in cells) + " | – |"
            for data, cells in pixels.items()]
    return out + [""]


def sample_quality_section(jobs: list) -> list[str]:
    """'How good are the samples?': one row per run that scored samples (test/fid_recon), FID and precision /
    recall of each sampler beside the floor, the reconstructions and the corrupted-input baseline."""
    runs = [j for j in jobs if j.state == "succeeded" and "test/fid_recon" in j.metrics]
    if not runs:
        return []
    out = ["## How good are the samples? (test split, domain feature space)", "",
           "FID (lower is better) and, in brackets, precision / recall in % (k-NN manifolds, k=5) of images decoded "
           "from each sampler: *prior* (the model's own), *gaussian* (full covariance) and *gmm* (10 components) "
           "fitted on the codes of the training images; *recon*: the test images' reconstructions; *floor*: as many "
           "held-out real images (what a perfect generator scores at this count); *baseline*: the corrupted input "
           "(bicubic upsampling for super-resolution). Each number is against the test split, on the count and in "
           "the feature space (a classifier aelab trains per dataset; its test accuracy in the column) that the "
           "run's `sample_quality.json` names. Read a sampler's FID against the floor: a floor of 1 and a sampler "
           "of 5 are close; precision says how many samples look real, recall how much of the data they cover.", "",
           "| run | data | features (acc %) | floor | recon | baseline | "
           + " | ".join(SAMPLERS) + " |", "|---|---|---|---|---|---|" + "---|" * len(SAMPLERS)]
    for j in runs:
        m, quality = j.metrics, sample_quality_record(j) or {}
        space = quality.get("feature_space", {}).get("name", "–")

        def cell(name: str) -> str:
            if f"test/fid_{name}" not in m:
                return "–"
            return (f"{fmt(m[f'test/fid_{name}'])} ({pct(m.get(f'test/precision_{name}'))} / "
                    f"{pct(m.get(f'test/recall_{name}'))})")

        out.append(f"| {j.name} | {j.data or '–'} | {space} ({pct(m.get('test/feature_accuracy'))}) | "
                   f"{fmt(m.get('test/fid_floor'))} | {cell('recon')} | {fmt(m.get('test/fid_baseline'))} | "
                   + " | ".join(cell(s) for s in SAMPLERS) + " |")
    return out + [""]


def transfer_section(transfer: list, datasets: list[str]) -> list[str]:
    out = ["## Transfer matrix (denoising, test PSNR in dB)", "",
           "Rows: the dataset the denoiser was trained on; columns: the dataset it is tested on (`aelab-eval "
           "ckpt_path=… data=…`, same Gaussian noise). In brackets: the noisy input's PSNR.", ""]
    cells = {tuple(j.name.removeprefix("transfer_").split("_on_")): j for j in transfer
             if j.name.startswith("transfer_")}  # the eval jobs also hold the cross-domain ones
    if not cells:
        return out + ["Not run (needs denoise_mnist and/or denoise_fashion)."]
    out += ["| trained on \\ tested on | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
    for train_data in datasets:
        row = []
        for test_data in datasets:
            j = cells.get((train_data, test_data))
            if j is None:
                row.append("not run")
            elif j.state != "succeeded":
                row.append(f"**{j.state}**")
            else:
                row.append(f"{fmt(j.metrics.get('test/psnr'))} ({fmt(j.metrics.get('test/psnr_baseline_identity'))})")
        out.append(f"| {train_data} | " + " | ".join(row) + " |")
    return out


def superres_section(jobs: list, superres: dict) -> list[str]:
    out = ["## Super-resolution variants (test PSNR in dB)", ""]
    by_name = {j.name: j for j in jobs}
    rows = [(key, by_name[name]) for key, name in superres.items() if name in by_name]
    if not rows:
        return out + ["Not run (needs superres_mnist)."]
    out += ["| data | factor | downsampling | model | bicubic | nearest (identity) | model − bicubic | run |",
            "|---|---|---|---|---|---|---|---|"]
    for (data, factor, mode), j in rows:
        m = j.metrics
        psnr, bic = m.get("test/psnr"), m.get("test/psnr_baseline_bicubic")
        gain = psnr - bic if psnr is not None and bic is not None else None
        out.append(f"| {data} | {factor} | {mode} | {fmt(psnr)} | {fmt(bic)} | "
                   f"{fmt(m.get('test/psnr_baseline_identity'))} | {fmt(gain)} | {j.name} ({j.state}) |")
    return out


def carried_lines(carried: dict | None, jobs: list, machine: dict) -> list[str]:
    """What run.py --merge carried over unchanged and from which file; which rows ran on another machine than this
    one (their wall times do not compare)."""
    out = []
    if carried and set(carried["jobs"]) >= {j.name for j in jobs}:  # run.py --rewrite: no row was run for it
        out.append(f"- every row carried over unchanged from the RESULTS.json written {carried.get('written')} at "
                   f"{carried.get('commit')}, rewritten by this commit's report code (`run.py --rewrite`)")
    elif carried:
        out.append(f"- carried over unchanged from the RESULTS.json written {carried.get('written')} at "
                   f"{carried.get('commit')} (`run.py --merge`): {', '.join(carried['jobs'])}; the other rows were "
                   "run for this file")
    here = (machine.get("cpu"), machine.get("cores"))
    elsewhere: dict[tuple, list[str]] = {}
    for job in jobs:
        if job.machine and (job.machine.get("cpu"), job.machine.get("cores")) != here:
            elsewhere.setdefault((job.machine.get("cpu"), job.machine.get("cores")), []).append(job.name)
    for (cpu, cores), names in elsewhere.items():
        out.append(f"- run on another machine ({cpu}, {cores} logical CPUs), so their wall times do not compare with "
                   f"this machine's: {', '.join(names)}")
    return out


def results_markdown(jobs: list, transfer: list, machine: dict, tiny: bool, started, superres: dict,
                     transfer_data: list[str], carried: dict | None = None,
                     cross_domain: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())) -> str:
    """RESULTS.md; `superres`: (data, factor, mode) -> job name; `transfer_data`: the transfer matrix's datasets;
    `carried`: what run.py --merge carried over (see results_json); `cross_domain`: (presets, portraits folders)."""
    out = ["# Experiment results", "",
           f"Written by `python experiments/run.py{' --tiny' if tiny else ''}` on "
           f"{started:%Y-%m-%d %H:%M} (local time); every number is read from the run's `metrics.json` (all of "
           "them, per run, in `RESULTS.json` beside this file).", ""]
    if tiny:
        out += ["**Tiny mode** (`trainer=debug trainer.max_epochs=1`: a few batches): the numbers only show that the "
                "runner works, not how good the models are.", ""]
    out += machine_lines(machine)
    commits = sorted({j.commit for j in jobs + transfer if j.commit})
    if commits and commits != [machine.get("git_commit")]:
        out.append(f"- the runs ran at commit {', '.join(commits)} (each run's environment.json); this file was "
                   "written at the commit above")
    out += carried_lines(carried, jobs + transfer, machine) + [""]
    rows, not_beating = preset_rows(jobs)
    out += ["## Presets (test split)", "",
            "PSNR in dB, per image, averaged over the test images; baselines are scored on the very same corrupted "
            "test batches. *main* is the baseline the model must beat (bicubic for super-resolution, the corrupted "
            "input for denoising, PCA with the model's latent size for plain autoencoders).", "",
            "| preset | epochs | wall | test loss | PSNR | SSIM | main baseline PSNR | model − main | identity | "
            "bicubic | PCA | mean | other |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|", *rows]
    out += ["", "### Where the model does not beat PCA (same latent size, fitted on clean training images)", ""]
    out += not_beating or ["- none: every model that ran beats its PCA baseline."]
    out += [""] + lesson_section(jobs) + likelihood_section(jobs) + probe_section(jobs)
    from experiments.targets import family_targets_section, sampler_reading

    out += sample_quality_section(jobs) + sampler_reading(jobs) + family_targets_section(jobs)
    out += ["## Commands", "", "Each job ran as below, plus `hydra.run.dir=<its run directory>`:", ""]
    out += [f"- {job.name}: `{short_command(job)}`" for job in jobs + transfer if job.command]
    out += [""] + transfer_section(transfer, transfer_data) + [""] + superres_section(jobs, superres)
    from experiments.portraits import cross_domain_section

    out += [""] + cross_domain_section(jobs, transfer, *cross_domain)
    from experiments.seed_sweeps import disentanglement_section, headline_section

    out += [""] + headline_section(jobs) + disentanglement_section()
    failed = [j for j in jobs + transfer if j.state != "succeeded"]
    if failed:
        out += ["", "## Failures", ""] + [f"- {j.name}: {j.state}: {j.error}" for j in failed]
    return "\n".join(out) + "\n"
