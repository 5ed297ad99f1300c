"""aelab-compare: one table for a sweep, from what its job directories hold (finished or not).

    aelab-compare outputs/multirun/2026-01-01/12-00-00
    aelab-compare SWEEP_DIR --metric val/loss --mode min --out /tmp/report

Reads each job's .hydra/overrides.yaml, status.json and metrics.json; prints the jobs sorted by the metric with the
swept parameters as columns (failed jobs with their error, running or unfinished ones as such), and writes
results.csv, results.md, metric_vs_<param>.png for each swept parameter and val_curves.png (validation loss per
epoch of every job, read from the TensorBoard event files). Works on a sweep that is still running.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from aelab.cli import entry
from aelab.overrides import as_dict as parse_overrides, is_sweep
from aelab.runs import read_json
from aelab.terms import Term, metric_names, read_terms

SKIP_DIRS = {"tensorboard", "checkpoints", "compare", "__pycache__"}
# besides the sorting metric, when present; then the test value of every term the jobs' models declare
SHOWN_METRICS = ("val/loss", "test/loss", "test/psnr", "test/ssim")


@dataclass
class Job:
    name: str  # path relative to the sweep directory
    path: Path
    state: str  # succeeded / failed / interrupted / running / unknown (no status.json yet)
    error: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    terms: tuple[Term, ...] = ()  # the model's declared terms (terms.json)

    def value(self, metric: str) -> float | None:
        v = self.metrics.get(metric)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def natural(name: str) -> list:
    """Sort key that puts job 2 before job 10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _is_job(path: Path) -> bool:
    return (path / "status.json").is_file() or (path / ".hydra" / "overrides.yaml").is_file()


def _job_dirs(root: Path):
    """Job directories under root (root itself for a single run); a job's own subfolders are not searched."""
    if _is_job(root):
        yield root
        return
    for child in sorted(root.iterdir(), key=lambda p: natural(p.name)):
        if child.is_dir() and not child.name.startswith(".") and child.name not in SKIP_DIRS:
            yield from _job_dirs(child)


def read_job(path: Path, root: Path) -> Job:
    status = read_json(path / "status.json")
    metrics = read_json(path / "metrics.json") or {}
    name = str(path.relative_to(root)) if path != root else path.name
    if status is None:
        # no status yet: the job was launched but has not reached run_app (or died before it)
        state, error = "unknown", None
    else:
        state, error = str(status.get("state", "unknown")), status.get("error")
    if state == "succeeded" and not metrics:
        state, error = "unknown", "status says succeeded but metrics.json is missing or unreadable"
    overrides = parse_overrides(_read_yaml(path / ".hydra" / "overrides.yaml") or [])
    return Job(name, path, state, error, overrides, {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
               read_terms(path))


def collect_jobs(root: Path) -> list[Job]:
    root = Path(root)
    if not root.is_dir():
        return []
    return [read_job(p, root) for p in _job_dirs(root)]


def swept_keys(jobs: list[Job], root: Path) -> list[str]:
    """Override keys that differ between jobs, plus those the sweep's multirun.yaml sweeps (so a partial sweep
    with one finished job still shows its parameters)."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    swept = {k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1}
    multirun = _read_yaml(root / "multirun.yaml") or {}
    hydra_cfg = multirun.get("hydra") or {}
    for key, value in parse_overrides((hydra_cfg.get("overrides") or {}).get("task") or []).items():
        if is_sweep(value) and key in keys:
            swept.add(key)
    swept |= {k for k in ((hydra_cfg.get("sweeper") or {}).get("params") or {}) if k in keys}
    return [k for k in keys if k in swept]


def declared_terms(jobs: list[Job]) -> dict[str, Term]:
    """Every term the jobs' models declare, by name, in the order the jobs list them."""
    out: dict[str, Term] = {}
    for job in jobs:
        for term in job.terms:
            out.setdefault(term.name, term)
    return out


def auto_mode(metric: str, jobs: list[Job] = ()) -> str:
    """max for PSNR, SSIM, accuracies and terms declared better="higher"; min otherwise."""
    name = metric.rsplit("/", 1)[-1]
    term = declared_terms(list(jobs)).get(name)
    if term is not None and term.better is not None:
        return "max" if term.better == "higher" else "min"
    return "max" if name in ("psnr", "ssim", "accuracy", "acc") or name.startswith("probe_") else "min"


def rank(jobs: list[Job], metric: str, mode: str) -> list[Job]:
    """Jobs with the metric first (best first), then succeeded jobs without it, unfinished, failed."""
    order = {"succeeded": 0, "running": 1, "unknown": 1, "interrupted": 2, "failed": 3}
    sign = -1.0 if mode == "max" else 1.0

    def key(job: Job):
        v = job.value(metric)
        return (v is None, order.get(job.state, 2), sign * v if v is not None else 0.0, natural(job.name))

    return sorted(jobs, key=key)


def as_number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def table_rows(jobs: list[Job], params: list[str], metric: str) -> tuple[list[str], list[list[str]]]:
    terms = metric_names(declared_terms(jobs).values(), "test")
    shown = dict.fromkeys([*SHOWN_METRICS, *terms])
    metrics = [metric] + [m for m in shown if m != metric and any(m in j.metrics for j in jobs)]
    header = ["#", "job", "state", *params, *metrics]
    rows = []
    for i, job in enumerate(jobs, 1):
        shown = [fmt(job.value(m)) for m in metrics]
        rows.append([str(i), job.name, job.state, *[job.overrides.get(p, "-") for p in params], *shown])
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


def problems(jobs: list[Job]) -> list[str]:
    return [f"{j.name}: {j.state}" + (f": {j.error}" if j.error else "") for j in jobs if j.state != "succeeded"]


def write_csv(path: Path, jobs: list[Job], params: list[str]) -> None:
    all_params = params + sorted({k for j in jobs for k in j.overrides} - set(params))
    all_metrics = sorted({k for j in jobs for k in j.metrics})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["job", "state", *all_params, *all_metrics, "error"])
        for j in jobs:
            w.writerow([j.name, j.state, *[j.overrides.get(p, "") for p in all_params],
                        *[j.metrics.get(m, "") for m in all_metrics], j.error or ""])


# --- plots ------------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def plot_metric_vs_params(out: Path, jobs: list[Job], params: list[str], metric: str) -> list[Path]:
    plt = _pyplot()
    done = [j for j in jobs if j.value(metric) is not None]
    written = []
    for param in params:
        values = [j.overrides.get(param) for j in done]
        numbers = [as_number(v) for v in values]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        if done and all(n is not None for n in numbers):
            ax.scatter(numbers, [j.value(metric) for j in done])
            if min(numbers) > 0 and max(numbers) / min(numbers) >= 100:
                ax.set_xscale("log")  # learning rates, weight decays
        else:
            categories = sorted({str(v) for v in values})
            ax.scatter([categories.index(str(v)) for v in values], [j.value(metric) for j in done])
            ax.set_xticks(range(len(categories)), categories, rotation=20)
            ax.set_xlim(-0.5, len(categories) - 0.5)
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs {param} ({len(done)} of {len(jobs)} jobs)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"metric_vs_{safe_name(param)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def read_curve(job_dir: Path, tag: str = "val/loss") -> list[tuple[float, float]]:
    """(epoch, value) pairs of a scalar from every TensorBoard event file under the job (fit and test runs
    write separate files); the x axis is Lightning's `epoch` scalar logged at the same step, else the step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[float, float] = {}
    for run_dir in sorted({p.parent for p in job_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        try:
            acc.Reload()
        except Exception:  # a file being written or truncated by a killed job: use what the others hold
            continue
        tags = acc.Tags().get("scalars", [])
        if tag not in tags:
            continue
        epochs = {e.step: e.value for e in acc.Scalars("epoch")} if "epoch" in tags else {}
        for e in acc.Scalars(tag):
            points[epochs.get(e.step, e.step)] = e.value  # a resumed run's repeat of an epoch replaces it
    return sorted(points.items())


def plot_curves(out: Path, jobs: list[Job], params: list[str], tag: str = "val/loss") -> Path | None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    n = 0
    for job in jobs:
        curve = read_curve(job.path, tag)
        if not curve:
            continue
        label = " ".join(f"{p}={job.overrides[p]}" for p in params if p in job.overrides) or job.name
        xs, ys = zip(*curve)
        style = "-" if job.state == "succeeded" else "--"  # unfinished and failed jobs dashed
        ax.plot(xs, ys, style, marker="o", markersize=3, label=f"{job.name}: {label}")
        n += 1
    if n == 0:
        plt.close(fig)
        return None
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(tag)
    ax.set_title(f"{tag} of {n} jobs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = out / f"{safe_name(tag.replace('/', '_'))}_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- command line -----------------------------------------------------------------------------------------------
def compare(sweep_dir: Path, metric: str | None = None, mode: str | None = None, out: Path | None = None,
            plots: bool = True, curve: str = "val/loss") -> dict:
    """Build the report; returns {"jobs": ranked jobs, "params", "metric", "mode", "table", "files"}."""
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        return {"jobs": [], "params": [], "metric": metric, "mode": mode, "table": "", "problems": [], "files": []}
    if metric is None:  # test/loss when the jobs tested, else the validation loss
        metric = "test/loss" if any("test/loss" in j.metrics for j in jobs) else "val/loss"
    mode = mode or auto_mode(metric, jobs)
    params = swept_keys(jobs, sweep_dir)
    jobs = rank(jobs, metric, mode)
    header, rows = table_rows(jobs, params, metric)
    out = Path(out) if out is not None else sweep_dir / "compare"
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "results.csv", out / "results.md"]
    write_csv(files[0], jobs, params)
    issues = problems(jobs)
    md = [f"# {sweep_dir}", "", f"Sorted by `{metric}` ({mode}); {sum(j.state == 'succeeded' for j in jobs)} of "
          f"{len(jobs)} jobs succeeded.", "", markdown_table(header, rows)]
    if issues:
        md += ["", "## Not succeeded", "", *[f"- {p}" for p in issues]]
    files[1].write_text("\n".join(md) + "\n")
    if plots:
        files += plot_metric_vs_params(out, jobs, params, metric)
        curves = plot_curves(out, jobs, params, curve)
        if curves is not None:
            files.append(curves)
    return {"jobs": jobs, "params": params, "metric": metric, "mode": mode,
            "table": text_table(header, rows), "problems": issues, "files": files}


@entry("aelab-compare")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aelab-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (or any folder holding run directories)")
    parser.add_argument("--metric", default=None, help="metric to sort by (default: test/loss, else val/loss)")
    parser.add_argument("--mode", choices=("min", "max"), default=None,
                        help="min or max is best (default: max for psnr/ssim, else min)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: SWEEP_DIR/compare)")
    parser.add_argument("--curve", default="val/loss", help="scalar tag for the overlaid curves (default: val/loss)")
    parser.add_argument("--no-plots", action="store_true", help="only the table, CSV and Markdown")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"sweep_dir={str(args.sweep_dir)!r} is not a directory")
    report = compare(args.sweep_dir, args.metric, args.mode, args.out, plots=not args.no_plots, curve=args.curve)
    if not report["jobs"]:
        print(f"aelab-compare: error: no job directories (with status.json or .hydra/overrides.yaml) under "
              f"{args.sweep_dir}", file=sys.stderr)
        return 1
    print(f"{args.sweep_dir}: sorted by {report['metric']} ({report['mode']})")
    print(report["table"])
    if report["problems"]:
        print("\nnot succeeded:")
        print("\n".join(f"  {p}" for p in report["problems"]))
    print(f"\nwrote {', '.join(str(f) for f in report['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
