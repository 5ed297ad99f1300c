"""The benchmark report, built from run directories only (what aelab-bench writes after every run, and
`aelab-bench --report DIR` writes of any folder of jobs, finished or not).

One row per setting (every override of a job but its seed: model, data, and whatever else the grid varies); each
metric is the mean and sample standard deviation over the row's succeeded seeds, with their number. The best mean of
a column is marked (higher or lower, as COLUMNS says of each). Beside the metrics: parameters and fit seconds from
each job's cost.json. Written to DIR/benchmark/: BENCHMARK.md, BENCHMARK.json (every metric, not only the table's), quality_vs_time.png,
samples_vs_reconstruction.png, and tensorboard/ (one HPARAMS session per row: tensorboard --logdir DIR/benchmark).

The rows are built from one record per job (what its run directory says: state, overrides, metrics, cost, commit,
machine, times), and BENCHMARK.json keeps those records, each naming its sample-quality feature space in one table of
spaces beside them (`spaces`: the description is the same for every job scored in it). So a benchmark run in parts, in folders that do not outlive
their session, accumulates in one report: with merge=True (aelab-bench --report DIR --out OUT --merge) the records of
the report already at OUT are carried over for every job that DIR does not hold, and DIR's own jobs replace theirs.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

from aelab.compare import Job, _read_yaml, collect_jobs, natural
from aelab.errors import ConfigError
from aelab.files import write_atomic, write_json_atomic
from aelab.runs import COST_FILE, read_json

NOT_A_SETTING = ("seed", "benchmark", "sweep_resume")  # what the rows average over, or do not differ by
SAMPLERS = ("prior", "gaussian", "gmm")  # aelab.callbacks.samples: each sampler's set of generated images
# The table's columns (BENCHMARK.json has every metric): (metric, heading, digits, better); shown when any row has it
COLUMNS = (
    ("test/psnr", "PSNR dB", 2, "higher"), ("test/ssim", "SSIM", 3, "higher"),
    ("test/psnr_baseline", "baseline PSNR", 2, None), ("test/nll", "NLL nats", 2, "lower"),
    ("test/fid_recon", "FID recon", 1, "lower"), ("test/fid_prior", "FID prior", 1, "lower"),
    ("test/fid_gaussian", "FID gauss", 1, "lower"), ("test/fid_gmm", "FID GMM", 1, "lower"),
    ("test/precision_gmm", "precision GMM", 3, "higher"), ("test/recall_gmm", "recall GMM", 3, "higher"),
    ("test/probe_linear_100", "linear probe", 3, "higher"), ("test/probe_knn_100", "k-NN probe", 3, "higher"),
    ("test/mig", "MIG", 3, "higher"), ("test/dci_disentanglement", "DCI", 3, "higher"), ("test/sap", "SAP", 3, "higher"),
    ("test/factorvae_score", "FactorVAE score", 3, "higher"),
)
COST = (("parameters", "params", 0), ("fit_seconds", "fit s", 0))  # a model's parameters do not vary by seed
# aelab-bench appends a line here as each run starts ({"command", "started"}): a folder filled by several narrower
# commands names each job's own (multirun.yaml holds only the last command's)
COMMANDS_FILE = "bench_commands.jsonl"


def record(job: Job) -> dict:
    """What the report needs of one job, read from its run directory once (and kept in BENCHMARK.json); its command
    is filled from the folder's log (command_of)."""
    env = read_json(job.path / "environment.json") or {}
    status = read_json(job.path / "status.json") or {}
    cost = read_json(job.path / COST_FILE) or {}
    times = [status.get(k) if isinstance(status.get(k), (int, float)) else None for k in ("started", "updated")]
    return {"name": job.name, "state": job.state, "error": job.error, "overrides": job.overrides,
            "metrics": {m: v for m in job.metrics if (v := job.value(m)) is not None},
            "cost": {c: cost.get(c) for c, _, _ in COST},
            "commit": env.get("git_commit"),
            "machine": f"{env.get('cpu', '?')}, {env.get('cores', '?')} logical CPUs" if env else None,
            "started": times[0], "updated": times[1], "command": None,
            "feature_space": (read_json(job.path / "sample_quality.json") or {}).get("feature_space") or None}


def log_command(folder: Path, command: str, started: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / COMMANDS_FILE, "a") as f:
        f.write(json.dumps({"command": command, "started": started}) + "\n")


def command_log(folder: Path) -> list[dict]:
    """The folder's runs in the order they started; a line cut short by a kill is passed over."""
    try:
        lines = (folder / COMMANDS_FILE).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("command"), str) \
                and isinstance(entry.get("started"), (int, float)):
            out.append(entry)
    return sorted(out, key=lambda e: e["started"])


def command_of(started: float | None, log: list[dict], fallback: str | None) -> str | None:
    """The command whose run a job started in: the last one logged as starting before it (runs into one folder
    follow each other); the multirun's recorded command where no log says."""
    if started is not None:
        for entry in reversed(log):
            if entry["started"] <= started:
                return entry["command"]
    return fallback


def packed(records: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    """The records as BENCHMARK.json keeps them: each feature space described once, in the returned table, and named
    in the records scored in it."""
    spaces = {}
    out = []
    for rec in records:
        space = rec["feature_space"]
        if isinstance(space, dict) and space.get("name"):
            spaces.setdefault(space["name"], space)
            rec = {**rec, "feature_space": space["name"]}
        out.append(rec)
    return out, spaces


def unpacked(records: list[dict], spaces: dict[str, dict]) -> list[dict]:
    """packed's inverse; a report written before the table kept each description in its record, as read here."""
    return [{**rec, "feature_space": spaces.get(rec["feature_space"], {"name": rec["feature_space"]})}
            if isinstance(rec.get("feature_space"), str) else rec for rec in records]


def carried_records(path: Path, benchmark: str, held: set[str]) -> list[dict]:
    """The records of the report at path for the jobs not in held (none when there is no report yet), with their
    feature spaces' descriptions."""
    if not path.is_file():
        return []
    old = read_json(path)
    if old is None:
        raise ConfigError(f"--merge: {path} is not readable JSON; move it aside or report without --merge")
    theirs = old.get("benchmark") or Path(str(old.get("folder", ""))).name
    if theirs != benchmark:
        raise ConfigError(f"--merge: {path} is the report of benchmark folder {theirs!r}, not {benchmark!r}; "
                          f"merge carries over jobs of the same benchmark only")
    if "records" not in old:
        raise ConfigError(f"--merge: {path} holds no job records (written before reports kept them), so its "
                          f"rows cannot be merged; rebuild it from its run directories without --merge")
    return [r for r in unpacked(old["records"], old.get("spaces") or {}) if r["name"] not in held]


def value(rec: dict, metric: str) -> float | None:
    v = rec["metrics"].get(metric)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def setting(rec: dict) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in rec["overrides"].items() if k not in NOT_A_SETTING))


def best_fid(rec: dict) -> float | None:
    """The FID of the job's best sampler (the one each model is best sampled with)."""
    values = [v for s in SAMPLERS if (v := value(rec, f"test/fid_{s}")) is not None]
    return min(values) if values else None


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def build_rows(records: list[dict]) -> list[dict]:
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        grouped[setting(rec)].append(rec)
    rows = []
    for key, members in sorted(grouped.items(), key=lambda kv: natural(" ".join(f"{k}={v}" for k, v in kv[0]))):
        done = [r for r in members if r["state"] == "succeeded"]
        names = sorted({m for r in done for m in r["metrics"]})
        rows.append({
            "setting": dict(key),
            "name": ",".join(f"{k}={v}" for k, v in key) or "(no overrides)",
            "seeds": sorted((r["overrides"].get("seed", "-") for r in done), key=natural),
            "jobs": len(members), "succeeded": len(done),
            "metrics": {m: spread([value(r, m) for r in done]) for m in names},
            "best_fid": spread([best_fid(r) for r in done]),
            "cost": {c: spread([r["cost"].get(c) for r in done]) for c, _, _ in COST},
        })
    return rows


def problems(records: list[dict]) -> list[str]:
    return [f"{r['name']}: {r['state']}" + (f": {r['error']}" if r["error"] else "") for r in records
            if r["state"] != "succeeded"]


def mark_best(rows: list[dict]) -> dict[str, str]:
    """metric -> the name of the row with the best mean, where one row has it (the task's baseline, better=None,
    is a scale to read a row against, not a contestant)."""
    best = {}
    for metric, _, _, better in COLUMNS:
        scored = [(r["metrics"][metric]["mean"], r["name"]) for r in rows
                  if better and r["metrics"].get(metric, {}).get("mean") is not None]
        if len(scored) > 1:
            top = (max if better == "higher" else min)(v for v, _ in scored)
            winners = [name for v, name in scored if v == top]
            if len(winners) == 1:  # a tie (every model at precision 0, say) marks nothing
                best[metric] = winners[0]
    return best


def cell(stat: dict | None, digits: int, bold: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.{digits}f}"
    return f"**{text}**" if bold else text


def table(rows: list[dict], best: dict[str, str]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r["setting"]))
    shown = [c for c in COLUMNS if any(c[0] in r["metrics"] for r in rows)]
    header = [*keys, "seeds", *[h for _, h, _ in COST], *[c[1] for c in shown]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["setting"].get(k, "–") for k in keys]
        cells.append(f"{r['succeeded']}" + (f" of {r['jobs']}" if r["succeeded"] < r["jobs"] else ""))
        cells += [cell({**r["cost"][c], "std": None} if c == "parameters" else r["cost"][c], d) for c, _, d in COST]
        cells += [cell(r["metrics"].get(m), d, best.get(m) == r["name"]) for m, _, d, _ in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def feature_spaces(records: list[dict], spaces: dict[str, dict]) -> list[str]:
    """Each feature space the jobs' sample-quality metrics were computed in, with its test accuracy and the FID
    floor (held-out real images against the test split) over the jobs scored in it; `records` and `spaces` as
    packed() returns them."""
    floors: dict[str, list] = defaultdict(list)
    for rec in records:
        if isinstance(rec["feature_space"], str):  # packed: the name of a described space
            floors[rec["feature_space"]].append(value(rec, "test/fid_floor"))
    out = []
    for name, space in spaces.items():
        accuracy = space.get("test_accuracy")
        text = f"`{name}` ({space.get('kind', 'features')} of {space.get('dataset')}"
        text += f", test accuracy {accuracy:.4f})" if isinstance(accuracy, (int, float)) else ")"
        floor = spread(floors[name])
        if floor["mean"] is not None:
            text += f", where held-out real images score FID {cell(floor, 2)} against the test split"
        out.append(text)
    return out


def recorded_command(multirun: dict) -> str | None:
    """The aelab-bench command that runs (and resumes) the folder's grid, as its multirun.yaml records it."""
    task = ((multirun.get("hydra") or {}).get("overrides") or {}).get("task") or []
    return " ".join(["aelab-bench", *[t for t in task if not t.startswith("sweep_resume=")]]) if task else None


def provenance(records: list[dict], grid: int | None) -> dict:
    """The commands that ran the jobs (several for narrower commands into one folder or a merged report's parts, in
    the order they started), the commits and machines, and the time: the sum of every job's wall time, and the wall
    time while any job ran (the union of the jobs' start-to-end spans, status.json), per command and in all, so the
    breaks between sessions that a resumed or merged benchmark spans are not counted."""
    parts: dict[str | None, list[dict]] = {}
    first = lambda recs: min((r["started"] for r in recs if r["started"] is not None), default=math.inf)  # noqa: E731
    for rec in records:
        parts.setdefault(rec["command"], []).append(rec)
    parts = dict(sorted(parts.items(), key=lambda kv: first(kv[1])))

    def timing(recs: list[dict]) -> dict:
        timed = sorted((r["started"], r["updated"]) for r in recs
                       if r["started"] is not None and r["updated"] is not None)
        if not timed:
            return {"job_seconds": None, "span_seconds": None}
        union, (start, end) = 0.0, timed[0]
        for a, b in timed[1:]:
            if a > end:
                union, start = union + end - start, a
            end = max(end, b)
        return {"job_seconds": sum(b - a for a, b in timed), "span_seconds": union + end - start}

    runs = [{"command": c, "jobs": len(recs), **timing(recs)} for c, recs in parts.items()]
    return {"grid": grid, "commands": [r["command"] for r in runs if r["command"]], "runs": runs,
            "commits": sorted({r["commit"] for r in records if r["commit"]}),
            "machines": sorted({r["machine"] for r in records if r["machine"]}), **timing(records)}


def grid_size(multirun: dict) -> int | None:
    """How many jobs the recorded command's grid holds: the sweeper's params, as the command line overrode them,
    multiplied out (None without a record)."""
    from aelab.overrides import as_dict, is_sweep, parse

    hydra = multirun.get("hydra") or {}
    task = (hydra.get("overrides") or {}).get("task")
    if task is None:
        return None
    params = {k: str(v) for k, v in ((hydra.get("sweeper") or {}).get("params") or {}).items()}
    params |= as_dict(task)
    size = 1
    for key, value in params.items():
        if is_sweep(value):
            try:
                size *= len(list(parse([f"{key}={value}"])[0].sweep_string_iterator()))
            except Exception:  # noqa: BLE001 - glob() and ranges of floats need Hydra's config loader: not counted
                return None
    return size


def provenance_lines(p: dict) -> list[str]:
    minutes = lambda s: f"{s / 60:.0f} min" if s is not None else "–"  # noqa: E731
    runs = p["runs"]
    if len(runs) > 1:
        lines = [f"- commands ({len(runs)} runs): " + "; ".join(
            f"`{r['command'] or '(not recorded)'}` ({r['jobs']} jobs, {minutes(r['span_seconds'])})" for r in runs)]
        span = f"{minutes(p['span_seconds'])} while its jobs ran (over its {len(runs)} runs)"
    else:
        lines = [f"- command: `{p['commands'][0] if p['commands'] else '(no multirun.yaml: the command is not recorded)'}`"]
        span = f"{minutes(p['span_seconds'])} while its jobs ran"
    return [*lines,
            f"- commit{'s' if len(p['commits']) > 1 else ''}: {', '.join(p['commits']) or 'not recorded'}",
            f"- machine{'s' if len(p['machines']) > 1 else ''}: {'; '.join(p['machines']) or 'not recorded'}",
            f"- time: {minutes(p['job_seconds'])} of job wall time in all (fit, test and the test-time metrics), {span}"]


def plot(out: Path, rows: list[dict]) -> list[Path]:
    from aelab.compare import _pyplot

    plt = _pyplot()
    written = []
    views = (("quality_vs_time.png", lambda r: r["cost"]["fit_seconds"], "fit seconds (mean over seeds)",
              lambda r: r["metrics"].get("test/psnr"), "test PSNR dB"),
             ("samples_vs_reconstruction.png", lambda r: r["metrics"].get("test/psnr"), "test PSNR dB",
              lambda r: r["best_fid"], "FID of the best sampler (lower is better)"))
    for name, xs, xlabel, ys, ylabel in views:
        points = [(xs(r), ys(r), r) for r in rows]
        points = [(x, y, r) for x, y, r in points if x and y and x.get("mean") is not None
                  and y.get("mean") is not None]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for x, y, r in points:
            ax.errorbar(x["mean"], y["mean"], xerr=x["std"] or 0, yerr=y["std"] or 0, fmt="o", capsize=3)
            label = r["setting"].get("model") or r["name"]
            ax.annotate(label, (x["mean"], y["mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{len(points)} settings, mean ± std over seeds")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / name
        write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)
        written.append(path)
    return written


def write_hparams(out: Path, rows: list[dict]) -> Path:
    """One TensorBoard HPARAMS session per row: its setting and seed count as hyperparameters, every metric's mean
    and std (bench/<metric>_mean, _std) as its metrics. Rewritten whole on every report."""
    from torch.utils.tensorboard import SummaryWriter

    folder = out / "tensorboard"
    shutil.rmtree(folder, ignore_errors=True)
    with SummaryWriter(str(folder)) as writer:
        for r in rows:
            values = {f"bench/{m}_{k}": s[k] for m, s in {**r["metrics"], **r["cost"]}.items()
                      for k in ("mean", "std") if s.get(k) is not None}
            if values:
                writer.add_hparams({**r["setting"], "seeds": r["succeeded"]}, values, run_name=r["name"])
    return folder


def write_report(folder: Path, out: Path | None = None, merge: bool = False) -> dict:
    """The report of the jobs under folder, written to out (default folder/benchmark); with merge, also of the
    jobs the report already at out holds and folder does not (see the module's docstring)."""
    folder = Path(folder)
    out = Path(out) if out is not None else folder / "benchmark"
    multirun = _read_yaml(folder / "multirun.yaml") or {}
    command, log = recorded_command(multirun), command_log(folder)
    own = [record(j) for j in collect_jobs(folder) if out not in j.path.parents]
    for rec in own:
        rec["command"] = command_of(rec["started"], log, command)
    carried = carried_records(out / "BENCHMARK.json", folder.name, {r["name"] for r in own}) if merge else []
    records = carried + own  # in the order they ran: the earlier parts first
    rows = build_rows(records)
    best = mark_best(rows)
    issues = problems(records)
    succeeded = sum(r["state"] == "succeeded" for r in records)
    origin = provenance(records, grid_size(multirun))
    unstarted = (origin["grid"] or 0) - len(own)
    md = [f"# Benchmark: {folder.name}", "",
          f"{succeeded} of {len(records)} jobs succeeded, in {len(rows)} settings"
          + (f" ({unstarted} more of the grid's {origin['grid']} not started yet: the same command runs them)"
             if unstarted > 0 else "")
          + (f" ({len(carried)} of them carried over from the earlier report here: their run directories were "
             f"not under the folder reported last)" if carried else "") + "; each cell is the mean ± sample "
          "standard deviation over the setting's succeeded seeds (none with one seed); the best mean of a column is "
          "in bold. `aelab-bench --report DIR` rebuilds this file from the run directories"
          + (", with --merge keeping the jobs of the earlier report." if carried else "."), "",
          table(rows, best)]
    md += ["", *provenance_lines(origin)]
    kept, space_table = packed(records)
    spaces = feature_spaces(kept, space_table)
    if spaces:
        md += ["", "Sample quality (FID, precision, recall) in the feature space of " + "; ".join(spaces) + "."]
    if issues:
        md += ["", "## Not succeeded", "", *[f"- {p}" for p in issues]]
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "BENCHMARK.md", out / "BENCHMARK.json"]
    write_atomic(files[0], lambda f: f.write("\n".join(md) + "\n"), binary=False)
    write_json_atomic(files[1], {"benchmark": folder.name, "folder": str(folder), "jobs": len(records),
                                 "succeeded": succeeded, "carried": len(carried), "rows": rows, "best": best,
                                 "problems": issues, "feature_spaces": spaces, "provenance": origin,
                                 "spaces": space_table, "records": kept})
    files += plot(out, rows)
    files.append(write_hparams(out, rows))
    summary = f"{folder}: {succeeded} of {len(records)} jobs succeeded in {len(rows)} settings" + (
        f" ({len(carried)} carried over from {files[1]})" if carried else "")
    return {"rows": rows, "best": best, "problems": issues, "files": files, "summary": summary,
            "markdown": "\n".join(md)}
